"""Image, depth, CameraInfo, PointCloud2 and pose conversions (numpy level, expected values by hand)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image as PilImage

from page4d_ros.ros import conversions as cv
from page4d_ros.ros.parameters import OPTICAL_RPY


def rgb_image(height: int = 3, width: int = 4) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[:, :, ::-1]),
        ("8UC3", lambda rgb: rgb[:, :, ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_color_encodings_decode_to_rgb(encoding, make):
    rgb = rgb_image()
    raw = np.ascontiguousarray(make(rgb))
    out = cv.image_to_rgb(encoding, 3, 4, raw.shape[1] * raw.shape[2], 0, raw.tobytes())
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_and_row_padding():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = np.zeros((3, 6), np.uint8)
    padded[:, :4] = gray
    out = cv.image_to_rgb("mono8", 3, 4, 6, 0, padded.tobytes())
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_is_scaled_over_the_full_range(bigendian):
    values = np.array([[0, 257, 32896, 65535]], dtype=">u2" if bigendian else "<u2")
    out = cv.image_to_rgb("mono16", 1, 4, 8, bigendian, values.tobytes())
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])  # value / 257


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (("yuv422", 2, 2, 4, 0, bytes(8)), "encoding"),
        (("32FC1", 2, 2, 8, 0, bytes(16)), "encoding"),
        (("rgb8", 0, 0, 0, 0, b""), "zero_size"),
        (("rgb8", 2, 2, 5, 0, bytes(12)), "step"),
        (("rgb8", 2, 2, 6, 0, bytes(11)), "data_size"),
    ],
)
def test_bad_images_raise_a_named_error(args, kind):
    with pytest.raises(cv.ImageConversionError) as error:
        cv.image_to_rgb(*args)
    assert error.value.kind == kind
    assert isinstance(error.value, ValueError)


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PilImage.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def test_compressed_png_and_jpeg():
    rgb = rgb_image(16, 16)
    np.testing.assert_array_equal(cv.compressed_to_rgb("png", encode(rgb, "PNG")), rgb)
    smooth = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    decoded = cv.compressed_to_rgb("jpeg", encode(smooth, "JPEG"))
    assert decoded.shape == (16, 16, 3) and np.abs(decoded.astype(int) - smooth).max() <= 3


def truncated_ihdr_png() -> bytes:
    """A PNG whose header chunk claims 2 bytes (Pillow raises ValueError, not OSError, on it)."""
    data = bytearray(encode(rgb_image(4, 4), "PNG"))
    data[8:12] = (2).to_bytes(4, "big")
    return bytes(data)


def oversized_png() -> bytes:
    """A 64-megapixel (8000 x 8000) black PNG of 8 KB."""
    buffer = io.BytesIO()
    PilImage.new("1", (8000, 8000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "zero_size"),
        (b"garbage bytes", "decode"),
        ("gif", "encoding"),
        ("truncated header", "decode"),
        ("64 MP", "too_large"),
    ],
)
def test_bad_compressed_images(payload, kind):
    makers = {"gif": lambda: encode(rgb_image(4, 4), "GIF"), "truncated header": truncated_ihdr_png}
    makers["64 MP"] = oversized_png
    data = makers[payload]() if isinstance(payload, str) else payload
    with pytest.raises(cv.ImageConversionError) as error:
        cv.compressed_to_rgb("jpeg", data)
    assert error.value.kind == kind


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` with 1-8 random byte changes, deletions or insertions."""
    mutated = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        position = int(rng.integers(len(mutated)))
        operation = rng.random()
        if operation < 0.6:
            mutated[position] = int(rng.integers(256))
        elif operation < 0.8:
            del mutated[position : position + int(rng.integers(1, 50))]
        else:
            mutated[position:position] = rng.integers(0, 256, int(rng.integers(1, 20)), np.uint8).tobytes()
    return bytes(mutated)


def test_corrupted_compressed_images_only_raise_conversion_errors():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    seeds = [encode(image, "PNG"), encode(image, "JPEG")]
    for mode in ("L", "RGBA", "P", "I;16", "1"):
        buffer = io.BytesIO()
        PilImage.fromarray(image).convert(mode).save(buffer, format="PNG")
        seeds.append(buffer.getvalue())
    decoded = 0
    for trial in range(20000):
        try:
            rgb = cv.compressed_to_rgb("png", mutate(seeds[trial % len(seeds)], rng))
        except cv.ImageConversionError:
            continue
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        decoded += 1
    assert 0 < decoded < 20000  # some mutations are harmless (e.g. in JPEG pixel data), most are not


def test_random_raw_image_headers_only_raise_conversion_errors():
    rng = np.random.default_rng(1)
    encodings = [*cv.COLOR_ENCODINGS, "32FC1", "yuv422", ""]
    for _ in range(3000):
        encoding = encodings[int(rng.integers(len(encodings)))]
        height, width = (int(v) for v in rng.integers(-2, 40, size=2))
        step = int(rng.integers(-4, 200))
        data = bytes(int(rng.integers(0, 4000)))
        for decode in (cv.image_to_rgb, cv.depth_image_to_metres):
            try:
                result = decode(encoding, height, width, step, int(rng.integers(2)), data)
            except cv.ImageConversionError:
                continue
            assert result.shape[:2] == (height, width)


def test_metric_depth_decoding_marks_invalid_pixels_nan():
    millimetres = np.array([[0, 1500], [65535, 250]], dtype="<u2")
    depth = cv.depth_image_to_metres("16UC1", 2, 2, 4, 0, millimetres.tobytes())
    np.testing.assert_allclose(depth, [[np.nan, 1.5], [65.535, 0.25]], equal_nan=True)
    metres = np.array([[1.0, -2.0, np.inf, np.nan]], dtype="<f4")
    depth = cv.depth_image_to_metres("32FC1", 1, 4, 16, 0, metres.tobytes())
    np.testing.assert_allclose(depth, [[1.0, np.nan, np.nan, np.nan]], equal_nan=True)
    with pytest.raises(cv.ImageConversionError):
        cv.depth_image_to_metres("rgb8", 1, 1, 3, 0, bytes(3))


def test_depth_to_millimetres():
    out = cv.depth_to_millimetres(np.array([[np.nan, 1.2344, 70.0, 0.0004]], np.float32))
    np.testing.assert_array_equal(out, [[0, 1234, 65535, 0]])
    assert out.dtype == np.uint16


def test_image_payload_layout():
    depth = np.arange(6, dtype=np.float32).reshape(2, 3)
    height, width, step, data = cv.image_payload(depth, "32FC1")
    assert (height, width, step) == (2, 3, 12)
    np.testing.assert_array_equal(np.frombuffer(data.tobytes(), "<f4").reshape(2, 3), depth)
    with pytest.raises(ValueError, match="dimensions"):
        cv.image_payload(np.zeros((2, 3, 3), np.uint8), "mono8")
    with pytest.raises(ValueError, match="cannot publish"):
        cv.image_payload(depth, "64FC1")


def test_camera_info_arrays():
    K = np.array([[100.0, 0.0, 50.0], [0.0, 90.0, 40.0], [0.0, 0.0, 1.0]])
    d, k, r, p = cv.camera_info_arrays(K)
    np.testing.assert_array_equal(d, np.zeros(5))
    np.testing.assert_array_equal(k, K.reshape(-1))
    np.testing.assert_array_equal(r, np.eye(3).reshape(-1))
    np.testing.assert_array_equal(p, [100, 0, 50, 0, 0, 90, 40, 0, 0, 0, 1, 0])
    with pytest.raises(ValueError):
        cv.camera_info_arrays(np.full((3, 3), np.nan))


def test_scaled_intrinsics_map_pixel_centres():
    K = np.array([[100.0, 0.0, 63.5], [0.0, 100.0, 47.5], [0.0, 0.0, 1.0]])
    scaled = cv.scale_intrinsics(K, (128, 96), (64, 48))
    point = np.array([0.3, -0.2, 2.0])
    u, v = (K @ point)[:2] / point[2]
    u2, v2 = (scaled @ point)[:2] / point[2]
    # Pixel centre u of the big image lies at (u + 0.5) / 2 - 0.5 in the half-size image.
    assert u2 == pytest.approx((u + 0.5) / 2 - 0.5) and v2 == pytest.approx((v + 0.5) / 2 - 0.5)
    with pytest.raises(ValueError):
        cv.scale_intrinsics(K, (0, 96), (64, 48))


def test_point_cloud_payload_interleaves_xyz_and_packed_rgb():
    points = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], np.float32)
    colors = np.array([[255, 128, 1], [0, 0, 0]], np.uint8)
    data = cv.point_cloud_payload(points, colors)
    assert data.dtype == np.uint8 and data.size == 2 * cv.POINT_STEP
    records = np.frombuffer(data.tobytes(), "<f4").reshape(2, 4)
    np.testing.assert_array_equal(records[:, :3], points)
    assert records[:, 3].view("<u4").tolist() == [0x00FF8001, 0]
    with pytest.raises(ValueError):
        cv.point_cloud_payload(points, colors[:1])


def test_quaternions_and_transforms():
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # +90 degrees about z
    T[:3, 3] = [1, 2, 3]
    translation, quaternion = cv.matrix_to_translation_quaternion(T)
    np.testing.assert_allclose(translation, [1, 2, 3])
    np.testing.assert_allclose(quaternion, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(
        cv.translation_quaternion_to_matrix(translation, 2 * quaternion), T, atol=1e-12
    )
    with pytest.raises(ValueError, match="non-zero"):
        cv.translation_quaternion_to_matrix([0, 0, 0], [0, 0, 0, 0])


def test_optical_mounting_follows_rep103():
    T = cv.xyz_rpy_to_matrix([0.1, 0.0, 0.2], OPTICAL_RPY)
    R = T[:3, :3]
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z (forward) = body x
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-12)  # optical x (right) = body -y
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)  # optical y (down) = body -z
    np.testing.assert_allclose(T[:3, 3], [0.1, 0.0, 0.2])


def test_stamps():
    assert cv.stamp_to_sec_nanosec(1_700_000_000_123_456_789) == (1_700_000_000, 123_456_789)
    assert cv.sec_nanosec_to_stamp(12, 5) == 12_000_000_005
    with pytest.raises(ValueError):
        cv.stamp_to_sec_nanosec(-1)
