"""The full network (``VGGT``: aggregator + camera, depth and point heads) and :func:`build_model`."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from page4d_ros.model.aggregator import Aggregator, FrameTokenCache
from page4d_ros.model.camera_head import CameraHead
from page4d_ros.model.config import resolve_config
from page4d_ros.model.dpt_head import DPTHead
from page4d_ros.model.layers import check_image_batch
from page4d_ros.model.pi3 import build_pi3, is_pi3_config

TRACK_HEAD_PREFIX = "track_head."
"""Key prefix of the released VGGT-1B track head, which this package does not implement."""


class VGGT(nn.Module):
    """VGGT / PAGE-4D network with upstream parameter names (``state_dict`` keys equal the released ones).

    Build it with :func:`build_model`. ``config`` holds the resolved configuration (JSON-serialisable).
    The track head of the released VGGT checkpoint is not part of this module (see ``load_checkpoint``).

    Args:
        config: a resolved configuration (:func:`page4d_ros.model.config.resolve_config`).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        dim_in = 2 * config["embed_dim"]
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(dim_in, **config["camera_head_kwargs"])
        dpt_kwargs = {
            "dim_in": dim_in,
            "patch_size": config["patch_size"],
            "features": config["dpt_features"],
            "out_channels": config["dpt_out_channels"],
            "layer_indices": config["dpt_layers"],
        }
        self.point_head = DPTHead(output_dim=4, activation="inv_log", **dpt_kwargs)
        self.depth_head = DPTHead(
            output_dim=2, activation="exp", extra_channels=int(config["dense_dynamics"]), **dpt_kwargs
        )

    @property
    def has_mask_head(self) -> bool:
        """Whether the PAGE-4D spatial mask head exists (then outputs include ``dynamics_map``)."""
        return self.aggregator.spatial_mask_head is not None

    @property
    def mask_alpha(self) -> float:
        """Strength of the dynamics-aware global attention (0: plain VGGT attention)."""
        return self.aggregator.mask_alpha

    @mask_alpha.setter
    def mask_alpha(self, value: float) -> None:
        value = float(value)
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"mask_alpha must be a finite number >= 0, got {value!r}")
        self.aggregator.mask_alpha = value
        self.config["mask_alpha"] = value

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict`` that accepts the released VGGT-1B layout unchanged.

        The released checkpoint also holds ``track_head.*`` (point tracking, not implemented here): those keys
        are dropped with a warning; every other key is matched as usual (strict by default).
        """
        track_keys = [key for key in state_dict if key.startswith(TRACK_HEAD_PREFIX)]
        if track_keys:
            warnings.warn(
                f"ignoring {len(track_keys)} {TRACK_HEAD_PREFIX}* keys: this network has no track head",
                stacklevel=2,
            )
            state_dict = {
                key: value for key, value in state_dict.items() if not key.startswith(TRACK_HEAD_PREFIX)
            }
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _check_images(self, images: Any) -> torch.Tensor:
        parameter = self.aggregator.camera_token
        patch = self.config["patch_size"]
        return check_image_batch(images, patch, parameter.device, "resize or crop first").to(parameter.dtype)

    def forward(
        self,
        images: torch.Tensor,
        *,
        compute_camera: bool = True,
        compute_depth: bool = True,
        compute_points: bool = True,
        keep_token_layers: Iterable[int] = (),
        frames_chunk_size: int = 8,
        frame_keys: Sequence[Hashable] | None = None,
        frame_cache: FrameTokenCache | None = None,
    ) -> dict[str, Any]:
        """Predict cameras, depth, points (and the dynamics map) for images [B, S, 3, H, W] in [0, 1].

        H and W must be multiples of the patch size; ``[S, 3, H, W]`` is treated as B = 1. Images are cast
        to the parameter dtype. Heads run with autocast disabled (float32 tokens under autocast, as upstream).

        Args:
            images: input frames; frame 0 is the reference (world) frame.
            compute_camera: run the camera head (``pose_enc``, ``pose_enc_list``).
            compute_depth: run the depth head (``depth``, ``depth_conf``).
            compute_points: run the point head (``world_points``, ``world_points_conf``).
            keep_token_layers: also return ``aggregated_tokens`` {layer: [B, S, P, 2C]} for these layers
                (debugging / parity checks).
            frames_chunk_size: frames per DPT pass.
            frame_keys: one hashable id per frame (stamps, frame ids) for ``frame_cache``.
            frame_cache: reuse the per-frame encoder tokens and frame block 0 outputs of frames seen in
                earlier calls (inference, B = 1; outputs are bitwise equal to a run without the cache; see
                :class:`~page4d_ros.model.aggregator.FrameTokenCache`).

        Returns:
            dict with ``pose_enc`` [B,S,9], ``pose_enc_list`` (one per refinement iteration), ``depth``
            [B,S,H,W,1], ``depth_conf`` [B,S,H,W], ``world_points`` [B,S,H,W,3], ``world_points_conf``
            [B,S,H,W], ``images`` (the input), ``dynamics_map`` [B,S,H/p,W/p] when the mask head exists,
            ``dynamic_logits`` [B,S,H,W] (per-pixel, positive = dynamic) with ``dense_dynamics`` and depth.
        """
        images = self._check_images(images)
        extra_layers = {int(index) for index in keep_token_layers}
        invalid = sorted(index for index in extra_layers if not 0 <= index < self.config["depth"])
        if invalid:
            raise ValueError(f"keep_token_layers {invalid} outside [0, {self.config['depth']})")
        needed = set(extra_layers)
        if compute_camera:
            needed.add(self.config["depth"] - 1)
        if compute_depth or compute_points:
            needed.update(self.config["dpt_layers"])
        aggregated = self.aggregator(images, needed, frame_keys, frame_cache)

        predictions: dict[str, Any] = {}
        image_hw = (images.shape[-2], images.shape[-1])
        with torch.autocast(device_type=images.device.type, enabled=False):
            if compute_camera:
                pose_enc_list = self.camera_head(aggregated.tokens[self.config["depth"] - 1])
                predictions["pose_enc"] = pose_enc_list[-1]
                predictions["pose_enc_list"] = pose_enc_list
            if compute_depth:
                depth, depth_conf, extra = self.depth_head(
                    aggregated.tokens, aggregated.patch_start_idx, image_hw, frames_chunk_size
                )
                predictions["depth"] = depth
                predictions["depth_conf"] = depth_conf
                if extra is not None:
                    predictions["dynamic_logits"] = extra[..., 0]
            if compute_points:
                points, points_conf, _ = self.point_head(
                    aggregated.tokens, aggregated.patch_start_idx, image_hw, frames_chunk_size
                )
                predictions["world_points"] = points
                predictions["world_points_conf"] = points_conf
        if aggregated.dynamics_map is not None:
            predictions["dynamics_map"] = aggregated.dynamics_map
        if extra_layers:
            predictions["aggregated_tokens"] = {
                index: aggregated.tokens[index] for index in sorted(extra_layers)
            }
        predictions["images"] = images
        return predictions


def _initialise(model: VGGT) -> None:
    """Fresh-training initialisation: truncated-normal linears, tiny special tokens, unit LayerNorms."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    aggregator = model.aggregator
    nn.init.normal_(aggregator.camera_token, std=1e-6)
    nn.init.normal_(aggregator.register_token, std=1e-6)
    encoder = aggregator.patch_embed
    nn.init.trunc_normal_(encoder.pos_embed, std=0.02)
    nn.init.normal_(encoder.cls_token, std=1e-6)
    nn.init.normal_(encoder.register_tokens, std=1e-6)


def resolve_device(device: torch.device | str | None) -> torch.device:
    """Parse a device spec and check that it is usable here (CUDA present when asked for).

    Raises:
        ValueError: malformed device string, or an accelerator that this machine does not have.
    """
    try:
        resolved = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return resolved


def build_model(
    config: str | Mapping[str, Any],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a randomly initialised network from a preset name or a config dict (see ``config.py``).

    Args:
        config: ``"vggt-1b"``, ``"page4d-nomask"``, ``"page4d-mask"``, ``"page4d-small"`` or a dict with the
            fixture config keys (optionally ``"preset"`` as a base, ``mask_head``, ``mask_alpha``, ...);
            ``"pi3"`` or ``{"family": "pi3", **sizes}`` builds :class:`page4d_ros.model.pi3.Pi3`.
            ``"vggt-omega"``, ``"vggt-omega-text"`` or ``{"family": "vggt-omega", ...}`` build a
            :class:`~page4d_ros.model.vggt_omega.VGGTOmega`.
        device: where to allocate; ``"meta"`` builds the structure without memory (for loading with
            ``assign=True`` or inspecting keys and shapes).
        dtype: parameter dtype (default float32).

    Raises:
        ValueError: invalid configuration or unusable device.
    """
    from page4d_ros.model import vggt_omega

    if is_pi3_config(config):
        return build_pi3(config, resolve_device(device), dtype)
    if vggt_omega.is_vggt_omega_config(config):
        return vggt_omega.build_vggt_omega(config, device=device, dtype=dtype)
    resolved = resolve_config(config)
    target = resolve_device(device)
    with target:
        model = VGGT(resolved)
    if target.type != "meta":
        _initialise(model)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
