"""Message builders (rclpy and rosbags agree), output builder (TF modes, metric gating, toggles), frames."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from page4d_ros.pipeline.types import FrameResult
from page4d_ros.ros import messages
from page4d_ros.ros.conversions import xyz_rpy_to_matrix
from page4d_ros.ros.frames import (
    PoseAnchor,
    StampGate,
    TfConflictDetector,
    TransformHistory,
    invert_transform,
)
from page4d_ros.ros.outputs import OutputBuilder
from page4d_ros.ros.parameters import OPTICAL_RPY, validate_parameters

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
K = np.array([[50.0, 0.0, 15.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]])


def rigid(rotvec, translation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = translation
    return T


def make_result(stamp_ns: int, T_world_cam: np.ndarray, scale_state: str = "model_units") -> FrameResult:
    depth = np.full((24, 32), 2.0, np.float32)
    depth[0, 0] = np.nan
    points = np.array([[0.0, 0.0, 2.0], [0.5, 0.1, 2.0], [-0.3, 0.2, 2.0]], np.float32)
    return FrameResult(
        stamp_ns=stamp_ns,
        frame_id="cam_optical",
        index=0,
        window_index=0,
        segment_index=0,
        T_world_cam=T_world_cam,
        K=K,
        width=32,
        height=24,
        depth=depth,
        confidence=np.ones((24, 32), np.float32),
        rgb=np.zeros((24, 32, 3), np.uint8),
        dynamic_mask=np.zeros((24, 32), np.uint8),
        points=points,
        colors=np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8),
        point_is_dynamic=np.array([False, True, False]),
        scale=1.0,
        scale_state=scale_state,
        intrinsics_source="calibration",
        K_predicted=K,
        intrinsics_disagreement={},
        alignment="first",
        alignment_residual=0.0,
    )


def settings(**overrides):
    return validate_parameters({"require_metric_for_tf": False, **overrides})


def test_rclpy_and_rosbags_messages_carry_the_same_content():
    rclpy_factory, bags_factory = messages.RclpyMessageFactory(), messages.RosbagsMessageFactory(TYPESTORE)
    T = rigid([0.1, 0.2, 0.3], [1.0, -2.0, 0.5])
    points = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    colors = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)

    def build(factory):
        header = messages.build_header(factory, 1_700_000_000_000_000_042, "cam")
        return {
            "sensor_msgs/msg/Image": messages.build_image(
                factory, header, np.eye(3, dtype=np.float32), "32FC1"
            ),
            "sensor_msgs/msg/CameraInfo": messages.build_camera_info(factory, header, K, 32, 24),
            "sensor_msgs/msg/PointCloud2": messages.build_point_cloud(factory, header, points, colors),
            "tf2_msgs/msg/TFMessage": messages.build_tf_message(
                factory, [messages.build_transform_stamped(factory, 7, "odom", "base", T)]
            ),
            "nav_msgs/msg/Odometry": messages.build_odometry(
                factory, 7, "odom", "base", T, messages.covariance_matrix(0.1, 0.2)
            ),
            "nav_msgs/msg/Path": messages.build_path(
                factory,
                9,
                "odom",
                [
                    messages.build_pose_stamped(factory, 7, "odom", T),
                    messages.build_pose_stamped(factory, 9, "odom", T),
                ],
            ),
        }

    from_rclpy, from_bags = build(rclpy_factory), build(bags_factory)
    for type_name, rclpy_msg in from_rclpy.items():
        decoded = TYPESTORE.deserialize_cdr(serialize_message(rclpy_msg), type_name)
        reference = TYPESTORE.deserialize_cdr(
            TYPESTORE.serialize_cdr(from_bags[type_name], type_name), type_name
        )
        assert repr(decoded) == repr(reference), (
            type_name
        )  # CameraInfo padding bytes differ, content must not


def test_covariance_is_diagonal():
    covariance = messages.covariance_matrix(0.1, 0.2).reshape(6, 6)
    np.testing.assert_allclose(np.diag(covariance), [0.01] * 3 + [0.04] * 3)
    assert np.count_nonzero(covariance) == 6


def test_pose_anchor_starts_the_base_at_the_odom_origin():
    T_base_optical = xyz_rpy_to_matrix([0.2, 0.0, 0.5], OPTICAL_RPY)
    anchor = PoseAnchor(T_base_optical)
    T0 = rigid([0.3, -0.1, 0.2], [1.0, 2.0, 3.0])
    motion = rigid([0.0, 0.1, 0.0], [0.0, 0.0, 1.0])  # camera moves 1 unit forward (optical z) and turns
    first = anchor.update(1, T0)
    np.testing.assert_allclose(first.T_estimate_base, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(first.T_estimate_cam, T_base_optical, atol=1e-12)
    second = anchor.update(2, T0 @ motion)
    # The relative camera motion is preserved: cam0^-1 cam1 equals the pipeline's relative motion.
    np.testing.assert_allclose(
        invert_transform(first.T_estimate_cam) @ second.T_estimate_cam, motion, atol=1e-12
    )
    # Forward optical motion (no turn) becomes forward body (x) motion in odom.
    third = anchor.update(3, T0 @ rigid([0, 0, 0], [0.0, 0.0, 1.0]))
    np.testing.assert_allclose(third.T_estimate_base[:3, 3], [1.0, 0.0, 0.0], atol=1e-12)


def test_stamp_gate_conflicts_and_history():
    gate = StampGate()
    assert (
        gate.admit("odom", "base", 5)
        and not gate.admit("odom", "base", 5)
        and not gate.admit("odom", "base", 4)
    )
    assert (
        gate.admit("odom", "base", 6)
        and gate.admit("map", "odom", 1)
        and gate.last_stamp("odom", "base") == 6
    )

    detector = TfConflictDetector(remembered_stamps=2)
    detector.own("odom", "base")
    detector.record_published("base", 10)
    assert detector.observe("odom", "base", 10) is None  # our own message echoed back
    assert detector.observe("odom", "other_child", 11) is None  # not an owned edge
    conflict = detector.observe("odom", "base", 11)  # a stamp we never published
    assert conflict is not None and detector.is_blocked("base") and "another node" in conflict.describe()
    detector.own("world", "camera_link")
    assert detector.observe("robot", "camera_link", 0) is not None  # a second parent

    history = TransformHistory()
    history.add(100, np.eye(4))
    history.add(200, 2 * np.eye(4))
    history.add(150, 3 * np.eye(4))  # out of order: ignored
    assert len(history) == 2
    np.testing.assert_array_equal(history.lookup(180, 30), 2 * np.eye(4))
    assert history.lookup(260, 30) is None


def test_output_builder_odom_mode_images_and_poses():
    builder = OutputBuilder(messages.RclpyMessageFactory(), settings(base_frame="camera_link"))
    T0 = rigid([0, 0, 0], [0, 0, 0])
    topics = [t for t, _ in builder.image_messages(make_result(1000, T0))]
    assert topics == [
        "depth/image",
        "depth/camera_info",
        "rgb/image",
        "rgb/camera_info",
        "dynamic_mask/image",
        "dynamic_mask/camera_info",
        "points",
    ]
    outputs = builder.pose_outputs(make_result(1000, T0))
    assert [t for t, _ in outputs.messages] == ["camera_pose", "path", "odometry"]
    (transform,) = outputs.transforms
    assert (transform.header.frame_id, transform.child_frame_id) == ("odom", "camera_link")
    repeated = builder.pose_outputs(make_result(1000, T0))
    assert repeated.transforms == [] and "not newer" in repeated.tf_note


def test_output_builder_toggles_and_static_points():
    builder = OutputBuilder(
        messages.RclpyMessageFactory(),
        settings(
            publish_depth=False,
            publish_rgb=False,
            publish_dynamic_mask=False,
            publish_points=False,
            publish_points_static=True,
            publish_depth_mm=True,
            publish_confidence=True,
        ),
    )
    produced = dict(builder.image_messages(make_result(5, np.eye(4))))
    assert sorted(produced) == ["confidence/image", "depth/image_mm", "points_static"]
    assert produced["points_static"].width == 2  # the dynamic point is removed
    assert produced["depth/image_mm"].encoding == "16UC1"


def test_metric_gating_and_tf_none():
    gated = OutputBuilder(
        messages.RclpyMessageFactory(), validate_parameters({"require_metric_for_tf": True})
    )
    outputs = gated.pose_outputs(make_result(5, np.eye(4), scale_state="model_units"))
    assert [t for t, _ in outputs.messages] == ["camera_pose", "path"] and outputs.transforms == []
    assert "not metric" in outputs.tf_note
    metric = gated.pose_outputs(make_result(6, np.eye(4), scale_state="metric"))
    assert len(metric.transforms) == 1 and "odometry" in [t for t, _ in metric.messages]

    silent = OutputBuilder(messages.RclpyMessageFactory(), settings(tf_mode="none"))
    outputs = silent.pose_outputs(make_result(5, np.eye(4)))
    assert outputs.transforms == [] and "odometry" in [t for t, _ in outputs.messages]


def test_map_mode_publishes_map_to_odom_over_robot_odometry():
    builder = OutputBuilder(messages.RclpyMessageFactory(), settings(tf_mode="map", transform_tolerance=0.1))
    waiting = builder.pose_outputs(make_result(1_000_000_000, np.eye(4)))
    assert waiting.estimate is None and "waiting" in waiting.tf_note
    T_odom_base_0 = rigid([0, 0, 0.5], [3.0, 1.0, 0.0])
    builder.observe_transform("odom", "base_link", 2_000_000_000, T_odom_base_0)
    first = builder.pose_outputs(make_result(2_000_000_000, np.eye(4)))
    (transform,) = first.transforms
    assert (transform.header.frame_id, transform.child_frame_id) == ("map", "odom")
    stamp = transform.header.stamp.sec * 10**9 + transform.header.stamp.nanosec
    assert stamp == 2_100_000_000  # future-dated by transform_tolerance
    rotation = transform.transform.rotation
    assert rotation.w == pytest.approx(1.0) and transform.transform.translation.x == pytest.approx(0.0)
    # The robot's wheel odometry drifted by 0.2 along x while vision says it stayed: map -> odom = -0.2.
    builder.observe_transform("odom", "base_link", 2_050_000_000, rigid([0, 0, 0.5], [3.2, 1.0, 0.0]))
    second = builder.pose_outputs(make_result(2_050_000_000, np.eye(4)))
    t = second.transforms[0].transform.translation
    T_map_odom = rigid([0, 0, 0.5], [3.0, 1.0, 0.0]) @ invert_transform(rigid([0, 0, 0.5], [3.2, 1.0, 0.0]))
    np.testing.assert_allclose([t.x, t.y, t.z], T_map_odom[:3, 3], atol=1e-9)
    assert builder.observe_transform("other", "odom", 5) is not None  # someone else parents odom
    assert builder.pose_outputs(make_result(2_100_000_000, np.eye(4))).transforms == []
