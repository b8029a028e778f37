"""The PAGE-4D / VGGT network and checkpoint loading (PyTorch only, no ROS).

Public API:

- :func:`build_model` builds ``VGGT`` from a preset (``"vggt-1b"``, ``"page4d-nomask"``, ``"page4d-mask"``,
  ``"page4d-small"``) or a config dict; ``model(images)`` with images [B, S, 3, H, W] in [0, 1] returns the
  upstream output dict plus ``dynamics_map`` when the PAGE-4D mask head exists. ``"pi3"`` or
  ``{"family": "pi3", **sizes}`` builds :class:`Pi3` (``page4d_ros.model.pi3``), whose outputs are
  ``points``, ``local_points``, ``conf``, ``camera_poses``. ``"vggt-omega"``,
  ``"vggt-omega-text"`` and ``{"family": "vggt-omega", ...}`` build :class:`VGGTOmega`
  (``model/vggt_omega/``).
- :class:`FrameTokenCache` lets ``model(images, frame_keys=..., frame_cache=...)`` reuse the per-frame work
  (encoder tokens, frame block 0) of frames that overlapping windows share, bitwise exactly.
- :func:`pose_encoding_to_extri_intri` / :func:`extri_intri_to_pose_encoding` convert the camera head's 9-D
  encoding to camera-from-world extrinsics and pixel intrinsics and back.
- :func:`load_checkpoint` / :func:`save_checkpoint` read the released checkpoints strictly and write
  self-describing safetensors files; failures raise :class:`CheckpointError`.
"""

from page4d_ros.model.aggregator import FrameTokenCache
from page4d_ros.model.checkpoint import (
    CheckpointError,
    CheckpointReport,
    load_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from page4d_ros.model.config import PRESETS, mask_schedule, resolve_config
from page4d_ros.model.pi3 import Pi3
from page4d_ros.model.pose_encoding import (
    extri_intri_to_pose_encoding,
    matrix_to_quaternion,
    pose_encoding_to_extri_intri,
    quaternion_to_matrix,
)
from page4d_ros.model.vggt import VGGT, build_model
from page4d_ros.model.vggt_omega import VGGTOmega

__all__ = [
    "PRESETS",
    "VGGT",
    "CheckpointError",
    "CheckpointReport",
    "FrameTokenCache",
    "Pi3",
    "VGGTOmega",
    "build_model",
    "extri_intri_to_pose_encoding",
    "load_checkpoint",
    "mask_schedule",
    "matrix_to_quaternion",
    "pose_encoding_to_extri_intri",
    "quaternion_to_matrix",
    "resolve_checkpoint_path",
    "resolve_config",
    "save_checkpoint",
]
