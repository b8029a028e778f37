"""Training configuration: one dataclass tree, loadable from YAML, with named presets."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from page4d_ros.training.data import DataConfig
from page4d_ros.training.losses import CameraLossConfig, DenseLossConfig
from page4d_ros.training.schedules import MaskSchedule

TRAINABLE_SETS = ("all", "middle")
AMP_MODES = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Everything a training run needs; ``TrainConfig.from_dict`` validates a (YAML) mapping.

    ``trainable``: ``"all"`` trains every parameter (from scratch); ``"middle"`` trains only the middle frame
    and global blocks plus the mask head, the PAGE-4D fine-tuning set (blocks 10-19 of 24; ``middle_blocks``
    overrides the ``[start, end)`` range, otherwise it scales with the model depth).
    """

    model: str | dict = "page4d-small"
    init_checkpoint: str | None = None
    trainable: str = "all"
    middle_blocks: list[int] | None = None
    steps: int = 1000
    batch_size: int = 4
    lr: float = 2e-4
    mask_head_lr: float = 4e-4
    weight_decay: float = 0.01
    mask_head_weight_decay: float = 0.02
    warmup_fraction: float = 0.05
    mask_head_warmup_fraction: float = 0.15
    min_lr_factor: float = 1e-3
    grad_clip: float = 1.0
    amp: str = "auto"
    seed: int = 0
    camera: CameraLossConfig = field(default_factory=CameraLossConfig)
    depth: DenseLossConfig = field(default_factory=lambda: DenseLossConfig(gradient_loss="grad"))
    point: DenseLossConfig = field(default_factory=lambda: DenseLossConfig(gradient_loss="normal"))
    mask: MaskSchedule = field(default_factory=MaskSchedule)
    mask_supervision_weight: float = 0.0
    mask_positive_weight: float = 1.0
    dense_mask_weight: float = 0.0
    dense_mask_positive_weight: float = 1.0
    data: DataConfig = field(default_factory=DataConfig)
    val_data: DataConfig | None = None
    val_batches: int = 4
    val_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    time_limit_s: float | None = None
    loader_workers: int = 0

    def __post_init__(self) -> None:
        """Validate the settings."""
        if self.trainable not in TRAINABLE_SETS:
            raise ValueError(f"trainable must be one of {TRAINABLE_SETS}, got {self.trainable!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "log_every", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "mask_head_lr", "grad_clip", "mask_positive_weight", "dense_mask_positive_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.min_lr_factor <= 1.0:
            raise ValueError(f"min_lr_factor must be in (0, 1], got {self.min_lr_factor}")
        if self.middle_blocks is not None and (
            len(self.middle_blocks) != 2 or not 0 <= self.middle_blocks[0] < self.middle_blocks[1]
        ):
            raise ValueError(
                f"middle_blocks must be [start, end) with 0 <= start < end, got {self.middle_blocks}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain mapping (nested mappings for the sub-configs); unknown keys are errors."""
        return _build(cls, values, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a YAML file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(values).__name__}")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (YAML/JSON-serialisable) that ``from_dict`` turns back into an equal config."""
        return asdict(self)


_NESTED = {
    "camera": CameraLossConfig,
    "depth": DenseLossConfig,
    "point": DenseLossConfig,
    "mask": MaskSchedule,
    "data": DataConfig,
    "val_data": DataConfig,
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, recursing into the known nested configs."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys are {sorted(known)}")
    kwargs = {}
    for key, value in values.items():
        nested = _NESTED.get(key) if cls is TrainConfig else None
        if nested is not None and value is not None and not is_dataclass(value):
            value = _build(nested, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from error


# Scene / motion / mover mixes cycled through by the synthetic training sequences.
_SYNTHETIC_VARIETY: list[dict[str, Any]] = [
    {"camera_motion": motion, "scene": scene, "num_movers": movers}
    for motion, scene, movers in (
        ("walk", "room", 3),
        ("orbit", "outdoor", 4),
        ("handheld", "room", 4),
        ("walk", "outdoor", 3),
        ("orbit", "room", 2),
        ("rotate", "outdoor", 3),
        ("handheld", "outdoor", 5),
        ("rotate", "room", 4),
    )
]

# Synthetic windows of the small models (112 x 84, the size the shipped model was trained and runs at).
_SMALL_TRAIN_DATA: dict[str, Any] = {
    "num_sequences": 192,
    "frames_per_sequence": 32,
    "width": 112,
    "height": 84,
    "min_frames": 2,
    "max_frames": 8,
    "max_stride": 4,
    "generator_kwargs": _SYNTHETIC_VARIETY,
    "workers": 2,
}
_SMALL_VAL_DATA: dict[str, Any] = {
    "num_sequences": 4,
    "frames_per_sequence": 32,
    "width": 112,
    "height": 84,
    "seed": 900000,
    "min_frames": 8,
    "max_frames": 8,
    "generator_kwargs": _SYNTHETIC_VARIETY,
}

# Presets ("preset" deep-copies them before use). "page4d-small" trains the shipped small model from scratch
# on synthetic dynamic scenes; "page4d-small-v1" is the first, smaller recipe (its runs are the mask ablation
# of MODEL_CARD.md); "page4d-finetune" is the released PAGE-4D recipe (middle blocks + mask head of VGGT-1B).
PRESETS: dict[str, dict[str, Any]] = {
    # 4-window batches of 2-8 frames (the node's window is 8) with strides up to 4 (the node's keyframe gate
    # also spaces frames), the depth gradient term on, a cosine decay over the whole run, and a per-pixel
    # dynamic channel (``dense_dynamics``) trained against the ground-truth motion masks.
    "page4d-small": {
        "model": {"preset": "page4d-small", "dense_dynamics": True},
        "trainable": "all",
        "steps": 5500,
        "batch_size": 4,
        "lr": 3e-4,
        "mask_head_lr": 6e-4,
        "warmup_fraction": 0.03,
        "mask_head_warmup_fraction": 0.05,
        "min_lr_factor": 0.01,
        "mask": {"mode": "hold"},
        "mask_supervision_weight": 1.0,
        "mask_positive_weight": 10.0,
        "dense_mask_weight": 1.0,
        "dense_mask_positive_weight": 3.0,
        "val_every": 250,
        "checkpoint_every": 250,
        "data": _SMALL_TRAIN_DATA,
        "val_data": _SMALL_VAL_DATA,
    },
    "page4d-small-v1": {
        "model": "page4d-small",
        "trainable": "all",
        "steps": 1200,
        "batch_size": 1,
        "lr": 3e-4,
        "mask_head_lr": 6e-4,
        "mask": {"mode": "hold"},
        "mask_supervision_weight": 1.0,
        "mask_positive_weight": 10.0,
        "val_every": 100,
        "checkpoint_every": 100,
        "data": {
            **_SMALL_TRAIN_DATA,
            "num_sequences": 48,
            "frames_per_sequence": 24,
            "max_frames": 4,
            "max_stride": 3,
        },
        "val_data": {**_SMALL_VAL_DATA, "frames_per_sequence": 24, "min_frames": 4, "max_frames": 4},
    },
    "page4d-finetune": {
        "model": "page4d-mask",
        "trainable": "middle",
        "steps": 10000,
        "batch_size": 1,
        "lr": 1e-5,
        "mask_head_lr": 2e-5,
        "weight_decay": 0.01,
        "mask_head_weight_decay": 0.02,
        "warmup_fraction": 0.05,
        "mask_head_warmup_fraction": 0.15,
        "min_lr_factor": 1e-3,
        "depth": {"gamma": 0.3, "alpha": 0.06, "gradient_loss": "grad"},
        "mask": {"mode": "cosine", "hold_fraction": 0.6, "end_fraction": 1.0},
        "data": {"width": 518, "height": 518, "min_frames": 2, "max_frames": 16, "frames_per_sequence": 32},
    },
}


def preset(name: str) -> TrainConfig:
    """A named training preset (see ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig.from_dict(copy.deepcopy(PRESETS[name]))
