"""VGGT-Omega's input-size rule (reference ``load_and_preprocess_images(mode='balanced')``).

The image is centre-cropped so that its aspect ratio a = H/W lies in [0.5, 2], then resized to
``(16 hp, 16 wp)`` with ``n = (resolution/16)^2``, ``wp = round(sqrt(n / a))``,
``hp = round(n / sqrt(n / a))`` (round half to even, at least 1): about ``n`` patches per frame whatever the
aspect ratio. Resizing is bicubic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BalancedSize:
    """The 'balanced' size rule: ``rule(width, height) -> (crop_width, crop_height, net_width, net_height)``.

    The centred ``crop_width`` x ``crop_height`` region of the source image is what the network sees, resized
    to ``net_width`` x ``net_height`` (multiples of ``patch_size``).

    Attributes:
        resolution: 512 for ``vggt_omega_1b_512.pt``, 256 for the text checkpoint.
        patch_size: 16.
        min_aspect: smallest H/W kept (wider images are cropped).
        max_aspect: largest H/W kept (taller images are cropped).
    """

    resolution: int = 512
    patch_size: int = 16
    min_aspect: float = 0.5
    max_aspect: float = 2.0

    def __post_init__(self) -> None:
        if self.resolution < self.patch_size:
            raise ValueError(f"resolution must be >= the patch size {self.patch_size}, got {self.resolution}")

    def crop(self, width: int, height: int) -> tuple[int, int]:
        """Size (width, height) of the centred crop that brings H/W into [min_aspect, max_aspect]."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        aspect = height / width
        if aspect > self.max_aspect:
            return width, round(width * self.max_aspect)
        if aspect < self.min_aspect:
            return round(height / self.min_aspect), height
        return width, height

    def __call__(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(crop_width, crop_height, net_width, net_height)`` for a ``width`` x ``height`` source image."""
        crop_width, crop_height = self.crop(width, height)
        tokens = (self.resolution / self.patch_size) ** 2
        width_patches = math.sqrt(tokens / (crop_height / crop_width))
        height_patches = tokens / width_patches
        net_width = self.patch_size * max(1, round(width_patches))
        net_height = self.patch_size * max(1, round(height_patches))
        return crop_width, crop_height, net_width, net_height
