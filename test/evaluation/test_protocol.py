"""The evaluation protocol: frame matching, resampling, prediction bags, and known perturbations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from page4d_ros.evaluation import (
    PredictionSet,
    Sim3,
    evaluate,
    format_table,
    load_prediction,
    match_stamps,
    resample_depth,
    resample_mask,
)


def test_ground_truth_against_itself_is_perfect(gt_sequence):
    result = evaluate(PredictionSet.from_sequence(gt_sequence), gt_sequence)
    assert result["frames"] == {"gt": 8, "pose": 8, "depth": 8, "mask": 8}
    assert result["pose"]["ate_rmse"] < 1e-12 and result["pose"]["rpe_trans_rmse"] < 1e-12
    assert result["pose"]["rpe_rot_rmse_deg"] < 1e-6
    assert result["depth"]["abs_rel"] == 0.0 and result["depth"]["delta_1"] == 1.0
    assert result["mask"]["iou"] == 1.0
    assert result["points"]["accuracy_mean"] < 1e-9 and result["points"]["completeness_mean"] < 1e-9


def test_known_perturbations_give_hand_computed_figures(gt_sequence):
    prediction = PredictionSet.from_sequence(gt_sequence)
    # Every camera shifted by 0.1 m along world x: ATE 0.1 without alignment, 0 after SE(3); RPE unchanged.
    for stamp, pose in prediction.poses.items():
        shifted = pose.copy()
        shifted[0, 3] += 0.1
        prediction.poses[stamp] = shifted
    # Depth doubled: AbsRel |2g - g| / g = 1 and no pixel within 1.25 without alignment.
    prediction.depth = {stamp: 2.0 * depth for stamp, depth in prediction.depth.items()}
    # The first frame's mask is lost.
    first = int(gt_sequence.stamps_ns[0])
    prediction.dynamic_mask[first] = np.zeros_like(prediction.dynamic_mask[first])

    raw = evaluate(prediction, gt_sequence, align="none", depth_align="none")
    assert raw["pose"]["ate_rmse"] == pytest.approx(0.1)
    assert raw["pose"]["rpe_trans_rmse"] < 1e-12
    assert raw["depth"]["abs_rel"] == pytest.approx(1.0)
    assert raw["depth"]["delta_1"] == 0.0
    gt_depth = gt_sequence.depth[gt_sequence.depth > 0].astype(np.float64)
    assert raw["depth"]["rmse"] == pytest.approx(np.sqrt(np.mean(gt_depth**2)), rel=1e-6)
    total = int(gt_sequence.dynamic_mask.sum())
    lost = int(gt_sequence.dynamic_mask[0].sum())
    assert total > lost > 0
    assert raw["mask"]["iou"] == pytest.approx((total - lost) / total)
    assert raw["mask"]["precision"] == 1.0

    aligned = evaluate(prediction, gt_sequence, align="se3", depth_align="scale")
    assert aligned["pose"]["ate_rmse"] < 1e-12
    assert aligned["depth"]["abs_rel"] < 1e-7 and aligned["depth"]["scale"] == pytest.approx(0.5)


def test_match_stamps_tolerance_and_uniqueness():
    gt = np.array([100, 200, 300, 400])
    pairs = match_stamps(gt, [101, 205, 207, 1000], max_difference_ns=5)
    assert pairs == [(0, 101), (1, 205)]
    # 207 is closer to 200 than to 300 but 205 already took 200; 300 is 93 ns away: no match.
    assert match_stamps(gt, [], 5) == []


def test_resampling():
    ramp = np.tile(np.arange(4, dtype=np.float32), (2, 1))
    up = resample_depth(ramp, 4, 8)
    # Output column j samples source column (j + 0.5) / 2 - 0.5: a linear ramp stays linear inside.
    np.testing.assert_allclose(up[0, 1:7], (np.arange(1, 7) + 0.5) / 2 - 0.5)
    holes = np.ones((4, 4), dtype=np.float32)
    holes[1, 1] = np.nan
    down = resample_depth(holes, 2, 2)
    assert np.isnan(down[0, 0]) and np.all(down[[0, 1, 1], [1, 0, 1]] == 1.0)
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 2] = True
    big = resample_mask(mask, 6, 8)
    assert big.sum() == 4 and big[2:4, 4:6].all()


def test_node_output_bag_with_scaled_odom_frame(blocky_sequence, write_prediction_bag, tmp_path):
    gt = blocky_sequence
    # The node's odom frame is an arbitrary rigid frame at an arbitrary scale (0.5) of the world.
    odom_from_world = Sim3(0.5, np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), np.array([3.0, 1, 0]))
    poses = odom_from_world.apply_poses(gt.T_world_cam)
    depths = [0.5 * depth[::2, ::2] for depth in gt.depth]  # half resolution, half scale
    masks = [mask[::2, ::2] for mask in gt.dynamic_mask]
    stamps = gt.stamps_ns + np.array([0, 1000, 0, 0])  # 1 us late: still matched
    bag = write_prediction_bag(tmp_path / "pred", stamps, poses, depths, masks)
    prediction = load_prediction(bag)
    assert len(prediction.poses) == len(prediction.depth) == len(prediction.dynamic_mask) == 4
    result = evaluate(prediction, gt, align="sim3", depth_align="scale")
    assert result["frames"] == {"gt": 4, "pose": 4, "depth": 4, "mask": 4}
    assert result["pose"]["ate_rmse"] < 1e-9 and result["pose"]["scale"] == pytest.approx(2.0)
    assert result["pose"]["rpe_trans_rmse"] < 1e-9 and result["pose"]["rpe_rot_rmse_deg"] < 1e-6
    assert result["depth"]["abs_rel"] < 1e-7 and result["depth"]["scale"] == pytest.approx(2.0)
    assert result["mask"]["iou"] == 1.0
    # Half-scale depth back-projected with the GT K and mapped by the Sim(3) lands on the GT points.
    assert result["points"]["accuracy_mean"] < 1e-6
    unaligned = evaluate(prediction, gt, align="sim3", depth_align="none")
    assert unaligned["depth"]["abs_rel"] == pytest.approx(0.5)


def test_pose_from_tf_and_custom_namespace(blocky_sequence, write_prediction_bag, tmp_path):
    gt = blocky_sequence
    bag = write_prediction_bag(
        tmp_path / "pred",
        gt.stamps_ns,
        gt.T_world_cam,
        gt.depth,
        gt.dynamic_mask,
        namespace="/robot/p4d",
        tf=True,
    )
    with pytest.raises(ValueError, match="none of the prediction topics"):
        load_prediction(bag, namespace="/page4d", fmt="bag")
    prediction = load_prediction(bag, namespace="/robot/p4d")
    result = evaluate(prediction, gt, align="none")
    assert result["frames"]["pose"] == 4 and result["pose"]["ate_rmse"] < 1e-9


def test_missing_inputs_leave_sections_empty(blocky_sequence):
    prediction = PredictionSet.from_sequence(blocky_sequence)
    prediction.depth = {}
    prediction.dynamic_mask = {}
    result = evaluate(prediction, blocky_sequence)
    assert result["depth"] is None and result["mask"] is None and result["points"] is None
    table = format_table([result, evaluate(PredictionSet.from_sequence(blocky_sequence), blocky_sequence)])
    lines = table.splitlines()
    assert lines[0].startswith("| Sequence") and "ATE↓" in lines[0] and "Mask IoU↑" in lines[0]
    assert len(lines) == 5 and lines[-1].startswith("| mean")
    assert "–" in lines[2]


def test_ground_truth_without_poses_skips_those_frames(gt_sequence):
    prediction = PredictionSet.from_sequence(gt_sequence)
    # One predicted pose is off by 0.5 m; the frames with that pose and two others have no ground-truth pose.
    stamps = [int(stamp) for stamp in gt_sequence.stamps_ns]
    moved = prediction.poses[stamps[3]].copy()
    moved[0, 3] += 0.5
    prediction.poses[stamps[3]] = moved
    partial = dataclasses.replace(gt_sequence, T_world_cam=gt_sequence.T_world_cam.copy())
    partial.T_world_cam[[0, 3, 5]] = np.nan
    result = evaluate(prediction, partial, align="none")
    assert result["frames"]["pose"] == 5 and result["pose"]["ate_rmse"] < 1e-12
    assert result["mask"]["iou"] == 1.0
    # A video with no poses at all (DAVIS): no pose or point-map section, masks still scored.
    unposed = dataclasses.replace(gt_sequence, T_world_cam=np.full_like(gt_sequence.T_world_cam, np.nan))
    result = evaluate(prediction, unposed)
    assert result["pose"] is None and result["points"] is None and result["frames"]["pose"] == 0
    assert result["mask"]["iou"] == 1.0 and result["depth"]["abs_rel"] == 0.0
