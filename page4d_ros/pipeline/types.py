"""Data types that cross the pipeline's boundaries: frames in, window predictions, per-frame results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "none", "")


@dataclass
class CameraCalibration:
    """Pinhole calibration of the input images (OpenCV / ROS CameraInfo pixel convention).

    ``K`` is the 3x3 pixel matrix for an image of ``width`` x ``height``; ``D`` the distortion coefficients of
    ``distortion_model``. The pipeline expects rectified images and only warns when ``D`` is non-zero.
    """

    K: np.ndarray
    width: int
    height: int
    distortion_model: str = "plumb_bob"
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise ValueError(f"CameraCalibration.K must be a finite 3x3 matrix, got shape {K.shape}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(
                f"CameraCalibration.K needs positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}"
            )
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"CameraCalibration size must be positive, got {self.width}x{self.height}")
        D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(D)):
            raise ValueError("CameraCalibration.D contains non-finite values")
        self.K = K
        self.D = D
        self.width = int(self.width)
        self.height = int(self.height)

    @property
    def is_distorted(self) -> bool:
        """True when any distortion coefficient is non-zero (the image is not rectified)."""
        return bool(np.any(np.abs(self.D) > 0.0))


@dataclass
class Frame:
    """One input image: RGB uint8 ``[H, W, 3]``, a stamp in integer nanoseconds, the optical frame id."""

    rgb: np.ndarray
    stamp_ns: int
    frame_id: str
    calibration: CameraCalibration | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` when the frame cannot be processed (dtype, shape, stamp, calibration)."""
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            shape = getattr(rgb, "shape", None)
            dtype = getattr(rgb, "dtype", type(rgb).__name__)
            raise ValueError(
                f"Frame.rgb must be a uint8 HxWx3 array (convert the encoding first), got {dtype} {shape}"
            )
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            raise ValueError(f"Frame.rgb is too small: {rgb.shape[1]}x{rgb.shape[0]}")
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, (int, np.integer)):
            raise ValueError(f"Frame.stamp_ns must be an integer in nanoseconds, got {self.stamp_ns!r}")
        if self.stamp_ns < 0:
            raise ValueError(f"Frame.stamp_ns must be non-negative, got {self.stamp_ns}")
        if self.calibration is not None:
            if not isinstance(self.calibration, CameraCalibration):
                raise ValueError("Frame.calibration must be a CameraCalibration or None")
            if (self.calibration.width, self.calibration.height) != (rgb.shape[1], rgb.shape[0]):
                raise ValueError(
                    f"calibration is for {self.calibration.width}x{self.calibration.height} but the image is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}; send the CameraInfo that belongs to this image"
                )


@dataclass
class WindowPrediction:
    """What a predictor returns for a window of S frames (numpy, network input resolution ``h`` x ``w``).

    ``extrinsics`` [S,3,4] camera-from-world in the window's own frame and scale, ``intrinsics`` [S,3,3],
    ``depth`` [S,h,w] float32 z-depth in window units, ``depth_conf`` [S,h,w] (higher is better),
    ``dynamics`` [S,h',w'] or None: any real score, positive means dynamic (any resolution, upsampled later).
    """

    extrinsics: np.ndarray
    intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    dynamics: np.ndarray | None = None

    def validate(self, num_frames: int, height: int, width: int) -> None:
        """Raise ``ValueError`` unless the arrays fit an S-frame window at ``height`` x ``width``."""
        expected = {
            "extrinsics": (num_frames, 3, 4),
            "intrinsics": (num_frames, 3, 3),
            "depth": (num_frames, height, width),
            "depth_conf": (num_frames, height, width),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != shape:
                raise ValueError(
                    f"WindowPrediction.{name} must have shape {shape}, got {getattr(value, 'shape', None)}"
                )
        if not (np.all(np.isfinite(self.extrinsics)) and np.all(np.isfinite(self.intrinsics))):
            raise ValueError("WindowPrediction has non-finite poses or intrinsics")
        if self.dynamics is not None and (self.dynamics.ndim != 3 or self.dynamics.shape[0] != num_frames):
            raise ValueError(f"WindowPrediction.dynamics must be [S,h,w] with S={num_frames}")


@runtime_checkable
class Predictor(Protocol):
    """Turns a window of preprocessed images into a :class:`WindowPrediction`."""

    has_dynamics_map: bool

    def predict(self, images: np.ndarray, stamps_ns: np.ndarray) -> WindowPrediction:
        """Predict geometry for ``images`` [S,3,H,W] float32 in [0,1] taken at ``stamps_ns`` [S] int64."""
        ...


@dataclass
class FrameResult:
    """Everything the pipeline publishes for one input frame (emitted exactly once, in time order).

    Poses are world-from-camera (optical) in the pipeline's global frame, in output units (metres when
    ``scale_state`` is metric). Images are at the output resolution ``width`` x ``height`` described by ``K``.

    Attributes:
        index: running number of the accepted frame; ``window_index``: the window that published it;
            ``segment_index``: increments at every reset.
        T_world_cam: 4x4 float64 global pose; ``K``: 3x3 intrinsics of the published images.
        depth: float32 z-depth, NaN invalid; ``confidence``: the predictor's raw confidence (float32).
        rgb: uint8 image at depth resolution; ``dynamic_mask``: uint8, 255 dynamic, 0 static.
        points: [N,3] float32 optical-frame points (``points_stride``), ``colors`` [N,3] uint8,
            ``point_is_dynamic`` [N] bool.
        scale: output units per model unit of this frame's window; ``scale_state``: see ``scale`` module.
        intrinsics_source: ``"calibration"`` or ``"predicted"``; ``K_predicted``: the predictor's K at output
            resolution; ``intrinsics_disagreement``: ``fx_rel``, ``fy_rel`` (predicted / calibrated - 1),
            ``cx_px``, ``cy_px`` (predicted - calibrated), empty without calibration.
        alignment: how the window was chained (``chaining`` module); ``alignment_residual``: median relative
            residual of that fit (NaN when not measurable).
    """

    stamp_ns: int
    frame_id: str
    index: int
    window_index: int
    segment_index: int
    T_world_cam: np.ndarray
    K: np.ndarray
    width: int
    height: int
    depth: np.ndarray
    confidence: np.ndarray
    rgb: np.ndarray
    dynamic_mask: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    point_is_dynamic: np.ndarray
    scale: float
    scale_state: str
    intrinsics_source: str
    K_predicted: np.ndarray
    intrinsics_disagreement: dict[str, float]
    alignment: str
    alignment_residual: float

    @property
    def static_points(self) -> np.ndarray:
        """Points not flagged dynamic, [M,3] float32 (optical frame)."""
        return self.points[~self.point_is_dynamic]

    @property
    def dynamic_points(self) -> np.ndarray:
        """Points flagged dynamic, [M,3] float32 (optical frame)."""
        return self.points[self.point_is_dynamic]
