"""``ModelPredictor``: runs the PAGE-4D / VGGT network on one window and returns numpy predictions."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from page4d_ros.pipeline import pi3_adapter
from page4d_ros.pipeline.types import WindowPrediction
from page4d_ros.pipeline.vggt_omega_adapter import FAMILY as VGGT_OMEGA
from page4d_ros.pipeline.vggt_omega_adapter import VGGTOmegaAdapter

DYNAMICS_SIGNS = ("auto", "positive", "negative")
# The camera head's FoV goes through a ReLU, so an untrained or diverging network can output 0 (infinite focal
# length). Clamping to a degenerate-but-finite range keeps the intrinsics and everything after them finite.
MIN_FOV_RAD = 1e-2
MAX_FOV_RAD = np.pi - 1e-2
CACHED_FRAMES = 16
"""Frames whose per-frame network work is kept for the next windows (two windows of the node's default 8)."""


def _has_mask_head(model: torch.nn.Module) -> bool:
    """True when the network predicts dynamics: a per-pixel dynamic channel (``dense_dynamics``) or a mask
    head, found by its config, an attribute or a module name."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and config.get("dense_dynamics"):
        return True
    flag = getattr(model, "has_mask_head", None)
    if isinstance(flag, bool):
        return flag
    return any("mask_head" in name for name, _ in model.named_modules())


def _accepts_frame_cache(model: torch.nn.Module) -> bool:
    """True when ``model.forward`` takes ``frame_keys`` and ``frame_cache`` (the VGGT family does)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "frame_keys" in parameters and "frame_cache" in parameters


def _default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA when supported (Ampere and newer), fp16 otherwise."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class ModelPredictor:
    """Wraps the network as a :class:`~page4d_ros.pipeline.types.Predictor`.

    Runs under ``torch.inference_mode`` with autocast to ``dtype`` on CUDA (fp32 on CPU); the point head is
    skipped (the pipeline builds clouds from depth). With ``reuse_frames`` (default) and a network that
    supports it, the per-frame work of frames seen in the previous windows (keyed by their stamps and checked
    against their pixels) is reused, with bitwise the same outputs; :meth:`reset_stream` forgets it.
    A network with a per-pixel dynamic channel (``dynamic_logits``, supervised, positive = dynamic) gives
    the dynamics as ``sigmoid(logit) - 0.5``.
    Otherwise the PAGE-4D mask head's patch map is used; its sign is learned, so it is normalised:
    ``"positive"``/``"negative"`` say which raw sign means dynamic; ``"auto"`` assumes dynamic pixels are the
    minority of a window and flips the map when its median is positive.

    A π³ network (``model.family == "pi3"``) goes through :mod:`~page4d_ros.pipeline.pi3_adapter` instead:
    its input size rule is ``size_rule`` (the runner plans the resize with it; ``inference`` may hold the
    checkpoint's ``pixel_limit``) and, as ``uses_calibration`` says, it takes the camera_info K when given.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        dynamics_sign: str = "auto",
        inference: Mapping[str, Any] | None = None,
        reuse_frames: bool = True,
    ) -> None:
        if dynamics_sign not in DYNAMICS_SIGNS:
            raise ValueError(f"dynamics_sign must be one of {list(DYNAMICS_SIGNS)}, got {dynamics_sign!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device} requested but CUDA is not available; use device='cpu'")
        self.dtype = dtype if dtype is not None else _default_dtype(self.device)
        self.model = model.to(self.device).eval()
        self.dynamics_sign = dynamics_sign
        self.has_dynamics_map = _has_mask_head(model)
        self.family = getattr(model, "family", "vggt")
        self.uses_calibration = self.family == "pi3"
        # Other network families bring their input-size rule (see ``pipeline.preprocess.SizeRule``) and their
        # conversion of outputs to a WindowPrediction.
        self.omega_adapter = VGGTOmegaAdapter(model) if self.family == VGGT_OMEGA else None
        self.size_rule = None
        if self.family == "pi3":
            self.size_rule = pi3_adapter.size_rule(inference, model.config["patch_size"])
        elif self.omega_adapter is not None:
            self.size_rule = self.omega_adapter.size_rule
        self.frame_cache = None
        if reuse_frames and _accepts_frame_cache(model):
            from page4d_ros.model.aggregator import FrameTokenCache

            self.frame_cache = FrameTokenCache(CACHED_FRAMES)

    def reset_stream(self) -> None:
        """Forget the frames of the current stream (the pipeline calls this at every reset)."""
        if self.frame_cache is not None:
            self.frame_cache.clear()

    def _run(self, images: torch.Tensor, stamps_ns: np.ndarray) -> dict[str, Any]:
        use_autocast = self.device.type == "cuda" and self.dtype != torch.float32
        options: dict[str, Any] = {"compute_points": False}
        if self.frame_cache is not None:
            options["frame_keys"] = [int(stamp) for stamp in stamps_ns]
            options["frame_cache"] = self.frame_cache
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=use_autocast):
            return self.model(images, **options)

    def predict(
        self, images: np.ndarray, stamps_ns: np.ndarray, intrinsics: np.ndarray | None = None
    ) -> WindowPrediction:
        """Predict poses, intrinsics, depth, confidence and (if present) the dynamics map for ``images``.

        ``intrinsics`` [S,3,3] (camera_info K at the network resolution) is used by π³ only.
        """
        from page4d_ros.model import pose_encoding_to_extri_intri

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [S,3,H,W], got {images.shape}")
        height, width = images.shape[-2:]
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[None].to(self.device)
        stamps_ns = np.asarray(stamps_ns).reshape(-1)
        if stamps_ns.shape[0] != images.shape[0]:
            raise ValueError(f"got {stamps_ns.shape[0]} stamps for {images.shape[0]} images")
        if self.family == "pi3":
            return pi3_adapter.run_window(self.model, batch, self.device, self.dtype, intrinsics)
        if self.omega_adapter is not None:
            return self.omega_adapter.predict(self.model, batch, self.dtype)
        outputs = self._run(batch, stamps_ns)
        pose_enc = outputs["pose_enc"].float().clone()
        pose_enc[..., 7:9] = pose_enc[..., 7:9].clamp(MIN_FOV_RAD, MAX_FOV_RAD)
        extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (height, width))
        depth = outputs["depth"].float()[0, ..., 0]
        confidence = outputs["depth_conf"].float()[0]
        dynamics = None
        if outputs.get("dynamic_logits") is not None:
            self.has_dynamics_map = True
            dynamics = (torch.sigmoid(outputs["dynamic_logits"].float()[0]) - 0.5).cpu().numpy()
        elif outputs.get("dynamics_map") is not None:
            self.has_dynamics_map = True
            raw = outputs["dynamics_map"].float()[0].cpu().numpy()
            dynamics = self._normalise_sign(raw)
        return WindowPrediction(
            extrinsics=extrinsics[0].double().cpu().numpy(),
            intrinsics=intrinsics[0].double().cpu().numpy(),
            depth=depth.cpu().numpy().astype(np.float32),
            depth_conf=confidence.cpu().numpy().astype(np.float32),
            dynamics=dynamics,
        )

    def _normalise_sign(self, raw: np.ndarray) -> np.ndarray:
        """Return the map with positive meaning dynamic."""
        if self.dynamics_sign == "positive":
            return raw
        if self.dynamics_sign == "negative":
            return -raw
        return -raw if float(np.median(raw)) > 0 else raw
