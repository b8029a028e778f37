"""Pose encoding ``absT_quaR_FoV``: [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w] <-> extrinsics + intrinsics.

Extrinsics are camera-from-world ``[R | t]`` (OpenCV axes, ``X_cam = R X_world + t``); intrinsics put the
principal point at the image centre (W/2, H/2) of the network input and use ``f = (size/2) / tan(fov/2)``.
Quaternions are scalar-last (XYZW); non-unit quaternions are normalised implicitly (as upstream).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_image_size(image_size_hw: Sequence[int]) -> tuple[float, float]:
    if len(image_size_hw) != 2:
        raise ValueError(f"image_size_hw must be (height, width), got {image_size_hw!r}")
    height, width = (float(value) for value in image_size_hw)
    if not (height > 0 and width > 0):
        raise ValueError(f"image_size_hw must be positive, got {image_size_hw!r}")
    return height, width


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from XYZW quaternions [..., 4] (any non-zero norm)."""
    i, j, k, r = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    matrix = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return matrix.reshape((*quaternions.shape[:-1], 3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """XYZW unit quaternions [..., 4] with ``w >= 0`` from rotation matrices [..., 3, 3].

    For each matrix the quaternion component with the largest magnitude is recovered from the diagonal first
    (the numerically stable choice), the others from the off-diagonal sums/differences divided by it.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape [..., 3, 3], got {tuple(matrix.shape)}")
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * squared magnitudes of (w, x, y, z); clamp guards tiny negatives from rounding.
    squares = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    ).clamp(min=0)
    magnitudes = torch.sqrt(squares)  # 2 |q_c|
    # Candidate (w, x, y, z) scaled by 2 q_c for each choice c of the pivot component.
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s01, s02, s12 = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    candidates = torch.stack(
        [
            torch.stack([squares[..., 0], d21, d02, d10], dim=-1),
            torch.stack([d21, squares[..., 1], s01, s02], dim=-1),
            torch.stack([d02, s01, squares[..., 2], s12], dim=-1),
            torch.stack([d10, s02, s12, squares[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    pivot = magnitudes.argmax(dim=-1, keepdim=True)
    chosen = torch.gather(candidates, -2, pivot[..., None].expand(*pivot.shape[:-1], 1, 4)).squeeze(-2)
    pivot_magnitude = torch.gather(magnitudes, -1, pivot)
    wxyz = chosen / (2 * pivot_magnitude)
    xyzw = torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)
    xyzw = xyzw / xyzw.norm(dim=-1, keepdim=True)
    return torch.where(xyzw[..., 3:] < 0, -xyzw, xyzw)


def pose_encoding_to_extri_intri(
    pose_enc: torch.Tensor, image_size_hw: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode pose encodings [..., 9] to extrinsics [..., 3, 4] (camera-from-world), intrinsics [..., 3, 3].

    Args:
        pose_enc: encodings from the camera head.
        image_size_hw: (H, W) of the network input the intrinsics refer to.
    """
    if pose_enc.shape[-1] != 9:
        raise ValueError(
            f"pose encodings must have 9 values in the last dimension, got {tuple(pose_enc.shape)}"
        )
    height, width = _check_image_size(image_size_hw)
    rotation = quaternion_to_matrix(pose_enc[..., 3:7])
    extrinsics = torch.cat([rotation, pose_enc[..., :3, None]], dim=-1)
    fy = (height / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (width / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    intrinsics = pose_enc.new_zeros((*pose_enc.shape[:-1], 3, 3))
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2.0
    intrinsics[..., 1, 2] = height / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_size_hw: Sequence[int]
) -> torch.Tensor:
    """Encode extrinsics [..., 3, 4] (camera-from-world) and intrinsics [..., 3, 3] as [..., 9].

    The principal point is not encoded (the network assumes the image centre); FoVs come from fx, fy.
    """
    if extrinsics.shape[-2:] != (3, 4) and extrinsics.shape[-2:] != (4, 4):
        raise ValueError(
            f"extrinsics must have shape [..., 3, 4] or [..., 4, 4], got {tuple(extrinsics.shape)}"
        )
    if intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must have shape [..., 3, 3], got {tuple(intrinsics.shape)}")
    height, width = _check_image_size(image_size_hw)
    quaternion = matrix_to_quaternion(extrinsics[..., :3, :3])
    translation = extrinsics[..., :3, 3]
    fov_h = 2 * torch.atan((height / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([translation, quaternion, fov_h[..., None], fov_w[..., None]], dim=-1)
