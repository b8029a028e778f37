"""π³ adapter: focal estimation on synthetic point maps with known K, output conversion, the real pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from page4d_ros.model import build_model
from page4d_ros.model.pi3 import Pi3SizeRule
from page4d_ros.pipeline import ModelPredictor, StreamingPipeline
from page4d_ros.pipeline.pi3_adapter import (
    confidence_from_logits,
    estimate_focal,
    relative_extrinsics,
    window_prediction,
)
from page4d_ros.pipeline.preprocess import plan_resize


def _point_maps(K: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Exact camera-frame points of every pixel for intrinsics K and z-depth maps [S, H, W]."""
    height, width = depth.shape[-2:]
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return np.stack([x * depth, y * depth, depth], axis=-1)


@pytest.mark.parametrize(("focal", "height", "width"), [(90.0, 84, 112), (250.0, 84, 112), (600.0, 434, 574)])
def test_focal_is_recovered_from_noisy_point_maps_with_outliers(focal, height, width):
    """The last case is a full-size π³ window (pixel budget 255000 at 4:3): the fit then subsamples."""
    rng = np.random.default_rng(int(focal))
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    depth = rng.uniform(1.0, 6.0, size=(3, height, width))
    points = _point_maps(K, depth)
    points *= 1.0 + rng.normal(0.0, 0.01, size=points.shape)  # 1 % noise on every coordinate
    outliers = rng.random(points.shape[:3]) < 0.1  # 10 % garbage pixels
    points[outliers] = rng.uniform(-5.0, 5.0, size=(int(outliers.sum()), 3)) + np.array([0, 0, 6.0])
    points[0, 0, 0] = [np.nan, 0.0, 1.0]
    points[0, 0, 1] = [0.1, 0.2, -1.0]
    # Plain least squares lands at 15-50 px here (the outliers dominate); the robust fit is within 0.5 %.
    assert estimate_focal(points) == pytest.approx(focal, rel=0.005)
    clean = estimate_focal(_point_maps(K, depth))
    assert clean == pytest.approx(focal, rel=1e-9)


def test_weights_discount_bad_pixels():
    height, width = 42, 56
    K = np.array([[100.0, 0, (width - 1) / 2], [0, 100.0, (height - 1) / 2], [0, 0, 1]])
    points = _point_maps(K, np.full((1, height, width), 2.0))
    bad = np.zeros((1, height, width), dtype=bool)
    bad[:, :, : width // 2] = True
    points[bad] *= [2.0, 2.0, 1.0]  # half the image says f = 50
    weights = np.where(bad, 0.0, 1.0)
    assert estimate_focal(points, weights) == pytest.approx(100.0, rel=1e-9)
    # Degenerate maps (every ray straight ahead, or pointing the wrong way) stay at a plausible field of view.
    flat = points.copy()
    flat[..., :2] *= -1.0
    assert estimate_focal(flat) == pytest.approx(28.0 / np.tan(np.radians(85.0)))
    with pytest.raises(ValueError, match="weights must have"):
        estimate_focal(points, weights[:, :10])
    with pytest.raises(ValueError, match="fewer than two"):
        estimate_focal(np.full((1, 4, 4, 3), np.nan))


def test_window_prediction_converts_poses_depth_and_confidence():
    rng = np.random.default_rng(3)
    frames, height, width, focal = 3, 28, 42, 40.0
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    depth = rng.uniform(1.0, 3.0, size=(frames, height, width))
    local = _point_maps(K, depth)
    poses = np.tile(np.eye(4), (frames, 1, 1))
    poses[:, :3, :3] = Rotation.random(frames, random_state=4).as_matrix()
    poses[:, :3, 3] = rng.normal(size=(frames, 3))
    logits = rng.normal(0.0, 3.0, size=(frames, height, width, 1))
    logits[0, 0, 0, 0] = 500.0
    outputs = {
        "local_points": torch.from_numpy(local)[None].float(),
        "conf": torch.from_numpy(logits)[None].float(),
        "camera_poses": torch.from_numpy(poses)[None].float(),
    }
    prediction = window_prediction(outputs)
    prediction.validate(frames, height, width)
    assert prediction.dynamics is None
    np.testing.assert_allclose(prediction.depth, depth, rtol=1e-6)
    np.testing.assert_allclose(prediction.intrinsics[:, 0, 0], focal, rtol=1e-3)
    np.testing.assert_allclose(prediction.intrinsics[:, :2, 2], [[(width - 1) / 2, (height - 1) / 2]] * 3)
    # Camera 0 is the world; a world point seen by camera i is the same point seen by camera 0.
    np.testing.assert_allclose(prediction.extrinsics[0], np.eye(4)[:3], atol=1e-6)
    world_in_0 = np.linalg.inv(poses[0]) @ poses[2] @ np.append(local[2, 5, 7], 1.0)
    in_cam_2 = prediction.extrinsics[2] @ world_in_0
    np.testing.assert_allclose(in_cam_2, local[2, 5, 7], atol=1e-5)
    expected_conf = 1.0 + np.exp(logits[1, 3, 4, 0])
    assert prediction.depth_conf[1, 3, 4] == pytest.approx(expected_conf, rel=1e-6)
    assert np.isfinite(prediction.depth_conf).all() and prediction.depth_conf.min() >= 1.0
    # sigmoid(logit) > 0.1 (upstream's filter) <=> confidence > 1 + 1/9
    assert confidence_from_logits(np.array([np.log(0.1 / 0.9)]))[0] == pytest.approx(1.0 + 1.0 / 9.0)
    calibrated = np.tile(np.array([[55.0, 0, 20], [0, 56.0, 13], [0, 0, 1]]), (frames, 1, 1))
    np.testing.assert_array_equal(window_prediction(outputs, calibrated).intrinsics, calibrated)


def test_relative_extrinsics_of_a_known_motion():
    first = np.eye(4)
    second = np.eye(4)
    second[:3, 3] = [1.0, 0.0, 0.0]  # camera 1 one unit to the right of camera 0
    extrinsics = relative_extrinsics(np.stack([first, second]))
    np.testing.assert_allclose(extrinsics[1], [[1, 0, 0, -1], [0, 1, 0, 0], [0, 0, 1, 0]])


def test_plan_resize_with_the_pi3_rule_is_a_plain_resize():
    plan = plan_resize(640, 480, 518, "crop", size_rule=Pi3SizeRule())
    assert (plan.network_width, plan.network_height) == (574, 434)
    assert (plan.output_width, plan.output_height) == (574, 434)
    assert (plan.offset_x, plan.offset_y, plan.output_x0, plan.output_y0) == (0, 0, 0, 0)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(plan.intrinsics_to_output(K)[:2, 2], [286.5, 216.5])


@pytest.fixture
def tiny_pi3_predictor(tiny_pi3_config) -> ModelPredictor:
    """A ModelPredictor around a tiny random π³ whose checkpoint settings give a 4000-pixel budget."""
    torch.manual_seed(0)
    return ModelPredictor(build_model(tiny_pi3_config), inference={"pixel_limit": 4000})


def test_model_predictor_dispatches_to_the_adapter(tiny_pi3_predictor):
    predictor = tiny_pi3_predictor
    assert predictor.family == "pi3" and predictor.uses_calibration and not predictor.has_dynamics_map
    assert predictor.size_rule == Pi3SizeRule(pixel_limit=4000)
    images = np.random.default_rng(0).random((3, 3, 42, 70), dtype=np.float32)
    prediction = predictor.predict(images, np.arange(3))
    prediction.validate(3, 42, 70)
    assert prediction.dynamics is None and prediction.intrinsics[0, 0, 0] > 0


@pytest.mark.parametrize("calibrated", [True, False])
def test_tiny_random_pi3_runs_through_the_pipeline(
    walk_sequence, oracle_config, frames_of, calibrated, tiny_pi3_predictor
):
    predictor = tiny_pi3_predictor
    config = oracle_config(window_size=4, window_stride=2)
    pipeline = StreamingPipeline(config, predictor)
    results = []
    for frame in frames_of(walk_sequence, calibrated)[:8]:
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    assert [r.stamp_ns for r in results] == list(walk_sequence.stamps_ns[:8])
    # 160x120 within 4000 pixels: s = 0.456, k = round(5.22) = 5, m = round(3.91) = 4 -> 70 x 56 (3920 px).
    expected_K = plan_resize(160, 120, size_rule=Pi3SizeRule(4000)).intrinsics_to_output(walk_sequence.K[0])
    for result in results:
        assert (result.width, result.height) == (70, 56)
        assert result.depth.shape == (56, 70) and np.isfinite(result.depth).any()
        assert result.dynamic_mask.shape == (56, 70)
        assert np.isfinite(result.T_world_cam).all()
        assert result.intrinsics_source == ("calibration" if calibrated else "predicted")
        if calibrated:
            np.testing.assert_allclose(result.K, expected_K)
            np.testing.assert_allclose(result.K_predicted, expected_K)
        else:
            assert result.K[0, 0] == result.K[1, 1] > 0
            np.testing.assert_allclose(result.K[:2, 2], [34.5, 27.5])
    assert pipeline.stats.windows >= 3


def test_without_a_dynamics_head_masks_come_from_the_geometric_stage_alone(
    walk_sequence, oracle_config, frames_of, tiny_pi3_predictor
):
    """π³ has no dynamics map: with the geometric test off nothing is dynamic, and nothing fails."""
    predictor = tiny_pi3_predictor
    pipeline = StreamingPipeline(
        oracle_config(window_size=4, window_stride=2, mask_geometric=False), predictor
    )
    results = []
    for frame in frames_of(walk_sequence)[:6]:
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    assert len(results) == 6
    assert all(not result.dynamic_mask.any() and not result.point_is_dynamic.any() for result in results)
