"""``page4d-synth``: render a synthetic dynamic sequence with ground truth as MCAP, TUM or npz."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from page4d_ros.synthetic.scene import CAMERA_MOTIONS, MAX_MOVERS, SCENES, generate_sequence
from page4d_ros.synthetic.writers import FORMATS, McapSequenceWriter, TumSequenceWriter, write_npz

CHUNK_FRAMES = 50
"""MCAP and TUM outputs are rendered and written in chunks of this many frames to bound memory."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="page4d-synth",
        description="Render a deterministic synthetic dynamic scene (RGB, depth, poses, K, dynamic masks).",
    )
    parser.add_argument("--seed", type=int, required=True, help="scene seed (same seed, same frames)")
    parser.add_argument("--frames", type=int, required=True, help="number of frames")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (mcap, tum) or .npz file / folder (npz)"
    )
    parser.add_argument("--format", choices=FORMATS, default="mcap", help="output format (default: mcap)")
    parser.add_argument("--width", type=int, default=640, help="image width in pixels (default: 640)")
    parser.add_argument("--height", type=int, default=480, help="image height in pixels (default: 480)")
    parser.add_argument(
        "--motion", choices=CAMERA_MOTIONS, default="walk", help="camera motion (default: walk)"
    )
    parser.add_argument("--scene", choices=SCENES, default="room", help="scene kind (default: room)")
    parser.add_argument("--movers", type=int, default=3, help=f"moving objects, 0-{MAX_MOVERS} (default: 3)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate (default: 30)")
    parser.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees")
    parser.add_argument("--camera-height", type=float, default=None, help="camera height in metres")
    parser.add_argument("--noise", type=float, default=0.0, help="RGB noise std in 8-bit levels (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {
        "camera_motion": args.motion,
        "scene": args.scene,
        "num_movers": args.movers,
        "fps": args.fps,
        "fov_deg": args.fov,
        "camera_height": args.camera_height,
        "pixel_noise": args.noise,
    }
    out: Path = args.out
    if args.format == "npz" and out.suffix != ".npz":
        out = out / "sequence.npz"
    if args.format == "mcap" and out.exists():
        parser.error(f"{out} already exists; a rosbag2 output needs a new folder")
    if args.format == "tum" and out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty; pick a new or empty folder for the TUM output")
    started = time.perf_counter()
    try:
        if args.format == "npz":
            sequence = generate_sequence(args.seed, args.frames, args.width, args.height, **options)
            written = write_npz(sequence, out)
        else:
            # Validate all arguments once before creating any output.
            generate_sequence(args.seed, 1, args.width, args.height, **options)
            if args.frames < 1:
                raise ValueError(f"--frames must be >= 1, got {args.frames}")
            writer = McapSequenceWriter(out) if args.format == "mcap" else TumSequenceWriter(out)
            try:
                for first in range(0, args.frames, CHUNK_FRAMES):
                    count = min(CHUNK_FRAMES, args.frames - first)
                    chunk = generate_sequence(
                        args.seed, count, args.width, args.height, first_frame=first, **options
                    )
                    writer.append(chunk)
            finally:
                written = writer.close()
    except ValueError as error:
        parser.error(str(error))
    if not args.quiet:
        elapsed = time.perf_counter() - started
        print(
            f"wrote {args.frames} frames {args.width}x{args.height} ({args.scene}, {args.motion}, "
            f"seed {args.seed}) as {args.format} to {written} in {elapsed:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
