"""VGGT-Omega through ``page4d-bag``, ``page4d-eval held-out`` and the node's pipeline factory.

``model_preset`` selects the family for checkpoints that store no config (the released ``.pt`` files); files
written by ``save_checkpoint`` carry their config, family included.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import yaml

from page4d_ros.tools import bag

FRAMES = 6


@pytest.fixture(autouse=True)
def single_torch_thread():
    """One intra-op thread: on the shared 2-core CI machine, spinning torch threads slow inference 50-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def input_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short synthetic dynamic sequence as an MCAP rosbag2."""
    from page4d_ros.synthetic.scene import generate_sequence
    from page4d_ros.synthetic.writers import write_mcap

    sequence = generate_sequence(5, FRAMES, 160, 120, camera_motion="orbit", num_movers=1)
    return write_mcap(sequence, tmp_path_factory.mktemp("bags") / "input")


def _params(tmp_path: Path, checkpoint: Path, **overrides) -> Path:
    values = {
        "checkpoint_path": str(checkpoint),
        "device": "cpu",
        "window_size": 4,
        "window_stride": 2,
        "require_metric_for_tf": False,
        **overrides,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"page4d": {"ros__parameters": values}}))
    return path


def test_bag_tool_runs_vggt_omega_and_passes_model_preset(input_bag, tiny_omega_checkpoint, tmp_path, capsys):
    from rosbags.highlevel import AnyReader

    params = _params(tmp_path, tiny_omega_checkpoint)
    output = tmp_path / "out"
    assert bag.main([str(input_bag), str(output), "--params", str(params), "--no-progress"]) == 0
    with AnyReader([output]) as reader:
        depth = [
            reader.deserialize(raw, connection.msgtype)
            for connection, _, raw in reader.messages()
            if connection.topic == "/page4d/depth/image"
        ]
    assert len(depth) == FRAMES
    assert {(m.width, m.height) for m in depth} == {(112, 80)}  # the family's balanced size rule
    # model_preset reaches the loader: the full-size preset does not describe the tiny file.
    args = [str(input_bag), str(tmp_path / "out2"), "--params", str(params), "-p", "model_preset=vggt-omega"]
    assert bag.main([*args, "--no-progress"]) == 2
    assert "missing keys" in capsys.readouterr().err


def test_eval_held_out_streams_vggt_omega(tiny_omega_checkpoint, tmp_path):
    from page4d_ros.tools.evaluate import main

    out = tmp_path / "result.json"
    # 112 x 80: multiples of 16, so the per-window protocol (the raw frames in one window) runs as well.
    argv = ["held-out", "--checkpoint", str(tiny_omega_checkpoint), "--sequences", "1", "--frames", "6"]
    argv += ["--width", "112", "--height", "80", "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["results"][0]["frames"]["pose"] == 6
    streaming = ["--streaming", "--pipeline", "window_size=4", "--pipeline", "window_stride=2"]
    assert main([*argv, *streaming]) == 0
    assert json.loads(out.read_text())["results"][0]["frames"]["pose"] == 6


def _key_list(shared_dir: Path, name: str) -> dict[str, tuple[int, ...]]:
    path = shared_dir / "reference" / name
    if not path.is_file():
        pytest.skip(f"key list {path} is absent")
    rows = [row for row in path.read_text().splitlines() if row and not row.startswith("#")][1:]
    return {row.split("\t")[0]: tuple(ast.literal_eval(row.split("\t")[1])) for row in rows}


@pytest.mark.slow
def test_pipeline_factory_selects_the_family_by_model_preset(shared_dir, tmp_path):
    """A released-format text checkpoint (1482 keys, all views of one buffer): the preset picks the family."""
    from page4d_ros.model.vggt_omega import BalancedSize
    from page4d_ros.ros.parameters import validate_parameters
    from page4d_ros.ros.pipeline_factory import build_pipeline

    shapes = _key_list(shared_dir, "vggt_omega_text_alignment_state_dict.tsv")
    largest = max(torch.Size(shape).numel() for shape in shapes.values())
    buffer = torch.randn(largest, generator=torch.Generator().manual_seed(0)) * 0.02
    path = tmp_path / "vggt_omega_1b_256_text.pt"
    torch.save({key: buffer[: torch.Size(shape).numel()].view(shape) for key, shape in shapes.items()}, path)

    def settings(preset: str, **overrides) -> dict:
        values = {"checkpoint_path": str(path), "device": "cpu", "warmup_iters": 0, "model_preset": preset}
        return validate_parameters({**values, **overrides})

    bundle = build_pipeline(settings("vggt-omega-text"), log=lambda message: None)
    assert bundle.predictor.size_rule == BalancedSize(256, 16)
    assert not bundle.predictor.has_dynamics_map and "(vggt-omega)" in bundle.description
    with pytest.raises(RuntimeError, match=r"unexpected keys \(71\): text_alignment_head\."):
        build_pipeline(settings("vggt-omega"), log=lambda message: None)
    inferred = build_pipeline(settings(""), log=lambda message: None)
    assert inferred.predictor.size_rule == BalancedSize(256, 16)
    # A non-zero model_long_side sets the balanced resolution of the family's rule.
    smaller = build_pipeline(settings("vggt-omega-text", model_long_side=126), log=lambda message: None)
    assert smaller.predictor.size_rule == BalancedSize(126, 16)
