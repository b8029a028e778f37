"""Fixtures of the training tests: the shared tiny PAGE-4D config (4 block pairs), training configs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from page4d_ros.training.config import TrainConfig


@pytest.fixture
def tiny_model_config(make_tiny_model_config: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The repository's tiny random-model config with 4 block pairs (so a 'middle' block set exists)."""
    return make_tiny_model_config(depth=4)


@pytest.fixture
def tiny_train_config(tiny_model_config: dict[str, Any]) -> Callable[..., TrainConfig]:
    """Factory of training configs on 42x28 synthetic sequences; keyword arguments override top-level keys."""

    def make(**overrides: Any) -> TrainConfig:
        values: dict[str, Any] = {
            "model": dict(tiny_model_config),
            "trainable": "all",
            "steps": 6,
            "batch_size": 2,
            "lr": 1e-3,
            "mask_head_lr": 1e-3,
            "warmup_fraction": 0.0,
            "mask_head_warmup_fraction": 0.0,
            "mask": {"mode": "hold"},
            "log_every": 1,
            "val_every": 1000,
            "checkpoint_every": 1000,
            "data": {
                "num_sequences": 2,
                "frames_per_sequence": 4,
                "width": 42,
                "height": 28,
                "min_frames": 2,
                "max_frames": 3,
                "seed": 11,
                "generator_kwargs": [{"num_movers": 2, "scene": "room"}],
            },
        }
        values.update(overrides)
        return TrainConfig.from_dict(values)

    return make
