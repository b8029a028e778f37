"""DINOv2 ViT with register tokens: the patch encoder of the VGGT aggregator (``aggregator.patch_embed``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from page4d_ros.model.layers import Block


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution turning [N, 3, H, W] into [N, (H/p)*(W/p), C] tokens."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed the patches, row-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 encoder returning the final-LayerNorm patch tokens (``x_norm_patchtokens``).

    Sequence: [cls, registers, patches]; the learned position table (a square grid of ``img_size/patch_size``
    plus cls) is added to cls and patches before the registers are inserted, and resized with antialiased
    bicubic interpolation in float32 when the input grid differs from the table (upstream behaviour).

    Args:
        img_size: side of the square training image (sets the position table size).
        patch_size: patch side in pixels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        num_register_tokens: register tokens after cls.
        mlp_ratio: MLP width ratio.
        mask_token: keep the (inference-unused) ``mask_token`` parameter; π³ deletes it from its encoder.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_register_tokens: int,
        mlp_ratio: float = 4.0,
        mask_token: bool = True,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_register_tokens = num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2 + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        if mask_token:
            # Unused at inference; kept because the released checkpoints contain it.
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
            self.mask_token.requires_grad_(False)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=1.0, norm_eps=1e-6)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def interpolate_pos_encoding(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """Position embeddings [1, 1 + rows*cols, C] for a ``rows`` x ``cols`` patch grid."""
        if rows == cols == self.grid_size:
            return self.pos_embed.to(dtype)
        table = self.pos_embed.float()
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        channels = table.shape[-1]
        grid = patch_pos.reshape(1, self.grid_size, self.grid_size, channels).permute(0, 3, 1, 2)
        resized = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
        resized = resized.permute(0, 2, 3, 1).reshape(1, rows * cols, channels)
        return torch.cat([cls_pos, resized], dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode normalised images [N, 3, H, W] (H, W multiples of patch_size) to patch tokens [N, Hp*Wp, C].

        Under autocast the token stream is float32 (cls/register parameters promote the bf16 convolution
        output in ``cat``), as upstream.
        """
        return self.forward_features(images)[:, 1 + self.num_register_tokens :]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """All final-LayerNorm tokens [N, 1 + registers + Hp*Wp, C] (cls, registers, patches)."""
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(rows, cols, x.dtype)
        registers = self.register_tokens.expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :1], registers, x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
