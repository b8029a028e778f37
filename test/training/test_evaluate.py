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
    # "max" fusion: the network map's threshold decides every pixel (not only where no flow test was made).
    config = PipelineConfig(
        window_size=4, window_stride=2, model_long_side=56, mask_geometric=False, mask_fusion="max"
    )
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


def test_held_out_set_covers_every_camera_motion_in_both_scenes() -> None:
    from page4d_ros.synthetic.scene import CAMERA_MOTIONS
    from page4d_ros.training.evaluate import HELD_OUT_SCENES

    pairs = {(scene["camera_motion"], scene["scene"]) for scene in HELD_OUT_SCENES}
    assert {motion for motion, _ in pairs} == set(CAMERA_MOTIONS)
    assert {scene for _, scene in pairs} == {"room", "outdoor"}
    assert len(HELD_OUT_SCENES) >= 8


def test_evaluate_command_line_compares_pose_refinements(tiny_checkpoint, tmp_path, capsys) -> None:
    """--refinements runs the streaming protocol per pose_refinement value; a camera that does not travel
    (the fifth held-out sequence rotates in place) gets a drift instead of an ATE percentage."""
    import json

    from page4d_ros.tools.evaluate import main

    out = tmp_path / "result.json"
    argv = ["held-out", "--checkpoint", str(tiny_checkpoint), "--sequences", "5", "--frames", "6"]
    argv += ["--width", "56", "--height", "42", "--streaming", "--refinements", "none,flow"]
    argv += ["--pipeline", "window_size=4", "--pipeline", "window_stride=2", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"none", "flow"}
    for run in report.values():
        poses = [result["pose"] for result in run["results"]]
        assert [("drift_percent_of_depth" in pose) for pose in poses] == [False] * 4 + [True]
        assert all("ate_percent_of_path" in pose for pose in poses[:4])
        assert run["summary"]["drift % of depth"] == pytest.approx(poses[4]["drift_percent_of_depth"])
    printed = capsys.readouterr().out
    assert "pose_refinement: none" in printed and "pose_refinement: flow" in printed
    assert "| 04-rotate-room |" in printed
    assert main(["held-out", "--checkpoint", str(tiny_checkpoint), "--refinements", "none"]) == 2
    assert "need --streaming" in capsys.readouterr().err


def test_davis_clip_masks_are_scored(tiny_checkpoint) -> None:
    from pathlib import Path

    from page4d_ros.model import load_checkpoint
    from page4d_ros.pipeline.config import PipelineConfig
    from page4d_ros.training.evaluate import evaluate_davis

    root = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis_car_shadow"
    if not root.is_dir():
        pytest.skip(f"the DAVIS car-shadow clip is not at {root} (it ships beside the CI clone only)")
    model, _ = load_checkpoint(tiny_checkpoint)
    config = PipelineConfig(window_size=4, window_stride=2, model_long_side=56)
    result = evaluate_davis(model, root, config)
    assert result["pose"] is None and result["depth"] is None
    assert result["frames"]["mask"] == result["frames"]["gt"] > 0
    assert 0.0 <= result["mask"]["iou"] <= 1.0
