"""Resize/crop/pad planning and the exact intrinsics bookkeeping, checked against hand-derived numbers and by
finding rendered 3-D points in the resized images."""

from __future__ import annotations

import numpy as np
import pytest

from page4d_ros.pipeline import plan_resize
from page4d_ros.pipeline.preprocess import images_to_tensor_layout, resize_rgb


def test_crop_plan_matches_vggt_arithmetic():
    # 640x480, long side 518: width 518, height round(480 * 518 / 640 / 14) * 14 = round(27.75) * 14 = 392.
    plan = plan_resize(640, 480, 518, "crop")
    assert (plan.network_width, plan.network_height) == (518, 392)
    assert (plan.output_width, plan.output_height) == (518, 392)
    assert (plan.offset_x, plan.offset_y) == (0, 0)


def test_crop_plan_for_portrait_images_crops_rows():
    # 90x160, long side 112: width 112, height round(160 * 112 / 90 / 14) * 14 = round(14.22) * 14 = 196,
    # more than 112, so rows (196 - 112) // 2 = 42 are cut from the top.
    plan = plan_resize(90, 160, 112, "crop")
    assert (plan.resized_width, plan.resized_height) == (112, 196)
    assert (plan.network_width, plan.network_height) == (112, 112)
    assert plan.offset_y == -42
    assert (plan.output_width, plan.output_height) == (112, 112)


def test_pad_plan_centres_the_image():
    # 160x120, long side 112: resized 112x84, padded by (112 - 84) // 2 = 14 rows on top.
    plan = plan_resize(160, 120, 112, "pad")
    assert (plan.resized_width, plan.resized_height) == (112, 84)
    assert (plan.network_width, plan.network_height) == (112, 112)
    assert (plan.output_x0, plan.output_y0, plan.output_width, plan.output_height) == (0, 14, 112, 84)
    portrait = plan_resize(120, 160, 112, "pad")
    assert (portrait.resized_width, portrait.resized_height) == (84, 112)
    assert (portrait.output_x0, portrait.output_y0) == (14, 0)


def test_intrinsics_formula_by_hand():
    plan = plan_resize(160, 120, 112, "pad")
    K = np.array([[100.0, 0.0, 79.5], [0.0, 101.0, 59.5], [0.0, 0.0, 1.0]])
    sx = sy = 0.7
    expected_network = np.array(
        [[100 * sx, 0, (79.5 + 0.5) * sx - 0.5], [0, 101 * sy, (59.5 + 0.5) * sy - 0.5 + 14], [0, 0, 1]]
    )
    np.testing.assert_allclose(plan.intrinsics_to_network(K), expected_network)
    expected_output = expected_network.copy()
    expected_output[1, 2] -= 14
    np.testing.assert_allclose(plan.intrinsics_to_output(K), expected_output)


def _render_blobs(K, points_cam, width, height, sigma):
    """An image with one bright Gaussian blob at the projection of each camera-frame point."""
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    image = np.zeros((height, width))
    for point in points_cam:
        pu = K[0, 0] * point[0] / point[2] + K[0, 2]
        pv = K[1, 1] * point[1] / point[2] + K[1, 2]
        image += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * sigma**2))
    return np.repeat((255 * np.clip(image, 0, 1)).astype(np.uint8)[..., None], 3, axis=2)


def _blob_centroid(grey, around, radius):
    """Intensity centroid in a window that is re-centred on the centroid until it settles (unbiased)."""
    u, v = np.meshgrid(np.arange(grey.shape[1]), np.arange(grey.shape[0]))
    centre = np.asarray(around, dtype=float)
    for _ in range(10):
        near = (np.abs(u - centre[0]) <= radius) & (np.abs(v - centre[1]) <= radius)
        weight = np.where(near, grey, 0.0)
        centre = np.array([np.sum(weight * u), np.sum(weight * v)]) / np.sum(weight)
    return centre


@pytest.mark.parametrize(
    ("width", "height", "long_side", "mode"),
    [(320, 240, 112, "crop"), (180, 320, 112, "crop"), (320, 240, 112, "pad"), (240, 320, 112, "pad")],
)
def test_known_points_land_where_the_output_intrinsics_project_them(width, height, long_side, mode):
    K = np.array([[0.9 * width, 0.0, width / 2 - 3.2], [0.0, 0.9 * width, height / 2 + 1.7], [0.0, 0.0, 1.0]])
    points = np.array([[x, y, 4.0] for x in (-0.8, 0.7) for y in (-1.2, 0.0, 1.0)])
    rgb = _render_blobs(K, points, width, height, sigma=4.0)
    plan = plan_resize(width, height, long_side, mode)
    output = plan.crop_to_output(resize_rgb(rgb, plan))[..., 0].astype(float)
    K_out = plan.intrinsics_to_output(K)
    checked = 0
    for point in points:
        expected = K_out[:2, :2] @ (point[:2] / point[2]) + K_out[:2, 2]
        if not (8 <= expected[0] < output.shape[1] - 8 and 8 <= expected[1] < output.shape[0] - 8):
            continue  # cropped away
        centroid = _blob_centroid(output, expected, radius=6)
        np.testing.assert_allclose(centroid, expected, atol=0.15)
        checked += 1
    assert checked >= 3


def test_resize_rgb_rejects_wrong_size_and_layout_is_float():
    plan = plan_resize(160, 120, 112, "crop")
    with pytest.raises(ValueError, match="plan is for"):
        resize_rgb(np.zeros((100, 100, 3), np.uint8), plan)
    network = resize_rgb(np.full((120, 160, 3), 255, np.uint8), plan)
    tensor = images_to_tensor_layout([network, network])
    assert tensor.shape == (2, 3, 84, 112) and tensor.dtype == np.float32
    assert tensor.max() == pytest.approx(1.0)


def test_pad_value_is_white():
    plan = plan_resize(160, 120, 112, "pad")
    network = resize_rgb(np.zeros((120, 160, 3), np.uint8), plan)
    assert np.all(network[:14] == 255) and np.all(network[14:98] == 0) and np.all(network[98:] == 255)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((160, 120, 100, "crop"), "multiple of 14"),
        ((160, 120, 112, "stretch"), "resize mode"),
        ((0, 1), "positive"),
    ],
)
def test_plan_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        plan_resize(*args)


def test_tensor_layout_is_channel_first_and_scaled_to_unit_range():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(5, 7, 3)).astype(np.uint8) for _ in range(3)]
    tensor = images_to_tensor_layout(images)
    assert tensor.shape == (3, 3, 5, 7) and tensor.flags.c_contiguous
    for index, image in enumerate(images):
        for channel in range(3):
            np.testing.assert_allclose(tensor[index, channel], image[:, :, channel] / 255.0, rtol=1e-6)
