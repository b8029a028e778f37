"""Dynamic-object masks: multi-view geometric consistency inside a window, fused with the network's map.

Geometric test (free-space violation): each valid pixel of frame i is lifted to 3-D with its depth and pose
and projected into every other frame j of the window. If the point lands *in front of* the surface that frame
j observes there (``z_proj < (1 - tol) * depth_j``), frame j saw through the place where the point was, so the
point must have moved: one vote. Points landing *behind* the observed surface are treated as occluded and
never vote, which keeps static background hidden by a moving object from being flagged. The observed depth is
the minimum over a 3x3 neighbourhood, so pixels on the front side of a depth edge do not vote against the
background because of sub-pixel projection error. A pixel is geometrically dynamic with at least ``min_votes``
votes that are also at least ``vote_fraction`` of the frames in which the test could be made.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MASK_FUSIONS_DOC = {
    "max": "dynamic when either the geometric test or the network map says so",
    "mean": "dynamic when the mean of the geometric decision (0/1) and the network probability reaches the "
    "threshold",
}


def geometric_votes(
    depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray, rel_tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Free-space violation votes and test counts per pixel, both int32 [S, h, w].

    ``depth`` [S,h,w] (NaN or <= 0 invalid), ``intrinsics`` [S,3,3] for that resolution, ``extrinsics``
    [S,3,4] camera-from-world of the same window.
    """
    num_frames, height, width = depth.shape
    votes = np.zeros((num_frames, height, width), dtype=np.int32)
    tested = np.zeros_like(votes)
    if num_frames < 2:
        return votes, tested
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    observed = np.where(valid, depth, np.float32(np.inf))
    # Minimum over 3x3 per frame: invalid pixels are +inf and never win.
    observed_min = ndimage.minimum_filter(observed, size=(1, 3, 3), mode="nearest").reshape(-1)
    valid_flat = valid.reshape(-1)
    K = np.asarray(intrinsics, dtype=np.float64)
    E = np.asarray(extrinsics, dtype=np.float64)
    v_grid, u_grid = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pixels = np.stack([u_grid, v_grid, np.ones_like(u_grid)], axis=-1).reshape(-1, 3).astype(np.float32)
    depth_flat = depth.reshape(num_frames, -1)
    for i in range(num_frames):
        index_i = np.flatnonzero(valid[i])
        if index_i.size == 0:
            continue
        others = np.array([j for j in range(num_frames) if j != i])
        # Compose pixel_i -> pixel_j as one affine map per frame j: [u v 1]_j ~ KA_j (d [u v 1]_i) + Kb_j.
        # The set-up is float64, the per-pixel bulk float32 (it dominates the window's cost).
        R_i_inv = E[i, :, :3].T
        A = E[others, :, :3] @ R_i_inv @ np.linalg.inv(K[i])
        b = E[others, :, 3] - np.einsum("jab,b->ja", E[others, :, :3] @ R_i_inv, E[i, :, 3])
        KA = (K[others] @ A).astype(np.float32)
        Kb = np.einsum("jab,jb->ja", K[others], b).astype(np.float32)
        scaled = pixels[index_i] * depth_flat[i, index_i, None]
        # One [frames, pixels] plane per output row: plain broadcasting, no BLAS threads (they stall when
        # the CPU is shared) and no einsum (several times slower here).
        u_num, v_num, z = (
            KA[:, row, 0, None] * scaled[None, :, 0]
            + KA[:, row, 1, None] * scaled[None, :, 1]
            + KA[:, row, 2, None] * scaled[None, :, 2]
            + Kb[:, row, None]
            for row in range(3)
        )
        in_front_of_camera = z > 1e-6
        safe_z = np.where(in_front_of_camera, z, np.float32(1.0))
        u = np.rint(u_num / safe_z)
        v = np.rint(v_num / safe_z)
        inside = in_front_of_camera & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
        linear = (
            others[:, None] * (height * width)
            + np.clip(v, 0, height - 1).astype(np.int64) * width
            + np.clip(u, 0, width - 1).astype(np.int64)
        )
        can_test = inside & valid_flat[linear]
        violation = can_test & (z < (1.0 - rel_tolerance) * observed_min[linear])
        votes[i].reshape(-1)[index_i] = violation.sum(axis=0)
        tested[i].reshape(-1)[index_i] = can_test.sum(axis=0)
    return votes, tested


def geometric_mask(votes: np.ndarray, tested: np.ndarray, min_votes: int, vote_fraction: float) -> np.ndarray:
    """Boolean dynamic decision from :func:`geometric_votes` (persistent disagreement)."""
    return (votes >= min_votes) & (votes >= vote_fraction * np.maximum(tested, 1))


def network_probability(dynamics: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample a dynamics score [S,h',w'] (positive = dynamic) to [S,height,width] probabilities in [0,1].

    The score is mapped as ``clip(0.5 + score, 0, 1)``, the PAGE-4D head's range (-0.5, 0.5) onto (0, 1).
    """
    scores = np.asarray(dynamics, dtype=np.float32)
    if scores.shape[-2:] != (height, width):
        # Bilinear with pixel-centre alignment (as F.interpolate(align_corners=False)), edges clamped.
        rows = np.clip((np.arange(height) + 0.5) * scores.shape[1] / height - 0.5, 0, scores.shape[1] - 1)
        cols = np.clip((np.arange(width) + 0.5) * scores.shape[2] / width - 0.5, 0, scores.shape[2] - 1)
        grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
        scores = np.stack(
            [ndimage.map_coordinates(frame, [grid_r, grid_c], order=1, mode="nearest") for frame in scores]
        )
    return np.clip(0.5 + scores, 0.0, 1.0)


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Dilate a boolean mask [S,h,w] with a (2r+1)-square structuring element."""
    if radius_px <= 0:
        return mask
    size = 2 * radius_px + 1
    return ndimage.maximum_filter(mask, size=(1, size, size), mode="constant", cval=False)


def fuse_masks(
    geometric: np.ndarray | None, network_prob: np.ndarray | None, threshold: float, fusion: str
) -> np.ndarray:
    """Combine the geometric decision and the network probability (see ``MASK_FUSIONS_DOC``)."""
    if geometric is None and network_prob is None:
        raise ValueError("fuse_masks needs at least one of the geometric mask and the network probability")
    if network_prob is None:
        return geometric.copy()
    if geometric is None:
        return network_prob >= threshold
    if fusion == "max":
        return geometric | (network_prob >= threshold)
    if fusion == "mean":
        return 0.5 * (geometric.astype(np.float32) + network_prob) >= threshold
    raise ValueError(f"unknown mask fusion {fusion!r}; use one of {sorted(MASK_FUSIONS_DOC)}")
