"""Every tunable of the streaming pipeline, its validation and the fields that may change at run time."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

RESIZE_MODES = ("crop", "pad")
SCALE_SOURCES = ("none", "fixed", "odometry", "depth", "camera_height")
MASK_FUSIONS = ("max", "mean")
PATCH_SIZE = 14

# Fields the node may change while running (``StreamingPipeline.update_config``); the rest need a new
# pipeline.
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
        "mask_rel_tolerance",
        "mask_min_votes",
        "mask_vote_fraction",
        "mask_fusion",
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

    Windowing: a window of ``window_size`` frames runs whenever ``window_stride`` new accepted frames exist
    (overlap = size - stride). Depth-range limits are in output units (metres once the scale is metric).
    ``min_chain_baseline`` is relative to the median overlap depth; ``scale_min_baseline_m`` is in metres.
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
    mask_dilate_px: int = 3
    mask_geometric: bool = True
    mask_rel_tolerance: float = 0.05
    mask_min_votes: int = 1
    mask_vote_fraction: float = 0.25
    mask_fusion: str = "max"
    points_stride: int = 2
    scale_source: str = "none"
    scale_factor: float = 1.0
    camera_height_m: float = 0.0
    scale_ema_alpha: float = 0.1
    scale_min_baseline_m: float = 0.2
    min_chain_baseline: float = 0.05
    chain_huber_delta: float = 0.05
    chain_max_points: int = 20000
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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name} must be an integer, got {value!r}")
            elif not low <= value <= high:
                problems.append(f"{name} must be in [{low}, {high}], got {value}")

        def real(name: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value!r}")
            elif value < low or value > high or (low_open and value == low):
                bracket = "(" if low_open else "["
                problems.append(f"{name} must be in {bracket}{low}, {high}], got {value}")

        def choice(name: str, options: tuple[str, ...]) -> None:
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
        real("mask_rel_tolerance", 0.0, 1.0, low_open=True)
        integer("mask_min_votes", 1)
        real("mask_vote_fraction", 0.0, 1.0)
        choice("mask_fusion", MASK_FUSIONS)
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
