"""Baking the dynamic channel's decision threshold into the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from page4d_ros.model import build_model, load_checkpoint, save_checkpoint
from page4d_ros.training.calibrate import (
    dynamic_probabilities,
    main,
    pooled_iou_by_threshold,
    shift_decision_threshold,
)
from page4d_ros.training.evaluate import held_out_sequences


def test_pooled_iou_on_a_hand_computed_case() -> None:
    probability = np.array([[0.9, 0.4], [0.2, 0.6]])
    mask = np.array([[True, True], [False, False]])
    scores = pooled_iou_by_threshold([probability], [mask], [0.3, 0.5, 0.95])
    assert scores == pytest.approx({0.3: 2 / 3, 0.5: 1 / 3, 0.95: 0.0})


def test_shifting_moves_the_boundary_exactly_and_leaves_depth_alone(tiny_model_config) -> None:
    torch.manual_seed(0)
    model = build_model({**tiny_model_config, "dense_dynamics": True})
    sequence = held_out_sequences(1, 3, 42, 28)[0]
    images = torch.from_numpy(sequence.rgb).float().div(255.0).permute(0, 3, 1, 2)[None]
    with torch.inference_mode():
        depth_before = model(images, compute_points=False)["depth"]
    before = dynamic_probabilities(model, sequence)
    threshold = float(np.quantile(before, 0.7))
    shift_decision_threshold(model, threshold)
    after = dynamic_probabilities(model, sequence)
    with torch.inference_mode():
        depth_after = model(images, compute_points=False)["depth"]
    agree = (after >= 0.5) == (before >= threshold)
    assert agree.mean() > 0.999  # only pixels within float rounding of the boundary may differ
    torch.testing.assert_close(depth_after, depth_before)
    with pytest.raises(ValueError, match="threshold"):
        shift_decision_threshold(model, 1.0)
    with pytest.raises(ValueError, match="dense_dynamics"):
        shift_decision_threshold(build_model(tiny_model_config), 0.3)


def test_command_line_writes_a_calibrated_checkpoint(tiny_model_config, tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = build_model({**tiny_model_config, "dense_dynamics": True})
    source = save_checkpoint(model, tmp_path / "in.safetensors", inference={"model_long_side": 42})
    out = tmp_path / "out.safetensors"
    argv = ["--checkpoint", str(source), "--out", str(out), "--sequences", "1", "--frames", "2"]
    assert main([*argv, "--width", "42", "--height", "28"]) == 0
    calibrated, report = load_checkpoint(out)
    assert report.inference["model_long_side"] == 42
    chosen = report.inference["dense_threshold_calibrated"]
    assert f"threshold {chosen:.2f}" in capsys.readouterr().out
    bias = "depth_head.scratch.output_conv2.2.bias"
    shift = float(calibrated.state_dict()[bias][2] - model.state_dict()[bias][2])
    assert shift == pytest.approx(-np.log(chosen / (1 - chosen)), abs=1e-6)
    plain = save_checkpoint(build_model(tiny_model_config), tmp_path / "plain.safetensors")
    assert main(["--checkpoint", str(plain), "--out", str(tmp_path / "x.safetensors")]) == 2
