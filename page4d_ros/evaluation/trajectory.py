"""Camera trajectory metrics: Umeyama alignment, ATE and RPE (the ``evo`` definitions used by PAGE-4D)."""

from __future__ import annotations

import numpy as np

from page4d_ros.pipeline.geometry import Sim3, average_rotation, weighted_umeyama

ALIGNMENTS = ("sim3", "se3", "none")


def _check_poses(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[1:] != (4, 4) or pred.shape != gt.shape:
        raise ValueError(f"poses must be two [N, 4, 4] arrays of equal N, got {pred.shape} and {gt.shape}")
    if len(pred) == 0:
        raise ValueError("no poses to compare (no frame matched between prediction and ground truth)")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(gt))):
        raise ValueError("poses contain NaN or inf")
    return pred, gt


def _spread(points: np.ndarray) -> float:
    """Mean squared distance of points ``[N, 3]`` from their centroid."""
    return float(np.mean(np.sum((points - points.mean(axis=0)) ** 2, axis=1)))


def umeyama_alignment(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Sim3:
    """Unweighted least-squares similarity (Umeyama 1991) with ``target ~ scale * R @ source + t``.

    Args:
        source: ``[N, 3]`` points to be moved (N >= 1).
        target: ``[N, 3]`` corresponding points.
        with_scale: estimate the scale (Sim(3)); otherwise scale is 1 (SE(3)).

    When the source points are all (numerically) the same, rotation and scale are unobservable from points:
    the identity rotation and scale 1 are returned with the translation that matches the centroids.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    well_formed = source.ndim == 2 and source.shape[1:] == (3,) and source.shape == target.shape
    if well_formed and len(source) and _spread(source) < 1e-18:
        return Sim3(1.0, np.eye(3), target.mean(axis=0) - source.mean(axis=0))
    return weighted_umeyama(source, target, with_scale=with_scale)


def align_trajectory(pred: np.ndarray, gt: np.ndarray, align: str = "sim3") -> Sim3:
    """The transform that maps predicted poses onto the ground truth's frame.

    Args:
        pred: ``[N, 4, 4]`` predicted world-from-camera poses.
        gt: ``[N, 4, 4]`` ground-truth poses of the same frames.
        align: "sim3" (rotation, translation, scale), "se3" (rotation, translation) or "none".

    Positions alone fix the alignment when the camera moved; when the camera centres (numerically) coincide,
    as under pure rotation, the rotation is taken from the orientations instead and the scale is 1.
    """
    pred, gt = _check_poses(pred, gt)
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    if align == "none":
        return Sim3.identity()
    pred_centres = pred[:, :3, 3]
    gt_centres = gt[:, :3, 3]
    spread = _spread(pred_centres)
    if len(pred) >= 3 and spread >= 1e-18:
        return umeyama_alignment(pred_centres, gt_centres, with_scale=align == "sim3")
    # One or two distinct centres leave the rotation about their line free: take it from the orientations.
    # The rotation minimising sum ||R @ R_pred_i - R_gt_i||_F: the chordal mean of R_gt_i R_pred_i^T.
    rotation = average_rotation(gt[:, :3, :3] @ np.swapaxes(pred[:, :3, :3], 1, 2))
    scale = 1.0
    if align == "sim3" and spread >= 1e-18:
        scale = float(
            np.linalg.norm(gt_centres[1] - gt_centres[0]) / np.linalg.norm(pred_centres[1] - pred_centres[0])
        )
    translation = gt_centres.mean(axis=0) - scale * rotation @ pred_centres.mean(axis=0)
    return Sim3(scale, rotation, translation)


def _statistics(errors: np.ndarray, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}rmse": float(np.sqrt(np.mean(errors**2))),
        f"{prefix}mean": float(np.mean(errors)),
        f"{prefix}median": float(np.median(errors)),
        f"{prefix}max": float(np.max(errors)),
    }


def absolute_trajectory_error(pred: np.ndarray, gt: np.ndarray, align: str = "sim3") -> dict[str, float]:
    """ATE: camera-centre distances after alignment.

    Returns:
        ``rmse``, ``mean``, ``median``, ``max`` (ground-truth units), the alignment ``scale``, ``num_poses``.
    """
    pred, gt = _check_poses(pred, gt)
    similarity = align_trajectory(pred, gt, align)
    aligned = similarity.apply_points(pred[:, :3, 3])
    errors = np.linalg.norm(aligned - gt[:, :3, 3], axis=1)
    return {**_statistics(errors, ""), "scale": similarity.scale, "num_poses": len(pred)}


def rotation_angle_deg(rotations: np.ndarray) -> np.ndarray:
    """Rotation angles in degrees of ``[N, 3, 3]`` matrices (robust near 0 and 180 degrees)."""
    trace = np.trace(rotations, axis1=-2, axis2=-1)
    skew = np.stack(
        [
            rotations[..., 2, 1] - rotations[..., 1, 2],
            rotations[..., 0, 2] - rotations[..., 2, 0],
            rotations[..., 1, 0] - rotations[..., 0, 1],
        ],
        axis=-1,
    )
    return np.degrees(np.arctan2(0.5 * np.linalg.norm(skew, axis=-1), 0.5 * (trace - 1.0)))


def relative_pose_error(
    pred: np.ndarray, gt: np.ndarray, delta: int = 1, align: str = "sim3"
) -> dict[str, float]:
    """RPE over frame pairs ``(i, i + delta)``: ``E = (G_i^-1 G_j)^-1 (P_i^-1 P_j)`` after aligning P.

    The Sim(3) scale rescales the predicted relative translations; rotation errors do not depend on alignment.

    Returns:
        ``trans_rmse``/``trans_mean``/``trans_median``/``trans_max`` (ground-truth units),
        ``rot_rmse_deg``/``rot_mean_deg``/``rot_median_deg``/``rot_max_deg`` and ``num_pairs``
        (all zero with ``num_pairs`` 0 when there are fewer than ``delta + 1`` poses).
    """
    pred, gt = _check_poses(pred, gt)
    if delta < 1:
        raise ValueError(f"delta must be >= 1 frame, got {delta}")
    if len(pred) <= delta:
        zeros = {f"trans_{k}": 0.0 for k in ("rmse", "mean", "median", "max")}
        zeros.update({f"rot_{k}_deg": 0.0 for k in ("rmse", "mean", "median", "max")})
        return {**zeros, "num_pairs": 0}
    aligned = align_trajectory(pred, gt, align).apply_poses(pred)
    relative_pred = np.linalg.inv(aligned[:-delta]) @ aligned[delta:]
    relative_gt = np.linalg.inv(gt[:-delta]) @ gt[delta:]
    error = np.linalg.inv(relative_gt) @ relative_pred
    translation = np.linalg.norm(error[:, :3, 3], axis=1)
    rotation = rotation_angle_deg(error[:, :3, :3])
    stats = _statistics(translation, "trans_")
    rotation_stats = _statistics(rotation, "rot_")
    stats.update({key + "_deg": value for key, value in rotation_stats.items()})
    return {**stats, "num_pairs": len(error)}
