"""Network benchmark: milliseconds per window and peak memory for 2/4/8/16 frames.

CPU part: a small configuration (default ``page4d-small`` at 224x224, fp32). CUDA part (when a GPU is
present): VGGT-1B size (``page4d-mask`` preset by default, so the masked-attention path is timed too) with
random weights at 392x518, fp32 and bf16/fp16 autocast, plus the bf16-vs-fp32 output differences.

Usage::

    python benchmarks/model.py                        # CPU small config, then CUDA 1B if available
    python benchmarks/model.py --frames 2 4 --repeats 2 --skip-cuda
    python benchmarks/model.py --cuda-config vggt-1b --cuda-size 518x518 --json results.json

Random weights give representative timings (the arithmetic does not depend on the values). Output is a
Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from page4d_ros.model import build_model


class PeakRssSampler:
    """Peak resident-set-size increase over a baseline, sampled from /proc/self/statm every millisecond."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.baseline = 0
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __enter__(self) -> PeakRssSampler:
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def increase_bytes(self) -> int:
        """Peak RSS minus the RSS when sampling started."""
        return self.peak - self.baseline


def _time_runs(
    run: Callable[[], Any], repeats: int, synchronize: Callable[[], None]
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU milliseconds of each run (CPU time is robust to other load on the host)."""
    wall, cpu = [], []
    for _ in range(repeats):
        synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        synchronize()
        wall.append((time.perf_counter() - start) * 1000.0)
        cpu.append((time.process_time() - start_cpu) * 1000.0)
    return wall, cpu


def _relative_difference(low: torch.Tensor, high: torch.Tensor) -> float:
    return float((low.double() - high.double()).abs().max() / high.double().abs().max().clamp(min=1e-12))


_COMPARED_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "dynamics_map")


def benchmark(
    config: str,
    size: tuple[int, int],
    frames_list: list[int],
    repeats: int,
    device: torch.device,
    low_precision: torch.dtype | None = None,
) -> list[dict]:
    """Time full forwards (camera + depth + points) per window length, in fp32 and optionally under autocast.

    Memory: on CUDA the peak allocated bytes (weights included); on CPU the peak RSS increase during the
    timed runs (weights excluded). With ``low_precision``, also the max relative output differences between
    the autocast and the fp32 run on the same input.
    """
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" means fp32
        torch.backends.cudnn.allow_tf32 = False
        synchronize: Callable[[], None] = torch.cuda.synchronize
        device_name = torch.cuda.get_device_name(device)
    else:
        synchronize = lambda: None  # noqa: E731 - trivial no-op
        device_name = f"cpu ({torch.get_num_threads()} threads)"
    model = build_model(config, device=device)
    height, width = size
    precisions = [("fp32", None)]
    if low_precision is not None:
        precisions.append((str(low_precision).replace("torch.", ""), low_precision))
    results = []
    with torch.inference_mode():
        for frames in frames_list:
            images = torch.rand(1, frames, 3, height, width, device=device)
            compared: dict[str, dict[str, torch.Tensor]] = {}
            for label, dtype in precisions:

                def run(images: torch.Tensor = images, dtype: torch.dtype | None = dtype) -> dict[str, Any]:
                    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        return model(images)

                run()  # warm-up: allocator, kernels / oneDNN primitives
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    times, cpu_times = _time_runs(run, repeats, synchronize)
                    peak_bytes = torch.cuda.max_memory_allocated(device)
                else:
                    with PeakRssSampler() as sampler:
                        times, cpu_times = _time_runs(run, repeats, synchronize)
                    peak_bytes = sampler.increase_bytes
                row = {
                    "device": device_name,
                    "config": config,
                    "size": f"{height}x{width}",
                    "frames": frames,
                    "precision": label,
                    "ms_per_window": statistics.median(times),
                    "ms_per_frame": statistics.median(times) / frames,
                    "cpu_ms_per_window": statistics.median(cpu_times),
                    "peak_mem_mib": peak_bytes / 2**20,
                }
                results.append(row)
                print(_format_row(row), flush=True)
                if low_precision is not None:
                    outputs = run()
                    compared[label] = {key: outputs[key].float() for key in _COMPARED_KEYS if key in outputs}
                    del outputs
            if low_precision is not None:
                low_label = precisions[1][0]
                differences = {
                    key: _relative_difference(compared[low_label][key], compared["fp32"][key])
                    for key in compared["fp32"]
                }
                results[-1]["relative_difference_vs_fp32"] = differences
                print(f"    {low_label} vs fp32, max |diff| / max |fp32|: {differences}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _format_row(row: dict) -> str:
    return (
        f"| {row['device']} | {row['config']} | {row['size']} | {row['frames']} | {row['precision']} | "
        f"{row['ms_per_window']:.1f} | {row['ms_per_frame']:.1f} | {row['cpu_ms_per_window']:.0f} | "
        f"{row['peak_mem_mib']:.0f} |"
    )


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(value) for value in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must be HxW, got {text!r}") from error
    return height, width


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print Markdown rows (and optionally write JSON)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-config", default="page4d-small")
    parser.add_argument("--cpu-size", type=_parse_size, default=(224, 224), help="HxW, default 224x224")
    parser.add_argument("--cuda-config", default="page4d-mask")
    parser.add_argument("--cuda-size", type=_parse_size, default=(392, 518), help="HxW, default 392x518")
    parser.add_argument("--cuda-dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-cuda", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="also write all results to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    print("| device | config | input HxW | frames | precision | ms/window | ms/frame | CPU ms | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    results: list[dict] = []
    if not args.skip_cpu:
        results += benchmark(args.cpu_config, args.cpu_size, args.frames, args.repeats, torch.device("cpu"))
    if not args.skip_cuda:
        if torch.cuda.is_available():
            dtype = getattr(torch, args.cuda_dtype)
            results += benchmark(
                args.cuda_config, args.cuda_size, args.frames, args.repeats, torch.device("cuda"), dtype
            )
        else:
            print("(no CUDA device: skipped the VGGT-1B GPU benchmark)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
