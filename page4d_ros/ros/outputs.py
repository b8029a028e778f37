"""From a pipeline ``FrameResult`` to output messages and TF, shared by the node and the offline bag tool.

:class:`OutputBuilder` keeps the state that outputs need across frames (pose anchor, TF stamp gate,
conflict guard, path, the robot's odometry for tf_mode map) and returns, per frame, the messages keyed by
their relative topic name plus the transforms for ``/tf``. It builds messages through a
:class:`MessageFactory`, so rclpy and rosbags messages come out of the same code. No rclpy import happens
here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from page4d_ros.pipeline.types import FrameResult
from page4d_ros.ros import messages
from page4d_ros.ros.conversions import depth_to_millimetres, xyz_rpy_to_matrix
from page4d_ros.ros.frames import (
    PoseAnchor,
    PoseEstimate,
    StampGate,
    TfConflict,
    TfConflictDetector,
    TransformHistory,
    body_twist,
    invert_transform,
)

TF_TOPIC = "/tf"
"""Key of the ``tf2_msgs/TFMessage`` in :meth:`OutputBuilder.frame_messages` (absolute, not relative)."""

NON_METRIC_NOTE = (
    "scale_source is '{source}': TF and odometry are published in model units, not metres. For metric "
    "scale set scale_source to odometry (a nav_msgs/Odometry on 'odom'), depth (a metric depth image on "
    "'metric_depth'), camera_height (camera_height_m) or fixed (scale_factor); set require_metric_for_tf "
    "true to withhold TF and odometry until the scale is metric."
)
"""The one-time message (log and diagnostics) when TF goes out in model units."""

METRIC_SCALE_STATES = frozenset({"metric", "held", "fixed"})
"""``FrameResult.scale_state`` values meaning metres (measured now, measured before and held, or fixed)."""

IMAGE_TOPICS = (
    "depth/image",
    "depth/camera_info",
    "depth/image_mm",
    "rgb/image",
    "rgb/camera_info",
    "dynamic_mask/image",
    "dynamic_mask/camera_info",
    "confidence/image",
    "points",
    "points_static",
)
"""Per-frame outputs carrying the source image header, in publishing order."""

POSE_TOPICS = ("odometry", "camera_pose", "path")
"""Pose outputs in the odom (or map) frame."""

TOPIC_TYPES: dict[str, str] = {
    "depth/image": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "depth/image_mm": "sensor_msgs/msg/Image",
    "rgb/image": "sensor_msgs/msg/Image",
    "rgb/camera_info": "sensor_msgs/msg/CameraInfo",
    "dynamic_mask/image": "sensor_msgs/msg/Image",
    "dynamic_mask/camera_info": "sensor_msgs/msg/CameraInfo",
    "confidence/image": "sensor_msgs/msg/Image",
    "points": "sensor_msgs/msg/PointCloud2",
    "points_static": "sensor_msgs/msg/PointCloud2",
    "odometry": "nav_msgs/msg/Odometry",
    "camera_pose": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "path": "nav_msgs/msg/Path",
}
"""Message type of every relative output topic."""


def is_metric(result: FrameResult) -> bool:
    """True when the result's scale state means metres."""
    return result.scale_state in METRIC_SCALE_STATES


@dataclass
class FrameOutputs:
    """What one frame produces: ``(relative topic, message)`` pairs, TransformStamped messages, and notes."""

    messages: list[tuple[str, Any]] = field(default_factory=list)
    transforms: list[Any] = field(default_factory=list)
    estimate: PoseEstimate | None = None
    tf_note: str = ""
    non_metric_tf: bool = False


class OutputBuilder:
    """Stateful converter from results to messages for one output stream (see module docstring).

    ``settings`` is the validated parameter dict (:func:`page4d_ros.ros.parameters.validate_parameters`).
    """

    def __init__(self, factory: messages.MessageFactory, settings: dict[str, Any]) -> None:
        self.factory = factory
        self.settings = dict(settings)
        self.T_base_optical = xyz_rpy_to_matrix(
            settings["base_to_optical_xyz"], settings["base_to_optical_rpy"]
        )
        self.anchor = PoseAnchor(self.T_base_optical)
        self.gate = StampGate()
        self.conflicts = TfConflictDetector()
        self.robot_odometry = TransformHistory()
        # PoseStamped messages of the path, built once per frame (rebuilding 2000 poses per frame: ~0.1 s).
        self.path: deque[Any] = deque(maxlen=settings["path_max_poses"])
        self.last_tf_stamp_ns: int | None = None
        self.mounting_pending = ""
        """Non-empty while pose outputs wait for the camera mounting (tf2 lookup): what is awaited."""
        self.robot_odometry_lookup: Callable[[int, int], np.ndarray | None] | None = None
        """``(stamp_ns, tolerance_ns) -> T_odom_base`` from tf2 (tf_mode map); None: ``robot_odometry``."""
        self._previous_base: tuple[int, np.ndarray] | None = None
        mode = settings["tf_mode"]
        if mode == "odom":
            self.conflicts.own(settings["odom_frame"], settings["base_frame"])
        elif mode == "map":
            self.conflicts.own(settings["map_frame"], settings["odom_frame"])

    @property
    def estimate_frame(self) -> str:
        """Frame of published poses: map in tf_mode map, odom otherwise."""
        return (
            self.settings["map_frame"] if self.settings["tf_mode"] == "map" else self.settings["odom_frame"]
        )

    def update_settings(self, changes: dict[str, Any]) -> None:
        """Apply run-time tunable changes (publishing toggles, tolerances, covariance sigmas, path length)."""
        self.settings.update(changes)
        if "path_max_poses" in changes:
            self.path = deque(self.path, maxlen=changes["path_max_poses"])

    def set_base_to_optical(self, T_base_optical: np.ndarray) -> None:
        """Replace the camera mounting (e.g. from tf2) before the first pose is anchored."""
        self.T_base_optical = np.asarray(T_base_optical, dtype=np.float64)
        self.anchor = PoseAnchor(self.T_base_optical)
        self.mounting_pending = ""

    def restart_time(self) -> None:
        """Forget TF stamps after time jumped backwards (bag loop, simulator restart); keeps the anchor."""
        self.gate = StampGate()
        self.path.clear()
        self._previous_base = None

    def needs_robot_odometry(self, parent: str, child: str) -> bool:
        """True for the robot's ``odom -> base`` edge in tf_mode map (pass its matrix to observe)."""
        s = self.settings
        return s["tf_mode"] == "map" and (parent, child) == (s["odom_frame"], s["base_frame"])

    def observe_transform(
        self, parent: str, child: str, stamp_ns: int, T: np.ndarray | None = None
    ) -> TfConflict | None:
        """Feed a transform seen on /tf or /tf_static; records robot odometry, returns a new conflict."""
        if T is not None and self.needs_robot_odometry(parent, child):
            self.robot_odometry.add(stamp_ns, T)
        return self.conflicts.observe(parent, child, stamp_ns)

    def static_transforms(self, optical_frame: str, stamp_ns: int) -> list[Any]:
        """``base_frame -> optical_frame`` for /tf_static (only when publish_optical_static_tf is set),
        stamped ``stamp_ns`` (the first image's: a bag player starts there, not in 1970)."""
        if not self.settings["publish_optical_static_tf"]:
            return []
        if self.conflicts.is_blocked(optical_frame):
            return []
        self.conflicts.own(self.settings["base_frame"], optical_frame)
        self.conflicts.record_published(optical_frame, stamp_ns)
        return [
            messages.build_transform_stamped(
                self.factory, stamp_ns, self.settings["base_frame"], optical_frame, self.T_base_optical
            )
        ]

    def frame_messages(self, result: FrameResult) -> tuple[FrameOutputs, list[tuple[str, Any]]]:
        """Every message of one result in publishing order, and its pose outputs.

        ``/tf`` (key :data:`TF_TOPIC`) comes first, then the pose topics, then images, camera infos and
        clouds: a consumer that looks the TF of an image's stamp up without a message filter finds it
        instead of an "extrapolation into the future".
        """
        pose_outputs = self.pose_outputs(result)
        ordered: list[tuple[str, Any]] = []
        if pose_outputs.transforms:
            ordered.append((TF_TOPIC, messages.build_tf_message(self.factory, pose_outputs.transforms)))
        ordered += pose_outputs.messages
        ordered += self.image_messages(result)
        return pose_outputs, ordered

    def image_messages(self, result: FrameResult) -> list[tuple[str, Any]]:
        """Images, camera infos and clouds of one result, each with the source header (stamp, frame)."""
        s, f = self.settings, self.factory
        header = messages.build_header(f, result.stamp_ns, result.frame_id)
        output: list[tuple[str, Any]] = []

        def info() -> Any:
            return messages.build_camera_info(f, header, result.K, result.width, result.height)

        if s["publish_depth"]:
            output.append(
                ("depth/image", messages.build_image(f, header, result.depth.astype(np.float32), "32FC1"))
            )
            output.append(("depth/camera_info", info()))
        if s["publish_depth_mm"]:
            output.append(
                (
                    "depth/image_mm",
                    messages.build_image(f, header, depth_to_millimetres(result.depth), "16UC1"),
                )
            )
        if s["publish_rgb"]:
            output.append(("rgb/image", messages.build_image(f, header, result.rgb, "rgb8")))
            output.append(("rgb/camera_info", info()))
        if s["publish_dynamic_mask"]:
            output.append(
                ("dynamic_mask/image", messages.build_image(f, header, result.dynamic_mask, "mono8"))
            )
            output.append(("dynamic_mask/camera_info", info()))
        if s["publish_confidence"]:
            confidence = result.confidence.astype(np.float32)
            output.append(("confidence/image", messages.build_image(f, header, confidence, "32FC1")))
        if s["publish_points"]:
            output.append(("points", messages.build_point_cloud(f, header, result.points, result.colors)))
        if s["publish_points_static"]:
            keep = ~np.asarray(result.point_is_dynamic, dtype=bool)
            cloud = messages.build_point_cloud(f, header, result.points[keep], result.colors[keep])
            output.append(("points_static", cloud))
        return output

    def _covariance(self) -> np.ndarray:
        return messages.covariance_matrix(
            self.settings["pose_position_sigma_m"], self.settings["pose_rotation_sigma_rad"]
        )

    def pose_outputs(self, result: FrameResult) -> FrameOutputs:
        """Pose messages and TF of one result (empty with a note when the pose cannot be published yet)."""
        s, f = self.settings, self.factory
        outputs = FrameOutputs()
        if self.mounting_pending:
            outputs.tf_note = f"waiting for the camera mounting: {self.mounting_pending}; poses withheld"
            return outputs
        tolerance_ns = int(s["transform_tolerance"] * 1e9)
        robot_T_odom_base = None
        if s["tf_mode"] == "map":
            lookup = self.robot_odometry_lookup or self.robot_odometry.lookup
            robot_T_odom_base = lookup(result.stamp_ns, tolerance_ns)
            if robot_T_odom_base is None and not self.anchor.anchored:
                outputs.tf_note = (
                    f"waiting for the robot's {s['odom_frame']} -> {s['base_frame']} transform (tf_mode map)"
                )
                return outputs
        estimate = self.anchor.update(result.stamp_ns, result.T_world_cam, robot_T_odom_base)
        outputs.estimate = estimate
        frame = self.estimate_frame
        covariance = self._covariance()
        self.path.append(messages.build_pose_stamped(f, result.stamp_ns, frame, estimate.T_estimate_cam))
        if s["publish_camera_pose"]:
            pose = messages.build_pose_with_covariance_stamped(
                f, result.stamp_ns, frame, estimate.T_estimate_cam, covariance
            )
            outputs.messages.append(("camera_pose", pose))
        if s["publish_path"]:
            outputs.messages.append(("path", messages.build_path(f, result.stamp_ns, frame, self.path)))
        metric_ok = is_metric(result) or not s["require_metric_for_tf"]
        if not metric_ok:
            outputs.tf_note = (
                f"scale is '{result.scale_state}', not metric: TF and odometry withheld "
                "(require_metric_for_tf is true)"
            )
            return outputs
        outputs.non_metric_tf = not is_metric(result)
        if s["publish_odometry"]:
            odometry = messages.build_odometry(
                f,
                result.stamp_ns,
                frame,
                s["base_frame"],
                estimate.T_estimate_base,
                covariance,
                *self._twist(result.stamp_ns, estimate.T_estimate_base),
            )
            outputs.messages.append(("odometry", odometry))
        outputs.transforms = self._transforms(
            result.stamp_ns, estimate, robot_T_odom_base, tolerance_ns, outputs
        )
        return outputs

    def _twist(
        self, stamp_ns: int, T_estimate_base: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
        """The base twist from the previous published pose, and its covariance (None: unknown)."""
        previous, self._previous_base = self._previous_base, (stamp_ns, T_estimate_base)
        if previous is None or stamp_ns <= previous[0]:
            return None, None
        dt_s = (stamp_ns - previous[0]) / 1e9
        # Two independent pose errors over dt: variance 2 sigma^2 / dt^2 per axis.
        variances = [2.0 * (self.settings["pose_position_sigma_m"] / dt_s) ** 2] * 3 + [
            2.0 * (self.settings["pose_rotation_sigma_rad"] / dt_s) ** 2
        ] * 3
        return body_twist(previous[1], T_estimate_base, dt_s), np.diag(variances).reshape(-1)

    def _transforms(
        self,
        stamp_ns: int,
        estimate: PoseEstimate,
        robot_T_odom_base: np.ndarray | None,
        tolerance_ns: int,
        outputs: FrameOutputs,
    ) -> list[Any]:
        s = self.settings
        if s["tf_mode"] == "none":
            return []
        if s["tf_mode"] == "odom":
            parent, child, T, tf_stamp = s["odom_frame"], s["base_frame"], estimate.T_estimate_base, stamp_ns
        else:
            if robot_T_odom_base is None:
                outputs.tf_note = (
                    f"no {s['odom_frame']} -> {s['base_frame']} near this stamp: map -> odom skipped"
                )
                return []
            T = estimate.T_estimate_base @ invert_transform(robot_T_odom_base)
            parent, child, tf_stamp = s["map_frame"], s["odom_frame"], stamp_ns + tolerance_ns
        if self.conflicts.is_blocked(child):
            outputs.tf_note = self.conflicts.conflicts[child].describe()
            return []
        if not self.gate.admit(parent, child, tf_stamp):
            outputs.tf_note = f"stamp {tf_stamp} ns not newer than the last {parent} -> {child}: skipped"
            return []
        self.conflicts.record_published(child, tf_stamp)
        self.last_tf_stamp_ns = tf_stamp
        return [messages.build_transform_stamped(self.factory, tf_stamp, parent, child, T)]
