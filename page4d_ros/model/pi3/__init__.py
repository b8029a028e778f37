"""The π³ (yyfz/Pi3) network family: config and preset, the network, its input size rule.

- :class:`Pi3` (``family = "pi3"``): ``model(images)`` on [B, N, 3, H, W] in [0, 1] (H, W multiples of 14)
  returns ``points``, ``local_points``, ``conf`` (logits) and ``camera_poses`` (camera-to-world).
- :data:`PRESETS` / :func:`resolve_config`: the ``"pi3"`` preset and ``{"family": "pi3", **sizes}`` dicts.
- :func:`build_pi3`: used by ``page4d_ros.model.build_model`` for π³ configs.
- :class:`Pi3SizeRule`: the upstream pixel-budget resize (255000 pixels, multiples of 14, no crop or pad).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from page4d_ros.model.pi3.config import FAMILY, PRESETS, is_pi3_config, resolve_config
from page4d_ros.model.pi3.network import Pi3, initialise
from page4d_ros.model.pi3.preprocess import PIXEL_LIMIT, Pi3SizeRule


def build_pi3(config: str | Mapping[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> Pi3:
    """A randomly initialised :class:`Pi3` in eval mode (structure only on the meta device).

    Raises:
        ValueError: invalid configuration.
    """
    resolved = resolve_config(config)
    with device:
        model = Pi3(resolved)
    if device.type != "meta":
        initialise(model)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


__all__ = [
    "FAMILY",
    "PIXEL_LIMIT",
    "PRESETS",
    "Pi3",
    "Pi3SizeRule",
    "build_pi3",
    "is_pi3_config",
    "resolve_config",
]
