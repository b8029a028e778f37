"""Time the streaming pipeline's own work per window (everything except the predictor), stage by stage.

The predictor is ``OracleModel`` (ground truth of a ``generate_sequence`` stream plus 1 % noise), so the
numbers are the pipeline's share of a real node: preprocessing (resizing the new frames, stacking the input),
depth cuts, dynamic masks, chaining, scale, per-frame outputs and clouds. Stage timings come from
``StreamingPipeline.stats.last_stage_ms`` (``time.perf_counter`` around each stage). The first window of the
stream (which publishes ``window_size`` frames instead of ``window_stride``) is a warm-up and not counted.

It also reports the accuracy of the run (mask IoU against ground truth on pixels with depth, and the chained
trajectory's ATE after Sim(3) alignment relative to the path length) so that a speed change can be checked for
accuracy loss on the same stream.

Example::

    .venv/bin/python benchmarks/pipeline.py                      # 224 and 518 px, 8 windows, 640x480 @ 30 fps
    .venv/bin/python benchmarks/pipeline.py --sizes 518 --windows 12 --json pipeline.json
    # The node's pipeline with the shipped model, inference included:
    .venv/bin/python benchmarks/pipeline.py --checkpoint page4d_ros/models/page4d_small.safetensors \
        --sizes 112 --width 320 --height 240 --fps 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from page4d_ros.evaluation import umeyama_alignment
from page4d_ros.pipeline import Frame, PipelineConfig, StreamingPipeline
from page4d_ros.synthetic import generate_sequence
from page4d_ros.synthetic.oracle import OracleModel, resample_to_network

REPORTED_STAGES = ("preprocess", "depth", "masks", "chaining", "refinement", "scale", "points")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 518], help="model_long_side values")
    parser.add_argument("--windows", type=int, default=8, help="timed windows after the warm-up window")
    parser.add_argument("--window-size", type=int, default=8)
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument("--width", type=int, default=640, help="source image width")
    parser.add_argument("--height", type=int, default=480, help="source image height")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the synthetic stream")
    parser.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    parser.add_argument("--movers", type=int, default=4, help="moving objects in the scene")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra PipelineConfig values (JSON literals), e.g. mask_check_stride=2",
    )
    parser.add_argument(
        "--checkpoint",
        help="predict with this checkpoint and the node's default parameters (plus --set) instead of the "
        "oracle: the node's own pipeline, inference included",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads with --checkpoint")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args()


def _overrides(pairs: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def _sim3_ate(estimate: np.ndarray, truth: np.ndarray) -> float:
    """RMS position error after the closed-form Sim(3) alignment of Umeyama (1991)."""
    aligned = umeyama_alignment(estimate, truth).apply_points(estimate)
    return float(np.sqrt(np.mean(np.sum((aligned - truth) ** 2, axis=1))))


def _checkpoint_pipeline(values: dict[str, object], args: argparse.Namespace) -> StreamingPipeline:
    """The node's pipeline (``build_pipeline``, default node parameters plus ``values``) on the CPU."""
    import torch

    from page4d_ros.ros.parameters import PARAMETERS, validate_parameters
    from page4d_ros.ros.pipeline_factory import build_pipeline

    torch.set_num_threads(args.threads)
    settings = {spec.name: spec.default for spec in PARAMETERS}
    settings.update(values, checkpoint_path=args.checkpoint, device="cpu")
    return build_pipeline(validate_parameters(settings), lambda _message: None).pipeline


def run_size(sequence, long_side: int, args: argparse.Namespace) -> dict[str, object]:
    """Stream ``sequence`` through a pipeline at ``long_side`` and summarise its per-window stage timings."""
    values: dict[str, object] = {
        "model_long_side": long_side,
        "window_size": args.window_size,
        "window_stride": args.window_stride,
    }
    values.update(_overrides(args.set))
    config = PipelineConfig.from_dict(values)
    oracle = OracleModel(
        sequence,
        long_side,
        config.resize_mode,
        depth_noise=0.01,
        translation_noise=0.01,
        rotation_noise=0.01,
        seed=1,
    )
    pipeline = _checkpoint_pipeline(values, args) if args.checkpoint else StreamingPipeline(config, oracle)
    stage_runs: list[dict[str, float]] = []
    results = []
    for i in range(sequence.rgb.shape[0]):
        windows_before = pipeline.stats.windows
        results.extend(pipeline.push(Frame(sequence.rgb[i], int(sequence.stamps_ns[i]), sequence.frame_id)))
        if pipeline.stats.windows > windows_before and windows_before > 0:
            stage_runs.append(dict(pipeline.stats.last_stage_ms))
    results.extend(pipeline.flush())

    def median(name: str) -> float:
        return statistics.median(run.get(name, 0.0) for run in stage_runs)

    for run in stage_runs:
        run["pipeline"] = run["total"] - run["inference"]
        run["rest"] = run["pipeline"] - sum(run.get(name, 0.0) for name in REPORTED_STAGES)
    stages = {name: median(name) for name in (*REPORTED_STAGES, "rest", "pipeline", "inference", "total")}

    index = oracle.frame_indices(np.array([r.stamp_ns for r in results]))
    truth = oracle.plan.crop_to_output(resample_to_network(sequence.dynamic_mask[index], oracle.plan, False))
    predicted = np.stack([r.dynamic_mask == 255 for r in results])
    has_depth = np.stack([np.isfinite(r.depth) for r in results])
    iou = np.count_nonzero(truth & predicted & has_depth) / max(
        np.count_nonzero((truth | predicted) & has_depth), 1
    )
    estimate = np.stack([r.T_world_cam[:3, 3] for r in results])
    true_positions = sequence.T_world_cam[index, :3, 3]
    path = float(np.linalg.norm(np.diff(true_positions, axis=0), axis=1).sum())
    first = results[0]
    return {
        "model_long_side": long_side,
        "output_size": f"{first.width}x{first.height}",
        "timed_windows": len(stage_runs),
        "ms_per_window": stages,
        "ms_per_frame": {name: value / args.window_stride for name, value in stages.items()},
        "mask_iou": float(iou),
        "ate_over_path": _sim3_ate(estimate, true_positions) / path if path > 0 else float("nan"),
        "config": values,
    }


def main() -> None:
    """Run the benchmark and print a Markdown table per size."""
    args = _parse_args()
    num_frames = args.window_size + (args.windows + 1) * args.window_stride
    started = time.perf_counter()
    sequence = generate_sequence(
        args.seed, num_frames, args.width, args.height, num_movers=args.movers, fps=args.fps
    )
    print(
        f"{num_frames} frames {args.width}x{args.height} @ {args.fps} fps rendered in "
        f"{time.perf_counter() - started:.1f} s; numpy {np.__version__}, {platform.machine()}"
    )
    reports = []
    for long_side in args.sizes:
        report = run_size(sequence, long_side, args)
        reports.append(report)
        per_window, per_frame = report["ms_per_window"], report["ms_per_frame"]
        print(
            f"\nmodel_long_side {long_side} (output {report['output_size']}), window {args.window_size} / "
            f"stride {args.window_stride}, median of {report['timed_windows']} windows; "
            f"mask IoU {report['mask_iou']:.3f}, ATE / path {report['ate_over_path']:.4f}"
        )
        print("| stage | ms / window | ms / frame |\n|---|---:|---:|")
        names = (*REPORTED_STAGES, "rest", "pipeline", *(("inference", "total") if args.checkpoint else ()))
        for name in names:
            print(f"| {name} | {per_window[name]:.1f} | {per_frame[name]:.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(reports, handle, indent=2)


if __name__ == "__main__":
    main()
