"""Aligning each window to the global trajectory with a similarity transform estimated on the overlap frames.

The same image appears in both windows, so pixel (u, v) of an overlap frame gives a 3-D correspondence for
free: the point lifted with the previous window's (global) depth and pose against the point lifted with the
new window's depth and pose. The Sim(3) is fitted to those correspondences, weighted by ``sqrt(conf_prev *
conf_new)``, restricted to static pixels (either window's dynamic mask excludes a pixel), plus the overlap
camera centres, with IRLS-Huber on residuals relative to depth. Fallbacks, in order:

1. ``points``: enough point correspondences (depth maps make the scale observable even under pure rotation).
2. ``centres``: too few points but the overlap camera centres span at least ``min_chain_baseline`` times the
   median depth: rotation from the overlap rotations, scale and translation from the centres.
3. ``rotation_only``: baseline too small to observe scale: rotation from the overlap rotations, the last scale
   kept, translation from the centres.
4. ``no_overlap``: no shared frame (stride = size, single-frame windows, frames dropped): the window's first
   camera is placed at the last published pose (zero motion assumed) and the scale is the ratio of median
   depths of the last published frame and the window's first frame (adjacent in time, similar view).
5. ``anchor``: first window of a segment: placed at the segment anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from page4d_ros.pipeline.geometry import Sim3, average_rotation, robust_sim3

MIN_POINT_CORRESPONDENCES = 50
CENTRE_WEIGHT_FRACTION = 0.1


@dataclass
class FrameGeometry:
    """One window frame in some reference frame: pose, depth (NaN invalid), K, confidence, dynamic flag."""

    stamp_ns: int
    T_world_cam: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    confidence: np.ndarray
    dynamic: np.ndarray


@dataclass
class Alignment:
    """Result of aligning one window: window units/frame to global, how it was found, and its residual."""

    transform: Sim3
    method: str
    residual: float
    overlap_frames: int


def _sample_pixels(valid: np.ndarray, max_points: int) -> np.ndarray:
    """Flat indices of at most ``max_points`` valid pixels on a regular subsampling."""
    index = np.flatnonzero(valid)
    if index.size > max_points:
        index = index[np.linspace(0, index.size - 1, max_points).astype(np.int64)]
    return index


def _world_points(frame: FrameGeometry, flat_index: np.ndarray) -> np.ndarray:
    """World points of the pixels ``flat_index`` (rays of those pixels only, not of the whole image)."""
    width = frame.depth.shape[1]
    pixels = np.stack([flat_index % width, flat_index // width, np.ones_like(flat_index)], axis=1)
    rays = pixels.astype(np.float64) @ np.linalg.inv(frame.K).T
    cam = rays * frame.depth.reshape(-1)[flat_index, None].astype(np.float64)
    return cam @ frame.T_world_cam[:3, :3].T + frame.T_world_cam[:3, 3]


def _rotation_between(previous: list[FrameGeometry], current: list[FrameGeometry]) -> np.ndarray:
    """Rotation taking the new window's camera orientations onto the previous (global) ones."""
    return average_rotation(
        np.stack([p.T_world_cam[:3, :3] @ c.T_world_cam[:3, :3].T for p, c in zip(previous, current)])
    )


def align_overlap(
    previous: list[FrameGeometry],
    current: list[FrameGeometry],
    last_scale: float,
    huber_delta: float,
    min_baseline: float,
    max_points: int,
) -> Alignment:
    """Sim(3) from the ``current`` window's frame to the global frame of ``previous`` (same stamps, order)."""
    if not previous or len(previous) != len(current):
        raise ValueError("align_overlap needs the same non-empty list of overlap frames from both windows")
    per_frame = max(MIN_POINT_CORRESPONDENCES, max_points // len(previous))
    sources, targets, weights, depths = [], [], [], []
    for prev, cur in zip(previous, current):
        if prev.depth.shape != cur.depth.shape:
            continue
        valid = (
            np.isfinite(prev.depth)
            & np.isfinite(cur.depth)
            & (prev.depth > 0)
            & (cur.depth > 0)
            & ~prev.dynamic
            & ~cur.dynamic
        )
        index = _sample_pixels(valid, per_frame)
        if index.size == 0:
            continue
        sources.append(_world_points(cur, index))
        targets.append(_world_points(prev, index))
        weights.append(np.sqrt(prev.confidence.reshape(-1)[index] * cur.confidence.reshape(-1)[index]))
        depths.append(prev.depth.reshape(-1)[index].astype(np.float64))
    prev_centres = np.stack([p.T_world_cam[:3, 3] for p in previous])
    cur_centres = np.stack([c.T_world_cam[:3, 3] for c in current])
    count = sum(s.shape[0] for s in sources)
    if count >= MIN_POINT_CORRESPONDENCES:
        source = np.concatenate(sources)
        target = np.concatenate(targets)
        weight = np.maximum(np.concatenate(weights), 0.0)
        depth = np.concatenate(depths)
        # Camera centres join as correspondences carrying a fixed share of the total weight.
        centre_weight = np.full(len(previous), CENTRE_WEIGHT_FRACTION * weight.sum() / len(previous))
        source = np.concatenate([source, cur_centres])
        target = np.concatenate([target, prev_centres])
        weight = np.concatenate([weight, centre_weight])
        depth = np.concatenate([depth, np.full(len(previous), np.median(depth))])
        if weight.sum() > 0:
            transform, residual = robust_sim3(source, target, weight, depth, huber_delta)
            return Alignment(transform, "points", residual, len(previous))
    rotation = _rotation_between(previous, current)
    all_depths = np.concatenate([p.depth.reshape(-1) for p in previous])
    finite_depths = all_depths[np.isfinite(all_depths) & (all_depths > 0)]
    median_depth = float(np.median(finite_depths)) if finite_depths.size else 1.0
    prev_mean, cur_mean = prev_centres.mean(axis=0), cur_centres.mean(axis=0)
    prev_spread = prev_centres - prev_mean
    cur_spread = (cur_centres - cur_mean) @ rotation.T
    baseline = 2.0 * float(np.linalg.norm(prev_spread, axis=1).max())
    denominator = float(np.sum(cur_spread**2))
    if len(previous) >= 2 and baseline >= min_baseline * median_depth and denominator > 0:
        scale = float(np.sum(prev_spread * cur_spread) / denominator)
        method = "centres"
        if scale <= 0:
            scale, method = last_scale, "rotation_only"
    else:
        scale, method = last_scale, "rotation_only"
    transform = Sim3(scale, rotation, prev_mean - scale * rotation @ cur_mean)
    residual = float(
        np.mean(np.linalg.norm(transform.apply_points(cur_centres) - prev_centres, axis=1)) / median_depth
    )
    return Alignment(transform, method, residual, len(previous))


def align_adjacent(last: FrameGeometry, first: FrameGeometry, last_scale: float) -> Alignment:
    """``no_overlap`` fallback: put ``first`` at ``last``'s global pose, scale from the median depths."""
    last_depth = last.depth[np.isfinite(last.depth) & (last.depth > 0)]
    first_depth = first.depth[np.isfinite(first.depth) & (first.depth > 0)]
    scale = last_scale
    if last_depth.size and first_depth.size:
        scale = float(np.median(last_depth) / np.median(first_depth))
    return Alignment(
        anchor_transform(last.T_world_cam, first.T_world_cam, scale), "no_overlap", float("nan"), 0
    )


def anchor_transform(T_global_target: np.ndarray, T_window_first: np.ndarray, scale: float) -> Sim3:
    """Sim(3) that maps the window pose ``T_window_first`` exactly onto ``T_global_target`` with ``scale``."""
    rotation = T_global_target[:3, :3] @ T_window_first[:3, :3].T
    translation = T_global_target[:3, 3] - scale * rotation @ T_window_first[:3, 3]
    return Sim3(scale, rotation, translation)
