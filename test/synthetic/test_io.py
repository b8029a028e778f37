"""Writers (MCAP, TUM, npz) and loaders (ours, TUM RGB-D, Bonn, MPI Sintel, DAVIS) on small hand-written
samples and the real DAVIS video in ``../shared``."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from page4d_ros.synthetic import (
    detect_format,
    load_davis,
    load_sequence,
    load_sintel,
    load_tum_rgbd,
    write_mcap,
    write_npz,
    write_tum,
)
from page4d_ros.synthetic.loaders import BONN_INTRINSICS, parse_stamp
from page4d_ros.synthetic.writers import TumSequenceWriter


def _assert_same(loaded, original, depth_tolerance=0.0):
    np.testing.assert_array_equal(loaded.rgb, original.rgb)
    np.testing.assert_allclose(loaded.depth, original.depth, atol=depth_tolerance, rtol=0)
    np.testing.assert_array_equal(loaded.dynamic_mask, original.dynamic_mask)
    np.testing.assert_array_equal(loaded.instance_ids, original.instance_ids)
    np.testing.assert_allclose(loaded.T_world_cam, original.T_world_cam, atol=1e-8)
    np.testing.assert_allclose(loaded.K, original.K, atol=1e-12)
    np.testing.assert_array_equal(loaded.stamps_ns, original.stamps_ns)
    assert loaded.frame_id == original.frame_id
    assert loaded.seed == original.seed and loaded.fps == original.fps
    assert loaded.camera_motion == original.camera_motion


def test_npz_round_trip_is_exact(small_sequence, tmp_path):
    path = write_npz(small_sequence, tmp_path / "seq")
    assert path.name == "seq.npz" and detect_format(path) == "npz"
    _assert_same(load_sequence(path), small_sequence)


def test_mcap_round_trip_and_message_contents(small_sequence, tmp_path):
    seq = small_sequence[:3]
    bag = write_mcap(seq, tmp_path / "bag")
    assert detect_format(bag) == "mcap"
    _assert_same(load_sequence(bag), seq)

    store = get_typestore(Stores.ROS2_JAZZY)
    seen: dict[str, list] = {}
    with Reader(bag) as reader:
        for connection, log_time, raw in reader.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            seen.setdefault(connection.topic, []).append((connection.msgtype, log_time, message))
    assert {topic: entries[0][0] for topic, entries in seen.items()} == {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/tf": "tf2_msgs/msg/TFMessage",
        "/ground_truth/depth": "sensor_msgs/msg/Image",
        "/ground_truth/dynamic_mask": "sensor_msgs/msg/Image",
        "/ground_truth/instance_ids": "sensor_msgs/msg/Image",
    }
    stamp = int(seq.stamps_ns[1])
    _, log_time, image = seen["/camera/image_raw"][1]
    assert log_time == stamp
    assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == stamp
    assert image.header.frame_id == "camera_optical_frame" and image.encoding == "rgb8"
    assert image.step == seq.width * 3
    np.testing.assert_array_equal(image.data.reshape(seq.height, seq.width, 3), seq.rgb[1])
    _, _, depth = seen["/ground_truth/depth"][1]
    assert depth.encoding == "32FC1"
    values = np.frombuffer(depth.data.tobytes(), "<f4").reshape(seq.height, seq.width)
    np.testing.assert_array_equal(values, seq.depth[1])
    _, _, mask = seen["/ground_truth/dynamic_mask"][1]
    assert mask.encoding == "mono8"
    assert set(np.unique(mask.data)) <= {0, 255}
    np.testing.assert_array_equal(mask.data.reshape(seq.height, seq.width) == 255, seq.dynamic_mask[1])
    _, _, tf = seen["/tf"][1]
    (transform,) = tf.transforms
    assert transform.header.frame_id == "gt_world" and transform.child_frame_id == "camera_optical_frame"
    translation = transform.transform.translation
    np.testing.assert_allclose([translation.x, translation.y, translation.z], seq.T_world_cam[1, :3, 3])
    rotation = transform.transform.rotation
    quaternion = [rotation.x, rotation.y, rotation.z, rotation.w]
    np.testing.assert_allclose(
        Rotation.from_quat(quaternion).as_matrix(), seq.T_world_cam[1, :3, :3], atol=1e-9
    )
    _, _, info = seen["/camera/camera_info"][1]
    np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), seq.K[1])
    assert (info.width, info.height) == (seq.width, seq.height)


def test_mcap_marks_missing_depth_as_nan(tmp_path):
    from page4d_ros.synthetic import generate_sequence

    seq = generate_sequence(4, 1, 48, 36, scene="outdoor", camera_motion="orbit")
    bag = write_mcap(seq, tmp_path / "bag")
    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == "/ground_truth/depth"]
        (_, _, raw), *_ = reader.messages(connections=connections)
    values = np.frombuffer(store.deserialize_cdr(raw, "sensor_msgs/msg/Image").data.tobytes(), "<f4")
    np.testing.assert_array_equal(np.isnan(values), seq.depth[0].ravel() == 0)
    with pytest.raises(FileExistsError):
        write_mcap(seq, bag)


def test_tum_folder_layout_and_round_trip(small_sequence, tmp_path):
    folder = write_tum(small_sequence, tmp_path / "tum")
    assert detect_format(folder) == "tum"
    for name in ("rgb", "depth", "masks", "instances"):
        assert (folder / f"{name}.txt").is_file()
    lines = [
        line for line in (folder / "groundtruth.txt").read_text().splitlines() if not line.startswith("#")
    ]
    assert len(lines) == 6 and all(len(line.split()) == 8 for line in lines)
    assert lines[1].split()[0] == "1700000000.033333333"
    depth_png = np.array(Image.open(folder / "depth" / "1700000000.033333333.png"))
    assert depth_png.dtype == np.uint16
    np.testing.assert_array_equal(depth_png, np.rint(small_sequence.depth[1] * 5000).astype(np.uint16))
    # 16-bit depth at 1/5000 m: quantisation error at most 0.1 mm (plus float32 rounding of ~1e-6 m).
    _assert_same(load_sequence(folder), small_sequence, depth_tolerance=1.02e-4)


def test_tum_writer_appends_chunks(small_sequence, tmp_path):
    writer = TumSequenceWriter(tmp_path / "chunks")
    writer.append(small_sequence[:2])
    writer.append(small_sequence[2:])
    folder = writer.close()
    _assert_same(load_sequence(folder), small_sequence, depth_tolerance=1.02e-4)


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_real_tum(folder, rgb_times, depth_times, gt_times):
    """A TUM RGB-D sample in the benchmark layout: 6-decimal stamps, unsynchronised streams, 100 Hz poses."""
    rng = np.random.default_rng(0)
    rgb_lines, depth_lines, gt_lines = ["# color images"], ["# depth maps"], ["# ground truth trajectory"]
    for t in rgb_times:
        _write_png(folder / "rgb" / f"{t:.6f}.png", rng.integers(0, 255, (4, 6, 3), dtype=np.uint8))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    for index, t in enumerate(depth_times):
        _write_png(folder / "depth" / f"{t:.6f}.png", np.full((4, 6), 5000 * (index + 1), dtype=np.uint16))
        depth_lines.append(f"{t:.6f} depth/{t:.6f}.png")
    for t in gt_times:
        # The camera moves along x at 1 m/s and turns about z at 0.5 rad/s (world frame of the mocap system).
        q = Rotation.from_rotvec([0, 0, 0.5 * (t - gt_times[0])]).as_quat()
        gt_lines.append(
            f"{t:.4f} {t - gt_times[0]:.4f} 0.0000 1.5000 {q[0]:.6f} {q[1]:.6f} {q[2]:.6f} {q[3]:.6f}"
        )
    (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (folder / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")


def test_load_real_tum_layout_associates_and_interpolates(tmp_path):
    folder = tmp_path / "rgbd_dataset_freiburg1_xyz"
    base = 1305031102.0
    rgb_times = [base + 0.105, base + 0.205, base + 0.305, base + 0.505]
    depth_times = [base + 0.110, base + 0.199, base + 0.350, base + 0.507]
    gt_times = [base + 0.01 * i for i in range(45)]  # poses up to base + 0.44
    _write_real_tum(folder, rgb_times, depth_times, gt_times)
    seq = load_tum_rgbd(folder)
    # rgb 0.305 has no depth within 20 ms (nearest 0.350); rgb 0.505 is past the trajectory's end.
    assert len(seq) == 2
    np.testing.assert_array_equal(seq.stamps_ns, [1305031102105000000, 1305031102205000000])
    np.testing.assert_allclose(seq.depth[:, 0, 0], [1.0, 2.0])
    # Interpolated between samples: x = t - t0, yaw = 0.5 (t - t0).
    np.testing.assert_allclose(seq.T_world_cam[:, 0, 3], [0.105, 0.205], atol=1e-6)
    yaw = Rotation.from_matrix(seq.T_world_cam[:, :3, :3]).as_rotvec()[:, 2]
    np.testing.assert_allclose(yaw, [0.0525, 0.1025], atol=1e-5)
    # freiburg1 intrinsics from the folder name.
    np.testing.assert_allclose(seq.K[0], [[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])
    assert seq.dynamic_mask is None and seq.rgb.shape == (2, 4, 6, 3)
    assert len(load_tum_rgbd(folder, stride=2)) == 1


def test_load_bonn_layout_uses_bonn_intrinsics(tmp_path):
    folder = tmp_path / "rgbd_bonn_balloon"
    base = 1548266469.0
    _write_real_tum(
        folder, [base + 0.1, base + 0.2], [base + 0.1, base + 0.2], [base + 0.05 * i for i in range(8)]
    )
    assert detect_format(folder) == "bonn"
    seq = load_sequence(folder)
    fx, fy, cx, cy = BONN_INTRINSICS
    np.testing.assert_allclose(seq.K[0], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    assert seq.metadata["source_format"] == "bonn" and len(seq) == 2


def _write_sintel_frame(root, scene, name, depth, M, N, rgb, mask):
    tag = struct.pack("<f", 202021.25)
    (root / "training" / "depth" / scene).mkdir(parents=True, exist_ok=True)
    (root / "training" / "camdata_left" / scene).mkdir(parents=True, exist_ok=True)
    height, width = depth.shape
    dpt = tag + struct.pack("<ii", width, height) + depth.astype("<f4").tobytes()
    (root / "training" / "depth" / scene / f"{name}.dpt").write_bytes(dpt)
    cam = tag + M.astype("<f8").tobytes() + N.astype("<f8").tobytes()
    (root / "training" / "camdata_left" / scene / f"{name}.cam").write_bytes(cam)
    _write_png(root / "training" / "final" / scene / f"{name}.png", rgb)
    _write_png(root / "training" / "dynamic_label_perfect" / scene / f"{name}.png", mask)


def test_load_sintel_layout(tmp_path):
    root = tmp_path / "MPI-Sintel"
    M = np.array([[688.0, 0, 511.5], [0, 688.0, 217.5], [0, 0, 1]])
    for index in range(3):
        # Camera-from-world: camera centre at x = index metres, no rotation, so N = [I | -c].
        N = np.hstack([np.eye(3), [[-float(index)], [0.0], [0.0]]])
        depth = np.full((2, 3), 10.0 + index, dtype=np.float32)
        mask = np.zeros((2, 3), dtype=np.uint8)
        mask[0, index] = 255
        _write_sintel_frame(
            root, "alley_1", f"frame_{index + 1:04d}", depth, M, N, np.full((2, 3, 3), index, np.uint8), mask
        )
    assert detect_format(root) == "sintel"
    seq = load_sintel(root)
    assert len(seq) == 3 and seq.scene == "sintel/alley_1"
    np.testing.assert_allclose(seq.T_world_cam[:, :3, 3], [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    np.testing.assert_allclose(seq.K[1], M)
    np.testing.assert_allclose(seq.depth[2], 12.0)
    assert seq.dynamic_mask[1, 0, 1] and seq.dynamic_mask.sum() == 3
    np.testing.assert_array_equal(np.diff(seq.stamps_ns), [41_666_667, 41_666_666])
    with pytest.raises(ValueError, match="not found"):
        load_sintel(root, "market_2")
    # A subsampled scene keeps the frames' own times (frame 2 at 2/24 s).
    np.testing.assert_array_equal(np.diff(load_sintel(root, start=0, stride=2).stamps_ns), [83_333_333])


def test_load_davis_layout(tmp_path):
    root = tmp_path / "DAVIS"
    for index in range(3):
        image = np.full((4, 6, 3), 40 * index, np.uint8)
        path = root / "JPEGImages" / "480p" / "bear" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=100)
        # DAVIS 2017 style: a palette PNG of object ids (0 background, 1 and 2 two objects).
        ids = np.zeros((4, 6), np.uint8)
        ids[0, index] = 1
        ids[3, 5] = 2
        annotation = Image.fromarray(ids, mode="P")
        annotation.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
        (root / "Annotations" / "480p" / "bear").mkdir(parents=True, exist_ok=True)
        annotation.save(root / "Annotations" / "480p" / "bear" / f"{index:05d}.png")
    (root / "JPEGImages" / "480p" / "camel").mkdir()
    assert detect_format(root) == "davis"
    with pytest.raises(ValueError, match="name one with scene"):
        load_sequence(root)
    seq = load_sequence(root, scene="bear", stride=2)
    assert len(seq) == 2 and seq.scene == "davis/bear" and seq.metadata["frames"] == ["00000", "00002"]
    assert seq.rgb.shape == (2, 4, 6, 3) and abs(int(seq.rgb[1].mean()) - 80) <= 2
    assert seq.dynamic_mask.sum() == 4 and seq.dynamic_mask[1, 0, 2] and seq.dynamic_mask[1, 3, 5]
    assert seq.depth is None and seq.K is None and np.isnan(seq.T_world_cam).all()
    np.testing.assert_array_equal(np.diff(seq.stamps_ns), [83_333_333])
    with pytest.raises(ValueError, match="no frames selected"):
        load_davis(root, "camel")
    with pytest.raises(ValueError, match="not a DAVIS folder"):
        load_davis(root, "bear", resolution="Full-Resolution")


def test_load_real_davis_video(shared_dir):
    seq = load_sequence(shared_dir / "data" / "davis_car_shadow")
    assert len(seq) == 40 and seq.rgb.shape == (40, 480, 854, 3) and seq.scene == "davis/car-shadow"
    # The annotated car covers a few percent of every frame and moves across the image (80 px, with the pan).
    coverage = seq.dynamic_mask.mean(axis=(1, 2))
    assert (coverage > 0.005).all() and (coverage < 0.5).all()
    columns = [np.nonzero(mask.any(axis=0))[0].mean() for mask in seq.dynamic_mask]
    assert abs(columns[-1] - columns[0]) > 40


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_sequence(tmp_path)
    with pytest.raises(ValueError, match="not a timestamp"):
        parse_stamp("12:30")
    assert parse_stamp("1305031102.175304") == 1305031102175304000
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "rgb.txt").write_text("0.1 rgb/a.png\n")
    (bad / "depth.txt").write_text("0.1 depth/a.png\n")
    (bad / "groundtruth.txt").write_text("0.1 1 2 3\n")
    with pytest.raises(ValueError, match="tx ty tz qx qy qz qw"):
        load_sequence(bad)
    not_a_dpt = tmp_path / "x.dpt"
    not_a_dpt.write_bytes(b"\0" * 16)
    from page4d_ros.synthetic.loaders import read_sintel_depth

    with pytest.raises(ValueError, match="wrong tag"):
        read_sintel_depth(not_a_dpt)


def test_image_decoding_handles_bgr_padding_and_big_endian():
    from types import SimpleNamespace

    from page4d_ros.synthetic.bagio import image_to_array

    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), dtype=np.uint8)  # 9 bytes of pixels + 3 bytes of row padding
    padded[:, :9] = pixels[..., ::-1].reshape(2, 9)
    message = SimpleNamespace(
        encoding="bgr8", is_bigendian=0, height=2, width=3, step=12, data=padded.ravel()
    )
    np.testing.assert_array_equal(image_to_array(message), pixels)
    depth = np.array([[1000, 2000]], dtype=">u2")
    message = SimpleNamespace(
        encoding="16UC1",
        is_bigendian=1,
        height=1,
        width=2,
        step=4,
        data=np.frombuffer(depth.tobytes(), np.uint8),
    )
    np.testing.assert_array_equal(image_to_array(message), [[1000, 2000]])
    with pytest.raises(ValueError, match="too short"):
        image_to_array(
            SimpleNamespace(encoding="mono8", is_bigendian=0, height=4, width=4, step=4, data=np.zeros(3))
        )
    with pytest.raises(ValueError, match="unsupported"):
        image_to_array(
            SimpleNamespace(encoding="yuv422", is_bigendian=0, height=1, width=1, step=2, data=np.zeros(2))
        )
