"""Bounded frame queue and CameraInfo pairing for the node's callbacks (no rclpy import).

Callbacks only convert and enqueue; one worker thread takes items out. The queue drops the oldest item when
full (stale frames are the main latency source of Python inference nodes) and counts what it dropped.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from page4d_ros.pipeline.types import CameraCalibration, Frame

Item = TypeVar("Item")


@dataclass
class QueuedFrame:
    """A frame on its way to the worker with what happened before it in the stream.

    ``time_jump_back``: the stream's time jumped backwards just before this frame (bag loop, simulator
    restart); the worker flushes the older frames and restarts the TF stamps before it processes this one,
    so the event is applied in stream order, never ahead of older queued frames. ``received_s`` is the
    ``time.monotonic()`` of reception (how long the worker may wait for its CameraInfo).
    """

    frame: Frame
    time_jump_back: bool = False
    received_s: float = 0.0


def carry_time_jump(evicted: QueuedFrame, following: QueuedFrame) -> QueuedFrame:
    """When ``evicted`` is dropped by a full queue, its time jump moves to the frame after it."""
    if evicted.time_jump_back:
        following.time_jump_back = True
    return following


class DropOldestQueue(Generic[Item]):
    """Thread-safe bounded FIFO: ``put`` never blocks and evicts the oldest item when full."""

    def __init__(self, capacity: int, carry: Callable[[Item, Item], Item] | None = None) -> None:
        """``carry(evicted, next_item)`` returns what replaces the new oldest item when one is evicted (so
        an event an evicted item carried, such as a time jump, reaches the next one)."""
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self._items: deque[Item] = deque()
        self._capacity = capacity
        self._carry = carry
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
                oldest = self._items.popleft()
                self.dropped += 1
                if self._carry is not None:
                    if self._items:
                        self._items[0] = self._carry(oldest, self._items[0])
                    else:
                        item = self._carry(oldest, item)
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
    """Pairs images with calibrations: the latest per frame id, or synchronised by stamp.

    ``mode`` ``latest`` is robust to drivers with unsynchronised or zero CameraInfo stamps. ``synchronized``
    returns the calibration paired with the image: one that :meth:`pair` recorded for the image's stamp (the
    node records the pairs of ``message_filters.ApproximateTimeSynchronizer`` there when it is installed),
    else the info of the image's frame id whose stamp is nearest, if within ``slop_ns``. Pairing happens
    when the worker takes the frame (:meth:`wait_lookup`), so an info that arrives after its image (an
    image_transport CameraPublisher publishes the image first) still pairs. The wait ends early when no info
    can pair any more: one newer than the image (beyond the slop) arrived, none of the image's frame id ever
    did, or a wait for this frame id ran out and no info as new as that image has arrived since (an info
    stream slower than the images must not hold every frame back). Set ``synchronizer`` when a synchroniser
    records pairs whatever the infos' frame id.
    """

    def __init__(self, mode: str = "latest", slop_ns: int = 10_000_000, history: int = 32) -> None:
        if mode not in ("latest", "synchronized"):
            raise ValueError(f"camera_info mode must be 'latest' or 'synchronized', got {mode!r}")
        self.mode = mode
        self.slop_ns = slop_ns
        self._history = history
        self._condition = threading.Condition()
        self._by_frame: dict[str, tuple[list[int], list[CameraCalibration]]] = {}
        self._paired: OrderedDict[tuple[str, int], CameraCalibration] = OrderedDict()
        self._newest_stamp_ns: int | None = None
        self._wait_ran_out: dict[str, int] = {}
        self.synchronizer = False
        self.received = 0

    def add(self, frame_id: str, stamp_ns: int, calibration: CameraCalibration) -> None:
        """Store a calibration received for ``frame_id`` at ``stamp_ns``."""
        with self._condition:
            stamps, calibrations = self._by_frame.setdefault(frame_id, ([], []))
            index = bisect.bisect_right(stamps, stamp_ns)
            stamps.insert(index, stamp_ns)
            calibrations.insert(index, calibration)
            if len(stamps) > self._history:
                del stamps[0]
                del calibrations[0]
            self.received += 1
            if self._newest_stamp_ns is None or stamp_ns > self._newest_stamp_ns:
                self._newest_stamp_ns = stamp_ns
            caught_up = [
                image_frame_id
                for image_frame_id, image_stamp_ns in self._wait_ran_out.items()
                if (self.synchronizer or image_frame_id == frame_id)
                and stamp_ns >= image_stamp_ns - self.slop_ns
            ]
            for image_frame_id in caught_up:
                del self._wait_ran_out[image_frame_id]
            self._condition.notify_all()

    def pair(self, image_frame_id: str, image_stamp_ns: int, calibration: CameraCalibration) -> None:
        """Record the calibration a synchroniser paired with the image of ``image_frame_id`` at a stamp."""
        with self._condition:
            self._paired[(image_frame_id, int(image_stamp_ns))] = calibration
            while len(self._paired) > 4 * self._history:
                self._paired.popitem(last=False)
            self._condition.notify_all()

    def has_any(self) -> bool:
        """True once any calibration arrived."""
        with self._condition:
            return bool(self._by_frame) or bool(self._paired)

    def frame_ids(self) -> list[str]:
        """Frame ids that calibrations arrived for."""
        with self._condition:
            return sorted(self._by_frame)

    def lookup(self, frame_id: str, stamp_ns: int) -> CameraCalibration | None:
        """The calibration for an image of ``frame_id`` taken at ``stamp_ns``, or None."""
        with self._condition:
            return self._lookup_locked(frame_id, stamp_ns)

    def wait_lookup(self, frame_id: str, stamp_ns: int, deadline_s: float) -> CameraCalibration | None:
        """:meth:`lookup`, waiting until ``deadline_s`` (``time.monotonic()``) while its info may come."""
        with self._condition:
            while True:
                found = self._lookup_locked(frame_id, stamp_ns)
                if found is not None:
                    return found
                if not self._may_still_pair_locked(frame_id, stamp_ns):
                    return None
                remaining = deadline_s - time.monotonic()
                if remaining <= 0:
                    self._wait_ran_out[frame_id] = int(stamp_ns)
                    return None
                self._condition.wait(remaining)

    def _may_still_pair_locked(self, frame_id: str, stamp_ns: int) -> bool:
        """Whether an info that pairs with this image can still arrive (infos arrive in stamp order)."""
        if self.mode != "synchronized" or frame_id in self._wait_ran_out:
            return False
        if self.synchronizer:
            newest = self._newest_stamp_ns
        else:
            entry = self._by_frame.get(frame_id)
            newest = entry[0][-1] if entry else None
        return newest is not None and newest <= stamp_ns + self.slop_ns

    def _lookup_locked(self, frame_id: str, stamp_ns: int) -> CameraCalibration | None:
        if self.mode == "synchronized":
            paired = self._paired.get((frame_id, int(stamp_ns)))
            if paired is not None:
                return paired
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

    def explain_missing(self, frame_id: str, stamp_ns: int) -> str:
        """Why no calibration pairs with an image of ``frame_id`` at ``stamp_ns`` although infos arrived."""
        with self._condition:
            entry = self._by_frame.get(frame_id)
            others = sorted(
                other
                for other, (stamps, _) in self._by_frame.items()
                if other != frame_id
                and (self.mode == "latest" or any(abs(s - stamp_ns) <= self.slop_ns for s in stamps))
            )
            if entry is None or others:
                named = others or sorted(self._by_frame)
                return (
                    f"camera_info arrives for frame id(s) {named} but the image is in '{frame_id}': "
                    "using the predicted intrinsics; publish the CameraInfo with the image's frame id"
                )
            nearest = min(abs(stamp - stamp_ns) for stamp in entry[0])
            return (
                f"no camera_info of '{frame_id}' within camera_info_slop_s of image stamp {stamp_ns} ns "
                f"(nearest {nearest / 1e6:.1f} ms away): using the predicted intrinsics; raise "
                "camera_info_slop_s or use camera_info_mode latest"
            )

    def clear(self) -> None:
        """Forget every calibration."""
        with self._condition:
            self._by_frame.clear()
            self._paired.clear()


def _camera_info_field(msg: Any, name: str) -> Any:
    """A CameraInfo field by its ROS 2 name, or the upper-case ROS 1 name (``k`` -> ``K``) of a ROS 1 bag."""
    return getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper())


def calibration_from_camera_info(msg: Any) -> CameraCalibration:
    """The calibration of the image a CameraInfo describes (rclpy, rosbags ROS 2 or ROS 1 messages).

    As ``image_geometry.PinholeCameraModel`` does: the node expects rectified images, so the intrinsics are
    the projection ``P[:3, :3]`` (``K`` and ``D`` describe the raw image; ``D`` is then not applied and the
    calibration is distortion-free). Only when ``P`` is all zero (a driver that fills K only) ``K`` and
    ``D`` are used. ``roi`` (all zero: the full image) moves the principal point by its offset and
    ``binning_x/y`` (0 or 1: none) divide focal length and principal point, so the calibration and its
    size are those of the image actually published (``roi`` size / binning). Raises ValueError if unusable.
    """
    P = np.asarray(_camera_info_field(msg, "p"), dtype=np.float64).reshape(-1)
    K_raw = np.asarray(_camera_info_field(msg, "k"), dtype=np.float64).reshape(3, 3)
    rectified = P.size == 12 and bool(np.any(P))
    K = P.reshape(3, 4)[:, :3].copy() if rectified else K_raw.copy()
    if K[2, 2] == 0.0 or not np.any(K):
        raise ValueError(
            "camera_info has an all-zero K (uncalibrated camera); calibrate it or publish no info"
        )
    width, height = int(msg.width), int(msg.height)
    roi = msg.roi
    x_offset, y_offset = int(roi.x_offset), int(roi.y_offset)
    roi_width, roi_height = int(roi.width), int(roi.height)
    if (x_offset, y_offset, roi_width, roi_height) == (0, 0, 0, 0):
        roi_width, roi_height = width, height
    binning_x, binning_y = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    K[0, 2] -= x_offset
    K[1, 2] -= y_offset
    K[0, :] /= binning_x
    K[1, :] /= binning_y
    return CameraCalibration(
        K=K,
        width=roi_width // binning_x,
        height=roi_height // binning_y,
        distortion_model=str(msg.distortion_model),
        D=np.zeros(0) if rectified else np.asarray(_camera_info_field(msg, "d"), dtype=np.float64),
    )
