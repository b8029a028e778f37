"""The drop-oldest queue, CameraInfo pairing, diagnostics statistics and the ~/save file writers."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from page4d_ros.pipeline.types import CameraCalibration
from page4d_ros.ros import diagnostics
from page4d_ros.ros.export import MapAccumulator, write_ply, write_tum
from page4d_ros.ros.scheduling import CameraInfoCache, DropOldestQueue, calibration_from_camera_info

K = np.array([[50.0, 0.0, 15.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]])


def test_queue_drops_the_oldest_and_counts():
    queue: DropOldestQueue[int] = DropOldestQueue(2)
    assert queue.put(1) and queue.put(2)
    assert not queue.put(3)
    assert (queue.dropped, queue.enqueued, len(queue)) == (1, 3, 2)
    assert queue.get(0.0) == 2 and queue.get(0.0) == 3 and queue.get(0.01) is None
    with pytest.raises(ValueError):
        DropOldestQueue(0)


def test_queue_get_wakes_up_on_put():
    queue: DropOldestQueue[str] = DropOldestQueue(1)
    timer = threading.Timer(0.05, queue.put, args=("frame",))
    timer.start()
    assert queue.get(5.0) == "frame"
    timer.join()


def test_camera_info_pairing():
    first, second = CameraCalibration(K, 32, 24), CameraCalibration(2 * K * [[1], [1], [0.5]], 64, 48)
    latest = CameraInfoCache("latest")
    assert latest.lookup("cam", 0) is None and not latest.has_any()
    latest.add("cam", 100, first)
    latest.add("cam", 50, second)  # older stamp, arrived later: "latest" means newest stamp
    assert latest.lookup("cam", 10**12) is first and latest.lookup("other", 100) is None

    synced = CameraInfoCache("synchronized", slop_ns=10)
    synced.add("cam", 100, first)
    synced.add("cam", 200, second)
    assert synced.lookup("cam", 105) is first and synced.lookup("cam", 195) is second
    assert synced.lookup("cam", 150) is None
    with pytest.raises(ValueError):
        CameraInfoCache("exact")


def test_calibration_from_camera_info():
    msg = SimpleNamespace(
        k=K.reshape(-1),
        p=np.zeros(12),
        width=32,
        height=24,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        binning_x=0,
        binning_y=0,
        roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0),
    )
    calibration = calibration_from_camera_info(msg)
    np.testing.assert_array_equal(calibration.K, K)
    assert (calibration.width, calibration.height) == (32, 24)
    with pytest.raises(ValueError, match="uncalibrated"):
        calibration_from_camera_info(SimpleNamespace(**{**vars(msg), "k": [0.0] * 9}))


def test_rate_percentiles_and_problem_log():
    meter = diagnostics.RateMeter(window_s=1.0)
    for i in range(11):
        meter.tick(i * 100_000_000)  # 10 Hz for 1 s
    assert meter.rate(1_000_000_000) == pytest.approx(10.0)
    assert meter.rate(10_000_000_000) == 0.0  # window expired

    window = diagnostics.PercentileWindow(size=100)
    assert np.isnan(window.summary()["p50"])
    for value in range(1, 101):
        window.add(value)
    summary = window.summary()
    assert (
        summary["p50"] == pytest.approx(50.5)
        and summary["max"] == 100
        and summary["p95"] == pytest.approx(95.05)
    )

    log = diagnostics.ProblemLog()
    log.report("encoding", "bad")
    log.report("encoding", "bad again")
    assert log.new_since_last_call() == {"encoding": 2} and log.new_since_last_call() == {}
    log.report("step", "short")
    assert log.new_since_last_call() == {"step": 1} and log.total() == 3
    assert log.last_message == "step: short"

    record = diagnostics.StatusRecord("x")
    record.escalate(diagnostics.WARN, "slow")
    record.escalate(diagnostics.ERROR, "broken")
    record.escalate(diagnostics.WARN, "late")
    assert record.level == diagnostics.ERROR and record.message == "broken; slow; late"


def test_map_accumulator_transforms_and_thins():
    accumulator = MapAccumulator(max_points=4, voxel_size=1.0)
    T = np.eye(4)
    T[:3, 3] = [10.0, 0.0, 0.0]
    accumulator.add(T, np.array([[0.0, 0.0, 1.0], [0.1, 0.1, 1.1]], np.float32), np.zeros((2, 3), np.uint8))
    points, _ = accumulator.snapshot()
    np.testing.assert_allclose(points, [[10.0, 0.0, 1.0], [10.1, 0.1, 1.1]], atol=1e-6)
    far = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 9.0], [0.0, 0.0, 13.0]], np.float32)
    accumulator.add(np.eye(4), far, np.full((3, 3), 200, np.uint8))
    points, colors = accumulator.snapshot()
    assert len(accumulator) == 4 and points.shape == (4, 3)  # the two near points share one voxel
    assert colors.shape == (4, 3)
    accumulator.clear()
    assert len(accumulator) == 0 and accumulator.snapshot()[0].shape == (0, 3)


def test_ply_and_tum_files(tmp_path: Path):
    points = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    write_ply(tmp_path / "map.ply", points, colors)
    data = (tmp_path / "map.ply").read_bytes()
    header, body = data.split(b"end_header\n")
    assert b"element vertex 2" in header and len(body) == 2 * 15
    records = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    np.testing.assert_array_equal(records["xyz"], points)
    np.testing.assert_array_equal(records["rgb"], colors)

    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 3.0]
    write_tum(tmp_path / "traj.tum", [(1_700_000_000_500_000_000, T)])
    line = (tmp_path / "traj.tum").read_text().split()
    assert line[0] == "1700000000.500000000"
    np.testing.assert_allclose([float(v) for v in line[1:]], [1, 2, 3, 0, 0, 0, 1])

    # Several poses: each line gives back its matrix, with the quaternion's w made non-negative.
    rotations = Rotation.from_rotvec([[0.0, 0.0, 0.3], [0.0, 0.0, 5.0], [1.0, -2.0, 0.5]]).as_matrix()
    poses = []
    for index, rotation in enumerate(rotations):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, [index, -index, 0.5]
        poses.append((1_700_000_000_000_000_000 + index * 100_000_000, pose))
    write_tum(tmp_path / "three.tum", poses)
    rows = np.loadtxt(tmp_path / "three.tum")
    np.testing.assert_allclose(rows[:, 0], [1_700_000_000.0, 1_700_000_000.1, 1_700_000_000.2])
    assert np.all(rows[:, 7] >= 0)
    for row, (_, pose) in zip(rows, poses):
        np.testing.assert_allclose(row[1:4], pose[:3, 3], atol=1e-9)
        np.testing.assert_allclose(Rotation.from_quat(row[4:]).as_matrix(), pose[:3, :3], atol=1e-8)
    write_tum(tmp_path / "empty.tum", [])
    assert (tmp_path / "empty.tum").read_text() == ""
