"""``StreamingPipeline``: frames in, one globally consistent ``FrameResult`` per accepted frame out.

Windowing policy: the first window of a segment runs when ``window_size`` frames are buffered and publishes
all of them; afterwards a window runs whenever ``window_stride`` new frames exist, made of the last
``window_size - window_stride`` already published frames (overlap) plus the new ones, and publishes only the
new ones. Every accepted frame is therefore published exactly once, from the first window that contains it, in
time order. ``flush`` runs a final window over what is buffered (with a larger overlap). The overlap frames of
the previous window (in global units) are what the next window is chained to (see ``chaining``).

Resets (new segment, re-anchored at the last published pose): ``reset(reason)``, time going backwards (bag
loop), a gap longer than ``max_gap_s`` or a change of image size; the buffered frames are published first,
except on an explicit ``reset`` where they are dropped and counted.

Each window: depth cuts; chaining on the overlap frames, whose published dynamic masks are reused (a frame's
mask is computed once); dynamic masks of the new frames in the global frame, against comparison frames from
the window and the recently published frames (``masks``; this history is dropped at resets and after a window
that could not be chained by overlap); metric scale; per-frame outputs. ``stats.last_stage_ms`` times each.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from page4d_ros.pipeline.chaining import (
    Alignment,
    FrameGeometry,
    align_adjacent,
    align_overlap,
    anchor_transform,
)
from page4d_ros.pipeline.config import PipelineConfig
from page4d_ros.pipeline.geometry import Sim3, extrinsics_to_poses, pixel_rays, poses_to_extrinsics
from page4d_ros.pipeline.masks import (
    MaskView,
    comparison_frames,
    consistency_votes,
    dilate,
    fuse_masks,
    geometric_mask,
    make_mask_view,
    network_probability,
)
from page4d_ros.pipeline.preprocess import ResizePlan, images_to_tensor_layout, plan_resize, resize_rgb
from page4d_ros.pipeline.refinement import FlowMaskSettings, FlowRefiner, PoseReference
from page4d_ros.pipeline.scale import ScaleEstimator, WindowScaleInputs
from page4d_ros.pipeline.types import Frame, FrameResult, Predictor, WindowPrediction
from page4d_ros.pipeline.windowing import BufferedFrame, FrameQueue, KeyframeGate

LOGGER = logging.getLogger("page4d_ros.pipeline")
MAX_WARNINGS = 20
# Alignments that tie a window to the previous frames through shared frames (the mask history stays valid).
CHAINED_METHODS = ("points", "centres", "rotation_only", "depth_ratio")
# Overlap pixels needed for the depth-ratio anchoring of ``pose_refinement: flow``.
MIN_DEPTH_RATIO_PIXELS = 50
# Older published frames kept for the dynamic-mask check, beyond the last window's worth.
MASK_HISTORY_MAX_OLDER = 16
SCALE_POINTS_PER_WINDOW = 20000


@dataclass
class PipelineStats:
    """Counters and gauges for diagnostics.

    Timings of the last window (wall clock, ms): ``last_inference_ms`` (the predictor), ``last_window_ms``
    (the whole window including the resizing of its new frames as they arrived), ``last_postprocess_ms``
    (the same without the predictor), and ``last_stage_ms`` per
    stage: ``preprocess`` (resizing the window's new frames and stacking the input), ``inference``, ``depth``
    (cropping, confidence cuts), ``masks``, ``chaining``, ``refinement`` (flow poses and flow-residual
    masks, with ``pose_refinement: flow``), ``scale``, ``points`` (per-frame outputs and clouds) and
    ``total``.

    Pose sources (``pose_refinement: flow``): ``pose_source_flow`` / ``pose_source_network`` count the new
    frames whose published pose came from flow + PnP or from the network (fallback); ``pose_last_source``,
    ``pose_last_fallback`` (why the network was used: ``refinement.FALLBACK_REASONS``) and
    ``pose_last_inliers`` describe the last frame; ``pose_zero_motion`` counts the flow poses of a camera
    found static (``refine_zero_motion_px``). ``mask_flow_discarded`` counts frames whose flow-residual
    decision was discarded (more than ``mask_flow_max_fraction`` of its tested pixels dynamic).
    """

    frames_in: int = 0
    frames_accepted: int = 0
    frames_skipped: int = 0
    frames_dropped: int = 0
    frames_rejected: int = 0
    frames_out: int = 0
    windows: int = 0
    resets: int = 0
    last_inference_ms: float = float("nan")
    mean_inference_ms: float = float("nan")
    last_window_ms: float = float("nan")
    last_postprocess_ms: float = float("nan")
    last_stage_ms: dict[str, float] = field(default_factory=dict)
    buffer_depth: int = 0
    queue_depth: int = 0
    scale: float = float("nan")
    scale_state: str = ""
    scale_is_metric: bool = False
    alignment: str = ""
    alignment_residual: float = float("nan")
    pose_source_flow: int = 0
    pose_source_network: int = 0
    pose_last_source: str = ""
    pose_last_fallback: str = ""
    pose_last_inliers: int = 0
    pose_zero_motion: int = 0
    mask_flow_discarded: int = 0
    last_reset_reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A plain-dict snapshot (for diagnostics key/values)."""
        return {
            name: (type(value)(value) if isinstance(value, (list, dict)) else value)
            for name, value in vars(self).items()
        }


class _StageClock:
    """Wall-clock milliseconds per named stage of one window (``time.perf_counter``), summed per name."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, name: str, milliseconds: float) -> None:
        """Add ``milliseconds`` to stage ``name``."""
        self.ms[name] = self.ms.get(name, 0.0) + milliseconds

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, 1e3 * (time.perf_counter() - start))


class StreamingPipeline:
    """Turns an endless stream of :class:`Frame` into :class:`FrameResult` (see the module docstring).

    Not thread-safe except :meth:`submit`, which only enqueues into a bounded drop-oldest queue; one worker
    calls
    :meth:`process_pending` (or use :meth:`push`, which does both).
    """

    def __init__(self, config: PipelineConfig | None, predictor: Predictor) -> None:
        self.config = config if config is not None else PipelineConfig()
        if not isinstance(self.config, PipelineConfig):
            raise ValueError(f"config must be a PipelineConfig, got {type(self.config).__name__}")
        self.config.validate()
        if not isinstance(predictor, Predictor):
            raise ValueError("predictor must provide predict(images, stamps_ns) and has_dynamics_map")
        self.predictor = predictor
        self.stats = PipelineStats()
        self._queue = FrameQueue(self.config.buffer_max_frames)
        self._gate = KeyframeGate()
        self._scale = ScaleEstimator(self.config)
        self._context: list[BufferedFrame] = []
        self._pending: list[BufferedFrame] = []
        self._previous: dict[int, FrameGeometry] = {}
        self._last_published: FrameGeometry | None = None
        self._last_scale: float | None = None
        self._last_stamp: int | None = None
        self._plan: ResizePlan | None = None
        self._frame_index = 0
        self._window_index = 0
        self._segment_index = 0
        self._inference_ms_total = 0.0
        self._preprocess_ms = 0.0
        self._mask_history: list[MaskView] = []
        self._refiner = self._make_refiner()
        self._flow_poses: dict[int, np.ndarray] = {}
        self._warned: set[str] = set()
        self.history: deque[tuple[int, np.ndarray]] = deque(maxlen=self.config.history_max_poses)
        self.stats.scale_state = self._scale.state

    # ----------------------------------------------------------------------------------------------- input
    def submit(self, frame: Frame) -> None:
        """Validate and enqueue ``frame`` without processing it (thread-safe, never blocks)."""
        try:
            frame.validate()
        except ValueError:
            self.stats.frames_rejected += 1
            raise
        self.stats.frames_in += 1
        self.stats.frames_dropped += self._queue.put(frame)
        self.stats.queue_depth = len(self._queue)

    def process_pending(self) -> list[FrameResult]:
        """Process every queued frame; return the frames finished meanwhile, in time order."""
        results: list[FrameResult] = []
        while True:
            frame = self._queue.pop()
            if frame is None:
                break
            results.extend(self._accept(frame))
        self.stats.queue_depth = len(self._queue)
        return results

    def push(self, frame: Frame) -> list[FrameResult]:
        """Submit ``frame`` and process it; returns the frames finished by this push (maybe none)."""
        self.submit(frame)
        return self.process_pending()

    def flush(self) -> list[FrameResult]:
        """Process the queue and publish every buffered frame with a final (shorter-stride) window."""
        return self.process_pending() + self._flush_buffered()

    def _flush_buffered(self) -> list[FrameResult]:
        """Publish the accepted but unpublished frames with one last window (the queue is left alone)."""
        results: list[FrameResult] = []
        if self._pending:
            overlap = min(len(self._context), max(0, self.config.window_size - len(self._pending)))
            window = self._context[len(self._context) - overlap :] + self._pending
            new = self._pending
            self._pending = []
            results.extend(self._run_window(window, len(new)))
        self.stats.buffer_depth = len(self._pending)
        return results

    def reset(self, reason: str) -> None:
        """Start a new segment at the last published pose; buffered frames are dropped (counted)."""
        self.stats.frames_dropped += len(self._pending)
        self._reset(reason)

    def add_odometry(self, stamp_ns: int, position_xyz_metric: np.ndarray) -> None:
        """Metric position (e.g. from TF or wheel odometry) for ``scale_source='odometry'``."""
        self._scale.add_odometry(int(stamp_ns), position_xyz_metric)

    def add_metric_depth(self, stamp_ns: int, depth_m: np.ndarray) -> None:
        """Metric depth image aligned with the camera for ``scale_source='depth'``."""
        self._scale.add_metric_depth(int(stamp_ns), depth_m)

    def update_config(self, **runtime_tunables: Any) -> None:
        """Change run-time tunables (``PipelineConfig.runtime_tunable_fields()``); others raise ValueError."""
        fixed = sorted(set(runtime_tunables) - PipelineConfig.runtime_tunable_fields())
        if fixed:
            raise ValueError(f"{fixed} cannot change while running; build a new pipeline to change them")
        self.config = self.config.replace(**runtime_tunables)
        self._scale.config = self.config
        if self._refiner is not None:
            cfg = self.config
            self._refiner.min_inliers = cfg.refine_min_inliers
            self._refiner.min_inlier_ratio = cfg.refine_min_inlier_ratio
            self._refiner.max_flow_fraction = cfg.refine_max_flow_fraction
            self._refiner.max_rotation_gap_deg = cfg.refine_max_rotation_gap_deg
            self._refiner.reprojection_px = cfg.refine_reprojection_px
            self._refiner.zero_motion_px = cfg.refine_zero_motion_px

    def _make_refiner(self) -> FlowRefiner | None:
        """The flow refiner of ``pose_refinement: flow`` (None for ``none``)."""
        cfg = self.config
        if cfg.pose_refinement != "flow":
            return None
        return FlowRefiner(
            flow_long_side=cfg.flow_long_side,
            flow_preset=cfg.flow_preset,
            mask_flow_preset=cfg.mask_flow_preset,
            min_inliers=cfg.refine_min_inliers,
            min_inlier_ratio=cfg.refine_min_inlier_ratio,
            max_flow_fraction=cfg.refine_max_flow_fraction,
            max_rotation_gap_deg=cfg.refine_max_rotation_gap_deg,
            reprojection_px=cfg.refine_reprojection_px,
            zero_motion_px=cfg.refine_zero_motion_px,
            max_images=max(cfg.buffer_max_frames, 2 * cfg.window_size) + MASK_HISTORY_MAX_OLDER,
        )

    # -------------------------------------------------------------------------------------------- internals
    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        LOGGER.warning(message)
        if len(self.stats.warnings) < MAX_WARNINGS:
            self.stats.warnings.append(message)

    def _reset(self, reason: str) -> None:
        self._context = []
        self._pending = []
        self._previous = {}
        self._mask_history = []
        self._flow_poses = {}
        if self._refiner is not None:
            self._refiner.clear()
        self._last_stamp = None
        self._plan = None
        self._gate.reset()
        self._scale.reset_history()
        reset_stream = getattr(self.predictor, "reset_stream", None)
        if callable(reset_stream):
            reset_stream()
        self._segment_index += 1
        self.stats.resets += 1
        self.stats.last_reset_reason = reason
        self.stats.buffer_depth = 0
        LOGGER.info("pipeline reset: %s", reason)

    def _accept(self, frame: Frame) -> list[FrameResult]:
        results: list[FrameResult] = []
        if frame.calibration is not None and frame.calibration.is_distorted:
            self._warn_once(
                "distortion",
                f"camera calibration has non-zero distortion ({frame.calibration.distortion_model}); the "
                "pipeline expects rectified images (use image_rect)",
            )
        if self._last_stamp is not None:
            if frame.stamp_ns == self._last_stamp:
                self.stats.frames_skipped += 1
                self._warn_once("duplicate", f"dropping frames with a repeated stamp ({frame.stamp_ns} ns)")
                return results
            reason = None
            if frame.stamp_ns < self._last_stamp:
                reason = f"time jumped backwards by {(self._last_stamp - frame.stamp_ns) / 1e9:.3f} s"
            elif frame.stamp_ns - self._last_stamp > self.config.max_gap_s * 1e9:
                reason = f"gap of {(frame.stamp_ns - self._last_stamp) / 1e9:.3f} s > max_gap_s"
            elif self._plan is not None and (self._plan.source_width, self._plan.source_height) != (
                frame.rgb.shape[1],
                frame.rgb.shape[0],
            ):
                reason = f"image size changed to {frame.rgb.shape[1]}x{frame.rgb.shape[0]}"
            if reason is not None:
                results.extend(self._flush_buffered())
                self._reset(reason)
        self._last_stamp = frame.stamp_ns
        if not self._gate.accept(
            frame, self.config.keyframe_min_interval_s, self.config.keyframe_min_motion_px
        ):
            self.stats.frames_skipped += 1
            return results
        if self._plan is None:
            self._plan = plan_resize(
                frame.rgb.shape[1],
                frame.rgb.shape[0],
                self.config.model_long_side,
                self.config.resize_mode,
                size_rule=getattr(self.predictor, "size_rule", None),
            )
        resize_start = time.perf_counter()
        network_rgb = resize_rgb(frame.rgb, self._plan)
        if self._refiner is not None:
            self._refiner.add_image(int(frame.stamp_ns), frame.rgb, self._plan)
        self._preprocess_ms += 1e3 * (time.perf_counter() - resize_start)
        self._pending.append(
            BufferedFrame(
                self._frame_index,
                int(frame.stamp_ns),
                frame.frame_id,
                network_rgb,
                self._plan,
                frame.calibration,
            )
        )
        self._frame_index += 1
        self.stats.frames_accepted += 1
        size, stride = self.config.window_size, self.config.window_stride
        while True:
            overlap = min(len(self._context), size - stride)
            needed = size - overlap
            if len(self._pending) < needed:
                break
            window = self._context[len(self._context) - overlap :] + self._pending[:needed]
            self._pending = self._pending[needed:]
            results.extend(self._run_window(window, needed))
        self.stats.buffer_depth = len(self._pending)
        return results

    def _valid_depth(self, depth: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Pixels with positive depth and confidence above the absolute and per-frame percentile limits."""
        valid = np.isfinite(depth) & (depth > 0) & np.isfinite(confidence)
        valid &= confidence >= self.config.conf_threshold
        if self.config.conf_percentile > 0:
            for i in range(depth.shape[0]):
                if np.any(valid[i]):
                    limit = np.percentile(confidence[i][valid[i]], self.config.conf_percentile)
                    valid[i] &= confidence[i] >= limit
        return valid

    def _dynamic_masks(
        self,
        window: list[BufferedFrame],
        prediction: WindowPrediction,
        depth: np.ndarray,
        K: np.ndarray,
        poses: np.ndarray,
        reused: dict[int, np.ndarray],
        flow_masks: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, list[MaskView]]:
        """Dynamic masks of the window's frames and the mask views of the newly computed ones.

        Frames already published keep their published mask (``reused``); the others are checked against
        comparison frames chosen among the window's frames and the recent published frames
        (``mask_history_s``), all in the global frame (``depth`` and ``poses`` after chaining and
        refinement). ``flow_masks`` (window index -> flow-residual decision, where tested) join the
        geometric decision.
        """
        cfg = self.config
        plan = window[0].plan
        dynamic = np.zeros(depth.shape, dtype=bool)
        for i, mask in reused.items():
            dynamic[i] = mask
        todo = [i for i in range(len(window)) if i not in reused]
        if not todo:
            return dynamic, []
        views: list[MaskView] = []
        geometric = None
        if cfg.mask_geometric:
            stride = cfg.mask_check_stride
            # Pixel (u, v) of the subsampled grid is pixel (n u, n v) of the full one: K scales by 1/n.
            K_check = K.copy()
            K_check[:, :2] /= stride
            extrinsics = poses_to_extrinsics(poses)
            use_grey = cfg.mask_photometric_tolerance > 0
            for i in todo:
                grey = None
                if use_grey:
                    rgb = plan.crop_to_output(window[i].network_rgb)[::stride, ::stride]
                    grey = (rgb.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
                views.append(
                    make_mask_view(
                        window[i].stamp_ns, depth[i, ::stride, ::stride], K_check[i], extrinsics[i], grey
                    )
                )
            window_stamps = {f.stamp_ns for f in window}
            coarse = np.zeros((len(todo), *views[0].shape), dtype=bool)
            compared = False
            for n, view in enumerate(views):
                candidates = views[:n] + views[n + 1 :]
                candidates += [
                    old
                    for old in self._mask_history
                    if old.stamp_ns in window_stamps
                    or abs(old.stamp_ns - view.stamp_ns) <= cfg.mask_history_s * 1e9
                ]
                chosen = comparison_frames(
                    view.stamp_ns, [c.stamp_ns for c in candidates], cfg.mask_compare_frames
                )
                compared = compared or bool(chosen)
                votes, tested = consistency_votes(
                    view,
                    [candidates[c] for c in chosen],
                    cfg.mask_rel_tolerance,
                    cfg.mask_photometric_tolerance,
                )
                coarse[n] = geometric_mask(votes, tested, cfg.mask_min_votes, cfg.mask_vote_fraction)
            if compared:
                # Without any other frame (single-frame windows) the geometric test has nothing to say.
                full = np.repeat(np.repeat(coarse, stride, axis=1), stride, axis=2)
                geometric = full[:, : depth.shape[1], : depth.shape[2]]
        tested = None
        if flow_masks and any(i in flow_masks for i in todo):
            geometric = np.zeros((len(todo), *depth.shape[1:]), bool) if geometric is None else geometric
            tested = np.zeros_like(geometric)
            for n, i in enumerate(todo):
                if i in flow_masks:
                    geometric[n] |= flow_masks[i][0]
                    tested[n] = flow_masks[i][1]
        network = None
        if prediction.dynamics is not None:
            full = network_probability(prediction.dynamics[todo], plan.network_height, plan.network_width)
            network = plan.crop_to_output(full)
        if geometric is not None or network is not None:
            fused = fuse_masks(geometric, network, cfg.mask_threshold, cfg.mask_fusion, tested)
            dynamic[todo] = dilate(fused, cfg.mask_dilate_px)
        return dynamic, views

    def _geometry_intrinsics(self, buffered: BufferedFrame, K_predicted: np.ndarray) -> np.ndarray:
        """Output-grid K for flow geometry: the camera's calibration when given, else the prediction."""
        if buffered.calibration is not None:
            return buffered.plan.intrinsics_to_output(buffered.calibration.K)
        return K_predicted

    def _refine(
        self,
        window: list[BufferedFrame],
        first_new: int,
        poses: np.ndarray,
        depth: np.ndarray,
        raw_depth: np.ndarray,
        K_predicted: np.ndarray,
        prediction: WindowPrediction,
        reused: dict[int, np.ndarray],
        alignment: Alignment,
    ) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Flow + PnP poses of the new frames (in order) and their flow-residual masks (``refinement``).

        Overlap frames keep the poses they were published with; each new frame is solved against the frame
        before it and a window frame up to ``refine_baseline_s`` back together (refined, with their
        confidence-filtered ``depth`` and dynamic pixels kept out), falling
        back to the network's relative pose (``poses``, chained) where the flow is unreliable. The masks use
        ``raw_depth`` (before the confidence cuts, same units). Returns the poses and, by window index, the
        flow masks with where they were tested.
        """
        cfg = self.config
        refiner = self._refiner
        plan = window[0].plan
        refined = poses.copy()
        for i in range(first_new):
            published = self._previous.get(window[i].stamp_ns)
            if published is not None:
                refined[i] = published.T_world_cam
        network_dynamic = None
        if prediction.dynamics is not None:
            probability = network_probability(prediction.dynamics, plan.network_height, plan.network_width)
            network_dynamic = plan.crop_to_output(probability) >= cfg.mask_threshold
        K = [self._geometry_intrinsics(window[i], K_predicted[i]) for i in range(len(window))]
        no_pixels = np.zeros(depth.shape[1:], dtype=bool)
        flow_masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i in range(first_new, len(window)):
            references: list[PoseReference] = []
            if i > 0:
                # The earliest window frame within refine_baseline_s (a longer baseline, less drift) and the
                # frame just before, solved together.
                span = cfg.refine_baseline_s * 1e9
                far = next(
                    j for j in range(i) if window[i].stamp_ns - window[j].stamp_ns <= span or j == i - 1
                )
                for j in dict.fromkeys((far, i - 1)):
                    excluded = reused.get(j, flow_masks.get(j, (no_pixels,))[0])
                    photometric_only = refiner.photometric_only(window[j].stamp_ns)
                    if photometric_only is not None and photometric_only.shape == excluded.shape:
                        excluded = excluded & ~photometric_only
                    if network_dynamic is not None:
                        excluded = excluded | network_dynamic[j]
                    references.append(
                        PoseReference(
                            window[j].stamp_ns,
                            refined[j],
                            np.linalg.inv(poses[j]) @ poses[i],
                            self._matching_depth(depth[j], depth.shape[1:]),
                            excluded,
                        )
                    )
            elif alignment.method == "no_overlap" and self._last_published is not None:
                last = self._last_published
                references.append(
                    PoseReference(
                        last.stamp_ns,
                        last.T_world_cam,
                        np.linalg.inv(last.T_world_cam) @ poses[i],
                        self._matching_depth(last.depth, depth.shape[1:]),
                        last.dynamic,
                    )
                )
            if references:
                refined[i] = refiner.refine_pose(references, window[i].stamp_ns, K[i]).T_world_cam
            if cfg.mask_flow:
                mask = self._flow_mask(window, i, refined, raw_depth, K[i], later=False)
                if mask is not None:
                    flow_masks[i] = mask
        if cfg.mask_flow:
            # A segment's first frames, whose earlier frames are too near, and frames whose earlier test
            # found nothing to compare or was discarded also compare with later ones (poses known now). The
            # earlier test's decision has kept their movers out of the next frames' poses meanwhile.
            for i in range(first_new, len(window)):
                if i not in flow_masks or self._needs_later_baselines(window, i):
                    mask = self._flow_mask(window, i, refined, raw_depth, K[i], later=True)
                    if mask is not None:
                        flow_masks[i] = mask
        stats, counts = self.stats, refiner.stats
        stats.pose_source_flow, stats.pose_source_network = counts.flow, counts.network
        stats.pose_last_source = counts.last_source
        stats.pose_last_fallback = counts.last_reason if counts.last_source == "network" else ""
        stats.pose_zero_motion = counts.zero_motion
        stats.pose_last_inliers = counts.last_inliers
        return refined, flow_masks

    @staticmethod
    def _matching_depth(depth: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``depth`` when it has ``shape``, else all NaN (a reference from before a size change has none)."""
        return depth if depth.shape == tuple(shape) else np.full(shape, np.nan, np.float32)

    def _flow_mask(
        self,
        window: list[BufferedFrame],
        i: int,
        poses: np.ndarray,
        depth: np.ndarray,
        K: np.ndarray,
        later: bool,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Flow-residual decision of window frame ``i`` against baselines within ``mask_flow_baseline_s``.

        Candidates are the earlier window frames and recently published frames, with ``later`` also the
        later window frames (whose poses are then known). Returns (dynamic, tested), or None when no
        baseline was compared or the decision was discarded (``mask_flow_max_fraction``).
        """
        cfg = self.config
        baselines = self._flow_mask_baselines(window, i, later)
        if not baselines:
            return None
        stamp_poses = {window[j].stamp_ns: poses[j] for j in range(len(window))}
        result = self._refiner.flow_residual_mask(
            window[i].stamp_ns,
            poses[i],
            depth[i],
            K,
            [(s, stamp_poses[s] if s in stamp_poses else self._flow_poses[s]) for s in baselines],
            FlowMaskSettings(
                cfg.mask_flow_threshold_px,
                cfg.mask_flow_relative,
                cfg.mask_flow_min_votes,
                cfg.mask_flow_depth_tolerance,
                cfg.mask_flow_confirm_grey,
                cfg.mask_flow_grow_px,
                cfg.mask_flow_sky_depth_ratio,
            ),
        )
        if result is not None and result[0].sum() > cfg.mask_flow_max_fraction * max(int(result[1].sum()), 1):
            self.stats.mask_flow_discarded += 1
            return None
        return result

    def _flow_mask_candidates(self, window: list[BufferedFrame], i: int) -> tuple[list[int], list[int]]:
        """Stamps of the earlier (window and recently published) and of the later window frames within
        ``mask_flow_baseline_s`` of window frame ``i`` (at least the nearest of each side)."""
        stamp = window[i].stamp_ns
        span = self.config.mask_flow_baseline_s * 1e9
        window_stamps = {f.stamp_ns for f in window}
        earlier = [window[j].stamp_ns for j in range(i)]
        earlier += [s for s in self._flow_poses if s < stamp and s not in window_stamps]
        later = [window[j].stamp_ns for j in range(i + 1, len(window))]
        sides = []
        for candidates in (earlier, later):
            nearest = min((abs(s - stamp) for s in candidates), default=0)
            sides.append([s for s in candidates if 0 < abs(s - stamp) <= max(span, nearest)])
        return sides[0], sides[1]

    def _needs_later_baselines(self, window: list[BufferedFrame], i: int) -> bool:
        """Whether window frame ``i``'s later frames reach farther than its earlier ones (a segment's first
        frames): its flow-residual test then also compares with them, once their poses are known. Slow
        movers hardly move over a short baseline (demo: a segment's frames 1-5 at 30 fps found nothing)."""
        earlier, later = self._flow_mask_candidates(window, i)
        stamp = window[i].stamp_ns
        reach = max((abs(s - stamp) for s in earlier), default=0)
        return max((abs(s - stamp) for s in later), default=0) > reach

    def _flow_mask_baselines(self, window: list[BufferedFrame], i: int, later: bool) -> list[int]:
        """Stamps of the frames window frame ``i``'s flow-residual test compares with: the earlier frames,
        with ``later`` the later window frames too (stamps only, so they are known before the inference)."""
        earlier, after = self._flow_mask_candidates(window, i)
        candidates = earlier + after if later else earlier
        chosen = comparison_frames(window[i].stamp_ns, candidates, self.config.mask_flow_baselines)
        return [candidates[c] for c in chosen]

    def _start_mask_flows(self, window: list[BufferedFrame], first_new: int) -> None:
        """Start the new frames' mask flows (against their baselines) before the inference."""
        assert self._refiner is not None
        pairs = []
        for i in range(first_new, len(window)):
            stamp = window[i].stamp_ns
            others = self._flow_mask_baselines(window, i, later=False)
            if self._needs_later_baselines(window, i):
                others += self._flow_mask_baselines(window, i, later=True)
            for other in dict.fromkeys(others):
                pairs += [(stamp, other), (other, stamp)]
        self._refiner.start_mask_flows(pairs)

    def _remember_flow_poses(self, stamps: np.ndarray, poses: np.ndarray) -> None:
        """Keep the final poses of the window's frames for later flow baselines (``mask_flow_baseline_s``)."""
        for stamp, pose in zip(stamps, poses):
            self._flow_poses[int(stamp)] = pose.copy()
        newest = int(stamps[-1])
        span = self.config.mask_flow_baseline_s * 1e9
        self._flow_poses = {s: T for s, T in self._flow_poses.items() if newest - s <= span}

    def _remember_mask_views(
        self, views: list[MaskView], correction: float, final_poses: dict[int, np.ndarray]
    ) -> None:
        """Keep the new frames' views in final global coordinates, thinned and bounded.

        ``correction`` is the scale correction applied after the views were made, ``final_poses`` the
        published world-from-camera poses by stamp. The last ``window_size - 1`` views stay (the next
        windows' overlap frames); older ones are kept only within ``mask_history_s``, at least
        ``mask_history_s / (2 mask_compare_frames)`` apart and at most ``MASK_HISTORY_MAX_OLDER`` of them.
        """
        cfg = self.config
        for view in views:
            self._mask_history.append(
                dataclasses.replace(
                    view,
                    depth=view.depth * np.float32(correction),
                    depth_min=view.depth_min * np.float32(correction),
                    extrinsics=poses_to_extrinsics(final_poses[view.stamp_ns]),
                )
            )
        if not self._mask_history:
            return
        history = self._mask_history
        newest = history[-1].stamp_ns
        recent = history[-(cfg.window_size - 1) :] if cfg.window_size > 1 else []
        spacing = cfg.mask_history_s * 1e9 / (2 * cfg.mask_compare_frames)
        older: list[MaskView] = []
        for view in history[: len(history) - len(recent)]:
            if newest - view.stamp_ns > cfg.mask_history_s * 1e9:
                continue
            if older and view.stamp_ns - older[-1].stamp_ns < spacing:
                continue
            older.append(view)
        self._mask_history = older[-MASK_HISTORY_MAX_OLDER:] + recent

    def _depth_ratio_alignment(
        self, window: list[BufferedFrame], local: list[FrameGeometry], alignment: Alignment
    ) -> Alignment:
        """``pose_refinement: flow``: anchor the window at its last overlap frame's published pose, with the
        scale that maps its depth onto the published depth of the overlap frames (median ratio over static
        pixels).

        The refined poses come from flow and depth, so the depth scale is what must carry over between
        windows; a Sim(3) fitted through network poses that disagree with the published ones would let it
        drift. Without enough overlap pixels the given ``alignment`` is kept.
        """
        ratios = []
        last = None
        for i, frame in enumerate(window):
            published = self._previous.get(frame.stamp_ns)
            if published is None or published.depth.shape != local[i].depth.shape:
                continue
            last = i
            ok = np.isfinite(published.depth) & np.isfinite(local[i].depth) & (local[i].depth > 0)
            ok &= (published.depth > 0) & ~published.dynamic
            ratios.append(published.depth[ok] / local[i].depth[ok])
        values = np.concatenate(ratios) if ratios else np.zeros(0)
        if last is None or values.size < MIN_DEPTH_RATIO_PIXELS:
            return alignment
        scale = float(np.median(values))
        residual = float(np.median(np.abs(values / scale - 1.0)))
        anchor = self._previous[window[last].stamp_ns].T_world_cam
        transform = anchor_transform(anchor, local[last].T_world_cam, scale)
        return Alignment(transform, "depth_ratio", residual, alignment.overlap_frames)

    def _align(self, window: list[BufferedFrame], local: list[FrameGeometry]) -> Alignment:
        shared = [i for i, f in enumerate(window) if f.stamp_ns in self._previous]
        if shared:
            return align_overlap(
                [self._previous[window[i].stamp_ns] for i in shared],
                [local[i] for i in shared],
                self._last_scale if self._last_scale is not None else 1.0,
                self.config.chain_huber_delta,
                self.config.min_chain_baseline,
                self.config.chain_max_points,
            )
        if self._last_published is not None:
            return align_adjacent(self._last_published, local[0], self._last_scale or 1.0)
        scale = self._scale.initial_factor()
        return Alignment(anchor_transform(np.eye(4), local[0].T_world_cam, scale), "anchor", 0.0, 0)

    def _scale_inputs(
        self,
        window: list[BufferedFrame],
        poses: np.ndarray,
        depth: np.ndarray,
        dynamic: np.ndarray,
        K: np.ndarray,
    ) -> WindowScaleInputs:
        plan = window[0].plan
        static_points = np.zeros((0, 3))
        if self.config.scale_source == "camera_height":
            chunks = []
            per_frame = max(1, SCALE_POINTS_PER_WINDOW // len(window))
            for i in range(len(window)):
                ok = np.flatnonzero(np.isfinite(depth[i]) & ~dynamic[i])
                ok = (
                    ok[np.linspace(0, ok.size - 1, min(per_frame, ok.size)).astype(np.int64)]
                    if ok.size
                    else ok
                )
                cam = pixel_rays(K[i], *depth[i].shape).reshape(-1, 3)[ok] * depth[i].reshape(-1)[ok, None]
                chunks.append(cam @ poses[i, :3, :3].T + poses[i, :3, 3])
            static_points = np.concatenate(chunks) if chunks else static_points
        return WindowScaleInputs(
            stamps_ns=np.array([f.stamp_ns for f in window], dtype=np.int64),
            camera_centres=poses[:, :3, 3].copy(),
            camera_down_axes=poses[:, :3, 1].copy(),
            static_points_world=static_points,
            depth_output_units=[d for d in depth],
            output_pixel_source_coords=(
                plan.output_pixels_in_source()
                if self.config.scale_source == "depth"
                else (np.zeros(0), np.zeros(0))
            ),
            source_size=(plan.source_width, plan.source_height),
        )

    def _calibrated_intrinsics(self, window: list[BufferedFrame]) -> np.ndarray | None:
        """camera_info K at network resolution [S,3,3] for a predictor that takes it (``uses_calibration``,
        π³) when every frame of the window has one; else None."""
        if not getattr(self.predictor, "uses_calibration", False):
            return None
        if any(f.calibration is None for f in window):
            return None
        return np.stack([f.plan.intrinsics_to_network(f.calibration.K) for f in window])

    def _run_window(self, window: list[BufferedFrame], new_count: int) -> list[FrameResult]:
        started = time.perf_counter()
        clock = _StageClock()
        clock.add("preprocess", self._preprocess_ms)
        preprocess_before = self._preprocess_ms
        self._preprocess_ms = 0.0
        plan = window[0].plan
        num_frames = len(window)
        stamps = np.array([f.stamp_ns for f in window], dtype=np.int64)
        with clock("preprocess"):
            images = images_to_tensor_layout([f.network_rgb for f in window])
        if self._refiner is not None and self.config.mask_flow:
            self._start_mask_flows(window, num_frames - new_count)
        try:
            with clock("inference"):
                calibrated = self._calibrated_intrinsics(window)
                if calibrated is None:
                    prediction = self.predictor.predict(images, stamps)
                else:
                    prediction = self.predictor.predict(images, stamps, intrinsics=calibrated)
            prediction.validate(num_frames, plan.network_height, plan.network_width)
        except Exception:
            # The window's new frames cannot be published any more: count them, then let the caller decide.
            self.stats.frames_dropped += new_count
            raise

        with clock("depth"):
            depth_local = plan.crop_to_output(prediction.depth).astype(np.float32)
            confidence = plan.crop_to_output(prediction.depth_conf).astype(np.float32)
            K_predicted = plan.network_intrinsics_to_output(prediction.intrinsics)
            valid = self._valid_depth(depth_local, confidence)
            depth_local = np.where(valid, depth_local, np.float32(np.nan))
            poses_local = extrinsics_to_poses(prediction.extrinsics)
        with clock("chaining"):
            reused = {
                i: self._previous[int(stamps[i])].dynamic
                for i in range(num_frames)
                if int(stamps[i]) in self._previous
            }
            unknown = np.zeros(depth_local.shape[1:], dtype=bool)
            local = [
                FrameGeometry(
                    int(stamps[i]),
                    poses_local[i],
                    depth_local[i],
                    K_predicted[i],
                    confidence[i],
                    reused.get(i, unknown),
                )
                for i in range(num_frames)
            ]
            alignment = self._align(window, local)
            if self._refiner is not None:
                alignment = self._depth_ratio_alignment(window, local, alignment)
            transform = alignment.transform
            poses = transform.apply_poses(poses_local)
            depth = (transform.scale * depth_local).astype(np.float32)
            if alignment.method not in CHAINED_METHODS:
                # Not tied to the previous frames by overlap: their views would disagree with this window.
                self._mask_history = []

        flow_masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if self._refiner is not None:
            with clock("refinement"):
                # The flow-residual test also covers pixels the confidence cut dropped (often the movers).
                raw_depth = transform.scale * plan.crop_to_output(prediction.depth).astype(np.float32)
                poses, flow_masks = self._refine(
                    window,
                    num_frames - new_count,
                    poses,
                    depth,
                    raw_depth,
                    K_predicted,
                    prediction,
                    reused,
                    alignment,
                )
        with clock("masks"):
            dynamic, views = self._dynamic_masks(
                window, prediction, depth, K_predicted, poses, reused, flow_masks
            )

        with clock("scale"):
            shared = [f.stamp_ns for f in window if f.stamp_ns in self._previous]
            anchor = self._previous[shared[-1]].T_world_cam[:3, 3] if shared else poses[0, :3, 3]
            inputs = self._scale_inputs(window, poses, depth, dynamic, K_predicted)
            correction = self._scale.correction(inputs)
            if correction != 1.0:
                step = Sim3(correction, np.eye(3), (1.0 - correction) * anchor)
                transform = step.compose(transform)
                poses = step.apply_poses(poses)
                depth = (transform.scale * depth_local).astype(np.float32)
            self._scale.record_published(stamps, poses[:, :3, 3], correction, anchor)
            self._last_scale = transform.scale
        with clock("masks"):
            self._remember_mask_views(views, correction, {int(t): pose for t, pose in zip(stamps, poses)})
        if self._refiner is not None:
            self._remember_flow_poses(stamps, poses)

        with clock("points"):
            self._previous = {
                int(stamps[i]): FrameGeometry(
                    int(stamps[i]), poses[i], depth[i], K_predicted[i], confidence[i], dynamic[i]
                )
                for i in range(num_frames)
            }
            results = [
                self._frame_result(
                    window[i], poses[i], depth[i], confidence[i], dynamic[i], K_predicted[i], alignment
                )
                for i in range(num_frames - new_count, num_frames)
            ]
        self._last_published = self._previous[int(stamps[-1])]
        keep = self.config.window_size - 1
        combined = self._context + window[num_frames - new_count :]
        self._context = combined[len(combined) - keep :] if keep > 0 else []
        self._window_index += 1
        clock.add("total", 1e3 * (time.perf_counter() - started) + preprocess_before)
        self._update_stats(clock.ms, alignment, transform.scale, len(results))
        return results

    def _update_stats(
        self, stage_ms: dict[str, float], alignment: Alignment, scale: float, count: int
    ) -> None:
        stats = self.stats
        stats.windows += 1
        stats.frames_out += count
        inference_ms = stage_ms["inference"]
        self._inference_ms_total += inference_ms
        stats.last_inference_ms = inference_ms
        stats.mean_inference_ms = self._inference_ms_total / stats.windows
        stats.last_window_ms = stage_ms["total"]
        stats.last_postprocess_ms = stage_ms["total"] - inference_ms
        stats.last_stage_ms = stage_ms
        stats.scale = scale
        stats.scale_state = self._scale.state
        stats.scale_is_metric = self._scale.is_metric
        stats.alignment = alignment.method
        stats.alignment_residual = alignment.residual

    def _frame_result(
        self,
        buffered: BufferedFrame,
        pose: np.ndarray,
        depth: np.ndarray,
        confidence: np.ndarray,
        dynamic: np.ndarray,
        K_predicted: np.ndarray,
        alignment: Alignment,
    ) -> FrameResult:
        cfg = self.config
        plan = buffered.plan
        in_range = np.isfinite(depth) & (depth >= cfg.min_depth_m) & (depth <= cfg.max_depth_m)
        depth_out = np.where(in_range, depth, np.float32(np.nan)).astype(np.float32)
        if buffered.calibration is not None:
            K = plan.intrinsics_to_output(buffered.calibration.K)
            source = "calibration"
            disagreement = {
                "fx_rel": float(K_predicted[0, 0] / K[0, 0] - 1.0),
                "fy_rel": float(K_predicted[1, 1] / K[1, 1] - 1.0),
                "cx_px": float(K_predicted[0, 2] - K[0, 2]),
                "cy_px": float(K_predicted[1, 2] - K[1, 2]),
            }
        else:
            K, source, disagreement = K_predicted.copy(), "predicted", {}
        rgb = np.ascontiguousarray(plan.crop_to_output(buffered.network_rgb))
        stride = cfg.points_stride
        sub_depth = depth_out[::stride, ::stride]
        keep = np.isfinite(sub_depth)
        # Rays of the kept pixels of the strided grid only (not of the whole image).
        rows, cols = np.nonzero(keep)
        pixels = np.stack([cols * stride, rows * stride, np.ones_like(rows)], axis=1).astype(np.float64)
        rays = pixels @ np.linalg.inv(K).T
        points = (rays * sub_depth[keep][:, None]).astype(np.float32)
        colors = rgb[::stride, ::stride][keep]
        point_is_dynamic = dynamic[::stride, ::stride][keep]
        self.history.append((buffered.stamp_ns, pose.copy()))
        return FrameResult(
            stamp_ns=buffered.stamp_ns,
            frame_id=buffered.frame_id,
            index=buffered.index,
            window_index=self._window_index,
            segment_index=self._segment_index,
            T_world_cam=pose.copy(),
            K=K,
            width=plan.output_width,
            height=plan.output_height,
            depth=depth_out,
            confidence=confidence.astype(np.float32),
            rgb=rgb,
            dynamic_mask=np.where(dynamic, np.uint8(255), np.uint8(0)),
            points=points,
            colors=colors,
            point_is_dynamic=point_is_dynamic,
            scale=float(self._last_scale),
            scale_state=self._scale.state,
            intrinsics_source=source,
            K_predicted=K_predicted.copy(),
            intrinsics_disagreement=disagreement,
            alignment=alignment.method,
            alignment_residual=alignment.residual,
        )
