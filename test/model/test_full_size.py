"""Full-size VGGT-1B / PAGE-4D structure against the official key lists, and loading a 1797-key file.

The network is built on the meta device (no memory); the checkpoint written here stores every tensor as a view
of one shared random buffer, so the file is ~70 MB instead of 5 GB, and the memory-mapped load assigns the
file's storage directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from page4d_ros.model import build_model, load_checkpoint

VGGT_1B_KEYS = 1797
TRACK_HEAD_KEYS = 394


def _read_key_list(shared_dir: Path, name: str) -> dict[str, tuple[int, ...]]:
    path = shared_dir / "reference" / name
    if not path.is_file():
        pytest.skip(f"key list {path} is absent")
    rows = path.read_text().splitlines()[1:]
    shapes = {}
    for row in rows:
        key, shape, _numel, _dtype = row.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def _meta_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in build_model(preset, device="meta").state_dict().items()}


@pytest.mark.parametrize(
    ("preset", "key_list"), [("vggt-1b", "vggt_1b_state_dict.tsv"), ("page4d-mask", "page4d_state_dict.tsv")]
)
def test_full_size_keys_and_shapes_equal_official_lists(shared_dir, preset, key_list):
    official = _read_key_list(shared_dir, key_list)
    without_track = {key: shape for key, shape in official.items() if not key.startswith("track_head.")}
    ours = _meta_shapes(preset)
    assert list(ours) == list(without_track)  # same keys, same order
    assert ours == without_track
    assert len(official) - len(without_track) == TRACK_HEAD_KEYS


def test_module_load_state_dict_accepts_the_official_layout_and_ignores_the_track_head(shared_dir):
    official = _read_key_list(shared_dir, "vggt_1b_state_dict.tsv")
    state = {key: torch.empty(shape, device="meta") for key, shape in official.items()}
    model = build_model("vggt-1b", device="meta")
    with pytest.warns(UserWarning, match=f"ignoring {TRACK_HEAD_KEYS} track_head"):
        result = model.load_state_dict(state, strict=True, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    del state["camera_head.embed_pose.bias"]
    with pytest.raises(RuntimeError, match=r"camera_head\.embed_pose\.bias"), pytest.warns(UserWarning):
        build_model("vggt-1b", device="meta").load_state_dict(state, strict=True, assign=True)


def _write_shared_storage_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    largest = max(torch.Size(shape).numel() for shape in shapes.values())
    generator = torch.Generator().manual_seed(0)
    buffer = torch.randn(largest, generator=generator) * 0.02
    state = {key: buffer[: torch.Size(shape).numel()].view(shape) for key, shape in shapes.items()}
    torch.save(state, path)


@pytest.mark.slow
def test_loads_a_file_with_all_vggt_1b_keys(shared_dir, tmp_path):
    official = _read_key_list(shared_dir, "vggt_1b_state_dict.tsv")
    assert len(official) == VGGT_1B_KEYS
    path = tmp_path / "model.pt"
    _write_shared_storage_checkpoint(path, official)
    assert path.stat().st_size < 200e6

    model, report = load_checkpoint(path)
    assert report.config_source == "inferred from keys (vggt-1b)"
    assert len(report.skipped_keys) == TRACK_HEAD_KEYS
    assert all(key.startswith("track_head.") for key in report.skipped_keys)
    assert report.loaded_keys == VGGT_1B_KEYS - TRACK_HEAD_KEYS
    parameters = sum(parameter.numel() for parameter in model.parameters())
    assert parameters == 1_190_596_120  # vggt_spec.md section 1, without the track head
    assert not model.has_mask_head
    with torch.inference_mode():
        outputs = model(torch.rand(1, 2, 3, 14, 28), compute_points=False)
    assert outputs["pose_enc"].shape == (1, 2, 9) and outputs["depth"].shape == (1, 2, 14, 28, 1)
    assert torch.isfinite(outputs["pose_enc"]).all() and torch.isfinite(outputs["depth"]).all()


@pytest.mark.slow
def test_page4d_file_infers_nomask_variant_and_says_so(shared_dir, tmp_path):
    official = _read_key_list(shared_dir, "page4d_state_dict.tsv")
    path = tmp_path / "checkpoint_mask.pt"
    _write_shared_storage_checkpoint(path, official)
    model, report = load_checkpoint(path)
    assert report.config_source == "inferred from keys (page4d-nomask)"
    assert model.has_mask_head and model.mask_alpha == 0.0
    assert any("page4d-mask" in note for note in report.notes)
    model, report = load_checkpoint(path, "page4d-mask")
    assert model.mask_alpha == 64.0 and report.config_source == "argument"
