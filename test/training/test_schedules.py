"""Mask-strength and learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from page4d_ros.training.schedules import MaskSchedule, mask_strength, warmup_cosine_factor


def test_mask_strength_hold_cosine_off() -> None:
    # Upstream nomask recipe: hold until 6000, cosine to 0 at 10000.
    assert mask_strength(0, 6000, 10000) == 1.0
    assert mask_strength(5999, 6000, 10000) == 1.0
    assert mask_strength(6000, 6000, 10000) == pytest.approx(1.0)
    assert mask_strength(8000, 6000, 10000) == pytest.approx(0.5)  # half way through the cosine
    assert mask_strength(7000, 6000, 10000) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert mask_strength(10000, 6000, 10000) == 0.0
    assert mask_strength(0, 0, 0) == 0.0  # the nomask inference setting
    with pytest.raises(ValueError):
        mask_strength(0, 10, 5)


def test_mask_schedule_modes() -> None:
    assert MaskSchedule(mode="hold").alpha(999, 1000) == 64.0
    assert MaskSchedule(mode="off").alpha(0, 1000) == 0.0
    cosine = MaskSchedule(mode="cosine", hold_fraction=0.6, end_fraction=1.0)
    assert cosine.alpha(599, 1000) == 64.0
    assert cosine.alpha(800, 1000) == pytest.approx(32.0)
    assert cosine.alpha(1000, 1000) == 0.0
    assert cosine.inference_alpha() == 0.0
    assert MaskSchedule(mode="hold").inference_alpha() == 64.0
    with pytest.raises(ValueError, match="mode"):
        MaskSchedule(mode="sometimes")
    with pytest.raises(ValueError, match="fraction"):
        MaskSchedule(hold_fraction=0.9, end_fraction=0.5)


def test_warmup_cosine_factor() -> None:
    minimum = 1e-3
    assert warmup_cosine_factor(0, 100, 0.1, minimum) == pytest.approx(minimum)
    assert warmup_cosine_factor(5, 100, 0.1, minimum) == pytest.approx(minimum + (1 - minimum) * 0.5)
    assert warmup_cosine_factor(10, 100, 0.1, minimum) == pytest.approx(1.0)
    assert warmup_cosine_factor(55, 100, 0.1, minimum) == pytest.approx((1 + minimum) / 2)
    assert warmup_cosine_factor(100, 100, 0.1, minimum) == pytest.approx(minimum)
    assert warmup_cosine_factor(0, 100, 0.0, minimum) == pytest.approx(1.0)  # no warmup
    with pytest.raises(ValueError):
        warmup_cosine_factor(0, 0, 0.1, minimum)
