"""Resize/crop/pad of input images to the network size, with exact bookkeeping of the intrinsics.

Pixel convention: the centre of pixel (u, v) is at integer (u, v) (OpenCV / ROS CameraInfo). Resizing an image
of width w to width w' by ``s = w'/w`` maps a coordinate as ``u' = (u + 0.5) s - 0.5``; cropping or padding
shifts it by the offset. The same affine map transforms K: ``K' = A K`` with ``A = [[sx, 0, 0.5 sx - 0.5 +
ox], [0, sy, 0.5 sy - 0.5 + oy], [0, 0, 1]]``.

Modes follow VGGT's ``load_and_preprocess_images``: ``crop`` makes the width ``long_side`` and the height the
nearest multiple of 14 (centre-cropped to ``long_side`` when taller); ``pad`` makes the longer side
``long_side``, the other side the nearest multiple of 14, then pads (white, centred) to a ``long_side``
square. The output resolution of the pipeline is the network image without its padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from page4d_ros.pipeline.config import PATCH_SIZE, RESIZE_MODES

PAD_VALUE = 255


def _round_to_patch(value: float) -> int:
    """Nearest positive multiple of the patch size."""
    return max(PATCH_SIZE, round(value / PATCH_SIZE) * PATCH_SIZE)


@dataclass(frozen=True)
class ResizePlan:
    """How one source image size maps onto the network input and the output (unpadded) region.

    ``resized_*`` is the image after resizing; ``offset_x/y`` is added to resized coordinates to get network
    coordinates (negative for a crop, positive for padding); the output region is
    ``[output_y0 : output_y0 + output_height, output_x0 : output_x0 + output_width]`` of the network image.
    """

    source_width: int
    source_height: int
    resized_width: int
    resized_height: int
    network_width: int
    network_height: int
    offset_x: int
    offset_y: int
    output_x0: int
    output_y0: int
    output_width: int
    output_height: int

    @property
    def scale_x(self) -> float:
        """Horizontal resize factor."""
        return self.resized_width / self.source_width

    @property
    def scale_y(self) -> float:
        """Vertical resize factor."""
        return self.resized_height / self.source_height

    def source_to_network_matrix(self) -> np.ndarray:
        """3x3 affine map from source pixel coordinates to network pixel coordinates."""
        sx, sy = self.scale_x, self.scale_y
        return np.array(
            [
                [sx, 0.0, 0.5 * sx - 0.5 + self.offset_x],
                [0.0, sy, 0.5 * sy - 0.5 + self.offset_y],
                [0.0, 0.0, 1.0],
            ]
        )

    def network_to_output_matrix(self) -> np.ndarray:
        """3x3 shift from network pixel coordinates to output (unpadded region) pixel coordinates."""
        return np.array([[1.0, 0.0, -self.output_x0], [0.0, 1.0, -self.output_y0], [0.0, 0.0, 1.0]])

    def source_to_output_matrix(self) -> np.ndarray:
        """3x3 affine map from source pixel coordinates to output pixel coordinates."""
        return self.network_to_output_matrix() @ self.source_to_network_matrix()

    def intrinsics_to_network(self, K_source: np.ndarray) -> np.ndarray:
        """K of the source image expressed for the network input image."""
        return self.source_to_network_matrix() @ np.asarray(K_source, dtype=np.float64)

    def intrinsics_to_output(self, K_source: np.ndarray) -> np.ndarray:
        """K of the source image expressed for the output resolution."""
        return self.source_to_output_matrix() @ np.asarray(K_source, dtype=np.float64)

    def network_intrinsics_to_output(self, K_network: np.ndarray) -> np.ndarray:
        """K predicted for the network image, expressed for the output region (``[..., 3, 3]``)."""
        return self.network_to_output_matrix() @ np.asarray(K_network, dtype=np.float64)

    def output_pixels_in_source(self) -> tuple[np.ndarray, np.ndarray]:
        """Source-image coordinates (u, v) of the output pixel centres, each [output_height, output_width]."""
        inverse = np.linalg.inv(self.source_to_output_matrix())
        u, v = np.meshgrid(np.arange(self.output_width), np.arange(self.output_height))
        return inverse[0, 0] * u + inverse[0, 2], inverse[1, 1] * v + inverse[1, 2]

    def crop_to_output(self, network_maps: np.ndarray) -> np.ndarray:
        """Cut the output region out of maps at network resolution (``[..., H, W]`` or ``[..., H, W, C]``)."""
        y0, x0 = self.output_y0, self.output_x0
        rows = slice(y0, y0 + self.output_height)
        cols = slice(x0, x0 + self.output_width)
        if network_maps.shape[-2:] == (self.network_height, self.network_width):
            return network_maps[..., rows, cols]
        return network_maps[..., rows, cols, :]


SizeRule = Callable[[int, int], tuple[int, int, int, int]]
"""A network family's input-size rule: ``(width, height) -> (crop_w, crop_h, net_w, net_h)``, the centred
source region the network sees and the network size it is resized to (e.g. VGGT-Omega's ``BalancedSize``)."""


def _plan_from_rule(width: int, height: int, size_rule: SizeRule) -> ResizePlan:
    """Resize the whole image by the factors that map the rule's crop onto its network size, then crop."""
    crop_w, crop_h, net_w, net_h = size_rule(width, height)
    resized_w = max(net_w, round(width * net_w / crop_w))
    resized_h = max(net_h, round(height * net_h / crop_h))
    offset_x, offset_y = -((resized_w - net_w) // 2), -((resized_h - net_h) // 2)
    return ResizePlan(
        width, height, resized_w, resized_h, net_w, net_h, offset_x, offset_y, 0, 0, net_w, net_h
    )


def plan_resize(
    width: int, height: int, long_side: int = 518, mode: str = "crop", size_rule: SizeRule | None = None
) -> ResizePlan:
    """Compute the :class:`ResizePlan` for an image of ``width`` x ``height``.

    ``size_rule`` (a network family's rule, see :data:`SizeRule`) replaces ``long_side`` and ``mode``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {list(RESIZE_MODES)}, got {mode!r}")
    if long_side <= 0 or long_side % PATCH_SIZE:
        raise ValueError(f"long_side must be a positive multiple of {PATCH_SIZE}, got {long_side}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if size_rule is not None:
        return _plan_from_rule(width, height, size_rule)
    if mode == "crop":
        resized_w = long_side
        resized_h = _round_to_patch(height * long_side / width)
        net_h = min(resized_h, long_side)
        offset_y = -((resized_h - net_h) // 2)
        return ResizePlan(
            width, height, resized_w, resized_h, long_side, net_h, 0, offset_y, 0, 0, long_side, net_h
        )
    if width >= height:
        resized_w, resized_h = long_side, _round_to_patch(height * long_side / width)
    else:
        resized_w, resized_h = _round_to_patch(width * long_side / height), long_side
    pad_x = (long_side - resized_w) // 2
    pad_y = (long_side - resized_h) // 2
    return ResizePlan(
        width,
        height,
        resized_w,
        resized_h,
        long_side,
        long_side,
        pad_x,
        pad_y,
        pad_x,
        pad_y,
        resized_w,
        resized_h,
    )


def resize_rgb(rgb: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """Resize (bicubic, pixel-centre aligned) and crop/pad a uint8 RGB image to the network size [H, W, 3]."""
    if rgb.shape[:2] != (plan.source_height, plan.source_width):
        raise ValueError(
            f"image is {rgb.shape[1]}x{rgb.shape[0]} but the plan is for "
            f"{plan.source_width}x{plan.source_height}"
        )
    resized = np.asarray(
        Image.fromarray(rgb).resize((plan.resized_width, plan.resized_height), Image.Resampling.BICUBIC)
    )
    network = np.full((plan.network_height, plan.network_width, 3), PAD_VALUE, dtype=np.uint8)
    # Place the resized image at its offset; negative offsets crop, positive ones pad.
    src_y0, dst_y0 = max(0, -plan.offset_y), max(0, plan.offset_y)
    src_x0, dst_x0 = max(0, -plan.offset_x), max(0, plan.offset_x)
    rows = min(plan.resized_height - src_y0, plan.network_height - dst_y0)
    cols = min(plan.resized_width - src_x0, plan.network_width - dst_x0)
    network[dst_y0 : dst_y0 + rows, dst_x0 : dst_x0 + cols] = resized[
        src_y0 : src_y0 + rows, src_x0 : src_x0 + cols
    ]
    return network


def images_to_tensor_layout(network_rgbs: list[np.ndarray]) -> np.ndarray:
    """Stack uint8 [H, W, 3] network images into float32 [S, 3, H, W] in [0, 1] (the predictor's input)."""
    first = network_rgbs[0]
    images = np.empty((len(network_rgbs), 3, first.shape[0], first.shape[1]), dtype=np.float32)
    for image, rgb in zip(images, network_rgbs):
        # One pass per frame: scale while writing into the channel-first layout.
        np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=image)
    return images
