"""The π³ network (yyfz/Pi3 ``Pi3``) with the upstream state_dict key layout.

DINOv2 encoder (no ``mask_token``) -> alternating frame / global decoder over ``[5 registers ; patches]`` per
frame (QK-norm, 2-D RoPE, LayerScale) -> three per-frame transformer decoders (points, confidence, camera) ->
pixel-shuffle point and confidence heads and an SVD-orthogonalised camera head. No reference frame: every
frame is treated alike (permutation-equivariant). See ``../shared/docs/pi3_spec.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from page4d_ros.model.aggregator import IMAGENET_MEAN, IMAGENET_STD
from page4d_ros.model.dino import DinoVisionTransformer
from page4d_ros.model.layers import (
    Block,
    RopeTables,
    RotaryPositionEmbedding2D,
    check_image_batch,
    patch_positions,
)
from page4d_ros.model.pi3.config import FAMILY, rope_frequency

_NORM_EPS = 1e-6


def _head_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """Dtype of the heads: upstream casts the hidden states to fp32 (``.float()``); fp64 stays fp64."""
    return torch.promote_types(hidden.dtype, weight.dtype)


class TransformerDecoder(nn.Module):
    """``projects`` -> RoPE blocks (no LayerScale, no QK-norm) -> ``linear_out``; upstream names."""

    def __init__(
        self, in_dim: int, out_dim: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float
    ):
        super().__init__()
        self.projects = nn.Linear(in_dim, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=None, norm_eps=_NORM_EPS)
            for _ in range(depth)
        )
        self.linear_out = nn.Linear(embed_dim, out_dim)

    def forward(self, hidden: torch.Tensor, rope: RopeTables) -> torch.Tensor:
        """Decode per-frame tokens [B*N, T, in_dim] to [B*N, T, out_dim]."""
        hidden = self.projects(hidden)
        for block in self.blocks:
            hidden = block(hidden, rope)
        return self.linear_out(hidden)


class LinearPts3d(nn.Module):
    """Per-patch linear map to ``patch^2 * channels`` values, pixel-shuffled to a dense map [B*N, H, W, C]."""

    def __init__(self, patch_size: int, in_dim: int, output_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_dim, output_dim * patch_size**2)

    def forward(self, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Patch tokens [B*N, rows*cols, in_dim] -> [B*N, rows*patch, cols*patch, output_dim]."""
        features = self.proj(tokens).transpose(-1, -2).reshape(tokens.shape[0], -1, rows, cols)
        return F.pixel_shuffle(features, self.patch_size).permute(0, 2, 3, 1)


class ResConvBlock(nn.Module):
    """``x + relu(L3(relu(L2(relu(L1(x))))))`` over the last dimension (upstream names ``res_conv1..3``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual MLP."""
        y = F.relu(self.res_conv1(x))
        y = F.relu(self.res_conv2(y))
        return x + F.relu(self.res_conv3(y))


def svd_orthogonalize(matrices: torch.Tensor) -> torch.Tensor:
    """Nearest proper rotation to each row-normalised 3x3 of ``matrices`` [..., 3, 3] (``torch.svd``)."""
    dtype = matrices.dtype
    # SVD and det have no bf16/fp16 kernels: half-precision models compute them in fp32.
    matrices = matrices.to(torch.promote_types(dtype, torch.float32))
    normalised = F.normalize(matrices, p=2, dim=-1, eps=1e-12).transpose(-1, -2)
    u, _, v = torch.svd(normalised)
    det = torch.det(v @ u.transpose(-2, -1))
    v = torch.cat([v[..., :-1], v[..., -1:] * det[..., None, None]], dim=-1)
    return (v @ u.transpose(-2, -1)).to(dtype)


class CameraHead(nn.Module):
    """Residual MLPs, mean over patches, an MLP, then translation and SVD rotation: camera-to-world 4x4."""

    def __init__(self, dim: int):
        super().__init__()
        self.res_conv = nn.ModuleList(ResConvBlock(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B*N, P, dim] -> poses [B*N, 4, 4] ``[R t; 0 0 0 1]``."""
        for block in self.res_conv:
            tokens = block(tokens)
        features = self.more_mlps(tokens.mean(dim=1))
        translation = self.fc_t(features)
        rotation = svd_orthogonalize(self.fc_rot(features).reshape(-1, 3, 3))
        pose = translation.new_zeros(translation.shape[0], 4, 4)
        pose[:, :3, :3] = rotation
        pose[:, :3, 3] = translation
        pose[:, 3, 3] = 1.0
        return pose


class Pi3(nn.Module):
    """π³ network; ``state_dict`` keys equal the released ``yyfz233/Pi3`` ones.

    Build it with ``page4d_ros.model.build_model("pi3")`` (or a ``{"family": "pi3", ...}`` dict).

    Args:
        config: a resolved π³ config (:func:`page4d_ros.model.pi3.config.resolve_config`).
    """

    family = FAMILY

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        dim = config["embed_dim"]
        self.patch_size = config["patch_size"]
        self.register_token = nn.Parameter(torch.zeros(1, 1, config["num_register_tokens"], dim))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))
        self.encoder = DinoVisionTransformer(
            img_size=config["enc_img_size"],
            patch_size=self.patch_size,
            embed_dim=dim,
            depth=config["enc_depth"],
            num_heads=config["enc_num_heads"],
            num_register_tokens=config["enc_num_register_tokens"],
            mlp_ratio=config["enc_mlp_ratio"],
            mask_token=False,
        )
        self.decoder = nn.ModuleList(
            Block(
                dim,
                config["dec_num_heads"],
                mlp_ratio=config["dec_mlp_ratio"],
                init_values=0.01,
                qk_norm=True,
                norm_eps=_NORM_EPS,
            )
            for _ in range(config["dec_depth"])
        )
        self.rope = RotaryPositionEmbedding2D(rope_frequency(config["pos_type"]))
        head_kwargs = {
            "in_dim": 2 * dim,
            "embed_dim": config["head_dec_embed_dim"],
            "depth": config["head_dec_depth"],
            "num_heads": config["head_dec_num_heads"],
            "mlp_ratio": config["head_dec_mlp_ratio"],
        }
        self.point_decoder = TransformerDecoder(out_dim=config["point_out_dim"], **head_kwargs)
        self.point_head = LinearPts3d(self.patch_size, config["point_out_dim"], 3)
        self.conf_decoder = TransformerDecoder(out_dim=config["point_out_dim"], **head_kwargs)
        self.conf_head = LinearPts3d(self.patch_size, config["point_out_dim"], 1)
        self.camera_decoder = TransformerDecoder(out_dim=config["camera_out_dim"], **head_kwargs)
        self.camera_head = CameraHead(config["camera_out_dim"])

    def _check_images(self, images: Any) -> torch.Tensor:
        parameter = self.register_token
        hint = "resize first (see page4d_ros.model.pi3.Pi3SizeRule)"
        return check_image_batch(images, self.patch_size, parameter.device, hint).to(parameter.dtype)

    def _decode(
        self,
        hidden: torch.Tensor,
        batch: int,
        frames: int,
        rope: RopeTables,
        keep: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Alternating frame / global attention; returns cat(last two layer outputs) [B*N, T, 2C]."""
        registers = self.register_token.expand(batch * frames, -1, -1, -1).reshape(
            batch * frames, *self.register_token.shape[-2:]
        )
        hidden = torch.cat([registers.to(hidden.dtype), hidden], dim=1)
        tokens = hidden.shape[1]
        global_rope = rope.repeat(frames)
        depth = len(self.decoder)
        outputs = []
        for index, block in enumerate(self.decoder):
            if index % 2 == 0:
                hidden = block(hidden.reshape(batch * frames, tokens, -1), rope)
            else:
                hidden = block(hidden.reshape(batch, frames * tokens, -1), global_rope)
            if keep is not None:
                keep[f"decoder.{index}.out"] = hidden
            if index >= depth - 2:
                outputs.append(hidden.reshape(batch * frames, tokens, -1))
        return torch.cat(outputs, dim=-1)

    def forward(self, images: torch.Tensor, *, return_intermediates: bool = False) -> dict[str, Any]:
        """Predict point maps, confidence and camera poses for images [B, N, 3, H, W] in [0, 1].

        H and W must be multiples of 14 (``[N, 3, H, W]`` is taken as B = 1); images are cast to the
        parameter dtype. The heads run with autocast off in fp32 (fp64 in a fp64 model), as upstream.

        Args:
            images: input frames; no frame is special.
            return_intermediates: also return the upstream intermediate tensors under ``"inter.<name>"``
                (``encoder.x_norm_patchtokens``, ``decoder.<i>.out``, ``decode.hidden``, ``decode.pos``,
                ``point_decoder.out``, ...), for parity checks.

        Returns:
            dict with ``points`` [B,N,H,W,3] (world), ``local_points`` [B,N,H,W,3] (camera frame, OpenCV
            axes), ``conf`` [B,N,H,W,1] (logits: sigmoid gives a probability) and ``camera_poses`` [B,N,4,4]
            (camera-to-world, OpenCV axes, no reference frame).
        """
        images = self._check_images(images)
        batch, frames, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        normalised = (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)
        keep: dict[str, torch.Tensor] | None = {} if return_intermediates else None
        features = self.encoder.forward_features(normalised.reshape(batch * frames, 3, height, width))
        start = 1 + self.encoder.num_register_tokens
        hidden = features[:, start:]
        num_registers = self.register_token.shape[-2]
        positions = patch_positions(rows, cols, num_registers, device=images.device)
        if num_registers == 0:
            positions = positions - 1  # upstream offsets positions by +1 only when register tokens exist
        rope = self.rope.tables(
            positions, self.config["embed_dim"] // self.config["dec_num_heads"], hidden.dtype
        )
        hidden = self._decode(hidden, batch, frames, rope, keep)
        head_dim = self.config["head_dec_embed_dim"] // self.config["head_dec_num_heads"]
        head_rope = self.rope.tables(positions, head_dim, hidden.dtype)
        point_hidden = self.point_decoder(hidden, head_rope)
        conf_hidden = self.conf_decoder(hidden, head_rope)
        camera_hidden = self.camera_decoder(hidden, head_rope)
        if keep is not None:
            keep["encoder.x_norm_patchtokens"] = features[:, start:]
            keep["encoder.x_norm_clstoken"] = features[:, 0]
            keep["encoder.x_norm_regtokens"] = features[:, 1:start]
            keep["decode.hidden"] = hidden
            keep["decode.pos"] = positions[None].expand(batch * frames, -1, -1)
            keep["point_decoder.out"] = point_hidden
            keep["conf_decoder.out"] = conf_hidden
            keep["camera_decoder.out"] = camera_hidden
        with torch.autocast(device_type=images.device.type, enabled=False):
            dtype = _head_dtype(point_hidden, self.point_head.proj.weight)
            raw = self.point_head(point_hidden[:, num_registers:].to(dtype), rows, cols)
            xy, z = raw.reshape(batch, frames, height, width, 3).split([2, 1], dim=-1)
            z = torch.exp(z)
            local_points = torch.cat([xy * z, z], dim=-1)
            dtype = _head_dtype(conf_hidden, self.conf_head.proj.weight)
            conf = self.conf_head(conf_hidden[:, num_registers:].to(dtype), rows, cols)
            conf = conf.reshape(batch, frames, height, width, 1)
            dtype = _head_dtype(camera_hidden, self.camera_head.fc_t.weight)
            poses = self.camera_head(camera_hidden[:, num_registers:].to(dtype)).reshape(batch, frames, 4, 4)
            homogeneous = torch.cat([local_points, torch.ones_like(local_points[..., :1])], dim=-1)
            points = torch.einsum("bnij,bnhwj->bnhwi", poses.to(local_points.dtype), homogeneous)[..., :3]
        outputs: dict[str, Any] = {
            "points": points,
            "local_points": local_points,
            "conf": conf,
            "camera_poses": poses,
        }
        if keep is not None:
            outputs.update({f"inter.{name}": value for name, value in keep.items()})
        return outputs


def initialise(model: Pi3) -> None:
    """Fresh-training initialisation: truncated-normal linears, small tokens, unit LayerNorms."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(model.register_token, std=1e-6)
    nn.init.trunc_normal_(model.encoder.pos_embed, std=0.02)
    nn.init.normal_(model.encoder.cls_token, std=1e-6)
    nn.init.normal_(model.encoder.register_tokens, std=1e-6)
