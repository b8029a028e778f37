"""DINOv3's 2-D rotary position embedding (``RopePositionEmbedding``, base 100, ``normalize_coords='max'``).

Builds :class:`~page4d_ros.model.layers.RopeTables` in the DINOv3 variant: channel pairs over the two halves
of each head, angles ``2 pi c / period`` for patch-centre coordinates ``c`` in [-1, 1] (16 row angles then 16
column angles for head_dim 64, tiled twice), leading special tokens unrotated, the rotation computed in the
tables' dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from page4d_ros.model.layers import RopeTables


class RopePositionEmbedding(nn.Module):
    """Holds the persistent ``periods`` buffer [head_dim/4] and builds the rotary tables of a patch grid.

    Args:
        head_dim: attention head width (multiple of 4).
        base: period base (100).
        force_float32: cast the tables to float32 (the aggregator's frame blocks do; the patch encoder's
            tables follow the dtype of ``periods``).
    """

    def __init__(self, head_dim: int, base: float = 100.0, force_float32: bool = False):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = float(base)
        self.force_float32 = force_float32
        self.register_buffer("periods", torch.empty(head_dim // 4))
        self.reset_periods()

    def reset_periods(self) -> None:
        """``periods_j = base^(2j / (head_dim/2))`` (the value every checkpoint holds)."""
        exponents = 2 * torch.arange(self.head_dim // 4, dtype=torch.float32) / (self.head_dim // 2)
        if self.periods.device.type != "meta":
            with torch.no_grad():
                self.periods.copy_(self.base**exponents)

    def tables(self, rows: int, cols: int, num_unrotated: int) -> RopeTables:
        """Tables for a ``rows`` x ``cols`` patch grid after ``num_unrotated`` special tokens.

        Coordinates ``(i + 0.5) / max(rows, cols)`` are formed in float32, mapped to ``2c - 1`` and divided
        by the periods in the periods' dtype (upstream order of operations), at least float32 (a model cast
        to bf16/fp16 keeps float32 angles).
        """
        device = self.periods.device
        periods = self.periods.to(torch.promote_types(self.periods.dtype, torch.float32))
        longest = max(rows, cols)
        coords_h = torch.arange(0.5, rows, device=device, dtype=torch.float32) / longest
        coords_w = torch.arange(0.5, cols, device=device, dtype=torch.float32) / longest
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        cos, sin = torch.cos(angles), torch.sin(angles)
        if self.force_float32:
            cos, sin = cos.float(), sin.float()
        return RopeTables(
            cos[None, None],
            sin[None, None],
            pairing="halves",
            num_unrotated=num_unrotated,
            compute_dtype=sin.dtype,
        )
