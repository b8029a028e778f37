"""Point-map metrics: accuracy and completeness (nearest-neighbour distances between point clouds)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def backproject(depth: np.ndarray, K: np.ndarray, pixels: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Camera-frame points ``[N, 3]`` of the given pixels ``(rows, cols)`` from z-depth and intrinsics."""
    rows, cols = pixels
    z = depth[rows, cols].astype(np.float64)
    y = (rows - K[1, 2]) / K[1, 1]
    x = (cols - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x * z, y * z, z], axis=1)


def pointmap_metrics(pred_points: np.ndarray, gt_points: np.ndarray) -> dict[str, float]:
    """Accuracy (prediction -> nearest ground truth) and completeness (ground truth -> nearest prediction).

    Returns:
        ``accuracy_mean``/``accuracy_median``, ``completeness_mean``/``completeness_median`` and
        ``overall_mean``/``overall_median`` (the average of the two), distances in ground-truth units.
    """
    pred_points = np.asarray(pred_points, dtype=np.float64)
    gt_points = np.asarray(gt_points, dtype=np.float64)
    for name, points in (("pred_points", pred_points), ("gt_points", gt_points)):
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise ValueError(f"{name} must be a non-empty [N, 3] array, got shape {points.shape}")
        if not np.all(np.isfinite(points)):
            raise ValueError(f"{name} contains NaN or inf")
    accuracy, _ = cKDTree(gt_points).query(pred_points, workers=1)
    completeness, _ = cKDTree(pred_points).query(gt_points, workers=1)
    result = {
        "accuracy_mean": float(np.mean(accuracy)),
        "accuracy_median": float(np.median(accuracy)),
        "completeness_mean": float(np.mean(completeness)),
        "completeness_median": float(np.median(completeness)),
    }
    result["overall_mean"] = 0.5 * (result["accuracy_mean"] + result["completeness_mean"])
    result["overall_median"] = 0.5 * (result["accuracy_median"] + result["completeness_median"])
    return result
