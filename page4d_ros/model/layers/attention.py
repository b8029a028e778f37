"""Multi-head self-attention with optional QK-norm, 2-D RoPE and PAGE-4D's rank-1 logit bias.

Everything goes through ``torch.nn.functional.scaled_dot_product_attention`` so the fused (flash /
memory-efficient) kernels are used where the backend has them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from page4d_ros.model.layers.rope import RopeTables

_BIAS_CHANNELS = 3  # query (a_hi, a_hi, a_lo) . key (c_hi, c_lo, c_hi): a*c to ~2^-16 relative in bf16
_HEAD_DIM_ALIGNMENT = 8  # fused SDPA kernels want head dims that are multiples of 8


def _split_high_low(values: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` as ``high + low`` in ``dtype`` so that bf16/fp16 keep twice their usual precision."""
    high = values.to(dtype)
    low = (values - high.to(values.dtype)).to(dtype)
    return high, low


def _sdpa_compute_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype SDPA will compute in: the autocast dtype when autocast is on for q's device."""
    device_type = q.device.type
    if q.is_floating_point() and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return q.dtype


def attention_with_query_key_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_bias: torch.Tensor, key_bias: torch.Tensor
) -> torch.Tensor:
    """Attention whose logits get the rank-1 bias ``query_bias[b, i] * key_bias[b, j]`` (same for all heads).

    Computes ``softmax(q k^T / sqrt(D) + r c^T) v`` for q, k, v [B, H, N, D], r = ``query_bias`` [B, N] and
    c = ``key_bias`` [B, N] without materialising the N x N bias (PAGE-4D spec 2.2): the bias is folded into
    extra head channels, ``q' = [q, a_hi, a_hi, a_lo]`` and ``k' = [k, c_hi, c_lo, c_hi]`` with
    ``a = r * sqrt(D)`` and an explicit SDPA scale of ``1/sqrt(D)``, so a fused kernel still runs, at O(N)
    extra memory. The high/low splits keep the bias accurate when q/k are bf16/fp16 (the bias reaches +-32
    in the released model, where a single bf16 channel would be off by ~0.1 in the logits).
    """
    batch, heads, tokens, head_dim = q.shape
    compute_dtype = _sdpa_compute_dtype(q)
    q, k, v = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
    work_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    query_scaled = query_bias.to(work_dtype) * math.sqrt(head_dim)
    a_hi, a_lo = _split_high_low(query_scaled, compute_dtype)
    c_hi, c_lo = _split_high_low(key_bias.to(work_dtype), compute_dtype)
    padded_dim = -(-(head_dim + _BIAS_CHANNELS) // _HEAD_DIM_ALIGNMENT) * _HEAD_DIM_ALIGNMENT
    zero_pad = padded_dim - head_dim - _BIAS_CHANNELS

    def per_head(columns: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(columns, dim=-1)[:, None].expand(batch, heads, tokens, len(columns))
        zeros = like.new_zeros(batch, heads, tokens, zero_pad)
        return torch.cat([like, stacked.to(like.dtype), zeros], dim=-1)

    q_aug = per_head([a_hi, a_hi, a_lo], q)
    k_aug = per_head([c_hi, c_lo, c_hi], k)
    v_aug = F.pad(v, (0, padded_dim - head_dim))
    out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=head_dim**-0.5)
    return out[..., :head_dim]


class LinearKMaskedBias(nn.Linear):
    """The fused q/k/v projection of DINOv3 (``mask_k_bias``): the bias times the buffer ``bias_mask``.

    ``bias_mask`` is a persistent buffer (in the checkpoints), 1 on the q and v thirds and 0 on the k third,
    so the key bias is zero. Upstream creates it as NaN and fills it in ``init_weights`` or from the
    checkpoint; :meth:`reset_bias_mask` fills it here.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        if out_features % 3:
            raise ValueError(f"a q/k/v projection needs out_features divisible by 3, got {out_features}")
        if self.bias is not None:
            self.register_buffer("bias_mask", torch.full_like(self.bias, math.nan))

    def reset_bias_mask(self) -> None:
        """Set ``bias_mask`` to ones on q and v, zeros on k (the value every checkpoint holds)."""
        if self.bias is not None:
            third = self.out_features // 3
            with torch.no_grad():
                self.bias_mask.fill_(1.0)
                self.bias_mask[third : 2 * third] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T + bias * bias_mask``."""
        bias = self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None
        return F.linear(x, self.weight, bias)


class Attention(nn.Module):
    """Self-attention with the upstream parameter names ``qkv``, ``q_norm``, ``k_norm``, ``proj``.

    ``mask_k_bias`` makes ``qkv`` a :class:`LinearKMaskedBias` (DINOv3 / VGGT-Omega: no key bias).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        mask_k_bias: bool = False,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        if mask_k_bias:
            # DINOv3's attention registers the norms first: the state_dict key order follows upstream.
            self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
            self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
            self.qkv = LinearKMaskedBias(dim, dim * 3, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
            self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: RopeTables | None = None,
        query_bias: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over the tokens of ``x`` [B, N, C].

        Args:
            x: token sequence.
            rope: rotary tables for the N tokens (None: no RoPE).
            query_bias: optional per-query factor r [B, N] of the logit bias ``r_i * c_j``.
            key_bias: per-key factor c [B, N]; required with ``query_bias``.
        """
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        if query_bias is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            if key_bias is None:
                raise ValueError("attention got query_bias without key_bias")
            out = attention_with_query_key_bias(q, k, v, query_bias, key_bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))
