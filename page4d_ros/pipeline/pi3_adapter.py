"""π³ outputs -> :class:`~page4d_ros.pipeline.types.WindowPrediction` (numpy, the pipeline's conventions).

π³ (``page4d_ros.model.pi3``) returns per-pixel camera-frame points ``local_points``, confidence logits
``conf`` and camera-to-world ``camera_poses`` without a reference frame; it predicts no intrinsics. The
adapter turns them into what the pipeline expects:

- extrinsics: camera-from-world ``[R|t]`` of a world that is the window's first camera,
  ``E_i = inv(P_i) P_0`` (OpenCV axes, the network's scale, which the window chaining handles);
- depth: z-depth ``local_points[..., 2]``;
- confidence: ``1 + exp(logit)``, the scale of VGGT's ``depth_conf`` (``expp1``) that ``conf_threshold`` /
  ``conf_percentile`` are tuned for; it is monotonic in the probability ``p = sigmoid(logit)``
  (``1 + p / (1 - p)``), so upstream's ``p > 0.1`` filter is ``confidence > 1.111``;
- intrinsics: the camera_info K when every frame of the window has one, else estimated from the local points
  by :func:`estimate_focal` (principal point at the image centre, one focal length per window);
- dynamics: None (π³ has no dynamics head; the runner's geometric mask stage alone decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares

from page4d_ros.model.pi3 import PIXEL_LIMIT, Pi3SizeRule
from page4d_ros.pipeline.types import WindowPrediction

MAX_FOCAL_SAMPLES = 20000
"""Pixels per window used to fit the focal length (a regular subsample; the fit is a 1-D robust problem)."""
FOCAL_ROBUST_SCALE_PX = 2.0
"""Residual (pixels) above which the focal fit's soft-L1 loss grows linearly, not quadratically."""
MIN_FOV_DEG = 5.0
MAX_FOV_DEG = 170.0
"""The fitted focal length is kept within these fields of view across the longer image side (an untrained or
diverging network can give degenerate point maps; the focal length stays finite and plausible)."""
MIN_POINT_DEPTH = 1e-6
MAX_CONF_LOGIT = 80.0  # exp(80) ~ 5.5e34 stays finite in float32


def estimate_focal(
    local_points: np.ndarray, weights: np.ndarray | None = None, max_samples: int = MAX_FOCAL_SAMPLES
) -> float:
    """Focal length (pixels, square pixels) that best projects camera-frame point maps onto their pixels.

    Model: pixel (u, v) sees the point (X, Y, Z) with ``u - cx = f X / Z`` and ``v - cy = f Y / Z``, the
    principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integers). The
    least-squares focal over all frames (a closed form) starts two robust fits
    (``scipy.optimize.least_squares``, residuals weighted by ``sqrt(weights)``, scale
    ``FOCAL_ROBUST_SCALE_PX``): soft-L1 (convex enough to leave the outlier-biased start), then Cauchy (whose
    influence fades for gross outliers such as sky, edges or wrong depth, which would still bias an L1 fit).
    Points with Z <= 0 or non-finite values are ignored; the result lies within the fields of view
    ``MIN_FOV_DEG`` to ``MAX_FOV_DEG`` across the longer side.

    Args:
        local_points: [S, H, W, 3] or [H, W, 3] points in the camera frame (OpenCV axes).
        weights: optional per-pixel weights of the same leading shape (e.g. the confidence probability).
        max_samples: at most this many pixels (a regular subsample) enter the fit.

    Raises:
        ValueError: wrong shapes, or fewer than two usable pixels.
    """
    points = np.asarray(local_points)
    if points.ndim == 3:
        points = points[None]
    if points.ndim != 4 or points.shape[-1] != 3:
        raise ValueError(f"local_points must be [S, H, W, 3] or [H, W, 3], got {points.shape}")
    frames, height, width, _ = points.shape
    # A regular subsample of every frame's pixels first (4x the samples, before invalid ones are dropped),
    # so a full-size window costs a few milliseconds.
    step = max(1, (frames * height * width) // (4 * max_samples))
    if step > 1 and step % width == 0:
        step += 1  # a multiple of the width would sample a single column
    index = np.arange(0, frames * height * width, step)
    sampled = points.reshape(-1, 3)[index].astype(np.float64)
    if weights is None:
        weight = np.ones(len(index))
    else:
        weight = np.asarray(weights)
        if weight.size != frames * height * width:
            raise ValueError(f"weights must have {frames}x{height}x{width} values, got shape {weight.shape}")
        weight = weight.reshape(-1)[index].astype(np.float64)
    pixel = index % (height * width)
    offsets = np.stack([pixel % width - (width - 1) / 2.0, pixel // width - (height - 1) / 2.0], axis=-1)
    depth = sampled[:, 2]
    usable = (
        np.isfinite(sampled).all(axis=-1) & (depth > MIN_POINT_DEPTH) & np.isfinite(weight) & (weight > 0)
    )
    rays = sampled[usable, :2] / depth[usable, None]
    pixels = offsets[usable]
    sample_weight = weight[usable]
    if len(rays) < 2:
        raise ValueError("cannot estimate a focal length: fewer than two pixels with positive, finite depth")
    step = max(1, len(rays) // max_samples)
    rays, pixels, sample_weight = rays[::step], pixels[::step], sample_weight[::step]
    root = np.sqrt(sample_weight)[:, None]
    a = (rays * root).reshape(-1)
    b = (pixels * root).reshape(-1)
    denominator = float(a @ a)
    if not denominator > 0:
        raise ValueError("cannot estimate a focal length: every usable point lies on the optical axis")
    half_side = max(width, height) / 2.0
    lowest = half_side / np.tan(np.radians(MAX_FOV_DEG) / 2.0)
    highest = half_side / np.tan(np.radians(MIN_FOV_DEG) / 2.0)
    focal = float(np.clip(float(a @ b) / denominator, lowest, highest))
    for loss in ("soft_l1", "cauchy"):
        fit = least_squares(
            lambda f: f[0] * a - b,
            x0=[focal],
            jac=lambda f: a[:, None],
            bounds=([lowest], [highest]),
            loss=loss,
            f_scale=FOCAL_ROBUST_SCALE_PX,
            x_scale=[focal],
        )
        focal = float(fit.x[0])
    return focal


def centred_intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """3x3 K with ``fx = fy = focal`` and the principal point at the image centre (pixel centres)."""
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def relative_extrinsics(camera_to_world: np.ndarray) -> np.ndarray:
    """Camera-from-world [S, 3, 4] in the frame of camera 0 from camera-to-world poses [S, 4, 4]."""
    poses = np.asarray(camera_to_world, dtype=np.float64)
    return (np.linalg.inv(poses) @ poses[0])[:, :3, :]


def confidence_from_logits(logits: np.ndarray) -> np.ndarray:
    """``1 + exp(logit)`` as float32 (logits clipped at ``MAX_CONF_LOGIT`` so the result stays finite)."""
    clipped = np.minimum(np.asarray(logits, dtype=np.float32), np.float32(MAX_CONF_LOGIT))
    return np.float32(1.0) + np.exp(clipped)


def window_prediction(outputs: Mapping[str, Any], intrinsics: np.ndarray | None = None) -> WindowPrediction:
    """Convert one window's π³ outputs (batch 1) into a :class:`WindowPrediction`.

    Args:
        outputs: ``local_points`` [1,S,H,W,3], ``conf`` [1,S,H,W,1], ``camera_poses`` [1,S,4,4] (tensors).
        intrinsics: [S,3,3] K at the network resolution from camera_info, or None to estimate it.
    """
    local_points = outputs["local_points"][0].detach().float().cpu().numpy()
    logits = outputs["conf"][0, ..., 0].detach().float().cpu().numpy()
    poses = outputs["camera_poses"][0].detach().double().cpu().numpy()
    frames, height, width, _ = local_points.shape
    if intrinsics is None:
        probability = 1.0 / (1.0 + np.exp(-np.clip(logits, -MAX_CONF_LOGIT, MAX_CONF_LOGIT)))
        focal = estimate_focal(local_points, probability)
        K = np.repeat(centred_intrinsics(focal, width, height)[None], frames, axis=0)
    else:
        K = np.asarray(intrinsics, dtype=np.float64).reshape(frames, 3, 3)
    return WindowPrediction(
        extrinsics=relative_extrinsics(poses),
        intrinsics=K,
        depth=np.ascontiguousarray(local_points[..., 2]),
        depth_conf=confidence_from_logits(logits),
        dynamics=None,
    )


def run_window(
    model: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    intrinsics: np.ndarray | None = None,
) -> WindowPrediction:
    """Run π³ on one window ``images`` [1,S,3,H,W] (autocast to ``dtype`` on CUDA) and convert the outputs."""
    use_autocast = device.type == "cuda" and dtype != torch.float32
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
        outputs = model(images)
    return window_prediction(outputs, intrinsics)


def size_rule(inference: Mapping[str, Any] | None = None, patch_size: int = 14) -> Pi3SizeRule:
    """π³'s input size rule for a network of ``patch_size``; a checkpoint's inference settings may store
    another ``pixel_limit``."""
    limit = (inference or {}).get("pixel_limit", PIXEL_LIMIT)
    return Pi3SizeRule(pixel_limit=limit, patch_size=patch_size)
