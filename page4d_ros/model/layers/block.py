"""Pre-norm transformer block with LayerScale (the ``Block`` of VGGT and DINOv2)."""

from __future__ import annotations

import torch
from torch import nn

from page4d_ros.model.layers.attention import Attention
from page4d_ros.model.layers.mlp import Mlp
from page4d_ros.model.layers.rope import RopeTables


class LayerScale(nn.Module):
    """Per-channel learned scale ``x * gamma``."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the last dimension."""
        return x * self.gamma


class Block(nn.Module):
    """``x + ls1(attn(norm1(x))) ; x + ls2(mlp(norm2(x)))``.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        init_values: LayerScale initial value (None or 0: no LayerScale, as upstream).
        qk_norm: LayerNorm on per-head queries and keys.
        norm_eps: epsilon of norm1 and norm2 (1e-5 in VGGT, 1e-6 in DINOv2); q/k norms use 1e-5.
        mask_k_bias: no key bias in the q/k/v projection (DINOv3 / VGGT-Omega, see ``LinearKMaskedBias``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        init_values: float | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        mask_k_bias: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        rope: RopeTables | None = None,
        query_bias: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
        query_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block to ``x`` [B, N, C]; see :meth:`Attention.forward` for the optional arguments."""
        x = x + self.ls1(self.attn(self.norm1(x), rope, query_bias, key_bias, query_rows))
        return x + self.ls2(self.mlp(self.norm2(x)))
