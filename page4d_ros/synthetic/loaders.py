"""Load sequences into ``SyntheticSequence`` form: our MCAP/TUM/npz outputs, TUM RGB-D, Bonn RGB-D Dynamic,
MPI Sintel and DAVIS folder layouts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

from page4d_ros.synthetic import bagio
from page4d_ros.synthetic.sequence import DEFAULT_FRAME_ID, SyntheticSequence
from page4d_ros.synthetic.writers import (
    GT_WORLD_FRAME,
    SEQUENCE_INFO_FILE,
    TOPIC_CAMERA_INFO,
    TOPIC_GT_DEPTH,
    TOPIC_GT_INSTANCES,
    TOPIC_GT_MASK,
    TOPIC_IMAGE,
    TOPIC_TF,
    TUM_CALIBRATION_FILE,
    TUM_DEPTH_SCALE,
)

# Published intrinsics of the datasets' colour cameras (fx, fy, cx, cy).
TUM_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}
BONN_INTRINSICS = (542.822841, 542.576870, 315.593520, 237.756098)
SINTEL_FPS = 24.0
DAVIS_FPS = 24.0
SINTEL_TAG = 202021.25
_STAMP_PATTERN = re.compile(r"^\d+(\.\d+)?$")


def parse_stamp(text: str) -> int:
    """Decimal seconds (``"1305031102.175304"``) to integer nanoseconds, exactly (no float rounding)."""
    if not _STAMP_PATTERN.match(text):
        raise ValueError(f"not a timestamp in seconds: {text!r}")
    seconds, _, fraction = text.partition(".")
    fraction = (fraction + "000000000")[:9]
    return int(seconds) * 1_000_000_000 + int(fraction)


def _intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _read_list(path: Path) -> list[list[str]]:
    """Non-comment, non-empty lines of a TUM text file, split on whitespace (or commas)."""
    if not path.is_file():
        raise ValueError(f"missing file {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'timestamp value...', got {line!r}")
        rows.append(fields)
    return rows


def _nearest(reference: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest ``reference`` stamp for each ``query`` stamp, and the absolute difference."""
    order = np.argsort(reference)
    sorted_ref = reference[order]
    position = np.clip(np.searchsorted(sorted_ref, query), 1, max(len(sorted_ref) - 1, 1))
    left = sorted_ref[position - 1]
    right = sorted_ref[np.minimum(position, len(sorted_ref) - 1)]
    take_left = np.abs(query - left) <= np.abs(right - query)
    chosen = np.where(take_left, position - 1, np.minimum(position, len(sorted_ref) - 1))
    return order[chosen], np.abs(sorted_ref[chosen] - query)


def interpolate_poses(
    stamps_ns: np.ndarray, pose_stamps_ns: np.ndarray, poses: np.ndarray, max_gap_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Poses at ``stamps_ns`` from a sampled trajectory (linear translation, slerp rotation).

    Returns:
        ``[F, 4, 4]`` poses and a bool ``[F]``: True where the stamp lies within the trajectory and its two
        neighbouring samples are at most ``max_gap_ns`` apart (or a sample matches exactly).
    """
    order = np.argsort(pose_stamps_ns)
    pose_stamps_ns, poses = pose_stamps_ns[order], poses[order]
    right = np.clip(np.searchsorted(pose_stamps_ns, stamps_ns), 0, len(pose_stamps_ns) - 1)
    exact = pose_stamps_ns[right] == stamps_ns
    left = np.maximum(right - 1, 0)
    gap = pose_stamps_ns[right] - pose_stamps_ns[left]
    inside = (
        (stamps_ns > pose_stamps_ns[0]) & (stamps_ns < pose_stamps_ns[-1]) & (gap <= max_gap_ns) & (gap > 0)
    )
    valid = exact | inside
    alpha = np.where(inside & ~exact, (stamps_ns - pose_stamps_ns[left]) / np.maximum(gap, 1), 1.0)
    left = np.where(exact, right, left)
    rotation_left = Rotation.from_matrix(poses[left, :3, :3])
    rotation_right = Rotation.from_matrix(poses[right, :3, :3])
    delta = (rotation_left.inv() * rotation_right).as_rotvec()
    result = np.tile(np.eye(4), (len(stamps_ns), 1, 1))
    result[:, :3, :3] = (rotation_left * Rotation.from_rotvec(delta * alpha[:, None])).as_matrix()
    result[:, :3, 3] = poses[left, :3, 3] * (1 - alpha[:, None]) + poses[right, :3, 3] * alpha[:, None]
    return result, valid


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"missing image {path}")
    with Image.open(path) as image:
        return np.array(image)


def _select(count: int, start: int, stop: int | None, stride: int) -> range:
    if stride < 1 or start < 0:
        raise ValueError(f"start must be >= 0 and stride >= 1, got start={start}, stride={stride}")
    return range(count)[start:stop:stride]


def load_tum_rgbd(
    path: str | Path,
    *,
    K: np.ndarray | None = None,
    dataset: str = "tum",
    start: int = 0,
    stop: int | None = None,
    stride: int = 1,
    max_time_difference: float = 0.02,
    max_pose_gap: float = 0.5,
) -> SyntheticSequence:
    """Load a TUM RGB-D layout (also Bonn RGB-D Dynamic and our own ``write_tum`` output).

    Frames follow ``rgb.txt``; each gets the nearest depth image within ``max_time_difference`` seconds and
    the ground-truth pose interpolated at its stamp; frames lacking either are dropped. Masks/instances are
    read when the folder has ``masks.txt``/``instances.txt`` (our writer). K comes from ``calibration.yaml``
    (ours), else ``K``, else the published intrinsics (Bonn; TUM freiburg1/2/3 by folder name; TUM's default
    otherwise).

    Args:
        path: the sequence folder.
        K: intrinsics to use when the folder has no calibration file.
        dataset: "tum" or "bonn" (selects the default intrinsics and the scene name).
        start: first frame (after association) to keep.
        stop: frame to stop before (None = all).
        stride: keep every ``stride``-th frame.
        max_time_difference: largest rgb/depth stamp difference in seconds to associate.
        max_pose_gap: largest spacing of ground-truth samples in seconds to interpolate across.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder")
    rgb_rows = _read_list(path / "rgb.txt")
    depth_rows = _read_list(path / "depth.txt")
    pose_rows = _read_list(path / "groundtruth.txt")
    rgb_stamps = np.array([parse_stamp(row[0]) for row in rgb_rows], dtype=np.int64)
    depth_stamps = np.array([parse_stamp(row[0]) for row in depth_rows], dtype=np.int64)
    if any(len(row) < 8 for row in pose_rows):
        raise ValueError(f"{path / 'groundtruth.txt'}: every line needs 't tx ty tz qx qy qz qw'")
    pose_stamps = np.array([parse_stamp(row[0]) for row in pose_rows], dtype=np.int64)
    pose_values = np.array([[float(value) for value in row[1:8]] for row in pose_rows])
    if len(rgb_stamps) == 0 or len(depth_stamps) == 0 or len(pose_stamps) == 0:
        raise ValueError(f"{path}: rgb.txt, depth.txt and groundtruth.txt must each list at least one entry")
    trajectory = np.tile(np.eye(4), (len(pose_values), 1, 1))
    trajectory[:, :3, 3] = pose_values[:, :3]
    trajectory[:, :3, :3] = Rotation.from_quat(pose_values[:, 3:7]).as_matrix()

    depth_index, depth_gap = _nearest(depth_stamps, rgb_stamps)
    poses, pose_valid = interpolate_poses(rgb_stamps, pose_stamps, trajectory, int(max_pose_gap * 1e9))
    keep = np.flatnonzero((depth_gap <= max_time_difference * 1e9) & pose_valid)
    keep = keep[list(_select(len(keep), start, stop, stride))]
    if len(keep) == 0:
        raise ValueError(
            f"{path}: no frame has both a depth image and a ground-truth pose within the tolerances"
        )

    calibration_path = path / TUM_CALIBRATION_FILE
    depth_scale = TUM_DEPTH_SCALE
    frame_id = DEFAULT_FRAME_ID
    if calibration_path.is_file():
        calibration = yaml.safe_load(calibration_path.read_text())
        intrinsics = np.asarray(
            calibration.get("K_per_frame", [calibration["K"]] * len(rgb_stamps)), dtype=float
        )
        per_frame_K = (
            intrinsics[keep]
            if len(intrinsics) == len(rgb_stamps)
            else np.repeat(intrinsics[:1], len(keep), 0)
        )
        depth_scale = float(calibration.get("depth_scale", TUM_DEPTH_SCALE))
        frame_id = str(calibration.get("frame_id", DEFAULT_FRAME_ID))
    else:
        if K is None:
            if dataset == "bonn":
                K = _intrinsics(*BONN_INTRINSICS)
            else:
                name = next((key for key in TUM_INTRINSICS if key in path.name), "default")
                K = _intrinsics(*TUM_INTRINSICS[name])
        per_frame_K = np.repeat(np.asarray(K, dtype=np.float64)[None], len(keep), axis=0)

    rgb = np.stack([_read_png(path / rgb_rows[i][1])[..., :3] for i in keep])
    depth = (
        np.stack([_read_png(path / depth_rows[depth_index[i]][1]) for i in keep]).astype(np.float32)
        / depth_scale
    )
    extra = {}
    for name in ("masks", "instances"):
        list_path = path / f"{name}.txt"
        if list_path.is_file():
            rows = {parse_stamp(row[0]): row[1] for row in _read_list(list_path)}
            missing = [int(rgb_stamps[i]) for i in keep if int(rgb_stamps[i]) not in rows]
            if missing:
                raise ValueError(f"{list_path} lacks stamps of {len(missing)} frames, e.g. {missing[0]} ns")
            extra[name] = np.stack([_read_png(path / rows[int(rgb_stamps[i])]) for i in keep])
    info = _read_info(path)
    return SyntheticSequence(
        rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
        depth=depth,
        dynamic_mask=extra["masks"] > 0 if "masks" in extra else None,
        instance_ids=extra["instances"].astype(np.int32) if "instances" in extra else None,
        T_world_cam=poses[keep],
        K=per_frame_K,
        stamps_ns=rgb_stamps[keep],
        frame_id=frame_id,
        fps=float(info.get("fps") or _estimate_fps(rgb_stamps[keep])),
        seed=info.get("seed"),
        camera_motion=info.get("camera_motion", ""),
        scene=info.get("scene", dataset),
        camera_height=info.get("camera_height"),
        metadata={**info.get("metadata", {}), "source": str(path), "source_format": dataset},
    )


def load_bonn(path: str | Path, **kwargs: object) -> SyntheticSequence:
    """Load a Bonn RGB-D Dynamic sequence (TUM layout, Bonn intrinsics; poses as given in groundtruth.txt)."""
    return load_tum_rgbd(path, dataset="bonn", **kwargs)


def _estimate_fps(stamps_ns: np.ndarray) -> float:
    if len(stamps_ns) < 2:
        return 30.0
    return float(1e9 / np.median(np.diff(stamps_ns)))


def _read_info(path: Path) -> dict:
    info_path = path / SEQUENCE_INFO_FILE
    return json.loads(info_path.read_text()) if info_path.is_file() else {}


def read_sintel_depth(path: str | Path) -> np.ndarray:
    """Read an MPI Sintel ``.dpt`` depth file (float32 tag, int32 width, int32 height, float32 depth)."""
    raw = Path(path).read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != SINTEL_TAG:
        raise ValueError(f"{path} is not a Sintel .dpt file (wrong tag)")
    width, height = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if width <= 0 or height <= 0 or len(raw) < 12 + 4 * width * height:
        raise ValueError(f"{path}: bad size {width}x{height} or truncated data")
    return np.frombuffer(raw[12 : 12 + 4 * width * height], "<f4").reshape(height, width).copy()


def read_sintel_camera(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MPI Sintel ``.cam`` file: intrinsics M (3x3) and camera-from-world extrinsics N (3x4)."""
    raw = Path(path).read_bytes()
    if len(raw) < 4 + 21 * 8 or np.frombuffer(raw[:4], "<f4")[0] != SINTEL_TAG:
        raise ValueError(f"{path} is not a Sintel .cam file (wrong tag or truncated)")
    values = np.frombuffer(raw[4 : 4 + 21 * 8], "<f8")
    return values[:9].reshape(3, 3).copy(), values[9:].reshape(3, 4).copy()


def _video_stamps(indices: np.ndarray, fps: float) -> np.ndarray:
    """Stamps of frames of a video without time stamps: frame i at ``i / fps`` seconds after a fixed epoch."""
    return 1_000_000_000_000_000_000 + np.rint(indices * 1e9 / fps).astype(np.int64)


def _read_masks(folder: Path, frames: list[str]) -> np.ndarray | None:
    """``[F, H, W]`` bool masks from ``<folder>/<frame>.png`` (nonzero = dynamic); None without the folder."""
    if not folder.is_dir():
        return None
    masks = np.stack([_read_png(folder / f"{frame}.png") for frame in frames])
    return (masks if masks.ndim == 3 else masks[..., 0]) > 0


def _choose_scene(folder: Path, scene: str | None, dataset: str) -> str:
    """The scene sub-folder of ``folder`` to load: ``scene``, or the only one (ValueError otherwise)."""
    scenes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    if scene is None:
        if len(scenes) != 1:
            raise ValueError(f"{folder} holds scenes {scenes}; name one with scene=...")
        return scenes[0]
    if scene not in scenes:
        raise ValueError(f"{dataset} scene {scene!r} not found; available: {scenes}")
    return scene


def load_sintel(
    root: str | Path,
    scene: str | None = None,
    *,
    pass_name: str = "final",
    start: int = 0,
    stop: int | None = None,
    stride: int = 1,
    fps: float = SINTEL_FPS,
    mask_folder: str = "dynamic_label_perfect",
) -> SyntheticSequence:
    """Load one MPI Sintel scene from ``<root>/[training/]{final|clean,depth,camdata_left}/<scene>/``.

    Dynamic masks are read from ``<mask_folder>/<scene>/`` (MonST3R's ``dynamic_label_perfect`` by default)
    when that folder exists (nonzero = dynamic). Sintel has no stamps: frame i gets ``i / fps`` seconds after
    a fixed epoch. Depth is used as stored (the evaluation caps far depth with ``max_depth``).
    """
    root = Path(root)
    base = root / "training" if (root / "training").is_dir() else root
    camera_root = base / "camdata_left"
    if not camera_root.is_dir():
        raise ValueError(f"{root} is not an MPI Sintel folder (no camdata_left/ or training/camdata_left/)")
    scene = _choose_scene(camera_root, scene, "Sintel")
    frames = sorted(p.stem for p in (camera_root / scene).glob("frame_*.cam"))
    indices = np.asarray(_select(len(frames), start, stop, stride), dtype=np.int64)
    frames = [frames[i] for i in indices]
    if not frames:
        raise ValueError(f"no frames selected in Sintel scene {scene!r}")
    cameras = [read_sintel_camera(camera_root / scene / f"{frame}.cam") for frame in frames]
    rgb = np.stack([_read_png(base / pass_name / scene / f"{frame}.png")[..., :3] for frame in frames])
    depth = np.stack([read_sintel_depth(base / "depth" / scene / f"{frame}.dpt") for frame in frames])
    masks = _read_masks(base / mask_folder / scene, frames)
    extrinsics = np.tile(np.eye(4), (len(frames), 1, 1))
    extrinsics[:, :3, :] = np.stack([camera[1] for camera in cameras])
    stamps = _video_stamps(indices, fps)
    return SyntheticSequence(
        rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
        depth=np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32),
        dynamic_mask=masks,
        instance_ids=None,
        T_world_cam=np.linalg.inv(extrinsics),
        K=np.stack([camera[0] for camera in cameras]),
        stamps_ns=stamps,
        fps=fps,
        camera_motion="sintel",
        scene=f"sintel/{scene}",
        metadata={"source": str(root), "source_format": "sintel", "frames": frames},
    )


def load_davis(
    root: str | Path,
    scene: str | None = None,
    *,
    resolution: str = "480p",
    start: int = 0,
    stop: int | None = None,
    stride: int = 1,
    fps: float = DAVIS_FPS,
) -> SyntheticSequence:
    """Load one DAVIS video from ``<root>/JPEGImages/<resolution>/<scene>/*.jpg`` and its annotations.

    Annotations (``Annotations/<resolution>/<scene>/*.png``, binary in DAVIS 2016, object ids in 2017) mark
    the moving objects: nonzero = dynamic. DAVIS has no camera poses, depth or intrinsics: poses are NaN (the
    evaluation skips them), depth and K None. Frame i gets ``i / fps`` seconds after a fixed epoch.
    """
    root = Path(root)
    image_root = root / "JPEGImages" / resolution
    if not image_root.is_dir():
        raise ValueError(f"{root} is not a DAVIS folder (no JPEGImages/{resolution}/)")
    scene = _choose_scene(image_root, scene, "DAVIS")
    frames = sorted(path.stem for path in (image_root / scene).glob("*.jpg"))
    indices = np.asarray(_select(len(frames), start, stop, stride), dtype=np.int64)
    frames = [frames[i] for i in indices]
    if not frames:
        raise ValueError(f"no frames selected in DAVIS video {scene!r}")
    rgb = []
    for frame in frames:
        with Image.open(image_root / scene / f"{frame}.jpg") as image:
            rgb.append(np.array(image.convert("RGB")))
    masks = _read_masks(root / "Annotations" / resolution / scene, frames)
    stamps = _video_stamps(indices, fps)
    return SyntheticSequence(
        rgb=np.stack(rgb),
        depth=None,
        dynamic_mask=masks,
        instance_ids=None,
        T_world_cam=np.full((len(frames), 4, 4), np.nan),
        K=None,
        stamps_ns=stamps,
        fps=fps,
        camera_motion="davis",
        scene=f"davis/{scene}",
        metadata={"source": str(root), "source_format": "davis", "frames": frames},
    )


def load_npz(path: str | Path) -> SyntheticSequence:
    """Load a ``write_npz`` archive."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    with np.load(path, allow_pickle=False) as archive:
        if "T_world_cam" not in archive or "stamps_ns" not in archive:
            raise ValueError(f"{path} is not a page4d sequence archive (needs T_world_cam and stamps_ns)")
        arrays = {name: archive[name] for name in archive.files}
    info = json.loads(str(arrays.pop("info_json"))) if "info_json" in arrays else {}
    return SyntheticSequence(
        rgb=arrays.get("rgb"),
        depth=arrays.get("depth"),
        dynamic_mask=arrays.get("dynamic_mask"),
        instance_ids=arrays.get("instance_ids"),
        T_world_cam=arrays["T_world_cam"],
        K=arrays.get("K"),
        stamps_ns=arrays["stamps_ns"],
        frame_id=info.get("frame_id", DEFAULT_FRAME_ID),
        fps=float(info.get("fps", 30.0)),
        seed=info.get("seed"),
        camera_motion=info.get("camera_motion", ""),
        scene=info.get("scene", ""),
        camera_height=info.get("camera_height"),
        metadata=info.get("metadata", {}),
    )


def load_mcap(path: str | Path, *, world_frame: str = GT_WORLD_FRAME) -> SyntheticSequence:
    """Load a ground-truth bag written by ``write_mcap`` (frames are the stamps of ``/camera/image_raw``).

    The pose of each frame is the ``/tf`` edge ``world_frame`` -> image frame at the image stamp; depth NaN
    becomes 0. Frames without a pose or camera info raise ValueError.
    """
    path = Path(path)
    images: dict[int, np.ndarray] = {}
    infos: dict[int, np.ndarray] = {}
    poses: dict[int, np.ndarray] = {}
    depths: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    instances: dict[int, np.ndarray] = {}
    frame_id = DEFAULT_FRAME_ID
    topics = (TOPIC_IMAGE, TOPIC_CAMERA_INFO, TOPIC_TF, TOPIC_GT_DEPTH, TOPIC_GT_MASK, TOPIC_GT_INSTANCES)
    for topic, _, _, message in bagio.iter_bag_messages(path, topics):
        if topic == TOPIC_TF:
            for transform in message.transforms:
                if transform.header.frame_id == world_frame:
                    pose = bagio.pose_to_matrix(transform.transform.translation, transform.transform.rotation)
                    poses[bagio.stamp_to_ns(transform.header.stamp)] = pose
            continue
        stamp = bagio.stamp_to_ns(message.header.stamp)
        if topic == TOPIC_CAMERA_INFO:
            infos[stamp] = np.asarray(message.k, dtype=np.float64).reshape(3, 3)
        elif topic == TOPIC_IMAGE:
            images[stamp] = bagio.image_to_array(message)
            frame_id = message.header.frame_id
        elif topic == TOPIC_GT_DEPTH:
            depths[stamp] = bagio.image_to_array(message)
        elif topic == TOPIC_GT_MASK:
            masks[stamp] = bagio.image_to_array(message) > 0
        else:
            instances[stamp] = bagio.image_to_array(message)
    stamps = sorted(images)
    if not stamps:
        raise ValueError(f"{path} has no messages on {TOPIC_IMAGE}")
    missing = [stamp for stamp in stamps if stamp not in poses or stamp not in infos]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} frames lack a {world_frame} pose on /tf or camera info, "
            f"e.g. stamp {missing[0]}"
        )

    def stacked(table: dict[int, np.ndarray]) -> np.ndarray | None:
        return (
            np.stack([table[stamp] for stamp in stamps]) if all(stamp in table for stamp in stamps) else None
        )

    depth = stacked(depths)
    mask = stacked(masks)
    ids = stacked(instances)
    info = _read_info(path)
    return SyntheticSequence(
        rgb=stacked(images),
        depth=None if depth is None else np.where(np.isfinite(depth), depth, 0.0).astype(np.float32),
        dynamic_mask=mask,
        instance_ids=None if ids is None else ids.astype(np.int32),
        T_world_cam=np.stack([poses[stamp] for stamp in stamps]),
        K=np.stack([infos[stamp] for stamp in stamps]),
        stamps_ns=np.asarray(stamps, dtype=np.int64),
        frame_id=frame_id,
        fps=float(info.get("fps") or _estimate_fps(np.asarray(stamps))),
        seed=info.get("seed"),
        camera_motion=info.get("camera_motion", ""),
        scene=info.get("scene", ""),
        camera_height=info.get("camera_height"),
        metadata=info.get("metadata", {}),
    )


def detect_format(path: str | Path) -> str:
    """Guess a path's layout: npz, mcap, tum, bonn, sintel or davis (ValueError when none fits)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return "npz"
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return "mcap"
        if (path / "rgb.txt").is_file():
            return "bonn" if "bonn" in path.name.lower() else "tum"
        if (path / "camdata_left").is_dir() or (path / "training" / "camdata_left").is_dir():
            return "sintel"
        if (path / "JPEGImages").is_dir():
            return "davis"
    raise ValueError(
        f"cannot tell the format of {path}: expected an .npz file, a rosbag2 folder (metadata.yaml), "
        "a TUM/Bonn folder (rgb.txt), an MPI Sintel folder (camdata_left/) or a DAVIS folder (JPEGImages/)"
    )


def load_sequence(path: str | Path, fmt: str = "auto", **kwargs: object) -> SyntheticSequence:
    """Load any supported layout; ``fmt`` is "auto", "npz", "mcap", "tum", "bonn", "sintel" or "davis".

    Extra keyword arguments go to the specific loader (e.g. ``scene=`` for Sintel and DAVIS, ``stride=`` for
    TUM).
    """
    kind = detect_format(path) if fmt == "auto" else fmt
    loaders = {
        "npz": load_npz,
        "mcap": load_mcap,
        "tum": load_tum_rgbd,
        "bonn": load_bonn,
        "sintel": load_sintel,
        "davis": load_davis,
    }
    if kind not in loaders:
        raise ValueError(f"unknown format {fmt!r}; use one of {['auto', *loaders]}")
    return loaders[kind](path, **kwargs)
