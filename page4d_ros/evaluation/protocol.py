"""Evaluate a prediction against ground truth by the PAGE-4D protocol.

Frames are matched by stamp, then pose, depth, mask and point-map metrics are computed, and a paper-style
table is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from page4d_ros.evaluation.depth import depth_metrics, valid_depth_pixels
from page4d_ros.evaluation.masks import mask_metrics
from page4d_ros.evaluation.pointmap import backproject, pointmap_metrics
from page4d_ros.evaluation.trajectory import (
    absolute_trajectory_error,
    align_trajectory,
    relative_pose_error,
)
from page4d_ros.synthetic import bagio
from page4d_ros.synthetic.loaders import load_sequence
from page4d_ros.synthetic.sequence import SyntheticSequence

DEFAULT_NAMESPACE = "/page4d"


@dataclass
class PredictionSet:
    """Per-stamp predictions; each kind may cover a different subset of frames.

    Attributes:
        poses: stamp -> 4x4 world-from-optical pose (any world frame, any scale).
        depth: stamp -> HxW float32 z-depth, NaN (or <= 0) where invalid, any resolution.
        dynamic_mask: stamp -> HxW bool mask, any resolution.
        K: stamp -> 3x3 intrinsics of that stamp's depth image, when known.
        source: where the prediction came from.
    """

    poses: dict[int, np.ndarray] = field(default_factory=dict)
    depth: dict[int, np.ndarray] = field(default_factory=dict)
    dynamic_mask: dict[int, np.ndarray] = field(default_factory=dict)
    K: dict[int, np.ndarray] = field(default_factory=dict)
    source: str = ""

    @staticmethod
    def from_sequence(sequence: SyntheticSequence, source: str = "") -> PredictionSet:
        """Wrap a loaded sequence (depth 0 is read as invalid)."""
        stamps = [int(stamp) for stamp in sequence.stamps_ns]
        prediction = PredictionSet(source=source)
        prediction.poses = dict(zip(stamps, sequence.T_world_cam))
        if sequence.depth is not None:
            depth = sequence.depth
            prediction.depth = {
                s: np.where(d > 0, d, np.nan).astype(np.float32) for s, d in zip(stamps, depth)
            }
        if sequence.dynamic_mask is not None:
            prediction.dynamic_mask = dict(zip(stamps, sequence.dynamic_mask))
        if sequence.K is not None:
            prediction.K = dict(zip(stamps, sequence.K))
        return prediction


def load_prediction_bag(
    path: str | Path, namespace: str = DEFAULT_NAMESPACE, camera_frame: str | None = None
) -> PredictionSet:
    """Read the outputs of our node / offline tool from a rosbag2 folder.

    Topics under ``namespace``: ``camera_pose`` (PoseWithCovarianceStamped, optical frame in odom),
    ``depth/image`` (32FC1), ``depth/camera_info``, ``dynamic_mask/image`` (mono8, nonzero = dynamic). When
    there are no ``camera_pose`` messages, poses come from ``/tf`` edges whose child frame is ``camera_frame``
    (default: the depth images' frame id). Each message is keyed by its header stamp.
    """
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {
        "pose": f"{namespace}/camera_pose",
        "depth": f"{namespace}/depth/image",
        "info": f"{namespace}/depth/camera_info",
        "mask": f"{namespace}/dynamic_mask/image",
    }
    available = bagio.bag_topics(path)
    wanted = [topic for topic in topics.values() if topic in available]
    if not wanted:
        raise ValueError(
            f"{path} has none of the prediction topics {sorted(topics.values())}; "
            f"its topics are {sorted(available)} (set the namespace with --pred-namespace)"
        )
    prediction = PredictionSet(source=str(path))
    tf_edges: list[tuple[str, int, np.ndarray]] = []
    depth_frame = None
    read_topics = [*wanted, "/tf"] if "/tf" in available else wanted
    for topic, _, _, message in bagio.iter_bag_messages(path, read_topics):
        if topic == "/tf":
            for transform in message.transforms:
                matrix = bagio.pose_to_matrix(transform.transform.translation, transform.transform.rotation)
                tf_edges.append((transform.child_frame_id, bagio.stamp_to_ns(transform.header.stamp), matrix))
            continue
        stamp = bagio.stamp_to_ns(message.header.stamp)
        if topic == topics["pose"]:
            prediction.poses[stamp] = bagio.pose_to_matrix(
                message.pose.pose.position, message.pose.pose.orientation
            )
        elif topic == topics["depth"]:
            prediction.depth[stamp] = bagio.image_to_array(message).astype(np.float32)
            depth_frame = message.header.frame_id
        elif topic == topics["info"]:
            prediction.K[stamp] = np.asarray(message.k, dtype=np.float64).reshape(3, 3)
        else:
            prediction.dynamic_mask[stamp] = bagio.image_to_array(message) > 0
    child = camera_frame or depth_frame
    if not prediction.poses and child:
        prediction.poses = {stamp: matrix for frame, stamp, matrix in tf_edges if frame == child}
    return prediction


def load_prediction(
    path: str | Path, namespace: str = DEFAULT_NAMESPACE, fmt: str = "auto", **loader_options: Any
) -> PredictionSet:
    """Load a prediction: an output bag of our node (topics under ``namespace``) or any sequence layout that
    ``load_sequence`` reads (our npz / TUM folder / MCAP ground-truth bag)."""
    path = Path(path)
    if fmt in ("auto", "bag") and (path / "metadata.yaml").is_file():
        available = bagio.bag_topics(path)
        if fmt == "bag" or any(topic.startswith(namespace.rstrip("/") + "/") for topic in available):
            return load_prediction_bag(path, namespace)
    return PredictionSet.from_sequence(load_sequence(path, fmt, **loader_options), source=str(path))


def match_stamps(
    gt_stamps: np.ndarray, candidates: list[int], max_difference_ns: int
) -> list[tuple[int, int]]:
    """Pairs ``(gt_index, candidate_stamp)``: for each GT frame the nearest candidate within the tolerance,
    each candidate used at most once (the closest GT frame wins)."""
    if not candidates:
        return []
    pred = np.asarray(sorted(candidates), dtype=np.int64)
    position = np.clip(np.searchsorted(pred, gt_stamps), 1, max(len(pred) - 1, 1))
    left = pred[position - 1]
    right = pred[np.minimum(position, len(pred) - 1)]
    nearest = np.where(np.abs(gt_stamps - left) <= np.abs(right - gt_stamps), left, right)
    difference = np.abs(nearest - gt_stamps)
    best: dict[int, tuple[int, int]] = {}
    for gt_index in np.flatnonzero(difference <= max_difference_ns):
        stamp = int(nearest[gt_index])
        if stamp not in best or difference[gt_index] < best[stamp][1]:
            best[stamp] = (int(gt_index), int(difference[gt_index]))
    return sorted((gt_index, stamp) for stamp, (gt_index, _) in best.items())


def _source_coordinates(size_out: int, size_in: int) -> np.ndarray:
    """Source pixel coordinate of each output pixel centre when resizing ``size_in`` -> ``size_out``."""
    return (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5


def resample_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a depth map (NaN = invalid) to ``height x width``.

    An output pixel is valid only when its four source neighbours are (no blending across holes).
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape == (height, width):
        return depth
    rows = np.clip(_source_coordinates(height, depth.shape[0]), 0, depth.shape[0] - 1)
    cols = np.clip(_source_coordinates(width, depth.shape[1]), 0, depth.shape[1] - 1)
    row0 = (
        np.minimum(np.floor(rows).astype(int), depth.shape[0] - 2)
        if depth.shape[0] > 1
        else np.zeros(height, int)
    )
    col0 = (
        np.minimum(np.floor(cols).astype(int), depth.shape[1] - 2)
        if depth.shape[1] > 1
        else np.zeros(width, int)
    )
    row1 = np.minimum(row0 + 1, depth.shape[0] - 1)
    col1 = np.minimum(col0 + 1, depth.shape[1] - 1)
    fr = (rows - row0)[:, None]
    fc = (cols - col0)[None, :]
    top = depth[row0][:, col0] * (1 - fc) + depth[row0][:, col1] * fc
    bottom = depth[row1][:, col0] * (1 - fc) + depth[row1][:, col1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def resample_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a mask to ``height x width``."""
    mask = np.asarray(mask)
    if mask.shape == (height, width):
        return mask.astype(bool)
    rows = np.clip(np.rint(_source_coordinates(height, mask.shape[0])).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(np.rint(_source_coordinates(width, mask.shape[1])).astype(int), 0, mask.shape[1] - 1)
    return mask[rows][:, cols].astype(bool)


def scale_intrinsics(K: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from ``from_hw`` to ``to_hw`` (pixel centres at integers)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    scaled = np.array(K, dtype=np.float64, copy=True)
    scaled[0] *= sx
    scaled[1] *= sy
    scaled[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    scaled[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return scaled


def evaluate(
    prediction: PredictionSet,
    gt: SyntheticSequence,
    *,
    align: str = "sim3",
    depth_align: str = "scale",
    max_difference_ns: int = 5_000_000,
    rpe_delta: int = 1,
    max_depth: float | None = None,
    max_points: int = 200_000,
    name: str = "",
) -> dict[str, Any]:
    """All metrics of one sequence; a section is None when the prediction or ground truth lacks its inputs.

    Args:
        prediction: the predictions, keyed by stamp.
        gt: ground truth.
        align: trajectory alignment for ATE/RPE and point maps ("sim3", "se3", "none").
        depth_align: per-sequence depth alignment ("scale" = median, "scale_shift", "none").
        max_difference_ns: largest stamp difference to match a prediction to a ground-truth frame.
        rpe_delta: frame distance of RPE pairs (in matched frames).
        max_depth: ignore ground-truth depth beyond this (None = all).
        max_points: cap on points per cloud for the point-map metrics (uniform pixel subsampling).
        name: row name in tables.

    Returns:
        ``{"name", "frames": {...}, "pose": {...} | None, "depth": ..., "mask": ..., "points": ...}``.
    """
    gt_stamps = gt.stamps_ns
    pose_pairs = [
        (index, stamp)
        for index, stamp in match_stamps(gt_stamps, list(prediction.poses), max_difference_ns)
        if np.isfinite(gt.T_world_cam[index]).all()
    ]
    depth_pairs = (
        match_stamps(gt_stamps, list(prediction.depth), max_difference_ns) if gt.depth is not None else []
    )
    mask_pairs = (
        match_stamps(gt_stamps, list(prediction.dynamic_mask), max_difference_ns)
        if gt.dynamic_mask is not None
        else []
    )
    result: dict[str, Any] = {
        "name": name,
        "frames": {
            "gt": len(gt),
            "pose": len(pose_pairs),
            "depth": len(depth_pairs),
            "mask": len(mask_pairs),
        },
        "pose": None,
        "depth": None,
        "mask": None,
        "points": None,
    }
    similarity = None
    if pose_pairs:
        gt_poses = gt.T_world_cam[[index for index, _ in pose_pairs]]
        pred_poses = np.stack([prediction.poses[stamp] for _, stamp in pose_pairs])
        ate = absolute_trajectory_error(pred_poses, gt_poses, align)
        rpe = relative_pose_error(pred_poses, gt_poses, rpe_delta, align)
        similarity = align_trajectory(pred_poses, gt_poses, align)
        result["pose"] = {
            "align": align,
            "ate_rmse": ate["rmse"],
            "ate_mean": ate["mean"],
            "ate_median": ate["median"],
            "ate_max": ate["max"],
            "scale": ate["scale"],
            "rpe_delta": rpe_delta,
            "rpe_trans_rmse": rpe["trans_rmse"],
            "rpe_trans_mean": rpe["trans_mean"],
            "rpe_rot_rmse_deg": rpe["rot_rmse_deg"],
            "rpe_rot_mean_deg": rpe["rot_mean_deg"],
            "num_pairs": rpe["num_pairs"],
        }
    if depth_pairs:
        pred_values, gt_values = [], []
        for gt_index, stamp in depth_pairs:
            gt_depth = gt.depth[gt_index]
            pred_depth = resample_depth(prediction.depth[stamp], *gt_depth.shape)
            valid = valid_depth_pixels(pred_depth, gt_depth, max_depth)
            pred_values.append(pred_depth[valid])
            gt_values.append(gt_depth[valid])
        pred_all = np.concatenate(pred_values)
        if pred_all.size:
            metrics = depth_metrics(pred_all, np.concatenate(gt_values), depth_align, max_depth)
            result["depth"] = {"align": depth_align, **metrics}
    if mask_pairs:
        gt_masks = gt.dynamic_mask[[index for index, _ in mask_pairs]]
        pred_masks = np.stack(
            [resample_mask(prediction.dynamic_mask[stamp], *gt_masks.shape[1:]) for _, stamp in mask_pairs]
        )
        metrics = mask_metrics(pred_masks, gt_masks)
        per_frame = [mask_metrics(p, g)["iou"] for p, g in zip(pred_masks, gt_masks)]
        result["mask"] = {**metrics, "mean_frame_iou": float(np.mean(per_frame))}
    if similarity is not None and depth_pairs and gt.K is not None:
        result["points"] = _point_maps(prediction, gt, depth_pairs, similarity, max_depth, max_points)
    return result


def _point_maps(
    prediction: PredictionSet,
    gt: SyntheticSequence,
    depth_pairs: list[tuple[int, int]],
    similarity: Any,
    max_depth: float | None,
    max_points: int,
) -> dict[str, float] | None:
    """Point-map accuracy/completeness of the frames with predicted depth and pose and a GT pose, in GT units.

    Predicted points are back-projected with the predicted K (scaled to the GT size) or, without one, the GT
    K, moved by the predicted poses and mapped by the trajectory alignment; GT points use GT depth, K and
    poses.
    """
    pairs = [
        (index, stamp)
        for index, stamp in depth_pairs
        if stamp in prediction.poses and np.isfinite(gt.T_world_cam[index]).all()
    ]
    if not pairs:
        return None
    height, width = gt.depth.shape[1:]
    stride = max(1, int(np.ceil(np.sqrt(len(pairs) * height * width / max(max_points, 1)))))
    grid = np.zeros((height, width), dtype=bool)
    grid[stride // 2 :: stride, stride // 2 :: stride] = True
    pred_clouds, gt_clouds = [], []
    for gt_index, stamp in pairs:
        pred_depth_raw = prediction.depth[stamp]
        pred_depth = resample_depth(pred_depth_raw, height, width)
        gt_depth = gt.depth[gt_index]
        valid = valid_depth_pixels(pred_depth, gt_depth, max_depth) & (pred_depth > 0)
        pixels = np.nonzero(valid & grid)
        if len(pixels[0]) == 0:
            continue
        if stamp in prediction.K:
            K_pred = scale_intrinsics(prediction.K[stamp], pred_depth_raw.shape, (height, width))
        else:
            K_pred = gt.K[gt_index]
        pose = prediction.poses[stamp]
        pred_world = backproject(pred_depth, K_pred, pixels) @ pose[:3, :3].T + pose[:3, 3]
        pred_clouds.append(similarity.apply_points(pred_world))
        gt_pose = gt.T_world_cam[gt_index]
        gt_clouds.append(backproject(gt_depth, gt.K[gt_index], pixels) @ gt_pose[:3, :3].T + gt_pose[:3, 3])
    if not pred_clouds:
        return None
    return {
        **pointmap_metrics(np.concatenate(pred_clouds), np.concatenate(gt_clouds)),
        "pixel_stride": stride,
    }


TABLE_COLUMNS = (
    ("ATE", ("pose", "ate_rmse"), "lower"),
    ("RPE-t", ("pose", "rpe_trans_rmse"), "lower"),
    ("RPE-r", ("pose", "rpe_rot_rmse_deg"), "lower"),
    ("AbsRel", ("depth", "abs_rel"), "lower"),
    ("δ<1.25", ("depth", "delta_1"), "higher"),
    ("Mask IoU", ("mask", "iou"), "higher"),
)


def summarize(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean of each table column over the sequences that have it (None when none has it)."""
    summary: dict[str, float | None] = {}
    for label, (section, key), _ in TABLE_COLUMNS:
        values = [r[section][key] for r in results if r.get(section) is not None]
        summary[label] = float(np.mean(values)) if values else None
    return summary


def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table like the paper's (ATE, RPE-t, RPE-r, AbsRel, δ<1.25, mask IoU), plus a mean row when
    there are several sequences; '–' marks a metric that could not be computed."""
    arrows = {"lower": "↓", "higher": "↑"}
    header = ["Sequence", *[f"{label}{arrows[direction]}" for label, _, direction in TABLE_COLUMNS]]
    rows = []
    for result in results:
        row = [result.get("name") or "sequence"]
        for _, (section, key), _ in TABLE_COLUMNS:
            row.append("–" if result.get(section) is None else f"{result[section][key]:.3f}")
        rows.append(row)
    if len(results) > 1:
        summary = summarize(results)
        rows.append(["mean", *["–" if value is None else f"{value:.3f}" for value in summary.values()]])
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    lines += ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)
