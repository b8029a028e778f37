"""TF, camera_info and odometry rules of issue 13 part B, checked without DDS.

CameraInfo to calibration as image_geometry's PinholeCameraModel (P for rectified images, binning, roi), the
time jump carried with its frame through the drop-oldest queue, pairing an info that arrives after its image,
the order of a frame's messages (TF first), the odometry twist, TF in model units by default, the camera
mounting gate, the interpolating TF history and the lever arm in the odometry scale.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from page4d_ros.pipeline.config import PipelineConfig
from page4d_ros.pipeline.scale import ScaleEstimator, WindowScaleInputs
from page4d_ros.pipeline.types import CameraCalibration, Frame, FrameResult
from page4d_ros.ros import messages
from page4d_ros.ros.frames import TransformHistory, body_twist, optical_position_from_odometry
from page4d_ros.ros.outputs import TF_TOPIC, OutputBuilder
from page4d_ros.ros.parameters import validate_parameters
from page4d_ros.ros.scheduling import (
    CameraInfoCache,
    DropOldestQueue,
    QueuedFrame,
    calibration_from_camera_info,
    carry_time_jump,
)

P_FULL = np.array([[500.0, 0.0, 320.5, 0.0], [0.0, 502.0, 240.5, 0.0], [0.0, 0.0, 1.0, 0.0]])
K_RAW = np.array([[530.0, 0.0, 318.0], [0.0, 531.0, 243.0], [0.0, 0.0, 1.0]])
D_RAW = [-0.28, 0.07, 0.001, -0.002, 0.0]


def info(p=P_FULL, k=K_RAW, d=D_RAW, binning=(0, 0), roi=(0, 0, 0, 0), upper=False):
    """A CameraInfo-like record of a 640x480 calibration (ROS 1 field names with ``upper``)."""
    fields = {"k": np.asarray(k).reshape(-1), "p": np.asarray(p).reshape(-1), "d": list(d)}
    if upper:
        fields = {name.upper(): value for name, value in fields.items()}
    return SimpleNamespace(
        **fields,
        width=640,
        height=480,
        distortion_model="plumb_bob",
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3]),
    )


def test_rectified_info_uses_p_and_is_not_distorted():
    calibration = calibration_from_camera_info(info())
    np.testing.assert_array_equal(calibration.K, P_FULL[:, :3])
    assert (calibration.width, calibration.height) == (640, 480)
    assert not calibration.is_distorted  # the raw D describes image_raw, not this rectified image
    raw_only = calibration_from_camera_info(info(p=np.zeros(12)))  # a driver that fills K and D only
    np.testing.assert_array_equal(raw_only.K, K_RAW)
    assert raw_only.is_distorted
    ros1 = calibration_from_camera_info(info(upper=True))
    np.testing.assert_array_equal(ros1.K, P_FULL[:, :3])


def test_binning_and_roi_as_image_geometry():
    # roi 400x300 at (100, 50), binned 2x2: the published image is 200x150 and
    # fx = 500 / 2, cx = (320.5 - 100) / 2, fy = 502 / 2, cy = (240.5 - 50) / 2 (PinholeCameraModel).
    calibration = calibration_from_camera_info(info(binning=(2, 2), roi=(100, 50, 400, 300)))
    assert (calibration.width, calibration.height) == (200, 150)
    np.testing.assert_allclose(calibration.K, [[250.0, 0.0, 110.25], [0.0, 251.0, 95.25], [0.0, 0.0, 1.0]])
    binned = calibration_from_camera_info(info(binning=(4, 1)))
    assert (binned.width, binned.height) == (160, 480)
    np.testing.assert_allclose(binned.K[0], [125.0, 0.0, 80.125])
    np.testing.assert_allclose(binned.K[1], [0.0, 502.0, 240.5])
    with pytest.raises(ValueError, match="uncalibrated"):
        calibration_from_camera_info(info(p=np.zeros(12), k=np.zeros(9)))


def frame(stamp_ns: int) -> Frame:
    return Frame(rgb=np.zeros((4, 4, 3), np.uint8), stamp_ns=stamp_ns, frame_id="cam")


def test_time_jump_survives_the_drop_of_its_frame():
    queue: DropOldestQueue[QueuedFrame] = DropOldestQueue(2, carry_time_jump)
    queue.put(QueuedFrame(frame(900)))
    queue.put(QueuedFrame(frame(100), time_jump_back=True))
    queue.put(QueuedFrame(frame(200)))  # drops 900
    queue.put(QueuedFrame(frame(300)))  # drops the jump's frame: the jump moves to 200
    first, second = queue.get(0.0), queue.get(0.0)
    assert (first.frame.stamp_ns, first.time_jump_back) == (200, True)
    assert (second.frame.stamp_ns, second.time_jump_back) == (300, False)
    single: DropOldestQueue[QueuedFrame] = DropOldestQueue(1, carry_time_jump)
    single.put(QueuedFrame(frame(100), time_jump_back=True))
    single.put(QueuedFrame(frame(200)))
    assert single.get(0.0).time_jump_back


def test_synchronized_info_arriving_after_its_image_pairs():
    import time

    calibration = CameraCalibration(P_FULL[:, :3], 640, 480)
    cache = CameraInfoCache("synchronized", slop_ns=5_000_000)
    cache.add("cam", 1_000_000_000, calibration)
    # The image of 2.0 s is taken first; its info arrives 50 ms later (image_transport CameraPublisher order).
    timer = threading.Timer(0.05, cache.add, args=("cam", 2_001_000_000, calibration))
    timer.start()
    assert cache.wait_lookup("cam", 2_000_000_000, time.monotonic() + 2.0) is calibration
    timer.join()
    assert cache.wait_lookup("cam", 3_000_000_000, time.monotonic() + 0.05) is None
    assert "within camera_info_slop_s" in cache.explain_missing("cam", 3_000_000_000)
    assert "frame id(s) ['cam']" in cache.explain_missing("other_optical", 2_000_000_000)
    cache.add("cam_right", 4_000_000_000, calibration)  # an info at the image's stamp, in another frame
    assert "frame id(s) ['cam_right']" in cache.explain_missing("cam", 4_000_000_000)
    paired = CameraCalibration(P_FULL[:, :3] * [[2], [2], [1]], 1280, 960)
    cache.pair("other_optical", 7, paired)  # a synchroniser's pair wins, whatever the info's frame id
    assert cache.lookup("other_optical", 7) is paired


def test_synchronized_wait_ends_as_soon_as_no_info_can_pair():
    import time

    calibration = CameraCalibration(P_FULL[:, :3], 640, 480)
    cache = CameraInfoCache("synchronized", slop_ns=5_000_000)
    cache.add("cam", 2_000_000_000, calibration)

    def timed_lookup(frame_id: str, stamp_ns: int, wait_s: float = 2.0) -> tuple[object, float]:
        started = time.monotonic()
        found = cache.wait_lookup(frame_id, stamp_ns, started + wait_s)
        return found, time.monotonic() - started

    # An info newer than the image (beyond the slop) arrived: infos come in stamp order, none can pair.
    found, waited = timed_lookup("cam", 1_000_000_000)
    assert found is None and waited < 0.5
    # No info of the image's frame id ever arrived (and no synchroniser pairs across frame ids).
    found, waited = timed_lookup("other_optical", 2_000_000_000)
    assert found is None and waited < 0.5
    # A wait that runs out (the info stream lags) is not repeated for the next images of that frame id ...
    found, waited = timed_lookup("cam", 3_000_000_000, wait_s=0.3)
    assert found is None and waited >= 0.3
    found, waited = timed_lookup("cam", 3_100_000_000)
    assert found is None and waited < 0.5
    # ... until an info as new as the image that ran out arrives: then a late info is waited for again.
    cache.add("cam", 3_000_000_000, calibration)
    timer = threading.Timer(0.1, cache.add, args=("cam", 3_200_000_000, calibration))
    timer.start()
    found, waited = timed_lookup("cam", 3_200_000_000)
    timer.join()
    assert found is calibration and 0.05 < waited < 1.5
    # With a synchroniser, a pair recorded after the wait began pairs whatever the infos' frame id.
    cache.synchronizer = True
    paired = CameraCalibration(P_FULL[:, :3] * [[2], [2], [1]], 1280, 960)
    timer = threading.Timer(0.1, cache.pair, args=("other_optical", 3_250_000_000, paired))
    timer.start()
    found, waited = timed_lookup("other_optical", 3_250_000_000)
    timer.join()
    assert found is paired and waited < 1.5


def rigid(rotvec, translation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = translation
    return T


def result(stamp_ns: int, T_world_cam: np.ndarray, scale_state: str = "model_units") -> FrameResult:
    return FrameResult(
        stamp_ns=stamp_ns,
        frame_id="cam_optical",
        index=0,
        window_index=0,
        segment_index=0,
        T_world_cam=T_world_cam,
        K=P_FULL[:, :3] / 20,
        width=32,
        height=24,
        depth=np.full((24, 32), 2.0, np.float32),
        confidence=np.ones((24, 32), np.float32),
        rgb=np.zeros((24, 32, 3), np.uint8),
        dynamic_mask=np.zeros((24, 32), np.uint8),
        points=np.array([[0.0, 0.0, 2.0]], np.float32),
        colors=np.array([[255, 0, 0]], np.uint8),
        point_is_dynamic=np.array([False]),
        scale=1.0,
        scale_state=scale_state,
        intrinsics_source="calibration",
        K_predicted=P_FULL[:, :3] / 20,
        intrinsics_disagreement={},
        alignment="first",
        alignment_residual=0.0,
    )


def test_defaults_publish_tf_and_odometry_in_model_units_tf_first():
    builder = OutputBuilder(messages.RclpyMessageFactory(), validate_parameters({}))
    outputs, ordered = builder.frame_messages(result(1_000, np.eye(4)))
    topics = [topic for topic, _ in ordered]
    assert topics[0] == TF_TOPIC and "odometry" in topics and outputs.non_metric_tf
    assert topics.index(TF_TOPIC) < min(topics.index(t) for t in ("depth/image", "points", "rgb/image"))
    withheld = OutputBuilder(
        messages.RclpyMessageFactory(), validate_parameters({"require_metric_for_tf": True})
    )
    outputs, ordered = withheld.frame_messages(result(1_000, np.eye(4)))
    assert TF_TOPIC not in dict(ordered) and "require_metric_for_tf" in outputs.tf_note


def test_odometry_twist_is_the_base_velocity_in_the_child_frame():
    settings = validate_parameters({"base_frame": "base_link", "base_to_optical_xyz": [0.2, 0.0, 0.5]})
    builder = OutputBuilder(messages.RclpyMessageFactory(), settings)
    T_base_optical = builder.T_base_optical
    # The base drives at 1.5 m/s along its own x while turning at 0.4 rad/s about z (an arc), for 0.1 s.
    T0 = rigid([0, 0, 0.3], [1.0, 2.0, 0.0])
    dt = 0.1
    T1 = T0 @ rigid([0, 0, 0.4 * dt], [1.5 * dt, 0.0, 0.0])
    first = dict(builder.pose_outputs(result(10**9, T0 @ T_base_optical)).messages)["odometry"]
    assert np.allclose(first.twist.covariance.reshape(6, 6), np.diag([1e6] * 6))
    second = dict(builder.pose_outputs(result(10**9 + int(dt * 1e9), T1 @ T_base_optical)).messages)[
        "odometry"
    ]
    linear, angular = second.twist.twist.linear, second.twist.twist.angular
    # The 0.15 m step along the old body x, seen from the new body frame (turned by 0.04 rad).
    expected = [1.5 * np.cos(0.04), -1.5 * np.sin(0.04), 0.0]
    np.testing.assert_allclose([linear.x, linear.y, linear.z], expected, atol=1e-9)
    np.testing.assert_allclose([angular.x, angular.y, angular.z], [0.0, 0.0, 0.4], atol=1e-9)
    variances = np.diag(second.twist.covariance.reshape(6, 6))
    np.testing.assert_allclose(variances, [2 * (0.05 / dt) ** 2] * 3 + [2 * (0.02 / dt) ** 2] * 3)
    linear_direct, _ = body_twist(np.eye(4), rigid([0, 0, np.pi / 2], [0.0, 1.0, 0.0]), 1.0)
    np.testing.assert_allclose(linear_direct, [1.0, 0.0, 0.0], atol=1e-12)  # world +y = new body +x


def test_poses_wait_for_the_camera_mounting():
    builder = OutputBuilder(messages.RclpyMessageFactory(), validate_parameters({}))
    builder.mounting_pending = "tf2 has no base_link -> cam_optical"
    waiting, ordered = builder.frame_messages(result(1_000, np.eye(4)))
    assert waiting.estimate is None and "camera mounting" in waiting.tf_note
    assert {topic for topic, _ in ordered} >= {"depth/image", "points"} and TF_TOPIC not in dict(ordered)
    builder.set_base_to_optical(rigid([0, 0, 0], [0.1, 0.0, 0.3]) @ builder.T_base_optical)
    published, ordered = builder.frame_messages(result(2_000, np.eye(4)))
    assert published.estimate is not None and TF_TOPIC in dict(ordered)
    np.testing.assert_allclose(published.estimate.T_estimate_base, np.eye(4), atol=1e-12)


def test_static_transform_carries_the_given_stamp():
    builder = OutputBuilder(
        messages.RclpyMessageFactory(), validate_parameters({"publish_optical_static_tf": True})
    )
    (static,) = builder.static_transforms("cam_optical", 1_700_000_000_250_000_000)
    assert (static.header.stamp.sec, static.header.stamp.nanosec) == (1_700_000_000, 250_000_000)


def test_transform_history_interpolates_between_samples():
    history = TransformHistory()
    history.add(1_000, rigid([0, 0, 0], [0.0, 0.0, 0.0]))
    history.add(2_000, rigid([0, 0, 1.0], [2.0, 0.0, 0.0]))
    T = history.lookup(1_250, 1_000)
    np.testing.assert_allclose(T[:3, 3], [0.5, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(Rotation.from_matrix(T[:3, :3]).as_rotvec(), [0, 0, 0.25], atol=1e-12)
    assert history.lookup(5_000, 1_000) is None


def test_odometry_scale_uses_the_optical_centre_not_the_base():
    config = PipelineConfig(scale_source="odometry", scale_min_baseline_m=0.1)
    # A robot turning 90 degrees in place while creeping 0.2 m forward, its camera 0.5 m ahead of the base.
    T_base_optical = rigid([0, 0, 0], [0.5, 0.0, 0.3])
    stamps = np.arange(8, dtype=np.int64) * 100_000_000 + 10**9
    bases = [rigid([0, 0, np.pi / 2 * i / 7], [0.2 * i / 7, 0.0, 0.0]) for i in range(8)]
    metric_centres = np.array([(T @ T_base_optical)[:3, 3] for T in bases])
    estimated = metric_centres / 4.0  # the network's units: a quarter of a metre

    def ratio(positions: np.ndarray) -> float:
        estimator = ScaleEstimator(config)
        for stamp, position in zip(stamps, positions):
            estimator.add_odometry(int(stamp), position)
        inputs = WindowScaleInputs(
            stamps_ns=stamps,
            camera_centres=estimated,
            camera_down_axes=np.tile([0.0, 0.0, -1.0], (8, 1)),
            static_points_world=np.zeros((0, 3)),
            depth_output_units=[],
            output_pixel_source_coords=(np.zeros(0), np.zeros(0)),
            source_size=(32, 24),
        )
        return estimator.correction(inputs)

    composed = np.array([optical_position_from_odometry(T, T_base_optical) for T in bases])
    assert ratio(composed) == pytest.approx(4.0, rel=1e-9)
    base_positions = np.array([T[:3, 3] for T in bases])
    assert abs(ratio(base_positions) - 4.0) > 1.0  # what comparing base positions measured


def test_cloud_layout_equals_sensor_msgs_py():
    point_cloud2 = pytest.importorskip(
        "sensor_msgs_py.point_cloud2", reason="sensor_msgs_py is not installed (../shared/wheels has it)"
    )
    from sensor_msgs.msg import PointField
    from std_msgs.msg import Header

    from page4d_ros.ros import conversions

    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(50, 3), dtype=np.uint8)
    factory = messages.RclpyMessageFactory()
    ours = messages.build_point_cloud(factory, messages.build_header(factory, 5, "cam"), points, colors)
    fields = [
        PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
        for n, o in conversions.POINT_FIELDS
    ]
    packed = conversions.pack_rgb_float(colors)
    theirs = point_cloud2.create_cloud(
        Header(frame_id="cam"), fields, [(*p, c) for p, c in zip(points.tolist(), packed.tolist())]
    )
    assert bytes(ours.data) == bytes(theirs.data)
    assert (ours.point_step, ours.row_step, ours.width, ours.height) == (
        theirs.point_step,
        theirs.row_step,
        theirs.width,
        theirs.height,
    )
    read = point_cloud2.read_points(ours, field_names=("x", "y", "z", "rgb"))
    np.testing.assert_array_equal(np.stack([read["x"], read["y"], read["z"]], axis=1), points)
    rgb = np.asarray(read["rgb"], dtype=np.float32).view(np.uint32)
    np.testing.assert_array_equal(np.stack([rgb >> 16, (rgb >> 8) & 255, rgb & 255], axis=1), colors)


def test_pose_conversions_equal_tf_transformations():
    tf_transformations = pytest.importorskip(
        "tf_transformations", reason="tf_transformations is not installed (../shared/wheels has it)"
    )
    from page4d_ros.ros import conversions

    for roll, pitch, yaw in [(-np.pi / 2, 0.0, -np.pi / 2), (0.3, -0.2, 1.1), (2.0, 0.4, -2.5)]:
        ours = conversions.xyz_rpy_to_matrix([0.1, 0.2, 0.3], [roll, pitch, yaw])
        theirs = tf_transformations.euler_matrix(roll, pitch, yaw, "sxyz")
        np.testing.assert_allclose(ours[:3, :3], theirs[:3, :3], atol=1e-12)
        _, quaternion = conversions.matrix_to_translation_quaternion(ours)
        expected = tf_transformations.quaternion_from_matrix(theirs)
        expected = expected if expected[3] >= 0 else -expected
        np.testing.assert_allclose(quaternion, expected, atol=1e-12)
