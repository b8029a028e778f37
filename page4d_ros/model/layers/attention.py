"""Multi-head self-attention with optional QK-norm, 2-D RoPE and PAGE-4D's rank-1 logit bias.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so the fused (flash /
memory-efficient) kernels are used where the backend has them; only the few biased query rows of PAGE-4D's
masked blocks are recomputed explicitly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from page4d_ros.model.layers.rope import RopeTables


def _sdpa_compute_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype SDPA will compute in: the autocast dtype when autocast is on for q's device."""
    device_type = q.device.type
    if q.is_floating_point() and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return q.dtype


def attention_with_query_key_bias(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query_bias: torch.Tensor,
    key_bias: torch.Tensor,
    query_rows: torch.Tensor,
) -> torch.Tensor:
    """Attention whose logits get the rank-1 bias ``query_bias[b, i] * key_bias[b, j]`` (same for all heads).

    Computes ``softmax(q k^T / sqrt(D) + r c^T) v`` for q, k, v [B, H, N, D], r = ``query_bias`` [B, N] and
    c = ``key_bias`` [B, N], where r is zero outside the queries ``query_rows`` [R] (PAGE-4D: the R = 5 S
    camera and register tokens of S frames). All rows go through one plain
    ``scaled_dot_product_attention`` (a fused kernel); the R biased rows are then recomputed exactly with the
    bias, in float32 (float64 for float64 input) whatever the autocast dtype, at O(R N) extra memory, which
    is a few percent of the work since R is a small share of N (PAGE-4D spec 2.2).
    """
    head_dim = q.shape[-1]
    compute_dtype = _sdpa_compute_dtype(q)
    q, k, v = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
    out = F.scaled_dot_product_attention(q, k, v)
    work_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        rows_q = q.index_select(2, query_rows).to(work_dtype) * head_dim**-0.5
        logits = rows_q @ k.to(work_dtype).transpose(-1, -2)
        bias = query_bias.index_select(1, query_rows).to(work_dtype)[:, None, :, None]
        logits += bias * key_bias.to(work_dtype)[:, None, None, :]
        rows_out = torch.softmax(logits, dim=-1) @ v.to(work_dtype)
    if out.requires_grad:
        return out.index_copy(2, query_rows, rows_out.to(out.dtype))
    return out.index_copy_(2, query_rows, rows_out.to(out.dtype))


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
        query_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over the tokens of ``x`` [B, N, C].

        Args:
            x: token sequence.
            rope: rotary tables for the N tokens (None: no RoPE).
            query_bias: optional per-query factor r [B, N] of the logit bias ``r_i * c_j``.
            key_bias: per-key factor c [B, N]; required with ``query_bias``.
            query_rows: indices [R] of the queries where r may be non-zero; required with ``query_bias``.
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
            if key_bias is None or query_rows is None:
                raise ValueError("attention got query_bias without key_bias and query_rows")
            out = attention_with_query_key_bias(q, k, v, query_bias, key_bias, query_rows)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))
