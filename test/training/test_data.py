"""Ground-truth normalisation and deterministic window sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from page4d_ros.training.data import DataConfig, SequenceData, SequencePool, normalize_window, sample_batch


def _translation(x: float, y: float, z: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def test_normalize_window_hand_case() -> None:
    # 1x1 images, K = identity: the only pixel (0, 0) looks straight along the optical axis.
    T_world_cam = np.stack([_translation(5.0, 0.0, 0.0), _translation(6.0, 0.0, 0.0)])
    K = np.stack([np.eye(3), np.eye(3)])
    depth = np.full((2, 1, 1), 2.0)
    extrinsics, scaled_depth, points, valid, scale = normalize_window(T_world_cam, K, depth)
    # In the first camera's frame the points are (0, 0, 2) and (1, 0, 2): mean distance (2 + sqrt 5) / 2.
    expected_scale = (2.0 + math.sqrt(5.0)) / 2.0
    assert scale == pytest.approx(expected_scale)
    np.testing.assert_allclose(extrinsics[0], np.eye(4)[:3])
    # The second camera sits at x = 1 in first-camera coordinates: its translation is -1 / scale.
    np.testing.assert_allclose(extrinsics[1][:, :3], np.eye(3))
    np.testing.assert_allclose(extrinsics[1][:, 3], [-1.0 / expected_scale, 0.0, 0.0])
    np.testing.assert_allclose(points[0, 0, 0], [0.0, 0.0, 2.0 / expected_scale])
    np.testing.assert_allclose(points[1, 0, 0], [1.0 / expected_scale, 0.0, 2.0 / expected_scale])
    np.testing.assert_allclose(scaled_depth[:, 0, 0], [2.0 / expected_scale] * 2)
    assert valid.all()


def test_normalize_window_rotation_and_invalid_depth() -> None:
    # Second camera turned 90 degrees about the optical-frame y axis (looking along world +x).
    rotation = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    T1 = np.eye(4)
    T1[:3, :3] = rotation
    T_world_cam = np.stack([np.eye(4), T1])
    K = np.stack([np.eye(3), np.eye(3)])
    depth = np.array([[[4.0, 0.0]], [[4.0, 0.0]]])  # second pixel has no depth
    extrinsics, _, points, valid, scale = normalize_window(T_world_cam, K, depth)
    assert scale == pytest.approx(4.0)
    np.testing.assert_allclose(points[1, 0, 0], [1.0, 0.0, 0.0], atol=1e-12)  # (0,0,4) seen along world +x
    np.testing.assert_array_equal(valid[:, 0, 1], [False, False])
    np.testing.assert_array_equal(points[:, 0, 1], np.zeros((2, 3)))
    # Projecting the normalised point with the normalised extrinsic gives back the camera-frame point.
    camera_point = extrinsics[1][:, :3] @ points[1, 0, 0] + extrinsics[1][:, 3]
    np.testing.assert_allclose(camera_point, [0.0, 0.0, 1.0], atol=1e-12)


def _toy_sequence(frames: int, offset: float) -> SequenceData:
    rgb = np.full((frames, 4, 6, 3), int(offset) % 255, dtype=np.uint8)
    poses = np.stack([_translation(offset + index, 0.0, 0.0) for index in range(frames)])
    return SequenceData(
        rgb=rgb,
        depth=np.full((frames, 4, 6), 3.0, dtype=np.float32),
        dynamic_mask=np.zeros((frames, 4, 6), dtype=bool),
        T_world_cam=poses,
        K=np.array([[5.0, 0, 2.5], [0, 5.0, 1.5], [0, 0, 1]]),
    )


def test_sample_batch_is_deterministic_per_step() -> None:
    pool = SequencePool([_toy_sequence(10, 0.0), _toy_sequence(10, 50.0)])
    config = DataConfig(
        width=6, height=4, frames_per_sequence=10, min_frames=2, max_frames=5, max_stride=2, seed=3
    )
    first = sample_batch(pool, config, batch_size=3, step=7)
    again = sample_batch(pool, config, batch_size=3, step=7)
    for key in first:
        assert np.array_equal(first[key].numpy(), again[key].numpy()), key
    batch, frames = first["images"].shape[:2]
    assert batch == 3 and 2 <= frames <= 5
    assert first["images"].shape[2:] == (3, 4, 6)
    assert first["world_points"].shape == (3, frames, 4, 6, 3)
    np.testing.assert_allclose(
        first["extrinsics"][:, 0].numpy(), np.tile(np.eye(4)[:3], (3, 1, 1)), atol=1e-6
    )
    differs = any(
        not np.array_equal(
            first["extrinsics"].numpy(), sample_batch(pool, config, 3, step)["extrinsics"].numpy()
        )
        for step in range(8, 14)
    )
    assert differs


def test_sequence_data_cache_roundtrip(tmp_path) -> None:
    sequence = _toy_sequence(3, 1.0)
    sequence.save(tmp_path / "seq.npz")
    loaded = SequenceData.load(tmp_path / "seq.npz")
    for name in ("rgb", "depth", "dynamic_mask", "T_world_cam", "K"):
        assert np.array_equal(getattr(loaded, name), getattr(sequence, name)), name


def test_data_config_validation() -> None:
    with pytest.raises(ValueError, match="min_frames"):
        DataConfig(min_frames=5, max_frames=3)
    with pytest.raises(ValueError, match="frames_per_sequence"):
        DataConfig(frames_per_sequence=4, max_frames=8)
    with pytest.raises(ValueError, match="rgb"):
        SequenceData(
            rgb=np.zeros((2, 4, 4, 3), dtype=np.float32),
            depth=np.zeros((2, 4, 4), dtype=np.float32),
            dynamic_mask=np.zeros((2, 4, 4), dtype=bool),
            T_world_cam=np.tile(np.eye(4), (2, 1, 1)),
            K=np.eye(3),
        )
