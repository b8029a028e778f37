"""Test-wide isolation and shared fixtures.

Importing this module (pytest does so before any test module) configures the ROS 2 middleware for a
self-contained run: a loopback-only Fast DDS profile with a large shared-memory segment, a ROS domain id that
no other concurrent test run on this machine holds, and ROS logs inside ``build/``. Child processes
inherit it.
"""

from __future__ import annotations

import copy
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
BUILD_DIR = REPO_ROOT / "build" / "test"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_loopback.xml"

# A ~0.3 M-parameter PAGE-4D network (the page4d-small preset shrunk) for tests that need a real model fast.
TINY_MODEL_CONFIG: dict[str, Any] = {
    "preset": "page4d-small",
    "img_size": 112,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "dino_depth": 1,
    "dino_num_heads": 2,
    "dpt_features": 16,
    "dpt_out_channels": [8, 16, 32, 32],
    "camera_head_kwargs": {"trunk_depth": 1, "num_heads": 2},
    "mask_head_hidden": 16,
}

# A 0.13 M-parameter π³ (the "pi3" preset shrunk) for the π³ pipeline, node and tool tests.
TINY_PI3_CONFIG: dict[str, Any] = {
    "family": "pi3",
    "patch_size": 14,
    "pos_type": "rope100",
    "embed_dim": 32,
    "enc_img_size": 56,
    "enc_depth": 2,
    "enc_num_heads": 2,
    "enc_mlp_ratio": 2,
    "enc_num_register_tokens": 4,
    "dec_depth": 2,
    "dec_num_heads": 2,
    "dec_mlp_ratio": 2,
    "num_register_tokens": 5,
    "head_dec_embed_dim": 32,
    "head_dec_num_heads": 2,
    "head_dec_depth": 1,
    "point_out_dim": 32,
    "camera_out_dim": 16,
}

_domain_lock_file = None


def _claim_domain_id() -> int:
    """Hold an exclusive lock on one ROS domain id (1..100) for the life of this process."""
    global _domain_lock_file
    lock_dir = Path("/tmp/page4d_ros_test_domains")
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % 100
    for offset in range(100):
        domain = (start + offset) % 100 + 1
        handle = open(lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - kept open to hold the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _domain_lock_file = handle
        return domain
    raise RuntimeError("no free ROS domain id in 1..100 for this test run")


def _isolate_ros_environment() -> None:
    """Point the middleware at loopback only, a private domain and a log folder under build/."""
    env = os.environ
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("ROS_STATIC_PEERS", None)
    env["ROS_DOMAIN_ID"] = str(_claim_domain_id())
    log_dir = BUILD_DIR / "ros_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env["ROS_LOG_DIR"] = str(log_dir)
    # Large buffers stay mmapped instead of being trimmed and refaulted on every message (ros_on_pypi.md).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "67108864")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "268435456")
    env["PYTHONUNBUFFERED"] = "1"


_isolate_ros_environment()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``../shared`` folder beside the clone; skips when a user's clone has none."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent (it exists beside the CI clone only)")
    return SHARED_DIR


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A fresh, initialised rclpy Context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


@pytest.fixture
def spawn_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start child processes in their own session; every one still alive is stopped after the test.

    Call it with the arguments after the Python interpreter, e.g. ``spawn_process("-m", "mod", "--flag")``.
    stdout/stderr go to files in the test's tmp folder (named ``proc<N>.log``) so no pipe can fill up.
    """
    processes: list[tuple[subprocess.Popen, object]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(tmp_path / f"proc{len(processes)}.log", "w")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        processes.append((proc, log))
        return proc

    yield spawn
    for proc, log in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def make_tiny_model_config() -> Callable[..., dict[str, Any]]:
    """Factory of the tiny random-model config (``TINY_MODEL_CONFIG``); keyword arguments override fields.

    Every call returns a fresh deep copy, so a test may change it freely.
    """

    def build(**overrides: Any) -> dict[str, Any]:
        return copy.deepcopy({**TINY_MODEL_CONFIG, **overrides})

    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, make_tiny_model_config: Callable[..., dict[str, Any]]
) -> Path:
    """A saved tiny random-weight network whose camera head predicts finite poses (built once per session).

    Random weights give a field of view of ~0 (ReLU), i.e. infinite focal lengths; biasing the pose branch's
    output (quaternion w, field of view) gives finite, plausible cameras so the whole pipeline runs.
    """
    import torch

    from page4d_ros.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(make_tiny_model_config())
    with torch.no_grad():
        model.camera_head.pose_branch.fc2.bias[6] = 0.5
        model.camera_head.pose_branch.fc2.bias[7:9] = 0.3
    return save_checkpoint(model, tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors")


# A ~60 k-parameter VGGT-Omega (width 32, 2 block pairs) at 'balanced' resolution 96: 160 x 120 -> 112 x 80.
TINY_VGGT_OMEGA_CONFIG: dict[str, Any] = {
    "family": "vggt-omega",
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_register_tokens": 2,
    "register_attention_block_indices": [1],
    "cached_layer_indices": [0, 1],
    "pe_depth": 1,
    "pe_num_heads": 2,
    "pe_n_storage_tokens": 2,
    "dense_features": 16,
    "dense_out_channels": [8, 16, 16, 16],
    "dense_intermediate_layer_idx": [0, 0, 1, 1],
    "image_resolution": 96,
}


@pytest.fixture
def tiny_omega_config() -> dict[str, Any]:
    """A fresh copy of the tiny VGGT-Omega config (``TINY_VGGT_OMEGA_CONFIG``)."""
    return copy.deepcopy(TINY_VGGT_OMEGA_CONFIG)


@pytest.fixture(scope="session")
def tiny_omega_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random VGGT-Omega whose camera branch is biased to finite, plausible cameras."""
    import torch

    from page4d_ros.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(copy.deepcopy(TINY_VGGT_OMEGA_CONFIG))
    with torch.no_grad():
        model.camera_head.camera_branch[2].bias[6] = 1.0  # quaternion w: near-identity rotations
        model.camera_head.camera_branch[2].bias[7:9] = 1.0  # about 1 rad field of view
    return save_checkpoint(model, tmp_path_factory.mktemp("omega") / "omega_tiny.safetensors")
@pytest.fixture(scope="session")
def tiny_pi3_config() -> dict[str, Any]:
    """A copy of ``TINY_PI3_CONFIG`` for the random-weight π³ tests (one per session: do not modify it)."""
    return copy.deepcopy(TINY_PI3_CONFIG)
