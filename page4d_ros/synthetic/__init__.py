"""Procedural dynamic scenes with ground truth, writers (MCAP, TUM, npz) and dataset loaders.

``generate_sequence`` renders a deterministic sequence; ``write_sequence`` / ``load_sequence`` move sequences
to and from disk. Loaders also read TUM RGB-D, Bonn RGB-D Dynamic, MPI Sintel and DAVIS layouts.
"""

from page4d_ros.synthetic.loaders import (
    detect_format,
    load_bonn,
    load_davis,
    load_mcap,
    load_npz,
    load_sequence,
    load_sintel,
    load_tum_rgbd,
)
from page4d_ros.synthetic.scene import CAMERA_MOTIONS, GENERATOR_VERSION, SCENES, generate_sequence
from page4d_ros.synthetic.sequence import DEFAULT_EPOCH_NS, DEFAULT_FRAME_ID, SyntheticSequence, invert_poses
from page4d_ros.synthetic.writers import FORMATS, write_mcap, write_npz, write_sequence, write_tum

__all__ = [
    "CAMERA_MOTIONS",
    "DEFAULT_EPOCH_NS",
    "DEFAULT_FRAME_ID",
    "FORMATS",
    "GENERATOR_VERSION",
    "SCENES",
    "SyntheticSequence",
    "detect_format",
    "generate_sequence",
    "invert_poses",
    "load_bonn",
    "load_davis",
    "load_mcap",
    "load_npz",
    "load_sequence",
    "load_sintel",
    "load_tum_rgbd",
    "write_mcap",
    "write_npz",
    "write_sequence",
    "write_tum",
]
