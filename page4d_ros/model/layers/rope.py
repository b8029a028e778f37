"""2-D rotary position embedding (RoPE) of the VGGT aggregator.

The first half of each head's channels rotates with the token's row index, the second half with its
column index; within each half the rotation pairs channel ``c`` with ``c + half/2`` ("rotate half", not
interleaved). Angles use ``inv_freq[j] = base ** (-2j / half)``, are formed in float32 and only then cast to
the token dtype, exactly like the upstream implementation (this matters for float64 parity).

:class:`RopeTables` also applies the DINOv3-style variant of VGGT-Omega (``pairing="halves"``: channel ``c``
pairs with ``c + head_dim/2``, leading tokens left unrotated, the rotation done in the tables' dtype); its
tables are built by ``page4d_ros.model.vggt_omega.rope``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


def patch_positions(
    rows: int, cols: int, num_special: int, device: torch.device | None = None
) -> torch.Tensor:
    """(row, col) of each token of one frame: ``num_special`` tokens at (0, 0), patches from (1, 1).

    Returns a long tensor [num_special + rows * cols, 2] in row-major patch order.
    """
    grid_y = torch.arange(1, rows + 1, device=device).repeat_interleave(cols)
    grid_x = torch.arange(1, cols + 1, device=device).repeat(rows)
    patches = torch.stack([grid_y, grid_x], dim=-1)
    special = torch.zeros(num_special, 2, dtype=patches.dtype, device=device)
    return torch.cat([special, patches], dim=0)


@dataclass
class RopeTables:
    """Per-token cosine and sine factors [1, 1, N, head_dim] for queries/keys of shape [B, H, N, D]."""

    cos: torch.Tensor
    sin: torch.Tensor
    pairing: str = "axis_quarters"
    """``"axis_quarters"`` (VGGT: rotate halves within each axis half) or ``"halves"`` (DINOv3: over the
    two halves of the head)."""
    num_unrotated: int = 0
    """Leading tokens passed through unrotated (the tables cover the tokens after them)."""
    compute_dtype: torch.dtype | None = None
    """None: rotate in the tokens' dtype (VGGT); a dtype: cast the tokens to it, rotate, cast back
    (DINOv3)."""

    def repeat(self, times: int) -> RopeTables:
        """Tables for ``times`` frames concatenated along the token axis (global attention)."""
        return dataclasses.replace(
            self, cos=self.cos.repeat(1, 1, times, 1), sin=self.sin.repeat(1, 1, times, 1)
        )

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        """Rotate ``tokens`` [B, heads, N, head_dim]: ``t * cos + rotate_half(t) * sin``."""
        original_dtype = tokens.dtype
        if self.compute_dtype is not None:
            tokens = tokens.to(self.compute_dtype)
        prefix = tokens[..., : self.num_unrotated, :]
        if self.num_unrotated:
            tokens = tokens[..., self.num_unrotated :, :]
        if self.pairing == "halves":
            first, second = tokens.chunk(2, dim=-1)
            rotated = torch.cat([-second, first], dim=-1)
        else:
            quarter = tokens.shape[-1] // 4
            y1, y2, x1, x2 = tokens.split(quarter, dim=-1)
            rotated = torch.cat([-y2, y1, -x2, x1], dim=-1)
        out = tokens * self.cos.to(tokens.dtype) + rotated * self.sin.to(tokens.dtype)
        if self.num_unrotated:
            out = torch.cat([prefix, out], dim=-2)
        return out.to(original_dtype)


class RotaryPositionEmbedding2D(nn.Module):
    """Builds :class:`RopeTables` for integer (row, col) positions; holds no parameters."""

    def __init__(self, frequency: float = 100.0):
        super().__init__()
        self.base_frequency = float(frequency)

    def tables(self, positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> RopeTables:
        """Cos/sin factors for ``positions`` [N, 2] (long) and heads of width ``head_dim`` (multiple of 4)."""
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
        half = head_dim // 2
        exponents = torch.arange(0, half, 2, device=positions.device).float() / half
        inv_freq = 1.0 / (self.base_frequency**exponents)
        table_positions = torch.arange(
            int(positions.max()) + 1, device=positions.device, dtype=inv_freq.dtype
        )
        angles = torch.outer(table_positions, inv_freq).to(dtype)
        angles = torch.cat([angles, angles], dim=-1)
        cos_table, sin_table = angles.cos(), angles.sin()
        cos = torch.cat([cos_table[positions[:, 0]], cos_table[positions[:, 1]]], dim=-1)
        sin = torch.cat([sin_table[positions[:, 0]], sin_table[positions[:, 1]]], dim=-1)
        return RopeTables(cos[None, None], sin[None, None])
