"""``page4d-eval``: score predictions against ground truth by the PAGE-4D protocol (paper-style table).

``page4d-eval held-out --checkpoint FILE [...]`` instead runs a checkpoint on held-out synthetic dynamic
sequences (per window, or ``--streaming`` through the pipeline) and scores it the same way; see
:mod:`page4d_ros.training.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from page4d_ros.evaluation.depth import DEPTH_ALIGNMENTS
from page4d_ros.evaluation.protocol import (
    DEFAULT_NAMESPACE,
    evaluate,
    format_table,
    load_prediction,
    summarize,
)
from page4d_ros.evaluation.trajectory import ALIGNMENTS
from page4d_ros.synthetic.loaders import load_sequence

GT_FORMATS = ("auto", "npz", "mcap", "tum", "bonn", "sintel", "davis")
PRED_FORMATS = ("auto", "bag", "npz", "mcap", "tum")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="page4d-eval",
        description=(
            "Evaluate predicted poses, depth and dynamic masks against ground truth (ATE/RPE after "
            "Umeyama alignment, video depth with per-sequence alignment, mask IoU, point maps). Give "
            "--pred/--gt once per sequence; several pairs add a mean row."
        ),
        epilog=(
            "page4d-eval held-out --checkpoint FILE [--streaming ...] scores a checkpoint on held-out "
            "synthetic dynamic sequences instead (page4d-eval held-out --help)."
        ),
    )
    parser.add_argument(
        "--pred",
        type=Path,
        action="append",
        required=True,
        help="prediction: output bag of page4d_node / page4d-bag, or a TUM folder / npz / MCAP sequence",
    )
    parser.add_argument(
        "--gt",
        type=Path,
        action="append",
        required=True,
        help="ground truth: page4d-synth output (mcap/tum/npz) or a TUM / Bonn / MPI Sintel folder",
    )
    parser.add_argument(
        "--align", choices=ALIGNMENTS, default="sim3", help="trajectory alignment (default: sim3)"
    )
    parser.add_argument(
        "--depth-align",
        choices=DEPTH_ALIGNMENTS,
        default="scale",
        help="per-sequence depth alignment: median scale, least-squares scale and shift, or none "
        "(default: scale)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all metrics to this JSON file")
    parser.add_argument(
        "--pred-namespace",
        default=DEFAULT_NAMESPACE,
        help=f"topic namespace of bag predictions ({DEFAULT_NAMESPACE})",
    )
    parser.add_argument("--pred-format", choices=PRED_FORMATS, default="auto", help="prediction layout")
    parser.add_argument("--gt-format", choices=GT_FORMATS, default="auto", help="ground-truth layout")
    parser.add_argument(
        "--scene",
        "--sintel-scene",
        dest="scene",
        default=None,
        help="scene (video) name when --gt is an MPI Sintel or DAVIS root holding several",
    )
    parser.add_argument(
        "--gt-start", type=int, default=0, help="first ground-truth frame to score (default: 0)"
    )
    parser.add_argument("--gt-stop", type=int, default=None, help="ground-truth frame to stop before")
    parser.add_argument(
        "--gt-stride", type=int, default=1, help="score every n-th ground-truth frame (TUM protocol: 3)"
    )
    parser.add_argument(
        "--max-dt-ms",
        type=float,
        default=5.0,
        help="largest stamp difference to match frames (default: 5 ms)",
    )
    parser.add_argument(
        "--max-depth", type=float, default=None, help="ignore ground-truth depth beyond this (m)"
    )
    parser.add_argument("--rpe-delta", type=int, default=1, help="RPE frame distance (default: 1)")
    parser.add_argument(
        "--max-points", type=int, default=200_000, help="points per cloud for point-map metrics (0 = skip)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 nothing could be evaluated, 2 bad arguments or input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "held-out":
        from page4d_ros.training.evaluate import main as held_out_main

        return held_out_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.pred) != len(args.gt):
        parser.error(f"give --pred and --gt in pairs: got {len(args.pred)} --pred and {len(args.gt)} --gt")
    if args.max_dt_ms < 0 or args.rpe_delta < 1 or args.max_points < 0:
        parser.error("--max-dt-ms must be >= 0, --rpe-delta >= 1 and --max-points >= 0")
    if args.gt_start < 0 or args.gt_stride < 1:
        parser.error("--gt-start must be >= 0 and --gt-stride >= 1")
    results = []
    for pred_path, gt_path in zip(args.pred, args.gt):
        try:
            gt_options = {"scene": args.scene} if args.scene else {}
            gt = load_sequence(gt_path, args.gt_format, **gt_options)[
                args.gt_start : args.gt_stop : args.gt_stride
            ]
            if len(gt) == 0:
                raise ValueError("no ground-truth frame left after --gt-start/--gt-stop/--gt-stride")
            prediction = load_prediction(pred_path, args.pred_namespace, args.pred_format)
            result = evaluate(
                prediction,
                gt,
                align=args.align,
                depth_align=args.depth_align,
                max_difference_ns=int(args.max_dt_ms * 1e6),
                rpe_delta=args.rpe_delta,
                max_depth=args.max_depth,
                max_points=args.max_points or 1,
                name=gt_path.name or str(gt_path),
            )
        except (ValueError, OSError) as error:
            parser.error(f"cannot evaluate {pred_path} against {gt_path}: {error}")
        if args.max_points == 0:
            result["points"] = None
        result["pred"] = str(pred_path)
        result["gt"] = str(gt_path)
        results.append(result)
    print(format_table(results))
    for result in results:
        frames = result["frames"]
        print(
            f"{result['name']}: {frames['gt']} GT frames; matched pose {frames['pose']}, "
            f"depth {frames['depth']}, mask {frames['mask']}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "sequences": results,
            "mean": summarize(results),
            "align": args.align,
            "depth_align": args.depth_align,
        }
        args.json.write_text(json.dumps(report, indent=2))
    matched_anything = any(r["pose"] or r["depth"] or r["mask"] for r in results)
    return 0 if matched_anything else 1


if __name__ == "__main__":
    sys.exit(main())
