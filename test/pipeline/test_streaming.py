"""End-to-end streaming tests with the oracle predictor (ground truth in per-window frames and scales)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from page4d_ros.pipeline import Frame, StreamingPipeline
from page4d_ros.synthetic.oracle import OracleModel, resample_to_network

ONE_PERCENT = {"depth_noise": 0.01, "translation_noise": 0.01, "rotation_noise": 0.01}


def _positions(results):
    return np.stack([r.T_world_cam[:3, 3] for r in results])


def _path_length(positions):
    return float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())


def _assert_once_in_order(results, sequence):
    stamps = [r.stamp_ns for r in results]
    assert stamps == sorted(stamps)
    assert stamps == [int(s) for s in sequence.stamps_ns]


def test_noise_free_oracle_is_reproduced_exactly(walk_sequence, oracle_config, run_stream, sim3_ate):
    config = oracle_config()
    _, results = run_stream(walk_sequence, config)
    _assert_once_in_order(results, walk_sequence)
    ate, _ = sim3_ate(_positions(results), walk_sequence.T_world_cam[:, :3, 3])
    assert ate < 1e-6
    assert {r.alignment for r in results} == {"anchor", "points"}


def test_one_percent_noise_chains_ten_windows_below_one_percent_ate(
    walk_sequence, oracle_config, run_stream, sim3_ate, mask_iou
):
    config = oracle_config()
    oracle = OracleModel(walk_sequence, config.model_long_side, **ONE_PERCENT, seed=1)
    pipeline, results = run_stream(walk_sequence, config, oracle)
    _assert_once_in_order(results, walk_sequence)
    assert pipeline.stats.windows >= 10
    truth = walk_sequence.T_world_cam[:, :3, 3]
    ate, _ = sim3_ate(_positions(results), truth)
    assert ate < 0.01 * _path_length(truth)
    assert mask_iou(results, oracle) >= 0.8


def test_odometry_scale_is_metric_within_two_percent(walk_sequence, oracle_config, run_stream, sim3_ate):
    config = oracle_config(scale_source="odometry", scale_ema_alpha=0.3)
    oracle = OracleModel(walk_sequence, config.model_long_side, **ONE_PERCENT, seed=2)
    pipeline, results = run_stream(walk_sequence, config, oracle, odometry=True)
    assert pipeline.stats.scale_state == "metric"
    assert pipeline.stats.scale_is_metric
    settled = results[len(results) // 4 :]
    _, scale = sim3_ate(_positions(settled), walk_sequence.T_world_cam[len(results) // 4 :, :3, 3])
    assert abs(scale - 1.0) < 0.02
    # Depth is metric too: compare with the ground truth at the same output pixels.
    last = results[-1]
    truth = oracle.plan.crop_to_output(resample_to_network(walk_sequence.depth[-1], oracle.plan, 0.0))
    ok = np.isfinite(last.depth) & (truth > 0)
    assert abs(np.median(last.depth[ok] / truth[ok]) - 1.0) < 0.03


def test_metric_depth_scale_source(walk_sequence, oracle_config, run_stream, sim3_ate):
    config = oracle_config(scale_source="depth")
    oracle = OracleModel(walk_sequence, config.model_long_side, **ONE_PERCENT, seed=3)
    pipeline, results = run_stream(walk_sequence, config, oracle, metric_depth=True)
    assert pipeline.stats.scale_state == "metric"
    _, scale = sim3_ate(_positions(results), walk_sequence.T_world_cam[:, :3, 3])
    assert abs(scale - 1.0) < 0.02


def test_camera_height_scale_source(walk_sequence, oracle_config, run_stream, sim3_ate):
    config = oracle_config(scale_source="camera_height", camera_height_m=walk_sequence.camera_height)
    oracle = OracleModel(walk_sequence, config.model_long_side, **ONE_PERCENT, seed=4)
    pipeline, results = run_stream(walk_sequence, config, oracle)
    assert pipeline.stats.scale_state in ("metric", "held")
    _, scale = sim3_ate(_positions(results[8:]), walk_sequence.T_world_cam[8:, :3, 3])
    assert abs(scale - 1.0) < 0.05


def test_fixed_scale_multiplies_model_units(walk_sequence, oracle_config, run_stream):
    config = oracle_config(scale_source="fixed", scale_factor=2.5)
    oracle = OracleModel(walk_sequence, config.model_long_side)
    pipeline, results = run_stream(walk_sequence, config, oracle)
    first_window_scale = oracle.window_scales[int(walk_sequence.stamps_ns[0])]
    # Output units = 2.5 x the first window's model units = 2.5 x window_scale x metres.
    ratio = np.linalg.norm(results[7].T_world_cam[:3, 3] - results[0].T_world_cam[:3, 3]) / np.linalg.norm(
        walk_sequence.T_world_cam[7, :3, 3] - walk_sequence.T_world_cam[0, :3, 3]
    )
    assert ratio == pytest.approx(2.5 * first_window_scale, rel=1e-6)
    assert pipeline.stats.scale_state == "fixed"


@pytest.mark.slow
def test_three_hundred_frames_bounded_memory_and_accuracy(long_sequence, oracle_config, sim3_ate):
    config = oracle_config(scale_source="odometry", scale_ema_alpha=0.3)
    oracle = OracleModel(long_sequence, config.model_long_side, **ONE_PERCENT, seed=5)
    pipeline = StreamingPipeline(config, oracle)
    stamps, positions = [], []
    intersection = union = 0

    def consume(results):
        nonlocal intersection, union
        for result in results:
            stamps.append(result.stamp_ns)
            positions.append(result.T_world_cam[:3, 3].copy())
            index = oracle.frame_indices(np.array([result.stamp_ns]))[0]
            truth = oracle.plan.crop_to_output(
                resample_to_network(long_sequence.dynamic_mask[index], oracle.plan, False)
            )
            predicted = result.dynamic_mask == 255
            has_depth = np.isfinite(result.depth)
            intersection += np.count_nonzero(truth & predicted & has_depth)
            union += np.count_nonzero((truth | predicted) & has_depth)

    tracemalloc.start()
    memory = {}
    for i in range(300):
        stamp = int(long_sequence.stamps_ns[i])
        pipeline.add_odometry(stamp, long_sequence.T_world_cam[i, :3, 3])
        consume(pipeline.push(Frame(long_sequence.rgb[i], stamp, "cam", None)))
        if i in (100, 299):
            memory[i] = tracemalloc.get_traced_memory()[0]
        assert len(pipeline._pending) <= config.window_size
        assert len(pipeline._context) <= config.window_size - 1
        assert len(pipeline._previous) <= config.window_size
    tracemalloc.stop()
    # 200 more frames may only add the kept stamps/positions (a few hundred bytes each), not per-frame images.
    assert memory[299] - memory[100] < 500_000
    consume(pipeline.flush())

    assert stamps == [int(s) for s in long_sequence.stamps_ns]
    truth_positions = long_sequence.T_world_cam[:, :3, 3]
    estimate = np.stack(positions)
    ate, _ = sim3_ate(estimate, truth_positions)
    assert ate < 0.01 * _path_length(truth_positions)
    _, scale = sim3_ate(estimate[75:], truth_positions[75:])
    assert abs(scale - 1.0) < 0.02
    assert intersection / union >= 0.8


@pytest.mark.parametrize(
    ("width", "height", "mode"), [(160, 120, "pad"), (90, 160, "crop"), (90, 160, "pad")]
)
def test_published_depth_and_intrinsics_match_known_points(width, height, mode, oracle_config, run_stream):
    from page4d_ros.synthetic.scene import generate_sequence

    sequence = generate_sequence(4, 12, width, height, num_movers=0, fps=5.0)
    config = oracle_config(resize_mode=mode, scale_source="depth", window_size=4, window_stride=2)
    _, results = run_stream(sequence, config, metric_depth=True)
    assert [r.stamp_ns for r in results] == list(sequence.stamps_ns)
    index = 9
    result = results[index]
    assert result.depth.shape == (result.height, result.width)
    # Known 3-D points: ground-truth surface points of this frame, in its optical frame (metres).
    rng = np.random.default_rng(0)
    u = rng.uniform(0, width - 1, 300)
    v = rng.uniform(0, height - 1, 300)
    z = sequence.depth[index][np.rint(v).astype(int), np.rint(u).astype(int)].astype(float)
    K = sequence.K[index]
    points = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)
    projected = points @ result.K.T
    pixel = np.rint(projected[:, :2] / projected[:, 2:]).astype(int)
    inside = (
        (pixel[:, 0] >= 0) & (pixel[:, 0] < result.width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < result.height)
    )
    assert np.count_nonzero(inside) > 50
    published = result.depth[pixel[inside, 1], pixel[inside, 0]]
    relative = np.abs(published / z[inside] - 1.0)
    # Nearest-pixel sampling on both sides: most points agree closely, depth edges may not.
    assert np.median(relative) < 0.01
    assert np.mean(relative < 0.05) > 0.9
    # The published cloud lies on the published depth: each point projects back onto a pixel with its z.
    cloud = result.points @ result.K.T
    cloud_pixel = np.rint(cloud[:, :2] / cloud[:, 2:]).astype(int)
    np.testing.assert_allclose(
        result.depth[cloud_pixel[:, 1], cloud_pixel[:, 0]], result.points[:, 2], rtol=1e-5
    )
