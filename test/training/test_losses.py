"""Loss terms on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from page4d_ros.training.losses import (
    CameraLossConfig,
    DenseLossConfig,
    camera_loss,
    dense_regression_loss,
    filter_by_quantile,
    gradient_loss,
    mask_supervision_loss,
    normal_loss,
)


def test_camera_loss_weights_iterations_and_parts() -> None:
    gt = torch.zeros(1, 2, 9)
    first = torch.ones(1, 2, 9)
    last = torch.full((1, 2, 9), 0.5)
    losses = camera_loss([first, last], gt, CameraLossConfig())
    # Iteration weights 0.6 ** (2 - 1 - i): 0.6 for the first, 1 for the last; averaged over 2 iterations.
    expected_part = (0.6 * 1.0 + 1.0 * 0.5) / 2
    assert losses["loss_T"].item() == pytest.approx(expected_part)
    assert losses["loss_R"].item() == pytest.approx(expected_part)
    assert losses["loss_FL"].item() == pytest.approx(expected_part)
    # T and R weigh 1, FoV 0.5, camera weight 5.
    assert losses["loss_camera"].item() == pytest.approx(5.0 * expected_part * 2.5)


def test_camera_loss_separates_translation_rotation_fov() -> None:
    gt = torch.zeros(1, 1, 9)
    prediction = torch.tensor([[[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]])
    losses = camera_loss([prediction], gt, CameraLossConfig(weight=1.0))
    assert losses["loss_T"].item() == pytest.approx(1.0)  # |3| / 3 components
    assert losses["loss_R"].item() == pytest.approx(0.0)
    assert losses["loss_FL"].item() == pytest.approx(0.5)  # |1| / 2 components
    assert losses["loss_camera"].item() == pytest.approx(1.0 + 0.5 * 0.5)


def test_camera_loss_rejects_shape_mismatch_and_empty() -> None:
    with pytest.raises(ValueError, match="shape"):
        camera_loss([torch.zeros(1, 2, 9)], torch.zeros(1, 3, 9), CameraLossConfig())
    with pytest.raises(ValueError, match="empty"):
        camera_loss([], torch.zeros(1, 3, 9), CameraLossConfig())


def test_dense_loss_confidence_term() -> None:
    prediction = torch.full((1, 1, 2, 2, 1), 2.0)
    target = torch.ones(1, 1, 2, 2, 1)
    conf = torch.full((1, 1, 2, 2), math.e)
    mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    config = DenseLossConfig(gamma=1.0, alpha=0.2, gradient_loss="none", valid_quantile=1.0, weight=2.0)
    losses = dense_regression_loss(prediction, conf, target, mask, config)
    # |2 - 1| * e - 0.2 * log(e) on every pixel.
    assert losses["loss_conf"].item() == pytest.approx(math.e - 0.2)
    assert losses["loss_reg"].item() == pytest.approx(1.0)
    assert losses["loss"].item() == pytest.approx(2.0 * (math.e - 0.2))


def test_dense_loss_ignores_invalid_pixels_and_uses_euclidean_norm() -> None:
    prediction = torch.zeros(1, 1, 1, 2, 3)
    prediction[0, 0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # distance 5 to the target origin
    prediction[0, 0, 0, 1] = torch.tensor([100.0, 0.0, 0.0])  # invalid pixel, must not count
    target = torch.zeros(1, 1, 1, 2, 3)
    conf = torch.ones(1, 1, 1, 2)
    mask = torch.tensor([[[[True, False]]]])
    config = DenseLossConfig(gamma=1.0, alpha=0.2, gradient_loss="none", valid_quantile=1.0)
    losses = dense_regression_loss(prediction, conf, target, mask, config)
    assert losses["loss_reg"].item() == pytest.approx(5.0)
    assert losses["loss_conf"].item() == pytest.approx(5.0)  # log(1) = 0


def test_dense_loss_without_valid_pixels_is_zero_but_differentiable() -> None:
    prediction = torch.ones(1, 1, 2, 2, 1, requires_grad=True)
    losses = dense_regression_loss(
        prediction,
        torch.ones(1, 1, 2, 2),
        torch.zeros(1, 1, 2, 2, 1),
        torch.zeros(1, 1, 2, 2, dtype=torch.bool),
        DenseLossConfig(),
    )
    assert losses["loss"].item() == 0.0
    losses["loss"].backward()


def test_gradient_loss_on_a_row() -> None:
    prediction = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1)
    target = torch.zeros(1, 1, 3, 1)
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    # x-differences of the residual: |1 - 0| + |3 - 1| = 3, over 3 valid pixels.
    assert gradient_loss(prediction, target, mask).item() == pytest.approx(1.0)
    # A constant offset has no gradient error.
    assert gradient_loss(target + 5.0, target, mask).item() == pytest.approx(0.0)


def test_gradient_loss_skips_pairs_with_an_invalid_pixel() -> None:
    prediction = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1)
    mask = torch.tensor([[[True, True, False]]])
    # Only the pair (0, 1) counts: |1 - 0| = 1, over 2 valid pixels.
    assert gradient_loss(prediction, torch.zeros(1, 1, 3, 1), mask).item() == pytest.approx(0.5)


def _plane(height: int, width: int, slope_x: float) -> torch.Tensor:
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([u, v, slope_x * u], dim=-1)[None]


def test_normal_loss_on_planes() -> None:
    mask = torch.ones(1, 5, 5, dtype=torch.bool)
    flat = _plane(5, 5, 0.0)
    assert normal_loss(flat, flat, mask).item() == pytest.approx(0.0, abs=1e-6)
    # z = x has normal (-1, 0, 1)/sqrt(2): cosine with the flat normal (0, 0, 1) is 1/sqrt(2) everywhere.
    assert normal_loss(_plane(5, 5, 1.0), flat, mask).item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


def test_filter_by_quantile_drops_the_largest_values() -> None:
    values = torch.arange(2000, dtype=torch.float32)
    kept = filter_by_quantile(values, 0.9)
    assert kept.numel() == pytest.approx(1800, abs=2)
    assert kept.max().item() < 1800
    small = torch.arange(10, dtype=torch.float32)
    assert torch.equal(filter_by_quantile(small, 0.5), small)  # too few elements to estimate a quantile


def test_mask_supervision_convention_negative_is_dynamic() -> None:
    fraction = torch.tensor([[[[1.0, 0.0]]]])
    right = torch.tensor([[[[-0.49, 0.49]]]])
    wrong = -right
    assert mask_supervision_loss(right, fraction).item() < 0.05
    assert mask_supervision_loss(wrong, fraction).item() > 3.0
    with pytest.raises(ValueError, match="differ"):
        mask_supervision_loss(right, torch.zeros(1, 1, 2, 1))


def test_dense_loss_config_validation() -> None:
    with pytest.raises(ValueError, match="gradient_loss"):
        DenseLossConfig(gradient_loss="sobel")
    with pytest.raises(ValueError, match="valid_quantile"):
        DenseLossConfig(valid_quantile=0.0)


def test_mask_supervision_positive_weight() -> None:
    # p_dynamic = 0.5 everywhere: every BCE term is ln 2; weights 1 + (10 - 1) * fraction = 10 and 1.
    dynamics = torch.zeros(1, 1, 1, 2)
    fraction = torch.tensor([[[[1.0, 0.0]]]])
    assert mask_supervision_loss(dynamics, fraction, 10.0).item() == pytest.approx(5.5 * math.log(2))
    assert mask_supervision_loss(dynamics, fraction).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="positive_weight"):
        mask_supervision_loss(dynamics, fraction, 0.0)


def test_gradient_loss_ignores_confidence_where_there_is_no_ground_truth():
    """An unbounded confidence on a pixel without ground truth must not turn the loss into NaN or -inf."""
    prediction = torch.tensor([0.5, 0.1, 7.0]).reshape(1, 1, 3, 1)
    target = torch.zeros_like(prediction)
    mask = torch.tensor([[[True, True, False]]])
    conf = torch.tensor([[[1.0, 1.0, float("inf")]]])
    # One valid pair (pixels 0 and 1): |0.1 - 0.5| * conf 1 - 0.2 * log(1) = 0.4, over 2 valid pixels.
    loss = gradient_loss(prediction, target, mask, conf, gamma=1.0, alpha=0.2)
    assert torch.isclose(loss, torch.tensor(0.2))


def test_dense_mask_loss_weights_dynamic_pixels() -> None:
    from page4d_ros.training.losses import dense_mask_loss

    logits = torch.tensor([[[[0.0, 2.0]]]])  # one dynamic pixel (logit 0), one static pixel (logit 2)
    target = torch.tensor([[[[True, False]]]])
    dynamic_term = math.log(2.0)  # -log(sigmoid(0))
    static_term = -math.log(1.0 - 1.0 / (1.0 + math.exp(-2.0)))
    assert float(dense_mask_loss(logits, target)) == pytest.approx((dynamic_term + static_term) / 2)
    assert float(dense_mask_loss(logits, target, positive_weight=3.0)) == pytest.approx(
        (3.0 * dynamic_term + static_term) / 2
    )
    with pytest.raises(ValueError, match="differ"):
        dense_mask_loss(logits, target[..., :1])
    with pytest.raises(ValueError, match="positive_weight"):
        dense_mask_loss(logits, target, positive_weight=0.0)
