"""Fixtures for the streaming-pipeline tests: synthetic sequences, the oracle, a stream runner and metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from page4d_ros.evaluation import umeyama_alignment
from page4d_ros.pipeline import CameraCalibration, Frame, FrameResult, PipelineConfig, StreamingPipeline
from page4d_ros.synthetic.oracle import OracleModel
from page4d_ros.synthetic.scene import generate_sequence
from page4d_ros.synthetic.sequence import SyntheticSequence

WIDTH, HEIGHT = 160, 120
LONG_SIDE = 112


@pytest.fixture(scope="session")
def walk_sequence() -> SyntheticSequence:
    """52 frames at 5 fps (12 windows of 8, stride 4) of a room with four movers, about 10 m of walking."""
    return generate_sequence(3, 52, WIDTH, HEIGHT, num_movers=4, fps=5.0)


@pytest.fixture(scope="session")
def long_sequence() -> SyntheticSequence:
    """300 frames at 5 fps (the acceptance stream)."""
    return generate_sequence(5, 300, WIDTH, HEIGHT, num_movers=4, fps=5.0)


@pytest.fixture(scope="session")
def thirty_fps_sequence() -> SyntheticSequence:
    """150 frames at 30 fps (5 s) of a room with four movers: a camera stream at its native rate."""
    return generate_sequence(7, 150, WIDTH, HEIGHT, num_movers=4, fps=30.0)


def _oracle_config(**overrides: object) -> PipelineConfig:
    values: dict[str, object] = {
        "model_long_side": LONG_SIDE,
        "conf_percentile": 0.0,
        "min_depth_m": 1e-3,
        "max_depth_m": 1e3,
        "mask_dilate_px": 0,
        # These tests check the network path (chaining, scale, masks: the free-space test fused by "max");
        # test_refinement.py covers "flow".
        "pose_refinement": "none",
        "mask_geometric": True,
        "mask_fusion": "max",
    }
    values.update(overrides)
    return PipelineConfig.from_dict(values)


@pytest.fixture
def oracle_config() -> Callable[..., PipelineConfig]:
    """Config suited to the oracle at test resolution (no percentile cut, wide depth range, no dilation)."""
    return _oracle_config


def _frames(sequence: SyntheticSequence, calibrated: bool = True) -> list[Frame]:
    height, width = sequence.rgb.shape[1:3]
    return [
        Frame(
            sequence.rgb[i],
            int(sequence.stamps_ns[i]),
            sequence.frame_id,
            CameraCalibration(sequence.K[i], width, height) if calibrated else None,
        )
        for i in range(sequence.rgb.shape[0])
    ]


@pytest.fixture
def frames_of() -> Callable[..., list[Frame]]:
    """Turn a sequence into pipeline input frames (with or without calibration)."""
    return _frames


def _run(
    sequence: SyntheticSequence,
    config: PipelineConfig,
    oracle: OracleModel | None = None,
    odometry: bool = False,
    metric_depth: bool = False,
) -> tuple[StreamingPipeline, list[FrameResult]]:
    oracle = oracle or OracleModel(sequence, config.model_long_side, config.resize_mode)
    pipeline = StreamingPipeline(config, oracle)
    results: list[FrameResult] = []
    for i, frame in enumerate(_frames(sequence)):
        if odometry:
            pipeline.add_odometry(frame.stamp_ns, sequence.T_world_cam[i, :3, 3])
        if metric_depth:
            pipeline.add_metric_depth(frame.stamp_ns, sequence.depth[i])
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    return pipeline, results


@pytest.fixture
def run_stream() -> Callable[..., tuple[StreamingPipeline, list[FrameResult]]]:
    """Push a whole sequence through a pipeline (oracle by default) and flush; returns (pipeline, results)."""
    return _run


def _umeyama_scale_ate(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Sim(3)-aligned RMS position error and the alignment scale (the evaluation's Umeyama alignment)."""
    alignment = umeyama_alignment(estimate, truth)
    aligned = alignment.apply_points(estimate)
    return float(np.sqrt(np.mean(np.sum((aligned - truth) ** 2, axis=1)))), alignment.scale


@pytest.fixture
def sim3_ate() -> Callable[[np.ndarray, np.ndarray], tuple[float, float]]:
    """(ATE after Sim(3) alignment, alignment scale) of estimated vs true camera positions [N,3]."""
    return _umeyama_scale_ate


def _mask_iou(results: list[FrameResult], oracle: OracleModel) -> float:
    """IoU of the published masks against the ground-truth masks resampled onto the output grid."""
    from page4d_ros.synthetic.oracle import resample_to_network

    index = oracle.frame_indices(np.array([r.stamp_ns for r in results]))
    truth = oracle.plan.crop_to_output(
        resample_to_network(oracle.sequence.dynamic_mask[index], oracle.plan, False)
    )
    predicted = np.stack([r.dynamic_mask == 255 for r in results])
    has_depth = np.stack([np.isfinite(r.depth) for r in results])
    intersection = np.count_nonzero(truth & predicted & has_depth)
    union = np.count_nonzero((truth | predicted) & has_depth)
    return intersection / max(union, 1)


@pytest.fixture
def mask_iou() -> Callable[[list[FrameResult], OracleModel], float]:
    """IoU of published dynamic masks vs ground truth (pixels with depth)."""
    return _mask_iou
