"""Learning-rate and mask-strength schedules of the PAGE-4D recipe (``page4d_spec.md`` sections 2.1 and 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MASK_MODES = ("hold", "cosine", "off")


def mask_strength(step: int, hold_steps: int, end_steps: int) -> float:
    """Relative mask strength in [0, 1] at a training step (the released code's ``mask_alpha``).

    1 before ``hold_steps``; a half cosine from 1 down to 0 between ``hold_steps`` and ``end_steps``; 0 from
    ``end_steps`` on. ``hold_steps == end_steps == 0`` gives 0 everywhere (the "nomask" inference setting).
    """
    if hold_steps < 0 or end_steps < hold_steps:
        raise ValueError(f"need 0 <= hold_steps <= end_steps, got hold={hold_steps}, end={end_steps}")
    if step < hold_steps:
        return 1.0
    if step >= end_steps:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - hold_steps) / (end_steps - hold_steps)))


@dataclass
class MaskSchedule:
    """Mask strength (attention-bias scale) over training.

    Modes: ``"hold"`` keeps the mask at full strength throughout (the released *mask* variant); ``"cosine"``
    holds it for ``hold_fraction`` of the run, then decays it with a half cosine to 0 at ``end_fraction`` and
    keeps it off (the *nomask* / training-only variant, 6000 / 10000 steps upstream); ``"off"`` never uses it.
    """

    mode: str = "cosine"
    max_alpha: float = 64.0
    hold_fraction: float = 0.6
    end_fraction: float = 1.0

    def __post_init__(self) -> None:
        """Validate the settings."""
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask schedule mode must be one of {MASK_MODES}, got {self.mode!r}")
        if not 0.0 <= self.hold_fraction <= self.end_fraction <= 1.0:
            raise ValueError(
                f"need 0 <= hold_fraction <= end_fraction <= 1, got {self.hold_fraction}, {self.end_fraction}"
            )
        if self.max_alpha < 0:
            raise ValueError(f"max_alpha must be >= 0, got {self.max_alpha}")

    def alpha(self, step: int, total_steps: int) -> float:
        """Attention-bias scale (0 .. ``max_alpha``) at ``step`` of a run of ``total_steps``."""
        if self.mode == "off":
            return 0.0
        if self.mode == "hold":
            return self.max_alpha
        hold = round(self.hold_fraction * total_steps)
        end = max(hold, round(self.end_fraction * total_steps))
        return self.max_alpha * mask_strength(step, hold, end)

    def inference_alpha(self) -> float:
        """The strength the trained model should run with: full for ``"hold"``, 0 otherwise."""
        return self.max_alpha if self.mode == "hold" else 0.0


def warmup_cosine_factor(step: int, total_steps: int, warmup_fraction: float, min_factor: float) -> float:
    """LR multiplier: linear warmup from ``min_factor`` to 1 over ``warmup_fraction`` of the run, then a
    cosine to ``min_factor`` at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    warmup = round(warmup_fraction * total_steps)
    if step < warmup:
        return min_factor + (1.0 - min_factor) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
