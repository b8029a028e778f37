"""Shared fixtures of the synthetic-scene tests."""

from __future__ import annotations

import pytest

from page4d_ros.synthetic import SyntheticSequence, generate_sequence


@pytest.fixture(scope="session")
def small_sequence() -> SyntheticSequence:
    """A short low-resolution orbit sequence with three movers (seed 11)."""
    return generate_sequence(11, 6, 96, 72, camera_motion="orbit", num_movers=3)
