"""Training throughput of a preset: steps/s and images/s after a short warm-up.

    python benchmarks/train_speed.py --preset page4d-small --device cpu --threads 2 --steps 5
    python benchmarks/train_speed.py --preset page4d-small --device cuda --batch-size 16 --steps 30

Prints one JSON line. Uses a small synthetic pool (4 sequences) so data generation stays out of the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from page4d_ros.training.config import PRESETS, TrainConfig, preset
from page4d_ros.training.trainer import Trainer


def main() -> None:
    """Measure and print the throughput."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="page4d-small", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--mask", choices=("hold", "cosine", "off"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    values = preset(args.preset).to_dict()
    values["data"]["num_sequences"] = 4
    values["val_data"] = None
    values["steps"] = args.warmup + args.steps
    if args.batch_size:
        values["batch_size"] = args.batch_size
    if args.mask:
        values["mask"]["mode"] = args.mask
    config = TrainConfig.from_dict(values)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, device=args.device)
        trainer._ensure_data()
        for _ in range(args.warmup):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        frames = 0
        started = time.perf_counter()
        for _ in range(args.steps):
            record = trainer.train_step()
            frames += config.batch_size
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    parameters = sum(parameter.numel() for parameter in trainer.model.parameters())
    print(
        json.dumps(
            {
                "preset": args.preset,
                "device": str(trainer.device),
                "threads": torch.get_num_threads(),
                "parameters": parameters,
                "batch_size": config.batch_size,
                "frames_per_window": f"{config.data.min_frames}-{config.data.max_frames}",
                "steps_per_s": args.steps / elapsed,
                "windows_per_s": frames / elapsed,
                "last_loss": record["loss"],
            }
        )
    )


if __name__ == "__main__":
    main()
