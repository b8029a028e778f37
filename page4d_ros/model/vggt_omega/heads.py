"""VGGT-Omega heads: camera (``camera_head``), dense depth (``dense_head``) and text alignment.

Every head casts its input tokens to its own parameter dtype (float32 under bf16/fp16 autocast, as upstream;
float64 in a float64 model) and the model runs them with autocast disabled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from page4d_ros.model.dpt_head import FeatureFusionBlock, add_uv_embedding
from page4d_ros.model.layers import Block
from page4d_ros.model.vggt_omega.config import HEAD_BLOCKS, HEAD_NUM_HEADS, LAYER_SCALE_INIT

HEAD_NORM_EPS = 1e-5
FOV_FLOOR = 0.01
PIXEL_SHUFFLE = 4


def _trunk(dim: int) -> nn.ModuleList:
    """Upstream's 4 global blocks of 16 heads: LayerScale, no key bias, no QK-norm, no RoPE."""
    return nn.ModuleList(
        Block(dim, HEAD_NUM_HEADS, init_values=LAYER_SCALE_INIT, norm_eps=HEAD_NORM_EPS, mask_k_bias=True)
        for _ in range(HEAD_BLOCKS)
    )


class CameraHead(nn.Module):
    """Pose encoding [B, S, 9] from the special tokens [B, S, 1+R, dim] of the last cached layer.

    ``token_norm``, a trunk over all frames' special tokens, ``trunk_norm`` on each frame's camera token,
    ``camera_branch`` (Linear, GELU, Linear); translation and quaternion (XYZW) raw, FoV ``relu + 0.01``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.token_norm = nn.LayerNorm(dim, eps=HEAD_NORM_EPS)
        self.trunk = _trunk(dim)
        self.trunk_norm = nn.LayerNorm(dim, eps=HEAD_NORM_EPS)
        self.camera_branch = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, 9))

    def forward(self, special_tokens: torch.Tensor) -> torch.Tensor:
        """Predict the activated pose encoding."""
        batch, frames, num_special, dim = special_tokens.shape
        x = self.token_norm(special_tokens.to(self.token_norm.weight.dtype))
        x = x.reshape(batch, frames * num_special, dim)
        for block in self.trunk:
            x = block(x)
        camera = self.trunk_norm(x.reshape(batch, frames, num_special, dim)[:, :, 0])
        raw = self.camera_branch(camera)
        return torch.cat([raw[..., :7], F.relu(raw[..., 7:9]) + FOV_FLOOR], dim=-1)


class TextAlignmentHead(nn.Module):
    """Sequence embedding for text alignment from the special tokens of all frames.

    A learned ``language_token`` is prepended to the normed special tokens, 4 readout blocks run, and its
    normed output (``text_alignment_token`` [B, dim]) is projected and L2-normalised
    (``text_alignment_embedding`` [B, dim]).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.language_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_norm = nn.LayerNorm(dim, eps=HEAD_NORM_EPS)
        self.readout_blocks = _trunk(dim)
        self.language_token_norm = nn.LayerNorm(dim, eps=HEAD_NORM_EPS)
        self.embedding_projector = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.LayerNorm(dim // 2, eps=HEAD_NORM_EPS),
            nn.Linear(dim // 2, dim),
        )

    def forward(self, special_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """``text_alignment_embedding`` and ``text_alignment_token`` for tokens [B, S, 1+R, dim]."""
        batch, dim = special_tokens.shape[0], special_tokens.shape[-1]
        x = self.token_norm(special_tokens.to(self.token_norm.weight.dtype))
        x = torch.cat([self.language_token.expand(batch, -1, -1), x.reshape(batch, -1, dim)], dim=1)
        for block in self.readout_blocks:
            x = block(x)
        token = self.language_token_norm(x[:, 0])
        embedding = F.normalize(self.embedding_projector(token), dim=-1, eps=1e-12)
        return {"text_alignment_embedding": embedding, "text_alignment_token": token}


class _Scratch(nn.Module):
    """Container with the upstream ``dense_head.scratch`` names (no output convolutions)."""

    def __init__(self, in_channels: Sequence[int], features: int):
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, kernel_size=3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, kernel_size=3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, kernel_size=3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, kernel_size=3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features, activated_skip=False)
        self.refinenet2 = FeatureFusionBlock(features, activated_skip=False)
        self.refinenet3 = FeatureFusionBlock(features, activated_skip=False)
        self.refinenet4 = FeatureFusionBlock(features, has_residual=False, activated_skip=False)


class DenseHead(nn.Module):
    """DPT-style depth head: ``depth`` = exp, ``depth_conf`` = 1 + exp, at the input resolution.

    Four cached layers -> shared LayerNorm -> 1x1 projections (+ UV embedding) -> resize (x4, x2, x1, /2) ->
    3x3 ``layer*_rn`` -> fusion (bilinear, align_corners) at 4x the patch grid -> UV embedding -> 1x1 to 16
    channels -> ``pixel_shuffle(4)``.

    Args:
        dim_in: token width (2 x aggregator width).
        patch_size: patch side (16: the x4 map times the x4 pixel shuffle).
        features: fusion width.
        out_channels: per-level projection widths.
        layer_indices: the four cached layers read, shallow to deep.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        features: int,
        out_channels: Sequence[int],
        layer_indices: Sequence[int],
    ):
        super().__init__()
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.norm = nn.LayerNorm(dim_in, eps=HEAD_NORM_EPS)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, channels, kernel_size=1) for channels in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(out_channels, features)
        shuffled = PIXEL_SHUFFLE**2
        self.proj = nn.Conv2d(features, shuffled, kernel_size=1)
        self.proj_conf = nn.Conv2d(features, shuffled, kernel_size=1)

    def _forward_frames(
        self, layers: Sequence[torch.Tensor], patch_start_idx: int, image_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image_hw
        rows, cols = height // self.patch_size, width // self.patch_size
        batch, frames = layers[0].shape[:2]
        dtype = self.norm.weight.dtype
        pyramid = []
        for level, tokens in enumerate(layers):
            x = self.norm(tokens[:, :, patch_start_idx:].to(dtype).reshape(batch * frames, rows * cols, -1))
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
        out = scratch.refinenet1(out, level1, size=level1.shape[2:])
        out = add_uv_embedding(out, width, height)
        depth = F.pixel_shuffle(self.proj(out), PIXEL_SHUFFLE).permute(0, 2, 3, 1)
        confidence = F.pixel_shuffle(self.proj_conf(out), PIXEL_SHUFFLE)[:, 0]
        return (
            torch.exp(depth).reshape(batch, frames, *depth.shape[1:]),
            (1 + torch.exp(confidence)).reshape(batch, frames, *confidence.shape[1:]),
        )

    def forward(
        self,
        cached: dict[int, torch.Tensor],
        patch_start_idx: int,
        image_hw: tuple[int, int],
        frames_chunk_size: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``depth`` [B, S, H, W, 1] and ``depth_conf`` [B, S, H, W], computed in frame chunks.

        Args:
            cached: layer index -> tokens [B, S, T, dim_in]; must hold ``layer_indices``.
            patch_start_idx: first patch token.
            image_hw: network input (H, W).
            frames_chunk_size: frames per pass (<= 0: all at once).
        """
        layers = [cached[index] for index in self.layer_indices]
        frames = layers[0].shape[1]
        if frames_chunk_size <= 0 or frames <= frames_chunk_size:
            return self._forward_frames(layers, patch_start_idx, image_hw)
        chunks = [
            self._forward_frames(
                [tokens[:, start : start + frames_chunk_size] for tokens in layers], patch_start_idx, image_hw
            )
            for start in range(0, frames, frames_chunk_size)
        ]
        depth, confidence = zip(*chunks)
        return torch.cat(depth, dim=1), torch.cat(confidence, dim=1)
