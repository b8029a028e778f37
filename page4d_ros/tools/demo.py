"""``page4d-demo``: the whole system on a synthetic recording, over real DDS, with the shipped model.

1. renders a dynamic synthetic recording (walking camera, moving objects) and writes it as an MCAP rosbag2
   (``OUT/input_bag``);
2. starts the real node (``page4d_node``, its own process) with the model shipped in ``page4d_ros/models/``;
3. publishes the recording's images and camera_info over DDS and records every output of the node into an
   MCAP rosbag2 (``OUT/output_bag``);
4. evaluates the recorded outputs against the ground truth (``page4d_ros.evaluation``: ATE, RPE, depth
   AbsRel / delta < 1.25, mask IoU) into ``OUT/metrics.md`` and ``OUT/metrics.json``;
5. draws ``OUT/report.png``: input | depth | dynamic mask | top-down trajectory vs ground truth |
   rendered cloud.

    page4d-demo --out page4d_demo

Needs the ROS 2 Python wheels of ``scripts/setup_env.sh`` (rclpy, message packages, tf2_msgs), ``rosbags`` and
``matplotlib``; it says what is missing and how to install it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

NAMESPACE = "/page4d"
# (topic relative to the namespace, message type) of the recorded node outputs.
RECORDED_TOPICS = (
    ("depth/image", "sensor_msgs/msg/Image"),
    ("depth/camera_info", "sensor_msgs/msg/CameraInfo"),
    ("rgb/image", "sensor_msgs/msg/Image"),
    ("dynamic_mask/image", "sensor_msgs/msg/Image"),
    ("camera_pose", "geometry_msgs/msg/PoseWithCovarianceStamped"),
    ("odometry", "nav_msgs/msg/Odometry"),
    ("points", "sensor_msgs/msg/PointCloud2"),
)
SETUP_HINT = "run scripts/setup_env.sh (creates .venv with the ROS 2 wheels), then .venv/bin/page4d-demo"


def missing_dependencies() -> list[str]:
    """Names of the modules the demo needs that cannot be imported."""
    missing = []
    for module in (
        "rclpy",
        "sensor_msgs.msg",
        "tf2_msgs.msg",
        "diagnostic_msgs.msg",
        "rosbags",
        "matplotlib",
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def ros_environment(domain_id: int) -> dict[str, str]:
    """Environment that keeps the demo's DDS traffic on this machine and in its own domain, so it never talks
    to another page4d node (a robot's, or a second demo) that uses the same topic names."""
    return {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def node_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters of the demo's node: CPU, the shipped (or given) model at its training resolution."""
    return {
        "autostart": True,
        "checkpoint_path": args.checkpoint or "",
        "device": args.device,
        "warmup_iters": 1,
        "window_size": args.window_size,
        "window_stride": args.window_stride,
        "model_long_side": args.model_long_side,
        "frame_queue_size": max(64, args.frames),
        "input_qos": "reliable",
        "input_queue_depth": 100,
        "output_queue_depth": 100,
        "require_metric_for_tf": False,
        "publish_optical_static_tf": True,
        "base_frame": "camera_link",
        "diagnostics_period": 0.5,
        # The small synthetic model's depth is too coarse for the multi-view consistency test, which then
        # flags static surfaces; the masks come from the flow-residual test fused with the dynamics map.
        "mask_geometric": False,
        "pose_refinement": args.pose_refinement,
    }


class DemoBridge:
    """The demo's rclpy side: publishes the recording and writes every output message into an MCAP bag."""

    def __init__(self, bag_path: Path, domain_id: int) -> None:
        """Create the node, its publishers and raw (serialised) recording subscriptions."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
        from sensor_msgs.msg import CameraInfo, Image

        from page4d_ros.ros.messages import RclpyMessageFactory

        message_classes = RclpyMessageFactory()
        os.environ.update(ros_environment(domain_id))
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("page4d_demo", context=self.context)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f"{NAMESPACE}/image", reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", reliable)
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.first_output_time: float | None = None
        self.last_output_time: float | None = None
        self.lifecycle_state = ""
        typestore = get_typestore(Stores.ROS2_JAZZY)
        self.writer = Writer(bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        for relative, msgtype in RECORDED_TOPICS:
            topic = f"{NAMESPACE}/{relative}"
            connection = self.writer.add_connection(topic, msgtype, typestore=typestore)
            self.node.create_subscription(
                message_classes.message_class(msgtype),
                topic,
                self._recorder(topic, connection),
                reliable,
                raw=True,
            )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _recorder(self, topic: str, connection: Any) -> Any:
        """Callback writing one topic's serialised messages with the receive time as log time."""

        def record(data: bytes) -> None:
            now = time.monotonic()
            with self.lock:
                self.writer.write(connection, time.time_ns(), bytes(data))
                self.counts[topic] = self.counts.get(topic, 0) + 1
                self.first_output_time = self.first_output_time or now
                self.last_output_time = now

        return record

    def _on_diagnostics(self, message: Any) -> None:
        """Track the node's lifecycle state from its diagnostics."""
        for status in message.status:
            if status.name == "page4d: node":
                for item in status.values:
                    if item.key == "lifecycle_state":
                        self.lifecycle_state = item.value

    def count(self, relative: str) -> int:
        """Messages recorded so far on ``NAMESPACE/relative``."""
        with self.lock:
            return self.counts.get(f"{NAMESPACE}/{relative}", 0)

    def publish_frame(self, sequence: Any, index: int) -> None:
        """Publish camera_info then the image of frame ``index``."""
        from page4d_ros.ros.messages import RclpyMessageFactory, build_camera_info, build_header, build_image

        factory = RclpyMessageFactory()
        header = build_header(factory, int(sequence.stamps_ns[index]), sequence.frame_id)
        self.info_pub.publish(
            build_camera_info(factory, header, sequence.K[index], sequence.width, sequence.height)
        )
        self.image_pub.publish(build_image(factory, header, sequence.rgb[index], "rgb8"))

    def close(self) -> None:
        """Stop spinning and finish the bag."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        with self.lock:
            self.writer.close()


def wait_until(condition: Any, timeout_s: float, process: subprocess.Popen | None = None) -> bool:
    """Poll ``condition`` until true, the timeout, or the process's exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.1)
    return bool(condition())


def stop_process(process: subprocess.Popen) -> None:
    """SIGINT the process group, then SIGKILL it if it does not exit."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def run_node_over_dds(args: argparse.Namespace, sequence: Any, out: Path) -> dict[str, Any]:
    """Start the node, play the recording, record the outputs; returns timing and counts."""
    params = out / "node_params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": node_parameters(args)}}, sort_keys=False))
    log = open(out / "node.log", "w")  # noqa: SIM115 - closed below, after the process ends
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), **ros_environment(args.domain_id)}
    command = [sys.executable, "-m", "page4d_ros.ros.node", "--ros-args", "--params-file", str(params)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    bridge = DemoBridge(out / "output_bag", args.domain_id)
    timing: dict[str, Any] = {}
    try:
        if not wait_until(lambda: bridge.lifecycle_state == "active", args.startup_timeout, process):
            raise RuntimeError(
                f"the node did not become active in {args.startup_timeout:.0f} s "
                f"(state {bridge.lifecycle_state or 'unknown'}); see {out / 'node.log'}"
            )
        started = time.monotonic()
        for index in range(sequence.num_frames):
            bridge.publish_frame(sequence, index)
            time.sleep(1.0 / args.rate)
        published = time.monotonic()
        expected = sequence.num_frames - (sequence.num_frames - args.window_size) % args.window_stride
        wait_until(lambda: bridge.count("depth/image") >= expected, args.output_timeout, process)
        timing = {
            "frames_published": sequence.num_frames,
            "publish_rate_hz": args.rate,
            "publish_s": published - started,
            "frames_output": bridge.count("depth/image"),
            "first_output_after_s": (bridge.first_output_time or started) - started,
            "last_output_after_s": (bridge.last_output_time or started) - started,
        }
        span = timing["last_output_after_s"]
        timing["end_to_end_fps"] = timing["frames_output"] / span if span > 0 else 0.0
        timing["messages"] = dict(bridge.counts)
    finally:
        stop_process(process)
        log.close()
        bridge.close()
    return timing


def _colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth to RGB (turbo colormap between the 2nd and 98th percentiles; NaN black)."""
    from matplotlib import colormaps

    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros((*depth.shape, 3))
    low, high = np.percentile(depth[valid], [2, 98])
    normalised = np.clip((depth - low) / max(high - low, 1e-9), 0, 1)
    rgb = colormaps["turbo"](normalised)[..., :3]
    rgb[~valid] = 0
    return rgb


def _nearest_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an image's first two axes (pixel-centre aligned)."""
    rows = np.clip(((np.arange(height) + 0.5) * image.shape[0] / height).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(((np.arange(width) + 0.5) * image.shape[1] / width).astype(int), 0, image.shape[1] - 1)
    return image[rows][:, cols]


def write_report(sequence: Any, prediction: Any, result: dict[str, Any], path: Path) -> None:
    """The five-panel report image of one frame and the whole trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from page4d_ros.evaluation.trajectory import align_trajectory

    stamps = [int(stamp) for stamp in sequence.stamps_ns]
    index_of = {stamp: index for index, stamp in enumerate(stamps)}
    depth_stamps = [stamp for stamp in stamps if stamp in prediction.depth]
    figure, axes = plt.subplots(1, 5, figsize=(25, 5))
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    if not depth_stamps:
        axes[0].imshow(sequence.rgb[0])
        axes[0].set_title("input (the node published no depth)")
        figure.savefig(path, dpi=80)
        plt.close(figure)
        return
    shown = depth_stamps[len(depth_stamps) // 2]
    frame = index_of[shown]
    axes[0].imshow(sequence.rgb[frame])
    axes[0].set_title(f"input (frame {frame})")
    depth = prediction.depth[shown]
    axes[1].imshow(_colorize_depth(depth))
    axes[1].set_title("predicted depth")
    small_rgb = _nearest_resize(sequence.rgb[frame], *depth.shape).astype(np.float64) / 255.0
    mask = prediction.dynamic_mask.get(shown)
    overlay = small_rgb * 0.5
    if mask is not None:
        mask = _nearest_resize(mask, *depth.shape)
        overlay[mask] = [1.0, 0.1, 0.1]
    gt_mask = _nearest_resize(sequence.dynamic_mask[frame], *depth.shape)
    axes[2].imshow(overlay)
    axes[2].contour(gt_mask, levels=[0.5], colors="cyan", linewidths=1)
    axes[2].set_title("dynamic mask (red) / ground truth (cyan)")

    pose_stamps = [stamp for stamp in stamps if stamp in prediction.poses]
    trajectory_axis = axes[3]
    cloud_axis = axes[4]
    if len(pose_stamps) >= 2:
        gt_poses = sequence.T_world_cam[[index_of[stamp] for stamp in pose_stamps]]
        pred_poses = np.stack([prediction.poses[stamp] for stamp in pose_stamps])
        similarity = align_trajectory(pred_poses, gt_poses, "sim3")
        aligned = similarity.apply_poses(pred_poses)
        trajectory_axis.plot(
            sequence.T_world_cam[:, 0, 3], sequence.T_world_cam[:, 1, 3], "k-", label="ground truth"
        )
        trajectory_axis.plot(aligned[:, 0, 3], aligned[:, 1, 3], "r.-", label="PAGE-4D (Sim(3)-aligned)")
        trajectory_axis.set_aspect("equal", adjustable="datalim")
        trajectory_axis.legend(fontsize=8)
        trajectory_axis.set_title("top-down trajectory (x-y, metres)")
        points, colours = _world_cloud(sequence, prediction, similarity, depth_stamps, index_of)
        if len(points):
            order = np.argsort(points[:, 2])
            cloud_axis.scatter(points[order, 0], points[order, 1], c=colours[order], s=1, marker=".")
            cloud_axis.plot(aligned[:, 0, 3], aligned[:, 1, 3], "r-", linewidth=1)
            cloud_axis.set_aspect("equal", adjustable="datalim")
        cloud_axis.set_title("rendered cloud (top view, dynamic points removed)")
    for axis in axes[3:]:
        axis.set_xticks([])
        axis.set_yticks([])
    summary = _summary_line(result)
    figure.suptitle(summary, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _world_cloud(
    sequence: Any, prediction: Any, similarity: Any, stamps: list[int], index_of: dict[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Static points of every depth frame in the (aligned) ground-truth world, with their colours."""
    points, colours = [], []
    for stamp in stamps[:: max(1, len(stamps) // 12)]:
        depth = prediction.depth[stamp]
        K = prediction.K.get(stamp)
        if K is None or stamp not in prediction.poses:
            continue
        height, width = depth.shape
        v, u = np.mgrid[0:height:2, 0:width:2]
        d = depth[v, u]
        keep = np.isfinite(d) & (d > 0)
        mask = prediction.dynamic_mask.get(stamp)
        if mask is not None:
            keep &= ~_nearest_resize(mask, height, width)[v, u]
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(d)], axis=-1)
        camera_points = rays[keep] * d[keep, None]
        T = similarity.apply_poses(prediction.poses[stamp][None])[0]
        world = similarity.scale * camera_points @ T[:3, :3].T + T[:3, 3]
        rgb = _nearest_resize(sequence.rgb[index_of[stamp]], height, width)[v, u][keep] / 255.0
        points.append(world)
        colours.append(rgb)
    if not points:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(points), np.concatenate(colours)


def _summary_line(result: dict[str, Any]) -> str:
    """One line of the headline metrics."""
    parts = []
    if result.get("pose"):
        parts.append(f"ATE {result['pose']['ate_rmse']:.3f} m")
    if result.get("depth"):
        parts.append(f"AbsRel {result['depth']['abs_rel']:.3f}, δ<1.25 {result['depth']['delta_1']:.3f}")
    if result.get("mask"):
        parts.append(f"mask IoU {result['mask']['iou']:.3f}")
    return "page4d-demo: " + (" | ".join(parts) if parts else "no outputs to evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="page4d-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="page4d_demo", help="output folder (default ./page4d_demo)")
    parser.add_argument("--checkpoint", help="checkpoint (default: the model shipped in page4d_ros/models/)")
    parser.add_argument("--frames", type=int, default=48, help="frames of the synthetic recording")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=7, help="scene seed of the recording")
    parser.add_argument("--rate", type=float, default=10.0, help="publishing rate in Hz")
    parser.add_argument("--window-size", type=int, default=8)
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument(
        "--model-long-side",
        type=int,
        default=0,
        help="network input long side in pixels (0: the checkpoint's)",
    )
    parser.add_argument(
        "--pose-refinement",
        choices=("none", "flow"),
        default="flow",
        help="pose_refinement of the node (default flow; none publishes the network's own poses)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the node")
    parser.add_argument(
        "--domain-id",
        type=int,
        default=1 + os.getpid() % 100,
        help="ROS domain of the demo's node and recorder (default: one in 1-100, picked from the process id; "
        "ids above 101 can collide with Linux ephemeral ports)",
    )
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--output-timeout", type=float, default=120.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``page4d-demo``; returns the exit status."""
    args = build_parser().parse_args(argv)
    missing = missing_dependencies()
    if missing:
        print(f"page4d-demo: missing Python modules {missing}; {SETUP_HINT}", file=sys.stderr)
        return 2
    if args.frames < args.window_size or args.rate <= 0:
        print("page4d-demo: need --frames >= --window-size and --rate > 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    if (out / "output_bag").exists() or (out / "input_bag").exists():
        print(f"page4d-demo: {out} holds an earlier run; remove it or choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)

    from page4d_ros.evaluation.protocol import evaluate, format_table, load_prediction_bag
    from page4d_ros.synthetic import generate_sequence
    from page4d_ros.synthetic.writers import write_mcap

    started = time.monotonic()
    print(f"[1/4] rendering a {args.frames}-frame synthetic recording -> {out / 'input_bag'}", flush=True)
    sequence = generate_sequence(
        args.seed, args.frames, args.width, args.height, camera_motion="walk", scene="room", num_movers=3
    )
    write_mcap(sequence, out / "input_bag")
    print("[2/4] running page4d_node over DDS and recording its outputs", flush=True)
    try:
        timing = run_node_over_dds(args, sequence, out)
    except RuntimeError as error:
        print(f"page4d-demo: error: {error}", file=sys.stderr)
        return 1
    print(
        f"      {timing['frames_output']} frames out, {timing['end_to_end_fps']:.2f} fps end to end",
        flush=True,
    )
    print("[3/4] evaluating against the ground truth", flush=True)
    prediction = load_prediction_bag(out / "output_bag")
    result = evaluate(prediction, sequence, name=f"synthetic walk/room seed {args.seed}")
    table = format_table([result])
    (out / "metrics.md").write_text(table + "\n")
    (out / "metrics.json").write_text(
        json.dumps({"result": result, "timing": timing}, indent=2, default=float)
    )
    print(table)
    print("[4/4] drawing the report", flush=True)
    write_report(sequence, prediction, result, out / "report.png")
    print(f"page4d-demo: done in {time.monotonic() - started:.0f} s; see {out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
