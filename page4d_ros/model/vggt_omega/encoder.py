"""DINOv3-style ViT patch encoder of VGGT-Omega (``aggregator.patch_embed``).

No learned position table: 2-D RoPE on the patch tokens only. Sequence ``[cls + 0 * mask_token, storage
tokens, patches]``; blocks with LayerScale and no key bias, LayerNorm eps 1e-5; the final norm over all
tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from page4d_ros.model.dino import PatchEmbed
from page4d_ros.model.layers import Block
from page4d_ros.model.vggt_omega.config import LAYER_SCALE_INIT
from page4d_ros.model.vggt_omega.rope import RopePositionEmbedding

NORM_EPS = 1e-5


class DinoV3Encoder(nn.Module):
    """The patch encoder; :meth:`forward` returns the normed patch tokens ``x_norm_patchtokens``.

    Args:
        patch_size: patch side in pixels.
        embed_dim: token width.
        depth: blocks.
        num_heads: attention heads.
        n_storage_tokens: storage tokens after cls.
        mlp_ratio: MLP width ratio.
    """

    def __init__(
        self,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        n_storage_tokens: int,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.n_storage_tokens = n_storage_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, n_storage_tokens, embed_dim))
        # Multiplied by 0 at inference; kept because the released checkpoints contain it.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.rope_embed = RopePositionEmbedding(embed_dim // num_heads)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                init_values=LAYER_SCALE_INIT,
                norm_eps=NORM_EPS,
                mask_k_bias=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=NORM_EPS)

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode normalised images [N, 3, H, W]: ``x_norm_clstoken`` [N, C], ``x_storage_tokens``
        [N, n_storage, C] and ``x_norm_patchtokens`` [N, P, C] (upstream names)."""
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self.patch_embed(images)
        cls = (self.cls_token + 0 * self.mask_token).expand(x.shape[0], -1, -1)
        storage = self.storage_tokens.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, storage, x], dim=1)
        rope = self.rope_embed.tables(rows, cols, num_unrotated=1 + self.n_storage_tokens)
        for block in self.blocks:
            x = block(x, rope)
        x = self.norm(x)
        return {
            "x_norm_clstoken": x[:, 0],
            "x_storage_tokens": x[:, 1 : 1 + self.n_storage_tokens],
            "x_norm_patchtokens": x[:, 1 + self.n_storage_tokens :],
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normed patch tokens [N, P, C] of normalised images [N, 3, H, W]."""
        return self.forward_features(images)["x_norm_patchtokens"]
