"""VGGT-Omega's alternating-attention aggregator (``aggregator.*``).

Per frame ``[camera, registers, patches]`` (index 0 of the special tokens for each sequence's first frame,
index 1 for the others). Each step runs a frame block (QK-norm, 2-D RoPE on the patches with the rotation
in float32) and an inter-frame block: global attention over all tokens of the sequence, or, at the
``register_attention_block_indices`` steps, attention over the special tokens only (patches pass through).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from page4d_ros.model.aggregator import IMAGENET_MEAN, IMAGENET_STD
from page4d_ros.model.layers import Block
from page4d_ros.model.vggt_omega.config import LAYER_SCALE_INIT
from page4d_ros.model.vggt_omega.encoder import DinoV3Encoder
from page4d_ros.model.vggt_omega.rope import RopePositionEmbedding

BLOCK_NORM_EPS = 1e-5


@dataclass
class AggregatorOutput:
    """Cached layers {index: [B, S, T, 2C]} (``[frame, inter-frame]`` outputs) and the first patch token."""

    tokens: dict[int, torch.Tensor]
    patch_start_idx: int


def _special_tokens(parameter: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """[1, 2, X, C] -> [B*S, X, C]: index 0 for the first frame of each sequence, index 1 for the rest."""
    first = parameter[:, :1].expand(batch, 1, *parameter.shape[2:])
    others = parameter[:, 1:].expand(batch, frames - 1, *parameter.shape[2:])
    return torch.cat([first, others], dim=1).reshape(batch * frames, *parameter.shape[2:])


class Aggregator(nn.Module):
    """Patch encoder plus ``depth`` frame / inter-frame block pairs.

    Args:
        config: a resolved VGGT-Omega config (``vggt_omega.config.resolve_config``).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        embed_dim = config["embed_dim"]
        heads = config["num_heads"]
        self.patch_size = config["patch_size"]
        self.depth = config["depth"]
        self.register_steps = frozenset(config["register_attention_block_indices"])
        self.num_special = 1 + config["num_register_tokens"]
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config["num_register_tokens"], embed_dim))
        self.patch_embed = DinoV3Encoder(
            self.patch_size,
            embed_dim,
            config["pe_depth"],
            config["pe_num_heads"],
            config["pe_n_storage_tokens"],
        )
        self.rope_embed = RopePositionEmbedding(embed_dim // heads, force_float32=True)

        def block() -> Block:
            return Block(
                embed_dim,
                heads,
                mlp_ratio=config["mlp_ratio"],
                init_values=LAYER_SCALE_INIT,
                qk_norm=True,
                norm_eps=BLOCK_NORM_EPS,
                mask_k_bias=True,
            )

        self.frame_blocks = nn.ModuleList(block() for _ in range(self.depth))
        self.inter_frame_blocks = nn.ModuleList(block() for _ in range(self.depth))

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """ImageNet normalisation of images [B, S, 3, H, W] in [0, 1] (float32 constants in their dtype, as
        upstream's non-persistent buffers)."""
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 1, 3, 1, 1).to(images.dtype)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 1, 3, 1, 1).to(images.dtype)
        return (images - mean) / std

    def forward(self, images: torch.Tensor, keep_layers: Collection[int]) -> AggregatorOutput:
        """Run the steps up to the deepest of ``keep_layers`` on images [B, S, 3, H, W] in [0, 1]."""
        batch, frames, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        flat = self.normalise(images).reshape(batch * frames, 3, height, width)
        patches = self.patch_embed(flat)
        special = torch.cat(
            [
                _special_tokens(self.camera_token, batch, frames),
                _special_tokens(self.register_token, batch, frames),
            ],
            dim=1,
        )
        tokens = torch.cat([special, patches], dim=1)
        num_tokens, channels = tokens.shape[1], tokens.shape[2]
        rope = self.rope_embed.tables(rows, cols, num_unrotated=self.num_special)
        kept: dict[int, torch.Tensor] = {}
        last = max(keep_layers, default=-1)
        for step in range(last + 1):
            tokens = self.frame_blocks[step](tokens.reshape(batch * frames, num_tokens, channels), rope)
            frame_out = tokens.reshape(batch, frames, num_tokens, channels)
            if step in self.register_steps:
                special_out = self.inter_frame_blocks[step](
                    frame_out[:, :, : self.num_special].reshape(batch, frames * self.num_special, channels)
                )
                special_out = special_out.reshape(batch, frames, self.num_special, channels)
                tokens = torch.cat([special_out, frame_out[:, :, self.num_special :]], dim=2)
            else:
                tokens = self.inter_frame_blocks[step](tokens.reshape(batch, frames * num_tokens, channels))
            inter_out = tokens.reshape(batch, frames, num_tokens, channels)
            if step in keep_layers:
                kept[step] = torch.cat([frame_out, inter_out], dim=-1)
        return AggregatorOutput(tokens=kept, patch_start_idx=self.num_special)
