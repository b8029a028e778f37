"""Streaming windows, pre/post-processing, chaining, scale and masks (no rclpy).

Where each step lives: ``types`` (Frame, CameraCalibration, WindowPrediction, FrameResult, Predictor),
``config`` (PipelineConfig), ``preprocess`` (resize/crop/pad and intrinsics), ``windowing`` (queue, keyframe
gate), ``predictor`` (ModelPredictor), ``masks`` (geometric check and fusion), ``chaining`` (Sim(3) between
windows), ``scale`` (metric scale sources), ``runner`` (StreamingPipeline: windows, post-processing, outputs).
"""

from page4d_ros.pipeline.config import RUNTIME_TUNABLES, PipelineConfig
from page4d_ros.pipeline.predictor import ModelPredictor
from page4d_ros.pipeline.preprocess import ResizePlan, plan_resize
from page4d_ros.pipeline.runner import PipelineStats, StreamingPipeline
from page4d_ros.pipeline.types import CameraCalibration, Frame, FrameResult, Predictor, WindowPrediction

__all__ = [
    "RUNTIME_TUNABLES",
    "CameraCalibration",
    "Frame",
    "FrameResult",
    "ModelPredictor",
    "PipelineConfig",
    "PipelineStats",
    "Predictor",
    "ResizePlan",
    "StreamingPipeline",
    "WindowPrediction",
    "plan_resize",
]
