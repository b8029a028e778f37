"""The node on a robot, over real DDS: ``tf_mode: map`` on top of the robot's ``odom -> camera_link`` TF, with
the metric scale taken from the robot's odometry topic (shipped model, a synthetic walk and its ground
truth)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from page4d_ros.synthetic import generate_sequence

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# camera_link -> optical rotation of REP-103 (optical z = link x, x = -link y, y = -link z), written out here.
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
TOLERANCE_S = 0.1


def matrix(translation, rotation) -> np.ndarray:
    """4x4 from a geometry_msgs translation/position and quaternion."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([rotation.x, rotation.y, rotation.z, rotation.w]).as_matrix()
    T[:3, 3] = [translation.x, translation.y, translation.z]
    return T


def set_stamp(header, stamp_ns: int, frame_id: str) -> None:
    """Fill a header."""
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    header.frame_id = frame_id


def test_map_mode_with_odometry_scale_corrects_the_robot_odometry(start_node, probe, ros_helpers):
    h = ros_helpers
    seq = generate_sequence(11, 32, 160, 120, camera_motion="walk", num_movers=1, fps=10.0)
    T_link_optical = np.eye(4)
    T_link_optical[:3, :3] = R_LINK_OPTICAL
    # The robot's odometry is the ground truth of camera_link (odom = the scene's world frame).
    T_odom_link = seq.T_world_cam @ np.linalg.inv(T_link_optical)
    node = start_node(
        h.shipped_model_parameters(
            tf_mode="map",
            scale_source="odometry",
            require_metric_for_tf=True,
            transform_tolerance=TOLERANCE_S,
        )
    )
    probe.wait_for_state(node, "active")
    ns = h.NAMESPACE
    image_pub = probe.node.create_publisher(Image, f"{ns}/image", RELIABLE)
    info_pub = probe.node.create_publisher(CameraInfo, f"{ns}/camera_info", RELIABLE)
    odom_pub = probe.node.create_publisher(Odometry, f"{ns}/odom", RELIABLE)
    tf_pub = probe.node.create_publisher(TFMessage, "/tf", RELIABLE)
    probe.subscribe("/tf", TFMessage, key="tf")
    probe.subscribe(f"{ns}/camera_pose", PoseWithCovarianceStamped, key="pose")
    probe.subscribe(f"{ns}/odometry", Odometry, key="odometry")
    for publisher in (image_pub, info_pub, odom_pub):
        assert probe.wait_for(lambda p=publisher: p.get_subscription_count() > 0, 30.0)
    assert probe.wait_for(lambda: tf_pub.get_subscription_count() >= 2, 30.0)  # the node and the probe
    time.sleep(0.3)
    stamps = [int(stamp) for stamp in seq.stamps_ns]
    for index, stamp in enumerate(stamps):
        T = T_odom_link[index]
        quaternion = Rotation.from_matrix(T[:3, :3]).as_quat()
        robot = TransformStamped()
        set_stamp(robot.header, stamp, "odom")
        robot.child_frame_id = "camera_link"
        robot.transform.translation.x, robot.transform.translation.y, robot.transform.translation.z = T[:3, 3]
        r = robot.transform.rotation
        r.x, r.y, r.z, r.w = quaternion
        tf_pub.publish(TFMessage(transforms=[robot]))
        odometry = Odometry(child_frame_id="camera_link")
        set_stamp(odometry.header, stamp, "odom")
        p = odometry.pose.pose.position
        p.x, p.y, p.z = T[:3, 3]
        odometry.pose.pose.orientation.w = 1.0
        odom_pub.publish(odometry)
        info_pub.publish(h.camera_info_message(seq.K[index], seq.width, seq.height, stamp, seq.frame_id))
        image_pub.publish(h.image_message(seq.rgb[index], "rgb8", stamp, seq.frame_id))
        time.sleep(0.1)
    assert probe.wait_for(lambda: len(probe.messages("pose")) >= len(stamps), 90.0), (
        f"{len(probe.messages('pose'))} of {len(stamps)} poses; tf {probe.diagnostic_values('page4d: tf')}"
    )

    # Poses are in map; the scale became metric from the robot's 3 m walk.
    assert {m.header.frame_id for m in probe.messages("pose")} == {"map"}

    def scale_state() -> str:
        return probe.diagnostic_values("page4d: scale").get("scale_state", "")

    assert probe.wait_for(lambda: scale_state() == "metric", 5.0), scale_state()
    # The node publishes map -> odom only (the robot owns odom -> camera_link), stamped ahead by the
    # tolerance.
    node_tf = [t for m in probe.messages("tf") for t in m.transforms if t.header.frame_id != "odom"]
    assert len(node_tf) >= len(stamps) // 2
    assert {(t.header.frame_id, t.child_frame_id) for t in node_tf} == {("map", "odom")}
    tf_stamps = [h.stamp_of(t.header) for t in node_tf]
    assert tf_stamps == sorted(set(tf_stamps))
    ahead = int(TOLERANCE_S * 1e9)
    assert set(tf_stamps) <= {stamp + ahead for stamp in stamps}
    # Once metric, each TF comes with the node's odometry of camera_link in map, and the two agree:
    # map -> odom composed with the robot's odom -> camera_link at that stamp is the node's camera_link pose.
    odometry = {h.stamp_of(m.header): m for m in probe.messages("odometry")}
    assert {stamp + ahead for stamp in odometry} == set(tf_stamps)
    for transform in node_tf:
        stamp = h.stamp_of(transform.header) - ahead
        T_map_odom = matrix(transform.transform.translation, transform.transform.rotation)
        message = odometry[stamp]
        assert (message.header.frame_id, message.child_frame_id) == ("map", "camera_link")
        T_map_link = matrix(message.pose.pose.position, message.pose.pose.orientation)
        np.testing.assert_allclose(T_map_odom @ T_odom_link[stamps.index(stamp)], T_map_link, atol=1e-5)
    assert node.poll() is None
