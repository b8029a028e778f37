"""The node with the real ROS libraries (tf2_ros, message_filters, sensor_msgs_py) and without them, over DDS.

- tf2_ros present: the camera mounting comes from a URDF-style static chain base_link -> camera_link ->
  camera_color_optical_frame (TF and odometry wait for it, reported under ``page4d: tf``), the published TF is
  checked with ``tf2_ros.Buffer.lookup_transform``, and map mode follows an odom -> base_footprint ->
  base_link chain. By default TF and odometry go out in model units with a WARN and one log line.
- message_filters present: ``camera_info_mode: synchronized`` pairs an info that arrives after its image.
- A backwards time jump (bag loop) into a busy worker travels with its frame: the second loop gets its TF.
- Both hidden (one node process started with ``test/ros/without_ros_libs`` on PYTHONPATH, whose
  ``sitecustomize`` makes their import fail): the parameter mounting, the hand-read ``/tf`` and the pairing
  at dequeue run instead.
Clouds are read with ``sensor_msgs_py.point_cloud2.read_points``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
OPTICAL = "camera_color_optical_frame"
HIDE_SHIM = Path(__file__).with_name("without_ros_libs")
# camera_link -> optical of REP-103 (optical z = link x, x = -link y, y = -link z), written out here.
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def needs(module: str) -> Any:
    """Import a ROS library from ../shared/wheels or skip, saying so."""
    return pytest.importorskip(
        module, reason=f"{module} is not installed (scripts/setup_env.sh installs it from ../shared/wheels)"
    )


def matrix(translation, rotation) -> np.ndarray:
    """4x4 from a geometry_msgs translation/position and quaternion (independent of the package)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([rotation.x, rotation.y, rotation.z, rotation.w]).as_matrix()
    T[:3, 3] = [translation.x, translation.y, translation.z]
    return T


def transform(parent: str, child: str, T: np.ndarray, stamp_ns: int) -> TransformStamped:
    """A TransformStamped parent -> child for the 4x4 parent-from-child ``T``."""
    msg = TransformStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in T[:3, 3]
    )
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def rigid(yaw: float, xyz) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
    T[:3, 3] = xyz
    return T


class CameraPlayer:
    """Publishes a synthetic sequence's images (and infos) into the node from the probe."""

    def __init__(self, probe, helpers, seq, frame_id: str = OPTICAL) -> None:
        self.probe, self.h, self.seq, self.frame_id = probe, helpers, seq, frame_id
        self.image_pub = probe.node.create_publisher(Image, f"{helpers.NAMESPACE}/image", RELIABLE)
        self.info_pub = probe.node.create_publisher(CameraInfo, f"{helpers.NAMESPACE}/camera_info", RELIABLE)
        publishers = (self.image_pub, self.info_pub)
        assert probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers), 30.0)
        time.sleep(0.3)

    def info(self, index: int, stamp_ns: int, frame_id: str | None = None) -> None:
        self.info_pub.publish(
            self.h.camera_info_message(
                self.seq.K[index], self.seq.width, self.seq.height, stamp_ns, frame_id or self.frame_id
            )
        )

    def image(self, index: int, stamp_ns: int) -> None:
        self.image_pub.publish(self.h.image_message(self.seq.rgb[index], "rgb8", stamp_ns, self.frame_id))


def stamps_of(probe, key: str, helpers) -> list[int]:
    return [helpers.stamp_of(m.header) for m in probe.messages(key)]


def log_text(process) -> str:
    path = Path(process.log_path)
    return path.read_text() if path.exists() else ""


def test_mounting_from_a_urdf_chain_tf_checked_with_tf2_and_model_units_by_default(
    start_node, probe, tiny_checkpoint, synthetic_sequence, ros_helpers, tmp_path
):
    tf2_ros = needs("tf2_ros")
    point_cloud2 = needs("sensor_msgs_py.point_cloud2")
    from rclpy.time import Time

    seq, h = synthetic_sequence, ros_helpers
    node = start_node(
        h.fast_node_parameters(
            tiny_checkpoint,
            base_frame="base_link",
            publish_optical_static_tf=False,  # the mounting is the robot's (URDF): read it with tf2
            save_dir=str(tmp_path / "saved"),
            input_qos="reliable",
            input_queue_depth=32,
        )
    )
    ns = h.NAMESPACE
    for topic, msg_type in (
        ("depth/image", Image),
        ("depth/camera_info", CameraInfo),
        ("points", PointCloud2),
        ("odometry", Odometry),
        ("camera_pose", PoseWithCovarianceStamped),
    ):
        probe.subscribe(f"{ns}/{topic}", msg_type, key=topic)
    probe.subscribe("/tf", TFMessage, key="tf")
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, probe.node)
    probe.wait_for_state(node, "active")
    player = CameraPlayer(probe, h, seq)

    # No mounting on tf2 yet: images come out, poses, odometry and TF wait, and page4d: tf says why.
    for index in range(4):
        stamp = int(seq.stamps_ns[index])
        player.info(index, stamp)
        player.image(index, stamp)
        time.sleep(0.1)
    assert probe.wait_for(lambda: len(probe.messages("depth/image")) >= 4, 60.0)
    assert probe.wait_for(lambda: probe.ever_diagnosed("page4d: tf", 1, "camera mounting"), 5.0)
    assert probe.messages("odometry") == [] and probe.messages("camera_pose") == []
    assert not [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "base_link"]

    # The robot description arrives: base_link -> camera_link (0.2 m ahead, 0.5 m up, pitched down) ->
    # camera_color_optical_frame, both static.
    T_base_link = np.eye(4)
    T_base_link[:3, :3] = Rotation.from_euler("y", 0.2).as_matrix()
    T_base_link[:3, 3] = [0.2, 0.0, 0.5]
    T_link_optical = np.eye(4)
    T_link_optical[:3, :3] = R_LINK_OPTICAL
    T_link_optical[:3, 3] = [0.0, 0.015, 0.0]
    static = tf2_ros.StaticTransformBroadcaster(probe.node)
    static.sendTransform(
        [
            transform("base_link", "camera_link", T_base_link, 0),
            transform("camera_link", OPTICAL, T_link_optical, 0),
        ]
    )
    time.sleep(1.0)
    stamps = [int(s) for s in seq.stamps_ns[4:11]]
    for index, stamp in zip(range(4, 11), stamps):
        player.info(index, stamp)
        player.image(index, stamp)
        time.sleep(0.1)
    # 11 frames with windows of stride 2: the last one waits for a window that never comes, until
    # idle_flush_s (1 s by default) runs it.
    assert probe.wait_for(lambda: len(probe.messages("depth/image")) >= 11, 60.0), stamps_of(
        probe, "depth/image", h
    )
    assert stamps_of(probe, "depth/image", h) == [int(s) for s in seq.stamps_ns[:11]]
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= len(stamps), 10.0)
    assert stamps_of(probe, "camera_pose", h) == stamps
    node_tf = [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "base_link"]
    assert [h.stamp_of(t.header) for t in node_tf] == stamps and {t.header.frame_id for t in node_tf} == {
        "odom"
    }

    # tf2 composes our odom -> base_link with the URDF chain into the optical pose the node publishes.
    for pose in probe.messages("camera_pose"):
        stamp = h.stamp_of(pose.header)
        looked_up = buffer.lookup_transform("odom", OPTICAL, Time(nanoseconds=stamp)).transform
        np.testing.assert_allclose(
            matrix(looked_up.translation, looked_up.rotation),
            matrix(pose.pose.pose.position, pose.pose.pose.orientation),
            atol=1e-6,
        )
    first = probe.messages("camera_pose")[0].pose.pose
    np.testing.assert_allclose(
        matrix(first.position, first.orientation), T_base_link @ T_link_optical, atol=1e-6
    )  # the base starts at the odom origin, so the first optical pose is the mounting itself

    # Odometry in model units by default, with a twist from consecutive poses and a finite covariance.
    odometry = probe.messages("odometry")
    assert len(odometry) == len(stamps)
    second = odometry[1].twist
    variances = np.diag(np.array(second.covariance).reshape(6, 6))
    assert np.all(variances > 0) and np.all(variances < 1e3)
    T0 = matrix(odometry[0].pose.pose.position, odometry[0].pose.pose.orientation)
    T1 = matrix(odometry[1].pose.pose.position, odometry[1].pose.pose.orientation)
    dt = (h.stamp_of(odometry[1].header) - h.stamp_of(odometry[0].header)) / 1e9
    expected_linear = T1[:3, :3].T @ (T1[:3, 3] - T0[:3, 3]) / dt
    linear = second.twist.linear
    np.testing.assert_allclose([linear.x, linear.y, linear.z], expected_linear, rtol=1e-6, atol=1e-9)
    assert probe.ever_diagnosed("page4d: scale", 1, "non-metric")
    assert log_text(node).count("TF and odometry are published in model units") == 1

    # The cloud, read by sensor_msgs_py: every point lies on its depth pixel.
    cloud = probe.messages("points")[-1]
    points = point_cloud2.read_points(cloud, field_names=("x", "y", "z", "rgb"), skip_nans=True)
    depth_msg = probe.messages("depth/image")[-1]
    K = np.array(probe.messages("depth/camera_info")[-1].k).reshape(3, 3)
    depth = np.frombuffer(depth_msg.data, np.float32).reshape(depth_msg.height, depth_msg.width)
    x, y, z = (np.asarray(points[name], dtype=np.float64) for name in ("x", "y", "z"))
    assert z.size > 100 and np.all(z > 0)
    u = np.round(x / z * K[0, 0] + K[0, 2]).astype(int)
    v = np.round(y / z * K[1, 1] + K[1, 2]).astype(int)
    np.testing.assert_allclose(depth[v, u], z, rtol=1e-4)

    # ~/save without map_accumulate: the trajectory, and a map that says why it is empty.
    saved = probe.call(Trigger, f"{h.NODE}/save", Trigger.Request())
    assert saved is not None and saved.success and "map_accumulate is false" in saved.message
    listener.unregister()


def test_map_mode_follows_an_odom_base_footprint_base_link_chain(
    start_node, probe, tiny_checkpoint, synthetic_sequence, ros_helpers
):
    tf2_ros = needs("tf2_ros")
    from rclpy.time import Time

    seq, h = synthetic_sequence, ros_helpers
    tolerance_s = 0.2
    node = start_node(
        h.fast_node_parameters(
            tiny_checkpoint,
            tf_mode="map",
            base_frame="base_link",
            transform_tolerance=tolerance_s,
            input_qos="reliable",
            input_queue_depth=32,
        )
    )
    ns = h.NAMESPACE
    probe.subscribe(f"{ns}/camera_pose", PoseWithCovarianceStamped, key="camera_pose")
    probe.subscribe(f"{ns}/odometry", Odometry, key="odometry")
    probe.subscribe("/tf", TFMessage, key="tf")
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, probe.node)
    broadcaster = tf2_ros.TransformBroadcaster(probe.node)
    static = tf2_ros.StaticTransformBroadcaster(probe.node)
    static.sendTransform(transform("base_footprint", "base_link", rigid(0.0, [0.0, 0.0, 0.1]), 0))
    probe.wait_for_state(node, "active")
    player = CameraPlayer(probe, h, seq, frame_id=seq.frame_id)

    def robot(stamp_ns: int) -> np.ndarray:
        """The robot's wheel odometry: an arc at 0.3 m/s and 0.2 rad/s."""
        t = (stamp_ns - int(seq.stamps_ns[0])) / 1e9
        return rigid(0.2 * t, [0.3 * t, 0.05 * t, 0.0])

    count = 10
    for index in range(count):
        stamp = int(seq.stamps_ns[index])
        # Odometry samples 30 ms before and 20 ms after the image: the node must interpolate the chain.
        for sample in (stamp - 30_000_000, stamp + 20_000_000):
            broadcaster.sendTransform(transform("odom", "base_footprint", robot(sample), sample))
        time.sleep(0.05)
        player.info(index, stamp)
        player.image(index, stamp)
        time.sleep(0.1)
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= count, 60.0), log_text(node)[-2000:]
    map_odom = [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "odom"]
    assert len(map_odom) == count and {t.header.frame_id for t in map_odom} == {"map"}
    time.sleep(0.5)
    for pose in probe.messages("camera_pose"):
        stamp = h.stamp_of(pose.header)
        assert pose.header.frame_id == "map"
        # map -> odom is stamped stamp + transform_tolerance; the robot chain and the mounting at stamp.
        looked_up = buffer.lookup_transform_full(
            "map",
            Time(nanoseconds=stamp + int(tolerance_s * 1e9)),
            seq.frame_id,
            Time(nanoseconds=stamp),
            "odom",
        ).transform
        np.testing.assert_allclose(
            matrix(looked_up.translation, looked_up.rotation),
            matrix(pose.pose.pose.position, pose.pose.pose.orientation),
            atol=1e-6,
        )
    odometry = probe.messages("odometry")
    assert {(o.header.frame_id, o.child_frame_id) for o in odometry} == {("map", "base_link")}
    listener.unregister()


def start_node_without_ros_libs(spawn_process, tmp_path: Path, values: dict[str, Any]) -> Any:
    """The node in a process where ``import tf2_ros`` and ``import message_filters`` fail (test shim)."""
    params = tmp_path / "params_hidden.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    python_path = os.pathsep.join(p for p in (str(HIDE_SHIM), os.environ.get("PYTHONPATH", "")) if p)
    process = spawn_process(
        "-m",
        "page4d_ros.ros.node",
        "--ros-args",
        "--params-file",
        str(params),
        env={
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": python_path,
            "PAGE4D_TEST_HIDE_MODULES": "tf2_ros,message_filters",
        },
    )
    process.log_path = tmp_path / "proc0.log"
    return process


def test_without_tf2_ros_and_message_filters_the_fallbacks_run(
    spawn_process, probe, tiny_checkpoint, synthetic_sequence, ros_helpers, tmp_path
):
    seq, h = synthetic_sequence, ros_helpers
    tolerance_s = 0.2
    node = start_node_without_ros_libs(
        spawn_process,
        tmp_path,
        h.fast_node_parameters(
            tiny_checkpoint,
            tf_mode="map",
            base_frame="base_link",
            publish_optical_static_tf=False,  # with tf2_ros this would wait for a mounting on tf2
            camera_info_mode="synchronized",
            transform_tolerance=tolerance_s,
            input_qos="reliable",
            input_queue_depth=32,
        ),
    )
    ns = h.NAMESPACE
    probe.subscribe(f"{ns}/camera_pose", PoseWithCovarianceStamped, key="camera_pose")
    probe.subscribe(f"{ns}/depth/camera_info", CameraInfo, key="depth/camera_info")
    probe.subscribe("/tf", TFMessage, key="tf")
    tf_pub = probe.node.create_publisher(TFMessage, "/tf", RELIABLE)
    probe.wait_for_state(node, "active")
    assert "tf2_ros is not installed" in log_text(node)
    player = CameraPlayer(probe, h, seq, frame_id=seq.frame_id)

    def robot(stamp_ns: int) -> np.ndarray:
        t = (stamp_ns - int(seq.stamps_ns[0])) / 1e9
        return rigid(0.1 * t, [0.2 * t, 0.0, 0.0])

    count = 10
    for index in range(count):
        stamp = int(seq.stamps_ns[index])
        samples = (stamp - 30_000_000, stamp + 20_000_000)
        tf_pub.publish(TFMessage(transforms=[transform("odom", "base_link", robot(s), s) for s in samples]))
        time.sleep(0.05)
        # image_transport's CameraPublisher order: the image first, its info 50 ms later.
        player.image(index, stamp)
        threading.Timer(0.05, player.info, args=(index, stamp)).start()
        time.sleep(0.15)
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= count, 60.0), log_text(node)[-2000:]
    assert probe.wait_for(
        lambda: probe.diagnostic_values("page4d: tracking").get("intrinsics_source") == "calibration", 5.0
    ), probe.diagnostic_values("page4d: tracking")
    input_values = probe.diagnostic_values("page4d: input")
    assert "count_camera_info_unpaired" not in input_values, input_values
    map_odom = [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "odom"]
    assert len(map_odom) == count
    # The hand path interpolates the direct edge: map -> base = camera pose composed with the mounting.
    T_base_optical = np.eye(4)
    T_base_optical[:3, :3] = R_LINK_OPTICAL
    for tf, pose in zip(map_odom, probe.messages("camera_pose")):
        stamp = h.stamp_of(pose.header)
        assert h.stamp_of(tf.header) == stamp + int(tolerance_s * 1e9)
        T_map_base = matrix(tf.transform.translation, tf.transform.rotation) @ robot(stamp)
        np.testing.assert_allclose(
            T_map_base @ T_base_optical,
            matrix(pose.pose.pose.position, pose.pose.pose.orientation),
            atol=1e-6,
        )

    # Infos in another frame id do not pair by hand; the predicted K is used and that is reported.
    for index in range(count, count + 2):
        stamp = int(seq.stamps_ns[index])
        player.info(index, stamp, frame_id="some_other_frame")
        player.image(index, stamp)
        time.sleep(0.15)
    assert probe.wait_for(
        lambda: "some_other_frame" in probe.diagnostic_values("page4d: input").get("last_problem", ""), 30.0
    ), probe.diagnostic_values("page4d: input")
    assert "count_camera_info_unpaired" in probe.diagnostic_values("page4d: input")


def test_synchronized_camera_info_with_message_filters(
    start_node, probe, tiny_checkpoint, synthetic_sequence, ros_helpers
):
    needs("message_filters")
    seq, h = synthetic_sequence, ros_helpers
    node = start_node(
        h.fast_node_parameters(
            tiny_checkpoint,
            camera_info_mode="synchronized",
            input_qos="reliable",
            input_queue_depth=64,
            frame_queue_size=64,
        )
    )
    ns = h.NAMESPACE
    probe.subscribe(f"{ns}/depth/image", Image, key="depth/image")
    probe.subscribe("/tf", TFMessage, key="tf")
    probe.wait_for_state(node, "active")
    player = CameraPlayer(probe, h, seq, frame_id=seq.frame_id)

    # The image first, its info 50 ms later: ApproximateTimeSynchronizer pairs them.
    for index in range(4):
        stamp = int(seq.stamps_ns[index])
        player.image(index, stamp)
        threading.Timer(0.05, player.info, args=(index, stamp)).start()
        time.sleep(0.15)
    assert probe.wait_for(lambda: len(probe.messages("depth/image")) >= 4, 60.0)
    assert probe.wait_for(
        lambda: probe.diagnostic_values("page4d: tracking").get("intrinsics_source") == "calibration", 5.0
    ), probe.diagnostic_values("page4d: tracking")
    assert "count_camera_info_unpaired" not in probe.diagnostic_values("page4d: input")

    # Infos with another frame id are paired by stamp and reported, not silently ignored.
    for index in range(4, 6):
        stamp = int(seq.stamps_ns[index])
        player.info(index, stamp, frame_id="some_other_frame")
        player.image(index, stamp)
        time.sleep(0.15)
    assert probe.wait_for(
        lambda: "count_camera_info_frame_id" in probe.diagnostic_values("page4d: input"), 30.0
    ), probe.diagnostic_values("page4d: input")


def test_a_backwards_time_jump_travels_with_its_frame(
    start_node, probe, tiny_checkpoint, synthetic_sequence, ros_helpers
):
    seq, h = synthetic_sequence, ros_helpers
    node = start_node(
        h.fast_node_parameters(
            tiny_checkpoint,
            input_qos="reliable",
            input_queue_depth=64,
            frame_queue_size=64,
            require_metric_for_tf=False,
        )
    )
    probe.subscribe("/tf", TFMessage, key="tf")
    probe.wait_for_state(node, "active")
    player = CameraPlayer(probe, h, seq, frame_id=seq.frame_id)

    # A bag played with --loop into a busy worker: 8 frames, then time jumps back and the same 8 come
    # again, all queued at once. The jump travels with its frame, so the second loop gets its TF too.
    def tf_stamps() -> list[int]:
        return [h.stamp_of(t.header) for m in probe.messages("tf") for t in m.transforms]

    first_loop = [int(s) + 20_000_000_000 for s in seq.stamps_ns[:8]]
    second_loop = [int(s) + 10_000_000_000 for s in seq.stamps_ns[:8]]  # 10 s back: beyond max_gap_s
    for stamp_list in (first_loop, second_loop):
        for index, stamp in enumerate(stamp_list):
            player.info(index, stamp)
            player.image(index, stamp)
    assert probe.wait_for(lambda: len(tf_stamps()) >= 16, 60.0), (tf_stamps(), log_text(node)[-2000:])
    assert tf_stamps() == first_loop + second_loop
    assert probe.wait_for(lambda: "count_time_jump_back" in probe.diagnostic_values("page4d: input"), 5.0)


def test_odometry_scale_sees_the_lever_arm_of_a_robot_turning_in_place(
    start_node, probe, tiny_checkpoint, synthetic_sequence, ros_helpers
):
    seq, h = synthetic_sequence, ros_helpers
    # The camera sits 0.5 m ahead of the base. Turning in place, the base does not move but the camera
    # sweeps a 0.5 m arc: only the odometry pose composed with the mounting makes the scale observable.
    node = start_node(
        h.fast_node_parameters(
            tiny_checkpoint,
            base_frame="base_link",
            base_to_optical_xyz=[0.5, 0.0, 0.3],
            scale_source="odometry",
            input_qos="reliable",
            input_queue_depth=32,
        )
    )
    odom_pub = probe.node.create_publisher(Odometry, f"{h.NAMESPACE}/odom", RELIABLE)
    probe.wait_for_state(node, "active")
    player = CameraPlayer(probe, h, seq, frame_id=seq.frame_id)
    assert probe.wait_for(lambda: odom_pub.get_subscription_count() > 0, 30.0)
    count = 12
    for index in range(count):
        stamp = int(seq.stamps_ns[index])
        odometry = Odometry()
        odometry.header.stamp.sec, odometry.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        odometry.header.frame_id, odometry.child_frame_id = "odom", "base_link"
        q = Rotation.from_euler("z", np.pi / 2 * index / (count - 1)).as_quat()
        o = odometry.pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        odom_pub.publish(odometry)
        player.info(index, stamp)
        player.image(index, stamp)
        time.sleep(0.1)
    assert probe.wait_for(
        lambda: probe.diagnostic_values("page4d: scale").get("scale_state") == "metric", 30.0
    ), probe.diagnostic_values("page4d: scale")
