"""Dynamic-mask metrics: IoU, precision, recall and F1 pooled over all pixels of a sequence."""

from __future__ import annotations

import numpy as np


def _ratio(numerator: int, denominator: int, other_errors: int) -> float:
    """``numerator / denominator``; an empty denominator scores 1 when there is no other error, else 0."""
    if denominator == 0:
        return 1.0 if other_errors == 0 else 0.0
    return numerator / denominator


def mask_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Compare boolean (or 0/255) masks of equal shape, pixels pooled over all frames.

    Empty cases follow one rule: a ratio whose denominator is zero is 1 when the masks make no error of the
    other kind, else 0 (two empty masks: IoU, precision and recall are all 1).

    Returns:
        ``iou``, ``precision``, ``recall``, ``f1`` and the pixel counts ``tp``, ``fp``, ``fn``, ``tn``.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    tn = int(pred.size - tp - fp - fn)
    precision = _ratio(tp, tp + fp, fn)
    recall = _ratio(tp, tp + fn, fp)
    return {
        "iou": _ratio(tp, tp + fp + fn, 0),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, 0),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
