"""End to end over real DDS: node and sequence player in their own processes, the test process subscribes.

Covers every output topic (encodings, headers equal to the input, camera_info sizes and K scaling, NaN use,
PointCloud2 layout, TF chain and monotonic stamps, odometry consistent with TF), QoS compatibility with
best-effort and reliable subscribers, the transient-local path, the services, run-time parameters and the TF
conflict guard.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

IMAGE_TOPICS = {
    "depth/image": Image,
    "depth/camera_info": CameraInfo,
    "rgb/image": Image,
    "rgb/camera_info": CameraInfo,
    "dynamic_mask/image": Image,
    "dynamic_mask/camera_info": CameraInfo,
    "points": PointCloud2,
    "odometry": Odometry,
    "camera_pose": PoseWithCovarianceStamped,
}
TRANSIENT_LOCAL = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
BEST_EFFORT = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)


def pose_matrix(position, orientation) -> np.ndarray:
    """4x4 from a geometry_msgs position/translation and quaternion (independent of the package)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([orientation.x, orientation.y, orientation.z, orientation.w]).as_matrix()
    T[:3, 3] = [position.x, position.y, position.z]
    return T


def test_node_outputs_services_and_tf_over_dds(
    start_node, spawn_process, probe, tiny_checkpoint, synthetic_sequence, ros_helpers, tmp_path: Path
):
    seq = synthetic_sequence
    ns = ros_helpers.NAMESPACE
    node = start_node(
        ros_helpers.fast_node_parameters(
            tiny_checkpoint, save_dir=str(tmp_path / "saved"), map_accumulate=True
        )
    )
    for topic, msg_type in IMAGE_TOPICS.items():
        probe.subscribe(f"{ns}/{topic}", msg_type, key=topic)
    probe.subscribe(f"{ns}/depth/image", Image, qos=BEST_EFFORT, key="depth_best_effort")
    probe.subscribe(f"{ns}/points", PointCloud2, qos=BEST_EFFORT, key="points_best_effort")
    probe.subscribe("/tf", TFMessage, key="tf")
    probe.subscribe("/tf_static", TFMessage, qos=TRANSIENT_LOCAL, key="tf_static")

    probe.wait_for_state(node, "active")
    # A separate process plays the synthetic sequence (same seed and size as the fixture) into the node.
    size = ["--width", str(seq.width), "--height", str(seq.height)]
    player_args = ["--seed", "3", "--frames", str(len(seq)), *size, "--movers", "2", "--rate", "8"]
    player = spawn_process(str(Path(__file__).with_name("sequence_player.py")), *player_args)
    stamps = [int(stamp) for stamp in seq.stamps_ns]
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= len(stamps), 120.0), (
        f"{len(probe.messages('camera_pose'))} of {len(stamps)} frames came out "
        f"(player exit {player.poll()}); input {probe.diagnostic_values('page4d: input')}"
    )
    time.sleep(0.5)

    # Every image output: the source header exactly, once per input frame, in order.
    for topic in (
        "depth/image",
        "depth/camera_info",
        "rgb/image",
        "rgb/camera_info",
        "dynamic_mask/image",
        "dynamic_mask/camera_info",
        "points",
    ):
        received = probe.messages(topic)
        assert [ros_helpers.stamp_of(m.header) for m in received] == stamps, topic
        assert {m.header.frame_id for m in received} == {seq.frame_id}, topic

    depth_images, infos = probe.messages("depth/image"), probe.messages("depth/camera_info")
    height, width = depth_images[0].height, depth_images[0].width
    assert (width, height) == (112, 84)  # 160x120 scaled to model_long_side 112
    scale = width / seq.width
    for image, info in zip(depth_images, infos):
        assert image.encoding == "32FC1" and image.step == 4 * width and image.is_bigendian == 0
        assert (info.width, info.height) == (width, height)
        depth = np.frombuffer(image.data, np.float32).reshape(height, width)
        assert np.isnan(depth).any(), "low-confidence pixels must be NaN (REP-117)"
        finite = depth[np.isfinite(depth)]
        assert finite.size > 0 and np.all(finite > 0)
    index = 5
    K_in = seq.K[index]
    K_out = np.array(infos[index].k).reshape(3, 3)
    expected = np.array(
        [
            [K_in[0, 0] * scale, 0.0, (K_in[0, 2] + 0.5) * scale - 0.5],
            [0.0, K_in[1, 1] * scale, (K_in[1, 2] + 0.5) * scale - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(K_out, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(infos[index].p).reshape(3, 4)[:, :3], expected, atol=1e-9)
    for topic, encoding in (("rgb/image", "rgb8"), ("dynamic_mask/image", "mono8")):
        for image, info in zip(probe.messages(topic), probe.messages(topic.split("/")[0] + "/camera_info")):
            assert image.encoding == encoding and (image.width, image.height) == (width, height)
            assert (info.width, info.height) == (width, height)
    masks = np.concatenate([np.frombuffer(m.data, np.uint8) for m in probe.messages("dynamic_mask/image")])
    assert set(np.unique(masks)) <= {0, 255}

    # PointCloud2 layout, and every point lies on its depth pixel (checks K, frame and cloud together).
    cloud = probe.messages("points")[index]
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
        ("rgb", 12, 7, 1),
    ]
    assert cloud.height == 1 and cloud.point_step == 16 and cloud.row_step == 16 * cloud.width
    assert len(cloud.data) == cloud.row_step and cloud.is_dense and cloud.width > 100
    xyz = np.frombuffer(cloud.data, np.float32).reshape(-1, 4)[:, :3]
    assert np.all(np.isfinite(xyz)) and np.all(xyz[:, 2] > 0)
    u = np.round(xyz[:, 0] / xyz[:, 2] * K_out[0, 0] + K_out[0, 2]).astype(int)
    v = np.round(xyz[:, 1] / xyz[:, 2] * K_out[1, 1] + K_out[1, 2]).astype(int)
    depth = np.frombuffer(depth_images[index].data, np.float32).reshape(height, width)
    np.testing.assert_allclose(depth[v, u], xyz[:, 2], rtol=1e-4)

    # QoS: best-effort subscribers receive the reliable outputs too.
    assert len(probe.messages("depth_best_effort")) >= len(stamps) // 2
    assert len(probe.messages("points_best_effort")) >= len(stamps) // 2

    # TF: odom -> camera_link once per frame with increasing stamps; camera_link -> optical on /tf_static.
    node_tf = [t for m in probe.messages("tf") for t in m.transforms if t.child_frame_id == "camera_link"]
    assert [t.header.frame_id for t in node_tf] == ["odom"] * len(stamps)
    assert [ros_helpers.stamp_of(t.header) for t in node_tf] == stamps
    static = [t for m in probe.messages("tf_static") for t in m.transforms]
    assert [(t.header.frame_id, t.child_frame_id) for t in static] == [("camera_link", seq.frame_id)]
    T_link_optical = pose_matrix(static[0].transform.translation, static[0].transform.rotation)
    np.testing.assert_allclose(T_link_optical[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-6)  # optical z = link x

    # Odometry equals TF; camera_pose equals TF composed with the static optical mounting.
    odometry, poses = probe.messages("odometry"), probe.messages("camera_pose")
    for transform, odom, pose in zip(node_tf, odometry, poses):
        T_tf = pose_matrix(transform.transform.translation, transform.transform.rotation)
        T_odom = pose_matrix(odom.pose.pose.position, odom.pose.pose.orientation)
        assert odom.header.frame_id == "odom" and odom.child_frame_id == "camera_link"
        np.testing.assert_allclose(T_odom, T_tf, atol=1e-9)
        T_pose = pose_matrix(pose.pose.pose.position, pose.pose.pose.orientation)
        assert pose.header.frame_id == "odom"
        np.testing.assert_allclose(T_pose, T_tf @ T_link_optical, atol=1e-6)
    np.testing.assert_allclose(
        pose_matrix(odometry[0].pose.pose.position, odometry[0].pose.pose.orientation), np.eye(4), atol=1e-6
    )

    # The transient-local path reaches a late subscriber with every pose.
    probe.subscribe(f"{ns}/path", PathMsg, qos=TRANSIENT_LOCAL, key="path")
    assert probe.wait_for(lambda: len(probe.messages("path")) >= 1, 10.0)
    path = probe.messages("path")[-1]
    assert [ros_helpers.stamp_of(p.header) for p in path.poses] == stamps

    # Diagnostics report the run.
    inference = probe.diagnostic_values("page4d: inference")
    assert int(inference["frames_processed"]) == len(stamps)
    assert probe.diagnostic_values("page4d: input")["camera_info_present"] == "true"
    assert float(probe.diagnostic_values("page4d: latency")["latency_ms_p50"]) > 0
    assert probe.diagnostic_values("page4d: scale")["scale_state"] == "model_units"

    # Services: ~/save writes the map and trajectory; ~/reset succeeds and takes effect.
    saved = probe.call(Trigger, f"{ros_helpers.NODE}/save", Trigger.Request())
    assert saved is not None and saved.success, saved
    tum_files = list((tmp_path / "saved").glob("*.tum"))
    ply_files = list((tmp_path / "saved").glob("*.ply"))
    assert len(tum_files) == 1 and len(ply_files) == 1
    tum = np.loadtxt(tum_files[0])
    assert tum.shape == (len(stamps), 8)
    np.testing.assert_allclose(tum[:, 0], np.array(stamps) / 1e9, atol=1e-6)
    header = ply_files[0].read_bytes().split(b"end_header\n")[0].decode()
    assert "element vertex" in header and int(header.split("element vertex ")[1].split()[0]) > 100
    reset = probe.call(Trigger, f"{ros_helpers.NODE}/reset", Trigger.Request())
    assert reset is not None and reset.success, reset
    # The worker applies the reset between frames (the service does not wait for a running window).
    assert probe.wait_for(lambda: probe.diagnostic_values("page4d: tracking").get("resets") == "1", 10.0)

    # Run-time parameters: thresholds are tunable, the window size is fixed after configure.
    def set_parameter(name: str, value: ParameterValue) -> bool:
        request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
        response = probe.call(SetParameters, f"{ros_helpers.NODE}/set_parameters", request)
        return response.results[0].successful

    assert set_parameter(
        "conf_percentile", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=10.0)
    )
    assert not set_parameter(
        "window_size", ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=6)
    )
    assert not set_parameter(
        "max_depth_m", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0)
    )
    # A depth range no surface is in: every depth pixel of the frames published from now on is NaN.
    assert set_parameter("min_depth_m", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0))
    assert set_parameter(
        "max_depth_m", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1e-9)
    )

    # Another authority publishing odom -> camera_link: the node stops broadcasting and reports an ERROR.
    foreign = TransformStamped()
    foreign.header.frame_id, foreign.child_frame_id = "odom", "camera_link"
    foreign.header.stamp.sec = 5
    foreign.transform.rotation.w = 1.0
    tf_pub = probe.node.create_publisher(TFMessage, "/tf", 10)
    assert probe.wait_for(lambda: tf_pub.get_subscription_count() >= 2, 10.0)
    tf_pub.publish(TFMessage(transforms=[foreign]))
    assert probe.wait_for(
        lambda: probe.ever_diagnosed("page4d: tf", DiagnosticStatus.ERROR[0], "another node"), 10.0
    )
    probe.clear("tf")
    before = len(probe.messages("camera_pose"))
    image_pub = probe.node.create_publisher(Image, f"{ns}/image", 10)
    assert probe.wait_for(lambda: image_pub.get_subscription_count() > 0, 10.0)
    time.sleep(0.3)
    later = seq.stamps_ns[-1] + np.arange(1, 5) * 33_333_333
    for offset, stamp in enumerate(later):
        image_pub.publish(ros_helpers.image_message(seq.rgb[offset], "rgb8", int(stamp), seq.frame_id))
        time.sleep(0.125)
    assert probe.wait_for(lambda: len(probe.messages("camera_pose")) >= before + 2, 60.0)
    own = [t for m in probe.messages("tf") for t in m.transforms if t.header.stamp.sec != 5]
    assert own == [], "the node kept broadcasting an edge another authority owns"
    later_depth = [m for m in probe.messages("depth/image") if ros_helpers.stamp_of(m.header) in set(later)]
    assert later_depth, "no depth image of the frames sent after the parameter change"
    assert all(np.isnan(np.frombuffer(m.data, np.float32)).all() for m in later_depth)
    assert node.poll() is None, "node process died"
