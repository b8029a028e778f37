"""VGGT-Omega (facebookresearch/vggt-omega): network, presets and input-size rule (PyTorch only).

- :func:`build_vggt_omega` / :class:`VGGTOmega`: the network with the upstream state_dict layout; presets
  ``"vggt-omega"`` (``vggt_omega_1b_512.pt``) and ``"vggt-omega-text"`` (``vggt_omega_1b_256_text.pt``, with
  the text-alignment head). ``page4d_ros.model.build_model`` / ``load_checkpoint`` dispatch here.
- :class:`BalancedSize`: the family's preprocessing size rule (multiples of 16, 'balanced' token count,
  aspect ratio cropped to [0.5, 2]).

Licence: the upstream code and weights are under the FAIR Noncommercial Research License v1.
"""

from page4d_ros.model.vggt_omega.config import (
    FAMILY,
    PRESETS,
    is_vggt_omega_config,
    preset_for_keys,
    resolve_config,
)
from page4d_ros.model.vggt_omega.model import VGGTOmega, build_vggt_omega
from page4d_ros.model.vggt_omega.preprocess import BalancedSize

__all__ = [
    "FAMILY",
    "PRESETS",
    "BalancedSize",
    "VGGTOmega",
    "build_vggt_omega",
    "is_vggt_omega_config",
    "preset_for_keys",
    "resolve_config",
]
