"""How many published camera frames the node takes in, processes and drops, over real DDS with default QoS.

Starts ``page4d_node`` in its own process (shipped model unless ``--checkpoint``, CPU, default input QoS:
``sensor_data`` with depth 2 and its ``frame_queue_size`` worker queue, 8 frames unless
``--frame-queue-size``), publishes a synthetic recording at ``--rate`` Hz
with best-effort QoS like a camera driver, then reads the node's own counters from ``/diagnostics``:

- ``images_received``: images that reached the node's callback (the rest were lost in DDS: the history of 2
  overflowed because the callback did not run in time);
- ``frames_processed``: frames published with outputs;
- ``dropped_frames``: frames the worker queue dropped because inference was behind (by design: newest first).

The publisher's own delays are reported too (a late publisher bursts frames, which a depth-2 history drops).
``--dds profile`` (the default) gives both processes ``config/fastdds_loopback.xml`` (32 MiB shared memory,
the setting the README recommends for large images on one machine); ``--dds default`` keeps Fast DDS's own.

Example::

    .venv/bin/python benchmarks/node_input.py --rate 30 --frames 300 --width 640 --height 480
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import yaml

from page4d_ros.synthetic import generate_sequence
from page4d_ros.tools.demo import NAMESPACE, ros_environment, stop_process, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=30.0, help="publishing rate in Hz")
    parser.add_argument("--frames", type=int, default=300, help="frames to publish")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped model)")
    parser.add_argument("--model-long-side", type=int, default=0, help="0: the checkpoint's size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the node (OMP_NUM_THREADS)")
    parser.add_argument(
        "--frame-queue-size", type=int, default=0, help="the node's frame_queue_size (0: its default)"
    )
    parser.add_argument("--domain-id", type=int, default=91, help="ROS domain of the measurement")
    parser.add_argument("--dds", choices=("profile", "default"), default="profile", help="Fast DDS settings")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args()


def dds_environment(choice: str, domain_id: int) -> dict[str, str]:
    """Environment of both processes: the domain, and the loopback Fast DDS profile unless ``default``."""
    env = ros_environment(domain_id)
    if choice == "profile":
        env.update(
            {
                "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
                "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO_ROOT / "config" / "fastdds_loopback.xml"),
                "FASTRTPS_DEFAULT_PROFILES_FILE": str(REPO_ROOT / "config" / "fastdds_loopback.xml"),
                "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
            }
        )
    return env


class DiagnosticsReader:
    """Publishes camera topics and keeps the newest value of every diagnostic key (one executor thread)."""

    def __init__(self, domain_id: int) -> None:
        """Create the publishing and diagnostics node in its own context and spin it in a thread."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("page4d_node_input_benchmark", context=self.context)
        self.image_pub = self.node.create_publisher(Image, f"{NAMESPACE}/image", qos_profile_sensor_data)
        self.info_pub = self.node.create_publisher(
            CameraInfo, f"{NAMESPACE}/camera_info", qos_profile_sensor_data
        )
        self.lock = threading.Lock()
        self.values: dict[str, str] = {}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diagnostics(self, message: object) -> None:
        with self.lock:
            for status in message.status:
                for item in status.values:
                    self.values[f"{status.name}/{item.key}"] = item.value

    def value(self, key: str) -> str:
        """Newest value of ``"<status name>/<key>"`` ('' before it was seen)."""
        with self.lock:
            return self.values.get(key, "")

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def measure(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    """Run the node, publish the recording, return the node's counters and the publisher's delays."""
    from page4d_ros.ros.messages import RclpyMessageFactory, build_camera_info, build_header, build_image

    # Stamped at the publishing rate, as a camera running at that rate stamps its images (the stamps set the
    # flow baselines, so a 30 fps recording played at 10 Hz would cost a 30 fps stream's mask work).
    sequence = generate_sequence(
        0, args.frames, args.width, args.height, camera_motion="walk", num_movers=3, fps=args.rate
    )
    values = {
        "checkpoint_path": args.checkpoint,
        "device": "cpu",
        "warmup_iters": 1,
        "model_long_side": args.model_long_side,
        "require_metric_for_tf": False,
        "diagnostics_period": 0.25,
    }
    if args.frame_queue_size > 0:
        values["frame_queue_size"] = args.frame_queue_size
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    os.environ.update(dds_environment(args.dds, args.domain_id))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "page4d_ros.ros.node", "--ros-args", "--params-file", str(params)]
    log = open(folder / "node.log", "w")  # noqa: SIM115 - closed below, after the process ends
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    reader = DiagnosticsReader(args.domain_id)
    factory = RclpyMessageFactory()
    try:
        if not wait_until(lambda: reader.value("page4d: node/lifecycle_state") == "active", 120.0, process):
            raise RuntimeError(f"the node did not become active; its log: {folder / 'node.log'}")
        time.sleep(1.0)
        messages = []
        for index in range(args.frames):
            header = build_header(factory, int(sequence.stamps_ns[index]), sequence.frame_id)
            info = build_camera_info(factory, header, sequence.K[index], sequence.width, sequence.height)
            messages.append((info, build_image(factory, header, sequence.rgb[index], "rgb8")))
        period = 1.0 / args.rate
        publish_times = []
        start = time.monotonic()
        for index, (info, image) in enumerate(messages):
            publish_times.append(time.monotonic())
            reader.info_pub.publish(info)
            reader.image_pub.publish(image)
            delay = start + (index + 1) * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(3.0)
        gaps = np.diff(publish_times)
        return {
            "frames_published": args.frames,
            "rate_hz": args.rate,
            "size": f"{args.width}x{args.height}",
            "images_received": int(reader.value("page4d: input/images_received") or 0),
            "frames_processed": int(reader.value("page4d: inference/frames_processed") or 0),
            "dropped_frames": int(reader.value("page4d: inference/dropped_frames") or 0),
            "window_ms_mean": float(reader.value("page4d: inference/window_ms_mean") or 0.0),
            "inference_ms_mean": float(reader.value("page4d: inference/pipeline_mean_inference_ms") or 0.0),
            "publisher_max_gap_ms": float(gaps.max() * 1e3) if len(gaps) else 0.0,
            "backend": reader.value("page4d: inference/backend"),
            "dds": args.dds,
        }
    finally:
        stop_process(process)
        log.close()
        reader.close()


def main() -> None:
    """Measure once and print the counters (and write JSON when asked)."""
    args = _parse_args()
    with TemporaryDirectory() as folder:
        result = measure(args, Path(folder))
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}"
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
