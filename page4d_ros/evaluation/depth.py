"""Depth metrics (AbsRel, SqRel, RMSE, delta thresholds) with per-sequence alignment, as in PAGE-4D."""

from __future__ import annotations

import numpy as np

DEPTH_ALIGNMENTS = ("scale", "scale_shift", "none")
MIN_DEPTH = 1e-3
"""Aligned predictions are clipped below at this depth, so ratios stay finite."""


def valid_depth_pixels(
    pred: np.ndarray, gt: np.ndarray, max_depth: float | None = None, min_depth: float = MIN_DEPTH
) -> np.ndarray:
    """Pixels where the ground truth lies in ``(min_depth, max_depth]`` and the prediction is finite."""
    valid = np.isfinite(gt) & (gt > min_depth) & np.isfinite(pred)
    if max_depth is not None:
        valid &= gt <= max_depth
    return valid


def align_depth(pred: np.ndarray, gt: np.ndarray, align: str = "scale") -> tuple[float, float]:
    """Scale and shift that map predicted depths onto ground-truth depths (1-D arrays of valid pixels).

    Args:
        pred: predicted depths of valid pixels.
        gt: ground-truth depths of the same pixels.
        align: "scale" (median ratio ``median(gt) / median(pred)``), "scale_shift" (least squares
            ``gt ~ s * pred + b``) or "none" (1, 0).

    Returns:
        ``(scale, shift)``.
    """
    if align not in DEPTH_ALIGNMENTS:
        raise ValueError(f"depth alignment must be one of {DEPTH_ALIGNMENTS}, got {align!r}")
    if align == "none":
        return 1.0, 0.0
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.size == 0:
        raise ValueError("no valid depth pixels to align")
    if align == "scale":
        median_pred = float(np.median(pred))
        if not median_pred > 0:
            raise ValueError(f"cannot align by median scale: the median predicted depth is {median_pred}")
        return float(np.median(gt)) / median_pred, 0.0
    design = np.stack([pred, np.ones_like(pred)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, gt, rcond=None)
    return float(scale), float(shift)


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    align: str = "scale",
    max_depth: float | None = None,
    min_depth: float = MIN_DEPTH,
) -> dict[str, float]:
    """Depth errors over all valid pixels of a sequence, after one alignment for the whole sequence.

    Args:
        pred: predicted depths (any shape; NaN/inf = no prediction).
        gt: ground-truth depths of the same shape (0, NaN = no ground truth).
        align: see ``align_depth``.
        max_depth: ignore ground truth beyond this depth (None = keep all).
        min_depth: ignore ground truth at or below this depth; aligned predictions are clipped to it.

    Returns:
        ``abs_rel`` = mean |p - g| / g, ``sq_rel`` = mean (p - g)^2 / g, ``rmse``, ``log_rmse``, ``delta_1``,
        ``delta_2``, ``delta_3`` (fraction with max(p/g, g/p) < 1.25, 1.25^2, 1.25^3), ``scale``, ``shift``,
        ``num_pixels``.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth depth shapes differ: {pred.shape} vs {gt.shape}")
    valid = valid_depth_pixels(pred, gt, max_depth, min_depth)
    if align in ("scale", "none"):
        valid &= pred > 0
    if not valid.any():
        raise ValueError("no pixel has both a valid ground-truth depth and a valid prediction")
    p = pred[valid].astype(np.float64)
    g = gt[valid].astype(np.float64)
    scale, shift = align_depth(p, g, align)
    p = np.maximum(scale * p + shift, min_depth)
    difference = p - g
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(difference) / g)),
        "sq_rel": float(np.mean(difference**2 / g)),
        "rmse": float(np.sqrt(np.mean(difference**2))),
        "log_rmse": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "delta_1": float(np.mean(ratio < 1.25)),
        "delta_2": float(np.mean(ratio < 1.25**2)),
        "delta_3": float(np.mean(ratio < 1.25**3)),
        "scale": scale,
        "shift": shift,
        "num_pixels": int(valid.sum()),
    }
