"""Training windows from synthetic dynamic sequences, with ground truth normalised like VGGT.

A :class:`SequencePool` holds whole sequences (generated with :func:`page4d_ros.synthetic.generate_sequence`,
in parallel, optionally cached to disk as ``.npz``); :func:`sample_batch` draws windows of consecutive frames
from it with a generator seeded by ``(seed, step)``, so the batch of a step never depends on what ran before
(exact resume).

Normalisation (``vggt_spec.md`` section 8): all cameras and points are expressed in the first frame's camera
coordinates, then translations, depths and points are divided by the mean distance of the valid ground-truth
points from the first camera.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class SequenceData:
    """The arrays of one sequence that training needs (a reduced ``SyntheticSequence``)."""

    rgb: np.ndarray  # [N, H, W, 3] uint8
    depth: np.ndarray  # [N, H, W] float32, 0 = no depth
    dynamic_mask: np.ndarray  # [N, H, W] bool
    T_world_cam: np.ndarray  # [N, 4, 4] float64, world-from-camera (optical)
    K: np.ndarray  # [N, 3, 3] float64

    def __post_init__(self) -> None:
        """Check shapes and broadcast a single K to every frame."""
        if self.rgb.ndim != 4 or self.rgb.shape[-1] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 [N, H, W, 3], got {self.rgb.dtype} {self.rgb.shape}")
        frames, height, width = self.rgb.shape[:3]
        if self.depth.shape != (frames, height, width):
            raise ValueError(f"depth shape {self.depth.shape} does not match rgb {self.rgb.shape}")
        if self.dynamic_mask.shape != (frames, height, width):
            raise ValueError(
                f"dynamic_mask shape {self.dynamic_mask.shape} does not match rgb {self.rgb.shape}"
            )
        if self.T_world_cam.shape != (frames, 4, 4):
            raise ValueError(f"T_world_cam must be [{frames}, 4, 4], got {self.T_world_cam.shape}")
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape == (3, 3):
            K = np.broadcast_to(K, (frames, 3, 3)).copy()
        if K.shape != (frames, 3, 3):
            raise ValueError(f"K must be [3, 3] or [{frames}, 3, 3], got {K.shape}")
        self.K = K
        self.T_world_cam = np.asarray(self.T_world_cam, dtype=np.float64)
        self.depth = np.asarray(self.depth, dtype=np.float32)
        self.dynamic_mask = np.asarray(self.dynamic_mask, dtype=bool)

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return int(self.rgb.shape[0])

    @classmethod
    def from_synthetic(cls, sequence: object) -> SequenceData:
        """Take the fields of a :class:`page4d_ros.synthetic.SyntheticSequence`."""
        return cls(
            rgb=np.asarray(sequence.rgb),
            depth=np.asarray(sequence.depth),
            dynamic_mask=np.asarray(sequence.dynamic_mask),
            T_world_cam=np.asarray(sequence.T_world_cam),
            K=np.asarray(sequence.K),
        )

    def save(self, path: Path) -> None:
        """Write the arrays to an ``.npz`` file (atomically, via a temporary name)."""
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(
            temporary,
            rgb=self.rgb,
            depth=self.depth,
            dynamic_mask=self.dynamic_mask,
            T_world_cam=self.T_world_cam,
            K=self.K,
        )
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> SequenceData:
        """Read arrays written by :meth:`save`."""
        with np.load(path) as arrays:
            return cls(
                **{name: arrays[name] for name in ("rgb", "depth", "dynamic_mask", "T_world_cam", "K")}
            )


@dataclass
class DataConfig:
    """Which synthetic sequences to train on and how windows are cut from them."""

    num_sequences: int = 64
    frames_per_sequence: int = 24
    width: int = 224
    height: int = 224
    seed: int = 1000
    min_frames: int = 4
    max_frames: int = 8
    max_stride: int = 2
    generator_kwargs: list[dict] = field(default_factory=list)
    cache_dir: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        """Validate the settings."""
        if self.num_sequences < 1:
            raise ValueError(f"num_sequences must be >= 1, got {self.num_sequences}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.max_stride < 1:
            raise ValueError(f"max_stride must be >= 1, got {self.max_stride}")
        if self.frames_per_sequence < self.max_frames:
            raise ValueError(
                f"frames_per_sequence ({self.frames_per_sequence}) must be >= max_frames ({self.max_frames})"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def sequence_kwargs(self, index: int) -> dict:
        """Keyword arguments of ``generate_sequence`` for sequence ``index`` (cycles ``generator_kwargs``)."""
        extra = self.generator_kwargs[index % len(self.generator_kwargs)] if self.generator_kwargs else {}
        return {
            "seed": self.seed + index,
            "num_frames": self.frames_per_sequence,
            "width": self.width,
            "height": self.height,
            **extra,
        }


def _generate(kwargs: dict) -> SequenceData:
    """Generate one synthetic sequence (runs in a worker process)."""
    from page4d_ros.synthetic import generate_sequence

    return SequenceData.from_synthetic(generate_sequence(**kwargs))


def _cache_name(kwargs: dict) -> str:
    """A file name that changes whenever any generator argument does."""
    parts = [f"{key}-{kwargs[key]}" for key in sorted(kwargs)]
    text = "_".join(parts)
    return "".join(char if char.isalnum() or char in "-_." else "" for char in text) + ".npz"


class SequencePool:
    """Synthetic training sequences, generated once (in parallel) and optionally cached on disk."""

    def __init__(self, sequences: Sequence[SequenceData]) -> None:
        """Wrap already-loaded sequences."""
        if not sequences:
            raise ValueError("a SequencePool needs at least one sequence")
        self.sequences = list(sequences)

    @classmethod
    def from_config(cls, config: DataConfig) -> SequencePool:
        """Generate (or load from ``config.cache_dir``) the sequences the config describes."""
        all_kwargs = [config.sequence_kwargs(index) for index in range(config.num_sequences)]
        cache = Path(config.cache_dir) if config.cache_dir else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        sequences: list[SequenceData | None] = [None] * len(all_kwargs)
        missing = []
        for index, kwargs in enumerate(all_kwargs):
            path = cache / _cache_name(kwargs) if cache is not None else None
            if path is not None and path.is_file():
                sequences[index] = SequenceData.load(path)
            else:
                missing.append(index)
        if missing:
            jobs = [all_kwargs[index] for index in missing]
            if config.workers > 1 and len(jobs) > 1:
                with ProcessPoolExecutor(max_workers=config.workers) as executor:
                    generated = list(executor.map(_generate, jobs))
            else:
                generated = [_generate(kwargs) for kwargs in jobs]
            for index, sequence in zip(missing, generated):
                sequences[index] = sequence
                if cache is not None:
                    sequence.save(cache / _cache_name(all_kwargs[index]))
        return cls([sequence for sequence in sequences if sequence is not None])


def normalize_window(
    T_world_cam: np.ndarray, K: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Express a window in its first camera's frame and scale it to unit mean point distance.

    Args:
        T_world_cam: ``[S, 4, 4]`` world-from-camera poses.
        K: ``[S, 3, 3]`` intrinsics (pixel centres at integer coordinates).
        depth: ``[S, H, W]`` z-depth, 0 where unknown.

    Returns:
        ``extrinsics [S, 3, 4]`` (camera-from-first-camera, scaled translation), ``depth [S, H, W]`` (scaled),
        ``world_points [S, H, W, 3]`` (in the first camera's frame, scaled), ``valid [S, H, W]`` and the scale
        (mean distance before scaling) that everything was divided by.
    """
    _, height, width = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    T_first_world = np.linalg.inv(T_world_cam[0])
    T_first_cam = T_first_world[None] @ T_world_cam  # [S, 4, 4] first-camera-from-camera
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    rays = np.einsum("sij,hwj->shwi", np.linalg.inv(K), pixels)  # [S, H, W, 3], z = 1
    camera_points = rays * np.where(valid, depth, 0.0)[..., None]
    world_points = (
        np.einsum("sij,shwj->shwi", T_first_cam[:, :3, :3], camera_points) + T_first_cam[:, None, None, :3, 3]
    )
    distances = np.linalg.norm(world_points[valid], axis=-1)
    scale = float(distances.mean()) if distances.size else 1.0
    if not np.isfinite(scale) or scale < 1e-6:
        scale = 1.0
    extrinsics = np.linalg.inv(T_first_cam)[:, :3, :]
    extrinsics[:, :, 3] /= scale
    world_points = np.where(valid[..., None], world_points / scale, 0.0)
    return extrinsics, np.where(valid, depth / scale, 0.0), world_points, valid, scale


def sample_window(sequence: SequenceData, num_frames: int, rng: np.random.Generator, max_stride: int) -> dict:
    """A normalised window of ``num_frames`` frames (random start, stride, direction) from a sequence."""
    stride = int(rng.integers(1, max_stride + 1))
    while stride > 1 and (num_frames - 1) * stride >= sequence.num_frames:
        stride -= 1
    span = (num_frames - 1) * stride + 1
    if span > sequence.num_frames:
        raise ValueError(f"sequence has {sequence.num_frames} frames, a window of {num_frames} does not fit")
    start = int(rng.integers(0, sequence.num_frames - span + 1))
    indices = np.arange(start, start + span, stride)
    if rng.random() < 0.5:
        indices = indices[::-1]
    extrinsics, depth, points, valid, _ = normalize_window(
        sequence.T_world_cam[indices], sequence.K[indices], sequence.depth[indices].astype(np.float64)
    )
    return {
        "images": sequence.rgb[indices].astype(np.float32).transpose(0, 3, 1, 2) / 255.0,
        "extrinsics": extrinsics.astype(np.float32),
        "intrinsics": sequence.K[indices].astype(np.float32),
        "depth": depth.astype(np.float32),
        "world_points": points.astype(np.float32),
        "point_mask": valid,
        "dynamic_mask": sequence.dynamic_mask[indices],
    }


def sample_batch(
    pool: SequencePool, config: DataConfig, batch_size: int, step: int
) -> dict[str, torch.Tensor]:
    """The batch of training step ``step``: ``batch_size`` windows with one frame count, as tensors.

    Deterministic in ``(config.seed, step)``. Keys: ``images [B,S,3,H,W]`` in [0, 1], ``extrinsics
    [B,S,3,4]``, ``intrinsics [B,S,3,3]``, ``depth [B,S,H,W]``, ``world_points [B,S,H,W,3]``, ``point_mask``
    and ``dynamic_mask`` ``[B,S,H,W]`` bool.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng([config.seed, step])
    num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    windows = [
        sample_window(
            pool.sequences[int(rng.integers(0, len(pool.sequences)))], num_frames, rng, config.max_stride
        )
        for _ in range(batch_size)
    ]
    return {key: torch.from_numpy(np.stack([window[key] for window in windows])) for key in windows[0]}
