"""Bounded frame queue and CameraInfo pairing for the node's callbacks (no rclpy import).

Callbacks only convert and enqueue; one worker thread takes items out. The queue drops the oldest item when
full (stale frames are the main latency source of Python inference nodes) and counts what it dropped.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Any, Generic, TypeVar

import numpy as np

from page4d_ros.pipeline.types import CameraCalibration

Item = TypeVar("Item")


class DropOldestQueue(Generic[Item]):
    """Thread-safe bounded FIFO: ``put`` never blocks and evicts the oldest item when full."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self._items: deque[Item] = deque()
        self._capacity = capacity
        self._condition = threading.Condition()
        self.dropped = 0
        self.enqueued = 0

    def __len__(self) -> int:
        with self._condition:
            return len(self._items)

    def put(self, item: Item) -> bool:
        """Append ``item``; returns False when an older item had to be dropped to make room."""
        with self._condition:
            evicted = len(self._items) >= self._capacity
            if evicted:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.enqueued += 1
            self._condition.notify()
            return not evicted

    def get(self, timeout: float) -> Item | None:
        """Remove and return the oldest item, waiting up to ``timeout`` seconds; None when still empty."""
        with self._condition:
            if not self._items:
                self._condition.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> int:
        """Drop every queued item (not counted as dropped); returns how many were removed."""
        with self._condition:
            count = len(self._items)
            self._items.clear()
            return count


class CameraInfoCache:
    """Pairs images with calibrations, either the latest per frame id or by stamp within a slop.

    ``mode`` ``latest`` is robust to drivers with unsynchronised or zero CameraInfo stamps; ``synchronized``
    returns the calibration whose stamp is nearest the image's, if within ``slop_ns``.
    """

    def __init__(self, mode: str = "latest", slop_ns: int = 10_000_000, history: int = 32) -> None:
        if mode not in ("latest", "synchronized"):
            raise ValueError(f"camera_info mode must be 'latest' or 'synchronized', got {mode!r}")
        self.mode = mode
        self.slop_ns = slop_ns
        self._history = history
        self._lock = threading.Lock()
        self._by_frame: dict[str, tuple[list[int], list[CameraCalibration]]] = {}
        self.received = 0

    def add(self, frame_id: str, stamp_ns: int, calibration: CameraCalibration) -> None:
        """Store a calibration received for ``frame_id`` at ``stamp_ns``."""
        with self._lock:
            stamps, calibrations = self._by_frame.setdefault(frame_id, ([], []))
            index = bisect.bisect_right(stamps, stamp_ns)
            stamps.insert(index, stamp_ns)
            calibrations.insert(index, calibration)
            if len(stamps) > self._history:
                del stamps[0]
                del calibrations[0]
            self.received += 1

    def has_any(self) -> bool:
        """True once any calibration arrived."""
        with self._lock:
            return bool(self._by_frame)

    def lookup(self, frame_id: str, stamp_ns: int) -> CameraCalibration | None:
        """The calibration for an image of ``frame_id`` taken at ``stamp_ns``, or None."""
        with self._lock:
            entry = self._by_frame.get(frame_id)
            if entry is None:
                return None
            stamps, calibrations = entry
            if self.mode == "latest":
                return calibrations[-1]
            index = bisect.bisect_left(stamps, stamp_ns)
            candidates = [i for i in (index - 1, index) if 0 <= i < len(stamps)]
            best = min(candidates, key=lambda i: abs(stamps[i] - stamp_ns))
            return calibrations[best] if abs(stamps[best] - stamp_ns) <= self.slop_ns else None

    def clear(self) -> None:
        """Forget every calibration."""
        with self._lock:
            self._by_frame.clear()


def calibration_from_camera_info(msg: Any) -> CameraCalibration:
    """A :class:`CameraCalibration` from a CameraInfo message (rclpy or rosbags); ValueError if unusable."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if K[2, 2] == 0.0 or not np.any(K):
        raise ValueError(
            "camera_info has an all-zero K (uncalibrated camera); calibrate it or publish no info"
        )
    return CameraCalibration(
        K=K,
        width=int(msg.width),
        height=int(msg.height),
        distortion_model=str(msg.distortion_model),
        D=np.asarray(msg.d, dtype=np.float64),
    )
