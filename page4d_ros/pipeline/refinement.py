"""Pose refinement with dense optical flow and PnP, and the flow-residual dynamic-mask test.

Why: a small or un-tuned network often gets depth right and camera translation wrong. With the window's depth,
dense optical flow between consecutive frames gives 2-D/3-D correspondences (pixel of the previous frame
lifted with its depth and refined pose, against where the flow moved it in the current frame), and a robust
PnP solves the current camera's pose. Scale stays tied to the network's depth (the 3-D points carry it).

Per new frame (:meth:`FlowRefiner.refine_pose`), against its reference frames (the frame just before it
and the earliest window frame within ``refine_baseline_s``):

1. DIS optical flow (``cv2.DISOpticalFlow``) reference -> current on grey images at ``flow_long_side``
   pixels; correspondences are taken on a regular grid where the reference is textured in two directions
   (the structure tensor's smaller eigenvalue above a floor and at least ``MIN_EIGENVALUE_RATIO`` of the
   larger: along stripes and edges a track slides), has depth away from depth edges and is not flagged
   dynamic (its published mask or the network's map). The DIS flow seeds pyramidal Lucas-Kanade at full
   flow resolution (the fast DIS presets stop at a quarter of it), forward and back; points that do not
   return to where they started are dropped. Each reference's points are placed with its final pose.
2. One ``cv2.solvePnPRansac`` on the correspondences of all references, then ``cv2.solvePnPRefineLM`` on
   the inliers.
3. Zero motion: when the median tracked motion is below ``zero_motion_px`` the camera has not moved and
   the frame takes the nearest reference's pose exactly (counted in ``RefinementStats.zero_motion``; a PnP
   would let slow movers and depth noise push a static camera around).
4. Gate ("fusion"): the flow pose wins when the flow is reliable (enough textured correspondences, motion
   below ``refine_max_flow_fraction`` of the image width, at least ``refine_min_inliers`` inliers making
   ``refine_min_inlier_ratio`` of the correspondences, rotation within ``refine_max_rotation_gap_deg`` of
   the network's relative rotation); otherwise the network's relative pose (chained in global units) is used.
   Which source won and why is counted in :class:`RefinementStats`.

Flow-residual masks (:meth:`FlowRefiner.flow_residual_mask`): for a frame with refined pose and depth, the
observed flow to a few earlier frames (baselines spread over ``mask_flow_baseline_s``, computed with the more
accurate ``mask_flow_preset``: the ultrafast preset smooths small movers away) is compared with the rigid flow
that depth and poses predict. Because the model depth is coarse and often wrong near objects, the rigid
position is the segment of the epipolar line spanned by the 3x3 minimum and maximum depth widened by
``depth_tolerance``: motion across the epipolar line is judged without trusting the depth, motion along it
only beyond the depth's uncertainty. Pixels failing forward-backward consistency (occlusions, disocclusions)
do not vote; a pixel "moved" when its residual exceeds the threshold in baselines holding at least half of
the weight of those where it could be tested (and in at least ``min_votes``). A baseline's weight is its time
gap squared: a mover's residual grows with the gap while the flow's error does not, so the inverse variance of
the motion a baseline measures grows with the gap squared. With equal votes the farthest baselines alone could
not outvote the short ones, which barely see a slow mover move (the demo's tumbling box at 30 fps: found by
the 5-frame baseline, not by the 2- and 3-frame ones; pixel IoU 0.480 with equal votes, 0.579 weighted).

Flow in textureless regions (sky, blank walls) and a wrong depth there make whole regions "move". So a moved
pixel is *confirmed* only where the static hypothesis also fails photometrically: the grey value of the pixel
is found nowhere along its rigid epipolar segment in the other image (within ``confirm_grey`` levels of the
3x3 range there). Confirmed pixels are reliable but sparse (a mover's uniform interior matches itself), so the
decision grows from them (hysteresis): the moved pixels reachable from confirmed ones within ``grow_px``
output pixels, in regions holding at least ``MIN_CONFIRMED`` confirmed pixels. A uniform sky region that
"moved" holds no confirmed pixel and is dropped; a mover keeps its full extent. The growth would still reach
into such a region from confirmed pixels at its border (the horizon), so textureless pixels farther than
``sky_depth_ratio`` times the frame's median depth (the sky at the finite depth the network gives it) are not
tested at all. A pixel whose flow failed the consistency check against every baseline (a fast or turning
mover DIS cannot follow, common at 10 fps) but points off its rigid segment is judged by the photometric test
alone: unexplained in at least half the baselines whose segment lies in view (equal votes: a texture that
changes is unexplained whatever the gap), it is moved and confirmed.
Photometric samples along a segment lie at most ``SEGMENT_SPACING_PX`` apart.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from page4d_ros.pipeline.preprocess import ResizePlan

FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
POSE_SOURCES = ("flow", "network")
FALLBACK_REASONS = (
    "no_previous",
    "no_image",
    "size_change",
    "no_depth",
    "low_texture",
    "large_motion",
    "few_inliers",
    "disagreement",
    "pnp_failed",
)
# Structure-tensor minimum eigenvalue (grey levels 0-1, 5x5 block) below which a pixel counts as textureless.
MIN_TEXTURE_EIGENVALUE = 1e-4
# A pose correspondence also needs its smaller eigenvalue at least this fraction of the larger: along stripes
# and edges Lucas-Kanade slides (the aperture problem) and passes the forward-backward check. Held-out
# handheld-room at 30 fps, tracks against ground truth: below 0.1, 25-52 % of the tracks were 0.5-1 px off
# with a common bias up to 0.36 px (inside RANSAC's 1 px); at and above 0.1, 3-12 % and 0.01-0.09 px.
MIN_EIGENVALUE_RATIO = 0.1
DEPTH_EDGE_RATIO = 1.15
RANSAC_ITERATIONS = 100
# The mask test's flows run on this many threads, each with its own DIS instance: DIS's variational refinement
# is serial (a medium flow at 320x240 took 11.1 ms on one OpenCV thread, 10.7 ms on two) and OpenCV releases
# the GIL, so a second core computes the other flows meanwhile.
MASK_FLOW_THREADS = 2
# Confirmed pixels a connected moved region needs to be kept (a few pixels alone are noise). Validation
# streams (seed 900000), mask IoU with 2 / 4 / 8: 0.535 / 0.539 / 0.546 at 10 fps, 0.558 / 0.557 / 0.558 at
# 30 fps; 8 dropped small movers on held-out streams (handheld-outdoor 30 fps 0.399 / 0.396 / 0.386).
MIN_CONFIRMED = 4
# Points sampled along the rigid epipolar segment by the photometric confirmation: at least SEGMENT_SAMPLES,
# more on long segments so that they lie at most SEGMENT_SPACING_PX apart (the 3x3 range at each covers its
# neighbours), up to SEGMENT_MAX_SAMPLES.
SEGMENT_SAMPLES = 8
SEGMENT_SPACING_PX = 2.0
SEGMENT_MAX_SAMPLES = 64
RANSAC_CONFIDENCE = 0.999
# Lucas-Kanade refinement of the DIS correspondences (``FlowRefiner.track``): window, stopping rule, the
# forward-backward distance (flow pixels) a tracked point must return within, and at most this many points
# (evenly spread over the candidates; the tracking is most of the pose's cost).
TRACK_WINDOW = (11, 11)
TRACK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.01)
TRACK_FLAGS = cv2.OPTFLOW_USE_INITIAL_FLOW
TRACK_LEVELS = 1
TRACK_FB_PX = 0.5
TRACK_MAX_POINTS = 600


@dataclass
class RefinementStats:
    """Which pose source won per frame, and why the network was used when it was (``reason``; for a
    flow pose it is empty, or ``zero_motion`` when the camera was found static)."""

    frames: int = 0
    flow: int = 0
    network: int = 0
    zero_motion: int = 0
    last_source: str = ""
    last_reason: str = ""
    last_inliers: int = 0
    last_inlier_ratio: float = float("nan")
    fallbacks: dict[str, int] = field(default_factory=dict)

    def record(self, source: str, reason: str, inliers: int, ratio: float) -> None:
        """Count one frame's decision."""
        self.frames += 1
        if source == "flow":
            self.flow += 1
            self.zero_motion += reason == "zero_motion"
        else:
            self.network += 1
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        self.last_source, self.last_reason = source, reason
        self.last_inliers, self.last_inlier_ratio = inliers, ratio


@dataclass(frozen=True)
class PoseReference:
    """A frame a new one is solved against: its stamp, final world-from-camera pose, ``network_relative``
    (the network's pose of the current frame in the reference's camera, same units: the fallback), depth
    [h,w] (output grid, global units, NaN invalid) and the pixels kept out of the correspondences (bool
    [h,w]: dynamic)."""

    stamp_ns: int
    T_world_ref: np.ndarray
    network_relative: np.ndarray
    depth: np.ndarray
    dynamic: np.ndarray


@dataclass
class PoseEstimate:
    """The pose chosen for one frame (world-from-camera 4x4), its source and the PnP figures behind it."""

    T_world_cam: np.ndarray
    source: str
    reason: str
    inliers: int = 0
    inlier_ratio: float = float("nan")


@dataclass(frozen=True)
class FlowMaskSettings:
    """Settings of the flow-residual test (:meth:`FlowRefiner.flow_residual_mask`, module doc).

    ``threshold_px`` + ``relative_threshold`` x rigid flow length: residual (flow pixels) above which a
    baseline says "moved"; ``min_votes`` baselines must (and half the tested ones' weight);
    ``depth_tolerance`` widens the 3x3 depth range by that fraction; ``confirm_grey`` grey levels of the
    photometric confirmation (0: no confirmation, the moved pixels are the decision); ``grow_px`` reach of the
    growth from confirmed pixels; textureless pixels farther than ``sky_depth_ratio`` x the median depth are
    not tested (0: they are).
    """

    threshold_px: float = 1.5
    relative_threshold: float = 0.05
    min_votes: int = 1
    depth_tolerance: float = 0.5
    confirm_grey: float = 4.0
    grow_px: int = 4
    sky_depth_ratio: float = 3.0


@dataclass(frozen=True)
class FlowGrid:
    """How the flow images relate to the source and the pipeline output grid.

    ``width``/``height`` of the flow images; ``output_to_flow`` 3x3 affine from output pixels to flow pixels.
    """

    width: int
    height: int
    output_to_flow: np.ndarray


def flow_grid(plan: ResizePlan, long_side: int) -> FlowGrid:
    """The flow resolution for ``plan``'s source: its long side at most ``long_side`` (never upsampled)."""
    factor = min(1.0, long_side / max(plan.source_width, plan.source_height))
    width = max(8, round(plan.source_width * factor))
    height = max(8, round(plan.source_height * factor))
    gx, gy = width / plan.source_width, height / plan.source_height
    source_to_flow = np.array([[gx, 0.0, 0.5 * gx - 0.5], [0.0, gy, 0.5 * gy - 0.5], [0.0, 0.0, 1.0]])
    return FlowGrid(width, height, source_to_flow @ np.linalg.inv(plan.source_to_output_matrix()))


REMAP_COLUMNS = 4096
"""Width of the coordinate maps handed to ``cv2.remap``, which refuses maps with a side of 32767 or more: a
flat 1 x N map of a 574 x 434 output grid (π³) or a 518 px one (249,116 / 203,056 points) would fail."""


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample ``image`` [h,w] or [h,w,c] at float pixel coordinates (edges clamped) with OpenCV remap.

    The coordinates are laid out in rows of :data:`REMAP_COLUMNS` (the last row padded), any count works.
    """
    count = u.size
    if count == 0:
        return np.zeros(u.shape + image.shape[2:], dtype=image.dtype)
    columns = min(count, REMAP_COLUMNS)
    rows = -(-count // columns)

    def as_map(values: np.ndarray) -> np.ndarray:
        # Filled by hand, not with np.pad: a 9408-point call (112 x 84 grid) took 0.28 ms with it, 0.16 ms
        # without (about 40 calls per frame).
        laid_out = np.empty(rows * columns, dtype=np.float32)
        laid_out[:count] = values.reshape(-1)
        laid_out[count:] = 0.0
        return laid_out.reshape(rows, columns)

    sampled = cv2.remap(image, as_map(u), as_map(v), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape((rows * columns, *image.shape[2:]))[:count].reshape(u.shape + image.shape[2:])


def depth_extremes(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 minimum and maximum of a depth map (NaN invalid; a neighbourhood with an invalid pixel is NaN)."""
    filled = np.where(np.isfinite(depth), depth, np.float32(np.nan)).astype(np.float32)
    low = cv2.erode(np.nan_to_num(filled, nan=np.inf), np.ones((3, 3), np.uint8))
    high = cv2.dilate(np.nan_to_num(filled, nan=np.inf), np.ones((3, 3), np.uint8))
    invalid = ~np.isfinite(high)
    low[invalid] = np.nan
    high[invalid] = np.nan
    return low, high


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a 3x3 rotation matrix in degrees."""
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def _dense_flows(
    dis: cv2.DISOpticalFlow, image_pairs: list[tuple[np.ndarray, np.ndarray]]
) -> list[np.ndarray]:
    """DIS flows of (from, to) grey image pairs with one DIS instance (run on a mask-flow thread)."""
    return [dis.calc(first, second, None) for first, second in image_pairs]


class FlowRefiner:
    """Keeps grey flow images per stamp and estimates poses and flow-residual masks from them (module doc).

    Args:
        flow_long_side: long side of the flow images in pixels (sources are downsampled to it).
        flow_preset: ``ultrafast``, ``fast`` or ``medium`` (DIS presets: faster vs more accurate), for poses.
        mask_flow_preset: the preset of the flow-residual mask test's flows.
        sample_step: correspondence grid spacing in flow pixels.
        min_inliers, min_inlier_ratio, max_flow_fraction, max_rotation_gap_deg, reprojection_px: the gate.
        zero_motion_px: median tracked motion (flow pixels) below which the camera is static (0: never).
        max_images: grey images kept (the mask history's time span needs them).
    """

    def __init__(
        self,
        flow_long_side: int = 320,
        flow_preset: str = "ultrafast",
        mask_flow_preset: str = "medium",
        sample_step: int = 6,
        min_inliers: int = 40,
        min_inlier_ratio: float = 0.3,
        max_flow_fraction: float = 0.15,
        max_rotation_gap_deg: float = 5.0,
        reprojection_px: float = 1.0,
        zero_motion_px: float = 0.0,
        max_images: int = 64,
    ) -> None:
        for name, preset in (("flow_preset", flow_preset), ("mask_flow_preset", mask_flow_preset)):
            if preset not in FLOW_PRESETS:
                raise ValueError(f"{name} must be one of {sorted(FLOW_PRESETS)}, got {preset!r}")
        self.flow_long_side = int(flow_long_side)
        self.sample_step = int(sample_step)
        self.min_inliers = int(min_inliers)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.max_flow_fraction = float(max_flow_fraction)
        self.max_rotation_gap_deg = float(max_rotation_gap_deg)
        self.reprojection_px = float(reprojection_px)
        self.zero_motion_px = float(zero_motion_px)
        self.max_images = int(max_images)
        self._dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[flow_preset])
        self._mask_dis = [
            cv2.DISOpticalFlow_create(FLOW_PRESETS[mask_flow_preset]) for _ in range(MASK_FLOW_THREADS)
        ]
        self._mask_pool = ThreadPoolExecutor(MASK_FLOW_THREADS, thread_name_prefix="page4d_flow")
        self._pending: list[tuple[list[tuple[int, int, bool]], Future[list[np.ndarray]]]] = []
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._texture: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._grey_ranges: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._flows: OrderedDict[tuple[int, int, bool], np.ndarray] = OrderedDict()
        self.grid: FlowGrid | None = None
        self.stats = RefinementStats()
        self._photometric_only: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------------------------------- images
    def add_image(self, stamp_ns: int, rgb: np.ndarray, plan: ResizePlan) -> None:
        """Store the grey flow image of an accepted frame (the source ``rgb`` of ``plan``'s size)."""
        grid = flow_grid(plan, self.flow_long_side)
        if self.grid is None or (grid.width, grid.height) != (self.grid.width, self.grid.height):
            self.clear()
        self.grid = grid
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        if grey.shape != (grid.height, grid.width):
            grey = cv2.resize(grey, (grid.width, grid.height), interpolation=cv2.INTER_AREA)
        self._images[int(stamp_ns)] = grey
        while len(self._images) > self.max_images:
            old, _ = self._images.popitem(last=False)
            self._texture.pop(old, None)
            self._grey_ranges.pop(old, None)
            self._photometric_only.pop(old, None)

    def photometric_only(self, stamp_ns: int) -> np.ndarray | None:
        """Output pixels the last mask test of ``stamp_ns`` called dynamic by the photometric test alone (flow
        inconsistent in every baseline), or None.

        They are published as dynamic but stay in the pose's PnP: at 10 fps they include the near ground of a
        walking camera, whose flow DIS cannot follow, and kept out of the pose they led it astray, the masks
        following (96-frame held-out walk-outdoor at 10 fps: mask IoU 0.152, below `none`'s 0.193, -> 0.50).
        """
        return self._photometric_only.get(int(stamp_ns))

    def has_image(self, stamp_ns: int) -> bool:
        """Whether the flow image of ``stamp_ns`` is kept."""
        return int(stamp_ns) in self._images

    def clear(self) -> None:
        """Forget every image and flow (resets, size changes)."""
        pending, self._pending = self._pending, []
        for _, future in pending:  # their DIS instances must be idle before the next flows
            future.exception()
        self._images.clear()
        self._photometric_only.clear()
        self._texture.clear()
        self._grey_ranges.clear()
        self._flows.clear()

    def flow(self, from_stamp: int, to_stamp: int, for_masks: bool = False) -> np.ndarray:
        """Dense flow [h,w,2] (float32, flow pixels) from one kept image to another (cached), with the pose
        preset or, with ``for_masks``, the mask test's."""
        key = (int(from_stamp), int(to_stamp), bool(for_masks))
        if for_masks:
            self._collect_mask_flows()
        cached = self._flows.get(key)
        if cached is None:
            dis = self._mask_dis[0] if for_masks else self._dis
            cached = self._store_flow(key, dis.calc(self._images[key[0]], self._images[key[1]], None))
        return cached

    def _store_flow(self, key: tuple[int, int, bool], flow: np.ndarray) -> np.ndarray:
        self._flows[key] = flow
        while len(self._flows) > 4 * self.max_images:
            self._flows.popitem(last=False)
        return flow

    def start_mask_flows(self, pairs: Iterable[tuple[int, int]], threads: int = 1) -> None:
        """Begin the mask-preset flows of ``pairs`` (from, to) of kept images on ``threads`` worker threads.

        The flows need only the images, so the pipeline starts a window's before its inference and the two
        overlap; :meth:`flow` collects them. One thread by default: the inference keeps a core busy (a CPU
        torch thread, or the GPU's feeding thread), and a second flow thread only takes turns with it (2-core
        CPU, shipped model, 10 fps, 320x240: window 396-399 ms without the overlap, 282-303 ms with one flow
        thread beside the inference, 362-400 ms with two; ``benchmarks/README.md``, "Pose refinement").
        """
        self._collect_mask_flows()  # one batch at a time: each thread's DIS instance serves one job
        keys = dict.fromkeys((int(a), int(b), True) for a, b in pairs)
        missing = [k for k in keys if k not in self._flows and k[0] in self._images and k[1] in self._images]
        threads = max(1, min(int(threads), MASK_FLOW_THREADS))
        for index, dis in enumerate(self._mask_dis[:threads]):
            share = missing[index::threads]
            if share:
                images = [(self._images[a], self._images[b]) for a, b, _ in share]
                self._pending.append((share, self._mask_pool.submit(_dense_flows, dis, images)))

    def _collect_mask_flows(self) -> None:
        """Wait for the background mask flows and cache them."""
        pending, self._pending = self._pending, []
        for share, future in pending:
            for key, flow in zip(share, future.result()):
                self._store_flow(key, flow)

    def _prefetch_mask_flows(self, pairs: list[tuple[int, int]]) -> None:
        """Compute the mask-preset flows of ``pairs`` (from, to) not cached yet, spread over the threads."""
        self.start_mask_flows(pairs, threads=MASK_FLOW_THREADS)
        self._collect_mask_flows()

    def _texture_maps(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(textured, trackable) pixels of a kept image (cached): the structure tensor's smaller eigenvalue
        above ``MIN_TEXTURE_EIGENVALUE``, and also at least ``MIN_EIGENVALUE_RATIO`` of the larger one."""
        maps = self._texture.get(stamp_ns)
        if maps is None:
            grey = self._images[stamp_ns].astype(np.float32) / 255.0
            eigen = cv2.cornerEigenValsAndVecs(grey, 5, 3)
            larger = np.maximum(eigen[..., 0], eigen[..., 1])
            smaller = np.minimum(eigen[..., 0], eigen[..., 1])
            textured = smaller > MIN_TEXTURE_EIGENVALUE
            maps = (textured, textured & (smaller >= MIN_EIGENVALUE_RATIO * larger))
            self._texture[stamp_ns] = maps
        return maps

    # --------------------------------------------------------------------------------------------- pose
    def _output_to_flow(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A = self.grid.output_to_flow
        return A[0, 0] * u + A[0, 2], A[1, 1] * v + A[1, 2]

    def _flow_to_output(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A = self.grid.output_to_flow
        return (u - A[0, 2]) / A[0, 0], (v - A[1, 2]) / A[1, 1]

    def flow_intrinsics(self, K_output: np.ndarray) -> np.ndarray:
        """K on the flow grid from K on the output grid."""
        return self.grid.output_to_flow @ np.asarray(K_output, dtype=np.float64)

    def track(
        self,
        from_stamp: int,
        to_stamp: int,
        u: np.ndarray,
        v: np.ndarray,
        motion: np.ndarray,
        selected: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sub-pixel positions in ``to_stamp`` of the ``selected`` points (u, v) of ``from_stamp``.

        The DIS flow ``motion`` (coarse: its finest scale is a quarter of the image at the fast presets)
        seeds pyramidal Lucas-Kanade at full flow resolution, forward and back; a point is tracked when both
        converge and it returns within ``TRACK_FB_PX`` of where it started; at most ``TRACK_MAX_POINTS`` of
        them are tracked. Returns (u, v, tracked).
        """
        u_c, v_c = u + motion[:, 0], v + motion[:, 1]
        tracked = np.zeros(u.shape, dtype=bool)
        index = np.flatnonzero(selected)
        if index.size > TRACK_MAX_POINTS:
            index = index[np.linspace(0, index.size - 1, TRACK_MAX_POINTS).astype(np.int64)]
        if index.size == 0:
            return u_c, v_c, tracked
        start = np.stack([u[index], v[index]], axis=1).astype(np.float32).reshape(-1, 1, 2)
        guess = np.stack([u_c[index], v_c[index]], axis=1).astype(np.float32).reshape(-1, 1, 2)
        previous, current = self._images[from_stamp], self._images[to_stamp]
        options = {
            "winSize": TRACK_WINDOW,
            "maxLevel": TRACK_LEVELS,
            "criteria": TRACK_CRITERIA,
            "flags": TRACK_FLAGS,
        }
        ahead, ok_ahead, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, guess.copy(), **options)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, ahead, start.copy(), **options)
        returned = np.linalg.norm((back - start).reshape(-1, 2), axis=1) < TRACK_FB_PX
        good = ok_ahead.reshape(-1).astype(bool) & ok_back.reshape(-1).astype(bool) & returned
        ahead = ahead.reshape(-1, 2).astype(np.float64)
        u_c[index], v_c[index] = ahead[:, 0], ahead[:, 1]
        tracked[index] = good & np.all(np.isfinite(ahead), axis=1)
        return u_c, v_c, tracked

    def _correspondences(
        self, reference: PoseReference, current_stamp: int, K_output: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        """Tracked correspondences of ``reference`` in the current frame: 3-D points in the reference's
        camera, their flow pixels in the current image and how far each moved (flow pixels); or why there
        are none (a :data:`FALLBACK_REASONS` name)."""
        previous_stamp = int(reference.stamp_ns)
        if self.grid is None or not (self.has_image(previous_stamp) and self.has_image(current_stamp)):
            return "no_image"
        depth = np.asarray(reference.depth, dtype=np.float32)
        dynamic = np.asarray(reference.dynamic, dtype=bool)
        if dynamic.shape != depth.shape:
            dynamic = np.zeros(depth.shape, dtype=bool)
        if not np.any(np.isfinite(depth) & (depth > 0)):
            return "no_depth"
        forward = self.flow(previous_stamp, current_stamp)
        height, width = forward.shape[:2]
        step = self.sample_step
        v_f, u_f = np.mgrid[step // 2 : height : step, step // 2 : width : step]
        u_f, v_f = u_f.reshape(-1).astype(np.float64), v_f.reshape(-1).astype(np.float64)
        trackable = self._texture_maps(previous_stamp)[1][v_f.astype(np.int64), u_f.astype(np.int64)]
        u_o, v_o = self._flow_to_output(u_f, v_f)
        out_h, out_w = depth.shape
        inside = (u_o > -0.5) & (u_o < out_w - 0.5) & (v_o > -0.5) & (v_o < out_h - 0.5)
        col = np.clip(np.rint(u_o), 0, out_w - 1).astype(np.int64)
        row = np.clip(np.rint(v_o), 0, out_h - 1).astype(np.int64)
        low, high = depth_extremes(depth)
        smooth = np.isfinite(low[row, col]) & (high[row, col] <= DEPTH_EDGE_RATIO * low[row, col])
        # Away from depth edges (3x3 range within DEPTH_EDGE_RATIO) bilinear depth is safe and sub-pixel.
        d = _bilinear(np.nan_to_num(depth, nan=0.0), u_o, v_o).astype(np.float64)
        usable = inside & np.isfinite(d) & (d > 0) & smooth & ~dynamic[row, col]
        motion = forward[v_f.astype(np.int64), u_f.astype(np.int64)].astype(np.float64)
        median_motion = float(np.median(np.linalg.norm(motion[usable], axis=1))) if usable.any() else 0.0
        if median_motion > self.max_flow_fraction * width:
            return "large_motion"
        candidates = usable & trackable
        u_c, v_c, tracked = self.track(previous_stamp, int(current_stamp), u_f, v_f, motion, candidates)
        in_view = (u_c >= 0) & (u_c <= width - 1) & (v_c >= 0) & (v_c <= height - 1)
        keep = candidates & tracked & in_view
        if np.count_nonzero(keep) < self.min_inliers:
            return "low_texture" if np.count_nonzero(candidates) < self.min_inliers else "few_inliers"
        rays = np.linalg.inv(K_output) @ np.stack([u_o[keep], v_o[keep], np.ones(np.count_nonzero(keep))])
        points = (rays * d[keep]).T.astype(np.float64)
        pixels = np.stack([u_c[keep], v_c[keep]], axis=1).astype(np.float64)
        moved = np.hypot(u_c[keep] - u_f[keep], v_c[keep] - v_f[keep])
        return points, pixels, moved

    def refine_pose(
        self,
        references: Sequence[PoseReference],
        current_stamp: int,
        K_output: np.ndarray,
    ) -> PoseEstimate:
        """The current frame's world-from-camera pose from flow + PnP against ``references`` (module doc).

        One PnP solves against the correspondences of all the references together, each reference's points
        placed with its final pose: the last reference (the nearest frame) anchors the solution and the
        fallback (its pose chained with the network's relative pose), the others add a longer baseline.
        Solving each frame against one older frame instead splits the stream into interleaved chains that
        drift apart (at 10 fps a reference two frames back made every other frame's yaw 1-2 degrees off).
        ``K_output`` are the intrinsics of the output grid used to lift and project. The decision is counted
        in :attr:`stats`.
        """
        if not references:
            raise ValueError("refine_pose needs at least one reference frame")
        anchor = references[-1]
        T_world_anchor = np.asarray(anchor.T_world_ref, dtype=np.float64)
        network_T_anchor_current = np.asarray(anchor.network_relative, dtype=np.float64)
        fallback = T_world_anchor @ network_T_anchor_current

        def decide(source: str, reason: str, pose: np.ndarray, inliers: int = 0, ratio: float = math.nan):
            self.stats.record(source, reason, inliers, ratio)
            return PoseEstimate(pose, source, reason, inliers, ratio)

        found = [(ref, self._correspondences(ref, current_stamp, K_output)) for ref in references]
        usable = [(reference, c) for reference, c in found if not isinstance(c, str)]
        if not usable:
            return decide("network", str(found[-1][1]), fallback)
        nearest, (_, _, moved) = usable[-1]
        if self.zero_motion_px > 0 and np.median(moved) < self.zero_motion_px:
            still = int(np.count_nonzero(moved < self.zero_motion_px))
            pose = np.asarray(nearest.T_world_ref, dtype=np.float64).copy()
            return decide("flow", "zero_motion", pose, still, still / moved.size)
        T_anchor_world = np.linalg.inv(T_world_anchor)
        point_sets, pixel_sets = [], []
        for reference, (points, pixels, _) in usable:
            T_anchor_ref = T_anchor_world @ np.asarray(reference.T_world_ref, dtype=np.float64)
            point_sets.append(points @ T_anchor_ref[:3, :3].T + T_anchor_ref[:3, 3])
            pixel_sets.append(pixels)
        points, pixels = np.concatenate(point_sets), np.concatenate(pixel_sets)
        K_flow = self.flow_intrinsics(K_output)
        guess = np.linalg.inv(network_T_anchor_current)
        rvec, _ = cv2.Rodrigues(guess[:3, :3])
        tvec = guess[:3, 3].reshape(3, 1).copy()
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                points,
                pixels,
                K_flow,
                None,
                rvec=rvec,
                tvec=tvec,
                useExtrinsicGuess=True,
                iterationsCount=RANSAC_ITERATIONS,
                reprojectionError=self.reprojection_px,
                confidence=RANSAC_CONFIDENCE,
                flags=cv2.SOLVEPNP_ITERATIVE,
            )
        except cv2.error:
            ok, inliers = False, None
        count = 0 if inliers is None else len(inliers)
        ratio = count / max(1, points.shape[0])
        if not ok or inliers is None or count < self.min_inliers or ratio < self.min_inlier_ratio:
            reason = "pnp_failed" if not ok else "few_inliers"
            return decide("network", reason, fallback, count, ratio)
        index = inliers.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(points[index], pixels[index], K_flow, None, rvec, tvec)
        T_current_anchor = np.eye(4)
        T_current_anchor[:3, :3] = cv2.Rodrigues(rvec)[0]
        T_current_anchor[:3, 3] = tvec.reshape(3)
        if not np.all(np.isfinite(T_current_anchor)):
            return decide("network", "pnp_failed", fallback, count, ratio)
        T_anchor_current = np.linalg.inv(T_current_anchor)
        gap = rotation_angle_deg(network_T_anchor_current[:3, :3].T @ T_anchor_current[:3, :3])
        if gap > self.max_rotation_gap_deg:
            return decide("network", "disagreement", fallback, count, ratio)
        return decide("flow", "", T_world_anchor @ T_anchor_current, count, ratio)

    # -------------------------------------------------------------------------------------------- masks
    def _grey_range(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """3x3 minimum and maximum (float32) of a kept grey image (cached)."""
        cached = self._grey_ranges.get(stamp_ns)
        if cached is None:
            grey, kernel = self._images[stamp_ns], np.ones((3, 3), np.uint8)
            cached = (cv2.erode(grey, kernel).astype(np.float32), cv2.dilate(grey, kernel).astype(np.float32))
            self._grey_ranges[stamp_ns] = cached
        return cached

    def _unexplained_on_segment(
        self,
        other_stamp: int,
        grey: np.ndarray,
        selected: np.ndarray,
        start: tuple[np.ndarray, np.ndarray],
        end: tuple[np.ndarray, np.ndarray],
        tolerance: float,
    ) -> np.ndarray:
        """Which ``selected`` pixels' grey value lies more than ``tolerance`` outside the other image's 3x3
        range everywhere on their segment from ``start`` to ``end`` (flow pixels): the static hypothesis
        fails photometrically. All arrays are per pixel; the result is False where not ``selected``."""
        low, high = self._grey_range(int(other_stamp))
        found = np.zeros(int(selected.sum()), dtype=bool)
        (u0, v0), (u1, v1), value = [c[selected] for c in start], [c[selected] for c in end], grey[selected]
        length = np.hypot(u1 - u0, v1 - v0)
        steps = np.clip(np.ceil(length / SEGMENT_SPACING_PX), SEGMENT_SAMPLES - 1, SEGMENT_MAX_SAMPLES - 1)
        for k in range(int(steps.max(initial=0)) + 1):
            t = np.minimum(k / steps, 1.0)
            u, v = u0 + t * (u1 - u0), v0 + t * (v1 - v0)
            found |= (value >= _bilinear(low, u, v) - tolerance) & (
                value <= _bilinear(high, u, v) + tolerance
            )
        unexplained = np.zeros(selected.shape, dtype=bool)
        unexplained[selected] = ~found
        return unexplained

    def flow_residual_mask(
        self,
        stamp_ns: int,
        T_world_cam: np.ndarray,
        depth: np.ndarray,
        K_output: np.ndarray,
        others: list[tuple[int, np.ndarray]],
        settings: FlowMaskSettings,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Flow-residual dynamic decision [h,w] and where it was tested (both bool) on the output grid.

        ``depth`` [h,w] (output grid, NaN invalid) and ``T_world_cam`` of the frame, ``others`` the
        (stamp, world-from-camera pose) of comparison frames in the same units; ``settings`` the test's
        (module doc). None when no baseline could be compared.
        """
        if self.grid is None or not self.has_image(stamp_ns):
            return None
        others = [(s, T) for s, T in others if self.has_image(s) and int(s) != int(stamp_ns)]
        depth = np.asarray(depth, dtype=np.float32)
        if not others:
            return None
        height, width = depth.shape
        low, high = depth_extremes(depth)
        widening = 1.0 + settings.depth_tolerance
        bounds = (low / widening, high * widening)
        v_o, u_o = np.mgrid[0:height, 0:width]
        u_o, v_o = u_o.reshape(-1).astype(np.float64), v_o.reshape(-1).astype(np.float64)
        valid = np.isfinite(low.reshape(-1)) & (low.reshape(-1) > 0)
        u_f, v_f = self._output_to_flow(u_o, v_o)
        if settings.sky_depth_ratio > 0 and valid.any():
            # A textureless far region (the sky at the network's finite depth) carries DIS's fill-in flow,
            # not a measurement: untested, so no verdict there and no growth into it from the horizon.
            far = low.reshape(-1) > settings.sky_depth_ratio * np.median(low.reshape(-1)[valid])
            rows = np.clip(np.rint(v_f), 0, self.grid.height - 1).astype(int)
            cols = np.clip(np.rint(u_f), 0, self.grid.width - 1).astype(int)
            valid &= ~(far & ~self._texture_maps(int(stamp_ns))[0][rows, cols])
        rays = (np.linalg.inv(K_output) @ np.stack([u_o, v_o, np.ones_like(u_o)])).T
        K_flow = self.flow_intrinsics(K_output)
        flow_w, flow_h = self.grid.width, self.grid.height
        grey = _bilinear(self._images[int(stamp_ns)].astype(np.float32), u_f, v_f)
        # Per pixel: how many baselines voted "moved", confirmed it, or found it photometrically unexplained,
        # the weights of the moved and confirmed votes and of the baselines where the flow could test it,
        # and how many baselines could test it photometrically.
        votes = np.zeros(height * width, dtype=np.int32)
        confirmations = np.zeros_like(votes)
        photometric_votes = np.zeros_like(votes)
        moved_weight = np.zeros(height * width)
        confirmed_weight = np.zeros_like(moved_weight)
        tested_weight = np.zeros_like(moved_weight)
        photometric_tested = np.zeros_like(votes)
        self._prefetch_mask_flows(
            [pair for other, _ in others for pair in ((stamp_ns, other), (other, stamp_ns))]
        )
        for other_stamp, T_world_other in others:
            weight = ((int(other_stamp) - int(stamp_ns)) * 1e-9) ** 2
            forward = self.flow(stamp_ns, other_stamp, for_masks=True)
            backward = self.flow(other_stamp, stamp_ns, for_masks=True)
            observed = _bilinear(forward, u_f, v_f).astype(np.float64)
            u_obs, v_obs = u_f + observed[:, 0], v_f + observed[:, 1]
            back = _bilinear(backward, u_obs, v_obs).astype(np.float64)
            magnitude = np.hypot(observed[:, 0], observed[:, 1])
            consistent = np.hypot(u_obs + back[:, 0] - u_f, v_obs + back[:, 1] - v_f) < 1.0 + 0.05 * magnitude
            in_view = (u_obs >= 0) & (u_obs <= flow_w - 1) & (v_obs >= 0) & (v_obs <= flow_h - 1)
            T_other_cam = np.linalg.inv(T_world_other) @ np.asarray(T_world_cam, dtype=np.float64)
            ends = []
            for bound in bounds:
                points = rays * bound.reshape(-1, 1) @ T_other_cam[:3, :3].T + T_other_cam[:3, 3]
                z = points[:, 2]
                z_safe = np.where(z > 1e-6, z, 1.0)
                pixel = points @ K_flow.T
                ends.append((pixel[:, 0] / z_safe, pixel[:, 1] / z_safe, z > 1e-6))
            (ua, va, front_a), (ub, vb, front_b) = ends
            seg_u, seg_v = ub - ua, vb - va
            length2 = seg_u**2 + seg_v**2
            t = np.clip(((u_obs - ua) * seg_u + (v_obs - va) * seg_v) / np.maximum(length2, 1e-12), 0.0, 1.0)
            residual = np.hypot(u_obs - (ua + t * seg_u), v_obs - (va + t * seg_v))
            rigid = np.hypot(ua - u_f, va - v_f)
            can_test = valid & consistent & in_view & front_a & front_b
            off_segment = residual > settings.threshold_px + settings.relative_threshold * rigid
            moved = can_test & off_segment
            votes += moved
            moved_weight += weight * moved
            tested_weight += weight * can_test
            if settings.confirm_grey > 0:
                start, end, tolerance = (ua, va), (ub, vb), settings.confirm_grey
                confirmed = self._unexplained_on_segment(other_stamp, grey, moved, start, end, tolerance)
                confirmations += confirmed
                confirmed_weight += weight * confirmed
                # Where the flow failed its consistency check (a fast or turning mover DIS cannot follow,
                # or an occlusion) but still points off the rigid segment, the photometric test judges, with
                # the whole segment in view. Inconsistent flow that stays on the segment (the near ground
                # of a walking camera at 10 fps) is left untested: judged photometrically it flagged that
                # ground, and the masks then led the pose astray (96-frame walk-outdoor IoU 0.14 without
                # this condition, 0.42 with it).
                segment_in_view = (np.minimum(ua, ub) >= 0) & (np.maximum(ua, ub) <= flow_w - 1)
                segment_in_view &= (np.minimum(va, vb) >= 0) & (np.maximum(va, vb) <= flow_h - 1)
                probed = valid & ~consistent & off_segment & segment_in_view & front_a & front_b
                unexplained = self._unexplained_on_segment(other_stamp, grey, probed, start, end, tolerance)
                photometric_votes += unexplained
                photometric_tested += probed

        def decided(counts: np.ndarray, weights: np.ndarray, among: np.ndarray) -> np.ndarray:
            majority = (counts >= max(settings.min_votes, 1)) & (2 * weights >= among)
            return majority.reshape(height, width)

        dynamic = decided(votes, moved_weight, tested_weight)
        tested = tested_weight > 0
        if settings.confirm_grey > 0:
            # A pixel the flow could test nowhere is decided by the photometric majority alone; it is both
            # moved and confirmed (nothing else speaks for it), and the growth runs through it.
            untested = ~tested.reshape(height, width)
            photometric = decided(photometric_votes, photometric_votes, photometric_tested) & untested
            self._photometric_only[int(stamp_ns)] = photometric
            confirmed = decided(confirmations, confirmed_weight, tested_weight)
            dynamic = grow_from_confirmed(dynamic | photometric, confirmed | photometric, settings.grow_px)
            tested |= photometric_tested > 0
        return dynamic, tested.reshape(height, width)


def grow_from_confirmed(moved: np.ndarray, confirmed: np.ndarray, reach_px: int) -> np.ndarray:
    """The ``moved`` pixels reachable from ``confirmed`` ones through moved pixels within ``reach_px`` steps
    (8-connected), in connected regions holding at least :data:`MIN_CONFIRMED` confirmed pixels."""
    moved_u8 = moved.astype(np.uint8)
    grown = (confirmed & moved).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(reach_px):
        grown = cv2.dilate(grown, kernel) & moved_u8
    count, labels = cv2.connectedComponents(grown, connectivity=8)
    seeds = np.bincount(labels[confirmed & moved], minlength=count)
    keep = seeds >= MIN_CONFIRMED
    keep[0] = False
    return keep[labels]
