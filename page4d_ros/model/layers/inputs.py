"""The input check every network family's forward makes before it touches its images."""

from __future__ import annotations

from typing import Any

import torch


def check_image_batch(images: Any, patch_size: int, device: torch.device, resize_hint: str) -> torch.Tensor:
    """Validate network input images and return them as [B, S, 3, H, W] (a 4-D [S, 3, H, W] gains B = 1).

    Raises ``ValueError`` naming what is wrong: not a tensor, wrong shape, not floating point, no frame, H or
    W not a positive multiple of ``patch_size`` (the message ends with ``resize_hint``), or a device other
    than the model's ``device``. The dtype is left to the caller.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor [B, S, 3, H, W], got {type(images).__name__}")
    if images.ndim == 4:
        images = images[None]
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"images must have shape [B, S, 3, H, W] or [S, 3, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}; divide uint8 by 255")
    if images.shape[0] == 0 or images.shape[1] == 0:
        raise ValueError(f"images must hold at least one frame, got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height < patch_size or width < patch_size or height % patch_size or width % patch_size:
        raise ValueError(
            f"image height and width must be positive multiples of the patch size {patch_size}, "
            f"got {height}x{width}; {resize_hint}"
        )
    if images.device != device:
        raise ValueError(f"images are on {images.device} but the model is on {device}; move one of them")
    return images
