"""Trajectory, depth, mask and point-map metrics on hand-computed cases and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from page4d_ros.evaluation import (
    Sim3,
    absolute_trajectory_error,
    align_depth,
    align_trajectory,
    depth_metrics,
    mask_metrics,
    pointmap_metrics,
    relative_pose_error,
    umeyama_alignment,
)


def _poses(positions, yaws_deg=None):
    positions = np.asarray(positions, dtype=float)
    poses = np.tile(np.eye(4), (len(positions), 1, 1))
    poses[:, :3, 3] = positions
    if yaws_deg is not None:
        poses[:, :3, :3] = Rotation.from_euler(
            "z", np.asarray(yaws_deg, dtype=float)[:, None], degrees=True
        ).as_matrix()
    return poses


def _random_trajectory(count=20, seed=0):
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = Rotation.random(count, random_state=seed).as_matrix()
    poses[:, :3, 3] = np.cumsum(rng.normal(0, 0.3, (count, 3)), axis=0)
    return poses


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(30, 3))
    rotation = Rotation.from_rotvec([0.3, -0.5, 1.1]).as_matrix()
    target = 2.5 * source @ rotation.T + np.array([1.0, -2.0, 0.5])
    found = umeyama_alignment(source, target)
    assert found.scale == pytest.approx(2.5)
    np.testing.assert_allclose(found.rotation, rotation, atol=1e-12)
    np.testing.assert_allclose(found.translation, [1.0, -2.0, 0.5], atol=1e-12)
    rigid = umeyama_alignment(source, target, with_scale=False)
    assert rigid.scale == 1.0
    np.testing.assert_allclose(rigid.rotation, rotation, atol=1e-12)


def test_ate_and_rpe_vanish_for_a_moved_and_rescaled_trajectory():
    gt = _random_trajectory()
    moved = Sim3(0.37, Rotation.from_rotvec([1.0, 0.2, -0.4]).as_matrix(), np.array([5.0, 1.0, -3.0]))
    pred = moved.apply_poses(gt)
    ate = absolute_trajectory_error(pred, gt, "sim3")
    assert ate["rmse"] < 1e-12 and ate["scale"] == pytest.approx(1 / 0.37)
    rpe = relative_pose_error(pred, gt, align="sim3")
    assert rpe["trans_rmse"] < 1e-12 and rpe["rot_rmse_deg"] < 1e-6 and rpe["num_pairs"] == 19
    # SE(3) cannot undo the scale; no alignment cannot undo anything.
    assert absolute_trajectory_error(pred, gt, "se3")["rmse"] > 0.1
    assert absolute_trajectory_error(pred, gt, "none")["rmse"] > 1.0
    rigid = Sim3(1.0, moved.rotation, moved.translation).apply_poses(gt)
    assert absolute_trajectory_error(rigid, gt, "se3")["rmse"] < 1e-12


def test_ate_by_hand_without_alignment():
    gt = _poses([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    pred = _poses([[0, 0, 0], [1, 0.3, 0], [2, 0, 0.4], [3, 0, 0]])
    ate = absolute_trajectory_error(pred, gt, "none")
    # errors 0, 0.3, 0.4, 0: rmse = sqrt((0.09 + 0.16) / 4) = 0.25, mean 0.175, max 0.4.
    assert ate["rmse"] == pytest.approx(0.25)
    assert ate["mean"] == pytest.approx(0.175)
    assert ate["max"] == pytest.approx(0.4)


def test_rpe_by_hand():
    gt = _poses([[0, 0, 0], [1, 0, 0], [2, 0, 0]], yaws_deg=[0, 0, 0])
    # Each predicted step goes 1.1 m along the camera's own x axis (not 1 m) and turns 2 degrees more.
    second = [1.1 + 1.1 * np.cos(np.radians(2)), 1.1 * np.sin(np.radians(2)), 0]
    pred = _poses([[0, 0, 0], [1.1, 0, 0], second], yaws_deg=[0, 2, 4])
    rpe = relative_pose_error(pred, gt, align="none")
    # Every pair's error transform is a 0.1 m translation and a 2 degree turn.
    assert rpe["trans_rmse"] == pytest.approx(0.1)
    assert rpe["rot_rmse_deg"] == pytest.approx(2.0)
    assert rpe["num_pairs"] == 2
    two_step = relative_pose_error(pred, gt, delta=2, align="none")
    # Over two frames the prediction reaches `second` and turns 4 degrees; the ground truth moves 2 m.
    expected = np.hypot(second[0] - 2.0, second[1])
    assert two_step["trans_rmse"] == pytest.approx(expected)
    assert two_step["rot_rmse_deg"] == pytest.approx(4.0)


def test_pure_rotation_is_aligned_from_orientations():
    gt = _poses(np.zeros((5, 3)), yaws_deg=[0, 10, 20, 30, 40])
    world_turn = Sim3(1.0, Rotation.from_euler("x", 30, degrees=True).as_matrix(), np.array([1.0, 2, 3]))
    pred = world_turn.apply_poses(gt)
    similarity = align_trajectory(pred, gt, "sim3")
    np.testing.assert_allclose(similarity.apply_poses(pred), gt, atol=1e-12)
    assert relative_pose_error(pred, gt)["rot_rmse_deg"] < 1e-6


def test_trajectory_input_validation():
    with pytest.raises(ValueError, match="equal N"):
        absolute_trajectory_error(np.zeros((3, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="no poses"):
        absolute_trajectory_error(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="align"):
        absolute_trajectory_error(_poses([[0, 0, 0]] * 3), _poses([[0, 0, 0]] * 3), "affine")
    bad = _poses([[0, 0, 0]] * 3)
    bad[1, 0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        absolute_trajectory_error(bad, _poses([[0, 0, 0]] * 3))


def test_depth_metrics_by_hand_without_alignment():
    gt = np.array([1.0, 2.0, 4.0, 0.0])
    pred = np.array([1.0, 2.0, 5.0, 7.0])  # the last pixel has no ground truth
    metrics = depth_metrics(pred, gt, align="none")
    assert metrics["num_pixels"] == 3
    assert metrics["abs_rel"] == pytest.approx((1 / 4) / 3)
    assert metrics["sq_rel"] == pytest.approx((1 / 4) / 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(1 / 3))
    # 5/4 = 1.25 is not < 1.25.
    assert metrics["delta_1"] == pytest.approx(2 / 3)
    assert metrics["delta_2"] == 1.0


def test_depth_alignment_invariances():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 10.0, (4, 8, 8))
    scaled = depth_metrics(3.0 * gt, gt, align="scale")
    assert scaled["abs_rel"] < 1e-12 and scaled["delta_1"] == 1.0 and scaled["scale"] == pytest.approx(1 / 3)
    affine = depth_metrics((gt - 0.4) / 2.0, gt, align="scale_shift")
    assert affine["abs_rel"] < 1e-9
    assert affine["scale"] == pytest.approx(2.0) and affine["shift"] == pytest.approx(0.4)
    # Least squares by hand: slope = sum(dp * dg) / sum(dp^2) = 3 / 2 around the means 2 and 10/3.
    scale, shift = align_depth(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 5.0]), "scale_shift")
    assert scale == pytest.approx(1.5) and shift == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="constant"):
        align_depth(np.ones(4), np.arange(4.0), "scale_shift")
    # Median scale by hand: median(gt) / median(pred).
    assert align_depth(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 9.0]), "scale") == (2.0, 0.0)


def test_depth_metrics_ignore_invalid_pixels_and_far_ground_truth():
    gt = np.array([1.0, 2.0, 50.0, np.nan])
    pred = np.array([1.0, np.nan, 1.0, 1.0])
    metrics = depth_metrics(pred, gt, align="none", max_depth=10.0)
    assert metrics["num_pixels"] == 1 and metrics["abs_rel"] == 0.0
    with pytest.raises(ValueError, match="no pixel"):
        depth_metrics(np.full(3, np.nan), np.ones(3))
    with pytest.raises(ValueError, match="shapes differ"):
        depth_metrics(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="depth alignment"):
        depth_metrics(np.ones(3), np.ones(3), align="median")


def test_mask_metrics_by_hand():
    gt = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    metrics = mask_metrics(pred, gt)
    assert (metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]) == (1, 2, 1, 4)
    assert metrics["iou"] == pytest.approx(1 / 4)
    assert metrics["precision"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(1 / 2)
    assert metrics["f1"] == pytest.approx(2 / 5)
    empty = mask_metrics(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    assert empty["iou"] == empty["precision"] == empty["recall"] == 1.0
    missed = mask_metrics(np.zeros((2, 2), bool), gt[:, :2])
    assert missed["iou"] == 0.0 and missed["recall"] == 0.0 and missed["precision"] == 0.0
    assert mask_metrics(np.array([0, 255], np.uint8), np.array([False, True]))["iou"] == 1.0


def test_pointmap_metrics_by_hand():
    gt = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    pred = np.array([[0.0, 0.0, 0.1]])
    metrics = pointmap_metrics(pred, gt)
    assert metrics["accuracy_mean"] == pytest.approx(0.1)
    assert metrics["completeness_mean"] == pytest.approx((0.1 + np.sqrt(1.01)) / 2)
    assert metrics["overall_mean"] == pytest.approx((0.1 + (0.1 + np.sqrt(1.01)) / 2) / 2)
    with pytest.raises(ValueError, match="non-empty"):
        pointmap_metrics(np.zeros((0, 3)), gt)
