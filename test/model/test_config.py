"""Model configuration: presets, derived layer indices, validation."""

from __future__ import annotations

import pytest
import torch

from page4d_ros.model import PRESETS, build_model, resolve_config
from page4d_ros.model.config import (
    default_dpt_layers,
    default_mask_block,
    default_mask_global_blocks,
    mask_schedule,
)


def test_depth_24_defaults_reproduce_upstream_indices():
    assert default_dpt_layers(24) == [4, 11, 17, 23]
    assert default_mask_block(24) == 9
    assert default_mask_global_blocks(24) == [10, 20]
    for preset in ("vggt-1b", "page4d-nomask", "page4d-mask"):
        config = resolve_config(preset)
        assert config["dpt_layers"] == [4, 11, 17, 23]
        assert config["mask_block"] == 9
        assert config["mask_global_blocks"] == [10, 20]


def test_indices_scale_with_depth():
    # Same relative depth: layer (i+1)*d/24 - 1 rounded half up.
    assert default_dpt_layers(8) == [1, 3, 5, 7]
    assert default_mask_block(8) == 2
    assert default_mask_global_blocks(8) == [3, 7]
    assert default_dpt_layers(12) == [2, 5, 8, 11]
    assert default_mask_global_blocks(12) == [5, 10]
    for depth in range(1, 30):
        layers = default_dpt_layers(depth)
        assert all(0 <= layer < depth for layer in layers) and layers[-1] == depth - 1
        start, end = default_mask_global_blocks(depth)
        assert default_mask_block(depth) < start <= end <= depth


def test_preset_mask_strengths():
    assert resolve_config("vggt-1b")["mask_head"] is False
    assert resolve_config("page4d-nomask")["mask_head"] is True
    assert resolve_config("page4d-nomask")["mask_alpha"] == 0.0
    assert resolve_config("page4d-mask")["mask_alpha"] == 64.0
    assert set(PRESETS) == {"vggt-1b", "page4d-nomask", "page4d-mask", "page4d-small"}


def test_page4d_small_is_a_few_million_parameters_and_runs_at_224():
    model = build_model("page4d-small")
    parameters = sum(p.numel() for p in model.parameters())
    assert 2_000_000 < parameters < 10_000_000
    with torch.inference_mode():
        outputs = model(torch.rand(1, 1, 3, 224, 224), compute_points=False)
    assert outputs["depth"].shape == (1, 1, 224, 224, 1)
    assert outputs["dynamics_map"].shape == (1, 1, 16, 16)
    assert torch.isfinite(outputs["pose_enc"]).all() and torch.isfinite(outputs["depth"]).all()


def test_fixture_style_dict_and_preset_overrides(vggt_ref):
    config = resolve_config(vggt_ref["config"])  # has descriptive 'seed' and 'input_shape' entries
    assert config["embed_dim"] == 64 and config["mask_head"] is False
    overridden = resolve_config({"preset": "page4d-small", "mask_alpha": 0, "depth": 12})
    assert overridden["depth"] == 12 and overridden["mask_alpha"] == 0.0
    assert overridden["dpt_layers"] == [2, 5, 8, 11]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("vggt-2b", "unknown model preset"),
        (42, "preset name or a dict"),
        ({"embed_dim": 64}, "missing"),
        ({"preset": "page4d-small", "num_heads": 3}, "head_dim"),
        ({"preset": "page4d-small", "img_size": 100}, "multiple of patch_size"),
        ({"preset": "page4d-small", "depth": 0}, "depth"),
        ({"preset": "page4d-small", "mask_alpha": -1}, "mask_alpha"),
        ({"preset": "page4d-small", "mask_alpha": float("nan")}, "mask_alpha"),
        ({"preset": "page4d-small", "dpt_layers": [0, 1, 2]}, "dpt_layers"),
        ({"preset": "page4d-small", "dpt_layers": [0, 1, 2, 8]}, "dpt_layers"),
        ({"preset": "page4d-small", "mask_block": 5, "mask_global_blocks": [3, 7]}, "mask_block <= start"),
        ({"preset": "page4d-small", "camera_head_kwargs": {"depth": 2}}, "camera_head_kwargs"),
        ({"preset": "page4d-small", "camera_head_kwargs": {"num_heads": 3}}, "divisible"),
        ({"preset": "page4d-small", "dpt_out_channels": [32, 64, 128]}, "dpt_out_channels"),
        ({"preset": "vggt-1b", "mask_hold_start": "soon"}, "mask_hold_start"),
    ],
)
def test_invalid_configs_raise_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_unusable_devices_raise_value_error():
    with pytest.raises(ValueError, match="invalid device"):
        build_model("page4d-small", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            build_model("page4d-small", device="cuda")


def test_unknown_keys_warn():
    with pytest.warns(UserWarning, match="embedding_dim"):
        resolve_config({"preset": "page4d-small", "embedding_dim": 3})


def test_upstream_mask_schedule_arguments_map_to_mask_alpha():
    # Released eval settings: nomask uses hold = end = 0, mask uses hold > 0 (page4d_spec.md section 2.1).
    nomask = resolve_config({"preset": "vggt-1b", "mask_hold_start": 0, "mask_hold_end": 0})
    mask = resolve_config({"preset": "vggt-1b", "mask_hold_start": 6000, "mask_hold_end": 10000})
    assert nomask["mask_head"] and nomask["mask_alpha"] == 0.0
    assert mask["mask_head"] and mask["mask_alpha"] == 64.0
    explicit = resolve_config({"preset": "vggt-1b", "mask_hold_start": 5, "mask_alpha": 3.0})
    assert explicit["mask_alpha"] == 3.0


def test_mask_schedule_values():
    assert mask_schedule(0, 6000, 10000) == 1.0
    assert mask_schedule(8000, 6000, 10000) == pytest.approx(0.5)  # cos(pi/2) midway
    assert mask_schedule(10000, 6000, 10000) == 0.0
    assert mask_schedule(0, 0, 0) == 0.0
