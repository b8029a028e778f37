"""π³'s input size rule: a pixel budget, multiples of 14, aspect kept, no crop and no padding.

The reference loader (``pi3/utils/basic.py::load_images_as_tensor``) sizes every frame from the first one:
``s = sqrt(limit / (W0 H0))``, ``k = round(W0 s / 14)``, ``m = round(H0 s / 14)`` (Python ``round``, ties to
even), then while ``14k * 14m > limit`` it decrements ``k`` when ``k / m`` is wider than the source aspect,
else ``m``; the size is ``(14 max(1, k), 14 max(1, m))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PIXEL_LIMIT = 255000
"""Pixel budget of the upstream loader."""


@dataclass(frozen=True)
class Pi3SizeRule:
    """Network input size for a source image: ``rule(width, height) -> (width, height, net_w, net_h)``
    (the whole image is the crop: the pipeline's size-rule convention, ``pipeline.preprocess.SizeRule``).

    Attributes:
        pixel_limit: the most pixels a network image may have (255000 upstream).
        patch_size: both sides are multiples of it.
    """

    pixel_limit: int = PIXEL_LIMIT
    patch_size: int = 14

    def __post_init__(self) -> None:
        if isinstance(self.pixel_limit, bool) or not isinstance(self.pixel_limit, int):
            raise ValueError(f"pixel_limit must be an integer, got {self.pixel_limit!r}")
        if self.pixel_limit < self.patch_size**2:
            raise ValueError(f"pixel_limit must be at least {self.patch_size**2}, got {self.pixel_limit}")

    def __call__(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(width, height, net_width, net_height)``: the whole source image, resized to the size the network
        runs at."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        patch = self.patch_size
        scale = math.sqrt(self.pixel_limit / (width * height))
        scaled_w, scaled_h = width * scale, height * scale
        cols, rows = round(scaled_w / patch), round(scaled_h / patch)
        while (patch * cols) * (patch * rows) > self.pixel_limit:
            if cols / rows > scaled_w / scaled_h:
                cols -= 1
            else:
                rows -= 1
        return width, height, patch * max(1, cols), patch * max(1, rows)
