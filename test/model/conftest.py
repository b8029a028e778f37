"""Fixtures for the network tests: the upstream reference fixtures and networks loaded with their weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from page4d_ros.model import VGGT, build_model

MASK_HEAD_PREFIX = "aggregator.spatial_mask_head."


def _load_reference(shared_dir: Path, name: str) -> dict[str, Any]:
    path = shared_dir / "reference" / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is absent")
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="session")
def vggt_ref(shared_dir: Path) -> dict[str, Any]:
    """vggt_small_ref.pt: config, images, state_dict, upstream float64 outputs (vggt_spec.md section 12)."""
    return _load_reference(shared_dir, "vggt_small_ref.pt")


@pytest.fixture(scope="session")
def page4d_ref(shared_dir: Path) -> dict[str, Any]:
    """page4d_small_ref.pt: the same model plus the mask head, outputs for alpha 0 and 64."""
    return _load_reference(shared_dir, "page4d_small_ref.pt")


@pytest.fixture(scope="session")
def page4d_state_dict(vggt_ref: dict[str, Any], page4d_ref: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Full PAGE-4D small state_dict: the VGGT fixture weights plus the mask head weights."""
    state = dict(vggt_ref["state_dict"])
    state.update({MASK_HEAD_PREFIX + key: value for key, value in page4d_ref["mask_head_state_dict"].items()})
    return state


@pytest.fixture
def small_vggt(vggt_ref: dict[str, Any]) -> Callable[[torch.dtype], VGGT]:
    """Factory: the small reference VGGT with its weights, in the requested dtype."""

    def make(dtype: torch.dtype = torch.float32) -> VGGT:
        model = build_model(vggt_ref["config"])
        model.load_state_dict(vggt_ref["state_dict"], strict=True)
        return model.to(dtype)

    return make


@pytest.fixture
def small_page4d(
    page4d_ref: dict[str, Any], page4d_state_dict: dict[str, torch.Tensor]
) -> Callable[[float, torch.dtype], VGGT]:
    """Factory: the small reference PAGE-4D network with its weights for a mask strength and dtype."""

    def make(alpha: float, dtype: torch.dtype = torch.float64) -> VGGT:
        model = build_model({**page4d_ref["config"], "mask_head": True, "mask_alpha": alpha})
        model.load_state_dict(page4d_state_dict, strict=True)
        return model.to(dtype)

    return make


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (both converted to float64)."""
    expected = expected.double()
    return float((actual.double() - expected).abs().max() / expected.abs().max())


@pytest.fixture
def rel_err() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """The relative error measure used by the parity tests: max abs difference over max abs reference."""
    return relative_error
