"""Every tunable of the streaming pipeline, its validation and the fields that may change at run time."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import yaml

RESIZE_MODES = ("crop", "pad")
SCALE_SOURCES = ("none", "fixed", "odometry", "depth", "camera_height")
MASK_FUSIONS = ("max", "mean", "tested", "flow")
POSE_REFINEMENTS = ("none", "flow")
FLOW_PRESET_NAMES = ("ultrafast", "fast", "medium")
PATCH_SIZE = 14

# Fields the node may change while running (``StreamingPipeline.update_config``); others need a new pipeline.
RUNTIME_TUNABLES = frozenset(
    {
        "window_stride",
        "keyframe_min_interval_s",
        "keyframe_min_motion_px",
        "max_gap_s",
        "conf_threshold",
        "conf_percentile",
        "min_depth_m",
        "max_depth_m",
        "mask_threshold",
        "mask_dilate_px",
        "mask_geometric",
        "mask_check_stride",
        "mask_rel_tolerance",
        "mask_min_votes",
        "mask_vote_fraction",
        "mask_fusion",
        "mask_compare_frames",
        "mask_photometric_tolerance",
        "mask_history_s",
        "refine_baseline_s",
        "refine_min_inliers",
        "refine_min_inlier_ratio",
        "refine_max_flow_fraction",
        "refine_max_rotation_gap_deg",
        "refine_reprojection_px",
        "refine_zero_motion_px",
        "mask_flow",
        "mask_flow_threshold_px",
        "mask_flow_relative",
        "mask_flow_baseline_s",
        "mask_flow_baselines",
        "mask_flow_min_votes",
        "mask_flow_max_fraction",
        "mask_flow_depth_tolerance",
        "mask_flow_confirm_grey",
        "mask_flow_grow_px",
        "mask_flow_sky_depth_ratio",
        "points_stride",
        "scale_factor",
        "camera_height_m",
        "scale_ema_alpha",
        "scale_min_baseline_m",
        "min_chain_baseline",
    }
)


@dataclass
class PipelineConfig:
    """Tunables of :class:`~page4d_ros.pipeline.runner.StreamingPipeline` (names follow the node parameters).

    Attributes:
        window_size: frames per network call (at most ``max_window_size``, a GPU-memory guard).
        window_stride: new frames per window; the overlap with the previous window is size - stride.
        max_window_size: upper bound accepted for ``window_size``.
        model_long_side: network input size in pixels (multiple of 14), see ``preprocess``.
        resize_mode: ``"crop"`` or ``"pad"`` (VGGT's two modes).
        keyframe_min_interval_s: drop frames closer than this to the last accepted one (0 = off).
        keyframe_min_motion_px: drop frames whose global image shift from the last accepted one is smaller.
        buffer_max_frames: bound of the input queue (drop-oldest).
        max_gap_s: a longer gap between stamps starts a new segment.
        conf_threshold: depth pixels with a lower confidence become NaN.
        conf_percentile: also drop the lowest this-many percent of each frame's confidences (0 = off).
        min_depth_m: nearer depth becomes NaN (output units: metres once the scale is metric).
        max_depth_m: farther depth becomes NaN (output units).
        mask_threshold: network dynamics probability (0.5 + score) at which a pixel is dynamic.
        mask_dilate_px: dilation radius of the published dynamic mask.
        mask_geometric: run the multi-view geometric check (``masks``).
        mask_check_stride: run that check on every n-th pixel (n^2 cheaper), each decision covering n x n.
        mask_rel_tolerance: relative depth margin of the free-space test.
        mask_min_votes: frames that must see through a point for it to be dynamic.
        mask_vote_fraction: ... and the fraction of the frames where the test was possible.
        mask_fusion: ``"max"`` (either source), ``"mean"``, ``"tested"`` (the flow-residual decision where
            it was tested, else either source) or ``"flow"`` (the flow-residual decision alone in frames where
            it ran); see ``masks.MASK_FUSIONS_DOC``.
        mask_compare_frames: frames each new frame is checked against, spread over the available time span
            (the farthest first; ``masks.comparison_frames``).
        mask_photometric_tolerance: grey-level margin (fraction of 0-255) beyond which a visible point whose
            colour disagrees with the other view also votes dynamic (0 = depth test only).
        mask_history_s: earlier published frames up to this many seconds back may serve as comparison
            frames besides the window's own (movers move farther, so slow ones are caught at high frame
            rates; 0 = the window only).
        pose_refinement: ``"none"`` (the network's chained poses) or ``"flow"`` (optical flow + PnP against
            the previous frame on the window's depth, gated against the network; ``refinement``).
        flow_long_side: long side in pixels of the grey images the optical flow runs on (sources are
            downsampled to it, never upsampled).
        flow_preset: DIS optical-flow preset: ``ultrafast``, ``fast`` or ``medium``.
        refine_baseline_s: each new frame is solved against the frame just before it together with the
            earliest window frame at most this many seconds older (a longer baseline drifts less).
        refine_min_inliers: PnP inliers needed for the flow pose to win.
        refine_min_inlier_ratio: ... and the fraction of the correspondences they make.
        refine_max_flow_fraction: median flow above this fraction of the flow image width is "large
            motion": the network pose is used.
        refine_max_rotation_gap_deg: a flow pose whose rotation differs more from the network's relative
            rotation is rejected.
        refine_reprojection_px: RANSAC inlier threshold in flow pixels.
        refine_zero_motion_px: when the median tracked motion of the correspondences is below this (flow
            pixels), the camera has not moved: the frame takes its reference's pose exactly, so a static
            camera does not drift (0 disables the test).
        mask_flow: with ``pose_refinement: flow``, add the flow-residual test to the dynamic mask.
        mask_flow_preset: DIS preset of the mask test's flows (``medium``: the faster presets smooth small
            movers away).
        mask_flow_threshold_px: flow residual (flow pixels) above which a baseline votes dynamic ...
        mask_flow_relative: ... plus this fraction of the rigid flow's length.
        mask_flow_baseline_s: earlier frames up to this many seconds back serve as flow baselines (at least
            the frame before, whatever the frame rate; slow movers need long baselines, occlusions short
            ones); a segment's first frames also take the window's later frames within it.
        mask_flow_baselines: baselines per frame, spread over that span (farthest first).
        mask_flow_min_votes: baselines that must vote dynamic (and hold at least half the weight of those
            tested, each weighing its time gap squared).
        mask_flow_max_fraction: a frame whose flow-residual test calls more than this fraction of its tested
            pixels dynamic is not explained by its pose, depth and intrinsics (e.g. predicted intrinsics on
            real video): its decision is discarded and the network map decides there.
        mask_flow_depth_tolerance: the rigid flow's depth range (3x3 minimum and maximum) widened by this
            fraction: motion along the epipolar line within the depth's uncertainty is not dynamic.
        mask_flow_confirm_grey: grey levels (0-255) of the photometric confirmation: a moved pixel whose grey
            value is found along its rigid epipolar segment fits the static hypothesis; a pixel whose flow
            is inconsistent in every baseline is judged by this test alone (0: no confirmation).
        mask_flow_grow_px: the decision grows from confirmed pixels through moved ones this many output
            pixels; moved regions without confirmed pixels (textureless sky, wrong depth) are dropped.
        mask_flow_sky_depth_ratio: textureless pixels farther than this many times the frame's median depth
            (a sky the network gives a finite depth) are not tested: DIS fills them with its neighbours'
            flow, and growth through them reached from the horizon (0: test them).
        points_stride: keep every n-th pixel (both directions) in the point cloud.
        scale_source: ``none``, ``fixed``, ``odometry``, ``depth`` or ``camera_height`` (see ``scale``).
        scale_factor: output units per model unit of the first window for ``fixed``.
        camera_height_m: camera height above the ground for ``camera_height``.
        scale_ema_alpha: smoothing of the metric scale (1 = take each measurement as is).
        scale_min_baseline_m: odometry spread needed before the odometry scale counts as observed.
        min_chain_baseline: camera-centre spread, relative to the median depth, needed to take the scale from
            the centres when too few overlap pixels have depth (else the last scale is kept).
        chain_huber_delta: Huber threshold of the chaining fit, relative to depth.
        chain_max_points: pixel correspondences sampled per chaining fit.
        odometry_max_dt_s: farthest odometry sample used for a frame stamp.
        metric_depth_max_dt_s: farthest metric depth image used for a frame stamp.
        history_max_poses: published poses kept in ``StreamingPipeline.history`` (e.g. for a Path).
    """

    window_size: int = 8
    window_stride: int = 4
    max_window_size: int = 32
    model_long_side: int = 518
    resize_mode: str = "crop"
    keyframe_min_interval_s: float = 0.0
    keyframe_min_motion_px: float = 0.0
    buffer_max_frames: int = 64
    max_gap_s: float = 1.0
    conf_threshold: float = 1.0
    conf_percentile: float = 20.0
    min_depth_m: float = 0.1
    max_depth_m: float = 20.0
    mask_threshold: float = 0.5
    mask_dilate_px: int = 0
    mask_geometric: bool = False
    mask_check_stride: int = 1
    mask_rel_tolerance: float = 0.05
    mask_min_votes: int = 1
    mask_vote_fraction: float = 0.25
    mask_fusion: str = "flow"
    mask_compare_frames: int = 3
    mask_photometric_tolerance: float = 0.0
    mask_history_s: float = 1.5
    pose_refinement: str = "flow"
    flow_long_side: int = 320
    flow_preset: str = "ultrafast"
    refine_baseline_s: float = 0.2
    refine_min_inliers: int = 40
    refine_min_inlier_ratio: float = 0.3
    refine_max_flow_fraction: float = 0.15
    refine_max_rotation_gap_deg: float = 5.0
    refine_reprojection_px: float = 1.0
    refine_zero_motion_px: float = 0.05
    mask_flow: bool = True
    mask_flow_preset: str = "medium"
    mask_flow_threshold_px: float = 1.5
    mask_flow_relative: float = 0.05
    mask_flow_baseline_s: float = 0.25
    mask_flow_baselines: int = 3
    mask_flow_min_votes: int = 1
    mask_flow_max_fraction: float = 0.5
    mask_flow_depth_tolerance: float = 0.5
    mask_flow_confirm_grey: float = 4.0
    mask_flow_grow_px: int = 4
    mask_flow_sky_depth_ratio: float = 3.0
    points_stride: int = 2
    scale_source: str = "none"
    scale_factor: float = 1.0
    camera_height_m: float = 0.0
    scale_ema_alpha: float = 0.1
    scale_min_baseline_m: float = 0.2
    min_chain_baseline: float = 0.05
    chain_huber_delta: float = 0.05
    chain_max_points: int = 4096
    odometry_max_dt_s: float = 0.05
    metric_depth_max_dt_s: float = 0.02
    history_max_poses: int = 10000

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PipelineConfig:
        """Build and validate a config from a mapping; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(values, dict):
            raise ValueError(f"PipelineConfig.from_dict needs a dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown pipeline config keys {unknown}; valid keys are {sorted(known)}")
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @staticmethod
    def runtime_tunable_fields() -> frozenset[str]:
        """Names of the fields that :meth:`StreamingPipeline.update_config` accepts while running."""
        return RUNTIME_TUNABLES

    def replace(self, **changes: Any) -> PipelineConfig:
        """A validated copy with ``changes`` applied (unknown names raise ``ValueError``)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown pipeline config keys {unknown}")
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` with a message naming the offending field and the allowed range."""
        problems: list[str] = []

        def integer(name: str, low: int, high: float = math.inf) -> None:
            """Check an integer field against [low, high]."""
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name} must be an integer, got {value!r}")
            elif not low <= value <= high:
                problems.append(f"{name} must be in [{low}, {high}], got {value}")

        def real(name: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
            """Check a finite number field against its range."""
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value!r}")
            elif value < low or value > high or (low_open and value == low):
                bracket = "(" if low_open else "["
                problems.append(f"{name} must be in {bracket}{low}, {high}], got {value}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            """Check a field against its allowed values."""
            if getattr(self, name) not in options:
                problems.append(f"{name} must be one of {list(options)}, got {getattr(self, name)!r}")

        integer("max_window_size", 1, 1024)
        integer("window_size", 1, self.max_window_size if isinstance(self.max_window_size, int) else 1024)
        integer("window_stride", 1)
        sizes_are_ints = isinstance(self.window_stride, int) and isinstance(self.window_size, int)
        if sizes_are_ints and self.window_stride > self.window_size:
            problems.append(
                f"window_stride ({self.window_stride}) must not exceed window_size ({self.window_size})"
            )
        integer("model_long_side", PATCH_SIZE, 4096)
        if isinstance(self.model_long_side, int) and self.model_long_side % PATCH_SIZE:
            problems.append(f"model_long_side must be a multiple of {PATCH_SIZE}, got {self.model_long_side}")
        choice("resize_mode", RESIZE_MODES)
        real("keyframe_min_interval_s", 0.0)
        real("keyframe_min_motion_px", 0.0)
        integer("buffer_max_frames", 1)
        buffer_is_int = isinstance(self.buffer_max_frames, int) and isinstance(self.window_size, int)
        if buffer_is_int and self.buffer_max_frames < self.window_size:
            problems.append(
                f"buffer_max_frames ({self.buffer_max_frames}) must hold a window ({self.window_size})"
            )
        real("max_gap_s", 0.0, low_open=True)
        real("conf_threshold", -math.inf)
        real("conf_percentile", 0.0, 100.0)
        real("min_depth_m", 0.0)
        real("max_depth_m", 0.0, low_open=True)
        depths_are_numbers = isinstance(self.min_depth_m, (int, float)) and isinstance(
            self.max_depth_m, (int, float)
        )
        if depths_are_numbers and self.min_depth_m >= self.max_depth_m:
            problems.append(
                f"min_depth_m ({self.min_depth_m}) must be below max_depth_m ({self.max_depth_m})"
            )
        real("mask_threshold", 0.0, 1.0)
        integer("mask_dilate_px", 0, 64)
        if not isinstance(self.mask_geometric, bool):
            problems.append(f"mask_geometric must be true or false, got {self.mask_geometric!r}")
        integer("mask_check_stride", 1, 16)
        real("mask_rel_tolerance", 0.0, 1.0, low_open=True)
        integer("mask_min_votes", 1)
        real("mask_vote_fraction", 0.0, 1.0)
        choice("mask_fusion", MASK_FUSIONS)
        integer("mask_compare_frames", 1, 32)
        real("mask_photometric_tolerance", 0.0, 1.0)
        real("mask_history_s", 0.0, 10.0)
        choice("pose_refinement", POSE_REFINEMENTS)
        integer("flow_long_side", 32, 4096)
        choice("flow_preset", FLOW_PRESET_NAMES)
        real("refine_baseline_s", 0.0)
        integer("refine_min_inliers", 6)
        real("refine_min_inlier_ratio", 0.0, 1.0)
        real("refine_max_flow_fraction", 0.0, 1.0, low_open=True)
        real("refine_max_rotation_gap_deg", 0.0, 180.0, low_open=True)
        real("refine_reprojection_px", 0.0, 100.0, low_open=True)
        real("refine_zero_motion_px", 0.0, 10.0)
        if not isinstance(self.mask_flow, bool):
            problems.append(f"mask_flow must be true or false, got {self.mask_flow!r}")
        choice("mask_flow_preset", FLOW_PRESET_NAMES)
        real("mask_flow_threshold_px", 0.0, 1000.0)
        real("mask_flow_relative", 0.0, 10.0)
        real("mask_flow_baseline_s", 0.0, 10.0, low_open=True)
        integer("mask_flow_baselines", 1, 16)
        integer("mask_flow_min_votes", 1, 16)
        real("mask_flow_max_fraction", 0.0, 1.0, low_open=True)
        real("mask_flow_depth_tolerance", 0.0, 10.0)
        real("mask_flow_confirm_grey", 0.0, 255.0)
        integer("mask_flow_grow_px", 0, 64)
        real("mask_flow_sky_depth_ratio", 0.0, 1000.0)
        integer("points_stride", 1, 64)
        choice("scale_source", SCALE_SOURCES)
        real("scale_factor", 0.0, low_open=True)
        real("camera_height_m", 0.0)
        if self.scale_source == "camera_height" and not (
            isinstance(self.camera_height_m, (int, float)) and self.camera_height_m > 0
        ):
            problems.append(
                "scale_source 'camera_height' needs camera_height_m > 0 (metres above the ground)"
            )
        real("scale_ema_alpha", 0.0, 1.0, low_open=True)
        real("scale_min_baseline_m", 0.0, low_open=True)
        real("min_chain_baseline", 0.0)
        real("chain_huber_delta", 0.0, low_open=True)
        integer("chain_max_points", 10)
        real("odometry_max_dt_s", 0.0, low_open=True)
        real("metric_depth_max_dt_s", 0.0, low_open=True)
        integer("history_max_poses", 1)
        if problems:
            raise ValueError("invalid pipeline config: " + "; ".join(problems))


def parse_override(text: str) -> tuple[str, Any]:
    """``name=value`` from a command line, the value parsed as YAML (numbers, booleans, lists)."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"setting '{text}' must look like name=value")
    return name.strip(), yaml.safe_load(value)


def checkpoint_long_side(inference: dict[str, Any]) -> int | None:
    """The ``model_long_side`` a checkpoint's inference metadata recommends, if it is a usable one."""
    value = inference.get("model_long_side")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0 and value % PATCH_SIZE == 0:
        return value
    return None
