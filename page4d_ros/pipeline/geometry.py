"""Rigid and similarity transforms, back-projection and robust Sim(3) fitting (numpy, float64)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sim3:
    """Similarity transform ``x -> scale * R @ x + t`` mapping one frame's points into another's.

    The one Sim(3) type of the package: the pipeline chains windows with it and the evaluation aligns
    predicted trajectories to the ground truth with it.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @staticmethod
    def identity() -> Sim3:
        """The identity transform."""
        return Sim3(1.0, np.eye(3), np.zeros(3))

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Transform points ``[..., 3]``."""
        return self.scale * points @ self.rotation.T + self.translation

    def apply_poses(self, T_world_cam: np.ndarray) -> np.ndarray:
        """Map world-from-camera poses ``[..., 4, 4]`` of the source frame into the target frame (scaled).

        Rotations are rotated; camera centres are moved and scaled. The result is a float64 copy.
        """
        out = np.array(T_world_cam, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ out[..., :3, :3]
        out[..., :3, 3] = self.apply_points(out[..., :3, 3])
        return out

    def compose(self, inner: Sim3) -> Sim3:
        """``self ∘ inner`` (apply ``inner`` first)."""
        return Sim3(
            self.scale * inner.scale,
            self.rotation @ inner.rotation,
            self.scale * self.rotation @ inner.translation + self.translation,
        )


def extrinsics_to_poses(extrinsics: np.ndarray) -> np.ndarray:
    """Camera-from-world ``[..., 3, 4]`` to world-from-camera 4x4 poses (float64)."""
    extrinsics = np.asarray(extrinsics, dtype=np.float64)
    R = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3]
    poses = np.zeros((*extrinsics.shape[:-2], 4, 4))
    Rt = np.swapaxes(R, -1, -2)
    poses[..., :3, :3] = Rt
    poses[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    poses[..., 3, 3] = 1.0
    return poses


def poses_to_extrinsics(poses: np.ndarray) -> np.ndarray:
    """World-from-camera 4x4 poses to camera-from-world ``[..., 3, 4]``."""
    poses = np.asarray(poses, dtype=np.float64)
    Rt = np.swapaxes(poses[..., :3, :3], -1, -2)
    t = -np.einsum("...ij,...j->...i", Rt, poses[..., :3, 3])
    return np.concatenate([Rt, t[..., None]], axis=-1)


def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rays ``K^-1 [u, v, 1]`` for every pixel centre, shape [height, width, 3] (z = 1)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    K_inv = np.linalg.inv(K)
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pixels @ K_inv.T


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame (optical) points [H, W, 3] from a z-depth map [H, W] and its intrinsics."""
    return pixel_rays(K, depth.shape[0], depth.shape[1]) * depth[..., None]


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[..., 2]`` of camera-frame points ``[..., 3]``."""
    uvw = points_cam @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def weighted_umeyama(
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray | None = None,
    with_scale: bool = True,
) -> Sim3:
    """Least-squares Sim(3) (Umeyama 1991) with ``target ≈ s R source + t`` for correspondences ``[N, 3]``.

    Args:
        source: ``[N, 3]`` points to be moved.
        target: ``[N, 3]`` corresponding points.
        weights: ``[N]`` non-negative weights with a positive sum; ``None`` weighs all points equally.
        with_scale: estimate the scale (Sim(3)); otherwise the scale is 1 (SE(3)).

    With fewer than three non-collinear points the rotation about their line is not observable; callers that
    need it decide what to do (the evaluation takes it from camera orientations).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 3 or source.shape != target.shape or len(source) == 0:
        raise ValueError(
            f"weighted_umeyama needs two [N, 3] arrays with N >= 1, got {source.shape}, {target.shape}"
        )
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if w.shape != (len(source),) or total <= 0:
        raise ValueError(
            f"weighted_umeyama needs {len(source)} weights with a positive sum, got shape {w.shape}"
        )
    w = w / total
    mu_s = w @ source
    mu_t = w @ target
    centred_s = source - mu_s
    centred_t = target - mu_t
    covariance = (centred_t * w[:, None]).T @ centred_s
    U, singular, Vt = np.linalg.svd(covariance)
    correction = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        correction[2, 2] = -1.0
    R = U @ correction @ Vt
    variance_s = float(w @ np.sum(centred_s**2, axis=1))
    if with_scale:
        if variance_s <= 0:
            raise ValueError("weighted_umeyama: source points are all identical, scale is unobservable")
        scale = float(np.sum(singular * np.diag(correction)) / variance_s)
    else:
        scale = 1.0
    t = mu_t - scale * R @ mu_s
    return Sim3(scale, R, t)


def robust_sim3(
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray,
    residual_scale: np.ndarray,
    huber_delta: float,
    iterations: int = 6,
) -> tuple[Sim3, float]:
    """IRLS-Huber Sim(3) fit; residuals are divided by ``residual_scale`` (e.g. the target depth).

    Returns the transform and the weighted median relative residual of the inliers.
    """
    current_weights = np.asarray(weights, dtype=np.float64)
    transform = weighted_umeyama(source, target, current_weights)
    relative = np.zeros(source.shape[0])
    for _ in range(iterations):
        relative = np.linalg.norm(transform.apply_points(source) - target, axis=1) / residual_scale
        huber = np.minimum(1.0, huber_delta / np.maximum(relative, 1e-12))
        transform = weighted_umeyama(source, target, weights * huber)
    relative = np.linalg.norm(transform.apply_points(source) - target, axis=1) / residual_scale
    return transform, float(np.median(relative))


def average_rotation(rotations: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotation matrices [N,3,3] (projection of their sum onto SO(3))."""
    U, _, Vt = np.linalg.svd(np.sum(rotations, axis=0))
    correction = np.eye(3)
    if np.linalg.det(U @ Vt) < 0:
        correction[2, 2] = -1.0
    return U @ correction @ Vt
