"""Numpy-level conversions between ROS message payloads and arrays (no rclpy import).

Everything here works on plain values (encoding strings, sizes, byte buffers, numpy arrays) so that the
live node (rclpy messages) and the offline bag tool (rosbags messages) share one implementation. Functions
that decode inputs validate them and raise :class:`ImageConversionError` with a message that says what is
wrong.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3", "16UC1")
"""Input image encodings the node accepts (16-bit mono is scaled down to 8 bit)."""

_CHANNELS_AND_BYTES = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "8UC3": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "mono16": (1, 2),
    "16UC1": (1, 2),
}
_DEPTH_ENCODINGS = {"32FC1": np.float32, "16UC1": np.uint16, "mono16": np.uint16}

POINT_STEP = 16
"""Bytes per point of the published clouds: x, y, z FLOAT32 at 0/4/8 and packed ``rgb`` FLOAT32 at 12."""

POINT_FIELDS: tuple[tuple[str, int], ...] = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))
"""(name, offset) of every PointCloud2 field; all are FLOAT32 (datatype 7) with count 1."""

POINT_FIELD_FLOAT32 = 7
"""sensor_msgs/PointField.FLOAT32."""


class ImageConversionError(ValueError):
    """An input image message cannot be turned into an array (the message says why and what to do).

    ``kind`` names the problem for counters: ``encoding``, ``zero_size``, ``step``, ``data_size``, ``decode``,
    ``too_large``.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _validated_buffer(data: object, required: int, what: str) -> np.ndarray:
    """View a message's byte payload as uint8 and check that it holds at least ``required`` bytes."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size < required:
        raise ImageConversionError(
            f"{what}: data holds {buffer.size} bytes but height x step needs {required}; "
            "the publisher filled the message inconsistently",
            "data_size",
        )
    return buffer


def image_to_rgb(
    encoding: str, height: int, width: int, step: int, is_bigendian: int | bool, data: object
) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` payload to a contiguous uint8 RGB array ``[height, width, 3]``.

    Accepts the encodings in :data:`COLOR_ENCODINGS`; 16-bit mono is scaled to 8 bit over its full range
    (value / 257, rounded), so the result does not depend on the image content. Row padding (``step``
    larger than the pixel row) is honoured.
    """
    if encoding not in _CHANNELS_AND_BYTES:
        raise ImageConversionError(
            f"unsupported image encoding '{encoding}'; publish one of {', '.join(COLOR_ENCODINGS)} "
            "(e.g. through image_proc or an image_transport republisher)",
            "encoding",
        )
    if height <= 0 or width <= 0:
        raise ImageConversionError(
            f"image has zero size ({width}x{height}); the camera driver sent an empty image", "zero_size"
        )
    channels, item_bytes = _CHANNELS_AND_BYTES[encoding]
    row_bytes = width * channels * item_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width x channels x bytes = {row_bytes} for '{encoding}'",
            "step",
        )
    buffer = _validated_buffer(data, height * step, f"image {width}x{height} '{encoding}'")
    rows = buffer[: height * step].reshape(height, step)[:, :row_bytes]
    if item_bytes == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        gray = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    pixels = rows.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if encoding in ("bgr8", "8UC3", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


MAX_COMPRESSED_PIXELS = 50_000_000
"""Largest compressed image the node decodes (an 8K frame is 33 MP); larger headers are refused unread."""


def compressed_to_rgb(image_format: str, data: object) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to a uint8 RGB array ``[H, W, 3]``."""
    from PIL import Image as PilImage

    payload = np.frombuffer(data, dtype=np.uint8).tobytes()
    if not payload:
        raise ImageConversionError(
            "compressed image has no data; the camera driver sent an empty message", "zero_size"
        )
    try:
        with PilImage.open(io.BytesIO(payload)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise ImageConversionError(
                    f"compressed image format '{image.format}' (declared '{image_format}') "
                    "is neither JPEG nor PNG",
                    "encoding",
                )
            width, height = image.size
            if width * height > MAX_COMPRESSED_PIXELS:
                raise ImageConversionError(
                    f"compressed image of {width}x{height} pixels is larger than the "
                    f"{MAX_COMPRESSED_PIXELS} the node decodes; publish a smaller image",
                    "too_large",
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except ImageConversionError:
        raise
    except Exception as error:  # Pillow reports corrupt data as OSError, SyntaxError, ValueError, EOFError...
        raise ImageConversionError(
            f"cannot decode compressed image (declared format '{image_format}'): "
            f"{type(error).__name__}: {error}",
            "decode",
        ) from error


def depth_image_to_metres(
    encoding: str, height: int, width: int, step: int, is_bigendian: int | bool, data: object
) -> np.ndarray:
    """Decode a metric depth image (``32FC1`` metres or ``16UC1``/``mono16`` millimetres) to float32 metres.

    Invalid pixels (non-finite, zero, negative) become NaN, following REP-117/118.
    """
    if encoding not in _DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"unsupported depth encoding '{encoding}'; metric depth must be 32FC1 (m) or 16UC1 (mm)",
            "encoding",
        )
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"depth image has zero size ({width}x{height})", "zero_size")
    dtype = np.dtype(_DEPTH_ENCODINGS[encoding]).newbyteorder(">" if is_bigendian else "<")
    row_bytes = width * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"depth image step {step} is smaller than width x {dtype.itemsize} = {row_bytes}", "step"
        )
    buffer = _validated_buffer(data, height * step, f"depth image {width}x{height} '{encoding}'")
    rows = np.ascontiguousarray(buffer[: height * step].reshape(height, step)[:, :row_bytes])
    values = rows.view(dtype).reshape(height, width).astype(np.float32)
    if dtype.kind == "u":
        values = values / np.float32(1000.0)
    values[~np.isfinite(values) | (values <= 0.0)] = np.nan
    return values


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Convert float metres (NaN invalid) to uint16 millimetres with 0 = invalid (REP-118 ``16UC1``)."""
    millimetres = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0.0)
    return np.clip(millimetres, 0, 65535).astype(np.uint16)


def image_payload(array: np.ndarray, encoding: str) -> tuple[int, int, int, np.ndarray]:
    """Return ``(height, width, step, bytes as uint8 array)`` for publishing ``array`` with ``encoding``.

    Supported: ``32FC1`` (float32 [H, W]), ``16UC1`` (uint16 [H, W]), ``mono8`` (uint8 [H, W]), ``rgb8``
    (uint8 [H, W, 3]). The byte order is little endian (``is_bigendian`` = 0).
    """
    expected = {
        "32FC1": (np.float32, 2),
        "16UC1": (np.uint16, 2),
        "mono8": (np.uint8, 2),
        "rgb8": (np.uint8, 3),
    }
    if encoding not in expected:
        raise ValueError(f"cannot publish encoding '{encoding}'; use one of {sorted(expected)}")
    dtype, ndim = expected[encoding]
    if array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"'{encoding}' needs an array of {ndim} dimensions, got shape {array.shape}")
    contiguous = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    height, width = contiguous.shape[:2]
    step = contiguous.strides[0]
    return height, width, step, contiguous.reshape(-1).view(np.uint8)


def camera_info_arrays(K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CameraInfo ``d``, ``k``, ``r``, ``p`` (float64) of a rectified pinhole camera with intrinsics ``K``.

    ``d`` is five zeros (``plumb_bob``), ``r`` the identity and ``p = [K | 0]``.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"intrinsics must be a finite 3x3 matrix, got shape {K.shape}")
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    return np.zeros(5), K.reshape(-1).copy(), np.eye(3).reshape(-1), projection.reshape(-1)


def scale_intrinsics(K: np.ndarray, source_size: tuple[int, int], target_size: tuple[int, int]) -> np.ndarray:
    """Scale a 3x3 ``K`` from ``(width, height)`` to another size (pixel centres at integer coordinates).

    A pixel centre ``u`` maps to ``(u + 0.5) * sx - 0.5``, hence ``cx' = (cx + 0.5) sx - 0.5`` and
    ``fx' = fx sx``.
    """
    (source_width, source_height), (target_width, target_height) = source_size, target_size
    if min(source_width, source_height, target_width, target_height) <= 0:
        raise ValueError(f"image sizes must be positive, got {source_size} -> {target_size}")
    sx, sy = target_width / source_width, target_height / source_height
    scaled = np.array(K, dtype=np.float64, copy=True)
    scaled[0, 0] *= sx
    scaled[0, 1] *= sx
    scaled[1, 1] *= sy
    scaled[0, 2] = (scaled[0, 2] + 0.5) * sx - 0.5
    scaled[1, 2] = (scaled[1, 2] + 0.5) * sy - 0.5
    return scaled


def pack_rgb_float(colors: np.ndarray) -> np.ndarray:
    """Pack uint8 ``[N, 3]`` colours into float32 values holding ``0x00RRGGBB`` (PCL PointXYZRGB ``rgb``)."""
    colors = np.asarray(colors, dtype=np.uint32)
    packed = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    return packed.astype(np.uint32).view(np.float32)


def point_cloud_payload(points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Interleave float32 ``[N, 3]`` points and uint8 ``[N, 3]`` colours into the :data:`POINT_FIELDS` layout.

    Returns the message ``data`` as a uint8 array of ``N * POINT_STEP`` bytes.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points and colors must both be [N, 3], got {points.shape} and {colors.shape}")
    interleaved = np.empty((points.shape[0], 4), dtype=np.float32)
    interleaved[:, :3] = points
    interleaved[:, 3] = pack_rgb_float(colors)
    return interleaved.reshape(-1).view(np.uint8)


def matrices_to_translations_quaternions(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``[N, 4, 4]`` rigid transforms into translations ``[N, 3]`` and unit quaternions ``[N, 4]``
    (``x, y, z, w`` with ``w >= 0``), in one batch."""
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"poses must be finite 4x4 matrices, got shape {T.shape}")
    quaternions = Rotation.from_matrix(T[:, :3, :3]).as_quat().reshape(-1, 4)
    quaternions[quaternions[:, 3] < 0.0] *= -1.0
    return T[:, :3, 3].copy(), quaternions


def matrix_to_translation_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 4x4 rigid transform into translation ``[3]`` and unit quaternion ``[x, y, z, w]``, w >= 0."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"pose must be a finite 4x4 matrix, got shape {T.shape}")
    translations, quaternions = matrices_to_translations_quaternions(T[None])
    return translations[0], quaternions[0]


def translation_quaternion_to_matrix(
    translation: Sequence[float], quaternion_xyzw: Sequence[float]
) -> np.ndarray:
    """Build a 4x4 transform from a translation and a quaternion ``[x, y, z, w]`` (normalised here)."""
    quaternion = np.asarray(quaternion_xyzw, dtype=np.float64)
    norm = float(np.linalg.norm(quaternion))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion {list(quaternion)} has no direction; a rotation needs a non-zero norm")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quaternion / norm).as_matrix()
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def xyz_rpy_to_matrix(xyz: Sequence[float], rpy: Sequence[float]) -> np.ndarray:
    """4x4 transform from a translation and roll/pitch/yaw in radians (URDF / static_transform_publisher)."""
    if len(xyz) != 3 or len(rpy) != 3:
        raise ValueError(
            f"expected 3 translation and 3 roll/pitch/yaw values, got {list(xyz)} and {list(rpy)}"
        )
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", list(rpy)).as_matrix()
    T[:3, 3] = list(xyz)
    return T


def stamp_to_sec_nanosec(stamp_ns: int) -> tuple[int, int]:
    """Split integer nanoseconds into ``(sec, nanosec)`` as ``builtin_interfaces/Time`` stores them."""
    if stamp_ns < 0:
        raise ValueError(f"time stamps must not be negative, got {stamp_ns} ns")
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


def sec_nanosec_to_stamp(sec: int, nanosec: int) -> int:
    """Join ``builtin_interfaces/Time`` fields into integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)
