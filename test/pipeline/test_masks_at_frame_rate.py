"""Fast dynamic-mask check: comparison frames, photometric votes, mask history, 30 fps streams, timings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from page4d_ros.pipeline import Frame, PipelineConfig, StreamingPipeline
from page4d_ros.pipeline.masks import _extreme_3x3, comparison_frames, consistency_votes, make_mask_view
from page4d_ros.pipeline.runner import MASK_HISTORY_MAX_OLDER
from page4d_ros.synthetic.oracle import OracleModel

ONE_PERCENT = {"depth_noise": 0.01, "translation_noise": 0.01, "rotation_noise": 0.01}
K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
IDENTITY = np.hstack([np.eye(3), np.zeros((3, 1))])


def test_neighbourhood_extremes_match_scipy_filters():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, size=(13, 17)).astype(np.float32)
    depth[4, 5] = np.inf
    grey = rng.integers(0, 256, size=(13, 17)).astype(np.uint8)
    expected_min = ndimage.minimum_filter(depth, size=3, mode="nearest")
    np.testing.assert_array_equal(_extreme_3x3(depth, np.minimum), expected_min)
    expected_max = ndimage.maximum_filter(grey, size=3, mode="nearest")
    np.testing.assert_array_equal(_extreme_3x3(grey, np.maximum), expected_max)


def test_comparison_frames_take_the_farthest_and_spread_the_rest():
    stamps = [0, 1, 2, 3, 4, 5, 6]
    # Offsets from 7 are 7..1; targets 7, 14/3, 7/3 -> nearest offsets 7, 5, 2 -> indices 0, 2, 5.
    assert comparison_frames(7, stamps, 3) == [0, 2, 5]
    # Later frames count by their absolute offset too; with few candidates all are used, farthest first.
    assert comparison_frames(10, [12, 4, 9], 3) == [1, 0, 2]
    assert comparison_frames(0, [1, 2, 3, 4], 1) == [3]


def _striped(shift: int) -> np.ndarray:
    """A 60x80 grey image: flat 100, with 4-px stripes (0 / 200) in rows 20-39, cols 20-59, shifted right."""
    grey = np.full((60, 80), 100, dtype=np.uint8)
    columns = np.arange(20, 60)
    grey[20:40, 20:60] = np.where(((columns - 20 - shift) // 4) % 2 == 0, 0, 200)
    return grey


def test_texture_sliding_along_its_own_surface_votes_photometrically():
    depth = np.full((60, 80), 4.0, dtype=np.float32)
    before = make_mask_view(0, depth, K, IDENTITY, _striped(0))
    after = make_mask_view(1, depth, K, IDENTITY, _striped(4))
    # Depth alone cannot see this motion: the surface stays where it was.
    votes, tested = consistency_votes(before, [after], 0.05, photometric_tolerance=0.0)
    assert not votes.any() and tested.all()
    votes, _ = consistency_votes(before, [after], 0.05, photometric_tolerance=0.1)
    # Shifting by one stripe inverts it; pixels whose 3x3 neighbourhood stays inside one stripe vote
    # (stripe columns 1 and 2 of every 4), pixels on stripe borders see both values and do not, except
    # the patch's outer columns 20 and 59: their outside neighbour is 100 and the range (100-200 or 0-100)
    # still misses their own value (0 or 200).
    stripe_interior = ((np.arange(20, 60) - 20) % 4 == 1) | ((np.arange(20, 60) - 20) % 4 == 2)
    stripe_interior[[0, -1]] = True
    assert votes[21:39, 20:60][:, stripe_interior].all()
    assert not votes[21:39, 20:60][:, ~stripe_interior].any()
    assert not votes[:, :19].any() and not votes[:, 61:].any() and not votes[:18].any()
    # The same images on both sides: nothing votes.
    same, _ = consistency_votes(before, [make_mask_view(1, depth, K, IDENTITY, _striped(0))], 0.05, 0.1)
    assert not same.any()


def test_occluded_points_never_vote_even_when_the_colour_differs():
    depth_before = np.full((60, 80), 4.0, dtype=np.float32)
    depth_after = depth_before.copy()
    depth_after[20:40, 30:50] = 2.0  # something moved in front of the wall
    grey_after = np.full((60, 80), 100, dtype=np.uint8)
    grey_after[20:40, 30:50] = 250
    before = make_mask_view(0, depth_before, K, IDENTITY, np.full((60, 80), 100, dtype=np.uint8))
    after = make_mask_view(1, depth_after, K, IDENTITY, grey_after)
    votes, tested = consistency_votes(before, [after], 0.05, 0.1)
    assert not votes.any()
    assert tested.all()
    # The newcomer itself lies in front of the wall that frame 0 saw: free-space votes there.
    votes_after, _ = consistency_votes(after, [before], 0.05, 0.1)
    assert votes_after[21:39, 31:49].all() and votes_after.sum() == 20 * 20


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_compare_frames": 0}, "mask_compare_frames"),
        ({"mask_photometric_tolerance": 1.5}, "mask_photometric_tolerance"),
        ({"mask_history_s": -1.0}, "mask_history_s"),
    ],
)
def test_new_mask_settings_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**changes).validate()


def _stream(sequence, config, count, seed=1):
    oracle = OracleModel(sequence, config.model_long_side, **ONE_PERCENT, seed=seed)
    pipeline = StreamingPipeline(config, oracle)
    results = []
    for i in range(count):
        results.extend(pipeline.push(Frame(sequence.rgb[i], int(sequence.stamps_ns[i]), "cam")))
        assert len(pipeline._mask_history) <= config.window_size - 1 + MASK_HISTORY_MAX_OLDER
    return pipeline, oracle, results + pipeline.flush()


def test_thirty_fps_stream_masks_reach_iou_point_eight(thirty_fps_sequence, oracle_config, mask_iou):
    """All frames of a 30 fps camera in 8-frame windows (0.23 s each) with 1 % noise.

    A mover shifts only a few centimetres within one window, so the comparison frames also come from the
    recently published frames (``mask_history_s``); the first second has less history to look at.
    """
    config = oracle_config()
    pipeline, oracle, results = _stream(thirty_fps_sequence, config, 90)
    assert [r.stamp_ns for r in results] == [int(s) for s in thirty_fps_sequence.stamps_ns[:90]]
    start = results[0].stamp_ns
    settled = [r for r in results if r.stamp_ns - start >= 1_000_000_000]
    assert len(settled) == 60
    assert mask_iou(results, oracle) >= 0.8
    assert mask_iou(settled, oracle) >= 0.9
    # The history reaches back mask_history_s, thinned: no view older than that beyond the last window's.
    newest = pipeline._mask_history[-1].stamp_ns
    older = pipeline._mask_history[: -(config.window_size - 1)]
    assert older and all(newest - view.stamp_ns <= config.mask_history_s * 1e9 for view in older)


def test_thirty_fps_stream_through_a_five_hertz_keyframe_gate(thirty_fps_sequence, oracle_config, mask_iou):
    """The node's default input rate (5 Hz) on a 30 fps camera: windows span 1.4 s, masks are whole."""
    config = oracle_config(keyframe_min_interval_s=0.2)
    pipeline, oracle, results = _stream(thirty_fps_sequence, config, 150)
    assert [r.stamp_ns for r in results] == [int(s) for s in thirty_fps_sequence.stamps_ns[::6]]
    assert pipeline.stats.frames_skipped == 150 - 25
    assert mask_iou(results, oracle) >= 0.8


def test_stage_timings_are_reported(thirty_fps_sequence, oracle_config):
    config = oracle_config()
    pipeline, _, _ = _stream(thirty_fps_sequence, config, 12)
    stages = pipeline.stats.last_stage_ms
    expected = {"preprocess", "inference", "depth", "chaining", "masks", "scale", "points", "total"}
    assert set(stages) == expected
    assert all(value >= 0 for value in stages.values())
    assert pipeline.stats.last_postprocess_ms == pytest.approx(stages["total"] - stages["inference"])
    assert stages["total"] >= sum(value for name, value in stages.items() if name != "total") - 1e-6
    assert isinstance(pipeline.stats.as_dict()["last_stage_ms"], dict)


def test_without_a_second_view_the_network_map_decides_alone(thirty_fps_sequence, oracle_config):
    """Single-frame windows give the geometric test nothing to compare: no fusion rule may dilute the map."""
    masks = {}
    for fusion in ("max", "mean"):
        config = oracle_config(window_size=1, window_stride=1, mask_fusion=fusion)
        oracle = OracleModel(thirty_fps_sequence, config.model_long_side, dynamics_map=True)
        pipeline = StreamingPipeline(config, oracle)
        results = []
        for i in range(6):
            frame = Frame(thirty_fps_sequence.rgb[i], int(thirty_fps_sequence.stamps_ns[i]), "cam")
            results.extend(pipeline.push(frame))
        masks[fusion] = np.stack([r.dynamic_mask for r in results])
    assert masks["max"].any()
    np.testing.assert_array_equal(masks["mean"], masks["max"])


def test_mask_history_follows_resets_and_runtime_changes(thirty_fps_sequence, oracle_config):
    config = oracle_config()
    oracle = OracleModel(thirty_fps_sequence, config.model_long_side)
    pipeline = StreamingPipeline(config, oracle)
    frames = [
        Frame(thirty_fps_sequence.rgb[i], int(thirty_fps_sequence.stamps_ns[i]), "cam") for i in range(40)
    ]
    for frame in frames[:16]:
        pipeline.push(frame)
    assert len(pipeline._mask_history) >= config.window_size - 1
    # A coarser check grid while running: older full-resolution views are skipped, not mixed in.
    pipeline.update_config(mask_check_stride=2)
    results = []
    for frame in frames[16:28]:
        results.extend(pipeline.push(frame))
    assert results and all(r.dynamic_mask.shape == (r.height, r.width) for r in results)
    assert any(r.dynamic_mask.any() for r in results)
    pipeline.reset("test")
    assert pipeline._mask_history == []
