"""DPT head: dense per-pixel prediction (depth or point map + confidence) from four aggregated layers."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from page4d_ros.model.heads_common import apply_activation

_HEAD_HIDDEN = 32
_POS_EMBED_RATIO = 0.1
_POS_EMBED_OMEGA = 100.0


def _interpolate(x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` resize to ``size`` (None: x2), as every DPT upsampling upstream.

    A ``size`` equal to the current one returns ``x`` unchanged (VGGT-Omega skips that interpolation).
    """
    if size is not None and tuple(size) == tuple(x.shape[-2:]):
        return x
    if size is None:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _sincos_1d(channels: int, positions: torch.Tensor) -> torch.Tensor:
    """[sin(p*w_k), cos(p*w_k)], w_k = omega^(-k/(channels/2)), in float64 -> [len(p), channels]."""
    omega = torch.arange(channels // 2, dtype=torch.float64, device=positions.device) / (channels / 2.0)
    omega = 1.0 / _POS_EMBED_OMEGA**omega
    angles = torch.outer(positions.reshape(-1).to(torch.float64), omega)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@functools.lru_cache(maxsize=4)
def _uv_embedding(
    channels: int,
    rows: int,
    cols: int,
    image_width: int,
    image_height: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The ``0.1 *`` sin-cos (u, v) embedding [C, rows, cols] in ``dtype``.

    Cached (a few entries: full-resolution maps are large): it depends only on sizes, and recomputing the
    float64 sin/cos of full-resolution maps on every forward costs ~0.1 s per head on CPU at 518 px. Built
    outside inference mode so that training code can use the cached tensor too.
    """
    aspect = image_width / image_height
    diagonal = math.sqrt(aspect**2 + 1.0)
    span_x, span_y = aspect / diagonal, 1.0 / diagonal
    xs = torch.linspace(
        -span_x * (cols - 1) / cols, span_x * (cols - 1) / cols, cols, dtype=dtype, device=device
    )
    ys = torch.linspace(
        -span_y * (rows - 1) / rows, span_y * (rows - 1) / rows, rows, dtype=dtype, device=device
    )
    grid_u = xs.repeat(rows)
    grid_v = ys.repeat_interleave(cols)
    embedding = torch.cat([_sincos_1d(channels // 2, grid_u), _sincos_1d(channels // 2, grid_v)], dim=-1)
    embedding = (embedding.float() * _POS_EMBED_RATIO).reshape(rows, cols, channels).permute(2, 0, 1)
    return embedding.to(dtype).contiguous()


def add_uv_embedding(x: torch.Tensor, image_width: int, image_height: int) -> torch.Tensor:
    """Add ``0.1 *`` a sin-cos embedding of normalised (u, v) coordinates to feature maps x [N, C, h, w].

    The grid spans the image aspect ratio on the unit-diagonal rectangle (pixel centres of the map); the
    first C/2 channels encode u (x), the last C/2 encode v (y). The embedding is rounded to float32 before the
    add, as upstream.
    """
    with torch.inference_mode(False), torch.no_grad():
        embedding = _uv_embedding(
            x.shape[1], x.shape[2], x.shape[3], image_width, image_height, x.dtype, x.device
        )
    return x + embedding[None]


class ResidualConvUnit(nn.Module):
    """``conv2(relu(conv1(relu(x)))) + relu(x)``.

    The skip adds ``relu(x)``, not ``x``: upstream's in-place ReLU overwrites the input before the add, and
    the released weights were trained with that behaviour. ``activated_skip=False`` adds ``x`` itself
    (VGGT-Omega's ReLU is not in-place).
    """

    def __init__(self, features: int, activated_skip: bool = True):
        super().__init__()
        self.activated_skip = activated_skip
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit."""
        activated = F.relu(x)
        return self.conv2(F.relu(self.conv1(activated))) + (activated if self.activated_skip else x)


class FeatureFusionBlock(nn.Module):
    """Fuse a coarser path with a skip feature, refine, upsample, and mix channels with a 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True, activated_skip: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features, activated_skip) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features, activated_skip)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``out_conv(resize(RCU2(x + RCU1(skip))))``; ``size`` None doubles the resolution."""
        if self.resConfUnit1 is not None and skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_interpolate(self.resConfUnit2(x), size))


class _Scratch(nn.Module):
    """Container with the upstream ``scratch`` parameter names."""

    def __init__(self, in_channels: Sequence[int], features: int, output_dim: int):
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, kernel_size=3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, kernel_size=3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, kernel_size=3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, kernel_size=3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, _HEAD_HIDDEN, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(_HEAD_HIDDEN, output_dim, kernel_size=1),
        )


class DPTHead(nn.Module):
    """Dense prediction head reading four aggregated layers (VGGT ``DPTHead`` with ``pos_embed=True``).

    Args:
        dim_in: token width (2 x aggregator width).
        patch_size: patch side in pixels.
        output_dim: channels before activation (last = confidence).
        extra_channels: further raw channels (no activation) predicted by the same final convolution and
            returned separately (``dense_dynamics``: one dynamic logit); 0 for every released head.
        activation: activation of the prediction channels (``exp`` for depth, ``inv_log`` for points).
        conf_activation: activation of the confidence channel.
        features: fusion width.
        out_channels: per-level projection widths.
        layer_indices: the four aggregator layers read, shallow to deep.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        output_dim: int,
        activation: str,
        conf_activation: str = "expp1",
        extra_channels: int = 0,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layer_indices: Sequence[int] = (4, 11, 17, 23),
    ):
        super().__init__()
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.layer_indices = tuple(layer_indices)
        self.output_dim = output_dim
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, channels, kernel_size=1) for channels in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(out_channels, features, output_dim + extra_channels)

    def _forward_frames(
        self, layers: Sequence[torch.Tensor], patch_start_idx: int, image_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        height, width = image_hw
        rows, cols = height // self.patch_size, width // self.patch_size
        batch, frames = layers[0].shape[:2]
        pyramid = []
        for level, tokens in enumerate(layers):
            x = self.norm(tokens[:, :, patch_start_idx:].reshape(batch * frames, rows * cols, -1))
            x = x.transpose(1, 2).reshape(batch * frames, -1, rows, cols)
            x = add_uv_embedding(self.projects[level](x), width, height)
            pyramid.append(self.resize_layers[level](x))
        scratch = self.scratch
        level1 = scratch.layer1_rn(pyramid[0])
        level2 = scratch.layer2_rn(pyramid[1])
        level3 = scratch.layer3_rn(pyramid[2])
        level4 = scratch.layer4_rn(pyramid[3])
        out = scratch.refinenet4(level4, size=level3.shape[2:])
        out = scratch.refinenet3(out, level3, size=level2.shape[2:])
        out = scratch.refinenet2(out, level2, size=level1.shape[2:])
        out = scratch.refinenet1(out, level1)
        out = _interpolate(scratch.output_conv1(out), (rows * self.patch_size, cols * self.patch_size))
        out = scratch.output_conv2(add_uv_embedding(out, width, height))
        out = out.permute(0, 2, 3, 1)
        extra = out[..., self.output_dim :]
        out = out[..., : self.output_dim]
        prediction = apply_activation(out[..., :-1], self.activation)
        confidence = apply_activation(out[..., -1], self.conf_activation)
        return (
            prediction.reshape(batch, frames, *prediction.shape[1:]),
            confidence.reshape(batch, frames, *confidence.shape[1:]),
            extra.reshape(batch, frames, *extra.shape[1:]) if extra.shape[-1] else None,
        )

    def forward(
        self,
        aggregated: dict[int, torch.Tensor],
        patch_start_idx: int,
        image_hw: tuple[int, int],
        frames_chunk_size: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Predictions [B, S, H, W, output_dim-1], confidence [B, S, H, W] and the extra raw channels
        [B, S, H, W, extra_channels] (None without them), computed in frame chunks.

        Args:
            aggregated: layer index -> tokens [B, S, P, dim_in]; must hold ``layer_indices``.
            patch_start_idx: first patch token.
            image_hw: network input (H, W).
            frames_chunk_size: frames per pass (bounds the memory of the full-resolution maps; <= 0: all).
        """
        layers = [aggregated[index] for index in self.layer_indices]
        frames = layers[0].shape[1]
        if frames_chunk_size <= 0 or frames <= frames_chunk_size:
            return self._forward_frames(layers, patch_start_idx, image_hw)
        chunks = [
            self._forward_frames(
                [tokens[:, start : start + frames_chunk_size] for tokens in layers], patch_start_idx, image_hw
            )
            for start in range(0, frames, frames_chunk_size)
        ]
        prediction, confidence, extra = (list(parts) for parts in zip(*chunks))
        return (
            torch.cat(prediction, dim=1),
            torch.cat(confidence, dim=1),
            torch.cat(extra, dim=1) if extra[0] is not None else None,
        )
