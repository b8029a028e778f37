"""Pipeline adapter of the VGGT-Omega family: its input-size rule and its outputs as a ``WindowPrediction``.

- Size rule: the family's 'balanced' rule (``page4d_ros.model.vggt_omega.BalancedSize``: multiples of 16,
  about ``(resolution/16)^2`` patches per frame, aspect ratio cropped to [0.5, 2]) at the checkpoint's
  ``image_resolution`` (512; 256 for the text checkpoint). ``ModelPredictor.size_rule`` hands it to
  ``plan_resize``; upstream crops before resizing, the pipeline resizes the whole image by the same factor
  and crops after (sub-pixel difference, exact intrinsics bookkeeping).
- Outputs: ``pose_enc`` decodes as VGGT's (camera-from-world, OpenCV axes, XYZW quaternion, principal point
  at the centre of the network image); ``depth`` is z-depth; ``depth_conf`` is ``1 + exp(.)`` >= 1, the scale
  of VGGT's depth confidence that ``conf_threshold`` / ``conf_percentile`` cut. There is no dynamics head, so
  ``dynamics`` is None and dynamic masks come from the geometric test alone. The text-alignment head is
  not run.
"""

from __future__ import annotations

import numpy as np
import torch

from page4d_ros.pipeline.types import WindowPrediction

FAMILY = "vggt-omega"
# The FoV has a floor of 0.01 rad in the network (relu + 0.01); a diverging network may still exceed pi.
MAX_FOV_RAD = np.pi - 1e-2


class VGGTOmegaAdapter:
    """Runs a ``VGGTOmega`` network on one window and converts its outputs.

    Args:
        model: the network (its ``config`` holds ``image_resolution`` and ``patch_size``).
        resolution: 'balanced' resolution overriding the checkpoint's (None: the checkpoint's).
    """

    def __init__(self, model: torch.nn.Module, resolution: int | None = None) -> None:
        from page4d_ros.model.vggt_omega import BalancedSize

        config = model.config
        self.size_rule = BalancedSize(int(resolution or config["image_resolution"]), config["patch_size"])

    def predict(self, model: torch.nn.Module, batch: torch.Tensor, dtype: torch.dtype) -> WindowPrediction:
        """Predict one window ``batch`` [1, S, 3, H, W] in [0, 1] (autocast to ``dtype`` on CUDA)."""
        from page4d_ros.model import pose_encoding_to_extri_intri

        height, width = batch.shape[-2:]
        use_autocast = batch.device.type == "cuda" and dtype != torch.float32
        with torch.inference_mode(), torch.autocast(batch.device.type, dtype=dtype, enabled=use_autocast):
            outputs = model(batch, compute_text=False)
        pose_enc = outputs["pose_enc"].float().clone()
        pose_enc[..., 7:9] = pose_enc[..., 7:9].clamp(max=MAX_FOV_RAD)
        extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (height, width))
        return WindowPrediction(
            extrinsics=extrinsics[0].double().cpu().numpy(),
            intrinsics=intrinsics[0].double().cpu().numpy(),
            depth=outputs["depth"].float()[0, ..., 0].cpu().numpy(),
            depth_conf=outputs["depth_conf"].float()[0].cpu().numpy(),
            dynamics=None,
        )
