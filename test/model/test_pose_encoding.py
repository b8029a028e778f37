"""Pose encoding <-> extrinsics/intrinsics, checked against hand-derived values."""

from __future__ import annotations

import math

import pytest
import torch

from page4d_ros.model import (
    extri_intri_to_pose_encoding,
    matrix_to_quaternion,
    pose_encoding_to_extri_intri,
    quaternion_to_matrix,
)


def test_decode_hand_example():
    # 90 degrees about +z: q = (0, 0, sin45, cos45); R maps x -> y, y -> -x.
    half = math.sqrt(0.5)
    fov_h, fov_w = 2 * math.atan(0.5), 2 * math.atan(1.0)
    pose_enc = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, half, half, fov_h, fov_w]], dtype=torch.float64)
    extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (100, 200))
    expected_rotation = torch.tensor(
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(extrinsics[0, :, :3], expected_rotation)
    torch.testing.assert_close(extrinsics[0, :, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    # fy = (H/2)/tan(fov_h/2) = 50/0.5 = 100 ; fx = (W/2)/tan(fov_w/2) = 100/1 = 100 ; centre (W/2, H/2).
    expected_k = torch.tensor([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(intrinsics[0], expected_k)


def test_non_unit_quaternion_is_normalised_implicitly():
    quaternion = torch.tensor([0.0, 0.0, 2.0, 2.0])
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(quaternion_to_matrix(quaternion), expected)


def _random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    quaternions = torch.randn(count, 4, dtype=torch.float64, generator=generator)
    return quaternion_to_matrix(quaternions / quaternions.norm(dim=-1, keepdim=True))


def test_round_trip_random_and_edge_rotations():
    generator = torch.Generator().manual_seed(0)
    rotations = [_random_rotations(64, generator)]
    # 180-degree turns (w = 0) and identity: the pivot selection must handle them.
    for axis in torch.eye(3, dtype=torch.float64):
        rotations.append((2 * torch.outer(axis, axis) - torch.eye(3, dtype=torch.float64))[None])
    rotations.append(torch.eye(3, dtype=torch.float64)[None])
    rotation = torch.cat(rotations)
    count = rotation.shape[0]
    translation = torch.randn(count, 3, 1, dtype=torch.float64, generator=generator)
    extrinsics = torch.cat([rotation, translation], dim=-1).reshape(1, count, 3, 4)
    intrinsics = torch.zeros(1, count, 3, 3, dtype=torch.float64)
    intrinsics[..., 0, 0] = 300 + 100 * torch.rand(count, generator=generator, dtype=torch.float64)
    intrinsics[..., 1, 1] = 280 + 100 * torch.rand(count, generator=generator, dtype=torch.float64)
    intrinsics[..., 0, 2], intrinsics[..., 1, 2], intrinsics[..., 2, 2] = 259.0, 196.0, 1.0
    encoding = extri_intri_to_pose_encoding(extrinsics, intrinsics, (392, 518))
    assert encoding.shape == (1, count, 9)
    assert (encoding[..., 6] >= 0).all()
    torch.testing.assert_close(encoding[..., 3:7].norm(dim=-1), torch.ones(1, count, dtype=torch.float64))
    decoded_extrinsics, decoded_intrinsics = pose_encoding_to_extri_intri(encoding, (392, 518))
    torch.testing.assert_close(decoded_extrinsics, extrinsics, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(decoded_intrinsics, intrinsics, rtol=1e-10, atol=1e-10)


def test_matrix_to_quaternion_standardises_sign():
    quaternion = torch.tensor([0.1, -0.2, 0.3, -0.9], dtype=torch.float64)
    quaternion = quaternion / quaternion.norm()
    recovered = matrix_to_quaternion(quaternion_to_matrix(quaternion))
    torch.testing.assert_close(recovered, -quaternion)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pose_encoding_to_extri_intri(torch.zeros(2, 8), (10, 10)), "9 values"),
        (lambda: pose_encoding_to_extri_intri(torch.zeros(2, 9), (10,)), "height, width"),
        (lambda: pose_encoding_to_extri_intri(torch.zeros(2, 9), (0, 10)), "positive"),
        (lambda: extri_intri_to_pose_encoding(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), (4, 4)), "3, 4"),
        (lambda: extri_intri_to_pose_encoding(torch.zeros(2, 3, 4), torch.zeros(2, 2, 2), (4, 4)), "3, 3"),
    ],
)
def test_invalid_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
