"""PAGE-4D / VGGT training losses.

All losses follow the structure of the VGGT training objective that PAGE-4D reuses
(``page4d_spec.md`` section 3, ``vggt_spec.md`` section 8):

- camera: L1 on the 9-d pose encoding ``[t(3), q(4), fov(2)]``, one term per camera-head iteration with
  weight ``gamma ** (n - 1 - i)``, averaged over the iterations; translation, rotation and FoV parts weighted
  separately;
- depth / point maps: aleatoric confidence-weighted regression
  ``gamma * |pred - gt| * conf - alpha * log(conf)`` with a multi-scale gradient term (``"grad"`` for depth,
  surface-normal ``"normal"`` for point maps) and an optional quantile filter dropping the largest residuals.

Tensors are ``[B, S, H, W, C]`` predictions, ``[B, S, H, W]`` confidences and boolean validity masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Residuals are clamped before averaging so one broken pixel cannot dominate a step (as upstream does).
_MAX_RESIDUAL = 100.0
# Fewer valid elements than this and the quantile filter is skipped (its estimate would be noise).
_QUANTILE_MIN_ELEMENTS = 1000
# torch.quantile refuses very large inputs; larger tensors are subsampled to this many elements.
_QUANTILE_MAX_SAMPLES = 1_000_000


@dataclass
class CameraLossConfig:
    """Weights of the camera loss on the pose encoding."""

    weight: float = 5.0
    iteration_gamma: float = 0.6
    weight_translation: float = 1.0
    weight_rotation: float = 1.0
    weight_fov: float = 0.5


@dataclass
class DenseLossConfig:
    """Weights of a confidence-weighted dense regression loss (depth or point map)."""

    weight: float = 1.0
    gamma: float = 1.0
    alpha: float = 0.2
    gradient_loss: str = "grad"
    gradient_scales: int = 3
    valid_quantile: float = 0.98

    def __post_init__(self) -> None:
        """Validate the settings."""
        if self.gradient_loss not in ("grad", "normal", "none"):
            raise ValueError(f"gradient_loss must be 'grad', 'normal' or 'none', got {self.gradient_loss!r}")
        if not 0.0 < self.valid_quantile <= 1.0:
            raise ValueError(f"valid_quantile must be in (0, 1], got {self.valid_quantile}")
        if self.gradient_scales < 1:
            raise ValueError(f"gradient_scales must be >= 1, got {self.gradient_scales}")


def _finite(values: torch.Tensor) -> torch.Tensor:
    """Replace NaN/inf by zero so a single bad value cannot poison the loss."""
    return torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def camera_loss(
    pose_enc_list: list[torch.Tensor],
    gt_pose_enc: torch.Tensor,
    config: CameraLossConfig,
    valid_frames: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L1 camera loss over the camera-head iterations.

    Args:
        pose_enc_list: predicted encodings ``[B, S, 9]``, one per iteration (last = final).
        gt_pose_enc: ground-truth encoding ``[B, S, 9]``.
        config: loss weights.
        valid_frames: optional ``[B, S]`` bool; frames without usable ground truth are left out.

    Returns:
        ``loss_camera`` (weighted total, already multiplied by ``config.weight``) and the unweighted averages
        ``loss_T``, ``loss_R``, ``loss_FL``.
    """
    if not pose_enc_list:
        raise ValueError("pose_enc_list is empty: the camera head must return at least one iteration")
    count = len(pose_enc_list)
    zero = gt_pose_enc.new_zeros(())
    totals = {"T": zero, "R": zero, "FL": zero}
    if valid_frames is not None and not bool(valid_frames.any()):
        return {"loss_camera": zero, "loss_T": zero, "loss_R": zero, "loss_FL": zero}
    for index, prediction in enumerate(pose_enc_list):
        if prediction.shape != gt_pose_enc.shape:
            raise ValueError(
                f"pose encoding shape {tuple(prediction.shape)} != ground truth {tuple(gt_pose_enc.shape)}"
            )
        stage_weight = config.iteration_gamma ** (count - 1 - index)
        residual = (prediction.float() - gt_pose_enc.float()).abs()
        if valid_frames is not None:
            residual = residual[valid_frames]
        residual = _finite(residual).clamp(max=_MAX_RESIDUAL)
        totals["T"] = totals["T"] + stage_weight * residual[..., :3].mean()
        totals["R"] = totals["R"] + stage_weight * residual[..., 3:7].mean()
        totals["FL"] = totals["FL"] + stage_weight * residual[..., 7:].mean()
    loss_t, loss_r, loss_fl = (totals[key] / count for key in ("T", "R", "FL"))
    weighted = (
        config.weight_translation * loss_t + config.weight_rotation * loss_r + config.weight_fov * loss_fl
    ) * config.weight
    return {"loss_camera": weighted, "loss_T": loss_t, "loss_R": loss_r, "loss_FL": loss_fl}


def filter_by_quantile(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """Keep the elements of a 1-d tensor below its ``quantile`` (e.g. 0.98 drops the top 2 %)."""
    if quantile >= 1.0 or values.numel() < _QUANTILE_MIN_ELEMENTS:
        return values
    sample = values.detach().float()
    if sample.numel() > _QUANTILE_MAX_SAMPLES:
        index = torch.randint(0, sample.numel(), (_QUANTILE_MAX_SAMPLES,), device=sample.device)
        sample = sample[index]
    threshold = torch.quantile(sample, quantile)
    kept = values[values < threshold]
    return kept if kept.numel() > 0 else values


def gradient_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    conf: torch.Tensor | None = None,
    gamma: float = 1.0,
    alpha: float = 0.2,
) -> torch.Tensor:
    """Gradient-matching loss on images ``[N, H, W, C]``.

    The residual ``d = (pred - gt) * mask`` is differenced along x and y; each absolute difference counts
    where both neighbours are valid, optionally confidence-weighted (``gamma * g * conf - alpha * log conf``,
    with the confidence of the second pixel of the pair). The sum is divided by the number of valid elements.
    """
    valid = mask[..., None].expand_as(prediction).to(prediction.dtype)
    count = valid.sum()
    if count == 0:
        return prediction.new_zeros(())
    residual = (prediction - target) * valid
    pairs_x = (valid[:, :, 1:] * valid[:, :, :-1]) > 0
    pairs_y = (valid[:, 1:] * valid[:, :-1]) > 0
    grad_x = (residual[:, :, 1:] - residual[:, :, :-1]).abs().clamp(max=_MAX_RESIDUAL)
    grad_y = (residual[:, 1:] - residual[:, :-1]).abs().clamp(max=_MAX_RESIDUAL)
    if conf is not None:
        conf_full = conf[..., None].expand_as(prediction)
        conf_x = conf_full[:, :, 1:]
        conf_y = conf_full[:, 1:]
        grad_x = gamma * grad_x * conf_x - alpha * torch.log(conf_x)
        grad_y = gamma * grad_y * conf_y - alpha * torch.log(conf_y)
    # Only pairs with ground truth on both pixels count, confidence terms included: elsewhere nothing bounds
    # the confidence, and an unbounded -log(conf) times a zero weight would be NaN, not 0.
    zero = prediction.new_zeros(())
    return (torch.where(pairs_x, grad_x, zero).sum() + torch.where(pairs_y, grad_y, zero).sum()) / count


def point_map_normals(
    points: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Four surface normals per pixel of a point map ``[N, H, W, 3]`` from its 4-neighbourhood.

    The normals are the normalised cross products (up x left), (left x down), (down x right), (right x up) of
    the vectors from the centre to each neighbour. Returns ``normals [4, N, H, W, 3]`` and ``valid [4, N, H,
    W]`` (the centre and both neighbours of a pair valid; border neighbours count as invalid).
    """
    padded = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
    padded_mask = F.pad(mask.float(), (1, 1, 1, 1)) > 0.5
    centre = padded[:, 1:-1, 1:-1]
    up = padded[:, :-2, 1:-1] - centre
    left = padded[:, 1:-1, :-2] - centre
    down = padded[:, 2:, 1:-1] - centre
    right = padded[:, 1:-1, 2:] - centre
    normals = torch.stack(
        [
            torch.cross(up, left, dim=-1),
            torch.cross(left, down, dim=-1),
            torch.cross(down, right, dim=-1),
            torch.cross(right, up, dim=-1),
        ]
    )
    m_centre = padded_mask[:, 1:-1, 1:-1]
    m_up = padded_mask[:, :-2, 1:-1]
    m_left = padded_mask[:, 1:-1, :-2]
    m_down = padded_mask[:, 2:, 1:-1]
    m_right = padded_mask[:, 1:-1, 2:]
    valid = torch.stack(
        [
            m_centre & m_up & m_left,
            m_centre & m_left & m_down,
            m_centre & m_down & m_right,
            m_centre & m_right & m_up,
        ]
    )
    return F.normalize(normals, p=2, dim=-1, eps=eps), valid


def normal_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    conf: torch.Tensor | None = None,
    gamma: float = 1.0,
    alpha: float = 0.2,
    cos_eps: float = 1e-8,
) -> torch.Tensor:
    """``1 - cos`` between predicted and ground-truth surface normals of point maps ``[N, H, W, 3]``."""
    pred_normals, pred_valid = point_map_normals(prediction.float(), mask)
    gt_normals, gt_valid = point_map_normals(target.float(), mask)
    valid = pred_valid & gt_valid
    if int(valid.sum()) < 10:
        return prediction.new_zeros(())
    cosine = (pred_normals[valid] * gt_normals[valid]).sum(dim=-1).clamp(-1 + cos_eps, 1 - cos_eps)
    loss = _finite(1.0 - cosine)
    if conf is not None:
        conf_valid = conf[None].expand(4, -1, -1, -1)[valid]
        loss = gamma * loss * conf_valid - alpha * torch.log(conf_valid)
    return loss.mean()


def multi_scale_gradient_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    conf: torch.Tensor,
    kind: str,
    scales: int,
    gamma: float,
    alpha: float,
) -> torch.Tensor:
    """Mean of a gradient loss (``"grad"`` or ``"normal"``) over ``scales`` strided sub-samplings."""
    function = gradient_loss if kind == "grad" else normal_loss
    total = prediction.new_zeros(())
    for scale in range(scales):
        step = 2**scale
        total = total + function(
            prediction[:, ::step, ::step],
            target[:, ::step, ::step],
            mask[:, ::step, ::step],
            conf=conf[:, ::step, ::step],
            gamma=gamma,
            alpha=alpha,
        )
    return total / scales


def dense_regression_loss(
    prediction: torch.Tensor,
    conf: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    config: DenseLossConfig,
) -> dict[str, torch.Tensor]:
    """Confidence-weighted regression of a dense map with its gradient term.

    Args:
        prediction: ``[B, S, H, W, C]``.
        conf: ``[B, S, H, W]`` confidences (> 0, the heads give ``1 + exp``).
        target: ``[B, S, H, W, C]``.
        mask: ``[B, S, H, W]`` bool, valid ground truth.
        config: weights.

    Returns:
        ``loss_conf`` (the aleatoric term after the quantile filter), ``loss_grad``, ``loss_reg`` (plain mean
        Euclidean error, for logging) and ``loss`` = ``config.weight * (loss_conf + loss_grad)``.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    if conf.shape != prediction.shape[:-1] or mask.shape != prediction.shape[:-1]:
        raise ValueError("conf and mask must be [B, S, H, W] matching the prediction")
    prediction = prediction.float()
    conf = conf.float()
    target = target.float()
    mask = mask.bool()
    zero = prediction.new_zeros(())
    if not bool(mask.any()):
        return {"loss": zero * prediction.sum(), "loss_conf": zero, "loss_grad": zero, "loss_reg": zero}
    residual = _finite(torch.linalg.vector_norm(target[mask] - prediction[mask], dim=-1))
    conf_valid = conf[mask]
    loss_conf = config.gamma * residual * conf_valid - config.alpha * torch.log(conf_valid)
    loss_conf = _finite(filter_by_quantile(loss_conf, config.valid_quantile)).mean()
    batch, frames, height, width, channels = prediction.shape
    if config.gradient_loss == "none":
        loss_grad = zero
    else:
        loss_grad = multi_scale_gradient_loss(
            prediction.reshape(batch * frames, height, width, channels),
            target.reshape(batch * frames, height, width, channels),
            mask.reshape(batch * frames, height, width),
            conf.reshape(batch * frames, height, width),
            kind=config.gradient_loss,
            scales=config.gradient_scales,
            gamma=config.gamma,
            alpha=config.alpha,
        )
    return {
        "loss": config.weight * (loss_conf + loss_grad),
        "loss_conf": loss_conf,
        "loss_grad": loss_grad,
        "loss_reg": residual.mean(),
    }


def mask_supervision_loss(
    dynamics_map: torch.Tensor, dynamic_fraction: torch.Tensor, positive_weight: float = 1.0
) -> torch.Tensor:
    """Optional auxiliary loss tying the mask head to ground-truth motion (not part of the PAGE-4D recipe).

    ``dynamics_map`` ``[B, S, Hp, Wp]`` lies in (-0.5, 0.5); ``dynamic_fraction`` is the fraction of dynamic
    pixels in each patch. The convention is **negative = dynamic**, so that the dynamics-aware attention
    (which pushes camera queries away from patches with negative values) suppresses moving patches for pose,
    as PAGE-4D intends. The loss is the binary cross-entropy of ``p_dynamic = 0.5 - dynamics_map`` against the
    fraction, each patch weighted ``1 + (positive_weight - 1) * fraction`` so that the few dynamic patches are
    not drowned by the static majority.
    """
    if dynamics_map.shape != dynamic_fraction.shape:
        raise ValueError(
            f"dynamics_map {tuple(dynamics_map.shape)} and "
            f"dynamic_fraction {tuple(dynamic_fraction.shape)} differ"
        )
    if positive_weight <= 0:
        raise ValueError(f"positive_weight must be > 0, got {positive_weight}")
    probability = (0.5 - dynamics_map.float()).clamp(1e-4, 1 - 1e-4)
    target = dynamic_fraction.float()
    weight = 1.0 + (positive_weight - 1.0) * target
    return F.binary_cross_entropy(probability, target, weight=weight)


def dense_mask_loss(
    logits: torch.Tensor, dynamic_mask: torch.Tensor, positive_weight: float = 1.0
) -> torch.Tensor:
    """Per-pixel binary cross-entropy of the ``dense_dynamics`` channel against the ground-truth motion mask.

    ``logits`` and ``dynamic_mask`` are ``[B, S, H, W]`` (positive logit = dynamic); ``positive_weight``
    multiplies the loss of dynamic pixels, which are a few percent of a frame.
    """
    if logits.shape != dynamic_mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and dynamic_mask {tuple(dynamic_mask.shape)} differ")
    if positive_weight <= 0:
        raise ValueError(f"positive_weight must be > 0, got {positive_weight}")
    weight = logits.new_tensor(positive_weight, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), dynamic_mask.float(), pos_weight=weight)
