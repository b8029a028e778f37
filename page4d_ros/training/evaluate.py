"""Held-out evaluation of a trained model on synthetic sequences, with ``page4d_ros.evaluation``.

Two protocols:

- per window (default): each held-out sequence is exactly one inference window, so the per-sequence depth
  scale of the PAGE-4D protocol is the window's scale and Sim(3) alignment is per sequence;
- streaming (``--streaming``): longer held-out sequences go frame by frame through the real
  :class:`~page4d_ros.pipeline.runner.StreamingPipeline` (windows, chaining, masks), as the node runs them,
  and the chained trajectory is aligned once per sequence. This is the protocol that sees whether the
  window-to-window scale holds.

Reported per sequence: ATE (also as a percentage of the ground-truth path length; for cameras that do
not travel, ``rotate`` and ``static``, the drift instead: the farthest published camera centre from the first,
as a percentage of the median published depth), RPE, depth AbsRel / delta < 1.25 (median scale) and
dynamic-mask IoU / precision / recall. ``--refinements none,flow`` runs the streaming protocol once per
``pose_refinement`` value and adds a side-by-side table; ``--davis FOLDER`` also scores the masks of a real
DAVIS clip (no poses or depth there).

    page4d-eval held-out --checkpoint page4d_ros/models/page4d_small.safetensors --width 112 --height 84
    page4d-eval held-out --checkpoint ... --streaming --frames 48 --width 320 --height 240
    page4d-eval held-out --checkpoint ... --streaming --frames 96 --width 320 --height 240 --fps 30 \
        --refinements none,flow --davis ../shared/data/davis_car_shadow
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from page4d_ros.evaluation.protocol import PredictionSet, evaluate, format_table, summarize
from page4d_ros.evaluation.trajectory import absolute_trajectory_error
from page4d_ros.pipeline.config import PipelineConfig, checkpoint_long_side, parse_override
from page4d_ros.pipeline.masks import network_probability
from page4d_ros.pipeline.predictor import ModelPredictor
from page4d_ros.pipeline.runner import StreamingPipeline
from page4d_ros.pipeline.types import CameraCalibration, Frame
from page4d_ros.synthetic import SyntheticSequence, generate_sequence, invert_poses
from page4d_ros.synthetic.loaders import load_davis

# Held-out seeds start far from the training (1000+) and validation (900000+) seeds of the presets.
HELD_OUT_SEED = 500_000
# Every camera motion in both scenes; the first four are the original held-out set.
HELD_OUT_SCENES: list[dict[str, Any]] = [
    {"camera_motion": "walk", "scene": "room", "num_movers": 3},
    {"camera_motion": "orbit", "scene": "outdoor", "num_movers": 4},
    {"camera_motion": "handheld", "scene": "room", "num_movers": 4},
    {"camera_motion": "walk", "scene": "outdoor", "num_movers": 3},
    {"camera_motion": "rotate", "scene": "room", "num_movers": 3},
    {"camera_motion": "static", "scene": "outdoor", "num_movers": 3},
    {"camera_motion": "orbit", "scene": "room", "num_movers": 3},
    {"camera_motion": "handheld", "scene": "outdoor", "num_movers": 4},
    {"camera_motion": "rotate", "scene": "outdoor", "num_movers": 4},
    {"camera_motion": "static", "scene": "room", "num_movers": 4},
]
# Below this ground-truth path length (m) a camera does not travel (rotate, static): drift replaces ATE %.
MIN_PATH_M = 1e-3


def run_window(
    model: torch.nn.Module, sequence: SyntheticSequence, **forward_options: bool
) -> dict[str, Any]:
    """The network's outputs for one window holding every frame of ``sequence`` (eval mode, no gradients);
    ``forward_options`` (``compute_camera``, ``compute_points``, ...) go to the forward."""
    if sequence.rgb is None:
        raise ValueError("the sequence has no RGB images to run the model on")
    images = torch.from_numpy(sequence.rgb).float().div(255.0).permute(0, 3, 1, 2)[None]
    model.eval()
    with torch.inference_mode():
        return model(images, **forward_options)


def predict_window(
    model: torch.nn.Module, sequence: SyntheticSequence, dynamics_sign: float = -1.0, threshold: float = 0.5
) -> PredictionSet:
    """Run the model once on all frames of ``sequence`` and key its outputs by the frames' stamps.

    The masks come from the per-pixel ``dynamic_logits`` when the network has them, else from the mask
    head's ``dynamics_map``: ``dynamics_sign`` is -1 when its negative values mean dynamic (the convention
    the trainer's mask supervision uses), +1 for the opposite. A pixel is dynamic where its (upsampled)
    dynamic probability is at least ``threshold`` (the pipeline's ``mask_threshold``).
    """
    from page4d_ros.model import pose_encoding_to_extri_intri

    if getattr(model, "family", "vggt") == "pi3":
        return _predict_pi3_window(model, sequence)
    outputs = run_window(model, sequence, compute_points=False)
    height, width = sequence.rgb.shape[1:3]
    extrinsics, intrinsics = pose_encoding_to_extri_intri(outputs["pose_enc"], (height, width))
    extrinsics_4x4 = np.tile(np.eye(4), (extrinsics.shape[1], 1, 1))
    extrinsics_4x4[:, :3, :] = extrinsics[0].double().numpy()
    T_world_cam = invert_poses(extrinsics_4x4)
    depth = outputs["depth"][0, ..., 0].float().numpy()
    stamps = [int(stamp) for stamp in sequence.stamps_ns]
    prediction = PredictionSet(source="model")
    prediction.poses = dict(zip(stamps, T_world_cam))
    prediction.depth = {stamp: frame.astype(np.float32) for stamp, frame in zip(stamps, depth)}
    prediction.K = dict(zip(stamps, intrinsics[0].double().numpy()))
    probability = None
    if outputs.get("dynamic_logits") is not None:
        probability = torch.sigmoid(outputs["dynamic_logits"][0].float()).numpy()
    elif outputs.get("dynamics_map") is not None:
        scores = dynamics_sign * outputs["dynamics_map"][0].float().numpy()
        probability = network_probability(scores, height, width)
    if probability is not None:
        prediction.dynamic_mask = {stamp: frame >= threshold for stamp, frame in zip(stamps, probability)}
    return prediction


def _predict_pi3_window(model: torch.nn.Module, sequence: SyntheticSequence) -> PredictionSet:
    """One π³ window over every frame: poses relative to the first camera, z-depth and the focal length fitted
    to its local points (``pipeline.pi3_adapter``); π³ has no dynamics head, so no masks."""
    from page4d_ros.pipeline.pi3_adapter import window_prediction

    window = window_prediction(run_window(model, sequence))
    extrinsics_4x4 = np.tile(np.eye(4), (window.extrinsics.shape[0], 1, 1))
    extrinsics_4x4[:, :3, :] = window.extrinsics
    stamps = [int(stamp) for stamp in sequence.stamps_ns]
    prediction = PredictionSet(source="model")
    prediction.poses = dict(zip(stamps, invert_poses(extrinsics_4x4)))
    prediction.depth = dict(zip(stamps, window.depth))
    prediction.K = dict(zip(stamps, window.intrinsics))
    return prediction


def path_length(T_world_cam: np.ndarray) -> float:
    """Length of the camera path (sum of distances between consecutive camera centres)."""
    centres = np.asarray(T_world_cam)[:, :3, 3]
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())


def held_out_sequences(
    count: int, frames: int, width: int, height: int, seed: int = HELD_OUT_SEED, fps: float = 30.0
) -> list[SyntheticSequence]:
    """Deterministic held-out sequences cycling through :data:`HELD_OUT_SCENES`."""
    return [
        generate_sequence(
            seed + index, frames, width, height, fps=fps, **HELD_OUT_SCENES[index % len(HELD_OUT_SCENES)]
        )
        for index in range(count)
    ]


def predict_streaming(
    model: torch.nn.Module,
    sequence: SyntheticSequence,
    config: PipelineConfig,
    dynamics_sign: str = "negative",
    inference: dict[str, Any] | None = None,
) -> PredictionSet:
    """Push every frame of ``sequence`` (with its calibration, when it has one) through a fresh streaming
    pipeline and key the published poses, depth and dynamic masks by stamp (``inference``: the checkpoint's
    stored settings, e.g. π³'s ``pixel_limit``)."""
    if sequence.rgb is None:
        raise ValueError("the sequence has no RGB images to run the model on")
    height, width = sequence.rgb.shape[1:3]
    pipeline = StreamingPipeline(
        config, ModelPredictor(model, dynamics_sign=dynamics_sign, inference=inference)
    )
    results = []
    for index in range(len(sequence)):
        calibration = (
            None if sequence.K is None else CameraCalibration(K=sequence.K[index], width=width, height=height)
        )
        frame = Frame(
            rgb=sequence.rgb[index],
            stamp_ns=int(sequence.stamps_ns[index]),
            frame_id=sequence.frame_id,
            calibration=calibration,
        )
        results.extend(pipeline.push(frame))
    results.extend(pipeline.flush())
    prediction = PredictionSet(source="pipeline")
    for result in results:
        prediction.poses[result.stamp_ns] = result.T_world_cam
        prediction.depth[result.stamp_ns] = result.depth
        prediction.K[result.stamp_ns] = result.K
        if result.dynamic_mask is not None:
            prediction.dynamic_mask[result.stamp_ns] = result.dynamic_mask > 0
    return prediction


def evaluate_model(
    model: torch.nn.Module,
    sequences: list[SyntheticSequence],
    dynamics_sign: float = -1.0,
    streaming: PipelineConfig | None = None,
    mask_threshold: float = 0.5,
    inference: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Per-sequence results (with ``ate_percent_of_path``) and their means (the table columns plus ATE %).

    Each sequence is one window, or, with a ``streaming`` pipeline config, a stream through the pipeline
    (which then decides the masks with its own ``mask_threshold``).
    """
    results = []
    for index, sequence in enumerate(sequences):
        if streaming is None:
            prediction = predict_window(model, sequence, dynamics_sign, mask_threshold)
        else:
            sign = "negative" if dynamics_sign < 0 else "positive"
            prediction = predict_streaming(model, sequence, streaming, sign, inference)
        name = f"{index:02d}-{sequence.camera_motion}-{sequence.scene}"
        result = evaluate(prediction, sequence, name=name)
        length = path_length(sequence.T_world_cam)
        if result["pose"] is not None:
            result["pose"]["path_length"] = length
            if length >= MIN_PATH_M:
                result["pose"]["ate_percent_of_path"] = 100.0 * result["pose"]["ate_rmse"] / length
            else:
                result["pose"]["drift_percent_of_depth"] = drift_percent_of_depth(prediction)
        results.append(result)
    summary = summarize(results)
    percents = [
        r["pose"]["ate_percent_of_path"] for r in results if r["pose"] and "ate_percent_of_path" in r["pose"]
    ]
    summary["ATE % of path"] = float(np.mean(percents)) if percents else None
    drifts = [
        r["pose"]["drift_percent_of_depth"]
        for r in results
        if r["pose"] and "drift_percent_of_depth" in r["pose"]
    ]
    summary["drift % of depth"] = float(np.mean(drifts)) if drifts else None
    summary["ATE static-camera baseline"] = float(np.mean([static_camera_ate(s) for s in sequences]))
    return results, summary


def drift_percent_of_depth(prediction: PredictionSet) -> float:
    """For a camera that does not travel: the farthest predicted camera centre from the first one, as a
    percentage of the median predicted depth (both in the prediction's units)."""
    stamps = sorted(prediction.poses)
    centres = np.stack([prediction.poses[stamp][:3, 3] for stamp in stamps])
    depths = [d[np.isfinite(d) & (d > 0)] for d in prediction.depth.values()]
    values = np.concatenate(depths) if depths else np.zeros(0)
    if values.size == 0:
        return float("nan")
    return 100.0 * float(np.max(np.linalg.norm(centres - centres[0], axis=1))) / float(np.median(values))


def evaluate_davis(
    model: torch.nn.Module, root: str | Path, config: PipelineConfig, dynamics_sign: float = -1.0
) -> dict[str, Any]:
    """Stream a DAVIS clip (no calibration) through the pipeline and score its masks (all DAVIS has)."""
    sequence = load_davis(root)
    sign = "negative" if dynamics_sign < 0 else "positive"
    prediction = predict_streaming(model, sequence, config, sign)
    return evaluate(prediction, sequence, name=sequence.scene)


def comparison_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table with one row per sequence and, per ``pose_refinement`` run, ATE % of path (or drift %
    of depth, marked d), RPE-t, AbsRel, delta and mask IoU / precision / recall."""
    names = list(runs)
    header = ["Sequence"]
    for name in names:
        header += [f"{name}: ATE %", "RPE-t", "AbsRel", "δ<1.25", "IoU", "P", "R"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cells(result: dict[str, Any] | None) -> list[str]:
        if result is None:
            return ["-"] * 7
        pose, depth, mask = result["pose"] or {}, result["depth"] or {}, result["mask"] or {}
        if "ate_percent_of_path" in pose:
            ate = f"{pose['ate_percent_of_path']:.2f}"
        elif "drift_percent_of_depth" in pose:
            ate = f"{pose['drift_percent_of_depth']:.2f} d"
        else:
            ate = "-"

        def number(values: dict[str, Any], key: str, digits: int) -> str:
            value = values.get(key)
            return "-" if value is None else f"{value:.{digits}f}"

        return [
            ate,
            number(pose, "rpe_trans_rmse", 4),
            number(depth, "abs_rel", 3),
            number(depth, "delta_1", 3),
            number(mask, "iou", 3),
            number(mask, "precision", 3),
            number(mask, "recall", 3),
        ]

    rows = max(len(results) for results in runs.values())
    for index in range(rows):
        first = next(results[index] for results in runs.values() if index < len(results))
        row = [first["name"]]
        for name in names:
            row += cells(runs[name][index] if index < len(runs[name]) else None)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def static_camera_ate(sequence: SyntheticSequence) -> float:
    """ATE RMSE of a prediction that never moves the camera (after the same Sim(3) alignment): what a model
    scores on pose without having learned any translation, for reading the ATE column."""
    static = np.tile(np.eye(4), (len(sequence), 1, 1))
    return float(absolute_trajectory_error(static, sequence.T_world_cam, "sim3")["rmse"])


def main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint on held-out synthetic sequences and print the table."""
    from page4d_ros.model import CheckpointError, load_checkpoint

    parser = argparse.ArgumentParser(prog="page4d-eval held-out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument(
        "--model-preset", default="", help="network preset when the file has no stored config (e.g. pi3)"
    )
    parser.add_argument("--sequences", type=int, default=len(HELD_OUT_SCENES))
    parser.add_argument(
        "--frames",
        type=int,
        default=8,
        help="frames per sequence (per-window protocol: the inference window)",
    )
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--height", type=int, default=168)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the held-out sequences")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the first held-out sequence")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--dynamics-sign", type=float, default=-1.0, choices=(-1.0, 1.0))
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="dynamic probability threshold")
    parser.add_argument(
        "--streaming", action="store_true", help="run the sequences through the streaming pipeline"
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="streaming pipeline setting (YAML value), e.g. --pipeline mask_geometric=false; repeatable "
        "(model_long_side defaults to the checkpoint's, else the sequences' long side)",
    )
    parser.add_argument(
        "--refinements",
        default="",
        help="streaming: comma-separated pose_refinement values to run and compare, e.g. none,flow",
    )
    parser.add_argument(
        "--davis", default=None, help="streaming: also score the masks of this DAVIS clip folder"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    refinements = [value.strip() for value in args.refinements.split(",") if value.strip()]
    if (refinements or args.davis) and not args.streaming:
        print("page4d-eval held-out: error: --refinements and --davis need --streaming", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, report = load_checkpoint(args.checkpoint, args.model_preset or None)
        streaming = None
        if args.streaming:
            long_side = checkpoint_long_side(report.inference) or max(args.width, args.height)
            settings = {"model_long_side": long_side, "mask_threshold": args.mask_threshold}
            settings.update(parse_override(text) for text in args.pipeline)
            streaming = PipelineConfig.from_dict(settings)
        configs = {"": streaming}
        if refinements:
            configs = {name: streaming.replace(pose_refinement=name) for name in refinements}
        sequences = held_out_sequences(
            args.sequences, args.frames, args.width, args.height, seed=args.seed, fps=args.fps
        )
        runs: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
        davis: dict[str, Any] = {}
        for name, config in configs.items():
            runs[name] = evaluate_model(
                model, sequences, args.dynamics_sign, config, args.mask_threshold, report.inference
            )
            if args.davis:
                davis[name] = evaluate_davis(model, args.davis, config, args.dynamics_sign)
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(f"page4d-eval held-out: error: {error}", file=sys.stderr)
        return 2
    for name, (results, summary) in runs.items():
        if name:
            print(f"\n## pose_refinement: {name}")
        print(format_table(results))
        print(json.dumps(summary))
        if name in davis and davis[name]["mask"]:
            mask = davis[name]["mask"]
            print(
                f"DAVIS {davis[name]['name']}: mask IoU {mask['iou']:.3f}, precision "
                f"{mask['precision']:.3f}, recall {mask['recall']:.3f}"
            )
    if len(runs) > 1:
        print("\n" + comparison_table({name: results for name, (results, _) in runs.items()}))
    if args.json:
        if list(runs) == [""]:
            report: dict[str, Any] = {"summary": runs[""][1], "results": runs[""][0]}
        else:
            report = {
                name: {"summary": summary, "results": results} for name, (results, summary) in runs.items()
            }
        if davis:
            report["davis"] = davis
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
