"""Training and fine-tuning of PAGE-4D models.

- :class:`~page4d_ros.training.trainer.Trainer` runs a :class:`~page4d_ros.training.config.TrainConfig`
  (presets in :data:`~page4d_ros.training.config.PRESETS`: ``"page4d-small"`` from scratch on synthetic
  dynamic scenes, ``"page4d-finetune"`` the PAGE-4D middle-block recipe on a VGGT-1B checkpoint);
  ``page4d-train`` is its command line.
- :mod:`~page4d_ros.training.losses`: camera loss, confidence-weighted depth / point-map losses.
- :mod:`~page4d_ros.training.schedules`: mask strength (hold / cosine / off), warmup + cosine LR.
- :mod:`~page4d_ros.training.data`: synthetic windows normalised like VGGT.
- :mod:`~page4d_ros.training.evaluate`: held-out evaluation of a checkpoint with ``page4d_ros.evaluation``.
"""

from page4d_ros.training.config import PRESETS, TrainConfig, preset
from page4d_ros.training.trainer import Trainer

__all__ = ["PRESETS", "TrainConfig", "Trainer", "preset"]
