"""The PAGE-4D trainer: from-scratch training of small models, middle-block fine-tuning of VGGT checkpoints.

One :class:`Trainer` owns the model, the AdamW optimiser with per-group warmup + cosine schedules, the data
pool and the run folder::

    out/
      train_state.pt      full state for exact resume (model, optimiser, scheduler, step, RNG, history)
      model.safetensors   latest weights (``page4d_ros.model.save_checkpoint`` format)
      best.safetensors    weights with the lowest validation loss so far
      config.yaml         the resolved training config
      metrics.jsonl       one JSON line per logged step / validation
      loss_curves.png     training and validation losses
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from page4d_ros.training.config import TrainConfig
from page4d_ros.training.data import DataConfig, SequencePool, sample_batch
from page4d_ros.training.losses import (
    camera_loss,
    dense_mask_loss,
    dense_regression_loss,
    mask_supervision_loss,
)
from page4d_ros.training.schedules import warmup_cosine_factor

LOGGER = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "loss_curves.png"
CONFIG_FILE = "config.yaml"

MASK_HEAD_PREFIX = "aggregator.spatial_mask_head."
# Upstream PAGE-4D trains frame/global blocks 10..19 of 24; other depths keep the same proportions.
_MIDDLE_START_FRACTION = 10 / 24
_MIDDLE_END_FRACTION = 20 / 24


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def middle_block_range(depth: int, override: list[int] | None = None) -> tuple[int, int]:
    """``[start, end)`` of the blocks fine-tuned by PAGE-4D for an aggregator of ``depth`` blocks."""
    if override is not None:
        start, end = int(override[0]), int(override[1])
        if end > depth:
            raise ValueError(f"middle_blocks {override} exceeds the aggregator depth {depth}")
        return start, end
    start = round(depth * _MIDDLE_START_FRACTION)
    end = max(start + 1, round(depth * _MIDDLE_END_FRACTION))
    return start, end


def select_trainable(
    model: torch.nn.Module, trainable: str, middle_blocks: list[int] | None = None
) -> list[str]:
    """Set ``requires_grad`` for the chosen module set and return the names of the trainable parameters.

    ``"all"``: every parameter. ``"middle"``: ``aggregator.frame_blocks.{a..b-1}``,
    ``aggregator.global_blocks.{a..b-1}`` and the mask head; everything else is frozen. ``[a, b)`` is
    ``middle_blocks`` when given, else the model's masked global blocks (10-19 of 24 upstream), else the same
    proportions of the aggregator depth.
    """
    if trainable == "all":
        prefixes: tuple[str, ...] = ("",)
    elif trainable == "middle":
        depth = len(model.aggregator.frame_blocks)
        masked = getattr(model.aggregator, "mask_global_blocks", None)
        if middle_blocks is None and isinstance(masked, range) and len(masked) > 0:
            middle_blocks = [masked.start, masked.stop]
        start, end = middle_block_range(depth, middle_blocks)
        blocks = [f"aggregator.{kind}_blocks.{i}." for kind in ("frame", "global") for i in range(start, end)]
        prefixes = (*blocks, MASK_HEAD_PREFIX)
    else:
        raise ValueError(f"trainable must be 'all' or 'middle', got {trainable!r}")
    names = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
        if parameter.requires_grad:
            names.append(name)
    if not names:
        raise ValueError(f"the trainable set {trainable!r} selects no parameters of this model")
    return names


def set_mask_alpha(model: torch.nn.Module, alpha: float) -> None:
    """Set the strength of the dynamics-aware attention bias (no-op for models without a mask head)."""
    if getattr(model.aggregator, "spatial_mask_head", None) is not None:
        model.mask_alpha = float(alpha)


def _atomic_torch_save(payload: dict, path: Path) -> None:
    """torch.save via a temporary file so a crash never leaves a truncated checkpoint."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


class Trainer:
    """Runs a :class:`TrainConfig` into a run folder; resumable from its ``train_state.pt``."""

    def __init__(
        self, config: TrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = False
    ) -> None:
        """Build the model, optimiser and data, optionally restoring ``out_dir/train_state.pt``."""
        from page4d_ros.model import build_model

        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' requested but torch.cuda.is_available() is False; use --device cpu"
            )
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # TF32 for the float32 parts (the heads run outside autocast): ample precision for training.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(config.seed)
        if config.init_checkpoint:
            from page4d_ros.model import load_checkpoint

            self.model, _ = load_checkpoint(config.init_checkpoint, config=config.model, device="cpu")
        else:
            if config.trainable == "middle":
                raise ValueError(
                    "trainable 'middle' fine-tunes a pretrained checkpoint: "
                    "set init_checkpoint (e.g. VGGT-1B weights)"
                )
            self.model = build_model(config.model)
        self.model.to(self.device)
        self.trainable_names = select_trainable(self.model, config.trainable, config.middle_blocks)
        self.optimizer, self.group_schedules = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.group_schedules)
        self.use_bf16 = self.device.type == "cuda" and config.amp in ("auto", "bf16")
        if config.amp == "bf16" and self.device.type != "cuda":
            LOGGER.warning("bf16 AMP is used on CUDA only; training in float32 on %s", self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best_val = math.inf
        self.pool: SequencePool | None = None
        self.val_pool: SequencePool | None = None
        if resume:
            self._restore()

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, list[Callable[[int], float]]]:
        """AdamW with one group for the mask head and one for everything else that trains."""
        config = self.config
        main, mask_head = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (mask_head if name.startswith(MASK_HEAD_PREFIX) else main).append(parameter)
        groups, schedules = [], []
        for params, lr, decay, warmup in (
            (main, config.lr, config.weight_decay, config.warmup_fraction),
            (mask_head, config.mask_head_lr, config.mask_head_weight_decay, config.mask_head_warmup_fraction),
        ):
            if not params:
                continue
            groups.append({"params": params, "lr": lr, "weight_decay": decay})
            schedules.append(self._factor_function(warmup))
        return torch.optim.AdamW(groups, betas=(0.9, 0.95)), schedules

    def _factor_function(self, warmup: float) -> Callable[[int], float]:
        """LR factor of one parameter group."""
        steps, minimum = self.config.steps, self.config.min_lr_factor
        return lambda step: warmup_cosine_factor(step, steps, warmup, minimum)

    # ----------------------------------------------------------------------------------------------- data

    def _ensure_data(self) -> None:
        """Generate / load the training and validation pools on first use."""
        if self.pool is None:
            started = time.monotonic()
            self.pool = SequencePool.from_config(self.config.data)
            LOGGER.info(
                "training pool: %d sequences in %.1f s", len(self.pool.sequences), time.monotonic() - started
            )
        if self.val_pool is None and self.config.val_data is not None:
            self.val_pool = SequencePool.from_config(self.config.val_data)

    def _batch_loader(self, start: int, stop: int) -> torch.utils.data.DataLoader:
        """The batches of steps ``start..stop-1`` in order, prepared by ``config.loader_workers`` workers."""
        steps = _StepBatches(self.pool, self.config.data, self.config.batch_size, start, stop)
        workers = self.config.loader_workers
        return torch.utils.data.DataLoader(
            steps,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            prefetch_factor=4 if workers > 0 else None,
            pin_memory=self.device.type == "cuda",
        )

    # ----------------------------------------------------------------------------------------------- losses

    def compute_losses(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """All loss terms of one batch; ``loss`` is the optimised total."""
        from page4d_ros.model import extri_intri_to_pose_encoding

        config = self.config
        images = batch["images"]
        height, width = images.shape[-2:]
        gt_pose = extri_intri_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], (height, width))
        losses = camera_loss(outputs["pose_enc_list"], gt_pose, config.camera)
        depth = dense_regression_loss(
            outputs["depth"],
            outputs["depth_conf"],
            batch["depth"][..., None],
            batch["point_mask"],
            config.depth,
        )
        points = dense_regression_loss(
            outputs["world_points"],
            outputs["world_points_conf"],
            batch["world_points"],
            batch["point_mask"],
            config.point,
        )
        for prefix, terms in (("depth", depth), ("point", points)):
            for key, value in terms.items():
                losses[f"{key}_{prefix}" if key != "loss" else f"loss_{prefix}"] = value
        total = losses["loss_camera"] + depth["loss"] + points["loss"]
        if config.mask_supervision_weight > 0 and outputs.get("dynamics_map") is not None:
            dynamics = outputs["dynamics_map"]
            fraction = patch_dynamic_fraction(batch["dynamic_mask"], dynamics.shape[-2:])
            losses["loss_mask"] = mask_supervision_loss(dynamics, fraction, config.mask_positive_weight)
            total = total + config.mask_supervision_weight * losses["loss_mask"]
        if config.dense_mask_weight > 0 and outputs.get("dynamic_logits") is not None:
            losses["loss_dense_mask"] = dense_mask_loss(
                outputs["dynamic_logits"], batch["dynamic_mask"], config.dense_mask_positive_weight
            )
            total = total + config.dense_mask_weight * losses["loss_dense_mask"]
        losses["loss"] = total
        return losses

    def _forward(self, images: torch.Tensor) -> dict[str, Any]:
        """Model forward, under bf16 autocast on CUDA."""
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            return self.model(images)

    # ----------------------------------------------------------------------------------------------- steps

    def train_step(self, batch: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One optimisation step at ``self.step`` (on ``batch`` when given, else the step's own batch)."""
        self._ensure_data()
        config = self.config
        alpha = config.mask.alpha(self.step, config.steps)
        set_mask_alpha(self.model, alpha)
        self.model.train()
        if batch is None:
            batch = sample_batch(self.pool, config.data, config.batch_size, self.step)
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        outputs = self._forward(batch["images"])
        losses = self.compute_losses(batch, outputs)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norms = []
        for group in self.optimizer.param_groups:
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(group["params"], config.grad_clip)))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        record = {key: float(value.detach()) for key, value in losses.items()}
        record.update(
            step=self.step, mask_alpha=alpha, lr=self.optimizer.param_groups[0]["lr"], grad_norm=grad_norms[0]
        )
        return record

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean losses over the fixed validation batches (None without validation data)."""
        if self.val_pool is None or self.config.val_data is None:
            return None
        set_mask_alpha(self.model, self.config.mask.inference_alpha())
        self.model.eval()
        totals: dict[str, float] = {}
        for index in range(self.config.val_batches):
            batch = {
                key: value.to(self.device)
                for key, value in sample_batch(
                    self.val_pool, self.config.val_data, self.config.batch_size, index
                ).items()
            }
            losses = self.compute_losses(batch, self._forward(batch["images"]))
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value) / self.config.val_batches
        return {f"val_{key}": value for key, value in totals.items()}

    def run(self, max_steps: int | None = None) -> dict[str, float]:
        """Train until ``config.steps`` (or ``max_steps`` more steps, or the time limit), saving as set up."""
        config = self.config
        self._ensure_data()
        (self.out_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        target = config.steps if max_steps is None else min(config.steps, self.step + max_steps)
        started = time.monotonic()
        last: dict[str, float] = {}
        batches = iter(self._batch_loader(self.step, target))
        while self.step < target:
            step_started = time.monotonic()
            last = self.train_step(next(batches))
            last["step_time_s"] = time.monotonic() - step_started
            if not math.isfinite(last["loss"]):
                raise FloatingPointError(
                    f"loss became {last['loss']} at step {self.step}; lower the learning rate"
                )
            if self.step % config.log_every == 0 or self.step == target:
                self._log(last)
            if self.step % config.val_every == 0 or self.step == target:
                val = self.validate()
                if val is not None:
                    self._log({"step": self.step, **val})
                    if val["val_loss"] < self.best_val:
                        self.best_val = val["val_loss"]
                        self.export(self.out_dir / BEST_FILE)
            if self.step % config.checkpoint_every == 0 and self.step < target:
                self.save()
            if config.time_limit_s is not None and time.monotonic() - started > config.time_limit_s:
                LOGGER.info("time limit reached at step %d", self.step)
                break
        self.save()
        return last

    # ----------------------------------------------------------------------------------------------- output

    def _log(self, record: dict[str, float]) -> None:
        """Append a record to the history and ``metrics.jsonl``."""
        self.history.append(record)
        with open(self.out_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if "loss" in record:
            LOGGER.info(
                "step %d loss %.4f (camera %.4f depth %.4f point %.4f) lr %.2e alpha %.1f",
                record["step"],
                record["loss"],
                record["loss_camera"],
                record["loss_depth"],
                record["loss_point"],
                record["lr"],
                record["mask_alpha"],
            )
        else:
            LOGGER.info("step %d validation loss %.4f", record["step"], record.get("val_loss", float("nan")))

    def export(self, path: Path) -> None:
        """Write the model weights with its config as safetensors (the shipped-model format); the metadata
        also records the training image size as the ``model_long_side`` to run the model at."""
        from page4d_ros.model import save_checkpoint

        set_mask_alpha(self.model, self.config.mask.inference_alpha())
        data = self.config.data
        save_checkpoint(self.model, path, inference={"model_long_side": max(data.width, data.height)})

    def save(self) -> None:
        """Write ``train_state.pt`` (exact-resume state), the latest weights and the loss curves."""
        payload = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "best_val": self.best_val,
            "config": self.config.to_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }
        _atomic_torch_save(payload, self.out_dir / STATE_FILE)
        self.export(self.out_dir / MODEL_FILE)
        plot_loss_curves(self.history, self.out_dir / CURVES_FILE)

    def _restore(self) -> None:
        """Load ``train_state.pt`` from the run folder."""
        path = self.out_dir / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist (nothing to resume in {self.out_dir})")
        payload = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = int(payload["step"])
        self.history = list(payload["history"])
        self.best_val = float(payload["best_val"])
        rng = payload["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
        LOGGER.info("resumed %s at step %d", path, self.step)


class _StepBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``i`` is the batch of step ``start + i`` (deterministic: order-safe)."""

    def __init__(
        self, pool: SequencePool, config: DataConfig, batch_size: int, start: int, stop: int
    ) -> None:
        self.pool, self.config, self.batch_size, self.start, self.stop = pool, config, batch_size, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return sample_batch(self.pool, self.config, self.batch_size, self.start + index)


def patch_dynamic_fraction(dynamic_mask: torch.Tensor, patch_grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of dynamic pixels in each patch: ``[B, S, H, W]`` bool -> ``[B, S, Hp, Wp]`` float."""
    batch, frames, height, width = dynamic_mask.shape
    rows, cols = int(patch_grid[0]), int(patch_grid[1])
    if height % rows or width % cols:
        raise ValueError(f"image {height}x{width} is not a whole number of {rows}x{cols} patches")
    pooled = F.avg_pool2d(
        dynamic_mask.reshape(batch * frames, 1, height, width).float(), (height // rows, width // cols)
    )
    return pooled.reshape(batch, frames, rows, cols)


def plot_loss_curves(history: list[dict[str, float]], path: Path) -> None:
    """Plot training (and validation) losses against the step into a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [record for record in history if "loss" in record]
    val = [record for record in history if "val_loss" in record]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "loss_camera", "loss_depth", "loss_point", "loss_mask", "loss_dense_mask"):
        points = [(record["step"], record[key]) for record in train if key in record]
        if points:
            steps, values = zip(*points)
            axes[0].plot(steps, values, label=key)
    axes[0].set_title("training")
    for key in ("val_loss", "val_loss_camera", "val_loss_depth", "val_loss_point", "val_loss_reg_depth"):
        points = [(record["step"], record[key]) for record in val if key in record]
        if points:
            steps, values = zip(*points)
            axes[1].plot(steps, values, marker="o", label=key)
    axes[1].set_title("validation")
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(True, alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
