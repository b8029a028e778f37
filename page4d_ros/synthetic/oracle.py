"""``OracleModel``: a pipeline predictor answering with a synthetic sequence's ground truth (plus noise).

It lets the streaming pipeline be tested on its own: like the real network, every window comes back in its own
frame (the first camera of the window is the origin) and at an arbitrary per-window scale (the mean valid
depth of the window is normalised to a random value in ``scale_range``). Depth and K are resampled exactly as
``pipeline.preprocess`` mapped the images (nearest source pixel for depth, the same affine map for K), so
depth pixel (u, v) lines up with image pixel (u, v). Noise, drawn per window from ``seed`` and the window's
first stamp:

- ``depth_noise``: relative per-pixel Gaussian noise on depth,
- ``translation_noise``: relative error of each frame's translation from the window's first camera (Gaussian
  per axis, std ``translation_noise * |t|``),
- ``rotation_noise``: relative error of each frame's rotation from the window's first camera (random axis,
  Gaussian angle with std ``rotation_noise * angle``).

So ``0.01`` everywhere is "1 % noise on every predicted quantity".

With ``dynamics_map=True`` it also returns a PAGE-4D-like per-patch map: the fraction of dynamic pixels in
each 14x14 patch minus 0.5 (positive = dynamic, as ``WindowPrediction`` requires).
"""

from __future__ import annotations

import numpy as np

from page4d_ros.pipeline.config import PATCH_SIZE
from page4d_ros.pipeline.geometry import poses_to_extrinsics
from page4d_ros.pipeline.preprocess import ResizePlan, plan_resize
from page4d_ros.pipeline.types import WindowPrediction
from page4d_ros.synthetic.sequence import SyntheticSequence

VALID_CONFIDENCE = 5.0
INVALID_CONFIDENCE = 0.5


def _rotation_from_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def resample_to_network(values: np.ndarray, plan: ResizePlan, fill: float) -> np.ndarray:
    """Nearest-neighbour resample of per-pixel maps ``[..., H, W]`` from the source onto the network grid.

    Pixels outside the resized image (padding) get ``fill``.
    """
    inverse = np.linalg.inv(plan.source_to_network_matrix())
    u_net, v_net = np.meshgrid(np.arange(plan.network_width), np.arange(plan.network_height))
    u_src = np.round(inverse[0, 0] * u_net + inverse[0, 2]).astype(np.int64)
    v_src = np.round(inverse[1, 1] * v_net + inverse[1, 2]).astype(np.int64)
    inside_resized = (
        (u_net - plan.offset_x >= 0)
        & (u_net - plan.offset_x < plan.resized_width)
        & (v_net - plan.offset_y >= 0)
        & (v_net - plan.offset_y < plan.resized_height)
    )
    u_src = np.clip(u_src, 0, plan.source_width - 1)
    v_src = np.clip(v_src, 0, plan.source_height - 1)
    sampled = values[..., v_src, u_src]
    return np.where(inside_resized, sampled, fill)


class OracleModel:
    """A :class:`~page4d_ros.pipeline.types.Predictor` returning a sequence's ground truth (module doc)."""

    def __init__(
        self,
        sequence: SyntheticSequence,
        model_long_side: int = 518,
        resize_mode: str = "crop",
        *,
        depth_noise: float = 0.0,
        translation_noise: float = 0.0,
        rotation_noise: float = 0.0,
        scale_range: tuple[float, float] = (0.5, 2.0),
        dynamics_map: bool = False,
        seed: int = 0,
    ) -> None:
        if sequence.depth is None or sequence.K is None:
            raise ValueError("OracleModel needs a sequence with depth and intrinsics")
        if min(depth_noise, translation_noise, rotation_noise) < 0:
            raise ValueError("noise levels must be non-negative")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        if dynamics_map and sequence.dynamic_mask is None:
            raise ValueError("dynamics_map=True needs a sequence with dynamic masks")
        self.sequence = sequence
        height, width = sequence.depth.shape[1:]
        self.plan = plan_resize(width, height, model_long_side, resize_mode)
        self.depth_noise = depth_noise
        self.translation_noise = translation_noise
        self.rotation_noise = rotation_noise
        self.scale_range = scale_range
        self.has_dynamics_map = dynamics_map
        self.seed = seed
        self.window_scales: dict[int, float] = {}
        self._index_of_stamp = {int(s): i for i, s in enumerate(sequence.stamps_ns)}

    def frame_indices(self, stamps_ns: np.ndarray) -> np.ndarray:
        """Sequence indices of ``stamps_ns``; unknown stamps raise ``ValueError``."""
        try:
            return np.array([self._index_of_stamp[int(s)] for s in stamps_ns], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"stamp {error.args[0]} is not a frame of the oracle's sequence") from None

    def predict(self, images: np.ndarray, stamps_ns: np.ndarray) -> WindowPrediction:
        """Ground truth for ``stamps_ns`` in the window's first-camera frame, at a random scale."""
        plan = self.plan
        if images.ndim != 4 or images.shape[1:] != (3, plan.network_height, plan.network_width):
            raise ValueError(
                f"images must be [S,3,{plan.network_height},{plan.network_width}] for this oracle, "
                f"got {images.shape}"
            )
        index = self.frame_indices(stamps_ns)
        if len(index) != images.shape[0]:
            raise ValueError("one stamp per image is needed")
        rng = np.random.default_rng([self.seed, int(stamps_ns[0]) % (2**62)])
        depth = resample_to_network(self.sequence.depth[index], plan, 0.0).astype(np.float64)
        valid = depth > 0
        window_scale = (
            float(rng.uniform(*self.scale_range)) / float(np.mean(depth[valid])) if np.any(valid) else 1.0
        )
        self.window_scales[int(stamps_ns[0])] = window_scale
        if self.depth_noise > 0:
            depth = depth * (1.0 + self.depth_noise * rng.standard_normal(depth.shape))
        depth = np.where(valid, depth * window_scale, 0.0)

        poses = self.sequence.T_world_cam[index]
        relative = np.linalg.inv(poses[0]) @ poses
        relative[:, :3, 3] *= window_scale
        for pose in relative:
            if self.translation_noise > 0:
                pose[:3, 3] += self.translation_noise * np.linalg.norm(pose[:3, 3]) * rng.standard_normal(3)
            if self.rotation_noise > 0:
                angle = np.arccos(np.clip((np.trace(pose[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))
                error = self.rotation_noise * angle * rng.standard_normal()
                pose[:3, :3] = _rotation_from_axis_angle(rng.standard_normal(3), error) @ pose[:3, :3]

        dynamics = None
        if self.has_dynamics_map:
            mask = resample_to_network(self.sequence.dynamic_mask[index].astype(np.float64), plan, 0.0)
            rows, cols = plan.network_height // PATCH_SIZE, plan.network_width // PATCH_SIZE
            patches = mask.reshape(len(index), rows, PATCH_SIZE, cols, PATCH_SIZE).mean(axis=(2, 4))
            dynamics = (patches - 0.5).astype(np.float32)
        return WindowPrediction(
            extrinsics=poses_to_extrinsics(relative),
            intrinsics=np.stack([plan.intrinsics_to_network(self.sequence.K[i]) for i in index]),
            depth=depth.astype(np.float32),
            depth_conf=np.where(valid, VALID_CONFIDENCE, INVALID_CONFIDENCE).astype(np.float32),
            dynamics=dynamics,
        )
