"""What ``~/save`` writes: an accumulated coloured point map (binary PLY) and a TUM trajectory (no rclpy)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from page4d_ros.ros.conversions import matrices_to_translations_quaternions


class MapAccumulator:
    """Static points of every frame in the odom (or map) frame, thinned on a voxel grid once over budget."""

    def __init__(self, max_points: int, voxel_size: float) -> None:
        if max_points < 1 or voxel_size <= 0:
            raise ValueError(f"map needs max_points >= 1 and voxel_size > 0, got {max_points}, {voxel_size}")
        self.max_points = max_points
        self.voxel_size = voxel_size
        self._lock = threading.Lock()
        self._points: list[np.ndarray] = []
        self._colors: list[np.ndarray] = []
        self._count = 0

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def add(self, T_world_cam: np.ndarray, points_cam: np.ndarray, colors: np.ndarray) -> None:
        """Transform optical-frame ``points_cam`` [N,3] by ``T_world_cam``; keep them with their colours."""
        if points_cam.shape[0] == 0:
            return
        world = points_cam.astype(np.float64) @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
        with self._lock:
            self._points.append(world.astype(np.float32))
            self._colors.append(np.asarray(colors, dtype=np.uint8))
            self._count += world.shape[0]
            if self._count > self.max_points:
                self._thin()

    def _thin(self) -> None:
        """Keep one point per voxel; if that is still over budget, keep an even subsample."""
        points = np.concatenate(self._points)
        colors = np.concatenate(self._colors)
        keys = np.floor(points / self.voxel_size).astype(np.int64)
        _, first = np.unique(keys, axis=0, return_index=True)
        first.sort()
        if first.size > self.max_points:
            first = first[np.linspace(0, first.size - 1, self.max_points).astype(np.int64)]
        self._points, self._colors = [points[first]], [colors[first]]
        self._count = int(first.size)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """All kept points [N,3] float32 and colours [N,3] uint8."""
        with self._lock:
            if not self._points:
                return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
            return np.concatenate(self._points), np.concatenate(self._colors)

    def clear(self) -> None:
        """Forget every point."""
        with self._lock:
            self._points, self._colors, self._count = [], [], 0


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Write a binary little-endian PLY with float x y z and uchar red green blue."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if points.shape != colors.shape:
        raise ValueError(f"points {points.shape} and colors {colors.shape} differ in length")
    vertex = np.empty(points.shape[0], dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    vertex["xyz"], vertex["rgb"] = points, colors
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment page4d_ros map\n"
        f"element vertex {points.shape[0]}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(vertex.tobytes())


def write_tum(path: str | Path, poses: Sequence[tuple[int, np.ndarray]]) -> None:
    """Write ``timestamp tx ty tz qx qy qz qw`` lines (seconds; metres or model units) per pose.

    Quaternions (``w >= 0``) are converted in one batch: ``~/save`` runs on the node's executor thread, and
    one scipy call per pose took 3.2 s for the 100,000 poses the node keeps, against 0.27 s for the batch.
    """
    if not poses:
        Path(path).write_text("")
        return
    translations, quaternions = matrices_to_translations_quaternions(np.stack([T for _, T in poses]))
    values = np.hstack([translations, quaternions])
    row = " ".join(["%.9f"] * 7)
    lines = [
        f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d} {row % tuple(pose)}\n"
        for (stamp_ns, _), pose in zip(poses, values)
    ]
    Path(path).write_text("".join(lines))
