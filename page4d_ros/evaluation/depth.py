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


CHUNK = 1 << 22
"""Pixels per chunk when accumulating sums, so a long video never needs several float64 copies at once."""


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
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth depth shapes differ: {pred.shape} vs {gt.shape}")
    if pred.size == 0:
        raise ValueError("no valid depth pixels to align")
    if align == "scale":
        median_pred = float(np.median(pred))
        if not median_pred > 0:
            raise ValueError(f"cannot align by median scale: the median predicted depth is {median_pred}")
        return float(np.median(gt)) / median_pred, 0.0
    # Least squares through the normal equations, accumulated in float64 chunk by chunk.
    sums = np.zeros(5)
    for begin in range(0, pred.size, CHUNK):
        p = pred[begin : begin + CHUNK].astype(np.float64)
        g = gt[begin : begin + CHUNK].astype(np.float64)
        sums += [p.sum(), g.sum(), (p * p).sum(), (p * g).sum(), p.size]
    sum_p, sum_g, sum_pp, sum_pg, count = sums
    determinant = count * sum_pp - sum_p * sum_p
    if determinant <= 1e-12 * max(count * sum_pp, 1e-300):
        raise ValueError("cannot fit scale and shift: the predicted depths are (nearly) constant")
    scale = (count * sum_pg - sum_p * sum_g) / determinant
    return float(scale), float((sum_g - scale * sum_p) / count)


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
    pred_valid = pred[valid]
    gt_valid = gt[valid]
    scale, shift = align_depth(pred_valid, gt_valid, align)
    # Sums of abs_rel, sq_rel, squared error, squared log error and the three delta counts.
    sums = np.zeros(7)
    for begin in range(0, pred_valid.size, CHUNK):
        g = gt_valid[begin : begin + CHUNK].astype(np.float64)
        p = np.maximum(scale * pred_valid[begin : begin + CHUNK].astype(np.float64) + shift, min_depth)
        difference = p - g
        squared = difference * difference
        ratio = np.maximum(p / g, g / p)
        sums += [
            (np.abs(difference) / g).sum(),
            (squared / g).sum(),
            squared.sum(),
            np.square(np.log(p / g)).sum(),
            np.count_nonzero(ratio < 1.25),
            np.count_nonzero(ratio < 1.25**2),
            np.count_nonzero(ratio < 1.25**3),
        ]
    count = pred_valid.size
    means = sums / count
    return {
        "abs_rel": float(means[0]),
        "sq_rel": float(means[1]),
        "rmse": float(np.sqrt(means[2])),
        "log_rmse": float(np.sqrt(means[3])),
        "delta_1": float(means[4]),
        "delta_2": float(means[5]),
        "delta_3": float(means[6]),
        "scale": scale,
        "shift": shift,
        "num_pixels": int(count),
    }
