"""Builds the model, predictor and streaming pipeline from the node parameters (shared by node and bag tool).

Resolves the checkpoint (a local file; the model shipped in ``page4d_ros/models/`` when none is given), the
device and the precision, loads the weights and warms the model up. Every failure raises ``ValueError`` or
``RuntimeError`` with a message that says what to do. No rclpy import happens here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from page4d_ros.ros.parameters import pipeline_config

SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


def resolve_checkpoint(checkpoint_path: str) -> Path:
    """The checkpoint to load: ``checkpoint_path`` if given, else the one shipped in page4d_ros/models/."""
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise ValueError(
                f"checkpoint_path '{checkpoint_path}' does not exist or is not a file; set "
                "checkpoint_path:=<local file> (weights are never downloaded at run time)"
            )
        return path
    shipped = sorted(p for p in SHIPPED_MODELS_DIR.glob("*") if p.suffix in CHECKPOINT_SUFFIXES)
    if not shipped:
        raise ValueError(
            f"no checkpoint_path given and no model shipped in {SHIPPED_MODELS_DIR}; set "
            "checkpoint_path:=<local .safetensors file> (see the README, section 'Models')"
        )
    return shipped[0]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when CUDA is available, else ``cpu``; explicit CUDA devices must exist."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' requested but CUDA is not available; set device:=cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA devices)")
    return device


def resolve_dtype(precision: str, device: str) -> Any:
    """Torch dtype for ``precision`` on ``device`` (auto: bf16 on sm80+, fp16 on older GPUs, fp32 on CPU)."""
    import torch

    on_cuda = device.startswith("cuda")
    if precision == "auto":
        if not on_cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision in ("bf16", "fp16") and not on_cuda:
        raise ValueError(f"precision '{precision}' needs a CUDA device; use precision:=fp32 (or auto) on CPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU has no bf16 support (needs sm80+); use precision:=fp16")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class PipelineBundle:
    """The loaded model, its predictor and the streaming pipeline, plus what diagnostics report about them."""

    pipeline: Any
    predictor: Any
    device: str
    description: str

    def stats(self) -> dict[str, Any]:
        """The pipeline's counters (flat values only)."""
        return {k: v for k, v in self.pipeline.stats.as_dict().items() if not isinstance(v, (list, dict))}

    def gpu_memory_mb(self) -> float:
        """Peak CUDA memory allocated on the device, in MiB (0 on CPU)."""
        if not self.device.startswith("cuda"):
            return 0.0
        import torch

        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def release(self) -> None:
        """Drop the model and free cached GPU memory."""
        self.predictor.model = None
        self.pipeline = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def warm_up(predictor: Any, config: Any, iterations: int) -> None:
    """Run ``iterations`` windows of zeros at the network input size so the first real window is not slow."""
    from page4d_ros.pipeline.config import PATCH_SIZE

    long_side = config.model_long_side
    short_side = max(PATCH_SIZE, (long_side * 3 // 4) // PATCH_SIZE * PATCH_SIZE)
    size_rule = getattr(predictor, "size_rule", None)
    if size_rule is not None:  # the network family's own input size, for a 4:3 camera
        _, _, long_side, short_side = size_rule(long_side, short_side)
    images = np.zeros((config.window_size, 3, short_side, long_side), dtype=np.float32)
    stamps = np.arange(config.window_size, dtype=np.int64)
    for _ in range(iterations):
        predictor.predict(images, stamps)


def build_pipeline(settings: dict[str, Any], log: Callable[[str], None] = print) -> PipelineBundle:
    """Load the checkpoint named by ``settings`` and build a ready :class:`StreamingPipeline`.

    ``settings`` is a validated parameter dict (:func:`page4d_ros.ros.parameters.validate_parameters`).
    Raises ``ValueError`` (bad settings, missing file, unusable device) or ``RuntimeError`` (corrupt
    checkpoint).
    """
    from page4d_ros.model import load_checkpoint
    from page4d_ros.pipeline.config import checkpoint_long_side
    from page4d_ros.pipeline.predictor import ModelPredictor
    from page4d_ros.pipeline.runner import StreamingPipeline

    path = resolve_checkpoint(settings["checkpoint_path"])
    device = resolve_device(settings["device"])
    dtype = resolve_dtype(settings["precision"], device)
    log(f"loading checkpoint {path} on {device} ({dtype})")
    try:
        model, report = load_checkpoint(
            str(path),
            config=settings["model_preset"] or None,
            device=device,
            dtype=None,
            sha256=settings["checkpoint_sha256"] or None,
        )
    except (
        Exception
    ) as error:  # loaders raise many types (I/O, safetensors, torch, config); all mean unusable
        raise RuntimeError(
            f"cannot load checkpoint {path}: {type(error).__name__}: {error}. Check that the file is "
            "complete (re-copy it, compare checkpoint_sha256) and that model_preset matches it"
        ) from error
    config = pipeline_config(settings, checkpoint_long_side(report.inference))
    if settings["model_long_side"] == 0:
        log(f"model_long_side 0: running the network at {config.model_long_side} px (the checkpoint's size)")
    predictor = ModelPredictor(model, device=device, dtype=dtype, inference=report.inference)
    rule = predictor.size_rule
    if dataclasses.is_dataclass(rule) and hasattr(rule, "resolution") and settings["model_long_side"]:
        # A family with a resolution-based rule (VGGT-Omega: 'balanced'): model_long_side sets it.
        predictor.size_rule = dataclasses.replace(rule, resolution=settings["model_long_side"])
    if predictor.size_rule is not None:
        log(f"{predictor.family}: input size by the family's rule {predictor.size_rule}")
    warm_up(predictor, config, settings["warmup_iters"])
    pipeline = StreamingPipeline(config, predictor)
    family = getattr(model, "family", "vggt")
    description = f"{path.name} ({family}) on {device} ({str(dtype).replace('torch.', '')})"
    log(f"model ready: {description}; {report.loaded_keys} tensors, config from {report.config_source}")
    return PipelineBundle(pipeline=pipeline, predictor=predictor, device=device, description=description)
