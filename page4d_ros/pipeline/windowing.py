"""Input queue (bounded, drop-oldest, thread-safe), keyframe gate and the buffered per-frame record."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from page4d_ros.pipeline.preprocess import ResizePlan
from page4d_ros.pipeline.types import CameraCalibration, Frame

THUMBNAIL_WIDTH = 64


class FrameQueue:
    """Bounded FIFO of input frames; when full, the oldest frame is dropped and counted.

    ``put`` never blocks, so a ROS callback can hand frames over while the worker runs a window.
    """

    def __init__(self, max_frames: int) -> None:
        if max_frames < 1:
            raise ValueError(f"queue size must be at least 1, got {max_frames}")
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self.max_frames = max_frames
        self.dropped = 0

    def put(self, frame: Frame) -> int:
        """Enqueue ``frame``; return how many old frames were dropped to make room."""
        with self._lock:
            dropped = 0
            while len(self._frames) >= self.max_frames:
                self._frames.popleft()
                dropped += 1
            self._frames.append(frame)
            self.dropped += dropped
            return dropped

    def pop(self) -> Frame | None:
        """The oldest queued frame, or None when empty."""
        with self._lock:
            return self._frames.popleft() if self._frames else None

    def resize(self, max_frames: int) -> None:
        """Change the bound (dropping the oldest frames if needed)."""
        with self._lock:
            self.max_frames = max_frames
            while len(self._frames) > max_frames:
                self._frames.popleft()
                self.dropped += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)


@dataclass
class BufferedFrame:
    """An accepted frame after preprocessing, kept until it is no longer needed as window overlap."""

    index: int
    stamp_ns: int
    frame_id: str
    network_rgb: np.ndarray
    plan: ResizePlan
    calibration: CameraCalibration | None


def grey_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A small float grey image (about ``THUMBNAIL_WIDTH`` wide, block-averaged) for motion estimates."""
    step = max(1, rgb.shape[1] // THUMBNAIL_WIDTH)
    rows = (rgb.shape[0] // step) * step
    cols = (rgb.shape[1] // step) * step
    grey = rgb[:rows, :cols].astype(np.float32).mean(axis=2)
    return grey.reshape(rows // step, step, cols // step, step).mean(axis=(1, 3))


def image_shift_px(previous: np.ndarray, current: np.ndarray, pixels_per_cell: float) -> float:
    """Magnitude of the global translation between two thumbnails (phase correlation), in source pixels."""
    if previous.shape != current.shape:
        return float("inf")
    window = np.outer(np.hanning(previous.shape[0]), np.hanning(previous.shape[1]))
    fa = np.fft.fft2((previous - previous.mean()) * window)
    fb = np.fft.fft2((current - current.mean()) * window)
    cross = fa * np.conj(fb)
    cross /= np.maximum(np.abs(cross), 1e-9)
    correlation = np.abs(np.fft.ifft2(cross))
    peak = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    shifts = [p if p <= n // 2 else p - n for p, n in zip(peak, correlation.shape)]
    return float(np.hypot(*shifts)) * pixels_per_cell


class KeyframeGate:
    """Accepts a frame only after ``min_interval_s`` and ``min_motion_px`` of image motion since the last."""

    def __init__(self) -> None:
        self._last_stamp: int | None = None
        self._last_thumbnail: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the last accepted frame (the next one is always accepted)."""
        self._last_stamp = None
        self._last_thumbnail = None

    def accept(self, frame: Frame, min_interval_s: float, min_motion_px: float) -> bool:
        """Decide on ``frame``; an accepted frame becomes the new reference."""
        thumbnail = grey_thumbnail(frame.rgb) if min_motion_px > 0 else None
        if self._last_stamp is not None:
            if min_interval_s > 0 and (frame.stamp_ns - self._last_stamp) < min_interval_s * 1e9:
                return False
            if thumbnail is not None and self._last_thumbnail is not None:
                cell = frame.rgb.shape[1] / thumbnail.shape[1]
                if image_shift_px(self._last_thumbnail, thumbnail, cell) < min_motion_px:
                    return False
        self._last_stamp = frame.stamp_ns
        self._last_thumbnail = thumbnail
        return True
