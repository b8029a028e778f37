"""The VGGT-Omega network (``VGGTOmega``) and its builder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from page4d_ros.model.layers import LinearKMaskedBias, check_image_batch
from page4d_ros.model.vggt_omega.aggregator import Aggregator
from page4d_ros.model.vggt_omega.config import FAMILY, resolve_config
from page4d_ros.model.vggt_omega.heads import CameraHead, DenseHead, TextAlignmentHead
from page4d_ros.model.vggt_omega.rope import RopePositionEmbedding


class VGGTOmega(nn.Module):
    """VGGT-Omega with the upstream parameter names (``state_dict`` keys equal the released ones).

    Build it with :func:`build_vggt_omega` (or ``page4d_ros.model.build_model``). ``config`` holds the
    resolved configuration (JSON-serialisable).

    Args:
        config: a resolved VGGT-Omega config (:func:`page4d_ros.model.vggt_omega.resolve_config`).
    """

    family = FAMILY

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        dim = 2 * config["embed_dim"]
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(dim)
        self.dense_head = DenseHead(
            dim,
            config["patch_size"],
            config["dense_features"],
            config["dense_out_channels"],
            config["dense_intermediate_layer_idx"],
        )
        self.text_alignment_head = TextAlignmentHead(dim) if config["enable_alignment"] else None

    @property
    def has_mask_head(self) -> bool:
        """VGGT-Omega has no dynamics head (dynamic masks come from the pipeline's geometric test)."""
        return False

    def _check_images(self, images: Any) -> torch.Tensor:
        parameter = self.aggregator.camera_token
        return check_image_batch(images, self.config["patch_size"], parameter.device, "resize or crop first")

    def forward(
        self,
        images: torch.Tensor,
        *,
        compute_camera: bool = True,
        compute_depth: bool = True,
        compute_text: bool = True,
        compute_points: bool = False,
        frames_chunk_size: int = 8,
    ) -> dict[str, Any]:
        """Predict cameras and depth for images [B, S, 3, H, W] in [0, 1] (``[S, 3, H, W]``: B = 1).

        H and W must be multiples of 16; frame 0 is the reference (world) frame. The aggregator runs in the
        parameter dtype (or under the caller's autocast); the heads run with autocast disabled on float32
        (the parameter dtype) tokens.

        Args:
            images: input frames.
            compute_camera: run the camera head (``pose_enc``).
            compute_depth: run the dense head (``depth``, ``depth_conf``).
            compute_text: run the text-alignment head when it exists.
            compute_points: accepted so that callers written for VGGT run unchanged; VGGT-Omega has no
                point head, so nothing is computed for it.
            frames_chunk_size: frames per dense-head pass.

        Returns:
            dict with ``camera_and_register_tokens`` [B,S,1+R,2C], ``pose_enc`` [B,S,9] (translation,
            XYZW quaternion, FoV h/w; camera-from-world, OpenCV), ``depth`` [B,S,H,W,1], ``depth_conf``
            [B,S,H,W], with the text head ``text_alignment_embedding`` / ``text_alignment_token`` [B,2C],
            and ``images`` (the input with a batch dimension).
        """
        images = self._check_images(images)
        cached_layers = self.config["cached_layer_indices"]
        aggregated = self.aggregator(images.to(self.aggregator.camera_token.dtype), set(cached_layers))
        special = aggregated.tokens[cached_layers[-1]][:, :, : aggregated.patch_start_idx]
        predictions: dict[str, Any] = {"camera_and_register_tokens": special}
        image_hw = (images.shape[-2], images.shape[-1])
        with torch.autocast(device_type=images.device.type, enabled=False):
            if compute_camera:
                predictions["pose_enc"] = self.camera_head(special)
            if compute_depth:
                depth, confidence = self.dense_head(
                    aggregated.tokens, aggregated.patch_start_idx, image_hw, frames_chunk_size
                )
                predictions["depth"] = depth
                predictions["depth_conf"] = confidence
            if compute_text and self.text_alignment_head is not None:
                predictions.update(self.text_alignment_head(special))
        predictions["images"] = images
        return predictions


def _initialise(model: VGGTOmega) -> None:
    """Fresh-training initialisation: truncated-normal linears, unit LayerNorms, small special tokens,
    and the fixed buffers (``bias_mask``, RoPE ``periods``) every checkpoint holds."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, LinearKMaskedBias):
            module.reset_bias_mask()
        elif isinstance(module, RopePositionEmbedding):
            module.reset_periods()
    aggregator = model.aggregator
    for token in (aggregator.camera_token, aggregator.register_token):
        nn.init.normal_(token, std=1e-6)
    encoder = aggregator.patch_embed
    for token in (encoder.cls_token, encoder.storage_tokens, encoder.mask_token):
        nn.init.normal_(token, std=0.02)
    if model.text_alignment_head is not None:
        nn.init.normal_(model.text_alignment_head.language_token, std=0.02)


def build_vggt_omega(
    config: str | Mapping[str, Any],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> VGGTOmega:
    """Build a randomly initialised VGGT-Omega from ``"vggt-omega"``, ``"vggt-omega-text"`` or a config dict.

    Args:
        config: preset name or dict (see :mod:`page4d_ros.model.vggt_omega.config`).
        device: where to allocate; ``"meta"`` builds the structure without memory.
        dtype: parameter dtype (default float32).

    Raises:
        ValueError: invalid configuration or unusable device.
    """
    from page4d_ros.model.vggt import resolve_device

    resolved = resolve_config(config)
    target = resolve_device(device)
    with target:
        model = VGGTOmega(resolved)
    if target.type != "meta":
        _initialise(model)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
