"""π³ configuration: the released preset, the fixture's size keys, validation.

A π³ configuration is a plain JSON-serialisable ``dict`` with ``"family": "pi3"`` and the size keys of the
reference fixture's ``config`` entry (``../shared/reference/pi3_small_ref.pt``):

=============================  ===============================================================================
``patch_size``                 ViT patch size (14)
``pos_type``                   ``"rope<freq>"``: 2-D RoPE of base frequency ``freq`` in the decoders (rope100)
``embed_dim``                  width of the DINOv2 encoder and of the alternating decoder (no projection)
``enc_img_size``               square image size of the encoder's position table (518: a 37 x 37 grid)
``enc_depth``                  DINOv2 blocks
``enc_num_heads``              DINOv2 attention heads
``enc_mlp_ratio``              DINOv2 MLP ratio
``enc_num_register_tokens``    DINOv2 register tokens (4)
``dec_depth``                  alternating decoder layers (even: frame attention, odd: global attention)
``dec_num_heads``              decoder attention heads
``dec_mlp_ratio``              decoder MLP ratio
``num_register_tokens``        per-frame register tokens of the decoder (5, the same for every frame)
``head_dec_embed_dim``         width of the point / confidence / camera transformer decoders
``head_dec_num_heads``         their heads
``head_dec_depth``             their blocks
``head_dec_mlp_ratio``         their MLP ratio (optional, 4 upstream)
``point_out_dim``              output width of the point and confidence decoders
``camera_out_dim``             output width of the camera decoder (= camera head width)
=============================  ===============================================================================

Preset ``"pi3"``: the released ``yyfz233/Pi3`` network (``Pi3()`` defaults, 958,696,732 parameters).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from typing import Any

FAMILY = "pi3"

PRESETS: dict[str, dict[str, Any]] = {
    "pi3": {
        "family": FAMILY,
        "patch_size": 14,
        "pos_type": "rope100",
        "embed_dim": 1024,
        "enc_img_size": 518,
        "enc_depth": 24,
        "enc_num_heads": 16,
        "enc_mlp_ratio": 4.0,
        "enc_num_register_tokens": 4,
        "dec_depth": 36,
        "dec_num_heads": 16,
        "dec_mlp_ratio": 4.0,
        "num_register_tokens": 5,
        "head_dec_embed_dim": 1024,
        "head_dec_num_heads": 16,
        "head_dec_depth": 5,
        "head_dec_mlp_ratio": 4.0,
        "point_out_dim": 1024,
        "camera_out_dim": 512,
    },
}
"""π³ presets accepted by :func:`resolve_config` and ``page4d_ros.model.build_model``."""

_INT_FIELDS = (
    "patch_size",
    "embed_dim",
    "enc_img_size",
    "enc_depth",
    "enc_num_heads",
    "enc_num_register_tokens",
    "dec_depth",
    "dec_num_heads",
    "num_register_tokens",
    "head_dec_embed_dim",
    "head_dec_num_heads",
    "head_dec_depth",
    "point_out_dim",
    "camera_out_dim",
)
_RATIO_FIELDS = ("enc_mlp_ratio", "dec_mlp_ratio", "head_dec_mlp_ratio")
_FIELDS = {"family", "pos_type", *_INT_FIELDS, *_RATIO_FIELDS}
_DEFAULTS = {"head_dec_mlp_ratio": 4.0, "pos_type": "rope100", "family": FAMILY}
# Entries of the fixture's config that describe how it was made, not the network.
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
_ROPE = re.compile(r"^rope(\d+(?:\.\d+)?)$")
_MINIMUM_DEC_DEPTH = 2  # the heads read the last frame layer and the last global layer


def is_pi3_config(config: Any) -> bool:
    """True when ``config`` names a π³ preset or is a mapping with ``family == "pi3"``."""
    if isinstance(config, str):
        return config in PRESETS
    if isinstance(config, Mapping):
        return config.get("family") == FAMILY or config.get("preset") in PRESETS
    return False


def rope_frequency(pos_type: str) -> float:
    """Base frequency of a ``"rope<freq>"`` position type (``"rope100"`` -> 100.0)."""
    match = _ROPE.match(str(pos_type))
    if match is None:
        raise ValueError(f"π³ config 'pos_type' must be 'rope<frequency>' (e.g. 'rope100'), got {pos_type!r}")
    return float(match.group(1))


def _positive_int(merged: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    value = merged[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"π³ config '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _divisible(width: int, heads: int, what: str, multiple: int = 1) -> None:
    if width % heads or (width // heads) % multiple:
        raise ValueError(
            f"π³ {what} width {width} / {heads} heads must give an integer head_dim"
            + (f" divisible by {multiple} (2-D RoPE)" if multiple > 1 else "")
        )


def resolve_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """A complete, validated π³ config for a preset name or a mapping (``preset`` as base, or every size).

    Raises:
        ValueError: unknown preset, missing or invalid field, inconsistent widths.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown π³ preset {config!r}; choose one of {sorted(PRESETS)}")
        merged: dict[str, Any] = {**_DEFAULTS, **copy.deepcopy(PRESETS[config])}
    elif isinstance(config, Mapping):
        base = config.get("preset")
        if base is not None and base not in PRESETS:
            raise ValueError(f"unknown π³ preset {base!r}; choose one of {sorted(PRESETS)}")
        merged = dict(_DEFAULTS)
        if base is not None:
            merged.update(copy.deepcopy(PRESETS[base]))
        unknown = sorted(set(config) - _FIELDS - _IGNORED_FIELDS)
        if unknown:
            warnings.warn(f"ignoring unknown π³ config keys {unknown}", stacklevel=2)
        merged.update({key: copy.deepcopy(value) for key, value in config.items() if key in _FIELDS})
    else:
        raise ValueError(f"π³ config must be a preset name or a dict, got {type(config).__name__}")
    if merged.get("family") != FAMILY:
        raise ValueError(f"π³ config 'family' must be {FAMILY!r}, got {merged.get('family')!r}")
    missing = sorted(_FIELDS - set(merged))
    if missing:
        raise ValueError(f"π³ config is missing {missing}; pass the preset 'pi3' or a complete dict")
    for key in _INT_FIELDS:
        _positive_int(merged, key, 0 if key == "num_register_tokens" else 1)
    for key in _RATIO_FIELDS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"π³ config '{key}' must be a positive number, got {value!r}")
        merged[key] = float(value)
    rope_frequency(merged["pos_type"])
    if merged["enc_img_size"] % merged["patch_size"]:
        raise ValueError(
            f"π³ config enc_img_size={merged['enc_img_size']} must be a multiple of "
            f"patch_size={merged['patch_size']}"
        )
    _divisible(merged["embed_dim"], merged["enc_num_heads"], "encoder")
    _divisible(merged["embed_dim"], merged["dec_num_heads"], "decoder", 4)
    _divisible(merged["head_dec_embed_dim"], merged["head_dec_num_heads"], "head decoder", 4)
    if merged["dec_depth"] < _MINIMUM_DEC_DEPTH:
        raise ValueError(f"π³ config dec_depth must be >= {_MINIMUM_DEC_DEPTH}, got {merged['dec_depth']}")
    return {key: merged[key] for key in sorted(_FIELDS)}
