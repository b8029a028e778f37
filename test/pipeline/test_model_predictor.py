"""``ModelPredictor`` with the real network code: a tiny random PAGE-4D end to end, and sign normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from page4d_ros.pipeline import ModelPredictor, StreamingPipeline
from page4d_ros.pipeline.predictor import _has_mask_head

model_package = pytest.importorskip("page4d_ros.model", reason="the network package is not importable")


class ConstantNetwork(torch.nn.Module):
    """Returns fixed outputs of the network's format: identity poses, 90 degree FoV, depth 2, a given map."""

    def __init__(self, dynamics_value: np.ndarray) -> None:
        super().__init__()
        self.dynamics_value = torch.from_numpy(dynamics_value)
        self.has_mask_head = True

    def forward(self, images: torch.Tensor, **options: bool) -> dict[str, torch.Tensor]:
        batch, frames, _, height, width = images.shape
        pose = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, math.pi / 2, math.pi / 2])
        return {
            "pose_enc": pose.expand(batch, frames, 9),
            "depth": torch.full((batch, frames, height, width, 1), 2.0),
            "depth_conf": torch.full((batch, frames, height, width), 3.0),
            "dynamics_map": self.dynamics_value.expand(batch, frames, *self.dynamics_value.shape),
        }


def test_outputs_are_converted_to_numpy_geometry():
    predictor = ModelPredictor(ConstantNetwork(np.full((2, 3), -0.3, np.float32)))
    prediction = predictor.predict(np.zeros((2, 3, 28, 42), np.float32), np.array([1, 2]))
    np.testing.assert_allclose(prediction.extrinsics[:, :, :3], np.tile(np.eye(3), (2, 1, 1)), atol=1e-6)
    # FoV 90 degrees: f = (size / 2) / tan(45 deg) = size / 2; principal point at the image centre.
    np.testing.assert_allclose(prediction.intrinsics[0], [[21, 0, 21], [0, 14, 14], [0, 0, 1]], atol=1e-4)
    assert prediction.depth.shape == (2, 28, 42) and prediction.depth.dtype == np.float32
    assert predictor.has_dynamics_map


@pytest.mark.parametrize(
    ("raw", "sign", "expected"),
    [(-0.3, "auto", -0.3), (0.3, "auto", -0.3), (0.3, "positive", 0.3), (0.3, "negative", -0.3)],
)
def test_dynamics_sign_is_normalised(raw, sign, expected):
    raw_map = np.full((2, 3), raw, np.float32)
    raw_map[0, 0] = -raw  # one minority patch with the other sign
    predictor = ModelPredictor(ConstantNetwork(raw_map), dynamics_sign=sign)
    prediction = predictor.predict(np.zeros((1, 3, 28, 42), np.float32), np.array([1]))
    assert prediction.dynamics[0, 1, 1] == pytest.approx(expected)
    assert prediction.dynamics[0, 0, 0] == pytest.approx(-expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dynamics_sign"):
        ModelPredictor(ConstantNetwork(np.zeros((1, 1), np.float32)), dynamics_sign="up")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ModelPredictor(ConstantNetwork(np.zeros((1, 1), np.float32)), device="cuda")


def test_tiny_random_page4d_runs_through_the_pipeline(walk_sequence, oracle_config, frames_of):
    torch.manual_seed(0)
    model = model_package.build_model("page4d-small")
    assert _has_mask_head(model)
    predictor = ModelPredictor(model)
    config = oracle_config(model_long_side=56, window_size=4, window_stride=2)
    pipeline = StreamingPipeline(config, predictor)
    results = []
    for frame in frames_of(walk_sequence)[:6]:
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    assert [r.stamp_ns for r in results] == list(walk_sequence.stamps_ns[:6])
    for result in results:
        assert (result.width, result.height) == (56, 42)
        assert result.depth.shape == result.dynamic_mask.shape == (42, 56)
        assert result.rgb.shape == (42, 56, 3)
        assert np.all(np.isfinite(result.T_world_cam))
        assert np.all(np.isfinite(result.K))
        assert result.points.shape[1] == 3 and np.all(np.isfinite(result.points))
        assert result.points.shape[0] == result.colors.shape[0] == result.point_is_dynamic.shape[0]
    assert pipeline.stats.windows == 2  # frames 1-4, then 3-6
    assert pipeline.stats.mean_inference_ms > 0


class DenseDynamicsNetwork(ConstantNetwork):
    """ConstantNetwork that also returns per-pixel dynamic logits (positive = dynamic)."""

    def forward(self, images: torch.Tensor, **options: bool) -> dict[str, torch.Tensor]:
        outputs = super().forward(images)
        batch, frames, _, height, width = images.shape
        logits = torch.full((batch, frames, height, width), -2.0)
        logits[..., 0, 0] = 3.0
        outputs["dynamic_logits"] = logits
        return outputs


def test_per_pixel_dynamic_logits_win_over_the_patch_map_and_keep_their_sign():
    """Supervised logits have a fixed sign: "auto" must not flip them, and they replace the patch map."""
    predictor = ModelPredictor(DenseDynamicsNetwork(np.full((2, 3), 0.3, np.float32)), dynamics_sign="auto")
    prediction = predictor.predict(np.zeros((1, 3, 28, 42), np.float32), np.array([1]))
    assert prediction.dynamics.shape == (1, 28, 42)
    assert prediction.dynamics[0, 0, 0] == pytest.approx(1.0 / (1.0 + math.exp(-3.0)) - 0.5)
    assert prediction.dynamics[0, 5, 5] == pytest.approx(1.0 / (1.0 + math.exp(2.0)) - 0.5)


def test_dense_dynamics_model_is_recognised_without_a_mask_head():
    model = model_package.build_model({"preset": "page4d-small", "mask_head": False, "dense_dynamics": True})
    assert _has_mask_head(model)


def _run_stream(predictor, config, frames):
    pipeline = StreamingPipeline(config, predictor)
    results = []
    for frame in frames:
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    return pipeline, results


def test_frame_reuse_gives_bitwise_the_same_results_and_is_cleared_at_reset(
    walk_sequence, oracle_config, frames_of, make_tiny_model_config
):
    """The pipeline passes each frame's stamp, so windows 2.. reuse the overlap frames' per-frame work."""
    torch.manual_seed(0)
    model = model_package.build_model(make_tiny_model_config())
    config = oracle_config(model_long_side=56, window_size=4, window_stride=2)
    frames = frames_of(walk_sequence)[:8]
    reusing = ModelPredictor(model)
    assert reusing.frame_cache is not None
    pipeline, reused = _run_stream(reusing, config, frames)
    plain = ModelPredictor(model, reuse_frames=False)
    assert plain.frame_cache is None
    _, recomputed = _run_stream(plain, config, frames)
    stamps = list(walk_sequence.stamps_ns[:8])
    assert [r.stamp_ns for r in reused] == [r.stamp_ns for r in recomputed] == stamps
    for mine, theirs in zip(reused, recomputed):
        assert np.array_equal(mine.T_world_cam, theirs.T_world_cam)
        assert np.array_equal(mine.depth, theirs.depth, equal_nan=True)
        assert np.array_equal(mine.confidence, theirs.confidence)
        assert np.array_equal(mine.dynamic_mask, theirs.dynamic_mask)
    # Windows: frames 1-4, 3-6, 5-8: two reused encodings in each later window.
    assert reusing.frame_cache.encoder_hits == 4 and len(reusing.frame_cache) > 0
    pipeline.reset("test")
    assert len(reusing.frame_cache) == 0


def test_stamp_count_must_match_the_images():
    torch.manual_seed(0)
    predictor = ModelPredictor(model_package.build_model({"preset": "page4d-small", "depth": 2}))
    with pytest.raises(ValueError, match="2 stamps for 3 images"):
        predictor.predict(np.zeros((3, 3, 28, 28), np.float32), np.array([1, 2]))
