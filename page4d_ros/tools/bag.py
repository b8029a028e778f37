"""``page4d-bag INPUT OUTPUT [--params FILE]``: run the node's pipeline offline over a rosbag2 or ROS 1 bag.

Every image is processed (no queue, no drops) in log-time order, so the output is deterministic for a given
input, checkpoint and device. The output is an MCAP rosbag2 with the node's topics and types under the node's
namespace (``/page4d/depth/image``, ``/page4d/camera_pose``, ...) plus ``/tf`` (and ``/tf_static`` when
``publish_optical_static_tf`` is set). ``path`` is written once, at the end (the whole trajectory), instead of
growing with every frame. Messages are built by the same code as the node's
(:mod:`page4d_ros.ros.outputs`) and read and written with ``rosbags``: no ROS installation is needed (in
``tf_mode`` map, tf2's ``BufferCore`` follows the robot's odometry chain when ``tf2_py`` is installed).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from page4d_ros.pipeline.config import parse_override
from page4d_ros.pipeline.types import Frame
from page4d_ros.ros import conversions
from page4d_ros.ros.frames import optical_position_from_odometry
from page4d_ros.ros.messages import RosbagsMessageFactory, build_tf_message
from page4d_ros.ros.outputs import NON_METRIC_NOTE, TF_TOPIC, TOPIC_TYPES, OutputBuilder
from page4d_ros.ros.parameters import load_parameters_file, validate_parameters
from page4d_ros.ros.pipeline_factory import build_pipeline
from page4d_ros.ros.scheduling import CameraInfoCache, calibration_from_camera_info

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TF2_CACHE_S = 3600.0
"""Seconds of /tf history the offline tf2 buffer keeps (a bag is read once, in log-time order)."""


class Tf2RobotOdometry:
    """The robot odometry of tf_mode map through tf2's ``BufferCore`` (any chain, interpolated).

    Used when ``tf2_py`` (part of every ROS install) and rclpy are importable; otherwise the tool reads one
    direct ``odom -> base`` edge by hand (:class:`page4d_ros.ros.frames.TransformHistory`).
    """

    def __init__(self, odom_frame: str, base_frame: str) -> None:
        import tf2_py
        from geometry_msgs.msg import TransformStamped
        from rclpy.duration import Duration
        from rclpy.time import Time

        self._core = tf2_py.BufferCore(Duration(seconds=TF2_CACHE_S))
        self._message, self._time = TransformStamped, Time
        self.odom_frame, self.base_frame = odom_frame, base_frame

    def add(self, transform: Any, static: bool) -> None:
        """Store one rosbags ``TransformStamped`` of /tf (or /tf_static when ``static``)."""
        msg = self._message()
        msg.header.stamp.sec, msg.header.stamp.nanosec = (
            transform.header.stamp.sec,
            transform.header.stamp.nanosec,
        )
        msg.header.frame_id, msg.child_frame_id = transform.header.frame_id, transform.child_frame_id
        t, q = transform.transform.translation, transform.transform.rotation
        msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = t.x, t.y, t.z
        r = msg.transform.rotation
        r.x, r.y, r.z, r.w = q.x, q.y, q.z, q.w
        if static:
            self._core.set_transform_static(msg, "page4d-bag")
        else:
            self._core.set_transform(msg, "page4d-bag")

    def lookup(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """``odom -> base`` at ``stamp_ns`` (or the newest one, if within ``tolerance_ns``), else None."""
        try:
            transform = self._core.lookup_transform_core(
                self.odom_frame, self.base_frame, self._time(nanoseconds=stamp_ns)
            )
        except Exception:  # tf2's lookup exceptions: not at this stamp; try the newest one below
            try:
                transform = self._core.lookup_transform_core(self.odom_frame, self.base_frame, self._time())
            except Exception:  # no odom -> base chain (yet)
                return None
            if abs(_stamp_ns(transform.header) - stamp_ns) > tolerance_ns:
                return None
        t, q = transform.transform.translation, transform.transform.rotation
        try:
            return conversions.translation_quaternion_to_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except ValueError:
            return None


def _tf2_robot_odometry(settings: dict[str, Any]) -> Tf2RobotOdometry | None:
    """A tf2 reader of the robot odometry for tf_mode map, or None without tf2_py / rclpy."""
    if settings["tf_mode"] != "map":
        return None
    try:
        return Tf2RobotOdometry(settings["odom_frame"], settings["base_frame"])
    except ImportError:
        return None


@dataclass
class BagSummary:
    """What a run read and wrote."""

    images_read: int = 0
    frames_published: int = 0
    rejected: Counter = field(default_factory=Counter)
    messages_written: Counter = field(default_factory=Counter)
    image_topic: str = ""
    camera_info_topic: str = ""


def _stamp_ns(header: Any) -> int:
    return conversions.sec_nanosec_to_stamp(header.stamp.sec, header.stamp.nanosec)


def _pick_topic(
    connections: Sequence[Any], types: Sequence[str], requested: str | None, what: str
) -> Any | None:
    """The connection of ``requested`` (must have one of ``types``), else the only one with such a type."""
    candidates = [c for c in connections if c.msgtype in types]
    if requested:
        chosen = [c for c in candidates if c.topic == requested]
        if not chosen:
            available = sorted({c.topic for c in candidates}) or "none"
            raise ValueError(
                f"{what} topic '{requested}' not in the bag (with type {'/'.join(types)}: {available})"
            )
        return chosen[0]
    topics = sorted({c.topic for c in candidates})
    if len(topics) > 1:
        raise ValueError(
            f"the bag has several {what} topics {topics}; choose one with --{what.replace(' ', '-')}-topic"
        )
    return candidates[0] if candidates else None


def _pick_image_topic(connections: Sequence[Any], requested: str | None) -> Any | None:
    """The image connection: ``requested``, the only image topic, or the only one with a camera_info."""
    if requested:
        return _pick_topic(connections, IMAGE_TYPES, requested, "image")
    topics = {c.topic for c in connections}
    with_info = [
        c
        for c in connections
        if c.msgtype in IMAGE_TYPES
        and c.topic.removesuffix("/compressed").rsplit("/", 1)[0] + "/camera_info" in topics
    ]
    if len({c.topic for c in with_info}) == 1:
        return with_info[0]
    return _pick_topic(connections, IMAGE_TYPES, None, "image")


def _decode_image(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype == "sensor_msgs/msg/CompressedImage":
        return conversions.compressed_to_rgb(msg.format, msg.data)
    return conversions.image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def process_bag(
    input_path: str | Path,
    output_path: str | Path,
    settings: dict[str, Any],
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    odom_topic: str | None = None,
    metric_depth_topic: str | None = None,
    namespace: str = "/page4d",
    show_progress: bool = True,
) -> BagSummary:
    """Process every image of ``input_path`` and write the outputs to the new MCAP bag ``output_path``.

    ``settings`` is a validated parameter dict. Raises ``ValueError`` for unusable inputs (missing bag, no
    image topic, existing output) and ``RuntimeError`` when the checkpoint cannot be loaded.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise ValueError(f"input bag {input_path} does not exist")
    if output_path.exists():
        raise ValueError(
            f"output {output_path} already exists; choose a new folder (rosbag2 writes a directory)"
        )
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    factory = RosbagsMessageFactory(typestore)
    builder = OutputBuilder(factory, settings)
    camera_infos = CameraInfoCache(settings["camera_info_mode"], int(settings["camera_info_slop_s"] * 1e9))
    summary = BagSummary()

    with AnyReader([input_path], default_typestore=typestore) as reader:
        connections = list(reader.connections)
        image_connection = _pick_image_topic(connections, image_topic)
        if image_connection is None:
            raise ValueError(f"{input_path} has no sensor_msgs/Image or CompressedImage topic")
        if camera_info_topic is None:
            sibling = image_connection.topic.removesuffix("/compressed").rsplit("/", 1)[0] + "/camera_info"
            if any(c.topic == sibling for c in connections):
                camera_info_topic = sibling
        info_connection = _pick_topic(
            connections, ("sensor_msgs/msg/CameraInfo",), camera_info_topic, "camera info"
        )
        odom_connection = (
            _pick_topic(connections, ("nav_msgs/msg/Odometry",), odom_topic, "odom")
            if (settings["scale_source"] == "odometry")
            else None
        )
        depth_connection = (
            _pick_topic(connections, ("sensor_msgs/msg/Image",), metric_depth_topic, "metric depth")
            if settings["scale_source"] == "depth" and metric_depth_topic
            else None
        )
        tf_connections = [
            c for c in connections if c.topic in ("/tf", "/tf_static") and settings["tf_mode"] == "map"
        ]
        tf2_odometry = _tf2_robot_odometry(settings)
        if tf2_odometry is not None:
            builder.robot_odometry_lookup = tf2_odometry.lookup
        summary.image_topic = image_connection.topic
        summary.camera_info_topic = info_connection.topic if info_connection is not None else ""
        wanted = [
            c for c in (image_connection, info_connection, odom_connection, depth_connection) if c is not None
        ]
        wanted += tf_connections
        bundle = build_pipeline(settings, log=lambda message: print(message, file=sys.stderr))
        pipeline = bundle.pipeline

        output_path.parent.mkdir(parents=True, exist_ok=True)
        with Writer(output_path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            writer_connections: dict[str, Any] = {}

            def write(topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
                connection = writer_connections.get(topic)
                if connection is None:
                    connection = writer.add_connection(topic, msgtype, typestore=typestore)
                    writer_connections[topic] = connection
                writer.write(connection, stamp_ns, bytes(typestore.serialize_cdr(msg, msgtype)))
                summary.messages_written[topic] += 1

            static_frames: set[str] = set()
            final_path: list[tuple[Any, int]] = []
            warned_non_metric: list[bool] = []

            def write_static(frame_id: str, stamp_ns: int) -> None:
                """``base -> optical`` on /tf_static once per optical frame, at its first image's stamp."""
                if frame_id in static_frames:
                    return
                static_frames.add(frame_id)
                static = builder.static_transforms(frame_id, stamp_ns)
                if static:
                    write("/tf_static", "tf2_msgs/msg/TFMessage", build_tf_message(factory, static), stamp_ns)

            def publish(results: list[Any]) -> None:
                for result in results:
                    pose_outputs, ordered = builder.frame_messages(result)
                    if pose_outputs.non_metric_tf and not warned_non_metric:
                        warned_non_metric.append(True)
                        print(
                            f"page4d-bag: {NON_METRIC_NOTE.format(source=settings['scale_source'])}",
                            file=sys.stderr,
                        )
                    for topic, msg in ordered:
                        if topic == TF_TOPIC:
                            write(TF_TOPIC, "tf2_msgs/msg/TFMessage", msg, result.stamp_ns)
                        elif topic == "path":  # it grows with every frame: only the final one is written
                            final_path[:] = [(msg, result.stamp_ns)]
                        else:
                            write(f"{namespace}/{topic}", TOPIC_TYPES[topic], msg, result.stamp_ns)
                    summary.frames_published += 1

            # In tf_mode map a result waits until the bag has passed its stamp by transform_tolerance, so that
            # the robot odometry after the stamp has been read and the lookup interpolates.
            deferred: deque[Any] = deque()
            horizon_ns = int(settings["transform_tolerance"] * 1e9)

            def emit(results: list[Any]) -> None:
                if settings["tf_mode"] != "map":
                    publish(results)
                else:
                    deferred.extend(results)

            def publish_ready(log_time_ns: int | None) -> None:
                while deferred and (log_time_ns is None or deferred[0].stamp_ns + horizon_ns < log_time_ns):
                    publish([deferred.popleft()])

            progress = tqdm(
                total=image_connection.msgcount, unit="frame", desc="page4d-bag", disable=not show_progress
            )
            last_stamp: int | None = None
            for connection, log_time_ns, raw in reader.messages(connections=wanted):
                publish_ready(log_time_ns)
                msg = reader.deserialize(raw, connection.msgtype)
                if connection == info_connection:
                    try:
                        frame_id = msg.header.frame_id or settings["camera_optical_frame"]
                        camera_infos.add(frame_id, _stamp_ns(msg.header), calibration_from_camera_info(msg))
                    except ValueError as error:
                        summary.rejected[f"bad_camera_info: {error}"] += 1
                elif connection == odom_connection:
                    pose = msg.pose.pose
                    p, q = pose.position, pose.orientation
                    try:
                        T_odom_base = conversions.translation_quaternion_to_matrix(
                            (p.x, p.y, p.z), (q.x, q.y, q.z, q.w)
                        )
                        pipeline.add_odometry(
                            _stamp_ns(msg.header),
                            optical_position_from_odometry(T_odom_base, builder.T_base_optical),
                        )
                    except ValueError:
                        summary.rejected["bad_odometry"] += 1
                elif connection == depth_connection:
                    try:
                        depth = conversions.depth_image_to_metres(
                            msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data
                        )
                        pipeline.add_metric_depth(_stamp_ns(msg.header), depth)
                    except conversions.ImageConversionError as error:
                        summary.rejected[f"metric_depth_{error.kind}"] += 1
                    except ValueError:
                        summary.rejected["bad_metric_depth"] += 1
                elif connection in tf_connections:
                    for transform in msg.transforms:
                        parent, child = transform.header.frame_id, transform.child_frame_id
                        if tf2_odometry is not None:
                            try:
                                tf2_odometry.add(transform, static=connection.topic == "/tf_static")
                            except Exception:  # tf2 refuses a malformed transform (NaN, empty frame id)
                                summary.rejected["bad_tf"] += 1
                            continue
                        if not builder.needs_robot_odometry(parent, child):
                            continue
                        t, q = transform.transform.translation, transform.transform.rotation
                        try:
                            T = conversions.translation_quaternion_to_matrix(
                                (t.x, t.y, t.z), (q.x, q.y, q.z, q.w)
                            )
                        except ValueError:
                            summary.rejected["bad_tf"] += 1
                            continue
                        builder.observe_transform(parent, child, _stamp_ns(transform.header), T)
                else:
                    summary.images_read += 1
                    progress.update(1)
                    stamp_ns = _stamp_ns(msg.header)
                    try:
                        rgb = _decode_image(msg, connection.msgtype)
                    except conversions.ImageConversionError as error:
                        summary.rejected[error.kind] += 1
                        continue
                    if last_stamp is not None and stamp_ns <= last_stamp:
                        summary.rejected["backwards_stamp"] += 1
                        continue
                    frame_id = msg.header.frame_id or settings["camera_optical_frame"]
                    try:
                        Frame(rgb=rgb, stamp_ns=stamp_ns, frame_id=frame_id).validate()
                    except ValueError:
                        summary.rejected["invalid_frame"] += 1
                        continue
                    calibration = camera_infos.lookup(frame_id, stamp_ns)
                    if (
                        calibration is not None
                        and (calibration.width, calibration.height) != rgb.shape[1::-1]
                    ):
                        summary.rejected["camera_info_mismatch"] += 1
                        calibration = None
                    if calibration is None and settings["require_camera_info"]:
                        summary.rejected["missing_camera_info"] += 1
                        continue
                    last_stamp = stamp_ns
                    write_static(frame_id, stamp_ns)
                    emit(
                        pipeline.push(
                            Frame(rgb=rgb, stamp_ns=stamp_ns, frame_id=frame_id, calibration=calibration)
                        )
                    )
            emit(pipeline.flush())
            publish_ready(None)
            for msg, stamp_ns in final_path:
                write(f"{namespace}/path", TOPIC_TYPES["path"], msg, stamp_ns)
            progress.close()
    return summary


def build_argument_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``page4d-bag``."""
    parser = argparse.ArgumentParser(
        prog="page4d-bag",
        description="Run PAGE-4D over every image of a rosbag2 or ROS 1 bag; write the outputs to MCAP.",
    )
    parser.add_argument("input", help="input rosbag2 folder/file or ROS 1 .bag")
    parser.add_argument("output", help="output rosbag2 folder (MCAP storage; must not exist)")
    parser.add_argument("--params", help="ROS 2 parameters YAML (e.g. config/page4d.yaml)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="override one parameter"
    )
    parser.add_argument(
        "--image-topic",
        help="image topic (default: the only Image/CompressedImage topic with a camera_info sibling)",
    )
    parser.add_argument("--camera-info-topic", help="CameraInfo topic (default: sibling of the image topic)")
    parser.add_argument("--odom-topic", help="nav_msgs/Odometry topic for scale_source odometry")
    parser.add_argument("--metric-depth-topic", help="metric depth Image topic for scale_source depth")
    parser.add_argument(
        "--namespace", default="/page4d", help="namespace of the output topics (default /page4d)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``page4d-bag``; returns the process exit status (2 on bad input)."""
    args = build_argument_parser().parse_args(argv)
    try:
        values = load_parameters_file(args.params) if args.params else {}
        values.update(dict(parse_override(text) for text in args.param))
        settings = validate_parameters(values)
        summary = process_bag(
            args.input,
            args.output,
            settings,
            image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic,
            odom_topic=args.odom_topic,
            metric_depth_topic=args.metric_depth_topic,
            namespace=args.namespace,
            show_progress=not args.no_progress,
        )
    except (ValueError, RuntimeError) as error:
        print(f"page4d-bag: error: {error}", file=sys.stderr)
        return 2
    rejected = ", ".join(f"{kind}: {count}" for kind, count in sorted(summary.rejected.items())) or "none"
    print(
        f"page4d-bag: {summary.images_read} images read from {summary.image_topic}, "
        f"{summary.frames_published} frames written to {args.output} (rejected: {rejected})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
