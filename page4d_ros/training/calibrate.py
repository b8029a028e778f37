"""Calibrate the decision threshold of a ``dense_dynamics`` model into its weights.

A per-pixel dynamic channel trained with a weighted cross-entropy is rarely best thresholded at 0.5, while the
pipeline (``mask_threshold``, default 0.5) and every consumer of the published masks expect 0.5. The dynamic
logit is its own output channel of the depth head's last 1x1 convolution, so subtracting ``logit(t)`` from
that channel's bias moves the decision boundary from probability ``t`` to 0.5 exactly and changes nothing else
(depth, confidence, poses and the mask head's attention bias are untouched).

``t`` is chosen on synthetic **validation** sequences (seeds of the training presets' validation data, never
the held-out ones) as the threshold with the best pooled IoU::

    python -m page4d_ros.training.calibrate --checkpoint runs/small/model.safetensors --out small.safetensors
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from page4d_ros.synthetic import SyntheticSequence
from page4d_ros.training.evaluate import held_out_sequences, run_window

DENSE_BIAS_INDEX = 2
"""Output channel of the depth head's last convolution that holds the dynamic logit (after depth, conf)."""
DEFAULT_THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
VALIDATION_SEED = 900_000


def dynamic_probabilities(model: torch.nn.Module, sequence: SyntheticSequence) -> np.ndarray:
    """Per-pixel dynamic probabilities ``[S, H, W]`` of one window holding all frames of ``sequence``."""
    if not model.config.get("dense_dynamics"):
        raise ValueError("the model has no per-pixel dynamic channel (dense_dynamics is off)")
    outputs = run_window(model, sequence, compute_camera=False, compute_points=False)
    return torch.sigmoid(outputs["dynamic_logits"][0].float()).numpy()


def pooled_iou_by_threshold(
    probabilities: Sequence[np.ndarray], masks: Sequence[np.ndarray], thresholds: Sequence[float]
) -> dict[float, float]:
    """IoU of ``probability >= t`` against the masks, pooled over all pixels of all sequences, per ``t``."""
    scores = {}
    for threshold in thresholds:
        intersection = union = 0
        for probability, mask in zip(probabilities, masks):
            predicted = probability >= threshold
            intersection += int(np.count_nonzero(predicted & mask))
            union += int(np.count_nonzero(predicted | mask))
        scores[float(threshold)] = intersection / union if union else 0.0
    return scores


def shift_decision_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Move the dynamic channel's decision boundary from probability ``threshold`` to 0.5 (in place)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not model.config.get("dense_dynamics"):
        raise ValueError("the model has no per-pixel dynamic channel (dense_dynamics is off)")
    final = model.depth_head.scratch.output_conv2[-1]
    with torch.no_grad():
        final.bias[DENSE_BIAS_INDEX] -= math.log(threshold / (1.0 - threshold))


def main(argv: list[str] | None = None) -> int:
    """Pick the best threshold on validation sequences, bake it into the weights and save the result."""
    from page4d_ros.model import CheckpointError, load_checkpoint, save_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="calibrated .safetensors to write")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--height", type=int, default=84)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED, help="first validation sequence seed")
    args = parser.parse_args(argv)
    try:
        model, report = load_checkpoint(args.checkpoint)
        sequences = held_out_sequences(args.sequences, args.frames, args.width, args.height, seed=args.seed)
        probabilities = [dynamic_probabilities(model, sequence) for sequence in sequences]
        scores = pooled_iou_by_threshold(
            probabilities, [s.dynamic_mask for s in sequences], DEFAULT_THRESHOLDS
        )
        best = max(scores, key=scores.get)
        shift_decision_threshold(model, best)
        inference = {**report.inference, "dense_threshold_calibrated": best}
        save_checkpoint(model, Path(args.out), inference=inference)
    except (ValueError, CheckpointError) as error:
        print(f"calibrate: error: {error}", file=sys.stderr)
        return 2
    for threshold, score in scores.items():
        print(
            f"threshold {threshold:.2f}: pooled IoU {score:.3f}{'  <- chosen' if threshold == best else ''}"
        )
    print(f"wrote {args.out}: probability {best:.2f} is now the 0.5 boundary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
