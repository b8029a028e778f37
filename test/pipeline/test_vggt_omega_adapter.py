"""The VGGT-Omega pipeline adapter: the family's size rule in ``plan_resize``, the predictor's conversion on
the upstream reference fixture, and a small random VGGT-Omega streamed through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from page4d_ros.pipeline import ModelPredictor, StreamingPipeline, plan_resize

model_package = pytest.importorskip("page4d_ros.model", reason="the network package is not importable")
from page4d_ros.model.vggt_omega import BalancedSize  # noqa: E402


def test_size_rule_replaces_long_side_with_exact_intrinsics():
    plan = plan_resize(640, 480, 518, "crop", size_rule=BalancedSize(512))
    assert (plan.network_width, plan.network_height) == (592, 448)
    assert (plan.resized_width, plan.resized_height, plan.offset_x, plan.offset_y) == (592, 448, 0, 0)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    K_net = plan.intrinsics_to_network(K)
    # fx * 592 / 640; the centre pixel of the source maps to the centre pixel of the network image.
    np.testing.assert_allclose(K_net, [[462.5, 0, 295.5], [0, 500 * 448 / 480, 223.5], [0, 0, 1]])

    wide = plan_resize(1000, 300, size_rule=BalancedSize(512))  # H/W 0.3: the centred 600 x 300 is kept
    assert (wide.network_width, wide.network_height) == (720, 368)
    assert (wide.resized_width, wide.resized_height, wide.offset_x, wide.offset_y) == (1200, 368, -240, 0)
    centre = wide.source_to_network_matrix() @ np.array([499.5, 149.5, 1.0])
    np.testing.assert_allclose(centre[:2], [359.5, 183.5])


@pytest.fixture(scope="module")
def omega_ref(shared_dir: Path) -> dict:
    path = shared_dir / "reference" / "vggt_omega_small_ref.pt"
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is absent")
    return torch.load(path, weights_only=False)


def _rel(actual: np.ndarray, expected: torch.Tensor) -> float:
    reference = expected.double().numpy()
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


def test_predictor_gives_the_upstream_cameras_and_depth(omega_ref):
    model = model_package.build_model({"family": "vggt-omega", **omega_ref["config"]})
    model.load_state_dict(omega_ref["state_dict"], strict=True)
    predictor = ModelPredictor(model)
    assert not predictor.has_dynamics_map
    assert predictor.size_rule == BalancedSize(256, 16)  # the text checkpoint's resolution
    images = omega_ref["inputs"][0].float().numpy()
    prediction = predictor.predict(images, np.arange(images.shape[0], dtype=np.int64))
    prediction.validate(3, 128, 160)
    reference = omega_ref["outputs_fp64"]
    assert prediction.dynamics is None
    # float32 network against the upstream float64 run (its own fp32 spread is ~1e-6).
    assert _rel(prediction.extrinsics, reference["derived.extrinsics"][0]) < 1e-5
    assert _rel(prediction.intrinsics, reference["derived.intrinsics"][0]) < 1e-5
    assert _rel(prediction.depth, reference["depth"][0, ..., 0]) < 1e-5
    assert _rel(prediction.depth_conf, reference["depth_conf"][0]) < 1e-5
    assert prediction.depth_conf.min() >= 1.0  # 1 + exp: the scale conf_threshold (default 1) expects


@pytest.mark.parametrize("calibrated", [True, False])
def test_tiny_random_vggt_omega_streams_through_the_pipeline(
    walk_sequence, oracle_config, frames_of, tiny_omega_config, calibrated
):
    torch.manual_seed(0)
    model = model_package.build_model(tiny_omega_config)
    predictor = ModelPredictor(model)
    config = oracle_config(window_size=4, window_stride=2)
    pipeline = StreamingPipeline(config, predictor)
    frames = frames_of(walk_sequence, calibrated=calibrated)[:6]
    results = []
    for frame in frames:
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    assert [r.stamp_ns for r in results] == list(walk_sequence.stamps_ns[:6])
    # 160 x 120 at resolution 96: n = 36 patches, wp = round(6.93) = 7, hp = round(5.20) = 5.
    for result in results:
        assert (result.width, result.height) == (112, 80)
        assert result.depth.shape == result.confidence.shape == result.dynamic_mask.shape == (80, 112)
        assert result.rgb.shape == (80, 112, 3)
        assert np.isfinite(result.T_world_cam).all() and np.isfinite(result.K).all()
        assert result.points.shape[0] > 0 and np.isfinite(result.points).all()
        assert set(np.unique(result.dynamic_mask)) <= {0, 255}
        assert result.intrinsics_source == ("calibration" if calibrated else "predicted")
        if not calibrated:  # the network's principal point: the centre of the 112 x 80 network image
            np.testing.assert_allclose(result.K[:2, 2], [56.0, 40.0])
        else:  # the calibration, resized by 112/160 and 80/120
            expected = plan_resize(160, 120, size_rule=BalancedSize(96)).intrinsics_to_output(
                walk_sequence.K[0]
            )
            np.testing.assert_allclose(result.K, expected)
    assert pipeline.stats.windows >= 2 and pipeline.stats.frames_out == 6


def test_without_a_dynamics_head_masks_come_from_the_geometric_test_only(
    walk_sequence, oracle_config, frames_of, tiny_omega_config
):
    torch.manual_seed(0)
    predictor = ModelPredictor(model_package.build_model(tiny_omega_config))
    results = {}
    for geometric in (False, True):
        config = oracle_config(window_size=4, window_stride=2, mask_geometric=geometric)
        pipeline = StreamingPipeline(config, predictor)
        outputs = [r for frame in frames_of(walk_sequence)[:6] for r in pipeline.push(frame)]
        results[geometric] = outputs + pipeline.flush()
    assert len(results[False]) == len(results[True]) == 6
    assert all(not r.dynamic_mask.any() and not r.point_is_dynamic.any() for r in results[False])
    # The geometric test alone flags pixels (random depth is inconsistent across views).
    assert any(r.dynamic_mask.any() for r in results[True])
