"""Time the pose-refinement stage (``pipeline/refinement.py``) per frame on one core.

For each input size (default 320x240 and 640x480) a synthetic walk is rendered; every frame is solved against
the frame before it and the frame ``--far-gap`` frames back (default 2: the long-baseline reference
``refine_baseline_s`` 0.2 s picks at 10 fps) together, with their ground-truth depth on the pipeline's output
grid (112 px, the shipped model's size), as ``StreamingPipeline`` does with ``pose_refinement: flow``.
Reported, as the median over frames and repeats (sizes interleaved per repeat, so that load from other
processes hits all of them alike):

- ``flow+pose``: the DIS flows of the pose (one per reference), Lucas-Kanade tracking of their
  correspondences (forward and back), one RANSAC PnP and its refinement,
- ``mask/baseline``: the flow-residual mask test against one earlier frame (two more flows with the mask
  preset, ``--mask-preset``, and the test with its photometric confirmation),
- ``frame``: ``flow+pose`` plus ``mask_flow_baselines`` (default 3) mask baselines: the stage per frame.

    .venv/bin/python benchmarks/refinement.py
    .venv/bin/python benchmarks/refinement.py --sizes 320x240 --preset fast --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from page4d_ros.pipeline.preprocess import plan_resize
from page4d_ros.pipeline.refinement import FLOW_PRESETS, FlowMaskSettings, FlowRefiner, PoseReference
from page4d_ros.synthetic.oracle import resample_to_network
from page4d_ros.synthetic.scene import generate_sequence


def _prepare(width: int, height: int, frames: int, long_side: int):
    sequence = generate_sequence(21, frames, width, height, num_movers=3, fps=30.0)
    plan = plan_resize(width, height, long_side, "crop")
    depth = plan.crop_to_output(resample_to_network(sequence.depth, plan, 0.0)).astype(np.float32)
    depth[depth <= 0] = np.nan
    K = plan.intrinsics_to_output(sequence.K[0])
    return sequence, plan, depth, K


def _time_once(
    sequence, plan, depth, K, preset: str, mask_preset: str, flow_long_side: int, baselines: int, far_gap: int
) -> dict[str, list]:
    refiner = FlowRefiner(flow_long_side=flow_long_side, flow_preset=preset, mask_flow_preset=mask_preset)
    times: dict[str, list[float]] = {"flow+pose": [], "mask/baseline": []}
    no_pixels = np.zeros(depth.shape[1:], dtype=bool)
    for i in range(len(sequence)):
        refiner.add_image(i, sequence.rgb[i], plan)
        if i == 0:
            continue
        references = [
            PoseReference(
                j,
                sequence.T_world_cam[j],
                np.linalg.inv(sequence.T_world_cam[j]) @ sequence.T_world_cam[i],
                depth[j],
                no_pixels,
            )
            for j in dict.fromkeys((max(0, i - far_gap), i - 1))
        ]
        start = time.perf_counter()
        refiner.refine_pose(references, i, K)
        times["flow+pose"].append(1e3 * (time.perf_counter() - start))
        others = [(j, sequence.T_world_cam[j]) for j in range(max(0, i - baselines), i - 1)]
        if others:
            start = time.perf_counter()
            refiner.flow_residual_mask(i, sequence.T_world_cam[i], depth[i], K, others, FlowMaskSettings())
            times["mask/baseline"].append(1e3 * (time.perf_counter() - start) / len(others))
    return times


def main() -> None:
    """Parse arguments, run the interleaved timings and print a table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="320x240,640x480", help="input sizes WxH, comma-separated")
    parser.add_argument("--frames", type=int, default=16, help="frames per sequence")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--preset", choices=sorted(FLOW_PRESETS), default="ultrafast")
    parser.add_argument("--mask-preset", choices=sorted(FLOW_PRESETS), default="medium")
    parser.add_argument("--flow-long-side", type=int, default=320, help="flow_long_side (never upsamples)")
    parser.add_argument("--baselines", type=int, default=3, help="mask_flow_baselines")
    parser.add_argument(
        "--far-gap", type=int, default=2, help="frames back of the long-baseline pose reference (1: none)"
    )
    parser.add_argument("--long-side", type=int, default=112, help="model_long_side (output grid)")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument("--json", default=None, help="also write the medians here")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    prepared = {size: _prepare(*size, args.frames, args.long_side) for size in sizes}
    samples: dict[tuple[int, int], dict[str, list[float]]] = {
        s: {"flow+pose": [], "mask/baseline": []} for s in sizes
    }
    for _ in range(args.repeats):
        for size in sizes:
            times = _time_once(
                *prepared[size],
                args.preset,
                args.mask_preset,
                args.flow_long_side,
                args.baselines,
                args.far_gap,
            )
            for key, values in times.items():
                samples[size][key].extend(values)
    print(
        f"preset {args.preset} (masks: {args.mask_preset}), flow_long_side {args.flow_long_side}, "
        f"{args.threads} OpenCV thread(s), "
        f"output grid long side {args.long_side}, median ms over {args.repeats} x {args.frames - 1} frames"
    )
    print(f"| input | flow+pose | mask/baseline | frame (pose + {args.baselines} baselines) |")
    print("|---|---|---|---|")
    report = {}
    for size in sizes:
        pose = float(np.median(samples[size]["flow+pose"]))
        mask = float(np.median(samples[size]["mask/baseline"]))
        frame = pose + args.baselines * mask
        report[f"{size[0]}x{size[1]}"] = {
            "flow+pose_ms": pose,
            "mask_per_baseline_ms": mask,
            "frame_ms": frame,
        }
        print(f"| {size[0]}x{size[1]} | {pose:.1f} | {mask:.1f} | {frame:.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
