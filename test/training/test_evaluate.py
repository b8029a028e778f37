"""Held-out evaluation helpers of the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from page4d_ros.model import build_model
from page4d_ros.training.evaluate import evaluate_model, held_out_sequences, path_length, predict_window


def test_path_length_sums_centre_distances() -> None:
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[1, :3, 3] = (3.0, 4.0, 0.0)
    poses[2, :3, 3] = (3.0, 4.0, 2.0)
    assert path_length(poses) == pytest.approx(5.0 + 2.0)


def test_predict_window_keys_every_output_by_stamp(tiny_model_config) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config)
    sequence = held_out_sequences(1, 3, 42, 28)[0]
    prediction = predict_window(model, sequence)
    stamps = {int(stamp) for stamp in sequence.stamps_ns}
    assert set(prediction.poses) == stamps
    assert set(prediction.depth) == stamps
    assert set(prediction.dynamic_mask) == stamps
    first = prediction.poses[int(sequence.stamps_ns[0])]
    assert first.shape == (4, 4)
    assert all(depth.shape == (28, 42) for depth in prediction.depth.values())


def test_mask_sign_convention(tiny_model_config) -> None:
    """Flipping the sign convention flips every mask pixel (the map is never exactly zero)."""
    torch.manual_seed(1)
    model = build_model(tiny_model_config)
    sequence = held_out_sequences(1, 2, 42, 28)[0]
    negative = predict_window(model, sequence, dynamics_sign=-1.0)
    positive = predict_window(model, sequence, dynamics_sign=1.0)
    for stamp, mask in negative.dynamic_mask.items():
        assert np.array_equal(mask, ~positive.dynamic_mask[stamp])


def test_evaluate_model_reports_ate_relative_to_path(tiny_model_config) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config)
    sequences = held_out_sequences(2, 3, 42, 28)
    results, summary = evaluate_model(model, sequences)
    assert len(results) == 2
    for result, sequence in zip(results, sequences):
        pose = result["pose"]
        assert pose["ate_percent_of_path"] == pytest.approx(
            100 * pose["ate_rmse"] / path_length(sequence.T_world_cam)
        )
    assert summary["ATE % of path"] == pytest.approx(
        np.mean([r["pose"]["ate_percent_of_path"] for r in results])
    )
    assert 0.0 <= summary["Mask IoU"] <= 1.0


def test_static_camera_baseline_is_the_spread_of_the_path() -> None:
    from page4d_ros.training.evaluate import static_camera_ate

    sequence = held_out_sequences(1, 4, 42, 28)[0]
    centres = sequence.T_world_cam[:, :3, 3]
    spread = np.sqrt(np.mean(np.sum((centres - centres.mean(axis=0)) ** 2, axis=1)))
    assert static_camera_ate(sequence) == pytest.approx(spread, rel=1e-6)


def test_streaming_protocol_scores_every_published_frame(tiny_checkpoint) -> None:
    """The streaming protocol runs the real pipeline: every frame is published once and scored, and the
    pipeline's own mask threshold decides the masks (threshold 0 marks every pixel dynamic)."""
    from page4d_ros.model import load_checkpoint
    from page4d_ros.pipeline.config import PipelineConfig
    from page4d_ros.training.evaluate import predict_streaming

    model, _ = load_checkpoint(tiny_checkpoint)
    sequence = held_out_sequences(1, 10, 56, 42)[0]
    config = PipelineConfig(window_size=4, window_stride=2, model_long_side=56, mask_geometric=False)
    stamps = {int(stamp) for stamp in sequence.stamps_ns}
    prediction = predict_streaming(model, sequence, config.replace(mask_threshold=0.0))
    assert set(prediction.poses) == stamps
    assert set(prediction.depth) == stamps
    assert all(mask.all() for mask in prediction.dynamic_mask.values())
    results, summary = evaluate_model(model, [sequence], streaming=config)
    assert results[0]["frames"]["pose"] == len(sequence)
    assert summary["ATE % of path"] == pytest.approx(results[0]["pose"]["ate_percent_of_path"])


def test_evaluate_command_line_streaming(tiny_checkpoint, tmp_path, capsys) -> None:
    import json

    from page4d_ros.tools.evaluate import main

    out = tmp_path / "result.json"
    argv = [
        "held-out",
        "--checkpoint",
        str(tiny_checkpoint),
        "--sequences",
        "1",
        "--frames",
        "8",
        "--width",
        "56",
    ]
    argv += ["--height", "42", "--streaming", "--pipeline", "window_size=4", "--pipeline", "window_stride=2"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["frames"]["pose"] == 8
    assert main([*argv, "--pipeline", "no_such_setting=1"]) == 2
    assert "no_such_setting" in capsys.readouterr().err


def test_evaluate_command_line_reports_a_missing_checkpoint(tmp_path, capsys) -> None:
    from page4d_ros.tools.evaluate import main

    assert main(["held-out", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors" in capsys.readouterr().err
