"""π³ behind the node over real DDS: a tiny random π³ saved by ``save_checkpoint`` drives every output.

The checkpoint's stored config selects the family (no ``model_preset``); its inference settings carry a
pixel budget of 112 x 84 so the CPU run stays fast. The node and the sequence player run in their own
processes; the test process subscribes to every output.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

PIXEL_LIMIT = 112 * 84  # 160x120 input -> exactly 112x84 (8 x 6 patches)
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
TRANSIENT_LOCAL = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


@pytest.fixture(scope="module")
def pi3_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_pi3_config) -> Path:
    """A tiny random π³ written by save_checkpoint with its config and a small pixel budget."""
    import torch

    from page4d_ros.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(tiny_pi3_config)
    path = tmp_path_factory.mktemp("pi3") / "pi3_tiny.safetensors"
    return save_checkpoint(model, path, inference={"pixel_limit": PIXEL_LIMIT})


def _pose(position, orientation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([orientation.x, orientation.y, orientation.z, orientation.w]).as_matrix()
    T[:3, 3] = [position.x, position.y, position.z]
    return T


def test_pi3_node_publishes_every_output_over_dds(
    start_node, spawn_process, probe, pi3_checkpoint, synthetic_sequence, ros_helpers
):
    seq = synthetic_sequence
    ns = ros_helpers.NAMESPACE
    parameters = ros_helpers.fast_node_parameters(
        pi3_checkpoint,
        model_long_side=56,  # not used by π³: its pixel budget decides (a VGGT would run at 56 x 42)
        publish_depth_mm=True,
        publish_confidence=True,
        publish_points_static=True,
        min_depth_m=0.0,
        max_depth_m=1e6,
    )
    node = start_node(parameters)
    for topic, msg_type in PER_FRAME_TOPICS.items():
        probe.subscribe(f"{ns}/{topic}", msg_type, key=topic)
    probe.subscribe("/tf", TFMessage, key="tf")
    probe.subscribe("/tf_static", TFMessage, qos=TRANSIENT_LOCAL, key="tf_static")
    probe.subscribe("/diagnostics", DiagnosticArray, key="diagnostics_raw")
    probe.wait_for_state(node, "active")
    size = ["--width", str(seq.width), "--height", str(seq.height)]
    player_args = ["--seed", "3", "--frames", str(len(seq)), *size, "--movers", "2", "--rate", "8"]
    player = spawn_process(str(Path(__file__).with_name("sequence_player.py")), *player_args)
    stamps = [int(stamp) for stamp in seq.stamps_ns]
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= len(stamps), 150.0), (
        f"{len(probe.messages('camera_pose'))} of {len(stamps)} frames came out "
        f"(player exit {player.poll()}); input {probe.diagnostic_values('page4d: input')}"
    )
    time.sleep(0.5)

    for topic in PER_FRAME_TOPICS:
        received = probe.messages(topic)
        assert [ros_helpers.stamp_of(m.header) for m in received] == stamps, topic
        if topic not in ("odometry", "camera_pose"):
            assert {m.header.frame_id for m in received} == {seq.frame_id}, topic

    # The family's size rule (the checkpoint's pixel budget), not model_long_side.
    depth_images, infos = probe.messages("depth/image"), probe.messages("depth/camera_info")
    width, height = 112, 84
    scale = width / seq.width
    for topic in ("depth/image", "depth/image_mm", "rgb/image", "dynamic_mask/image", "confidence/image"):
        assert {(m.width, m.height) for m in probe.messages(topic)} == {(width, height)}, topic
    encodings = {
        "depth/image": "32FC1",
        "depth/image_mm": "16UC1",
        "rgb/image": "rgb8",
        "dynamic_mask/image": "mono8",
        "confidence/image": "32FC1",
    }
    for topic, encoding in encodings.items():
        assert {m.encoding for m in probe.messages(topic)} == {encoding}, topic
    for info in [*infos, *probe.messages("rgb/camera_info"), *probe.messages("dynamic_mask/camera_info")]:
        assert (info.width, info.height) == (width, height)
    # camera_info present: the published K is the input K scaled to the output (no crop, no pad).
    index = 5
    K_in = seq.K[index]
    expected = np.array(
        [
            [K_in[0, 0] * scale, 0.0, (K_in[0, 2] + 0.5) * scale - 0.5],
            [0.0, K_in[1, 1] * scale, (K_in[1, 2] + 0.5) * scale - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )
    K_out = np.array(infos[index].k).reshape(3, 3)
    np.testing.assert_allclose(K_out, expected, rtol=1e-9, atol=1e-9)
    for image in depth_images:
        depth = np.frombuffer(image.data, np.float32).reshape(height, width)
        finite = depth[np.isfinite(depth)]
        assert finite.size > 0 and np.all(finite > 0)
    # π³ confidence on the expp1 scale: >= 1 everywhere.
    confidence = np.concatenate(
        [np.frombuffer(m.data, np.float32) for m in probe.messages("confidence/image")]
    )
    assert np.all(confidence >= 1.0)
    masks = np.concatenate([np.frombuffer(m.data, np.uint8) for m in probe.messages("dynamic_mask/image")])
    assert set(np.unique(masks)) <= {0, 255}

    # Clouds: every point lies on its depth pixel through the published K.
    cloud = probe.messages("points")[index]
    assert cloud.point_step == 16 and cloud.width > 50
    xyz = np.frombuffer(cloud.data, np.float32).reshape(-1, 4)[:, :3]
    u = np.round(xyz[:, 0] / xyz[:, 2] * K_out[0, 0] + K_out[0, 2]).astype(int)
    v = np.round(xyz[:, 1] / xyz[:, 2] * K_out[1, 1] + K_out[1, 2]).astype(int)
    depth = np.frombuffer(depth_images[index].data, np.float32).reshape(height, width)
    np.testing.assert_allclose(depth[v, u], xyz[:, 2], rtol=1e-4)
    static_cloud = probe.messages("points_static")[index]
    assert static_cloud.width <= cloud.width

    # Poses: TF once per frame in order, odometry equal to TF, the first frame at the origin.
    node_tf = [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "camera_link"]
    assert [ros_helpers.stamp_of(t.header) for t in node_tf] == stamps
    for transform, odom in zip(node_tf, probe.messages("odometry")):
        T_tf = _pose(transform.transform.translation, transform.transform.rotation)
        np.testing.assert_allclose(
            _pose(odom.pose.pose.position, odom.pose.pose.orientation), T_tf, atol=1e-9
        )
        assert np.all(np.isfinite(T_tf))
    first = probe.messages("odometry")[0].pose.pose
    np.testing.assert_allclose(_pose(first.position, first.orientation), np.eye(4), atol=1e-6)
    assert [
        (t.header.frame_id, t.child_frame_id) for m in probe.messages("tf_static") for t in m.transforms
    ] == [("camera_link", seq.frame_id)]

    probe.subscribe(f"{ns}/path", PathMsg, qos=TRANSIENT_LOCAL, key="path")
    assert probe.wait_for(lambda: len(probe.messages("path")) >= 1, 10.0)
    assert [ros_helpers.stamp_of(p.header) for p in probe.messages("path")[-1].poses] == stamps
    assert int(probe.diagnostic_values("page4d: inference")["frames_processed"]) == len(stamps)
    assert probe.messages("diagnostics_raw")
    assert node.poll() is None, "node process died"
