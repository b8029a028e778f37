"""Metric scale from a selectable source, smoothed, with an observability state.

The pipeline's global frame is kept in *output units*. Each window, the selected source measures the ratio ``r
= metric / output`` on that window; the chained window is then rescaled about an anchor point by a correction
``c`` (``c = r`` at the first observation, ``c = r ** alpha`` afterwards: an exponential moving average of the
log-scale), so published poses stay continuous. Sources:

- ``none``: model units, never corrected (state ``model_units``).
- ``fixed``: the first window is multiplied by ``scale_factor``; later changes of the factor apply as a
  correction.
- ``odometry``: metric positions at given stamps (TF / wheel odometry); ``r`` is the ratio of the RMS spreads
  of the metric and estimated camera positions over the recent frames (rotation and offset invariant);
  observable only when the metric positions span at least ``scale_min_baseline_m``.
- ``depth``: a metric depth image aligned with the camera; ``r`` is the median per-pixel ratio on static
  pixels.
- ``camera_height``: a ground plane is fitted (RANSAC) to static points below the cameras whose normal is
  close to the cameras' down axis; ``r = camera_height_m / median camera-to-plane distance``.

States: ``model_units`` (no metric source), ``fixed``, ``unobserved`` (metric source, nothing measured yet),
``metric`` (measured on this window), ``held`` (measured before, not observable on this window: scale kept).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from page4d_ros.pipeline.config import PipelineConfig

SCALE_HISTORY_FRAMES = 64
ODOMETRY_BUFFER = 4096
METRIC_DEPTH_BUFFER = 16
MIN_DEPTH_PIXELS = 100
PLANE_RANSAC_ITERATIONS = 200
PLANE_MAX_TILT_COS = np.cos(np.deg2rad(35.0))
PLANE_INLIER_FRACTION = 0.01
MIN_PLANE_INLIERS = 100


@dataclass
class WindowScaleInputs:
    """What a scale source may look at for one chained window (global output units)."""

    stamps_ns: np.ndarray
    camera_centres: np.ndarray
    camera_down_axes: np.ndarray
    static_points_world: np.ndarray
    depth_output_units: list[np.ndarray]
    output_pixel_source_coords: tuple[np.ndarray, np.ndarray]  # filled for the depth source only
    source_size: tuple[int, int]


class ScaleEstimator:
    """Keeps the metric inputs (bounded) and turns each window into a scale correction and a state."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._odometry: deque[tuple[int, np.ndarray]] = deque(maxlen=ODOMETRY_BUFFER)
        self._metric_depth: deque[tuple[int, np.ndarray]] = deque(maxlen=METRIC_DEPTH_BUFFER)
        self._pairs: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=SCALE_HISTORY_FRAMES)
        self._observed = False
        self._applied_fixed_factor: float | None = None
        self.state = self._initial_state()
        self.last_ratio = float("nan")

    def _initial_state(self) -> str:
        return {"none": "model_units", "fixed": "fixed"}.get(self.config.scale_source, "unobserved")

    @property
    def is_metric(self) -> bool:
        """True when output units are metres (fixed factor, or measured at least once)."""
        return self.config.scale_source == "fixed" or self._observed

    def reset_history(self) -> None:
        """Forget the previous segment's position pairs (keep the metric inputs and the observed flag)."""
        self._pairs.clear()

    def add_odometry(self, stamp_ns: int, position_xyz: np.ndarray) -> None:
        """Store a metric position of the camera (or a rigidly attached frame) at ``stamp_ns``."""
        position = np.asarray(position_xyz, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"odometry position must be 3 finite numbers, got {position_xyz!r}")
        if self._odometry and stamp_ns <= self._odometry[-1][0]:
            if stamp_ns < self._odometry[-1][0] - int(1e9 * self.config.max_gap_s):
                self._odometry.clear()  # time went backwards (bag loop): start over
            else:
                return
        self._odometry.append((int(stamp_ns), position))

    def add_metric_depth(self, stamp_ns: int, depth_m: np.ndarray) -> None:
        """Store a metric depth image (same field of view as the camera, any resolution, 0/NaN = invalid)."""
        depth = np.asarray(depth_m)
        if depth.ndim != 2 or depth.shape[0] < 2 or depth.shape[1] < 2 or depth.dtype.kind not in "fiu":
            raise ValueError(f"metric depth must be a 2-D numeric image, got {depth.dtype} {depth.shape}")
        if depth.dtype.kind in "iu":
            raise ValueError(
                "metric depth must be float metres; convert 16UC1 millimetres with depth / 1000.0"
            )
        self._metric_depth.append((int(stamp_ns), depth.astype(np.float32, copy=False)))

    def initial_factor(self) -> float:
        """Scale of the very first window of the stream (model units to output units)."""
        if self.config.scale_source == "fixed":
            self._applied_fixed_factor = self.config.scale_factor
            return self.config.scale_factor
        return 1.0

    def correction(self, inputs: WindowScaleInputs) -> float:
        """Multiplicative correction for this window (1.0 when nothing is measured) and update ``state``."""
        source = self.config.scale_source
        if source == "none":
            return 1.0
        if source == "fixed":
            applied = self._applied_fixed_factor or self.config.scale_factor
            self._applied_fixed_factor = self.config.scale_factor
            return self.config.scale_factor / applied
        ratio = None
        if source == "odometry":
            ratio = self._odometry_ratio(inputs)
        elif source == "depth":
            ratio = self._depth_ratio(inputs)
        elif source == "camera_height":
            ratio = self._camera_height_ratio(inputs)
        if ratio is None or not np.isfinite(ratio) or ratio <= 0:
            self.state = "held" if self._observed else "unobserved"
            return 1.0
        self.last_ratio = float(ratio)
        self.state = "metric"
        if not self._observed:
            self._observed = True
            return float(ratio)
        return float(ratio**self.config.scale_ema_alpha)

    def record_published(
        self, stamps_ns: np.ndarray, camera_centres: np.ndarray, correction: float, anchor: np.ndarray
    ) -> None:
        """Remember the final positions of the window's frames for the odometry ratio (bounded history).

        ``correction`` and ``anchor`` describe the rescaling applied to this window (``x -> a + c (x - a)``).
        """
        if self.config.scale_source != "odometry":
            return
        # Earlier pairs were in the units before this correction: map them the same way to stay consistent.
        if correction != 1.0:
            rescaled = [
                (stamp, metric, anchor + correction * (estimate - anchor))
                for stamp, metric, estimate in self._pairs
            ]
            self._pairs.clear()
            self._pairs.extend(rescaled)
        known = {stamp for stamp, _, _ in self._pairs}
        for stamp, centre in zip(stamps_ns, camera_centres):
            metric = self._odometry_at(int(stamp))
            if metric is not None and int(stamp) not in known:
                self._pairs.append((int(stamp), metric, centre.copy()))

    def _odometry_at(self, stamp_ns: int) -> np.ndarray | None:
        """Linearly interpolated metric position at ``stamp_ns`` (None if no sample is close enough)."""
        if not self._odometry:
            return None
        stamps = np.fromiter((s for s, _ in self._odometry), dtype=np.int64, count=len(self._odometry))
        max_dt = int(self.config.odometry_max_dt_s * 1e9)
        after = int(np.searchsorted(stamps, stamp_ns))
        if after < len(stamps) and stamps[after] == stamp_ns:
            return self._odometry[after][1]
        if 0 < after < len(stamps):
            t0, p0 = self._odometry[after - 1]
            t1, p1 = self._odometry[after]
            if min(stamp_ns - t0, t1 - stamp_ns) <= max_dt and t1 - t0 <= 4 * max_dt:
                weight = (stamp_ns - t0) / (t1 - t0)
                return (1.0 - weight) * p0 + weight * p1
            return None
        nearest = 0 if after == 0 else len(stamps) - 1
        if abs(int(stamps[nearest]) - stamp_ns) <= max_dt:
            return self._odometry[nearest][1]
        return None

    def _odometry_ratio(self, inputs: WindowScaleInputs) -> float | None:
        pairs = {stamp: (metric, estimate) for stamp, metric, estimate in self._pairs}
        for stamp, centre in zip(inputs.stamps_ns, inputs.camera_centres):
            position = self._odometry_at(int(stamp))
            if position is not None:
                pairs[int(stamp)] = (position, centre)
        if len(pairs) < 3:
            return None
        metric_arr = np.asarray([metric for metric, _ in pairs.values()])
        estimate_arr = np.asarray([estimate for _, estimate in pairs.values()])
        metric_centred = metric_arr - metric_arr.mean(axis=0)
        estimate_centred = estimate_arr - estimate_arr.mean(axis=0)
        if 2.0 * np.linalg.norm(metric_centred, axis=1).max() < self.config.scale_min_baseline_m:
            return None
        spread_estimate = float(np.sum(estimate_centred**2))
        if spread_estimate <= 0:
            return None
        return float(np.sqrt(np.sum(metric_centred**2) / spread_estimate))

    def _depth_ratio(self, inputs: WindowScaleInputs) -> float | None:
        if not self._metric_depth:
            return None
        max_dt = int(self.config.metric_depth_max_dt_s * 1e9)
        source_w, source_h = inputs.source_size
        u_src, v_src = inputs.output_pixel_source_coords
        ratios = []
        for stamp, depth in zip(inputs.stamps_ns, inputs.depth_output_units):
            match = min(self._metric_depth, key=lambda item, s=int(stamp): abs(item[0] - s))
            if abs(match[0] - int(stamp)) > max_dt:
                continue
            metric = match[1]
            rows = np.clip(np.round((v_src + 0.5) * metric.shape[0] / source_h - 0.5), 0, metric.shape[0] - 1)
            cols = np.clip(np.round((u_src + 0.5) * metric.shape[1] / source_w - 0.5), 0, metric.shape[1] - 1)
            sampled = metric[rows.astype(int), cols.astype(int)]
            ok = np.isfinite(sampled) & (sampled > 0) & np.isfinite(depth) & (depth > 0)
            if np.count_nonzero(ok) >= MIN_DEPTH_PIXELS:
                ratios.append(np.median(sampled[ok] / depth[ok]))
        return float(np.median(ratios)) if ratios else None

    def _camera_height_ratio(self, inputs: WindowScaleInputs) -> float | None:
        points = inputs.static_points_world
        if points.shape[0] < MIN_PLANE_INLIERS:
            return None
        down = inputs.camera_down_axes.mean(axis=0)
        down /= np.linalg.norm(down)
        centre = inputs.camera_centres.mean(axis=0)
        # Only points below the cameras can be ground; the plane must face the cameras' down axis.
        below = points[(points - centre) @ down > 0]
        if below.shape[0] < MIN_PLANE_INLIERS:
            return None
        rng = np.random.default_rng(0)
        typical = float(np.median(np.linalg.norm(below - centre, axis=1)))
        tolerance = 0.01 * typical
        best_inliers, best_plane = 0, None
        samples = rng.integers(0, below.shape[0], size=(PLANE_RANSAC_ITERATIONS, 3))
        for a, b, c in samples:
            normal = np.cross(below[b] - below[a], below[c] - below[a])
            norm = np.linalg.norm(normal)
            if norm < 1e-12:
                continue
            normal /= norm
            if abs(normal @ down) < PLANE_MAX_TILT_COS:
                continue
            offset = -normal @ below[a]
            inliers = int(np.count_nonzero(np.abs(below @ normal + offset) < tolerance))
            if inliers > best_inliers:
                best_inliers, best_plane = inliers, (normal, offset)
        if best_plane is None or best_inliers < max(
            MIN_PLANE_INLIERS, PLANE_INLIER_FRACTION * below.shape[0]
        ):
            return None
        normal, offset = best_plane
        inlier_points = below[np.abs(below @ normal + offset) < tolerance]
        # Refine the plane by least squares on the inliers (smallest principal axis).
        mean = inlier_points.mean(axis=0)
        _, _, vt = np.linalg.svd(inlier_points - mean, full_matrices=False)
        normal = vt[2]
        heights = np.abs((inputs.camera_centres - mean) @ normal)
        height = float(np.median(heights))
        if height <= 0:
            return None
        return self.config.camera_height_m / height
