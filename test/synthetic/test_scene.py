"""Generator contract, determinism, analytic renders and multi-view consistency."""

from __future__ import annotations

import numpy as np
import pytest

from page4d_ros.synthetic import DEFAULT_EPOCH_NS, SyntheticSequence, generate_sequence
from page4d_ros.synthetic.render import (
    Box,
    Capsule,
    Environment,
    Lighting,
    PlacedShape,
    Renderer,
    Sphere,
    make_texture_atlas,
)


def test_contract_shapes_dtypes_and_stamps(small_sequence):
    seq = small_sequence
    assert seq.rgb.shape == (6, 72, 96, 3) and seq.rgb.dtype == np.uint8
    assert seq.depth.shape == (6, 72, 96) and seq.depth.dtype == np.float32
    assert seq.dynamic_mask.dtype == np.bool_ and seq.instance_ids.dtype == np.int32
    assert seq.T_world_cam.shape == (6, 4, 4) and seq.K.shape == (6, 3, 3)
    assert seq.frame_id == "camera_optical_frame"
    np.testing.assert_array_equal(seq.dynamic_mask, seq.instance_ids > 0)
    assert set(np.unique(seq.instance_ids)) <= {0, 1, 2, 3}
    # 30 fps from the fixed epoch: 0, 33333333, 66666667, ... ns.
    expected = DEFAULT_EPOCH_NS + np.array([0, 33_333_333, 66_666_667, 100_000_000, 133_333_333, 166_666_667])
    np.testing.assert_array_equal(seq.stamps_ns, expected)
    rotations = seq.T_world_cam[:, :3, :3]
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (6, 3, 3)), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    assert np.all(seq.depth > 0), "inside the room every pixel sees a surface"
    assert seq.rgb.std() > 20, "textures and shading must give contrast"


def test_same_seed_same_frames_other_seed_differs():
    first = generate_sequence(5, 2, 48, 32, camera_motion="walk")
    again = generate_sequence(5, 2, 48, 32, camera_motion="walk")
    other = generate_sequence(6, 2, 48, 32, camera_motion="walk")
    for name in ("rgb", "depth", "instance_ids", "T_world_cam", "K"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.rgb, other.rgb)
    assert not np.allclose(first.K, other.K)


def test_chunks_equal_the_long_sequence():
    whole = generate_sequence(2, 5, 40, 30, pixel_noise=3.0)
    tail = generate_sequence(2, 2, 40, 30, pixel_noise=3.0, first_frame=3)
    np.testing.assert_array_equal(whole.rgb[3:], tail.rgb)
    np.testing.assert_array_equal(whole.depth[3:], tail.depth)
    np.testing.assert_array_equal(whole.stamps_ns[3:], tail.stamps_ns)
    np.testing.assert_array_equal(whole.T_world_cam[3:], tail.T_world_cam)


def test_static_surfaces_are_consistent_across_views(small_sequence):
    """Static pixels of frame 0, back-projected with depth and K and moved by the poses into frame 5, have the
    z that frame 5 rendered there. On a plane 1/z is affine in pixel coordinates, so bilinear interpolation
    of 1/depth between four pixels on the same surface is exact."""
    seq = small_sequence
    K = seq.K[0]
    rows, cols = np.nonzero(~seq.dynamic_mask[0])
    z = seq.depth[0][rows, cols].astype(np.float64)
    camera0 = np.stack([(cols - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z], axis=1)
    world = camera0 @ seq.T_world_cam[0, :3, :3].T + seq.T_world_cam[0, :3, 3]
    T5 = np.linalg.inv(seq.T_world_cam[5])
    camera5 = world @ T5[:3, :3].T + T5[:3, 3]
    u = K[0, 0] * camera5[:, 0] / camera5[:, 2] + K[0, 2]
    v = K[1, 1] * camera5[:, 1] / camera5[:, 2] + K[1, 2]
    inside = (camera5[:, 2] > 0) & (u >= 0) & (u < seq.width - 1) & (v >= 0) & (v < seq.height - 1)
    u, v, expected = u[inside], v[inside], camera5[inside, 2]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0
    inverse = 1.0 / seq.depth[5].astype(np.float64)
    static = ~seq.dynamic_mask[5]
    corners = [
        (v0, u0, (1 - fu) * (1 - fv)),
        (v0, u0 + 1, fu * (1 - fv)),
        (v0 + 1, u0, (1 - fu) * fv),
        (v0 + 1, u0 + 1, fu * fv),
    ]
    all_static = np.all([static[r, c] for r, c, _ in corners], axis=0)
    interpolated = 1.0 / sum(inverse[r, c] * w for r, c, w in corners)
    relative = np.abs(interpolated - expected)[all_static] / expected[all_static]
    assert all_static.sum() > 1000
    # Pixels whose four neighbours straddle an occlusion edge or a curved surface make up the rest.
    assert np.mean(relative < 1e-4) > 0.8


def _plain_renderer(width=201, height=151, f=150.0):
    """A renderer whose principal point is the centre of pixel (row 75, column 100)."""
    rng = np.random.default_rng(0)
    atlas = make_texture_atlas(rng, np.full((1, 3), 0.5), ["plain"])
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    env = Environment("outdoor", (5.0, 5.0), 3.0, (0, 0, 0, 0), 0, 0)
    light = Lighting(np.array([0.0, 0.0, 1.0]), 0.5, None, 0.0, 0.5)
    return Renderer(width, height, K, atlas, np.array([0.01]), env, light), K


def test_sphere_depth_and_silhouette_match_geometry():
    renderer, _ = _plain_renderer()
    # Identity pose: the optical axis points up (+z world), so no ray meets the ground; only the sphere.
    pose = np.eye(4)
    pose[2, 3] = 1.0
    sphere = PlacedShape(Sphere(1.0), np.eye(3), np.array([0.0, 0.0, 6.0]), 0, instance_id=4)
    _, depth, ids = renderer.render(pose, [sphere])
    # Sphere centre 5 m ahead, radius 1: the central ray hits at z = 4.
    assert depth[75, 100] == pytest.approx(4.0, abs=1e-6)
    # Silhouette: a disc of radius f * r / sqrt(d^2 - r^2) pixels.
    expected_area = np.pi * (150.0 * 1.0 / np.sqrt(25.0 - 1.0)) ** 2
    assert np.count_nonzero(depth > 0) == pytest.approx(expected_area, rel=0.02)
    np.testing.assert_array_equal(ids > 0, depth > 0)
    assert np.all(ids[depth > 0] == 4)


def test_box_face_and_capsule_depths_are_exact():
    renderer, _ = _plain_renderer()
    pose = np.eye(4)
    pose[2, 3] = 1.0
    box = PlacedShape(Box((1.01, 1.01, 0.5)), np.eye(3), np.array([0.0, 0.0, 4.5]), 0)
    _, depth, _ = renderer.render(pose, [box])
    # Front face at world z = 4, camera at z = 1: z-depth 3 on every pixel of the face.
    face = depth > 0
    np.testing.assert_allclose(depth[face], 3.0, atol=1e-6)
    # Face half-width 1.01 m at 3 m with f = 150 px: 50.5 px each side of the centre column, so 101 columns.
    assert np.count_nonzero(face[75]) == 101
    # A capsule along world x at 2 m, radius 0.25: the nearest point of the central ray is at 1.75.
    rotation = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    capsule = PlacedShape(Capsule(2.0, 0.25), rotation, np.array([-1.0, 0.0, 3.0]), 0)
    _, depth, _ = renderer.render(pose, [capsule])
    assert depth[75, 100] == pytest.approx(1.75, abs=1e-6)


def test_outdoor_sky_has_no_depth_and_no_instance():
    seq = generate_sequence(4, 2, 64, 48, scene="outdoor", camera_motion="orbit")
    sky = seq.depth == 0
    assert sky.any() and (~sky).any()
    assert not seq.dynamic_mask[sky].any()


@pytest.mark.parametrize("motion", ["walk", "orbit", "rotate", "handheld", "static"])
def test_camera_motions(motion):
    seq = generate_sequence(3, 8, 32, 24, camera_motion=motion, fps=10.0)
    centres = seq.T_world_cam[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    angles = np.degrees(
        np.arccos(
            np.clip(
                (
                    np.trace(
                        seq.T_world_cam[1:, :3, :3].transpose(0, 2, 1) @ seq.T_world_cam[:-1, :3, :3],
                        axis1=1,
                        axis2=2,
                    )
                    - 1
                )
                / 2,
                -1,
                1,
            )
        )
    )
    if motion == "static":
        assert np.all(steps == 0) and np.allclose(angles, 0, atol=1e-5)
    elif motion == "rotate":
        assert np.all(steps == 0) and np.all(angles > 0.1)
    elif motion == "handheld":
        assert 0 < steps.max() < 0.05
    else:
        # Walking 0.9-1.3 m/s (orbit 0.5-0.8 m/s) at 10 fps, plus head bob.
        assert np.all(steps > 0.04) and np.all(steps < 0.15)
    assert centres[:, 2].min() > 1.0 and centres[:, 2].max() < 2.0


def test_articulated_walker_changes_shape():
    seq = generate_sequence(8, 10, 96, 72, camera_motion="static", num_movers=1, fps=10.0)
    assert seq.metadata["mover_kinds"] == ["walker"]
    areas = seq.dynamic_mask.sum(axis=(1, 2))
    assert np.count_nonzero(areas) >= 8, "the walker stays in view of a static camera looking at the centre"
    visible = np.flatnonzero(areas)
    # A rigid body at constant distance keeps its silhouette area; swinging limbs do not.
    assert areas[visible].max() != areas[visible].min()


def test_argument_validation():
    with pytest.raises(ValueError, match="camera_motion"):
        generate_sequence(0, 2, 32, 24, camera_motion="fly")
    with pytest.raises(ValueError, match="scene"):
        generate_sequence(0, 2, 32, 24, scene="moon")
    with pytest.raises(ValueError, match="num_frames"):
        generate_sequence(0, 0, 32, 24)
    with pytest.raises(ValueError, match="width"):
        generate_sequence(0, 2, 4, 24)
    with pytest.raises(ValueError, match="num_movers"):
        generate_sequence(0, 2, 32, 24, num_movers=-1)
    with pytest.raises(ValueError, match="seed"):
        generate_sequence(-3, 2, 32, 24)
    with pytest.raises(ValueError, match="fps"):
        generate_sequence(0, 2, 32, 24, fps=0.0)
    with pytest.raises(ValueError, match="K must"):
        generate_sequence(0, 2, 32, 24, K=np.eye(2))


def test_explicit_intrinsics_and_fov():
    K = np.array([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]])
    seq = generate_sequence(1, 1, 32, 24, K=K)
    np.testing.assert_array_equal(seq.K[0], K)
    wide = generate_sequence(1, 1, 32, 24, fov_deg=90.0)
    assert wide.K[0, 0, 0] == pytest.approx(16.0)


def test_slicing_is_a_view_and_validation_catches_bad_arrays(small_sequence):
    part = small_sequence[2:5]
    assert len(part) == 3 and part.num_frames == 3
    assert np.shares_memory(part.rgb, small_sequence.rgb)
    np.testing.assert_array_equal(part.stamps_ns, small_sequence.stamps_ns[2:5])
    assert len(small_sequence.slice(0, 6, 2)) == 3
    with pytest.raises(TypeError):
        small_sequence[1]
    with pytest.raises(ValueError, match="stamps_ns"):
        SyntheticSequence(None, None, None, None, np.tile(np.eye(4), (2, 1, 1)), None, np.array([5, 5]))
    with pytest.raises(ValueError, match="depth must have dtype"):
        SyntheticSequence(None, np.zeros((1, 2, 2)), None, None, np.eye(4)[None], None, np.array([1]))
