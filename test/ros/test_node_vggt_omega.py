"""A small random VGGT-Omega through the real node over DDS: every output topic, the family's input size.

The checkpoint is written with ``save_checkpoint`` (the config, family included, travels in the file), the
node runs in its own process and a separate process plays a synthetic sequence into it. VGGT-Omega has no
dynamics head: the dynamic mask comes from the geometric test alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

TRANSIENT_LOCAL = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
PER_FRAME_TOPICS = {
    "depth/image": Image,
    "depth/camera_info": CameraInfo,
    "depth/image_mm": Image,
    "rgb/image": Image,
    "rgb/camera_info": CameraInfo,
    "dynamic_mask/image": Image,
    "dynamic_mask/camera_info": CameraInfo,
    "confidence/image": Image,
    "points": PointCloud2,
    "points_static": PointCloud2,
    "odometry": Odometry,
    "camera_pose": PoseWithCovarianceStamped,
}


def test_vggt_omega_node_publishes_every_output(
    start_node, spawn_process, probe, tiny_omega_checkpoint, synthetic_sequence, ros_helpers
):
    seq = synthetic_sequence
    ns = ros_helpers.NAMESPACE
    parameters = ros_helpers.fast_node_parameters(
        tiny_omega_checkpoint,
        model_long_side=0,
        publish_depth_mm=True,
        publish_confidence=True,
        publish_points_static=True,
        mask_geometric=True,
    )
    node = start_node(parameters)
    for topic, msg_type in PER_FRAME_TOPICS.items():
        probe.subscribe(f"{ns}/{topic}", msg_type, key=topic)
    probe.subscribe("/tf", TFMessage, key="tf")
    probe.subscribe("/tf_static", TFMessage, qos=TRANSIENT_LOCAL, key="tf_static")
    probe.wait_for_state(node, "active")
    assert "(vggt-omega)" in probe.diagnostic_values("page4d: inference")["backend"]

    size = ["--width", str(seq.width), "--height", str(seq.height)]
    player_args = ["--seed", "3", "--frames", str(len(seq)), *size, "--movers", "2", "--rate", "8"]
    player = spawn_process(str(Path(__file__).with_name("sequence_player.py")), *player_args)
    stamps = [int(stamp) for stamp in seq.stamps_ns]
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= len(stamps), 120.0), (
        f"{len(probe.messages('camera_pose'))} of {len(stamps)} frames came out (player exit {player.poll()})"
    )
    time.sleep(0.5)

    for topic in PER_FRAME_TOPICS:
        received = probe.messages(topic)
        assert [ros_helpers.stamp_of(m.header) for m in received] == stamps, topic
        if topic not in ("odometry", "camera_pose"):
            assert {m.header.frame_id for m in received} == {seq.frame_id}, topic

    # The family's size rule: 160 x 120 at resolution 96 -> 7 x 5 patches of 16 px.
    width, height = 112, 80
    for topic, encoding in (
        ("depth/image", "32FC1"),
        ("depth/image_mm", "16UC1"),
        ("rgb/image", "rgb8"),
        ("dynamic_mask/image", "mono8"),
        ("confidence/image", "32FC1"),
    ):
        for image in probe.messages(topic):
            assert (image.width, image.height, image.encoding) == (width, height, encoding), topic
    scale_x, scale_y = width / seq.width, height / seq.height
    index = 5  # a frame well after the first camera_info (the first frames may precede it)
    K_in = seq.K[index]
    expected = [
        [K_in[0, 0] * scale_x, 0.0, (K_in[0, 2] + 0.5) * scale_x - 0.5],
        [0.0, K_in[1, 1] * scale_y, (K_in[1, 2] + 0.5) * scale_y - 0.5],
        [0.0, 0.0, 1.0],
    ]
    for topic in ("depth/camera_info", "rgb/camera_info", "dynamic_mask/camera_info"):
        infos = probe.messages(topic)
        assert {(info.width, info.height) for info in infos} == {(width, height)}, topic
        np.testing.assert_allclose(np.array(infos[index].k).reshape(3, 3), expected, atol=1e-9)
    for image in probe.messages("depth/image"):
        depth = np.frombuffer(image.data, np.float32)
        assert np.isfinite(depth).any() and np.all(depth[np.isfinite(depth)] > 0)
    for image in probe.messages("confidence/image"):
        assert np.nanmin(np.frombuffer(image.data, np.float32)) >= 1.0  # 1 + exp(.)
    masks = np.concatenate([np.frombuffer(m.data, np.uint8) for m in probe.messages("dynamic_mask/image")])
    assert set(np.unique(masks)) <= {0, 255}
    for topic in ("points", "points_static"):
        clouds = probe.messages(topic)
        assert all(c.point_step == 16 and c.height == 1 for c in clouds), topic
        xyz = np.frombuffer(clouds[-1].data, np.float32).reshape(-1, 4)[:, :3]
        assert xyz.shape[0] > 0 and np.isfinite(xyz).all(), topic
    assert all(s.width <= p.width for s, p in zip(probe.messages("points_static"), probe.messages("points")))

    node_tf = [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "camera_link"]
    assert [ros_helpers.stamp_of(t.header) for t in node_tf] == stamps
    static = [t for m in probe.messages("tf_static") for t in m.transforms]
    assert [(t.header.frame_id, t.child_frame_id) for t in static] == [("camera_link", seq.frame_id)]
    for odom in probe.messages("odometry"):
        position = odom.pose.pose.position
        assert np.isfinite([position.x, position.y, position.z]).all()
    probe.subscribe(f"{ns}/path", PathMsg, qos=TRANSIENT_LOCAL, key="path")
    assert probe.wait_for(lambda: len(probe.messages("path")) >= 1, 10.0)
    assert [ros_helpers.stamp_of(p.header) for p in probe.messages("path")[-1].poses] == stamps

    inference = probe.diagnostic_values("page4d: inference")
    assert int(inference["frames_processed"]) == len(stamps)
    assert node.poll() is None, "node process died"
