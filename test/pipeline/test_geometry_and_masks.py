"""Sim(3) fitting, pose conversions and the geometric dynamic-mask test on hand-made scenes."""

from __future__ import annotations

import numpy as np
import pytest

from page4d_ros.pipeline.geometry import (
    Sim3,
    backproject,
    extrinsics_to_poses,
    poses_to_extrinsics,
    robust_sim3,
    weighted_umeyama,
)
from page4d_ros.pipeline.masks import dilate, fuse_masks, geometric_mask, geometric_votes, network_probability


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(50, 3))
    truth = Sim3(2.5, _rotation([1, 2, 3], 0.7), np.array([1.0, -2.0, 0.5]))
    fitted = weighted_umeyama(source, truth.apply_points(source), np.ones(50))
    assert fitted.scale == pytest.approx(2.5)
    np.testing.assert_allclose(fitted.rotation, truth.rotation, atol=1e-12)
    np.testing.assert_allclose(fitted.translation, truth.translation, atol=1e-12)


def test_robust_sim3_ignores_thirty_percent_outliers():
    rng = np.random.default_rng(1)
    source = rng.uniform(-1, 1, size=(400, 3)) + np.array([0, 0, 4.0])
    truth = Sim3(0.8, _rotation([0, 1, 0], 0.3), np.array([0.2, 0.0, -0.1]))
    target = truth.apply_points(source)
    outliers = rng.choice(400, 120, replace=False)
    target[outliers] += rng.normal(scale=1.0, size=(120, 3))
    depth = np.abs(target[:, 2])
    plain = weighted_umeyama(source, target, np.ones(400))
    robust, _ = robust_sim3(source, target, np.ones(400), depth, huber_delta=0.02, iterations=20)
    assert abs(robust.scale - 0.8) < 0.1 * abs(plain.scale - 0.8)
    assert robust.scale == pytest.approx(0.8, rel=2e-3)


def test_pose_conversions_round_trip_and_compose():
    pose = np.eye(4)
    pose[:3, :3] = _rotation([0.3, -1, 0.2], 1.1)
    pose[:3, 3] = [1.0, 2.0, 3.0]
    extrinsics = poses_to_extrinsics(pose)
    # Camera-from-world maps the camera centre to the origin.
    np.testing.assert_allclose(extrinsics[:, :3] @ pose[:3, 3] + extrinsics[:, 3], 0.0, atol=1e-12)
    np.testing.assert_allclose(extrinsics_to_poses(extrinsics), pose, atol=1e-12)
    a = Sim3(2.0, _rotation([1, 0, 0], 0.5), np.array([1.0, 0, 0]))
    b = Sim3(0.5, _rotation([0, 0, 1], -0.2), np.array([0, 3.0, 0]))
    x = np.array([[0.1, 0.2, 0.3]])
    np.testing.assert_allclose(a.compose(b).apply_points(x), a.apply_points(b.apply_points(x)))
    moved = a.apply_poses(pose)
    np.testing.assert_allclose(moved[:3, 3], a.apply_points(pose[:3, 3][None])[0])


def _two_view_scene(mover_depth: float):
    """Static camera pair 0.2 m apart looking at a wall 4 m away; frame 0 also sees a box patch."""
    height, width = 60, 80
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    depth = np.full((2, height, width), 4.0, dtype=np.float32)
    depth[0, 20:40, 30:50] = mover_depth
    extrinsics = np.zeros((2, 3, 4))
    extrinsics[:, :, :3] = np.eye(3)
    extrinsics[1, 0, 3] = -0.2  # camera 1 sits at x = +0.2
    return depth, np.stack([K, K]), extrinsics


def test_point_seen_through_in_another_view_is_dynamic():
    depth, K, extrinsics = _two_view_scene(mover_depth=2.0)
    votes, tested = geometric_votes(depth, K, extrinsics, rel_tolerance=0.05)
    mask = geometric_mask(votes, tested, min_votes=1, vote_fraction=0.5)
    # Frame 1 sees the wall where the box was: the box pixels of frame 0 (away from its border) are dynamic.
    assert mask[0, 22:38, 32:48].all()
    # The wall pixels of frame 0 and all of frame 1 agree or are occluded: never flagged.
    assert not mask[0, :, :25].any() and not mask[0, :, 55:].any()
    assert not mask[1].any()


def test_static_depth_edges_are_not_flagged():
    depth, K, extrinsics = _two_view_scene(mover_depth=2.0)
    depth[1] = 4.0
    # Make the box static: frame 1 sees it where geometry puts it (shifted by f b / z = 60 * 0.2 / 2 = 6 px).
    depth[1, 20:40, 24:44] = 2.0
    votes, tested = geometric_votes(depth, K, extrinsics, rel_tolerance=0.05)
    assert not geometric_mask(votes, tested, 1, 0.5).any()


def test_fusion_and_dilation():
    geometric = np.zeros((1, 5, 5), dtype=bool)
    geometric[0, 2, 2] = True
    network = np.zeros((1, 5, 5))
    network[0, 0, 0] = 0.9
    fused = fuse_masks(geometric, network, threshold=0.5, fusion="max")
    assert fused[0, 2, 2] and fused[0, 0, 0] and fused.sum() == 2
    assert fuse_masks(geometric, network, 0.5, "mean").sum() == 1
    assert dilate(geometric, 1).sum() == 9
    with pytest.raises(ValueError, match="at least one"):
        fuse_masks(None, None, 0.5, "max")


def test_tested_and_flow_fusions_trust_the_flow_test_where_and_when_it_ran():
    geometric = np.zeros((2, 4, 4), dtype=bool)
    geometric[:, 1, 1] = True
    network = np.zeros((2, 4, 4))
    network[:, 3, 3] = 0.9  # an untested pixel the network calls dynamic
    network[:, 0, 0] = 0.9  # a tested pixel the network calls dynamic, the flow test static
    tested = np.zeros((2, 4, 4), dtype=bool)
    tested[0, :2, :2] = True  # frame 0 ran the flow test on its top-left corner, frame 1 did not
    by_pixel = fuse_masks(geometric, network, 0.5, "tested", tested)
    assert by_pixel[0, 1, 1] and not by_pixel[0, 0, 0] and by_pixel[0, 3, 3]
    assert by_pixel[1, 0, 0] and by_pixel[1, 3, 3] and by_pixel[1, 1, 1]
    by_frame = fuse_masks(geometric, network, 0.5, "flow", tested)
    assert by_frame[0].sum() == 1 and by_frame[0, 1, 1]
    assert np.array_equal(by_frame[1], by_pixel[1])
    assert np.array_equal(fuse_masks(geometric, network, 0.5, "flow"), geometric | (network >= 0.5))


def test_network_probability_upsamples_with_pixel_centres():
    scores = np.array([[[-0.5, 0.5]]], dtype=np.float32)
    probability = network_probability(scores, 1, 4)
    # Pixel centres at 0.5, 1.5, 2.5, 3.5 of 4 map to -0.25, 0.25, 0.75, 1.25 of 2 (edges clamped).
    np.testing.assert_allclose(probability[0, 0], [0.0, 0.25, 0.75, 1.0])


def test_backproject_inverts_projection():
    K = np.array([[50.0, 0, 10], [0, 55.0, 8], [0, 0, 1]])
    depth = np.full((16, 20), 2.0)
    points = backproject(depth, K)
    assert points[8, 10] == pytest.approx([0.0, 0.0, 2.0])
    assert points[0, 0] == pytest.approx([-10 * 2 / 50, -8 * 2 / 55, 2.0])
