"""``page4d-train``: train or fine-tune a PAGE-4D model on synthetic dynamic sequences.

Examples::

    page4d-train --preset page4d-small --out runs/small --device cpu --threads 2
    page4d-train --preset page4d-small --out runs/small --resume --steps 5000
    page4d-train --config my_recipe.yaml --out runs/finetune --device cuda
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from page4d_ros.training.config import PRESETS, TrainConfig, preset


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="page4d-train", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="training config YAML (see page4d_ros/training/config.py)")
    source.add_argument(
        "--preset", choices=sorted(PRESETS), help="named training preset (default page4d-small)"
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics, loss curves)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    parser.add_argument(
        "--steps", type=int, help="total number of steps of the schedule (overrides the config)"
    )
    parser.add_argument(
        "--max-steps", type=int, help="stop after this many more steps (the schedule keeps --steps)"
    )
    parser.add_argument(
        "--time-limit", type=float, help="stop (and save) after this many seconds of training"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--workers", type=int, help="processes generating the synthetic sequences")
    parser.add_argument("--loader-workers", type=int, help="processes preparing batches ahead of the model")
    parser.add_argument("--cache-dir", help="cache generated sequences here as .npz (reused by later runs)")
    parser.add_argument(
        "--mask", choices=("hold", "cosine", "off"), help="override the mask strength schedule"
    )
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The config from ``--config``/``--preset`` with the command-line overrides applied."""
    config = TrainConfig.from_yaml(args.config) if args.config else preset(args.preset or "page4d-small")
    values = config.to_dict()
    if args.steps is not None:
        values["steps"] = args.steps
    if args.time_limit is not None:
        values["time_limit_s"] = args.time_limit
    if args.loader_workers is not None:
        values["loader_workers"] = args.loader_workers
    if args.mask is not None:
        values["mask"]["mode"] = args.mask
    for key in ("data", "val_data"):
        if values.get(key) is None:
            continue
        if args.workers is not None:
            values[key]["workers"] = args.workers
        if args.cache_dir is not None:
            values[key]["cache_dir"] = args.cache_dir
    return TrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``page4d-train``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from page4d_ros.training.trainer import Trainer

    try:
        config = resolve_config(args)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        trainer = Trainer(config, args.out, device=args.device, resume=args.resume)
        last = trainer.run(max_steps=args.max_steps)
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"page4d-train: error: {error}", file=sys.stderr)
        return 2
    print(
        f"page4d-train: stopped at step {trainer.step}, "
        f"last loss {last.get('loss', float('nan')):.4f}, out {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
