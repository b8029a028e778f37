"""Fixtures of the training tests: a tiny PAGE-4D config and a tiny training config built on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from page4d_ros.training.config import TrainConfig

TINY_MODEL: dict[str, Any] = {
    "preset": "page4d-small",
    "img_size": 28,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
    "dino_depth": 1,
    "dino_num_heads": 2,
    "dpt_features": 16,
    "dpt_out_channels": [8, 16, 16, 16],
    "camera_head_kwargs": {"trunk_depth": 1, "num_heads": 2},
    "mask_head_hidden": 8,
}


@pytest.fixture
def tiny_model_config() -> dict[str, Any]:
    """A ~100 k-parameter PAGE-4D network (mask head included) that runs a step in well under a second."""
    return dict(TINY_MODEL)


@pytest.fixture
def tiny_train_config() -> Callable[..., TrainConfig]:
    """Factory of training configs on 42x28 synthetic sequences; keyword arguments override top-level keys."""

    def make(**overrides: Any) -> TrainConfig:
        values: dict[str, Any] = {
            "model": dict(TINY_MODEL),
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
