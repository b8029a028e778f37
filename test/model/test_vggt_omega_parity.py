"""VGGT-Omega against the upstream reference fixture and key lists (../shared/docs/vggt_omega_spec.md).

Parity: float64 outputs and intermediate tokens within 1e-6 of ``vggt_omega_small_ref.pt``; float32 within
a small multiple of the fixture's own fp32-vs-fp64 spread. Structure: the full-size presets built on the
meta device have exactly the keys, shapes and order of the released checkpoints' key lists. Loading: the
released formats go through ``load_checkpoint`` strictly, with the errors of the VGGT path.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from page4d_ros.model import (
    CheckpointError,
    VGGTOmega,
    build_model,
    load_checkpoint,
    pose_encoding_to_extri_intri,
    save_checkpoint,
)
from page4d_ros.model.vggt_omega import BalancedSize, resolve_config

FP64_TOLERANCE = 1e-6
# Ours in fp32 against the upstream fp64 result may differ by a few times the upstream fp32-vs-fp64 spread
# (other summation orders); a wrong operation is orders of magnitude above it.
FP32_SPREAD_FACTOR = 4.0
OUTPUT_KEYS = (
    "camera_and_register_tokens",
    "pose_enc",
    "depth",
    "depth_conf",
    "text_alignment_embedding",
    "text_alignment_token",
)
FULL_KEYS = {"vggt-omega": 1411, "vggt-omega-text": 1482}
FULL_PARAMETERS = {"vggt-omega": 1_143_814_185, "vggt-omega-text": 1_349_473_321}  # spec section 9
KEY_LISTS = {
    "vggt-omega": "vggt_omega_state_dict.tsv",
    "vggt-omega-text": "vggt_omega_text_alignment_state_dict.tsv",
}


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((actual.double() - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def omega_ref(shared_dir: Path) -> dict:
    path = shared_dir / "reference" / "vggt_omega_small_ref.pt"
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is absent")
    return torch.load(path, weights_only=False)


def _small_model(ref: dict, dtype: torch.dtype) -> VGGTOmega:
    model = build_model({"family": "vggt-omega", **ref["config"]})
    model.load_state_dict(ref["state_dict"], strict=True)
    return model.to(dtype)


@pytest.fixture(scope="module")
def fp64_outputs(omega_ref: dict) -> tuple[VGGTOmega, dict]:
    model = _small_model(omega_ref, torch.float64)
    with torch.inference_mode():
        return model, model(omega_ref["inputs"])


def test_fixture_config_builds_without_warnings(omega_ref):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model({"family": "vggt-omega", **omega_ref["config"]})
    assert isinstance(model, VGGTOmega) and model.family == "vggt-omega"
    assert model.config["enable_alignment"] and model.text_alignment_head is not None
    assert set(model.state_dict()) == set(omega_ref["state_dict"])


def test_fp64_outputs_match_upstream(omega_ref, fp64_outputs):
    _, outputs = fp64_outputs
    reference = omega_ref["outputs_fp64"]
    for key in OUTPUT_KEYS:
        assert outputs[key].shape == reference[key].shape, key
        assert outputs[key].dtype == torch.float64, key
        assert _rel(outputs[key], reference[key]) <= FP64_TOLERANCE, key
    assert torch.equal(outputs["images"], reference["images"])


def test_fp64_intermediate_tokens_match_upstream(omega_ref, fp64_outputs):
    model, _ = fp64_outputs
    reference = omega_ref["outputs_fp64"]
    images = omega_ref["inputs"]
    with torch.inference_mode():
        flat = model.aggregator.normalise(images).reshape(-1, *images.shape[2:])
        features = model.aggregator.patch_embed.forward_features(flat)
        cached = model.aggregator(images, set(model.config["cached_layer_indices"])).tokens
    for name in ("x_norm_patchtokens", "x_norm_clstoken", "x_storage_tokens"):
        assert _rel(features[name], reference[f"inter.patch_embed.{name}"]) <= FP64_TOLERANCE, name
    layers = [int(key.rsplit("layer", 1)[1]) for key in reference if key.startswith("inter.aggregator.")]
    assert sorted(layers) == model.config["cached_layer_indices"] == sorted(cached)
    for layer in layers:
        assert _rel(cached[layer], reference[f"inter.aggregator.layer{layer}"]) <= FP64_TOLERANCE, layer


def test_pose_encoding_decodes_to_the_upstream_cameras(omega_ref, fp64_outputs):
    _, outputs = fp64_outputs
    reference = omega_ref["outputs_fp64"]
    extrinsics, intrinsics = pose_encoding_to_extri_intri(outputs["pose_enc"], omega_ref["inputs"].shape[-2:])
    assert _rel(extrinsics, reference["derived.extrinsics"]) <= FP64_TOLERANCE
    # Upstream allocates the intrinsics in float32, hence ~1e-7 relative here.
    assert _rel(intrinsics, reference["derived.intrinsics"]) <= FP64_TOLERANCE


def test_fp32_is_within_the_upstream_fp32_spread(omega_ref):
    model = _small_model(omega_ref, torch.float32)
    with torch.inference_mode():
        outputs = model(omega_ref["inputs"].float())
    fp64, fp32 = omega_ref["outputs_fp64"], omega_ref["outputs_fp32"]
    for key in OUTPUT_KEYS:
        assert outputs[key].dtype == torch.float32, key
        spread = _rel(fp32[key], fp64[key])
        assert 0 < spread < 1e-5, key
        assert _rel(outputs[key], fp64[key]) <= FP32_SPREAD_FACTOR * spread, key


def test_heads_run_in_float32_under_autocast_and_a_bf16_model_runs(omega_ref):
    model = _small_model(omega_ref, torch.float32)
    images = omega_ref["inputs"].float()
    reference = omega_ref["outputs_fp64"]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(images)
    for key in OUTPUT_KEYS:
        assert outputs[key].dtype == torch.float32, key  # the heads cast their input tokens to float32
        assert _rel(outputs[key], reference[key]) < 0.03, key  # bf16 aggregator: 3e-3 to 7e-3 measured
    half = _small_model(omega_ref, torch.bfloat16)
    with torch.inference_mode():
        outputs = half(images)
    assert outputs["depth"].dtype == torch.bfloat16
    assert _rel(outputs["depth"], reference["depth"]) < 0.05  # 1.2e-2 measured


def test_batched_sequences_are_independent_and_use_their_own_reference_frame(omega_ref):
    """Batch 2 equals two batch-1 runs; each sequence's first frame gets the reference tokens."""
    model = _small_model(omega_ref, torch.float64)
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(2, 4, 3, 64, 96, generator=generator, dtype=torch.float64)
    with torch.inference_mode():
        together = model(images)
        apart = [model(images[i : i + 1]) for i in range(2)]
        reversed_frames = model(images[:1].flip(1))
    for key in OUTPUT_KEYS:
        joined = torch.cat([part[key] for part in apart])
        assert _rel(together[key], joined) <= 1e-12, key
    assert together["depth"].shape == (2, 4, 64, 96, 1) and together["depth_conf"].shape == (2, 4, 64, 96)
    # Frame 0 is the world frame: another first frame changes the other frames' poses.
    assert _rel(reversed_frames["pose_enc"][0, -1], together["pose_enc"][0, 0]) > 1e-6


def test_images_must_be_multiples_of_the_patch_size(omega_ref):
    model = _small_model(omega_ref, torch.float32)
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        model(torch.rand(1, 2, 3, 64, 56))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros(1, 2, 3, 64, 64, dtype=torch.uint8))


def _read_key_list(shared_dir: Path, name: str) -> dict[str, tuple[int, ...]]:
    path = shared_dir / "reference" / name
    if not path.is_file():
        pytest.skip(f"key list {path} is absent")
    rows = [row for row in path.read_text().splitlines() if row and not row.startswith("#")][1:]
    shapes = {}
    for row in rows:
        key, shape = row.split("\t")[:2]
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


@pytest.mark.parametrize("preset", sorted(KEY_LISTS))
def test_full_size_keys_shapes_and_order_equal_the_released_lists(shared_dir, preset):
    official = _read_key_list(shared_dir, KEY_LISTS[preset])
    model = build_model(preset, device="meta")
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert len(official) == FULL_KEYS[preset]
    assert list(ours) == list(official)
    assert ours == official
    assert sum(parameter.numel() for parameter in model.parameters()) == FULL_PARAMETERS[preset]
    state = {key: torch.empty(shape, device="meta") for key, shape in official.items()}
    result = build_model(preset, device="meta").load_state_dict(state, strict=True, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_presets_and_config_validation():
    assert resolve_config("vggt-omega")["image_resolution"] == 512
    text = resolve_config("vggt-omega-text")
    assert text["enable_alignment"] and text["image_resolution"] == 256
    assert resolve_config({"preset": "vggt-omega", "enable_alignment": True})["image_resolution"] == 256
    with pytest.raises(ValueError, match="missing"):
        build_model({"family": "vggt-omega", "embed_dim": 64})
    sizes = resolve_config("vggt-omega")
    with pytest.raises(ValueError, match="cached layers"):
        build_model({**sizes, "dense_intermediate_layer_idx": [4, 11, 17, 22]}, device="meta")
    with pytest.raises(ValueError, match="divisible"):
        build_model({**sizes, "num_heads": 7}, device="meta")
    with pytest.warns(UserWarning, match="unknown vggt-omega config keys"):
        build_model({**sizes, "depth_typo": 3}, device="meta")


def test_fresh_model_fills_the_fixed_buffers(omega_ref):
    model = build_model(
        {
            **resolve_config("vggt-omega"),
            "depth": 2,
            "pe_depth": 1,
            "embed_dim": 64,
            "num_heads": 4,
            "pe_num_heads": 4,
            "num_register_tokens": 2,
            "register_attention_block_indices": [1],
            "cached_layer_indices": [0, 1],
            "dense_intermediate_layer_idx": [0, 0, 1, 1],
            "dense_features": 16,
            "dense_out_channels": [8, 8, 16, 16],
        }
    )
    state = model.state_dict()
    masks = [value for key, value in state.items() if key.endswith("bias_mask")]
    assert masks and all(
        torch.equal(m, torch.tensor([1.0] * 64 + [0.0] * 64 + [1.0] * 64)) for m in masks[:1]
    )
    assert all(not torch.isnan(m).any() for m in masks)
    # Same head width (64 / 4 heads) as the fixture, whose buffers upstream filled.
    for key in ("aggregator.rope_embed.periods", "aggregator.patch_embed.rope_embed.periods"):
        assert torch.allclose(state[key].double(), omega_ref["state_dict"][key], rtol=1e-7), key
    with torch.inference_mode():
        outputs = model(torch.rand(1, 3, 3, 48, 64))
    assert all(torch.isfinite(outputs[key]).all() for key in ("pose_enc", "depth", "depth_conf"))


@pytest.fixture
def omega_state(omega_ref) -> dict[str, torch.Tensor]:
    return {key: value.float() for key, value in omega_ref["state_dict"].items()}


@pytest.fixture
def omega_config(omega_ref) -> dict:
    return {"family": "vggt-omega", **omega_ref["config"]}


def _assert_loaded(model, state):
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key in ("aggregator.camera_token", "aggregator.rope_embed.periods", "dense_head.proj_conf.bias"):
        assert torch.equal(loaded[key], state[key]), key


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_load_checkpoint_released_formats(tmp_path, omega_state, omega_config, wrapper):
    prefixed = {"module." + key: value for key, value in omega_state.items()}
    content = omega_state if wrapper is None else {wrapper: prefixed, "epoch": 3}
    path = tmp_path / "vggt_omega.pt"
    torch.save(content, path)
    model, report = load_checkpoint(path, omega_config)
    assert isinstance(model, VGGTOmega) and not model.training
    _assert_loaded(model, omega_state)
    assert report.loaded_keys == len(omega_state) and report.skipped_keys == []
    assert report.wrapper_key == wrapper
    assert report.stripped_prefixes == ([] if wrapper is None else ["module."])


def test_load_checkpoint_errors_name_the_keys(tmp_path, omega_state, omega_config):
    renamed = dict(omega_state)
    renamed["dense_head.proj.weight_renamed"] = renamed.pop("dense_head.proj.weight")
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): dense_head\.proj\.weight.*renamed"):
        load_checkpoint(tmp_path / "renamed.pt", omega_config)
    no_text = {k: v for k, v in omega_state.items() if not k.startswith("text_alignment_head.")}
    torch.save(no_text, tmp_path / "no_text.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): text_alignment_head\."):
        load_checkpoint(tmp_path / "no_text.pt", omega_config)
    model, _ = load_checkpoint(tmp_path / "no_text.pt", {**omega_config, "enable_alignment": False})
    assert model.text_alignment_head is None
    wrong = dict(omega_state)
    wrong["aggregator.camera_token"] = torch.zeros(1, 2, 1, 32)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong shape.*aggregator\.camera_token"):
        load_checkpoint(tmp_path / "wrong.pt", omega_config)
    # Without a config the keys say VGGT-Omega (text), but the small sizes do not fit the full preset.
    torch.save(omega_state, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="'vggt-omega-text' preset"):
        load_checkpoint(tmp_path / "bare.pt")


def test_safetensors_round_trip_carries_the_family(tmp_path, omega_ref, omega_state, omega_config):
    model, _ = load_checkpoint(_save_pt(tmp_path, omega_state), omega_config)
    path = save_checkpoint(model, tmp_path / "omega.safetensors", inference={"image_resolution": 64})
    loaded, report = load_checkpoint(path)
    assert isinstance(loaded, VGGTOmega) and report.config_source == "file metadata"
    assert report.config == model.config and report.inference == {"image_resolution": 64}
    _assert_loaded(loaded, omega_state)
    bare = tmp_path / "bare.safetensors"
    save_file(omega_state, str(bare), metadata={"page4d_ros.config": json.dumps(omega_config)})
    assert isinstance(load_checkpoint(bare)[0], VGGTOmega)
    with torch.inference_mode():
        outputs = loaded(omega_ref["inputs"].float())
    assert _rel(outputs["depth"], omega_ref["outputs_fp64"]["depth"]) < 1e-5


def _save_pt(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    return path


def _write_shared_storage_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    largest = max(torch.Size(shape).numel() for shape in shapes.values())
    buffer = torch.randn(largest, generator=torch.Generator().manual_seed(0)) * 0.02
    torch.save({key: buffer[: torch.Size(shape).numel()].view(shape) for key, shape in shapes.items()}, path)


@pytest.mark.slow
def test_full_size_file_without_config_is_recognised_by_its_keys(shared_dir, tmp_path):
    official = _read_key_list(shared_dir, KEY_LISTS["vggt-omega-text"])
    path = tmp_path / "vggt_omega_1b_256_text.pt"
    _write_shared_storage_checkpoint(path, official)
    model, report = load_checkpoint(path)
    assert report.config_source == "inferred from keys (vggt-omega-text)"
    assert isinstance(model, VGGTOmega) and report.loaded_keys == FULL_KEYS["vggt-omega-text"]
    with torch.inference_mode():
        outputs = model(torch.rand(1, 2, 3, 32, 48))
    assert outputs["pose_enc"].shape == (1, 2, 9) and outputs["depth"].shape == (1, 2, 32, 48, 1)
    assert outputs["text_alignment_embedding"].shape == (1, 2048)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (640, 480, 592, 448)),
        ((1920, 1080), (1920, 1080, 688, 384)),
        ((1000, 300), (600, 300, 720, 368)),  # H/W 0.3: cropped to 0.5
        ((100, 300), (100, 200, 368, 720)),  # H/W 3: cropped to 2
        ((512, 512), (512, 512, 512, 512)),
    ],
)
def test_balanced_size_rule(size, expected):
    # Worked by hand from spec section 1: n = 1024 patches, wp = round(sqrt(n / a)), hp = round(n / wp_exact).
    assert BalancedSize(512)(*size) == expected


def test_balanced_size_rule_text_resolution_and_limits():
    assert BalancedSize(256)(640, 480) == (640, 480, 288, 224)  # n = 256: wp 18.48 -> 18, hp 13.86 -> 14
    with pytest.raises(ValueError, match="positive"):
        BalancedSize(512)(0, 10)
