"""Checkpoint loading and saving on files written here (formats, strictness, HF cache, digests, dtypes)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from page4d_ros.model import CheckpointError, build_model, load_checkpoint, save_checkpoint

TRACK_KEYS = {
    "track_head.tracker.fmap_norm.weight": torch.ones(4),
    "track_head.feature_extractor.x": torch.ones(2),
}


class _NotATensor:
    """A pickled object of this class must never be unpickled by the loader."""


@pytest.fixture
def small_state(vggt_ref) -> dict[str, torch.Tensor]:
    return dict(vggt_ref["state_dict"])


@pytest.fixture
def small_config(vggt_ref) -> dict:
    return dict(vggt_ref["config"])


def _assert_weights_equal(model, state):
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key in (
        "aggregator.camera_token",
        "aggregator.frame_blocks.3.attn.q_norm.weight",
        "depth_head.norm.bias",
    ):
        assert torch.equal(loaded[key].float(), state[key].float()), key


def test_bare_state_dict_pt(tmp_path, small_state, small_config):
    path = tmp_path / "model.pt"
    torch.save(small_state, path)
    model, report = load_checkpoint(path, small_config)
    _assert_weights_equal(model, small_state)
    assert not model.training
    assert report.file_format == "pt" and report.wrapper_key is None
    assert report.loaded_keys == len(small_state) and report.skipped_keys == []
    assert report.config_source == "argument" and report.config["embed_dim"] == 64


def test_wrapped_prefixed_with_extras_and_track_head(tmp_path, small_state, small_config):
    prefixed = {"module." + key: value for key, value in {**small_state, **TRACK_KEYS}.items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": prefixed, "optimizer": {"state": {}}, "prev_epoch": 3, "steps": 10}, path)
    model, report = load_checkpoint(path, small_config)
    _assert_weights_equal(model, small_state)
    assert report.wrapper_key == "model"
    assert report.ignored_entries == ["optimizer", "prev_epoch", "steps"]
    assert report.stripped_prefixes == ["module."]
    assert report.skipped_keys == sorted(TRACK_KEYS)


def test_legacy_non_zip_pickle_is_read_without_mmap(tmp_path, small_state, small_config):
    path = tmp_path / "legacy.pt"
    torch.save(small_state, path, _use_new_zipfile_serialization=False)
    model, _ = load_checkpoint(path, small_config)
    _assert_weights_equal(model, small_state)


def test_renamed_key_is_named(tmp_path, small_state, small_config):
    state = dict(small_state)
    state["aggregator.frame_blocks.7.attn.qnorm.weight"] = state.pop(
        "aggregator.frame_blocks.7.attn.q_norm.weight"
    )
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, small_config)
    message = str(error.value)
    assert "aggregator.frame_blocks.7.attn.qnorm.weight" in message
    assert "aggregator.frame_blocks.7.attn.q_norm.weight" in message
    assert "renamed" in message


def test_missing_unexpected_and_wrong_shape_keys(tmp_path, small_state, small_config):
    missing = dict(small_state)
    del missing["camera_head.embed_pose.bias"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): camera_head.embed_pose.bias"):
        load_checkpoint(tmp_path / "missing.pt", small_config)

    torch.save({**small_state, "point_head.extra.weight": torch.zeros(1)}, tmp_path / "unexpected.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): point_head.extra.weight"):
        load_checkpoint(tmp_path / "unexpected.pt", small_config)

    wrong = {**small_state, "camera_head.embed_pose.bias": torch.zeros(7)}
    torch.save(wrong, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"camera_head.embed_pose.bias \(7,\)"):
        load_checkpoint(tmp_path / "shape.pt", small_config)


def test_mask_head_keys_need_a_page4d_config(tmp_path, page4d_state_dict, small_config):
    torch.save({"model": page4d_state_dict}, tmp_path / "page4d.pt")
    with pytest.raises(CheckpointError, match="page4d-nomask"):
        load_checkpoint(tmp_path / "page4d.pt", small_config)
    model, _ = load_checkpoint(tmp_path / "page4d.pt", {**small_config, "mask_head": True, "mask_alpha": 64})
    assert model.has_mask_head and model.mask_alpha == 64.0


def test_without_config_a_small_file_cannot_be_inferred(tmp_path, small_state):
    torch.save(small_state, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match="pass config="):
        load_checkpoint(tmp_path / "small.pt")


def test_safetensors_round_trip_is_self_describing(tmp_path, page4d_state_dict, page4d_ref):
    model = build_model({**page4d_ref["config"], "mask_head": True, "mask_alpha": 64})
    model.load_state_dict(page4d_state_dict)
    path = save_checkpoint(model, tmp_path / "sub" / "small.safetensors")
    loaded, report = load_checkpoint(path)
    assert report.file_format == "safetensors" and report.config_source == "file metadata"
    assert report.config == model.config and loaded.mask_alpha == 64.0
    _assert_weights_equal(loaded, page4d_state_dict)


def test_save_checkpoint_validates(tmp_path, small_vggt):
    model = small_vggt()
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(model, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="does not describe"):
        save_checkpoint(model, tmp_path / "model.safetensors", "page4d-small")


def test_sha256_verification(tmp_path, small_state, small_config):
    path = tmp_path / "model.pt"
    torch.save(small_state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _, report = load_checkpoint(path, small_config, sha256=digest.upper())
    assert report.sha256 == digest
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(path, small_config, sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        load_checkpoint(path, small_config, sha256="abc")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_cast(tmp_path, small_state, small_config, vggt_ref, dtype):
    torch.save(small_state, tmp_path / "model.pt")
    model, report = load_checkpoint(tmp_path / "model.pt", small_config, dtype=dtype)
    assert report.dtype == dtype and report.file_dtypes == ["torch.float32"]
    assert {parameter.dtype for parameter in model.parameters()} == {dtype}
    if dtype == torch.bfloat16:
        with torch.inference_mode():
            outputs = model(vggt_ref["images"], compute_points=False)
        assert outputs["depth"].dtype == dtype
        reference = vggt_ref["outputs_fp64"]["depth"]
        assert float((outputs["depth"].double() - reference).abs().max() / reference.abs().max()) < 0.1
    with pytest.raises(ValueError, match="dtype"):
        load_checkpoint(tmp_path / "model.pt", small_config, dtype=torch.int8)


def test_unsafe_and_malformed_files(tmp_path, small_config):
    torch.save({"model": _NotATensor()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_checkpoint(tmp_path / "code.pt", small_config)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        load_checkpoint(tmp_path / "tensor.pt", small_config)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "garbage.pt", small_config)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_checkpoint(tmp_path / "garbage.safetensors", small_config)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt", small_config)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path, small_config)


def _make_hf_cache(
    root: Path, folder: str, filename: str, content_path: Path, revision: str = "abc123"
) -> Path:
    """Lay out a Hugging Face hub cache repo: blobs/<hash>, snapshots/<rev>/<file> -> blob, refs/main."""
    repo_dir = root / folder
    blob = repo_dir / "blobs" / "f00d"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content_path.read_bytes())
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snapshot), snapshot / filename)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot / filename


def test_hugging_face_cache_resolution(tmp_path, monkeypatch, small_state, small_config):
    source = tmp_path / "source.pt"
    torch.save(small_state, source)
    hf_home = tmp_path / "hf_home"
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.chdir(tmp_path)
    cached = _make_hf_cache(hf_home / "hub", "models--facebook--VGGT-1B", "model.pt", source)
    model, report = load_checkpoint("facebook/VGGT-1B", small_config)
    assert report.path == cached
    _assert_weights_equal(model, small_state)

    _make_hf_cache(hf_home / "hub", "datasets--zhouk777--PAGE4D", "checkpoint_nomask.pt", source)
    _, report = load_checkpoint("zhouk777/PAGE4D/checkpoint_nomask.pt", small_config)
    assert report.path.name == "checkpoint_nomask.pt"

    with pytest.raises(
        CheckpointError,
        match=r"huggingface-cli download zhouk777/PAGE4D checkpoint_mask.pt --repo-type dataset",
    ):
        load_checkpoint("zhouk777/PAGE4D/checkpoint_mask.pt", small_config)
    with pytest.raises(CheckpointError, match="local cache"):
        load_checkpoint("facebook/VGGT-1B-Commercial", small_config)

    second = hf_home / "hub" / "datasets--zhouk777--PAGE4D" / "snapshots" / "abc123" / "checkpoint_mask.pt"
    second.write_bytes(source.read_bytes())
    with pytest.raises(CheckpointError, match=r"several weight files .*zhouk777/PAGE4D/<file>"):
        load_checkpoint("zhouk777/PAGE4D", small_config)

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other_cache"))
    with pytest.raises(CheckpointError, match="other_cache"):
        load_checkpoint("facebook/VGGT-1B", small_config)


def test_invalid_device_is_rejected_before_reading(tmp_path, small_config):
    with pytest.raises(ValueError, match="invalid device"):
        load_checkpoint(tmp_path / "absent.pt", small_config, device="gpu0")


def test_inference_settings_travel_with_the_weights(tmp_path, small_vggt):
    from safetensors.torch import load_file, save_file

    from page4d_ros.model.checkpoint import CONFIG_METADATA_KEY, INFERENCE_METADATA_KEY

    model = small_vggt()
    plain = save_checkpoint(model, tmp_path / "plain.safetensors")
    assert load_checkpoint(plain)[1].inference == {}
    hinted = save_checkpoint(model, tmp_path / "hinted.safetensors", inference={"model_long_side": 112})
    assert load_checkpoint(hinted)[1].inference == {"model_long_side": 112}
    broken = tmp_path / "broken.safetensors"
    metadata = {CONFIG_METADATA_KEY: json.dumps(model.config), INFERENCE_METADATA_KEY: "{not json"}
    save_file(load_file(str(plain)), str(broken), metadata=metadata)
    with pytest.raises(CheckpointError, match=INFERENCE_METADATA_KEY):
        load_checkpoint(broken)
