"""Edge cases of the streaming pipeline: overlap, resets, drops, time jumps, gaps, bad input, distortion."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from page4d_ros.pipeline import CameraCalibration, Frame, PipelineConfig, StreamingPipeline, WindowPrediction
from page4d_ros.synthetic.oracle import OracleModel, resample_to_network

GAP_NS = 5_000_000_000


@pytest.fixture(scope="module")
def short_sequence():
    """24 frames at 5 fps, small and quick."""
    from page4d_ros.synthetic.scene import generate_sequence

    return generate_sequence(3, 24, 160, 120, num_movers=4, fps=5.0)


def _pipeline(sequence, config):
    return StreamingPipeline(config, OracleModel(sequence, config.model_long_side, config.resize_mode))


def _push_all(pipeline, frames):
    results = []
    for frame in frames:
        results.extend(pipeline.push(frame))
    return results


def test_no_overlap_windows_publish_every_frame_once_and_stay_continuous(
    short_sequence, oracle_config, frames_of, sim3_ate
):
    config = oracle_config(window_size=4, window_stride=4)
    pipeline = _pipeline(short_sequence, config)
    results = _push_all(pipeline, frames_of(short_sequence)) + pipeline.flush()
    assert [r.stamp_ns for r in results] == list(short_sequence.stamps_ns)
    assert [r.alignment for r in results[4:]] == ["no_overlap"] * (len(results) - 4)
    positions = np.stack([r.T_world_cam[:3, 3] for r in results])
    truth = short_sequence.T_world_cam[:, :3, 3]
    ate, _ = sim3_ate(positions, truth)
    path = np.linalg.norm(np.diff(truth, axis=0), axis=1).sum()
    # Each window starts at the previous frame's pose (one frame of motion lost), so the error stays bounded.
    assert ate < 0.1 * path


def test_single_frame_windows(short_sequence, oracle_config, frames_of):
    config = oracle_config(window_size=1, window_stride=1)
    pipeline = _pipeline(short_sequence, config)
    results = _push_all(pipeline, frames_of(short_sequence))
    assert [r.stamp_ns for r in results] == list(short_sequence.stamps_ns)
    assert len({r.window_index for r in results}) == len(results)
    # No second view and no network map: nothing can be flagged dynamic.
    assert all(not r.dynamic_mask.any() for r in results)
    assert pipeline.flush() == []


def test_single_frame_windows_use_the_network_map(short_sequence, oracle_config, frames_of):
    config = oracle_config(window_size=1, window_stride=1)
    oracle = OracleModel(short_sequence, config.model_long_side, dynamics_map=True)
    pipeline = StreamingPipeline(config, oracle)
    results = _push_all(pipeline, frames_of(short_sequence))
    # The map is per 14x14 patch: at a patch's centre pixel the upsampled value is ~96 % that patch's, so
    # patches at least 3/4 dynamic must be flagged there and patches at most 1/4 dynamic must not.
    truth = resample_to_network(short_sequence.dynamic_mask, oracle.plan, False).astype(float)
    rows, cols = truth.shape[1] // 14, truth.shape[2] // 14
    fraction = truth.reshape(len(results), rows, 14, cols, 14).mean(axis=(2, 4))
    centre = np.stack([r.dynamic_mask[7::14, 7::14] == 255 for r in results])
    assert np.count_nonzero(fraction >= 0.75) > 0
    assert np.all(centre[fraction >= 0.75])
    assert not np.any(centre[fraction <= 0.25])


def test_explicit_reset_drops_pending_and_reanchors(short_sequence, oracle_config, frames_of):
    config = oracle_config()
    pipeline = _pipeline(short_sequence, config)
    frames = frames_of(short_sequence)
    before = _push_all(pipeline, frames[:10])
    assert len(before) == 8
    pipeline.reset("operator request")
    assert pipeline.stats.frames_dropped == 2
    assert pipeline.stats.resets == 1
    assert pipeline.stats.last_reset_reason == "operator request"
    after = _push_all(pipeline, frames[10:]) + pipeline.flush()
    assert [r.stamp_ns for r in after] == list(short_sequence.stamps_ns[10:])
    assert {r.segment_index for r in after} == {1}
    # The new segment starts where the last published frame was.
    np.testing.assert_allclose(after[0].T_world_cam, before[-1].T_world_cam, atol=1e-9)


def test_queue_drops_oldest_frames_when_full(short_sequence, oracle_config, frames_of):
    config = oracle_config(buffer_max_frames=8)
    pipeline = _pipeline(short_sequence, config)
    frames = frames_of(short_sequence)
    for frame in frames[:10]:
        pipeline.submit(frame)
    assert pipeline.stats.frames_dropped == 2
    assert pipeline.stats.queue_depth == 8
    results = pipeline.process_pending()
    assert [r.stamp_ns for r in results] == [f.stamp_ns for f in frames[2:10]]


def test_missing_input_frames_still_chain_on_shared_frames(
    short_sequence, oracle_config, frames_of, sim3_ate
):
    config = oracle_config()
    pipeline = _pipeline(short_sequence, config)
    kept = [f for i, f in enumerate(frames_of(short_sequence)) if i % 3 != 1]
    results = _push_all(pipeline, kept) + pipeline.flush()
    assert [r.stamp_ns for r in results] == [f.stamp_ns for f in kept]
    assert {r.alignment for r in results} == {"anchor", "points"}
    index = [i for i in range(len(short_sequence.stamps_ns)) if i % 3 != 1]
    ate, _ = sim3_ate(
        np.stack([r.T_world_cam[:3, 3] for r in results]), short_sequence.T_world_cam[index, :3, 3]
    )
    assert ate < 1e-6


def test_time_going_backwards_flushes_and_resets(short_sequence, oracle_config, frames_of):
    config = oracle_config()
    pipeline = _pipeline(short_sequence, config)
    frames = frames_of(short_sequence)
    first_loop = _push_all(pipeline, frames[:14])
    assert len(first_loop) == 12
    second_loop = _push_all(pipeline, frames[:9])
    assert "backwards" in pipeline.stats.last_reset_reason
    # The two buffered frames of the first loop come out first, then the first window of the new loop.
    assert [r.stamp_ns for r in second_loop[:2]] == [f.stamp_ns for f in frames[12:14]]
    assert [r.stamp_ns for r in second_loop[2:]] == [f.stamp_ns for f in frames[:8]]
    assert {r.segment_index for r in second_loop[2:]} == {1}


def test_gap_longer_than_max_gap_resets(short_sequence, oracle_config, frames_of):
    config = oracle_config(max_gap_s=1.0)
    pipeline = _pipeline(short_sequence, config)
    frames = frames_of(short_sequence)
    _push_all(pipeline, frames[:8])
    late = frames[8]
    oracle = pipeline.predictor
    # Shift the oracle's stamp table and the frame together so the late frame still has ground truth.
    oracle._index_of_stamp[late.stamp_ns + GAP_NS] = 8
    pipeline.push(Frame(late.rgb, late.stamp_ns + GAP_NS, late.frame_id, late.calibration))
    assert pipeline.stats.resets == 1
    assert "gap" in pipeline.stats.last_reset_reason


def test_repeated_stamp_is_skipped(short_sequence, oracle_config, frames_of):
    pipeline = _pipeline(short_sequence, oracle_config())
    frames = frames_of(short_sequence)
    pipeline.push(frames[0])
    pipeline.push(frames[0])
    assert pipeline.stats.frames_skipped == 1
    assert pipeline.stats.frames_accepted == 1


def test_keyframe_interval_gate(short_sequence, oracle_config, frames_of):
    config = oracle_config(keyframe_min_interval_s=0.3)
    pipeline = _pipeline(short_sequence, config)
    results = _push_all(pipeline, frames_of(short_sequence)) + pipeline.flush()
    # Frames are 0.2 s apart: every second one passes a 0.3 s gate.
    assert [r.stamp_ns for r in results] == list(short_sequence.stamps_ns[::2])
    assert pipeline.stats.frames_skipped == len(short_sequence.stamps_ns) // 2


def test_distortion_warns_once(short_sequence, oracle_config, caplog):
    pipeline = _pipeline(short_sequence, oracle_config())
    calibration = CameraCalibration(
        short_sequence.K[0], 160, 120, "plumb_bob", np.array([0.1, 0.0, 0.0, 0.0, 0.0])
    )
    with caplog.at_level(logging.WARNING, logger="page4d_ros.pipeline"):
        for i in range(3):
            pipeline.push(Frame(short_sequence.rgb[i], int(short_sequence.stamps_ns[i]), "cam", calibration))
    distortion = [w for w in pipeline.stats.warnings if "distortion" in w]
    assert len(distortion) == 1
    assert sum("distortion" in r.message for r in caplog.records) == 1


def test_calibration_versus_predicted_intrinsics(short_sequence, oracle_config, frames_of):
    config = oracle_config()
    pipeline = _pipeline(short_sequence, config)
    frames = frames_of(short_sequence, calibrated=False)
    results = _push_all(pipeline, frames[:8])
    assert {r.intrinsics_source for r in results} == {"predicted"}
    wrong = short_sequence.K[0].copy()
    wrong[0, 0] *= 1.1
    pipeline = _pipeline(short_sequence, config)
    calibrated = [
        Frame(f.rgb, f.stamp_ns, f.frame_id, CameraCalibration(wrong, 160, 120)) for f in frames[:8]
    ]
    results = _push_all(pipeline, calibrated)
    assert {r.intrinsics_source for r in results} == {"calibration"}
    # The oracle predicts the true fx, 1/1.1 of the calibration's.
    assert results[0].intrinsics_disagreement["fx_rel"] == pytest.approx(1 / 1.1 - 1, abs=1e-9)
    assert results[0].intrinsics_disagreement["fy_rel"] == pytest.approx(0.0, abs=1e-9)
    assert results[0].K[0, 0] == pytest.approx(1.1 * results[0].K_predicted[0, 0])


@pytest.mark.parametrize(
    ("rgb", "message"),
    [
        (np.zeros((120, 160, 3), dtype=np.float32), "uint8"),
        (np.zeros((120, 160), dtype=np.uint8), "uint8"),
        (np.zeros((1, 160, 3), dtype=np.uint8), "too small"),
    ],
)
def test_bad_frames_raise_clear_errors_and_are_counted(short_sequence, oracle_config, rgb, message):
    pipeline = _pipeline(short_sequence, oracle_config())
    with pytest.raises(ValueError, match=message):
        pipeline.push(Frame(rgb, 1, "cam"))
    assert pipeline.stats.frames_rejected == 1


def test_bad_stamp_and_mismatched_calibration_raise(short_sequence, oracle_config):
    pipeline = _pipeline(short_sequence, oracle_config())
    rgb = short_sequence.rgb[0]
    with pytest.raises(ValueError, match="stamp_ns"):
        pipeline.push(Frame(rgb, 1.5, "cam"))
    with pytest.raises(ValueError, match="calibration is for"):
        pipeline.push(Frame(rgb, 1, "cam", CameraCalibration(short_sequence.K[0], 640, 480)))
    with pytest.raises(ValueError, match="focal"):
        CameraCalibration(np.zeros((3, 3)), 160, 120)


def test_predictor_with_wrong_shapes_is_reported(short_sequence, oracle_config, frames_of):
    class BrokenPredictor:
        has_dynamics_map = False

        def predict(self, images, stamps_ns):
            count = images.shape[0]
            return WindowPrediction(
                np.zeros((count, 3, 4)),
                np.zeros((count, 3, 3)),
                np.zeros((count, 5, 5)),
                np.zeros((count, 5, 5)),
            )

    pipeline = StreamingPipeline(oracle_config(window_size=2, window_stride=1), BrokenPredictor())
    frames = frames_of(short_sequence)
    pipeline.push(frames[0])
    with pytest.raises(ValueError, match="depth must have shape"):
        pipeline.push(frames[1])
    assert pipeline.stats.frames_dropped == 2  # both new frames of the failed first window


def test_runtime_updates(short_sequence, oracle_config):
    pipeline = _pipeline(short_sequence, oracle_config())
    pipeline.update_config(mask_threshold=0.7, points_stride=4)
    assert pipeline.config.mask_threshold == 0.7
    with pytest.raises(ValueError, match="cannot change while running"):
        pipeline.update_config(window_size=4)
    with pytest.raises(ValueError, match="mask_threshold"):
        pipeline.update_config(mask_threshold=2.0)
    with pytest.raises(ValueError, match="predictor"):
        StreamingPipeline(PipelineConfig(), object())


def test_subsampled_geometric_check_keeps_most_of_the_mask(
    short_sequence, oracle_config, frames_of, mask_iou
):
    ious = []
    for stride in (1, 2):
        config = oracle_config(mask_check_stride=stride)
        oracle = OracleModel(short_sequence, config.model_long_side)
        pipeline = StreamingPipeline(config, oracle)
        results = _push_all(pipeline, frames_of(short_sequence)) + pipeline.flush()
        assert all(r.dynamic_mask.shape == (84, 112) for r in results)
        ious.append(mask_iou(results, oracle))
    assert ious[0] >= 0.8
    # At 112x84 a stride of 2 checks a 56x42 grid: block edges cost some IoU, a wrong K would cost all of it.
    assert ious[1] >= 0.7


def test_queued_frames_after_a_time_jump_keep_their_order(short_sequence, oracle_config, frames_of):
    pipeline = _pipeline(short_sequence, oracle_config())
    frames = frames_of(short_sequence)
    for frame in frames[:14] + frames[:9]:
        pipeline.submit(frame)
    results = pipeline.process_pending()
    expected = [f.stamp_ns for f in frames[:14] + frames[:8]]
    assert [r.stamp_ns for r in results] == expected
    assert [r.segment_index for r in results] == [0] * 14 + [1] * 8
    assert pipeline.stats.resets == 1
