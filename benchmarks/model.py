"""Network benchmark at the node's settings: full forward against the streaming path, loading, mask cost.

Sections (each optional):

- ``stream`` (default): a 640x480 camera stream resized as the node does (long side 224 / 518 px) in windows
  of 8 frames with stride 4. Per window: the full forward (camera + depth + point heads, nothing reused),
  the same without the point head, and the node's streaming path (no point head, per-frame work of the
  overlap frames reused through ``FrameTokenCache``); the ratio full / streaming, peak memory, whether the
  streaming outputs equal those of a recompute bitwise, and for bf16/fp16 the deviation from fp32.
  The first window of the stream only fills the cache and is not timed; the variants are interleaved window
  by window, so that load changes on a shared host hit them alike.
- ``--load``: writes a checkpoint of the preset with random weights to a temporary folder (``.pt`` like the
  released files and ``.safetensors``) and times ``load_checkpoint`` in a fresh process against reading
  the file's bytes, with the peak RSS of each (and the time to touch every weight once after loading).
- ``--mask-blocks``: PAGE-4D's masked global blocks (10-19 of the 1B layout: 10 blocks of the preset's width)
  with and without the mask bias on the token count of a window.

Usage::

    python benchmarks/model.py --preset page4d-small --sizes 224 518
    python benchmarks/model.py --preset page4d-mask --sizes 224 --windows 1 --load --mask-blocks
    python benchmarks/model.py --device cuda --preset page4d-mask --precisions fp32 bf16 fp16 \\
        --sdpa default flash efficient cudnn --compile --json gpu.json

``--preset`` takes any name (or JSON config file) that ``build_model`` accepts. Random weights give
representative timings (the arithmetic does not depend on the values); the deviations of low precision with
random weights only indicate those of trained checkpoints. Output: Markdown rows for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from page4d_ros.model import FrameTokenCache, build_model, load_checkpoint
from page4d_ros.model.layers import Block

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPARED_KEYS = ("pose_enc", "depth", "depth_conf", "dynamics_map", "dynamic_logits")
CAMERA_WIDTH, CAMERA_HEIGHT = 640, 480
MASKED_BLOCKS = 10  # global blocks 10-19 of the released PAGE-4D


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


def _network_size(long_side: int, model: torch.nn.Module | None = None) -> tuple[int, int]:
    """Network input (H, W) of a 640x480 camera at ``long_side``, as the node's preprocessing plans it.

    A network family with its own input-size rule (π³'s pixel budget, VGGT-Omega's 'balanced' size, where
    ``long_side`` sets the resolution as the node's ``model_long_side`` does) uses that rule.
    """
    import dataclasses

    from page4d_ros.pipeline.config import PipelineConfig
    from page4d_ros.pipeline.predictor import ModelPredictor
    from page4d_ros.pipeline.preprocess import plan_resize

    size_rule = None
    if model is not None:
        size_rule = ModelPredictor(model, device=next(model.parameters()).device).size_rule
    if dataclasses.is_dataclass(size_rule) and hasattr(size_rule, "resolution"):
        size_rule = dataclasses.replace(size_rule, resolution=long_side)
    mode = PipelineConfig().resize_mode
    plan = plan_resize(CAMERA_WIDTH, CAMERA_HEIGHT, long_side, mode, size_rule=size_rule)
    return plan.network_height, plan.network_width


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(run: Callable[[], dict], device: torch.device) -> tuple[dict, float, float, float]:
    """Run once: (outputs, wall ms, process CPU ms, peak memory MiB: CUDA allocated / CPU RSS increase)."""
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs = run()
        _synchronize(device)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        return outputs, 1e3 * wall, 1e3 * cpu, torch.cuda.max_memory_allocated(device) / 2**20
    with PeakRssSampler() as sampler:
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs = run()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return outputs, 1e3 * wall, 1e3 * cpu, sampler.increase_bytes / 2**20


def _relative_difference(low: torch.Tensor, high: torch.Tensor) -> float:
    high = high.double()
    return float((low.double() - high).abs().max() / high.abs().max().clamp(min=1e-12))


def _bitwise_equal(first: dict, second: dict) -> bool:
    return all(torch.equal(first[key], second[key]) for key in COMPARED_KEYS if key in second)


@contextlib.contextmanager
def _sdpa_backend(name: str) -> Iterator[None]:
    """Restrict ``scaled_dot_product_attention`` to one backend (``default``: torch's choice)."""
    if name == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]
    with sdpa_kernel([backend]):
        yield


def stream_benchmark(
    model: torch.nn.Module,
    preset: str,
    long_side: int,
    precision: str,
    device: torch.device,
    window: int,
    stride: int,
    windows: int,
    sdpa: str = "default",
    reference: dict[int, dict] | None = None,
) -> tuple[dict, dict[int, dict]]:
    """Time full, no-point-head and streaming windows over one stream; return the row and streaming outputs.

    ``reference`` (the fp32 streaming outputs per window) gives the deviation of a low-precision run.
    """
    height, width = _network_size(long_side, model)
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(window + windows * stride, 3, height, width, generator=generator).to(device)
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    cache = FrameTokenCache(2 * window)
    # Other network families may lack the point head switch or the frame cache: time what they have.
    options = inspect.signature(model.forward).parameters
    no_points = {"compute_points": False} if "compute_points" in options else {}
    reuse = "frame_keys" in options and "frame_cache" in options
    times: dict[str, list[float]] = {"full": [], "no_points": [], "streaming": []}
    cpu_times: dict[str, list[float]] = {name: [] for name in times}
    memory: dict[str, float] = dict.fromkeys(times, 0.0)
    outputs_by_window: dict[int, dict] = {}
    equal = True
    with torch.inference_mode(), autocast, _sdpa_backend(sdpa):
        model(frames[:window][None])  # warm-up (allocator, kernels, oneDNN primitives)
        for index in range(windows + 1):
            start = index * stride
            images = frames[start : start + window][None]
            keys = list(range(start, start + window))
            runs = {
                "full": lambda images=images: model(images),
                "no_points": lambda images=images: model(images, **no_points),
                "streaming": lambda images=images, keys=keys: model(
                    images, **no_points, **({"frame_keys": keys, "frame_cache": cache} if reuse else {})
                ),
            }
            if index == 0:
                runs["streaming"]()  # fills the cache with the first window
                continue
            results = {}
            for name, run in runs.items():
                results[name], wall, cpu, peak = _measure(run, device)
                times[name].append(wall)
                cpu_times[name].append(cpu)
                memory[name] = max(memory[name], peak)
            equal = equal and _bitwise_equal(results["streaming"], results["no_points"])
            outputs_by_window[index] = {
                key: results["streaming"][key].float().cpu()
                for key in COMPARED_KEYS
                if key in results["streaming"]
            }
            del results
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_times.items()}
    # On a CPU shared with other jobs the process CPU time measures the work; wall time includes waiting.
    clock = cpu_medians if device.type == "cpu" else medians
    row: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "preset": preset,
        "size": f"{height}x{width}",
        "window": f"{window}/{stride}",
        "precision": precision,
        "sdpa": sdpa,
        "windows_timed": windows,
        "full_ms": medians["full"],
        "no_points_ms": medians["no_points"],
        "streaming_ms": medians["streaming"],
        "ratio": clock["full"] / clock["streaming"],
        "ratio_clock": "process CPU" if device.type == "cpu" else "wall",
        "full_ms_all": times["full"],
        "streaming_ms_all": times["streaming"],
        "full_cpu_ms": cpu_medians["full"],
        "no_points_cpu_ms": cpu_medians["no_points"],
        "streaming_cpu_ms": cpu_medians["streaming"],
        "full_cpu_ms_all": cpu_times["full"],
        "streaming_cpu_ms_all": cpu_times["streaming"],
        "peak_mib": memory,
        "streaming_equals_recompute": equal,
        "encoder_reuse": f"{cache.encoder_hits}/{cache.encoder_hits + cache.encoder_misses}"
        if reuse
        else "n/a",
    }
    if reference is not None:
        row["deviation_vs_fp32"] = {
            key: max(_relative_difference(outputs_by_window[i][key], reference[i][key]) for i in reference)
            for key in reference[min(reference)]
        }
    return row, outputs_by_window


def _format_stream_row(row: dict) -> str:
    deviation = row.get("deviation_vs_fp32")
    deviation_text = ", ".join(f"{k} {v:.1e}" for k, v in deviation.items()) if deviation else "-"

    def cell(name: str) -> str:
        if row["ratio_clock"] == "wall":
            return f"{row[name + '_ms']:.1f}"
        return f"{row[name + '_ms']:.0f} ({row[name + '_cpu_ms']:.0f})"

    return (
        f"| {row['device']} | {row['preset']} | {row['size']} | {row['precision']} | {row['sdpa']} | "
        f"{cell('full')} | {cell('no_points')} | {cell('streaming')} | "
        f"{row['ratio']:.2f} | {row['peak_mib']['full']:.0f} / {row['peak_mib']['streaming']:.0f} | "
        f"{'yes' if row['streaming_equals_recompute'] else 'NO'} | {deviation_text} |"
    )


def mask_blocks_benchmark(
    preset: str | dict,
    label: str,
    long_side: int,
    window: int,
    repeats: int,
    device: torch.device,
    precision: str,
) -> dict:
    """Time ``MASKED_BLOCKS`` global blocks of the preset's width with and without the PAGE-4D bias."""
    from page4d_ros.model.config import resolve_config

    config = resolve_config(preset)
    height, width = _network_size(long_side)
    per_frame = 1 + config["num_register_tokens"] + (height // 14) * (width // 14)
    tokens = window * per_frame
    special = 1 + config["num_register_tokens"]
    torch.manual_seed(0)
    blocks = [
        Block(
            config["embed_dim"],
            config["num_heads"],
            mlp_ratio=config["mlp_ratio"],
            init_values=config["init_values"],
            qk_norm=config["qk_norm"],
        )
        .to(device)
        .eval()
        for _ in range(MASKED_BLOCKS)
    ]
    x = torch.randn(1, tokens, config["embed_dim"], device=device)
    query_bias = torch.zeros(1, window, per_frame, device=device)
    query_bias[:, :, :special] = 64.0
    key_bias = torch.zeros(1, window, per_frame, device=device)
    key_bias[:, :, special:] = torch.rand(1, window, per_frame - special, device=device) - 0.5
    rows = torch.arange(window, device=device)[:, None] * per_frame + torch.arange(special, device=device)
    biases = (query_bias.reshape(1, -1), key_bias.reshape(1, -1), rows.reshape(-1))
    dtype = PRECISIONS[precision]

    def run(masked: bool) -> dict:
        tokens_out = x
        for block in blocks:
            tokens_out = block(tokens_out, None, *biases) if masked else block(tokens_out)
        return {"tokens": tokens_out}

    times: dict[str, list[float]] = {"nomask": [], "mask": []}
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        run(False), run(True)
        for _ in range(repeats):
            for name in ("nomask", "mask"):
                _, wall, cpu, _ = _measure(lambda name=name: run(name == "mask"), device)
                times[name].append(cpu if device.type == "cpu" else wall)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "preset": label,
        "size": f"{height}x{width}",
        "tokens": tokens,
        "precision": precision,
        "clock": "process CPU" if device.type == "cpu" else "wall",
        "nomask_ms": medians["nomask"],
        "mask_ms": medians["mask"],
        "ratio": medians["mask"] / medians["nomask"],
        "nomask_ms_all": times["nomask"],
        "mask_ms_all": times["mask"],
    }


_LOAD_CHILD = r"""
import json, resource, sys, time
import torch
from page4d_ros.model import load_checkpoint
mode, path, preset = sys.argv[1:4]
preset = json.loads(preset) if preset.startswith("{") else preset
def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096
base = rss()
start = time.perf_counter()
if mode == "read":
    with open(path, "rb") as handle:
        data = handle.read()
    elapsed = time.perf_counter() - start
    touch = 0.0
else:
    model, _ = load_checkpoint(path, preset)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        total = sum(float(p.float().sum()) for p in model.parameters())
    touch = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": elapsed, "touch_seconds": touch, "peak_increase": peak - base}))
"""


def load_benchmark(preset: str | dict, label: str, repeats: int, folder: str | None) -> list[dict]:
    """Write ``preset`` with random weights (.pt, .safetensors); time loading it against reading the bytes."""
    from safetensors.torch import save_file

    rows = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        meta = build_model(preset, device="meta")
        generator = torch.Generator().manual_seed(0)
        state = {
            key: torch.empty(value.shape, dtype=value.dtype).uniform_(-0.02, 0.02, generator=generator)
            for key, value in meta.state_dict().items()
        }
        weight_bytes = sum(value.numel() * value.element_size() for value in state.values())
        paths = {"pt": Path(tmp) / "model.pt", "safetensors": Path(tmp) / "model.safetensors"}
        torch.save(state, paths["pt"])
        save_file(state, str(paths["safetensors"]))
        del state, meta
        config_argument = preset if isinstance(preset, str) else json.dumps(preset)
        environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        for file_format, path in paths.items():
            measured: dict[str, list[dict]] = {"read": [], "load": []}
            for _ in range(repeats):
                for mode in ("read", "load"):
                    output = subprocess.run(
                        [sys.executable, "-c", _LOAD_CHILD, mode, str(path), config_argument],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=environment,
                    ).stdout
                    measured[mode].append(json.loads(output.strip().splitlines()[-1]))
            read_s = statistics.median(m["seconds"] for m in measured["read"])
            load_s = statistics.median(m["seconds"] for m in measured["load"])
            rows.append(
                {
                    "preset": label,
                    "format": file_format,
                    "file_gib": path.stat().st_size / 2**30,
                    "weights_gib": weight_bytes / 2**30,
                    "read_s": read_s,
                    "load_s": load_s,
                    "load_over_read": load_s / read_s,
                    "touch_s": statistics.median(m["touch_seconds"] for m in measured["load"]),
                    "read_peak_over_weights": max(m["peak_increase"] for m in measured["read"])
                    / weight_bytes,
                    "load_peak_over_weights": max(m["peak_increase"] for m in measured["load"])
                    / weight_bytes,
                    "runs": measured,
                }
            )
    return rows


def _compile_blocks(model: torch.nn.Module) -> None:
    """``torch.compile`` every transformer block in place (shapes vary: per frame, per window)."""
    for module in model.modules():
        if isinstance(module, Block):
            module.compile(dynamic=True)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print Markdown rows and optionally write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="page4d-small", help="build_model preset name or JSON config")
    parser.add_argument("--checkpoint", help="time this checkpoint's network instead (stream section only)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 518], help="network long sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS), default=["fp32"])
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument(
        "--windows", type=int, default=3, help="timed windows (after one that fills the cache)"
    )
    parser.add_argument(
        "--sdpa", nargs="+", default=["default"], choices=["default", "flash", "efficient", "cudnn", "math"]
    )
    parser.add_argument("--compile", action="store_true", help="also time with torch.compile'd blocks")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--load", action="store_true", help="time load_checkpoint of a random file")
    parser.add_argument("--load-repeats", type=int, default=2)
    parser.add_argument("--load-dir", help="folder for the temporary checkpoint (default: the system temp)")
    parser.add_argument("--mask-blocks", action="store_true", help="time masked vs plain global blocks")
    parser.add_argument("--mask-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="also write all results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" means fp32
        torch.backends.cudnn.allow_tf32 = False
    preset: Any = args.preset
    if preset.endswith(".json"):
        preset = json.loads(Path(preset).read_text())
    name = args.preset
    results: dict[str, list] = {"stream": [], "mask_blocks": [], "load": []}

    if not args.skip_stream:
        print("CPU cells: wall ms (process CPU ms); the ratio uses process CPU ms on CPU, wall ms on CUDA.")
        print(
            "| device | preset | input HxW | precision | SDPA | full ms | no point head ms | streaming ms | "
            "full / streaming | peak MiB full / streaming | equal | deviation vs fp32 |"
        )
        print("|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|")
        torch.manual_seed(0)
        if args.checkpoint:
            model, _ = load_checkpoint(args.checkpoint, device=device)
            label = Path(args.checkpoint).name
        else:
            label = name
            model = build_model(preset, device=device)
        variants = [(sdpa, False) for sdpa in args.sdpa] + ([("default", True)] if args.compile else [])
        for sdpa, compiled in variants:  # compiled last: compiling changes the model in place
            if compiled:
                _compile_blocks(model)
            for long_side in args.sizes:
                reference = None
                for precision in ["fp32"] + [p for p in args.precisions if p != "fp32"]:
                    try:
                        row, outputs = stream_benchmark(
                            model,
                            label,
                            long_side,
                            precision,
                            device,
                            args.window,
                            args.stride,
                            args.windows,
                            sdpa,
                            reference,
                        )
                    # A backend that cannot run this shape or dtype, or a compile error: report, go on.
                    except RuntimeError as error:
                        message = str(error).splitlines()[0] if str(error) else type(error).__name__
                        print(
                            f"| {label} | {long_side} px | {precision} | {sdpa} | failed: {message} |",
                            flush=True,
                        )
                        continue
                    row["compiled"] = compiled
                    if precision == "fp32":
                        reference = outputs
                    results["stream"].append(row)
                    print(_format_stream_row(row) + (" (compiled)" if compiled else ""), flush=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        del model

    if args.mask_blocks:
        print(
            "\n| preset width | input HxW | tokens | precision | clock | plain ms | masked ms | "
            "masked / plain |"
        )
        print("|---|---|---:|---|---|---:|---:|---:|")
        for long_side in args.sizes:
            for precision in args.precisions:
                try:
                    row = mask_blocks_benchmark(
                        preset, name, long_side, args.window, args.mask_repeats, device, precision
                    )
                except (KeyError, ValueError) as error:  # a family without the VGGT block layout
                    print(f"| {name} | skipped: {error} |", flush=True)
                    continue
                results["mask_blocks"].append(row)
                print(
                    f"| {name} | {row['size']} | {row['tokens']} | {precision} | {row['clock']} | "
                    f"{row['nomask_ms']:.0f} | {row['mask_ms']:.0f} | {row['ratio']:.3f} |",
                    flush=True,
                )

    if args.load:
        print(
            "\n| preset | format | file GiB | read s | load s | load / read | touch s | "
            "peak RSS / weights: read, load |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for row in load_benchmark(preset, name, args.load_repeats, args.load_dir):
            results["load"].append(row)
            print(
                f"| {name} | {row['format']} | {row['file_gib']:.2f} | {row['read_s']:.2f} | "
                f"{row['load_s']:.2f} | {row['load_over_read']:.2f} | {row['touch_s']:.2f} | "
                f"{row['read_peak_over_weights']:.2f}, {row['load_peak_over_weights']:.2f} |",
                flush=True,
            )

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
