"""Output activations shared by the camera and DPT heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def apply_activation(values: torch.Tensor, name: str) -> torch.Tensor:
    """Apply a head activation: ``linear``, ``relu``, ``exp``, ``inv_log`` (sign(y)(e^|y|-1)), ``expp1``."""
    if name == "linear":
        return values
    if name == "relu":
        return F.relu(values)
    if name == "exp":
        return torch.exp(values)
    if name == "inv_log":
        return torch.sign(values) * torch.expm1(torch.abs(values))
    if name == "expp1":
        return 1 + torch.exp(values)
    raise ValueError(f"unknown head activation {name!r}")
