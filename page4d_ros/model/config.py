"""Model configuration: presets, defaults for derived layer indices, and validation.

A configuration is a plain ``dict`` (JSON-serialisable, stored in the safetensors metadata of checkpoints
we write). Its keys are those of the reference fixtures' ``config`` entry plus PAGE-4D and head-layout fields:

========================  ===================================================================================
``img_size``              training image size of the DINOv2 position-embedding table (pixels, square)
``patch_size``            ViT patch size in pixels (14 for every released model)
``embed_dim``             token width of the DINOv2 encoder and of the aggregator blocks
``depth``                 number of frame/global block pairs in the aggregator
``num_heads``             attention heads of the aggregator blocks
``mlp_ratio``             MLP hidden width / embed_dim (aggregator blocks)
``num_register_tokens``   register tokens of the aggregator (and of the DINOv2 encoder)
``rope_freq``             2-D RoPE base frequency; 0 disables RoPE
``qk_norm``               LayerNorm on queries and keys of the aggregator blocks
``init_values``           LayerScale initial value of the aggregator blocks (None: no LayerScale)
``dino_depth``            DINOv2 encoder depth
``dino_num_heads``        DINOv2 encoder heads
``dpt_features``          DPT fusion width
``dpt_out_channels``      DPT per-level projection widths (4 values)
``dpt_layers``            the 4 aggregator layers the DPT heads read (default: scaled from [4, 11, 17, 23])
``camera_head_kwargs``    overrides of the camera head: trunk_depth, num_heads, mlp_ratio, init_values,
                          trans_act, quat_act, fl_act
``mask_head``             build PAGE-4D's ``aggregator.spatial_mask_head``
``mask_alpha``            strength of the dynamics-aware global attention (0: nomask, 64: mask variant)
``mask_block``            frame block after which the mask head runs (default: scaled from 9)
``mask_global_blocks``    [start, end) of the global blocks that receive the mask bias (default: scaled
                          from [10, 20))
``mask_head_hidden``      hidden width of the mask head's 1x1 convolutions (256 upstream)
``dense_dynamics``        our extension, off in every released model: the depth head predicts one more
                          channel, a per-pixel dynamic logit (output ``dynamic_logits``), for models trained
                          with motion supervision (the patch-level mask head is too coarse for pixel masks
                          at small input sizes)
========================  ===================================================================================

Presets (see :data:`PRESETS`):

- ``"vggt-1b"``: facebook/VGGT-1B (1.19 B parameters without the track head).
- ``"page4d-nomask"``: PAGE-4D ``checkpoint_nomask.pt``; VGGT-1B plus the mask head, mask strength 0 (the head
  still runs and yields ``dynamics_map``, attention is plain VGGT).
- ``"page4d-mask"``: PAGE-4D ``checkpoint_mask.pt``; same modules, mask strength 64 in global blocks 10-19.
- ``"page4d-small"``: a 6.9 M-parameter PAGE-4D network for 224 px input (any multiple of 14 works),
  meant to be trained from scratch on small budgets: width 128, 8 block pairs of 4 heads (head_dim 32), a
  4-block DINOv2 encoder (16x16 position table), a 2-block camera trunk of 4 heads, DPT fusion width 32
  (the full-resolution DPT convolutions dominate the FLOPs of a model this small), mask head hidden width 64;
  derived indices: mask after frame block 2, masked global blocks 3-6, DPT layers [1, 3, 5, 7]; mask
  strength 64 (set ``mask_alpha`` to 0, or schedule ``model.mask_alpha`` while training, for the nomask
  recipe).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

UPSTREAM_DEPTH = 24
"""Aggregator depth of the released models; the default layer indices are defined relative to it."""

UPSTREAM_DPT_LAYERS = (4, 11, 17, 23)
UPSTREAM_MASK_BLOCK = 9
UPSTREAM_MASK_GLOBAL_BLOCKS = (10, 20)
PAGE4D_MASK_STRENGTH = 64.0
"""The mask strength the released PAGE-4D code uses when the mask is on (``SpatialMaskHead.scale``)."""

CAMERA_HEAD_DEFAULTS: dict[str, Any] = {
    "trunk_depth": 4,
    "num_heads": 16,
    "mlp_ratio": 4.0,
    "init_values": 0.01,
    "trans_act": "linear",
    "quat_act": "linear",
    "fl_act": "relu",
}

_VGGT_1B: dict[str, Any] = {
    "img_size": 518,
    "patch_size": 14,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "mlp_ratio": 4.0,
    "num_register_tokens": 4,
    "rope_freq": 100,
    "qk_norm": True,
    "init_values": 0.01,
    "dino_depth": 24,
    "dino_num_heads": 16,
    "dpt_features": 256,
    "dpt_out_channels": [256, 512, 1024, 1024],
    "camera_head_kwargs": {},
    "mask_head": False,
    "mask_alpha": 0.0,
    "mask_head_hidden": 256,
}

PRESETS: dict[str, dict[str, Any]] = {
    "vggt-1b": dict(_VGGT_1B),
    "page4d-nomask": {**_VGGT_1B, "mask_head": True, "mask_alpha": 0.0},
    "page4d-mask": {**_VGGT_1B, "mask_head": True, "mask_alpha": PAGE4D_MASK_STRENGTH},
    "page4d-small": {
        "img_size": 224,
        "patch_size": 14,
        "embed_dim": 128,
        "depth": 8,
        "num_heads": 4,
        "mlp_ratio": 4.0,
        "num_register_tokens": 4,
        "rope_freq": 100,
        "qk_norm": True,
        "init_values": 0.01,
        "dino_depth": 4,
        "dino_num_heads": 4,
        "dpt_features": 32,
        "dpt_out_channels": [32, 64, 128, 128],
        "camera_head_kwargs": {"trunk_depth": 2, "num_heads": 4},
        "mask_head": True,
        "mask_alpha": PAGE4D_MASK_STRENGTH,
        "mask_head_hidden": 64,
    },
}
"""Named configurations accepted by :func:`resolve_config` / ``build_model``."""

_FIELDS = {
    "img_size",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "num_register_tokens",
    "rope_freq",
    "qk_norm",
    "init_values",
    "dino_depth",
    "dino_num_heads",
    "dpt_features",
    "dpt_out_channels",
    "dpt_layers",
    "camera_head_kwargs",
    "mask_head",
    "mask_alpha",
    "mask_block",
    "mask_global_blocks",
    "mask_head_hidden",
    "dense_dynamics",
}
# Descriptive entries of the reference fixtures' configs that do not describe the network.
_IGNORED_FIELDS = {"seed", "input_shape", "name", "preset", "notes"}
_REQUIRED_FIELDS = _FIELDS - {
    "dpt_layers",
    "mask_head",
    "mask_alpha",
    "mask_block",
    "mask_global_blocks",
    "dense_dynamics",
}
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "mask_head": False,
    "mask_alpha": 0.0,
    "mask_head_hidden": 256,
    "camera_head_kwargs": {},
    "dense_dynamics": False,
}
_ACTIVATIONS = {"linear", "relu", "exp", "inv_log"}


_UPSTREAM_SCHEDULE_FIELDS = ("mask_hold_start", "mask_hold_end")


def mask_schedule(step: float, hold_start: float, hold_end: float) -> float:
    """PAGE-4D's mask on/off factor in [0, 1] at a training step (multiply by 64 for ``mask_alpha``).

    1 before ``hold_start``, 0 from ``hold_end`` on, a half-cosine decay in between. The released code
    evaluates it at step 0 in eval mode, so ``VGGT(mask_hold_start=h, mask_hold_end=e)`` means alpha 64 unless
    ``h <= 0`` and ``e <= 0``; configs giving these upstream arguments instead of ``mask_alpha`` map so.
    """
    if step < hold_start:
        return 1.0
    if step >= hold_end:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - hold_start) / (hold_end - hold_start)))


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _scaled_index(upstream_index: int, depth: int) -> int:
    """Map a 0-based upstream layer index (of 24) to the layer at the same relative depth of ``depth``."""
    return max(0, _round_half_up((upstream_index + 1) * depth / UPSTREAM_DEPTH) - 1)


def default_dpt_layers(depth: int) -> list[int]:
    """Aggregator layers read by the DPT heads: [4, 11, 17, 23] for depth 24, the same fractions otherwise."""
    return [_scaled_index(index, depth) for index in UPSTREAM_DPT_LAYERS]


def default_mask_block(depth: int) -> int:
    """Frame block after which the mask head runs: 9 for depth 24, the same fraction otherwise."""
    return _scaled_index(UPSTREAM_MASK_BLOCK, depth)


def default_mask_global_blocks(depth: int) -> list[int]:
    """[start, end) of the masked global blocks: [10, 20) for depth 24, the same fractions otherwise."""
    start = default_mask_block(depth) + 1
    end = max(start, _round_half_up(UPSTREAM_MASK_GLOBAL_BLOCKS[1] * depth / UPSTREAM_DEPTH))
    return [start, min(end, depth)]


def _require_int(config: Mapping[str, Any], key: str, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model config '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _require_number(
    config: Mapping[str, Any], key: str, minimum: float = -math.inf, allow_equal: bool = True
) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"model config '{key}' must be a finite number, got {value!r}")
    if value < minimum or (not allow_equal and value == minimum):
        relation = ">=" if allow_equal else ">"
        raise ValueError(f"model config '{key}' must be {relation} {minimum}, got {value!r}")
    return float(value)


def _validate_camera_kwargs(kwargs: Any, embed_dim: int) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"model config 'camera_head_kwargs' must be a dict, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - set(CAMERA_HEAD_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown camera_head_kwargs {unknown}; allowed: {sorted(CAMERA_HEAD_DEFAULTS)}")
    merged = {**CAMERA_HEAD_DEFAULTS, **kwargs}
    _require_int(merged, "trunk_depth", 1)
    heads = _require_int(merged, "num_heads", 1)
    _require_number(merged, "mlp_ratio", 0.0, allow_equal=False)
    if merged["init_values"] is not None:
        _require_number(merged, "init_values", 0.0, allow_equal=False)
    if (2 * embed_dim) % heads:
        raise ValueError(
            f"camera head width 2*embed_dim={2 * embed_dim} is not divisible by its num_heads={heads}"
        )
    for key in ("trans_act", "quat_act", "fl_act"):
        if merged[key] not in _ACTIVATIONS:
            raise ValueError(f"camera_head_kwargs '{key}' must be one of {sorted(_ACTIVATIONS)}")
    return dict(kwargs)


def _validate_layer_list(values: Any, key: str, depth: int, length: int) -> list[int]:
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise ValueError(f"model config '{key}' must be a list of {length} integers, got {values!r}")
    result = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= depth:
            raise ValueError(f"model config '{key}' entries must be integers in [0, {depth}], got {values!r}")
        result.append(value)
    return result


def resolve_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """Return a complete, validated configuration dict for a preset name or a (partial) config mapping.

    A mapping may name a base preset under ``"preset"`` and override any field. Without a preset, every size
    field of the fixture configs is required. Derived fields (``dpt_layers``, ``mask_block``,
    ``mask_global_blocks``) get depth-scaled defaults when absent. Unknown keys are ignored with a warning.

    Raises:
        ValueError: unknown preset name, missing or invalid field, or inconsistent sizes.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown model preset {config!r}; choose one of {sorted(PRESETS)}")
        merged: dict[str, Any] = copy.deepcopy(PRESETS[config])
    elif isinstance(config, Mapping):
        base_name = config.get("preset")
        if base_name is not None:
            if base_name not in PRESETS:
                raise ValueError(f"unknown model preset {base_name!r}; choose one of {sorted(PRESETS)}")
            merged = copy.deepcopy(PRESETS[base_name])
        else:
            merged = copy.deepcopy(_OPTIONAL_DEFAULTS)
        unknown = sorted(set(config) - _FIELDS - _IGNORED_FIELDS - set(_UPSTREAM_SCHEDULE_FIELDS))
        if unknown:
            warnings.warn(f"ignoring unknown model config keys {unknown}", stacklevel=2)
        merged.update({key: copy.deepcopy(value) for key, value in config.items() if key in _FIELDS})
        if "mask_alpha" not in config and any(key in config for key in _UPSTREAM_SCHEDULE_FIELDS):
            hold_start = _require_number(
                {"mask_hold_start": config.get("mask_hold_start", 0)}, "mask_hold_start"
            )
            hold_end = _require_number({"mask_hold_end": config.get("mask_hold_end", 0)}, "mask_hold_end")
            merged["mask_head"] = True
            merged["mask_alpha"] = PAGE4D_MASK_STRENGTH * mask_schedule(0, hold_start, hold_end)
    else:
        raise ValueError(f"model config must be a preset name or a dict, got {type(config).__name__}")

    missing = sorted(_REQUIRED_FIELDS - set(merged))
    if missing:
        raise ValueError(f"model config is missing {missing}; pass a preset name or a complete dict")

    patch = _require_int(merged, "patch_size", 1)
    img_size = _require_int(merged, "img_size", patch)
    if img_size % patch:
        raise ValueError(f"model config img_size={img_size} must be a multiple of patch_size={patch}")
    embed_dim = _require_int(merged, "embed_dim", 1)
    depth = _require_int(merged, "depth", 1)
    heads = _require_int(merged, "num_heads", 1)
    if embed_dim % heads or (embed_dim // heads) % 4:
        raise ValueError(
            f"embed_dim={embed_dim} / num_heads={heads} must give an integer head_dim divisible by 4 "
            "(2-D RoPE rotates two halves per axis)"
        )
    _require_number(merged, "mlp_ratio", 0.0, allow_equal=False)
    _require_int(merged, "num_register_tokens", 0)
    _require_number(merged, "rope_freq", 0.0)
    merged["qk_norm"] = bool(merged["qk_norm"])
    if merged["init_values"] is not None:
        _require_number(merged, "init_values", 0.0, allow_equal=False)
    _require_int(merged, "dino_depth", 1)
    dino_heads = _require_int(merged, "dino_num_heads", 1)
    if embed_dim % dino_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by dino_num_heads={dino_heads}")
    _require_int(merged, "dpt_features", 1)
    channels = merged["dpt_out_channels"]
    if (
        not isinstance(channels, (list, tuple))
        or len(channels) != 4
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    ):
        raise ValueError(f"model config 'dpt_out_channels' must be 4 positive integers, got {channels!r}")
    merged["dpt_out_channels"] = list(channels)
    merged["camera_head_kwargs"] = _validate_camera_kwargs(merged["camera_head_kwargs"], embed_dim)

    merged.setdefault("dpt_layers", default_dpt_layers(depth))
    merged["dpt_layers"] = _validate_layer_list(merged["dpt_layers"], "dpt_layers", depth - 1, 4)

    merged["mask_head"] = bool(merged.get("mask_head", False))
    merged["dense_dynamics"] = bool(merged.get("dense_dynamics", False))
    merged["mask_alpha"] = _require_number({"mask_alpha": merged.get("mask_alpha", 0.0)}, "mask_alpha", 0.0)
    merged.setdefault("mask_head_hidden", 256)
    _require_int(merged, "mask_head_hidden", 1)
    merged.setdefault("mask_block", default_mask_block(depth))
    merged.setdefault("mask_global_blocks", default_mask_global_blocks(depth))
    mask_block = _require_int(merged, "mask_block", 0)
    if mask_block >= depth:
        raise ValueError(f"model config mask_block={mask_block} must be < depth={depth}")
    start, end = _validate_layer_list(merged["mask_global_blocks"], "mask_global_blocks", depth, 2)
    if not mask_block <= start <= end:
        raise ValueError(
            f"model config mask_global_blocks={[start, end]} must satisfy mask_block <= start <= end "
            f"(mask_block={mask_block}): the mask is computed before the masked global blocks run"
        )
    merged["mask_global_blocks"] = [start, end]
    return {key: merged[key] for key in sorted(_FIELDS)}
