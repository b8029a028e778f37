"""Write a ``SyntheticSequence`` as an MCAP rosbag2, a TUM-style folder or an ``.npz`` archive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

from page4d_ros.synthetic import bagio
from page4d_ros.synthetic.sequence import SyntheticSequence

GT_WORLD_FRAME = "gt_world"
TOPIC_IMAGE = "/camera/image_raw"
TOPIC_CAMERA_INFO = "/camera/camera_info"
TOPIC_TF = "/tf"
TOPIC_GT_DEPTH = "/ground_truth/depth"
TOPIC_GT_MASK = "/ground_truth/dynamic_mask"
TOPIC_GT_INSTANCES = "/ground_truth/instance_ids"
SEQUENCE_INFO_FILE = "page4d_sequence.json"
"""Sidecar with the sequence's metadata, written beside MCAP bags and TUM folders."""
TUM_DEPTH_SCALE = 5000.0
"""TUM/Bonn 16-bit depth PNGs store metres * 5000 (0 = no depth)."""
TUM_CALIBRATION_FILE = "calibration.yaml"
FORMATS = ("mcap", "tum", "npz")


def sequence_info(sequence: SyntheticSequence) -> dict:
    """JSON-serialisable description of a sequence (everything but the per-frame arrays)."""
    return {
        "format": "page4d-sequence",
        "version": 1,
        "frame_id": sequence.frame_id,
        "fps": sequence.fps,
        "seed": sequence.seed,
        "camera_motion": sequence.camera_motion,
        "scene": sequence.scene,
        "camera_height": sequence.camera_height,
        "num_frames": len(sequence),
        "metadata": sequence.metadata,
    }


def _require(sequence: SyntheticSequence, *names: str) -> None:
    """Raise ValueError when the sequence lacks an array that the writer needs."""
    missing = [name for name in names if getattr(sequence, name) is None]
    if missing:
        raise ValueError(f"cannot write this sequence: it has no {', '.join(missing)}")


class McapSequenceWriter:
    """Streams a sequence into an MCAP rosbag2 folder, chunk by chunk (``append``), then ``close``.

    Topics (all stamped with the frame stamp, images in the sequence's ``frame_id``): ``/camera/image_raw``
    (rgb8), ``/camera/camera_info``, ``/tf`` (``gt_world`` -> optical frame), ``/ground_truth/depth`` (32FC1,
    NaN where there is no surface), ``/ground_truth/dynamic_mask`` (mono8, 255 = dynamic) and
    ``/ground_truth/instance_ids`` (16UC1). A ``page4d_sequence.json`` sidecar holds the metadata.

    Args:
        path: the bag folder to create (must not exist).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = bagio.BagWriter(self.path)
        for topic in (TOPIC_IMAGE, TOPIC_GT_DEPTH, TOPIC_GT_MASK, TOPIC_GT_INSTANCES):
            self._writer.add_topic(topic, bagio.IMAGE_TYPE)
        self._writer.add_topic(TOPIC_CAMERA_INFO, bagio.CAMERA_INFO_TYPE)
        self._writer.add_topic(TOPIC_TF, bagio.TF_TYPE)
        self._info: dict | None = None
        self._num_frames = 0

    def append(self, sequence: SyntheticSequence) -> None:
        """Write the frames of ``sequence`` (stamps must continue after those already written)."""
        _require(sequence, "rgb", "depth", "dynamic_mask", "K")
        frame_id = sequence.frame_id
        height, width = sequence.height, sequence.width
        writer = self._writer
        for index in range(len(sequence)):
            stamp = int(sequence.stamps_ns[index])
            pose = bagio.transform_message(sequence.T_world_cam[index], stamp, GT_WORLD_FRAME, frame_id)
            writer.write(TOPIC_TF, stamp, bagio.tf_message([pose]))
            info = bagio.camera_info_message(sequence.K[index], width, height, stamp, frame_id)
            writer.write(TOPIC_CAMERA_INFO, stamp, info)
            rgb = bagio.image_message(sequence.rgb[index], "rgb8", stamp, frame_id)
            writer.write(TOPIC_IMAGE, stamp, rgb)
            depth = np.where(sequence.depth[index] > 0, sequence.depth[index], np.nan).astype(np.float32)
            writer.write(TOPIC_GT_DEPTH, stamp, bagio.image_message(depth, "32FC1", stamp, frame_id))
            mask = sequence.dynamic_mask[index].astype(np.uint8) * 255
            writer.write(TOPIC_GT_MASK, stamp, bagio.image_message(mask, "mono8", stamp, frame_id))
            if sequence.instance_ids is not None:
                ids = bagio.image_message(
                    _instance_png(sequence.instance_ids[index]), "16UC1", stamp, frame_id
                )
                writer.write(TOPIC_GT_INSTANCES, stamp, ids)
        self._num_frames += len(sequence)
        self._info = sequence_info(sequence)

    def close(self) -> Path:
        """Finish the bag and write the sidecar; returns the bag folder."""
        self._writer.close()
        if self._info is not None:
            self._info["num_frames"] = self._num_frames
            (self.path / SEQUENCE_INFO_FILE).write_text(json.dumps(self._info, indent=2))
        return self.path


def write_mcap(sequence: SyntheticSequence, path: str | Path) -> Path:
    """Write a whole sequence as an MCAP rosbag2 folder (see ``McapSequenceWriter``); returns the folder."""
    writer = McapSequenceWriter(path)
    try:
        writer.append(sequence)
    finally:
        folder = writer.close()
    return folder


def format_stamp(stamp_ns: int) -> str:
    """Seconds with 9 decimals, exact for integer nanoseconds (``1700000000.033333333``)."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


class TumSequenceWriter:
    """Streams a sequence into a TUM RGB-D style folder, chunk by chunk (``append``), then ``close``.

    Layout: ``rgb/<stamp>.png``, ``depth/<stamp>.png`` (16-bit, metres * 5000, 0 = none; depths beyond 13.1 m
    cannot be stored and become 0), ``masks/<stamp>.png`` (mono8, 255 = dynamic), ``instances/<stamp>.png``
    (16-bit ids), ``rgb.txt``, ``depth.txt``, ``masks.txt``, ``instances.txt`` (``stamp path`` lines),
    ``groundtruth.txt`` (``t tx ty tz qx qy qz qw``, the optical frame in the world), ``calibration.yaml``
    (image size, K, depth scale) and the ``page4d_sequence.json`` sidecar. Stamps have 9 decimals.

    Args:
        path: the folder (created if needed; files of the same names are overwritten).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lists: dict[str, list[str]] = {}
        self._poses: list[str] = []
        self._intrinsics: list[np.ndarray] = []
        self._last: SyntheticSequence | None = None

    def append(self, sequence: SyntheticSequence) -> None:
        """Write the frames of ``sequence``."""
        _require(sequence, "rgb", "depth", "K")
        folders = {
            "rgb": sequence.rgb,
            "depth": sequence.depth,
            "masks": sequence.dynamic_mask,
            "instances": sequence.instance_ids,
        }
        for name, data in folders.items():
            if data is not None and name not in self._lists:
                (self.path / name).mkdir(exist_ok=True)
                self._lists[name] = []
        for index in range(len(sequence)):
            stamp = format_stamp(int(sequence.stamps_ns[index]))
            for name, lines in self._lists.items():
                if folders[name] is None:
                    raise ValueError(f"this chunk has no {name}, but earlier chunks had")
                relative = f"{name}/{stamp}.png"
                image = Image.fromarray(_tum_image(name, folders[name][index]))
                image.save(self.path / relative, compress_level=1)
                lines.append(f"{stamp} {relative}")
            T = sequence.T_world_cam[index]
            quaternion = Rotation.from_matrix(T[:3, :3]).as_quat()
            values = " ".join(f"{value:.9f}" for value in (*T[:3, 3], *quaternion))
            self._poses.append(f"{stamp} {values}")
        self._intrinsics.extend(sequence.K)
        self._last = sequence

    def close(self) -> Path:
        """Write lists, trajectory, calibration and sidecar (none without frames); returns the folder."""
        sequence = self._last
        if sequence is None:
            return self.path
        header = f"# {sequence.scene or 'sequence'} written by page4d_ros\n"
        for name, lines in self._lists.items():
            text = header + f"# timestamp filename ({name})\n" + "\n".join(lines) + "\n"
            (self.path / f"{name}.txt").write_text(text)
        trajectory = header + "# timestamp tx ty tz qx qy qz qw\n" + "\n".join(self._poses) + "\n"
        (self.path / "groundtruth.txt").write_text(trajectory)
        intrinsics = np.asarray(self._intrinsics)
        calibration = {
            "width": sequence.width,
            "height": sequence.height,
            "depth_scale": TUM_DEPTH_SCALE,
            "frame_id": sequence.frame_id,
            "K": intrinsics[0].tolist(),
        }
        if not np.allclose(intrinsics, intrinsics[0]):
            calibration["K_per_frame"] = intrinsics.tolist()
        (self.path / TUM_CALIBRATION_FILE).write_text(yaml.safe_dump(calibration, sort_keys=False))
        info = sequence_info(sequence)
        info["num_frames"] = len(self._poses)
        (self.path / SEQUENCE_INFO_FILE).write_text(json.dumps(info, indent=2))
        return self.path


def write_tum(sequence: SyntheticSequence, path: str | Path) -> Path:
    """Write a whole sequence as a TUM RGB-D style folder (see ``TumSequenceWriter``); returns the folder."""
    writer = TumSequenceWriter(path)
    writer.append(sequence)
    return writer.close()


def _tum_image(kind: str, array: np.ndarray) -> np.ndarray:
    """Convert one frame's array into what its TUM-folder PNG stores."""
    if kind == "depth":
        scaled = np.rint(np.nan_to_num(array, nan=0.0) * TUM_DEPTH_SCALE)
        return np.where((scaled > 0) & (scaled <= 65535), scaled, 0).astype(np.uint16)
    if kind == "masks":
        return array.astype(np.uint8) * 255
    if kind == "instances":
        return _instance_png(array)
    return np.ascontiguousarray(array)


def _instance_png(array: np.ndarray) -> np.ndarray:
    """Instance ids as uint16 (what 16-bit PNGs and 16UC1 images hold)."""
    if array.max(initial=0) > 65535 or array.min(initial=0) < 0:
        raise ValueError("instance ids must lie in [0, 65535] to be stored as 16-bit images")
    return array.astype(np.uint16)


def write_npz(sequence: SyntheticSequence, path: str | Path, compress: bool = False) -> Path:
    """Write all arrays and the metadata into one ``.npz`` (uncompressed by default: much faster to write).

    Returns:
        The file path.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        name: getattr(sequence, name)
        for name in ("rgb", "depth", "dynamic_mask", "instance_ids", "T_world_cam", "K", "stamps_ns")
        if getattr(sequence, name) is not None
    }
    arrays["info_json"] = np.array(json.dumps(sequence_info(sequence)))
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def write_sequence(sequence: SyntheticSequence, path: str | Path, fmt: str) -> Path:
    """Write in one of ``FORMATS`` ("mcap", "tum", "npz")."""
    if fmt == "mcap":
        return write_mcap(sequence, path)
    if fmt == "tum":
        return write_tum(sequence, path)
    if fmt == "npz":
        return write_npz(sequence, path)
    raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
