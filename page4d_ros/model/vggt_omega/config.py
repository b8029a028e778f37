"""VGGT-Omega configuration: presets, validation and the family test used by the model-package dispatch.

A configuration is a plain JSON-serialisable ``dict`` with ``"family": "vggt-omega"`` and the size keys of the
reference fixture's ``config`` entry (the names of the upstream ``VGGTOmega`` constructor arguments):

================================  ============================================================================
``patch_size``                    patch side in pixels (16)
``embed_dim``                     token width of the DINOv3 encoder and of the aggregator
``depth``                         frame / inter-frame block pairs of the aggregator
``num_heads``                     aggregator attention heads
``mlp_ratio``                     aggregator MLP ratio
``num_register_tokens``           register tokens per frame (besides the camera token)
``register_attention_block_indices``  steps whose inter-frame block attends over special tokens only
``cached_layer_indices``          steps whose ``[frame, inter-frame]`` tokens are kept (the last feeds the
                                  camera and text heads)
``pe_depth`` / ``pe_num_heads``   DINOv3 patch-encoder depth and heads
``pe_n_storage_tokens``           DINOv3 storage (register) tokens
``dense_features``                dense-head fusion width
``dense_out_channels``            dense-head per-level projection widths (4)
``dense_intermediate_layer_idx``  the 4 cached layers the dense head reads
``enable_alignment``              build the text-alignment head (the ``..._256_text`` checkpoint)
``image_resolution``              our addition: the 'balanced' preprocessing resolution of the weights
                                  (about ``(r/16)^2`` tokens per frame); 512, 256 with the text head
================================  ============================================================================

The camera and text heads keep upstream's hard-coded 4 blocks of 16 heads at width ``2 * embed_dim``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

FAMILY = "vggt-omega"
"""The ``family`` value of VGGT-Omega configs and the ``family`` class attribute of :class:`VGGTOmega`."""

HEAD_BLOCKS = 4
HEAD_NUM_HEADS = 16
LAYER_SCALE_INIT = 1e-5
DEFAULT_RESOLUTION = 512
TEXT_RESOLUTION = 256

_FULL: dict[str, Any] = {
    "family": FAMILY,
    "patch_size": 16,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "mlp_ratio": 4.0,
    "num_register_tokens": 16,
    "register_attention_block_indices": [2, 6, 9, 14, 20],
    "cached_layer_indices": [4, 11, 17, 23],
    "pe_depth": 24,
    "pe_num_heads": 16,
    "pe_n_storage_tokens": 4,
    "dense_features": 256,
    "dense_out_channels": [256, 512, 1024, 1024],
    "dense_intermediate_layer_idx": [4, 11, 17, 23],
    "enable_alignment": False,
    "image_resolution": DEFAULT_RESOLUTION,
}

PRESETS: dict[str, dict[str, Any]] = {
    "vggt-omega": dict(_FULL),
    "vggt-omega-text": {**_FULL, "enable_alignment": True, "image_resolution": TEXT_RESOLUTION},
}
"""``vggt-omega``: ``vggt_omega_1b_512.pt``; ``vggt-omega-text``: ``vggt_omega_1b_256_text.pt``."""

_SIZE_FIELDS = (
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "num_register_tokens",
    "register_attention_block_indices",
    "cached_layer_indices",
    "pe_depth",
    "pe_num_heads",
    "pe_n_storage_tokens",
    "dense_features",
    "dense_out_channels",
    "dense_intermediate_layer_idx",
)
_FIELDS = {"family", *_SIZE_FIELDS, "enable_alignment", "image_resolution"}
# Descriptive entries of the reference fixture's config that do not change the network.
_IGNORED_FIELDS = {
    "upstream_class",
    "upstream_commit",
    "final_layer_weight_scale",
    "seed",
    "fixed_hardcoded",
    "preset",
    "name",
    "notes",
}


def is_vggt_omega_config(config: Any) -> bool:
    """Whether ``config`` (a preset name or a dict) describes a VGGT-Omega network."""
    if isinstance(config, str):
        return config in PRESETS
    if isinstance(config, Mapping):
        return config.get("family") == FAMILY or config.get("preset") in PRESETS
    return False


def preset_for_keys(keys: Any) -> str | None:
    """The VGGT-Omega preset a released state_dict's keys belong to, or None for another family."""
    names = set(keys)
    if "aggregator.rope_embed.periods" not in names:
        return None
    text = any(name.startswith("text_alignment_head.") for name in names)
    return "vggt-omega-text" if text else "vggt-omega"


def _integer(config: Mapping[str, Any], key: str, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"vggt-omega config '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _index_list(config: Mapping[str, Any], key: str, depth: int, length: int | None = None) -> list[int]:
    values = config[key]
    if not isinstance(values, (list, tuple)) or (length is not None and len(values) != length):
        size = f"{length} " if length is not None else ""
        raise ValueError(f"vggt-omega config '{key}' must be a list of {size}integers, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < depth:
            raise ValueError(f"vggt-omega config '{key}' entries must be in [0, {depth}), got {values!r}")
    return [int(value) for value in values]


def _check_heads(width: int, heads: int, what: str, rope: bool) -> None:
    if width % heads:
        raise ValueError(f"vggt-omega {what} width {width} is not divisible by its {heads} heads")
    if rope and (width // heads) % 4:
        raise ValueError(
            f"vggt-omega {what} head_dim {width // heads} must be divisible by 4 (2-D RoPE over two axes)"
        )


def resolve_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """Return a complete, validated VGGT-Omega config for a preset name or a dict.

    A dict may name a base preset under ``"preset"`` and override fields; without one every size key of the
    fixture config is required. ``enable_alignment`` defaults to False and ``image_resolution`` to 512 (256
    with the text head). Fixture-only entries (``upstream_class``, ``seed``, ...) are ignored; other unknown
    keys are ignored with a warning.

    Raises:
        ValueError: unknown preset, missing or invalid field, inconsistent sizes.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown vggt-omega preset {config!r}; choose one of {sorted(PRESETS)}")
        merged: dict[str, Any] = copy.deepcopy(PRESETS[config])
    elif isinstance(config, Mapping):
        base = config.get("preset")
        if base is not None and base not in PRESETS:
            raise ValueError(f"unknown vggt-omega preset {base!r}; choose one of {sorted(PRESETS)}")
        merged = copy.deepcopy(PRESETS[base]) if base is not None else {}
        if "enable_alignment" in config and "image_resolution" not in config:
            merged.pop("image_resolution", None)
        unknown = sorted(set(config) - _FIELDS - _IGNORED_FIELDS)
        if unknown:
            warnings.warn(f"ignoring unknown vggt-omega config keys {unknown}", stacklevel=2)
        merged.update({key: copy.deepcopy(value) for key, value in config.items() if key in _FIELDS})
    else:
        raise ValueError(f"model config must be a preset name or a dict, got {type(config).__name__}")
    if merged.get("family", FAMILY) != FAMILY:
        raise ValueError(f"vggt-omega config has family {merged['family']!r}")
    merged["family"] = FAMILY
    missing = [key for key in _SIZE_FIELDS if key not in merged]
    if missing:
        raise ValueError(f"vggt-omega config is missing {missing}; pass a preset name or a complete dict")

    _integer(merged, "patch_size", 1)
    embed_dim = _integer(merged, "embed_dim", 1)
    depth = _integer(merged, "depth", 1)
    _check_heads(embed_dim, _integer(merged, "num_heads", 1), "aggregator", rope=True)
    _check_heads(embed_dim, _integer(merged, "pe_num_heads", 1), "patch encoder", rope=True)
    _check_heads(2 * embed_dim, HEAD_NUM_HEADS, "camera/text head", rope=False)
    ratio = merged["mlp_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 < ratio < math.inf):
        raise ValueError(f"vggt-omega config 'mlp_ratio' must be a positive number, got {ratio!r}")
    merged["mlp_ratio"] = float(ratio)
    _integer(merged, "num_register_tokens", 0)
    _integer(merged, "pe_depth", 1)
    _integer(merged, "pe_n_storage_tokens", 0)
    _integer(merged, "dense_features", 1)
    channels = merged["dense_out_channels"]
    if (
        not isinstance(channels, (list, tuple))
        or len(channels) != 4
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    ):
        raise ValueError(f"vggt-omega config 'dense_out_channels' must be 4 positive ints, got {channels!r}")
    merged["dense_out_channels"] = [int(c) for c in channels]
    merged["register_attention_block_indices"] = sorted(
        set(_index_list(merged, "register_attention_block_indices", depth))
    )
    cached = _index_list(merged, "cached_layer_indices", depth)
    if not cached or cached != sorted(set(cached)):
        raise ValueError(f"vggt-omega config 'cached_layer_indices' must be increasing, got {cached!r}")
    merged["cached_layer_indices"] = cached
    dense = _index_list(merged, "dense_intermediate_layer_idx", depth, 4)
    if not set(dense) <= set(cached):
        raise ValueError(
            f"vggt-omega config 'dense_intermediate_layer_idx' {dense} must be cached layers ({cached})"
        )
    merged["dense_intermediate_layer_idx"] = dense
    merged["enable_alignment"] = bool(merged.get("enable_alignment", False))
    merged.setdefault(
        "image_resolution", TEXT_RESOLUTION if merged["enable_alignment"] else DEFAULT_RESOLUTION
    )
    _integer(merged, "image_resolution", 1)
    return {key: merged[key] for key in sorted(_FIELDS)}
