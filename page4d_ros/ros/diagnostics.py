"""Statistics behind ``/diagnostics`` (no rclpy import): rates, percentiles and status records.

diagnostic_updater is not on PyPI, so the node assembles ``diagnostic_msgs/DiagnosticArray`` itself from
:class:`StatusRecord` objects built with these helpers.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3
"""diagnostic_msgs/DiagnosticStatus levels."""

INPUT_STATUS = "page4d: input"
PROBLEM_STATUS: dict[str, str] = {
    "configure": "page4d: node",
    "pipeline_error": "page4d: inference",
    "publish_error": "page4d: inference",
    "reset": "page4d: tracking",
    "tf_conflict": "page4d: tf",
}
"""The status reporting each problem kind that is not a rejected input; every other kind goes to
``page4d: input`` (and counts in its ``rejected_inputs``)."""
ERROR_KINDS = frozenset({"callback_error", "configure", "pipeline_error", "publish_error", "tf_conflict"})
"""Problem kinds reported at ERROR; the others at WARN."""


def status_of(kind: str) -> str:
    """Name of the diagnostic status that reports problems of ``kind``."""
    return PROBLEM_STATUS.get(kind, INPUT_STATUS)


def level_of(kind: str) -> int:
    """Diagnostic level of a new problem of ``kind``."""
    return ERROR if kind in ERROR_KINDS else WARN


@dataclass
class StatusRecord:
    """One DiagnosticStatus: name, level, summary message and key/value details."""

    name: str
    level: int = OK
    message: str = "ok"
    values: dict[str, str] = field(default_factory=dict)

    def escalate(self, level: int, message: str) -> None:
        """Raise the level to ``level`` (never lower it) and prepend ``message`` to the summary."""
        if level > self.level:
            self.level = level
            self.message = message if self.message == "ok" else f"{message}; {self.message}"
        elif level > OK:
            self.message = message if self.message == "ok" else f"{self.message}; {message}"


class RateMeter:
    """Event rate over a sliding time window (events per second), thread-safe."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()
        self._lock = threading.Lock()

    def tick(self, now_ns: int) -> None:
        """Record one event at ``now_ns``."""
        with self._lock:
            self._times.append(now_ns)
            self._trim(now_ns)

    def rate(self, now_ns: int) -> float:
        """Events per second over the window ending at ``now_ns`` (0 with fewer than two events)."""
        with self._lock:
            self._trim(now_ns)
            if len(self._times) < 2:
                return 0.0
            span = (self._times[-1] - self._times[0]) / 1e9
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now_ns: int) -> None:
        while self._times and now_ns - self._times[0] > self._window_ns:
            self._times.popleft()


class PercentileWindow:
    """The last ``size`` samples of a quantity with percentiles and mean/max, thread-safe."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        """Record one sample."""
        with self._lock:
            self._values.append(float(value))

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def summary(self) -> dict[str, float]:
        """``p50``, ``p95``, ``mean`` and ``max`` of the samples (NaN when there are none)."""
        with self._lock:
            values = np.array(self._values, dtype=np.float64)
        if values.size == 0:
            return {"p50": float("nan"), "p95": float("nan"), "mean": float("nan"), "max": float("nan")}
        p50, p95 = np.percentile(values, [50, 95])
        return {
            "p50": float(p50),
            "p95": float(p95),
            "mean": float(values.mean()),
            "max": float(values.max()),
        }


class ProblemLog:
    """Counts problems by kind (bad encoding, zero size, backwards stamp, ...); keeps the newest message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._last: dict[str, tuple[int, str]] = {}
        self._sequence = 0
        self.last_message = ""

    def report(self, kind: str, message: str) -> None:
        """Record one problem of ``kind`` described by ``message``."""
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.last_message = f"{kind}: {message}"
            self._sequence += 1
            self._last[kind] = (self._sequence, self.last_message)

    def last_message_where(self, status: str) -> str:
        """The newest problem message of the kinds that ``status`` reports (see :func:`status_of`)."""
        with self._lock:
            entries = [entry for kind, entry in self._last.items() if status_of(kind) == status]
        return max(entries)[1] if entries else ""

    def new_since_last_call(self) -> dict[str, int]:
        """Per-kind counts added since the previous call (used to raise a WARN for one diagnostics period)."""
        with self._lock:
            fresh = {
                k: v - self._reported.get(k, 0)
                for k, v in self.counts.items()
                if v > self._reported.get(k, 0)
            }
            self._reported = dict(self.counts)
            return fresh

    def snapshot(self) -> dict[str, int]:
        """A copy of the per-kind counts (safe while other threads report)."""
        with self._lock:
            return dict(self.counts)

    def total(self) -> int:
        """Problems recorded so far."""
        with self._lock:
            return sum(self.counts.values())
