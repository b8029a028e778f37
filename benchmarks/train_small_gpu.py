"""Train page4d-small with the mask on and its mask-off ablation side by side on one GPU, in a time budget.

    python benchmarks/train_small_gpu.py --root out/gpu --budget-s 950 --batch-size 16

Steps: (1) generate / cache the synthetic training and validation sequences in parallel; (2) measure the steps/s
of both variants running together (``train_speed.py``); (3) give both the same number of steps, chosen so they fit
the budget, and train them concurrently with ``page4d-train``; (4) write ``ROOT/STATUS`` ("done" or
"failed: ...") and a ``summary.json``. Equal steps, data and seeds make the two runs an equal-budget ablation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from page4d_ros.training.config import TrainConfig, preset
from page4d_ros.training.data import SequencePool

VARIANTS = ("hold", "off")


def _config(args: argparse.Namespace, mask: str, steps: int) -> dict:
    """The training config of one variant."""
    values = preset("page4d-small").to_dict()
    values["steps"] = steps
    values["batch_size"] = args.batch_size
    values["lr"] = args.lr
    values["mask_head_lr"] = 2 * args.lr
    values["mask"]["mode"] = mask
    values["val_every"] = max(1, steps // 10)
    values["checkpoint_every"] = max(1, steps // 10)
    values["log_every"] = max(1, steps // 200)
    values["loader_workers"] = args.loader_workers
    values["time_limit_s"] = args.budget_s * 1.08
    values["data"].update(num_sequences=args.sequences, cache_dir=str(args.root / "cache"), workers=1)
    values["val_data"].update(num_sequences=args.val_sequences, cache_dir=str(args.root / "cache"), workers=1)
    return TrainConfig.from_dict(values).to_dict()


def main() -> None:
    """Run the whole budgeted training."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=900.0, help="wall-clock seconds of training")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--val-sequences", type=int, default=8)
    parser.add_argument("--gen-workers", type=int, default=15)
    parser.add_argument("--loader-workers", type=int, default=6)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    status = args.root / "STATUS"
    summary: dict = {"budget_s": args.budget_s, "batch_size": args.batch_size}
    try:
        started = time.monotonic()
        for name in ("data", "val_data"):
            data = TrainConfig.from_dict(_config(args, "hold", 10)).__getattribute__(name)
            data.workers = args.gen_workers
            SequencePool.from_config(data)
        summary["data_generation_s"] = time.monotonic() - started
        print(f"data ready in {summary['data_generation_s']:.1f} s", flush=True)

        speed_runs = [
            subprocess.Popen(
                [sys.executable, "benchmarks/train_speed.py", "--device", "cuda", "--steps", "12", "--warmup", "3"]
                + ["--batch-size", str(args.batch_size), "--mask", mask],
                stdout=subprocess.PIPE,
                text=True,
            )
            for mask in VARIANTS
        ]
        speeds = []
        for process in speed_runs:
            output, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"speed test failed with status {process.returncode}")
            speeds.append(json.loads(output.strip().splitlines()[-1]))
        summary["speed"] = speeds
        rate = min(speed["steps_per_s"] for speed in speeds)
        steps = max(10, int(rate * args.budget_s * 0.9))
        summary["steps"] = steps
        print(f"concurrent rate {rate:.2f} steps/s -> {steps} steps each", flush=True)

        runs = []
        for mask in VARIANTS:
            run_dir = args.root / f"mask_{mask}"
            run_dir.mkdir(parents=True, exist_ok=True)
            config_path = run_dir / "train_config.yaml"
            config_path.write_text(yaml.safe_dump(_config(args, mask, steps), sort_keys=False))
            log = open(run_dir / "train.log", "w")  # noqa: SIM115 - closed after the process ends
            command = [sys.executable, "-m", "page4d_ros.tools.train", "--config", str(config_path)]
            command += ["--out", str(run_dir), "--device", "cuda"]
            runs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, mask))
        for process, log, mask in runs:
            process.wait()
            log.close()
            summary[f"mask_{mask}_returncode"] = process.returncode
        summary["total_s"] = time.monotonic() - started
        failed = [mask for process, _, mask in runs if process.returncode != 0]
        (args.root / "summary.json").write_text(json.dumps(summary, indent=2))
        status.write_text("done\n" if not failed else f"failed: training of {failed} exited non-zero\n")
    except Exception as error:
        (args.root / "summary.json").write_text(json.dumps(summary, indent=2))
        status.write_text(f"failed: {error!r}\n")
        raise


if __name__ == "__main__":
    main()
