"""Chaining fallbacks and scale observability on hand-made overlaps and a pure-rotation stream."""

from __future__ import annotations

import numpy as np
import pytest

from page4d_ros.pipeline.chaining import FrameGeometry, align_adjacent, align_overlap
from page4d_ros.pipeline.geometry import Sim3
from page4d_ros.synthetic.oracle import OracleModel
from page4d_ros.synthetic.scene import generate_sequence

K = np.array([[40.0, 0, 19.5], [0, 40.0, 14.5], [0, 0, 1]])


def _frame(stamp, centre, depth_value=np.nan):
    pose = np.eye(4)
    pose[:3, 3] = centre
    depth = np.full((30, 40), depth_value, dtype=np.float32)
    return FrameGeometry(stamp, pose, depth, K, np.ones((30, 40), np.float32), np.zeros((30, 40), bool))


def _mapped(frame, transform):
    moved = transform.apply_poses(frame.T_world_cam[None])[0]
    depth = (transform.scale * frame.depth).astype(np.float32)
    return FrameGeometry(frame.stamp_ns, moved, depth, K, frame.confidence, frame.dynamic)


def test_without_depth_the_camera_centres_give_the_scale():
    truth = Sim3(3.0, np.eye(3), np.array([1.0, 0.0, 0.0]))
    current = [_frame(i, [0.5 * i, 0.1 * i, 0.0]) for i in range(3)]
    previous = [_mapped(f, truth) for f in current]
    alignment = align_overlap(
        previous, current, last_scale=1.0, huber_delta=0.05, min_baseline=0.0, max_points=100
    )
    assert alignment.method == "centres"
    assert alignment.transform.scale == pytest.approx(3.0)
    np.testing.assert_allclose(alignment.transform.translation, [1.0, 0.0, 0.0], atol=1e-12)


def test_without_baseline_the_last_scale_is_kept():
    truth = Sim3(3.0, np.eye(3), np.zeros(3))
    current = [_frame(i, [0.0, 0.0, 1e-4 * i]) for i in range(3)]
    previous = [_mapped(f, truth) for f in current]
    alignment = align_overlap(
        previous, current, last_scale=2.0, huber_delta=0.05, min_baseline=0.05, max_points=100
    )
    assert alignment.method == "rotation_only"
    assert alignment.transform.scale == 2.0


def test_depth_maps_fix_the_scale_even_without_baseline():
    truth = Sim3(0.5, np.eye(3), np.array([0.0, 2.0, 0.0]))
    current = [_frame(i, [0.0, 0.0, 0.0], depth_value=3.0) for i in range(2)]
    previous = [_mapped(f, truth) for f in current]
    alignment = align_overlap(
        previous, current, last_scale=2.0, huber_delta=0.05, min_baseline=0.05, max_points=500
    )
    assert alignment.method == "points"
    assert alignment.transform.scale == pytest.approx(0.5)


def test_adjacent_frames_give_the_median_depth_ratio():
    last = _frame(0, [1.0, 2.0, 3.0], depth_value=4.0)
    first = _frame(1, [0.0, 0.0, 0.0], depth_value=2.0)
    alignment = align_adjacent(last, first, last_scale=1.0)
    assert alignment.method == "no_overlap"
    assert alignment.transform.scale == pytest.approx(2.0)
    np.testing.assert_allclose(alignment.transform.apply_poses(first.T_world_cam), last.T_world_cam)


def test_pure_rotation_leaves_odometry_scale_unobserved(oracle_config, run_stream):
    sequence = generate_sequence(2, 16, 160, 120, camera_motion="rotate", num_movers=0, fps=5.0)
    config = oracle_config(scale_source="odometry")
    pipeline, results = run_stream(
        sequence, config, OracleModel(sequence, config.model_long_side), odometry=True
    )
    assert pipeline.stats.scale_state == "unobserved"
    assert not pipeline.stats.scale_is_metric
    assert {r.alignment for r in results} == {"anchor", "points"}
    # Rotation only: the estimated camera stays where it started.
    centres = np.stack([r.T_world_cam[:3, 3] for r in results])
    assert np.abs(centres).max() < 1e-6


def test_metric_depth_that_stops_arriving_holds_the_scale(walk_sequence, oracle_config, frames_of):
    from page4d_ros.pipeline import StreamingPipeline

    config = oracle_config(scale_source="depth")
    pipeline = StreamingPipeline(config, OracleModel(walk_sequence, config.model_long_side))
    for i, frame in enumerate(frames_of(walk_sequence)[:20]):
        if i < 10:
            pipeline.add_metric_depth(frame.stamp_ns, walk_sequence.depth[i])
        pipeline.push(frame)
    assert pipeline.stats.scale_state == "held"
    assert pipeline.stats.scale_is_metric
    with pytest.raises(ValueError, match="millimetres"):
        pipeline.add_metric_depth(0, np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="3 finite numbers"):
        pipeline.add_odometry(0, [1.0, np.nan, 0.0])
