"""The in-memory form of a ground-truth (or loaded, or predicted) image sequence."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

DEFAULT_FRAME_ID = "camera_optical_frame"
DEFAULT_EPOCH_NS = 1_700_000_000_000_000_000
"""First stamp of generated sequences: a fixed, non-zero epoch (2023-11-14T22:13:20Z)."""


@dataclass
class SyntheticSequence:
    """A sequence of frames with per-frame ground truth, all arrays indexed by frame first.

    ``generate_sequence`` always fills every array. Loaders of datasets that lack some ground truth (no masks
    in TUM, no RGB in a prediction) leave those fields ``None``.

    Attributes:
        rgb: ``[F, H, W, 3]`` uint8 colour images.
        depth: ``[F, H, W]`` float32 z-depth in metres, ``0.0`` where there is no surface (sky, invalid).
        dynamic_mask: ``[F, H, W]`` bool, True on independently moving objects.
        instance_ids: ``[F, H, W]`` int32, 0 = static world, k > 0 = moving object k.
        T_world_cam: ``[F, 4, 4]`` float64 world-from-camera poses of the optical frame (x right, y down,
            z forward); NaN where a dataset has no pose (DAVIS), which the evaluation skips.
        K: ``[F, 3, 3]`` float64 pixel intrinsics (pixel centres at integer coordinates).
        stamps_ns: ``[F]`` int64 time stamps in nanoseconds, strictly increasing.
        frame_id: the camera's optical frame name.
        fps: nominal frame rate.
        seed: the generator seed (None for loaded data).
        camera_motion: name of the camera motion ("walk", "orbit", ...) or the source format for loaded data.
        scene: name of the scene kind ("room", "outdoor") or dataset name for loaded data.
        camera_height: nominal camera height above the ground plane in metres, when known.
        metadata: anything else (dataset paths, generator parameters); JSON-serialisable values only.
    """

    rgb: np.ndarray | None
    depth: np.ndarray | None
    dynamic_mask: np.ndarray | None
    instance_ids: np.ndarray | None
    T_world_cam: np.ndarray
    K: np.ndarray | None
    stamps_ns: np.ndarray
    frame_id: str = DEFAULT_FRAME_ID
    fps: float = 30.0
    seed: int | None = None
    camera_motion: str = ""
    scene: str = ""
    camera_height: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check shapes and dtypes so that a malformed sequence fails where it is built."""
        self.T_world_cam = np.asarray(self.T_world_cam, dtype=np.float64)
        self.stamps_ns = np.asarray(self.stamps_ns, dtype=np.int64)
        if self.T_world_cam.ndim != 3 or self.T_world_cam.shape[1:] != (4, 4):
            raise ValueError(f"T_world_cam must have shape [F, 4, 4], got {self.T_world_cam.shape}")
        num_frames = self.T_world_cam.shape[0]
        if self.stamps_ns.shape != (num_frames,):
            raise ValueError(f"stamps_ns must have shape [{num_frames}], got {self.stamps_ns.shape}")
        if num_frames > 1 and np.any(np.diff(self.stamps_ns) <= 0):
            raise ValueError("stamps_ns must be strictly increasing")
        if self.K is not None:
            self.K = np.asarray(self.K, dtype=np.float64)
            if self.K.shape != (num_frames, 3, 3):
                raise ValueError(f"K must have shape [{num_frames}, 3, 3], got {self.K.shape}")
        image_shape = None
        for name, ndim, dtypes in (
            ("rgb", 4, (np.uint8,)),
            ("depth", 3, (np.float32,)),
            ("dynamic_mask", 3, (np.bool_,)),
            ("instance_ids", 3, (np.int32,)),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, np.ndarray) or value.ndim != ndim or value.shape[0] != num_frames:
                shape = getattr(value, "shape", type(value).__name__)
                raise ValueError(
                    f"{name} must be an array with {ndim} dims and {num_frames} frames, got {shape}"
                )
            if value.dtype not in dtypes:
                raise ValueError(f"{name} must have dtype {np.dtype(dtypes[0])}, got {value.dtype}")
            if name == "rgb" and value.shape[3] != 3:
                raise ValueError(f"rgb must have 3 channels, got shape {value.shape}")
            if name != "depth":
                if image_shape is None:
                    image_shape = value.shape[1:3]
                elif value.shape[1:3] != image_shape:
                    raise ValueError(f"{name} has image size {value.shape[1:3]}, expected {image_shape}")

    def __len__(self) -> int:
        """Number of frames."""
        return int(self.T_world_cam.shape[0])

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return len(self)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the images (of the depth maps when there is no RGB), or None."""
        for array in (self.rgb, self.depth, self.dynamic_mask, self.instance_ids):
            if array is not None:
                return int(array.shape[1]), int(array.shape[2])
        return None

    @property
    def height(self) -> int:
        """Image height in pixels (ValueError when the sequence has no images)."""
        return self._require_size()[0]

    @property
    def width(self) -> int:
        """Image width in pixels (ValueError when the sequence has no images)."""
        return self._require_size()[1]

    def _require_size(self) -> tuple[int, int]:
        size = self.image_size
        if size is None:
            raise ValueError("this sequence has no images, so it has no image size")
        return size

    @property
    def extrinsics(self) -> np.ndarray:
        """``[F, 3, 4]`` camera-from-world ``[R|t]`` (the model's convention)."""
        return invert_poses(self.T_world_cam)[:, :3, :]

    def __getitem__(self, index: slice) -> SyntheticSequence:
        """Frames selected by a slice, as views of this sequence's arrays (no copy)."""
        if not isinstance(index, slice):
            raise TypeError(f"index a SyntheticSequence with a slice (seq[a:b]), got {type(index).__name__}")
        return replace(
            self,
            rgb=None if self.rgb is None else self.rgb[index],
            depth=None if self.depth is None else self.depth[index],
            dynamic_mask=None if self.dynamic_mask is None else self.dynamic_mask[index],
            instance_ids=None if self.instance_ids is None else self.instance_ids[index],
            T_world_cam=self.T_world_cam[index],
            K=None if self.K is None else self.K[index],
            stamps_ns=self.stamps_ns[index],
            metadata=dict(self.metadata),
        )

    def slice(self, start: int, stop: int, step: int = 1) -> SyntheticSequence:
        """Frames ``start..stop-1`` (every ``step``-th), as views."""
        return self[start:stop:step]


def invert_poses(T: np.ndarray) -> np.ndarray:
    """Invert rigid 4x4 transforms (any leading shape) exactly via ``[R^T | -R^T t]``."""
    T = np.asarray(T, dtype=np.float64)
    rotation_t = np.swapaxes(T[..., :3, :3], -1, -2)
    inverse = np.zeros_like(T)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -np.einsum("...ij,...j->...i", rotation_t, T[..., :3, 3])
    inverse[..., 3, 3] = 1.0
    return inverse
