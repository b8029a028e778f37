"""Frame bookkeeping for TF and odometry (no rclpy import): anchoring, stamp gating, conflicts, edge history.

Pose chain (ros_interface.md 5.2): the pipeline returns ``T_world_cam`` (optical camera in its own world). The
odometry frame is anchored so that the base frame starts at the odom origin:
``T_odom_world = T_base_optical @ inv(T_world_cam(first))``, then
``T_odom_cam = T_odom_world @ T_world_cam`` and
``T_odom_base = T_odom_cam @ inv(T_base_optical)``. The pipeline keeps its world continuous across its own
resets, so odom stays continuous (REP-105). In ``tf_mode`` map the same estimate is expressed in ``map``
and ``map -> odom`` is published
over the robot's own ``odom -> base``.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform."""
    inverse = np.eye(4)
    rotation_t = T[:3, :3].T
    inverse[:3, :3] = rotation_t
    inverse[:3, 3] = -rotation_t @ T[:3, 3]
    return inverse


def body_twist(T_previous: np.ndarray, T_current: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear and angular velocity between two poses of a body, expressed in the body's current frame.

    This is the twist of ``nav_msgs/Odometry`` (REP-105: in ``child_frame_id``): the position change
    rotated into the current body frame over ``dt_s``, and the rotation vector of ``R_prev^T R_cur`` over
    ``dt_s`` (its axis is the same in the previous and the current body frame).
    """
    if dt_s <= 0:
        raise ValueError(f"the time between two poses must be positive, got {dt_s} s")
    R_current = T_current[:3, :3]
    linear = R_current.T @ (T_current[:3, 3] - T_previous[:3, 3]) / dt_s
    angular = Rotation.from_matrix(T_previous[:3, :3].T @ R_current).as_rotvec() / dt_s
    return linear, angular


def optical_position_from_odometry(T_odom_base: np.ndarray, T_base_optical: np.ndarray) -> np.ndarray:
    """Metric position of the optical centre for a robot odometry pose and the camera mounting.

    ``scale_source: odometry`` compares these with the estimated optical-camera centres: comparing base
    positions instead would add the lever arm's motion (a camera ahead of the base moves when the robot
    turns in place) and bias the scale.
    """
    return (np.asarray(T_odom_base, dtype=np.float64) @ np.asarray(T_base_optical, dtype=np.float64))[:3, 3]


@dataclass
class PoseEstimate:
    """One frame's pose in the estimate frame (odom in tf_mode odom/none, map in tf_mode map)."""

    stamp_ns: int
    T_estimate_cam: np.ndarray
    T_estimate_base: np.ndarray


class PoseAnchor:
    """Turns pipeline ``T_world_cam`` into camera and base poses in the estimate frame.

    The pipeline keeps its world continuous across its own resets, so the anchor is fixed once, by the first
    pose: ``initial_T_estimate_base`` places the base there (identity for odom; the robot's odometry pose in
    tf_mode map so that ``map -> odom`` starts at the identity).
    """

    def __init__(self, T_base_optical: np.ndarray) -> None:
        self.T_base_optical = np.asarray(T_base_optical, dtype=np.float64)
        self._T_optical_base = invert_transform(self.T_base_optical)
        self._T_estimate_world: np.ndarray | None = None

    @property
    def anchored(self) -> bool:
        """True once the first pose fixed the anchor."""
        return self._T_estimate_world is not None

    def update(
        self, stamp_ns: int, T_world_cam: np.ndarray, initial_T_estimate_base: np.ndarray | None = None
    ) -> PoseEstimate:
        """The estimate-frame poses of a frame; the first call fixes the anchor."""
        T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
        if self._T_estimate_world is None:
            base = np.eye(4) if initial_T_estimate_base is None else initial_T_estimate_base
            self._T_estimate_world = base @ self.T_base_optical @ invert_transform(T_world_cam)
        T_estimate_cam = self._T_estimate_world @ T_world_cam
        return PoseEstimate(stamp_ns, T_estimate_cam, T_estimate_cam @ self._T_optical_base)


class StampGate:
    """Admits each TF edge's stamps once and in increasing order (tf2 rejects repeats: TF_REPEATED_DATA)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}

    def admit(self, parent: str, child: str, stamp_ns: int) -> bool:
        """True (and remembered) when ``stamp_ns`` is newer than every stamp already admitted for the edge."""
        key = (parent, child)
        if stamp_ns <= self._last.get(key, -1):
            return False
        self._last[key] = stamp_ns
        return True

    def last_stamp(self, parent: str, child: str) -> int | None:
        """Newest admitted stamp of an edge, or None."""
        return self._last.get((parent, child))


@dataclass
class TfConflict:
    """Another authority publishes a child frame this node owns."""

    child_frame: str
    our_parent: str
    their_parent: str
    stamp_ns: int

    def describe(self) -> str:
        """Human-readable description for logs and diagnostics."""
        return (
            f"another node publishes '{self.their_parent}' -> '{self.child_frame}' "
            f"(stamp {self.stamp_ns} ns) but this node owns '{self.our_parent}' -> '{self.child_frame}'; "
            "stopped broadcasting it (REP-105: one parent per frame). Use tf_mode map/none or remove the "
            "other publisher."
        )


class TfConflictDetector:
    """Detects transforms of our child frames that this node did not publish.

    TFMessage carries no publisher identity, so ownership is decided by content: an observed transform of an
    owned child frame is ours only if its parent matches and its stamp is one we published (remembered in a
    bounded set). Anything else comes from another authority.
    """

    def __init__(self, remembered_stamps: int = 4096) -> None:
        self._owned: dict[str, str] = {}
        self._published: dict[str, OrderedDict[int, None]] = {}
        self._remembered = remembered_stamps
        self.conflicts: dict[str, TfConflict] = {}

    def own(self, parent: str, child: str) -> None:
        """Declare that this node publishes ``parent -> child``."""
        self._owned[child] = parent
        self._published.setdefault(child, OrderedDict())

    def record_published(self, child: str, stamp_ns: int) -> None:
        """Remember a stamp this node is about to publish for ``child``."""
        stamps = self._published.setdefault(child, OrderedDict())
        stamps[stamp_ns] = None
        while len(stamps) > self._remembered:
            stamps.popitem(last=False)

    def is_blocked(self, child: str) -> bool:
        """True when a conflict on ``child`` was detected (the edge must not be broadcast any more)."""
        return child in self.conflicts

    def observe(self, parent: str, child: str, stamp_ns: int) -> TfConflict | None:
        """Feed one transform seen on /tf or /tf_static; returns a new conflict when it reveals one."""
        our_parent = self._owned.get(child)
        if our_parent is None or child in self.conflicts:
            return None
        if parent == our_parent and stamp_ns in self._published.get(child, ()):
            return None
        conflict = TfConflict(child, our_parent, parent, stamp_ns)
        self.conflicts[child] = conflict
        return conflict


class TransformHistory:
    """Recent transforms of one external edge (e.g. the robot's ``odom -> base_link``), looked up by stamp.

    The fallback for installs without ``tf2_ros`` (the offline bag tool, a venv of PyPI wheels): it keeps
    one direct edge only and interpolates between its samples. With tf2_ros the node reads the robot's
    odometry with ``tf2_ros.Buffer.lookup_transform`` instead, which follows any chain.
    """

    def __init__(self, max_entries: int = 2000) -> None:
        self._stamps: deque[int] = deque(maxlen=max_entries)
        self._transforms: deque[np.ndarray] = deque(maxlen=max_entries)

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, T: np.ndarray) -> None:
        """Append a transform; out-of-order stamps are ignored (lookups need sorted stamps)."""
        if self._stamps and stamp_ns <= self._stamps[-1]:
            return
        self._stamps.append(stamp_ns)
        self._transforms.append(np.asarray(T, dtype=np.float64))

    def lookup(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """The transform at ``stamp_ns``: interpolated between the samples around it (translation linear,
        rotation slerp) when both are within ``tolerance_ns``, else the nearest sample within
        ``tolerance_ns``, else None."""
        if not self._stamps:
            return None
        stamps = list(self._stamps)
        index = bisect.bisect_left(stamps, stamp_ns)
        if index < len(stamps) and stamps[index] == stamp_ns:
            return self._transforms[index]
        if 0 < index < len(stamps):
            t0, t1 = stamps[index - 1], stamps[index]
            if stamp_ns - t0 <= tolerance_ns and t1 - stamp_ns <= tolerance_ns:
                T0, T1 = self._transforms[index - 1], self._transforms[index]
                weight = (stamp_ns - t0) / (t1 - t0)
                rotations = Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]]))
                T = np.eye(4)
                T[:3, :3] = Slerp([0.0, 1.0], rotations)(weight).as_matrix()
                T[:3, 3] = (1.0 - weight) * T0[:3, 3] + weight * T1[:3, 3]
                return T
        candidates = [i for i in (index - 1, index) if 0 <= i < len(stamps)]
        best = min(candidates, key=lambda i: abs(stamps[i] - stamp_ns))
        if abs(stamps[best] - stamp_ns) > tolerance_ns:
            return None
        return self._transforms[best]
