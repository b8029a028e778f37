"""Dynamic-object masks: multi-view geometric consistency, fused with the network's map.

Geometric test (free-space violation): each valid pixel of a frame is lifted to 3-D with its depth and pose
and projected into a few comparison frames. If the point lands *in front of* the surface that frame observes
there (``z_proj < (1 - tol) * depth``), that frame saw through the place where the point was, so the point
must have moved: one vote. Points landing *behind* the observed surface are taken as occluded and never vote,
which keeps static background hidden by a moving object from being flagged. The observed depth is the minimum
over a 3x3 neighbourhood, so pixels on the front side of a depth edge do not vote against the background
because of sub-pixel projection error. A pixel is geometrically dynamic with at least ``min_votes`` votes that
are also at least ``vote_fraction`` of the frames in which the test could be made. An optional photometric
vote (``consistency_votes``) also flags visible points whose grey value disagrees with the other view.

Which frames to compare with matters more than how many: a walker moves about 0.25 m during an 8-frame window
at 30 fps, often less than its own width, so most of it projects onto itself and only its trailing edge
votes. The pipeline therefore checks each new frame against a few frames spread over the longest time span
available (``comparison_frames``), drawn from the window and from recently published frames kept in global
coordinates (``mask_history_s``), and only once per frame: published masks are reused as overlap masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MASK_FUSIONS_DOC = {
    "max": "dynamic when either the geometric test or the network map says so",
    "mean": "dynamic when the mean of the geometric decision (0/1) and the network probability reaches the "
    "threshold",
    "tested": "the geometric decision where the flow-residual test could be made (the more reliable "
    "source there), the network map (or the geometric decision) elsewhere",
    "flow": "the geometric decision alone in frames where the flow-residual test ran (the network map of a "
    "small model flags unexplained content, e.g. what enters the view), as max in the other frames",
}


@dataclass(frozen=True)
class MaskView:
    """One frame prepared for the consistency check (build it with :func:`make_mask_view`).

    ``depth`` [h,w] float32 with +inf where invalid, ``depth_min`` its 3x3 minimum, ``grey``/``grey_low``/
    ``grey_high`` uint8 grey image and its 3x3 minimum and maximum (None without an image), ``K`` 3x3 and
    ``extrinsics`` 3x4 camera-from-world (float64), ``stamp_ns`` the frame's stamp.
    """

    stamp_ns: int
    depth: np.ndarray
    depth_min: np.ndarray
    K: np.ndarray
    extrinsics: np.ndarray
    grey: np.ndarray | None
    grey_low: np.ndarray | None
    grey_high: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the view."""
        return self.depth.shape


def _extreme_3x3(image: np.ndarray, extreme: np.ufunc) -> np.ndarray:
    """3x3 minimum or maximum (``np.minimum`` / ``np.maximum``) with edges repeated.

    Four whole-array ufunc calls on shifted views; several times faster here than
    ``scipy.ndimage.minimum_filter``, which dominated the mask stage.
    """
    padded = np.pad(image, 1, mode="edge")
    rows = extreme(extreme(padded[:-2], padded[1:-1]), padded[2:])
    return extreme(extreme(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def make_mask_view(
    stamp_ns: int,
    depth: np.ndarray,
    K: np.ndarray,
    extrinsics: np.ndarray,
    grey: np.ndarray | None = None,
) -> MaskView:
    """Prepare a frame once; it can then serve as source and as target of many checks.

    ``depth`` [h,w] (NaN or <= 0 invalid), ``K`` for that resolution, ``extrinsics`` 3x4 camera-from-world in
    the same frame and units as every other view it is compared with, ``grey`` optional uint8 [h,w].
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    observed = np.where(valid, depth, np.float32(np.inf))
    # Minimum over 3x3: invalid pixels are +inf and never win.
    depth_min = _extreme_3x3(observed, np.minimum)
    grey_low = grey_high = None
    if grey is not None:
        grey = np.asarray(grey, dtype=np.uint8)
        if grey.shape != depth.shape:
            raise ValueError(f"grey image {grey.shape} must match the depth map {depth.shape}")
        grey_low = _extreme_3x3(grey, np.minimum)
        grey_high = _extreme_3x3(grey, np.maximum)
    return MaskView(
        int(stamp_ns),
        observed,
        depth_min,
        np.asarray(K, dtype=np.float64),
        np.asarray(extrinsics, dtype=np.float64),
        grey,
        grey_low,
        grey_high,
    )


def consistency_votes(
    source: MaskView,
    targets: list[MaskView],
    rel_tolerance: float,
    photometric_tolerance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Votes and test counts (int32 [h,w]) of ``source``'s pixels against each view of ``targets``.

    Each valid source pixel is lifted with its depth and projected into a target (nearest pixel). Where the
    target has depth there, the test counts; it votes *free space* when the point lies in front of the 3x3
    minimum of the observed depth by more than ``rel_tolerance``, and, with ``photometric_tolerance`` > 0 and
    grey images on both views, *photometric* when the point is visible there (depth within the tolerance)
    but its grey value lies more than ``photometric_tolerance`` (fraction of the 0-255 range) outside the
    3x3 range of the target's grey values. Points behind the observed surface are occluded: no vote.
    """
    height, width = source.shape
    votes = np.zeros(height * width, dtype=np.int32)
    tested = np.zeros_like(votes)
    index = np.flatnonzero(np.isfinite(source.depth))
    targets = [t for t in targets if t.shape == source.shape]
    if index.size == 0 or not targets:
        return votes.reshape(height, width), tested.reshape(height, width)
    depth = source.depth.reshape(-1)[index]
    u_src = (index % width).astype(np.float32)
    v_src = (index // width).astype(np.float32)
    use_photometric = photometric_tolerance > 0 and source.grey is not None
    margin = np.float32(255.0 * photometric_tolerance)
    if use_photometric:
        grey = source.grey.reshape(-1)[index].astype(np.float32)
    R_i, t_i = source.extrinsics[:, :3], source.extrinsics[:, 3]
    K_i_inv = np.linalg.inv(source.K)
    for target in targets:
        # pixel_i -> pixel_j as one affine map [u v 1]_j ~ d M [u v 1]_i + b (float64 set-up, float32 bulk).
        R_ji = target.extrinsics[:, :3] @ R_i.T
        M = (target.K @ R_ji @ K_i_inv).astype(np.float32)
        b = (target.K @ (target.extrinsics[:, 3] - R_ji @ t_i)).astype(np.float32)
        u_num, v_num, z = (
            depth * (M[row, 0] * u_src + M[row, 1] * v_src + M[row, 2]) + b[row] for row in range(3)
        )
        in_front_of_camera = z > 1e-6
        inverse_z = np.float32(1.0) / np.where(in_front_of_camera, z, np.float32(1.0))
        u = np.rint(u_num * inverse_z)
        v = np.rint(v_num * inverse_z)
        inside = in_front_of_camera & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
        linear = np.where(inside, v * width + u, 0).astype(np.int64)
        observed = target.depth.reshape(-1)[linear]
        can_test = inside & np.isfinite(observed)
        vote = can_test & (z < (1.0 - rel_tolerance) * target.depth_min.reshape(-1)[linear])
        if use_photometric and target.grey is not None:
            visible = can_test & (np.abs(z - observed) <= rel_tolerance * observed)
            below = target.grey_low.reshape(-1)[linear] - grey
            above = grey - target.grey_high.reshape(-1)[linear]
            vote |= visible & (np.maximum(below, above) > margin)
        votes[index] += vote
        tested[index] += can_test
    return votes.reshape(height, width), tested.reshape(height, width)


def comparison_frames(source_stamp_ns: int, candidate_stamps_ns: list[int], count: int) -> list[int]:
    """Indices of up to ``count`` candidates spread over the time span to ``source_stamp_ns``.

    With ``T`` the largest time offset among the candidates, the chosen frames are those nearest to the
    offsets ``T * r / count`` (r = 1..count): the farthest frame (most motion of movers) plus a few nearer
    ones (more view overlap), instead of the adjacent frames where a mover has hardly moved.
    """
    offsets = np.abs(np.asarray(candidate_stamps_ns, dtype=np.float64) - float(source_stamp_ns))
    if offsets.size <= count:
        return [int(i) for i in np.argsort(-offsets)]
    span = float(offsets.max())
    chosen: list[int] = []
    for rank in range(count, 0, -1):
        distance = np.abs(offsets - span * rank / count)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    return chosen


def geometric_votes(
    depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray, rel_tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Free-space violation votes and test counts per pixel of every frame against all others, int32 [S,h,w].

    ``depth`` [S,h,w] (NaN or <= 0 invalid), ``intrinsics`` [S,3,3] for that resolution, ``extrinsics``
    [S,3,4] camera-from-world of the same window.
    """
    views = [make_mask_view(i, depth[i], intrinsics[i], extrinsics[i]) for i in range(depth.shape[0])]
    votes = np.zeros(depth.shape, dtype=np.int32)
    tested = np.zeros_like(votes)
    for i, view in enumerate(views):
        votes[i], tested[i] = consistency_votes(view, views[:i] + views[i + 1 :], rel_tolerance)
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
    geometric: np.ndarray | None,
    network_prob: np.ndarray | None,
    threshold: float,
    fusion: str,
    tested: np.ndarray | None = None,
) -> np.ndarray:
    """Combine the geometric decision and the network probability (see ``MASK_FUSIONS_DOC``).

    ``tested`` (bool, like ``geometric``, [..., h, w]) marks where the flow-residual test was made, for
    ``"tested"`` and ``"flow"``; without it those fusions are ``"max"``.
    """
    if geometric is None and network_prob is None:
        raise ValueError("fuse_masks needs at least one of the geometric mask and the network probability")
    if network_prob is None:
        return geometric.copy()
    if geometric is None:
        return network_prob >= threshold
    if fusion == "max" or (fusion in ("tested", "flow") and tested is None):
        return geometric | (network_prob >= threshold)
    if fusion == "tested":
        return np.where(tested, geometric, geometric | (network_prob >= threshold))
    if fusion == "flow":
        ran = np.any(tested, axis=(-2, -1), keepdims=True)
        return np.where(ran, geometric, geometric | (network_prob >= threshold))
    if fusion == "mean":
        return 0.5 * (geometric.astype(np.float32) + network_prob) >= threshold
    raise ValueError(f"unknown mask fusion {fusion!r}; use one of {sorted(MASK_FUSIONS_DOC)}")
