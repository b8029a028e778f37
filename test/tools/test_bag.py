"""``page4d-bag``: every frame of a rosbag2 (MCAP) or ROS 1 bag in, the node's topics out, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from page4d_ros.tools import bag

FRAMES = 10


@pytest.fixture(scope="module")
def sequence():
    """A short synthetic dynamic sequence."""
    from page4d_ros.synthetic.scene import generate_sequence

    return generate_sequence(5, FRAMES, 160, 120, camera_motion="orbit", num_movers=1)


@pytest.fixture(scope="module")
def input_bag(tmp_path_factory: pytest.TempPathFactory, sequence) -> Path:
    """The sequence as an MCAP rosbag2 (camera, camera_info, ground-truth topics)."""
    from page4d_ros.synthetic.writers import write_mcap

    return write_mcap(sequence, tmp_path_factory.mktemp("bags") / "input")


@pytest.fixture
def params_file(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """A node parameters file for a fast CPU run."""
    values = {
        "checkpoint_path": str(tiny_checkpoint),
        "device": "cpu",
        "window_size": 4,
        "window_stride": 2,
        "model_long_side": 112,
        "publish_optical_static_tf": True,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"page4d": {"ros__parameters": values}}))
    return path


@pytest.fixture(autouse=True)
def single_torch_thread():
    """One intra-op thread: on the shared 2-core CI machine, spinning torch threads slow inference 50-fold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """Topic -> [(log time, deserialised message)] of a bag."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append(
                (timestamp, reader.deserialize(raw, connection.msgtype))
            )
    return out


def stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_bag_tool_writes_every_frame_with_source_headers(input_bag, params_file, sequence, tmp_path):
    output = tmp_path / "out"
    assert bag.main([str(input_bag), str(output), "--params", str(params_file), "--no-progress"]) == 0
    topics = read_bag(output)
    stamps = [int(s) for s in sequence.stamps_ns]
    for topic in (
        "depth/image",
        "depth/camera_info",
        "rgb/image",
        "dynamic_mask/image",
        "points",
        "camera_pose",
        "odometry",
    ):
        messages = topics[f"/page4d/{topic}"]
        assert [stamp(m) for _, m in messages] == stamps, topic  # every frame, in order, source stamps
        assert [t for t, _ in messages] == stamps, topic  # log time = header stamp
    depth = topics["/page4d/depth/image"][3][1]
    assert depth.encoding == "32FC1" and depth.header.frame_id == sequence.frame_id
    values = np.frombuffer(depth.data.tobytes(), np.float32)
    assert np.isnan(values).any() and np.all(values[np.isfinite(values)] > 0)
    info = topics["/page4d/depth/camera_info"][3][1]
    assert (info.width, info.height) == (depth.width, depth.height) == (112, 84)
    pose = topics["/page4d/camera_pose"][0][1]
    assert pose.header.frame_id == "odom"
    ((_, path),) = topics["/page4d/path"]  # written once, with the whole trajectory
    assert [stamp(p) for p in path.poses] == stamps
    tf = [t for _, m in topics["/tf"] for t in m.transforms]
    assert [stamp(t) for t in tf] == stamps and {t.child_frame_id for t in tf} == {"base_link"}
    static = [t for _, m in topics["/tf_static"] for t in m.transforms]
    assert [(t.header.frame_id, t.child_frame_id) for t in static] == [("base_link", sequence.frame_id)]


def test_bag_tool_is_deterministic(input_bag, params_file, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for output in (first, second):
        assert bag.main([str(input_bag), str(output), "--params", str(params_file), "--no-progress"]) == 0
    a, b = read_bag(first), read_bag(second)
    assert sorted(a) == sorted(b)
    for topic in ("/page4d/depth/image", "/page4d/points", "/page4d/dynamic_mask/image"):
        for (_, x), (_, y) in zip(a[topic], b[topic]):
            assert np.array_equal(x.data, y.data), topic
    for (_, x), (_, y) in zip(a["/page4d/camera_pose"], b["/page4d/camera_pose"]):
        p, q = x.pose.pose.position, y.pose.pose.position
        assert (p.x, p.y, p.z) == (q.x, q.y, q.z)


def test_bag_tool_reads_ros1_bags(params_file, sequence, tmp_path):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    Image, CameraInfo = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CameraInfo"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    ROI = store.types["sensor_msgs/msg/RegionOfInterest"]
    path = tmp_path / "input.bag"
    with Writer(path) as writer:
        image_conn = writer.add_connection("/cam/image_raw", Image.__msgtype__, typestore=store)
        info_conn = writer.add_connection("/cam/camera_info", CameraInfo.__msgtype__, typestore=store)
        for index in range(6):
            t = int(sequence.stamps_ns[index])
            header = Header(seq=index, stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam_optical")
            K = sequence.K[index]
            info = CameraInfo(
                header=header,
                height=120,
                width=160,
                distortion_model="plumb_bob",
                D=np.zeros(5),
                K=K.reshape(-1),
                R=np.eye(3).reshape(-1),
                P=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0,
                binning_y=0,
                roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            writer.write(info_conn, t, store.serialize_ros1(info, CameraInfo.__msgtype__))
            bgr = np.ascontiguousarray(sequence.rgb[index][:, :, ::-1])
            image = Image(
                header=header,
                height=120,
                width=160,
                encoding="bgr8",
                is_bigendian=0,
                step=480,
                data=bgr.reshape(-1),
            )
            writer.write(image_conn, t, store.serialize_ros1(image, Image.__msgtype__))
    output = tmp_path / "out"
    summary = bag.process_bag(
        path, output, bag.validate_parameters(bag.load_parameters_file(params_file)), show_progress=False
    )
    assert (summary.images_read, summary.frames_published) == (6, 6)
    assert summary.camera_info_topic == "/cam/camera_info" and not summary.rejected
    rgb = read_bag(output)["/page4d/rgb/image"]
    first = np.frombuffer(rgb[0][1].data.tobytes(), np.uint8).reshape(84, 112, 3)
    # bgr8 input is converted to RGB: the output's mean colour follows the RGB input, not the BGR bytes.
    mean_in = sequence.rgb[0].reshape(-1, 3).mean(0)
    assert np.argmax(first.reshape(-1, 3).mean(0)) == np.argmax(mean_in)


def test_bag_tool_reports_bad_arguments(input_bag, params_file, tmp_path, capsys):
    assert bag.main([str(tmp_path / "missing"), str(tmp_path / "o1"), "--params", str(params_file)]) == 2
    assert "does not exist" in capsys.readouterr().err
    existing = tmp_path / "exists"
    existing.mkdir()
    assert bag.main([str(input_bag), str(existing), "--params", str(params_file)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        bag.main([str(input_bag), str(tmp_path / "o2"), "--params", str(params_file), "-p", "window_size=0"])
        == 2
    )
    assert "window_size" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    args = [
        str(input_bag),
        str(tmp_path / "o3"),
        "--params",
        str(params_file),
        "-p",
        f"checkpoint_path={corrupt}",
    ]
    assert bag.main(args) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert (
        bag.main(
            [str(input_bag), str(tmp_path / "o4"), "--image-topic", "/nope", "--params", str(params_file)]
        )
        == 2
    )
    assert "/camera/image_raw" in capsys.readouterr().err


def test_bag_tool_skips_unusable_messages_and_keeps_going(params_file, sequence, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from page4d_ros.ros.messages import (
        RosbagsMessageFactory,
        build_camera_info,
        build_header,
        build_image,
        build_odometry,
    )

    store = get_typestore(Stores.ROS2_JAZZY)
    factory = RosbagsMessageFactory(store)
    path = tmp_path / "input"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=store)
            for topic, msgtype in (
                ("/cam/image_raw", "sensor_msgs/msg/Image"),
                ("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
                ("/odom", "nav_msgs/msg/Odometry"),
            )
        }

        def write(topic: str, message: object, stamp_ns: int) -> None:
            writer.write(connections[topic], stamp_ns, store.serialize_cdr(message, message.__msgtype__))

        for index in range(6):
            t = int(sequence.stamps_ns[index])
            header = build_header(factory, t, "cam_optical")
            write("/cam/camera_info", build_camera_info(factory, header, sequence.K[index], 160, 120), t)
            write("/cam/image_raw", build_image(factory, header, sequence.rgb[index], "rgb8"), t)
            odometry = build_odometry(factory, t, "odom", "base_link", np.eye(4), np.zeros(36))
            odometry.pose.pose.position.x = np.nan if index == 2 else 0.1 * index  # one is not finite
            write("/odom", odometry, t)
            if index == 2:  # and an image one pixel high comes between two frames
                t_thin = t + 1_000_000
                thin = np.ascontiguousarray(sequence.rgb[index][:1])
                header = build_header(factory, t_thin, "cam_optical")
                write("/cam/image_raw", build_image(factory, header, thin, "rgb8"), t_thin)
    settings = bag.validate_parameters({**bag.load_parameters_file(params_file), "scale_source": "odometry"})
    summary = bag.process_bag(path, tmp_path / "out", settings, odom_topic="/odom", show_progress=False)
    assert (summary.images_read, summary.frames_published) == (7, 6)
    assert dict(summary.rejected) == {"invalid_frame": 1, "bad_odometry": 1}


def write_camera_bag(path: Path, sequence, info_for, frames: int = 6, shrink: int = 1) -> None:
    """An MCAP bag of ``frames`` images (every ``shrink``-th pixel) and the CameraInfo ``info_for(index)``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from page4d_ros.ros.messages import RosbagsMessageFactory, build_header, build_image

    store = get_typestore(Stores.ROS2_JAZZY)
    factory = RosbagsMessageFactory(store)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_conn = writer.add_connection("/cam/image_rect", "sensor_msgs/msg/Image", typestore=store)
        info_conn = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for index in range(frames):
            t = int(sequence.stamps_ns[index])
            header = build_header(factory, t, "cam_optical")
            info = info_for(store, header, index)
            writer.write(info_conn, t, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            rgb = np.ascontiguousarray(sequence.rgb[index][::shrink, ::shrink])
            image = build_image(factory, header, rgb, "rgb8")
            writer.write(image_conn, t, store.serialize_cdr(image, "sensor_msgs/msg/Image"))


def camera_info(store, header, K, P, D, width, height, binning=0):
    """A rosbags CameraInfo with the given matrices (R identity, full-image roi)."""
    types = store.types
    return types["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.asarray(D, dtype=np.float64),
        k=np.asarray(K, dtype=np.float64).reshape(9),
        r=np.eye(3).reshape(9),
        p=np.asarray(P, dtype=np.float64).reshape(12),
        binning_x=binning,
        binning_y=binning,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def test_bag_tool_calibrates_rectified_binned_input_from_p_and_stamps_tf_static(
    params_file, sequence, tmp_path
):
    settings = bag.validate_parameters(bag.load_parameters_file(params_file))

    def rectified_binned(store, header, index):
        # A 2x2-binned stream of a 160x120 calibration: P is the rectified camera, K and D the raw one.
        K = sequence.K[index]
        K_raw = K * [[1.07], [1.07], [1.0]] + [[0, 0, 3.0], [0, 0, -2.0], [0, 0, 0]]
        P = np.hstack([K, np.zeros((3, 1))])
        return camera_info(store, header, K_raw, P, [-0.3, 0.1, 0.0, 0.0, 0.0], 160, 120, binning=2)

    def plain_quarter(store, header, index):
        # The same camera described directly at 80x60, as image_geometry scales it: fx / 2, cx / 2.
        K = sequence.K[index] * [[0.5], [0.5], [1.0]]
        return camera_info(store, header, K, np.hstack([K, np.zeros((3, 1))]), np.zeros(5), 80, 60)

    outputs = {}
    for name, info_for in (("binned", rectified_binned), ("plain", plain_quarter)):
        write_camera_bag(tmp_path / f"in_{name}", sequence, info_for, shrink=2)
        summary = bag.process_bag(tmp_path / f"in_{name}", tmp_path / name, settings, show_progress=False)
        assert summary.frames_published == 6 and not summary.rejected, (name, summary.rejected)
        outputs[name] = read_bag(tmp_path / name)
    binned_info = outputs["binned"]["/page4d/depth/camera_info"][0][1]
    plain_info = outputs["plain"]["/page4d/depth/camera_info"][0][1]
    np.testing.assert_allclose(binned_info.k, plain_info.k, rtol=1e-12)

    topics = outputs["binned"]
    first_stamp = int(sequence.stamps_ns[0])
    ((log_time, static),) = topics["/tf_static"]
    assert log_time == first_stamp and [stamp(t) for t in static.transforms] == [first_stamp]


def test_bag_tool_writes_each_stamps_tf_before_its_images(input_bag, params_file, tmp_path, monkeypatch):
    from rosbags.rosbag2 import Writer

    # The order of the writer's calls is the order in the file (a reader sorts by log time only).
    order: list[tuple[int, str]] = []
    write = Writer.write

    def recording_write(self, connection, timestamp, data):
        order.append((timestamp, connection.topic))
        return write(self, connection, timestamp, data)

    monkeypatch.setattr(Writer, "write", recording_write)
    output = tmp_path / "out"
    args = [str(input_bag), str(output), "--params", str(params_file), "-p", "require_metric_for_tf=false"]
    assert bag.main([*args, "--no-progress"]) == 0
    tf_stamps = sorted({t for t, topic in order if topic == "/tf"})
    assert len(tf_stamps) == FRAMES
    for stamp_ns in tf_stamps:
        topics = [topic for t, topic in order if t == stamp_ns]
        assert topics.index("/tf") < topics.index("/page4d/depth/image") < topics.index("/page4d/points")


@pytest.mark.parametrize("with_tf2", [True, False], ids=["tf2_chain", "hand_read_edge"])
def test_bag_tool_map_mode_follows_the_robot_odometry(params_file, sequence, tmp_path, monkeypatch, with_tf2):
    """With tf2_py: an odom -> base_footprint -> base_link chain; without (import hidden): one direct edge."""
    import sys

    if with_tf2:
        pytest.importorskip(
            "tf2_py", reason="tf2_py is not installed (setup_env.sh installs it from ../shared)"
        )
    else:
        monkeypatch.setitem(sys.modules, "tf2_py", None)  # import tf2_py raises ImportError, as without ROS
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from scipy.spatial.transform import Rotation

    from page4d_ros.ros.messages import (
        RosbagsMessageFactory,
        build_camera_info,
        build_header,
        build_image,
        build_tf_message,
        build_transform_stamped,
    )

    def rigid(yaw: float, xyz) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
        T[:3, 3] = xyz
        return T

    def robot(stamp_ns: int) -> np.ndarray:
        t = (stamp_ns - int(sequence.stamps_ns[0])) / 1e9
        return rigid(0.2 * t, [0.3 * t, 0.05 * t, 0.0])

    store = get_typestore(Stores.ROS2_JAZZY)
    factory = RosbagsMessageFactory(store)
    path = tmp_path / "input"
    T_footprint_link = rigid(0.0, [0.0, 0.0, 0.1]) if with_tf2 else np.eye(4)
    parent_of_base = "base_footprint" if with_tf2 else "base_link"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=store)
            for topic, msgtype in (
                ("/cam/image_raw", "sensor_msgs/msg/Image"),
                ("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
                ("/tf", "tf2_msgs/msg/TFMessage"),
                ("/tf_static", "tf2_msgs/msg/TFMessage"),
            )
        }

        def write(topic: str, message: object, stamp_ns: int) -> None:
            writer.write(connections[topic], stamp_ns, store.serialize_cdr(message, message.__msgtype__))

        start = int(sequence.stamps_ns[0])
        if with_tf2:
            static = build_transform_stamped(factory, start, "base_footprint", "base_link", T_footprint_link)
            write("/tf_static", build_tf_message(factory, [static]), start)
        for index in range(FRAMES):
            t = int(sequence.stamps_ns[index])
            for sample in (t - 30_000_000, t + 20_000_000):  # around the image: tf2 interpolates
                edge = build_transform_stamped(factory, sample, "odom", parent_of_base, robot(sample))
                write("/tf", build_tf_message(factory, [edge]), sample)
            header = build_header(factory, t, "cam_optical")
            write("/cam/camera_info", build_camera_info(factory, header, sequence.K[index], 160, 120), t)
            write("/cam/image_raw", build_image(factory, header, sequence.rgb[index], "rgb8"), t)
    tolerance_s = 0.2
    settings = bag.validate_parameters(
        {**bag.load_parameters_file(params_file), "tf_mode": "map", "transform_tolerance": tolerance_s}
    )
    summary = bag.process_bag(path, tmp_path / "out", settings, show_progress=False)
    assert summary.frames_published == FRAMES and not summary.rejected
    topics = read_bag(tmp_path / "out")
    map_odom = [t for _, m in topics["/tf"] for t in m.transforms]
    poses = [m for _, m in topics["/page4d/camera_pose"]]
    assert len(map_odom) == len(poses) == FRAMES
    assert {(t.header.frame_id, t.child_frame_id) for t in map_odom} == {("map", "odom")}
    T_base_optical = bag.conversions.xyz_rpy_to_matrix(
        settings["base_to_optical_xyz"], settings["base_to_optical_rpy"]
    )

    def matrix(translation, rotation) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat([rotation.x, rotation.y, rotation.z, rotation.w]).as_matrix()
        T[:3, 3] = [translation.x, translation.y, translation.z]
        return T

    for tf, pose in zip(map_odom, poses):
        assert stamp(tf) == stamp(pose) + int(tolerance_s * 1e9)
        T_map_odom = matrix(tf.transform.translation, tf.transform.rotation)
        expected = T_map_odom @ robot(stamp(pose)) @ T_footprint_link @ T_base_optical
        np.testing.assert_allclose(
            matrix(pose.pose.pose.position, pose.pose.pose.orientation), expected, atol=1e-6
        )
