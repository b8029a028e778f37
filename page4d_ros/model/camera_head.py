"""Camera head: iterative refinement of the 9-D pose encoding from the last layer's camera tokens."""

from __future__ import annotations

import torch
from torch import nn

from page4d_ros.model.heads_common import apply_activation
from page4d_ros.model.layers import Block, Mlp

POSE_ENCODING_DIM = 9


class CameraHead(nn.Module):
    """AdaLN-modulated trunk over the S camera tokens, refined ``num_iterations`` times (VGGT ``CameraHead``).

    Each iteration embeds the previous (detached, pre-activation) encoding, modulates the normalised camera
    tokens with it (shift, scale, gate), runs the trunk (self-attention across frames), and adds the predicted
    delta. Outputs are activated per part: translation ``trans_act``, quaternion ``quat_act``, FoV ``fl_act``.

    Args:
        dim_in: token width (2 x aggregator width).
        trunk_depth: trunk blocks.
        num_heads: trunk attention heads.
        mlp_ratio: trunk MLP ratio.
        init_values: trunk LayerScale init.
        trans_act: activation of the translation part.
        quat_act: activation of the quaternion part.
        fl_act: activation of the field-of-view part.
    """

    def __init__(
        self,
        dim_in: int,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float | None = 0.01,
        trans_act: str = "linear",
        quat_act: str = "linear",
        fl_act: str = "relu",
    ):
        super().__init__()
        self.trans_act, self.quat_act, self.fl_act = trans_act, quat_act, fl_act
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.trunk = nn.Sequential(
            *(
                Block(dim_in, num_heads, mlp_ratio=mlp_ratio, init_values=init_values)
                for _ in range(trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def activate(self, encoding: torch.Tensor) -> torch.Tensor:
        """Apply the per-part output activations to a pre-activation encoding [..., 9]."""
        translation, quaternion, fov = encoding[..., :3], encoding[..., 3:7], encoding[..., 7:]
        return torch.cat(
            [
                apply_activation(translation, self.trans_act),
                apply_activation(quaternion, self.quat_act),
                apply_activation(fov, self.fl_act),
            ],
            dim=-1,
        )

    def forward(self, last_layer_tokens: torch.Tensor, num_iterations: int = 4) -> list[torch.Tensor]:
        """Pose encodings [B, S, 9] after each iteration, from the last aggregated layer [B, S, P, 2C]."""
        pose_tokens = self.token_norm(last_layer_tokens[:, :, 0])
        batch, frames, _ = pose_tokens.shape
        normalised = self.adaln_norm(pose_tokens)
        encoding: torch.Tensor | None = None
        outputs = []
        for _ in range(num_iterations):
            if encoding is None:
                conditioning = self.embed_pose(self.empty_pose_tokens.expand(batch, frames, -1))
            else:
                conditioning = self.embed_pose(encoding.detach())
            shift, scale, gate = self.poseLN_modulation(conditioning).chunk(3, dim=-1)
            hidden = gate * (normalised * (1 + scale) + shift) + pose_tokens
            hidden = self.trunk(hidden)
            delta = self.pose_branch(self.trunk_norm(hidden))
            encoding = delta if encoding is None else encoding + delta
            outputs.append(self.activate(encoding))
        return outputs
