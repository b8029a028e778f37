"""The node's parameters: one table (name, default, description, tunability, choices) and their validation.

The table is the single source for the node's declarations, ``config/page4d.yaml``, the launch file test
and the offline bag tool (which reads the same YAML). Pipeline parameters mirror :class:`PipelineConfig`
field by field.
No rclpy import happens here.
"""

from __future__ import annotations

import array
import dataclasses
import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from page4d_ros.pipeline.config import (
    FLOW_PRESET_NAMES,
    MASK_FUSIONS,
    PATCH_SIZE,
    RESIZE_MODES,
    SCALE_SOURCES,
    PipelineConfig,
)

NODE_NAME = "page4d"
DEFAULT_NAMESPACE = "page4d"
QOS_CHOICES = ("sensor_data", "reliable", "best_effort", "system_default")
TF_MODES = ("odom", "map", "none")
FRAME_PARAMETERS = ("odom_frame", "map_frame", "base_frame", "camera_optical_frame")
TEXT_CONSTRAINTS: dict[str, str] = {
    "device": "auto, cpu, cuda or cuda:N",
    **{name: "a frame id without a leading '/'" for name in FRAME_PARAMETERS},
    "base_to_optical_xyz": "3 finite numbers",
    "base_to_optical_rpy": "3 finite numbers",
}
"""Constraints of parameters that a range or a list of choices cannot express (checked by check_value)."""
OPTICAL_RPY = (-math.pi / 2, 0.0, -math.pi / 2)
"""Roll, pitch, yaw of a camera optical frame in its body frame (REP-103: z forward, x right, y down)."""


@dataclass(frozen=True)
class Range:
    """Allowed numeric interval of a parameter: ``low``..``high`` (``low`` excluded when ``low_open``).

    ``step`` > 0 restricts integers to ``low + k * step``. The node publishes the range in the parameter
    descriptor (``ros2 param describe``, rqt) and :func:`validate_parameters` enforces it.
    """

    low: float
    high: float = math.inf
    low_open: bool = False
    step: int = 0

    def contains(self, value: float) -> bool:
        """True when ``value`` lies in the range (and on its step grid)."""
        if value < self.low or value > self.high or (self.low_open and value == self.low):
            return False
        return not self.step or (value - self.low) % self.step == 0

    def describe(self) -> str:
        """The range in words, e.g. ``> 0``, ``>= 1``, ``in [0, 100]``, ``in [0, 4088], a multiple of 14``."""

        def number(value: float) -> str:
            return str(int(value)) if float(value).is_integer() else repr(value)

        if math.isinf(self.high):
            text = f"{'>' if self.low_open else '>='} {number(self.low)}"
        else:
            text = f"in {'(' if self.low_open else '['}{number(self.low)}, {number(self.high)}]"
        return text + (f", a multiple of {self.step}" if self.step else "")


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: default (which fixes its type), meaning, and whether it may change while active."""

    name: str
    default: Any
    description: str
    tunable: bool = False
    choices: tuple[str, ...] = ()
    range: Range | None = None

    def constraints(self) -> str:
        """The constraints in words (range, choices, when it may change), for descriptors and the README."""
        parts = []
        if self.range is not None:
            parts.append(self.range.describe())
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.name in TEXT_CONSTRAINTS:
            parts.append(TEXT_CONSTRAINTS[self.name])
        parts.append("tunable while active" if self.tunable else "fixed after configure")
        return "; ".join(parts)


_NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True, "Configure and activate on start-up (no lifecycle manager needed)."),
    ParameterSpec(
        "checkpoint_path",
        "",
        "Local .safetensors/.pt checkpoint; empty uses the model shipped in page4d_ros/models/. Never "
        "downloaded.",
    ),
    ParameterSpec(
        "checkpoint_sha256", "", "Optional SHA-256 of the checkpoint file; configure fails on mismatch."
    ),
    ParameterSpec(
        "model_preset",
        "",
        "Model preset when the checkpoint carries no config (e.g. page4d-small, pi3, vggt-omega-text).",
    ),
    ParameterSpec(
        "device", "auto", "Torch device: auto (cuda:0 when available, else cpu), cpu, cuda, cuda:N."
    ),
    ParameterSpec(
        "precision",
        "auto",
        "auto (bf16 on sm80+, fp16 on older GPUs, fp32 on CPU), fp32, bf16 or fp16.",
        choices=("auto", "fp32", "bf16", "fp16"),
    ),
    ParameterSpec(
        "warmup_iters",
        1,
        "Dummy windows run in configure so the first real window is not slow.",
        range=Range(0, 100),
    ),
    ParameterSpec(
        "image_transport",
        "raw",
        "Input transport: raw (sensor_msgs/Image on 'image') or compressed "
        "(sensor_msgs/CompressedImage on 'image/compressed', JPEG/PNG).",
        choices=("raw", "compressed"),
    ),
    ParameterSpec(
        "camera_info_mode",
        "latest",
        "latest: newest CameraInfo of the image's frame id; synchronized: the "
        "CameraInfo whose stamp is within camera_info_slop_s of the image.",
        choices=("latest", "synchronized"),
    ),
    ParameterSpec(
        "camera_info_slop_s",
        0.01,
        "Largest image/CameraInfo stamp difference in synchronized mode.",
        range=Range(0.0, low_open=True),
    ),
    ParameterSpec(
        "require_camera_info",
        False,
        "Drop images until a matching CameraInfo exists (else use predicted K).",
        tunable=True,
    ),
    ParameterSpec(
        "input_qos",
        "sensor_data",
        "QoS of image, camera_info and metric depth subscriptions.",
        choices=QOS_CHOICES,
    ),
    ParameterSpec(
        "input_queue_depth", 2, "History depth of the input subscriptions.", range=Range(1, 1000)
    ),
    ParameterSpec(
        "frame_queue_size",
        8,
        "Frames waiting for the worker; when full the oldest is dropped (8: two strides of the default "
        "window, so one slow window does not drop frames).",
        range=Range(1, 1000),
    ),
    ParameterSpec(
        "output_qos",
        "reliable",
        "QoS of image, cloud and odometry outputs (reliable works with every subscriber).",
        choices=QOS_CHOICES,
    ),
    ParameterSpec("output_queue_depth", 2, "History depth of the outputs.", range=Range(1, 1000)),
    ParameterSpec(
        "expected_input_rate_hz",
        0.0,
        "Diagnostics WARN below this input rate (0 disables).",
        tunable=True,
        range=Range(0.0),
    ),
    ParameterSpec(
        "tf_mode",
        "odom",
        "odom: publish odom_frame -> base_frame; map: map_frame -> odom_frame over the robot's "
        "own odometry; none: no TF (odometry topic only).",
        choices=TF_MODES,
    ),
    ParameterSpec("odom_frame", "odom", "Odometry frame (parent of base_frame)."),
    ParameterSpec("map_frame", "map", "Map frame (parent of odom_frame in tf_mode map)."),
    ParameterSpec("base_frame", "base_link", "Robot body frame; use camera_link on camera-only rigs."),
    ParameterSpec(
        "camera_optical_frame", "camera_optical_frame", "Frame id used when an image header has none."
    ),
    ParameterSpec(
        "base_to_optical_from_tf",
        True,
        "Look up base_frame -> optical frame with tf2_ros when it is installed; "
        "otherwise (or on failure) use base_to_optical_xyz/rpy.",
    ),
    ParameterSpec("base_to_optical_xyz", [0.0, 0.0, 0.0], "Optical frame origin in base_frame, metres."),
    ParameterSpec(
        "base_to_optical_rpy",
        list(OPTICAL_RPY),
        "Optical frame orientation in base_frame (roll, pitch, yaw, rad).",
    ),
    ParameterSpec(
        "publish_optical_static_tf",
        False,
        "Publish base_frame -> optical frame on /tf_static from the two "
        "parameters above (only when no URDF/robot_state_publisher provides it).",
    ),
    ParameterSpec(
        "transform_tolerance",
        0.5,
        "Future-dating of map -> odom in tf_mode map, and the largest stamp gap "
        "when matching the robot's odometry; also the latency WARN level.",
        tunable=True,
        range=Range(0.0, low_open=True),
    ),
    ParameterSpec(
        "require_metric_for_tf",
        False,
        "Withhold TF/odometry while the scale is not metric (opt-in; Nav2, nvblox and rtabmap assume "
        "metres). false: publish them in model units with a WARN in page4d: scale.",
        tunable=True,
    ),
    ParameterSpec(
        "pose_position_sigma_m",
        0.05,
        "Position standard deviation in the pose covariances.",
        tunable=True,
        range=Range(0.0),
    ),
    ParameterSpec(
        "pose_rotation_sigma_rad",
        0.02,
        "Rotation standard deviation in the pose covariances.",
        tunable=True,
        range=Range(0.0),
    ),
    ParameterSpec(
        "publish_depth", True, "Publish depth/image (32FC1, metres, NaN invalid) + camera_info.", True
    ),
    ParameterSpec(
        "publish_depth_mm", False, "Also publish depth/image_mm (16UC1 millimetres, 0 invalid).", True
    ),
    ParameterSpec("publish_rgb", True, "Publish rgb/image (rgb8 at depth resolution) + camera_info.", True),
    ParameterSpec(
        "publish_dynamic_mask", True, "Publish dynamic_mask/image (mono8, 255 dynamic) + camera_info.", True
    ),
    ParameterSpec(
        "publish_confidence", False, "Publish confidence/image (32FC1 raw model confidence).", True
    ),
    ParameterSpec("publish_points", True, "Publish points (PointCloud2 x y z rgb, optical frame).", True),
    ParameterSpec("publish_points_static", False, "Publish points_static (dynamic points removed).", True),
    ParameterSpec("publish_odometry", True, "Publish odometry (nav_msgs/Odometry odom -> base_frame).", True),
    ParameterSpec("publish_camera_pose", True, "Publish camera_pose (optical camera pose in odom).", True),
    ParameterSpec("publish_path", True, "Publish path (nav_msgs/Path, transient local).", True),
    ParameterSpec(
        "path_max_poses", 2000, "Newest poses kept in path.", tunable=True, range=Range(1, 1_000_000)
    ),
    ParameterSpec(
        "map_accumulate",
        False,
        "Accumulate the static points of every frame for the ~/save map (costs worker time; off: ~/save "
        "writes the trajectory and an empty map).",
        tunable=True,
    ),
    ParameterSpec(
        "map_max_points",
        2_000_000,
        "Points kept for ~/save (voxel-thinned beyond).",
        tunable=True,
        range=Range(1, 100_000_000),
    ),
    ParameterSpec(
        "map_voxel_size",
        0.05,
        "Voxel edge used to thin the saved map (output units).",
        tunable=True,
        range=Range(0.0, low_open=True),
    ),
    ParameterSpec(
        "save_dir", "", "Folder for ~/save (PLY map + TUM trajectory); empty: $ROS_HOME/page4d.", True
    ),
    ParameterSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages.",
        range=Range(0.0, low_open=True),
    ),
    ParameterSpec(
        "idle_flush_s",
        1.0,
        "After this many seconds without a new frame, run the buffered frames as a window and publish "
        "them (a paused stream's last frames); 0 disables.",
        tunable=True,
        range=Range(0.0),
    ),
)

_PIPELINE_DESCRIPTIONS: dict[str, str] = {
    "window_size": "Frames per network window.",
    "window_stride": "New frames per window (overlap = window_size - window_stride).",
    "max_window_size": "Upper bound on window_size (GPU memory guard).",
    "model_long_side": (
        "Network input long side in pixels (multiple of 14; 518 is native for VGGT / PAGE-4D); 0: the size "
        "stored in the checkpoint's metadata (the shipped model: 112), else 518. VGGT-Omega: the 'balanced' "
        "resolution (about (r/16)^2 patches per frame); 0: the checkpoint's (512, text: 256)."
    ),
    "resize_mode": "crop or pad the images to the network's aspect ratio.",
    "keyframe_min_interval_s": "Skip frames closer in time than this (0 keeps all).",
    "keyframe_min_motion_px": "Skip frames with less image motion than this (0 keeps all).",
    "buffer_max_frames": "Frames kept by the pipeline for windowing.",
    "max_gap_s": "A larger stamp gap starts a new segment (re-anchored, continuous TF).",
    "conf_threshold": "Depth pixels below this confidence become NaN.",
    "conf_percentile": "Also drop this lowest percentage of confidence per frame.",
    "min_depth_m": "Nearer depth becomes NaN (output units).",
    "max_depth_m": "Farther depth becomes NaN (output units).",
    "mask_threshold": "Dynamic score above which a pixel is dynamic.",
    "mask_dilate_px": "Dilation of the dynamic mask in pixels.",
    "mask_geometric": "Fuse a multi-view geometric consistency test into the dynamic mask.",
    "mask_check_stride": "Run the geometric mask test on every n-th pixel (n^2 times cheaper).",
    "mask_rel_tolerance": "Relative depth disagreement counted as a geometric vote.",
    "mask_min_votes": "Votes needed before a pixel is geometrically dynamic.",
    "mask_vote_fraction": "Fraction of views that must vote dynamic.",
    "mask_fusion": "How network and geometric masks combine: max, mean, tested (the flow decision where "
    "tested) or flow (the flow decision alone in frames where it ran).",
    "mask_compare_frames": "Frames (spread in time) each new frame is checked against geometrically.",
    "mask_photometric_tolerance": "Grey-level disagreement that also votes dynamic (0 disables it).",
    "mask_history_s": "Seconds of published frames kept as extra views for the geometric mask test.",
    "pose_refinement": "none (the network's chained poses) or flow (optical flow + PnP on the window's "
    "depth, gated against the network; fixed after configure).",
    "flow_long_side": "Long side in pixels of the images the optical flow runs on (fixed after configure).",
    "flow_preset": "DIS optical-flow preset: ultrafast, fast or medium (fixed after configure).",
    "refine_baseline_s": "Solve each frame against the previous one and a window frame up to this far back.",
    "refine_min_inliers": "PnP inliers needed for the flow pose to win over the network's.",
    "refine_min_inlier_ratio": "Fraction of the flow correspondences the PnP inliers must make.",
    "refine_max_flow_fraction": "Median flow (fraction of image width) above which the network pose is used.",
    "refine_max_rotation_gap_deg": "Largest rotation gap (degrees) between flow and network poses.",
    "refine_reprojection_px": "RANSAC PnP inlier threshold in flow pixels.",
    "refine_zero_motion_px": "Median tracked motion (flow pixels) below which the camera counts as static "
    "and keeps its reference's pose (0 disables).",
    "mask_flow": "With pose_refinement flow, add the flow-residual test to the dynamic mask.",
    "mask_flow_preset": "DIS optical-flow preset of the mask test: ultrafast, fast or medium (fixed after "
    "configure).",
    "mask_flow_threshold_px": "Flow residual in flow pixels above which a baseline votes dynamic.",
    "mask_flow_relative": "Added to that threshold per pixel of rigid flow (fraction).",
    "mask_flow_baseline_s": "Earlier frames up to this many seconds back (at least the previous frame) "
    "serve as flow baselines.",
    "mask_flow_baselines": "Flow baselines per frame, spread over mask_flow_baseline_s.",
    "mask_flow_min_votes": "Baselines that must vote dynamic (and half the tested ones' weight, each "
    "baseline weighing its time gap squared).",
    "mask_flow_max_fraction": "A frame whose flow test calls more than this fraction of its tested pixels "
    "dynamic is not explained by its pose and depth: the network map decides there instead.",
    "mask_flow_depth_tolerance": "Widening (fraction) of the depth range the rigid flow may come from.",
    "mask_flow_confirm_grey": "Grey levels within which a moved pixel still fits the static hypothesis "
    "photometrically; it alone judges pixels whose flow is inconsistent (0: no photometric test).",
    "mask_flow_grow_px": "Growth in output pixels of the decision from photometrically confirmed pixels.",
    "mask_flow_sky_depth_ratio": "Textureless pixels farther than this many times the frame's median depth "
    "(a sky at a finite predicted depth) are left untested (0: tested).",
    "points_stride": "Pixel stride of the published cloud.",
    "scale_source": "none, fixed (scale_factor), odometry (odom topic), depth (metric_depth topic), "
    "camera_height.",
    "scale_factor": "Scale applied when scale_source is fixed.",
    "camera_height_m": "Camera height above the ground for scale_source camera_height.",
    "scale_ema_alpha": "Smoothing of the estimated scale.",
    "scale_min_baseline_m": "Odometry baseline needed before the scale is observable.",
    "min_chain_baseline": "Relative baseline below which windows are chained by rotation only.",
    "chain_huber_delta": "Robust loss width of window chaining.",
    "chain_max_points": "Points sampled for window chaining.",
    "odometry_max_dt_s": "Largest odometry/image stamp gap used for the scale.",
    "metric_depth_max_dt_s": "Largest metric depth/image stamp gap used for the scale.",
    "history_max_poses": "Published poses the pipeline keeps (the revised path history).",
}


_PIPELINE_RANGES: dict[str, Range] = {
    "window_size": Range(1, 1024),
    "window_stride": Range(1, 1024),
    "max_window_size": Range(1, 1024),
    "model_long_side": Range(0, 4088, step=PATCH_SIZE),
    "keyframe_min_interval_s": Range(0.0),
    "keyframe_min_motion_px": Range(0.0),
    "buffer_max_frames": Range(1, 100_000),
    "max_gap_s": Range(0.0, low_open=True),
    "conf_percentile": Range(0.0, 100.0),
    "min_depth_m": Range(0.0),
    "max_depth_m": Range(0.0, low_open=True),
    "mask_threshold": Range(0.0, 1.0),
    "mask_dilate_px": Range(0, 64),
    "mask_check_stride": Range(1, 16),
    "mask_rel_tolerance": Range(0.0, 1.0, low_open=True),
    "mask_min_votes": Range(1, 1024),
    "mask_vote_fraction": Range(0.0, 1.0),
    "mask_compare_frames": Range(1, 32),
    "mask_photometric_tolerance": Range(0.0, 1.0),
    "mask_history_s": Range(0.0, 10.0),
    "refine_zero_motion_px": Range(0.0, 10.0),
    "points_stride": Range(1, 64),
    "scale_factor": Range(0.0, low_open=True),
    "camera_height_m": Range(0.0),
    "scale_ema_alpha": Range(0.0, 1.0, low_open=True),
    "scale_min_baseline_m": Range(0.0, low_open=True),
    "min_chain_baseline": Range(0.0),
    "chain_huber_delta": Range(0.0, low_open=True),
    "chain_max_points": Range(10, 10_000_000),
    "odometry_max_dt_s": Range(0.0, low_open=True),
    "metric_depth_max_dt_s": Range(0.0, low_open=True),
    "history_max_poses": Range(1, 10_000_000),
    "mask_flow_depth_tolerance": Range(0.0, 10.0),
    "mask_flow_confirm_grey": Range(0.0, 255.0),
    "mask_flow_grow_px": Range(0, 64),
    "mask_flow_sky_depth_ratio": Range(0.0, 1000.0),
}
"""Ranges of the pipeline parameters: those of ``PipelineConfig.validate`` (a test checks that they agree),
with a finite upper bound for integers where it has none (ROS integer ranges need one). ``model_long_side``
0 is the node's "size stored in the checkpoint"."""
_PIPELINE_CHOICES: dict[str, tuple[str, ...]] = {
    "resize_mode": RESIZE_MODES,
    "mask_fusion": MASK_FUSIONS,
    "scale_source": SCALE_SOURCES,
    "flow_preset": FLOW_PRESET_NAMES,
    "mask_flow_preset": FLOW_PRESET_NAMES,
}

NATIVE_LONG_SIDE = PipelineConfig().model_long_side
"""Input long side of the released VGGT / PAGE-4D models (518 px)."""
# Node defaults that differ from the PipelineConfig defaults: by default the node runs a model at the size
# its checkpoint says it was trained at (``pipeline_config`` resolves the 0).
_NODE_PIPELINE_DEFAULTS: dict[str, Any] = {"model_long_side": 0}


def _pipeline_parameters() -> tuple[ParameterSpec, ...]:
    """Specs mirroring every :class:`PipelineConfig` field, with its default and run-time tunability."""
    defaults = PipelineConfig()
    tunable = PipelineConfig.runtime_tunable_fields()
    return tuple(
        ParameterSpec(
            field.name,
            _NODE_PIPELINE_DEFAULTS.get(field.name, getattr(defaults, field.name)),
            _PIPELINE_DESCRIPTIONS[field.name],
            tunable=field.name in tunable,
            choices=_PIPELINE_CHOICES.get(field.name, ()),
            range=_PIPELINE_RANGES.get(field.name),
        )
        for field in dataclasses.fields(PipelineConfig)
    )


PARAMETERS: tuple[ParameterSpec, ...] = _NODE_PARAMETERS + _pipeline_parameters()
"""Every parameter the node declares."""

PARAMETERS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}
PIPELINE_PARAMETER_NAMES = frozenset(field.name for field in dataclasses.fields(PipelineConfig))


def _check_type(spec: ParameterSpec, value: Any) -> Any:
    """Coerce ``value`` to the type of ``spec.default`` (int -> float allowed) or raise ``ValueError``."""
    default = spec.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"parameter '{spec.name}' must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"parameter '{spec.name}' must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"parameter '{spec.name}' must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"parameter '{spec.name}' must be a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ValueError(f"parameter '{spec.name}' must be one of {list(spec.choices)}, got {value!r}")
        return value
    if isinstance(default, list):
        # rclpy hands double arrays set through the parameter services over as array.array('d').
        if not isinstance(value, (list, tuple, array.array)) or len(value) != len(default):
            raise ValueError(
                f"parameter '{spec.name}' must be a list of {len(default)} numbers, got {value!r}"
            )
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        ):
            raise ValueError(f"parameter '{spec.name}' must hold finite numbers, got {value!r}")
        return [float(v) for v in value]
    raise TypeError(f"parameter '{spec.name}' has an unsupported default {default!r}")


def check_value(name: str, value: Any) -> Any:
    """Check one parameter alone (type, choices, range); return the coerced value or raise ``ValueError``.

    Checks that involve other parameters (``window_stride`` <= ``window_size``, ...) are left to
    :func:`validate_parameters`.
    """
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter '{name}'; see config/page4d.yaml for the declared ones")
    checked = _check_type(spec, value)
    if spec.range is not None and not spec.range.contains(checked):
        raise ValueError(f"parameter '{name}' must be {spec.range.describe()}, got {checked}")
    if name == "device" and not (
        checked in ("auto", "cpu", "cuda") or (checked.startswith("cuda:") and checked[5:].isdigit())
    ):
        raise ValueError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got {checked!r}")
    if name in FRAME_PARAMETERS and (not checked or checked.startswith("/")):
        raise ValueError(f"parameter '{name}' must be a non-empty frame id without a leading '/'")
    return checked


def validate_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Complete ``values`` with defaults, check names, types, choices and ranges; return the checked dict.

    Raises ``ValueError`` listing every problem found (unknown names included).
    """
    unknown = sorted(set(values) - set(PARAMETERS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; see config/page4d.yaml for the declared ones")
    checked: dict[str, Any] = {}
    problems: list[str] = []
    for spec in PARAMETERS:
        try:
            checked[spec.name] = check_value(spec.name, values.get(spec.name, spec.default))
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("; ".join(problems))
    try:
        pipeline_config(checked)
    except ValueError as error:
        raise ValueError(str(error)) from error
    return checked


def pipeline_config(values: Mapping[str, Any], checkpoint_long_side: int | None = None) -> PipelineConfig:
    """The :class:`PipelineConfig` made of the pipeline parameters in ``values`` (validated).

    ``model_long_side`` 0 means "the checkpoint's": ``checkpoint_long_side`` when known, else the native
    518 of the released models.
    """
    settings = {name: values[name] for name in PIPELINE_PARAMETER_NAMES if name in values}
    if settings.get("model_long_side") == 0:
        settings["model_long_side"] = checkpoint_long_side or NATIVE_LONG_SIDE
    return PipelineConfig.from_dict(settings)


def load_parameters_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """Read a ROS 2 parameters YAML file and return the ``ros__parameters`` that apply to ``node_name``.

    Sections named ``/**``, the plain node name, or a fully qualified name ending in ``/node_name`` are merged
    in file order, as ``--params-file`` does.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read parameters file {path}: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(f"parameters file {path} must map node names to 'ros__parameters' sections")
    merged: dict[str, Any] = {}
    for section, content in document.items():
        key = str(section)
        applies = key in ("/**", node_name) or key.rstrip("/").split("/")[-1] == node_name
        if not applies or not isinstance(content, dict):
            continue
        parameters = content.get("ros__parameters")
        if not isinstance(parameters, dict):
            raise ValueError(f"section '{key}' of {path} has no 'ros__parameters' mapping")
        merged.update(parameters)
    return merged


NODE_PARAMETER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Lifecycle and model (fixed after configure)",
        (
            "autostart",
            "checkpoint_path",
            "checkpoint_sha256",
            "model_preset",
            "device",
            "precision",
            "warmup_iters",
        ),
    ),
    (
        "Inputs",
        (
            "image_transport",
            "camera_info_mode",
            "camera_info_slop_s",
            "require_camera_info",
            "input_qos",
            "input_queue_depth",
            "frame_queue_size",
            "expected_input_rate_hz",
            "idle_flush_s",
        ),
    ),
    (
        "Outputs",
        (
            "output_qos",
            "output_queue_depth",
            "publish_depth",
            "publish_depth_mm",
            "publish_rgb",
            "publish_dynamic_mask",
            "publish_confidence",
            "publish_points",
            "publish_points_static",
            "publish_odometry",
            "publish_camera_pose",
            "publish_path",
            "path_max_poses",
        ),
    ),
    (
        "Frames and TF",
        (
            "tf_mode",
            "odom_frame",
            "map_frame",
            "base_frame",
            "camera_optical_frame",
            "base_to_optical_from_tf",
            "base_to_optical_xyz",
            "base_to_optical_rpy",
            "publish_optical_static_tf",
            "transform_tolerance",
            "require_metric_for_tf",
            "pose_position_sigma_m",
            "pose_rotation_sigma_rad",
        ),
    ),
    (
        "Services and diagnostics",
        ("map_accumulate", "map_max_points", "map_voxel_size", "save_dir", "diagnostics_period"),
    ),
)
"""How ``config/page4d.yaml`` groups the node's own parameters (pipeline ones follow, in field order)."""


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(repr(round(v, 6)) for v in value) + "]"
    return repr(value)


def render_parameters_yaml() -> str:
    """``config/page4d.yaml``: every parameter with its default, documented (regenerate after adding one).

    Run ``python -m page4d_ros.ros.parameters > config/page4d.yaml``.
    """
    grouped = [name for _, names in NODE_PARAMETER_GROUPS for name in names]
    missing = sorted({spec.name for spec in _NODE_PARAMETERS} - set(grouped))
    if missing:
        raise ValueError(f"node parameters {missing} belong to no group of NODE_PARAMETER_GROUPS")
    lines = [
        "# page4d node parameters: ros2 run page4d_ros page4d_node --ros-args --params-file page4d.yaml",
        "# Every parameter the node declares is listed with its default. 'tunable' ones can change while",
        "# the node runs (ros2 param set /page4d/page4d NAME VALUE); the others are read in configure.",
        "# Units: metres, seconds, radians. Depth-range and scale values are in output units (metres once",
        "# the scale is metric).",
        "# Generated by: python -m page4d_ros.ros.parameters > config/page4d.yaml",
        "/**:",
        "  ros__parameters:",
    ]
    pipeline_group = ("Pipeline: windows, filtering, masks, scale (names of PipelineConfig)", ())
    for title, names in (*NODE_PARAMETER_GROUPS, pipeline_group):
        specs = [PARAMETERS_BY_NAME[name] for name in names] if names else list(_pipeline_parameters())
        lines += ["", f"    # ---- {title} ----"]
        for spec in specs:
            allowed = f" Range: {spec.range.describe()}." if spec.range is not None else ""
            text = spec.description + allowed + (" [tunable]" if spec.tunable else "")
            lines += ["    # " + line for line in textwrap.wrap(text, 104)]
            lines.append(f"    {spec.name}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"


def _markdown_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"`{_yaml_value(value)}`"


def render_parameters_table() -> str:
    """The README's parameter table: default, constraints (the descriptors' range and choices), tunability.

    Run ``python -m page4d_ros.ros.parameters --table`` and paste it between the README's table markers.
    """
    lines = ["| parameter | default | allowed | changes |", "|---|---|---|---|"]
    for spec in PARAMETERS:
        allowed = []
        if spec.range is not None:
            allowed.append(spec.range.describe())
        if spec.choices:
            allowed.append(", ".join(f"`{choice}`" for choice in spec.choices))
        if spec.name in TEXT_CONSTRAINTS:
            allowed.append(TEXT_CONSTRAINTS[spec.name])
        changes = "tunable" if spec.tunable else "fixed after configure"
        lines.append(
            f"| `{spec.name}` | {_markdown_value(spec.default)} | {'; '.join(allowed) or 'any'} | {changes} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(render_parameters_table() if "--table" in sys.argv[1:] else render_parameters_yaml(), end="")
