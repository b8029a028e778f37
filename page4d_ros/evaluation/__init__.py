"""Metrics and evaluation by the PAGE-4D protocol (evo-style ATE/RPE, video depth, masks, point maps)."""

from page4d_ros.evaluation.depth import DEPTH_ALIGNMENTS, align_depth, depth_metrics
from page4d_ros.evaluation.masks import mask_metrics
from page4d_ros.evaluation.pointmap import backproject, pointmap_metrics
from page4d_ros.evaluation.protocol import (
    PredictionSet,
    evaluate,
    format_table,
    load_prediction,
    load_prediction_bag,
    match_stamps,
    resample_depth,
    resample_mask,
    summarize,
)
from page4d_ros.evaluation.trajectory import (
    ALIGNMENTS,
    absolute_trajectory_error,
    align_trajectory,
    relative_pose_error,
    rotation_angle_deg,
    umeyama_alignment,
)
from page4d_ros.pipeline.geometry import Sim3

__all__ = [
    "ALIGNMENTS",
    "DEPTH_ALIGNMENTS",
    "PredictionSet",
    "Sim3",
    "absolute_trajectory_error",
    "align_depth",
    "align_trajectory",
    "backproject",
    "depth_metrics",
    "evaluate",
    "format_table",
    "load_prediction",
    "load_prediction_bag",
    "mask_metrics",
    "match_stamps",
    "pointmap_metrics",
    "relative_pose_error",
    "resample_depth",
    "resample_mask",
    "rotation_angle_deg",
    "summarize",
    "umeyama_alignment",
]
