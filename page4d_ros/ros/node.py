"""The ``page4d`` lifecycle node: camera frames in; depth, masks, clouds, odometry, path, TF, diagnostics out.

Lifecycle: ``configure`` validates the parameters, loads the checkpoint and warms the model up (a missing
or broken checkpoint fails the transition with a message that says what to do); ``activate`` subscribes and
starts the worker; ``deactivate`` unsubscribes and stops it; ``cleanup`` releases the model. With
``autostart`` (the default) the node configures and activates itself, so ``ros2 run`` works without a
lifecycle manager.

Scheduling: subscription callbacks only convert messages and enqueue frames in a bounded drop-oldest queue;
one worker thread runs the pipeline and publishes each frame's results with the source image's header.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from page4d_ros.pipeline.types import Frame
from page4d_ros.ros import conversions, diagnostics, parameters
from page4d_ros.ros.export import MapAccumulator, write_ply, write_tum
from page4d_ros.ros.frames import optical_position_from_odometry
from page4d_ros.ros.messages import RclpyMessageFactory, build_tf_message
from page4d_ros.ros.outputs import NON_METRIC_NOTE, TF_TOPIC, TOPIC_TYPES, OutputBuilder, is_metric
from page4d_ros.ros.pipeline_factory import PipelineBundle, build_pipeline
from page4d_ros.ros.scheduling import (
    CameraInfoCache,
    DropOldestQueue,
    QueuedFrame,
    calibration_from_camera_info,
    carry_time_jump,
)

_MESSAGE_CLASSES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CameraInfo": CameraInfo,
    "sensor_msgs/msg/PointCloud2": PointCloud2,
    "nav_msgs/msg/Odometry": Odometry,
    "geometry_msgs/msg/PoseWithCovarianceStamped": PoseWithCovarianceStamped,
    "nav_msgs/msg/Path": PathMsg,
}
WORKER_JOIN_TIMEOUT_S = 30.0
"""How long deactivate waits for the worker to finish its window (activation is refused while it runs)."""
TRAJECTORY_MAX_POSES = 100_000
"""Poses kept for the TUM file of ``~/save`` (about 25 MB at most)."""
CAMERA_INFO_WAIT_S = 0.5
"""In camera_info_mode synchronized, how long after its image a CameraInfo may arrive and still pair."""
TF2_ODOMETRY_WAIT_S = 0.1
"""tf_mode map: how long the worker waits for the robot's odometry at a frame stamp it does not have yet."""


def optional_ros_module(name: str) -> Any:
    """Import a ROS library that every ROS install has but PyPI does not (tf2_ros, message_filters).

    Returns None when it is absent (a venv of PyPI wheels), and the node uses its own fallback.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def qos_profile(name: str, depth: int) -> QoSProfile:
    """QoS profile for a parameter value: sensor_data, reliable, best_effort or system_default."""
    if name == "sensor_data":
        profile = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        return profile
    if name == "reliable":
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE
        )
    if name == "best_effort":
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT
        )
    if name == "system_default":
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
            durability=DurabilityPolicy.SYSTEM_DEFAULT,
        )
    raise ValueError(f"unknown QoS '{name}'; use one of {list(parameters.QOS_CHOICES)}")


LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def parameter_descriptor(spec: parameters.ParameterSpec) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: description, constraints in words and its numeric range.

    Typing stays dynamic so that ``1`` for a float parameter (YAML, ``ros2 param set``) is accepted; the
    range then applies to values of the declared type and :func:`parameters.check_value` checks all.
    """
    descriptor = ParameterDescriptor(
        description=spec.description, additional_constraints=spec.constraints(), dynamic_typing=True
    )
    bounds = spec.range
    if bounds is not None and isinstance(spec.default, float):
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(bounds.low), to_value=float(bounds.high), step=0.0)
        ]
    elif bounds is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        descriptor.integer_range = [
            IntegerRange(from_value=int(bounds.low), to_value=int(bounds.high), step=int(bounds.step))
        ]
    return descriptor


def _stamp_ns(header: Any) -> int:
    return conversions.sec_nanosec_to_stamp(header.stamp.sec, header.stamp.nanosec)


class Page4dNode(LifecycleNode):
    """Lifecycle node running PAGE-4D on windows of camera frames (see the README, "The ROS node")."""

    def __init__(self, node_name: str = parameters.NODE_NAME, **kwargs: Any) -> None:
        kwargs.setdefault("namespace", parameters.DEFAULT_NAMESPACE)
        super().__init__(node_name, **kwargs)
        self._override_errors: dict[str, str] = {}
        for spec in parameters.PARAMETERS:
            try:
                self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
            except InvalidParameterValueException as error:
                # An out-of-range value from a params file or -p: keep the default, refuse configure.
                self._override_errors[spec.name] = str(error)
                self.get_logger().error(f"parameter '{spec.name}': {error}; configure refuses to run")
                self.declare_parameter(
                    spec.name, spec.default, parameter_descriptor(spec), ignore_override=True
                )
        self._factory = RclpyMessageFactory()
        self._settings: dict[str, Any] | None = None
        self._configured = False
        self._active = False
        self._lifecycle_state = "unconfigured"
        self._last_error = ""
        self._bundle: PipelineBundle | None = None
        self._builder: OutputBuilder | None = None
        self._output_publishers: dict[str, Any] = {}
        self._tf_publisher: Any = None
        self._tf_static_publisher: Any = None
        self._input_subscriptions: list[Any] = []
        self._tf2_buffer: Any = None
        self._tf2_listener: Any = None
        self._queue: DropOldestQueue[QueuedFrame] = DropOldestQueue(1, carry_time_jump)
        self._aux_inputs: deque[tuple[str, int, np.ndarray]] = deque(maxlen=256)
        self._camera_info_sync: Any = None
        self._image_headers: Any = None
        self._tf2_mounting = False
        self._non_metric_logged = False
        self._last_frame_s = 0.0
        self._flushed_since_frame = True
        self._camera_infos = CameraInfoCache()
        self._pipeline_lock = threading.Lock()
        self._pipeline_actions: deque[tuple[str, Callable[[], None]]] = deque()
        self._worker: threading.Thread | None = None
        self._stop_worker = threading.Event()
        self._stopping_worker: threading.Thread | None = None
        self._static_frames: set[str] = set()
        self._map = MapAccumulator(2_000_000, 0.05)
        self._trajectory: deque[tuple[int, np.ndarray]] = deque(maxlen=TRAJECTORY_MAX_POSES)
        self._input_rate = diagnostics.RateMeter()
        self._output_rate = diagnostics.RateMeter()
        self._window_ms = diagnostics.PercentileWindow()
        self._latency_ms = diagnostics.PercentileWindow()
        self._problems = diagnostics.ProblemLog()
        self._last_input: dict[str, Any] = {}
        self._last_enqueued_stamp: int | None = None
        self._processed_size: tuple[int, int] | None = None
        self._last_result: Any = None
        self._tf_note = ""
        self._frames_processed = 0
        self._images_received = 0
        self._resets = 0
        self._reset_since_report = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("diagnostics_period").value
        period = float(period) if isinstance(period, (int, float)) and period > 0 else 1.0
        self._diagnostics_timer = self.create_timer(max(period, 0.05), self._publish_diagnostics)
        self.create_service(Trigger, "~/reset", self._guarded_service("~/reset", self._on_reset))
        self.create_service(Trigger, "~/save", self._guarded_service("~/save", self._on_save))

    # ---------------------------------------------------------------------------------------------- lifecycle
    def autostart(self) -> None:
        """Configure and activate when the ``autostart`` parameter is true (failures stay in diagnostics)."""
        if not self.get_parameter("autostart").value:
            return
        self.trigger_configure()
        if self._configured:
            self.trigger_activate()

    def _current_parameters(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in parameters.PARAMETERS}

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self._last_error = message
        self._problems.report("configure", message)
        self.get_logger().error(message)
        return TransitionCallbackReturn.FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, load and warm up the model, create publishers (FAILURE with a message)."""
        if self._override_errors:
            return self._fail(
                "configure failed: parameters given at start-up are out of range (the defaults were kept): "
                + "; ".join(self._override_errors.values())
                + "; set valid values (ros2 param set) and configure again"
            )
        try:
            settings = parameters.validate_parameters(self._current_parameters())
        except ValueError as error:
            return self._fail(f"configure failed: invalid parameters: {error}")
        try:
            bundle = build_pipeline(settings, self.get_logger().info)
        except Exception as error:  # any failure to build the model must fail the transition, not the process
            return self._fail(f"configure failed: {error}")
        self._settings = settings
        self._bundle = bundle
        self._builder = OutputBuilder(self._factory, settings)
        self._queue = DropOldestQueue(settings["frame_queue_size"], carry_time_jump)
        self._camera_infos = CameraInfoCache(
            settings["camera_info_mode"], int(settings["camera_info_slop_s"] * 1e9)
        )
        self._map = MapAccumulator(settings["map_max_points"], settings["map_voxel_size"])
        output_qos = qos_profile(settings["output_qos"], settings["output_queue_depth"])
        for topic, type_name in TOPIC_TYPES.items():
            qos = LATCHED_QOS if topic == "path" else output_qos
            self._output_publishers[topic] = self.create_lifecycle_publisher(
                _MESSAGE_CLASSES[type_name], topic, qos
            )
        self._tf_publisher = self.create_lifecycle_publisher(TFMessage, "/tf", TF_QOS)
        self._tf_static_publisher = self.create_lifecycle_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self._configured = True
        self._lifecycle_state = "inactive"
        self._last_error = ""
        self.get_logger().info(
            f"configured: {bundle.description}; window {settings['window_size']}/{settings['window_stride']}"
            f", tf_mode {settings['tf_mode']}, scale_source {settings['scale_source']}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the inputs and /tf, start the worker thread (FAILURE while the old one still runs)."""
        settings = self._settings
        assert settings is not None
        stopping = self._stopping_worker
        if stopping is not None and stopping.is_alive():
            self.get_logger().error(
                "activate refused: the previous worker is still finishing a window; try again when "
                "it has exited"
            )
            return TransitionCallbackReturn.FAILURE
        self._stopping_worker = None
        input_qos = qos_profile(settings["input_qos"], settings["input_queue_depth"])
        if settings["image_transport"] == "compressed":
            image_sub = self.create_subscription(
                CompressedImage,
                "image/compressed",
                self._guarded("image/compressed", self._on_compressed_image),
                input_qos,
            )
        else:
            image_sub = self.create_subscription(
                Image, "image", self._guarded("image", self._on_image), input_qos
            )
        self._input_subscriptions = [
            image_sub,
            *self._camera_info_subscriptions(input_qos),
            self.create_subscription(TFMessage, "/tf", self._guarded("/tf", self._on_tf), TF_QOS),
            self.create_subscription(
                TFMessage, "/tf_static", self._guarded("/tf_static", self._on_tf), TF_STATIC_QOS
            ),
        ]
        if settings["scale_source"] == "odometry":
            self._input_subscriptions.append(
                self.create_subscription(Odometry, "odom", self._guarded("odom", self._on_odometry), 50)
            )
        if settings["scale_source"] == "depth":
            self._input_subscriptions.append(
                self.create_subscription(
                    Image, "metric_depth", self._guarded("metric_depth", self._on_metric_depth), input_qos
                )
            )
        self._start_tf2_listener()
        self._last_frame_s, self._flushed_since_frame = time.monotonic(), True
        # Each worker has its own stop event: one that outlives its deactivation stops all the same.
        self._stop_worker = threading.Event()
        self._worker = threading.Thread(
            target=self._worker_loop, args=(self._stop_worker,), name="page4d-worker", daemon=True
        )
        self._worker.start()
        self._active = True
        self._lifecycle_state = "active"
        self.get_logger().info("active: waiting for images")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker and drop queued frames."""
        self._stop_inputs_and_worker()
        self._lifecycle_state = "inactive"
        self.get_logger().info("deactivated: inputs unsubscribed, worker stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release publishers, the pipeline and the model (GPU memory included)."""
        self._release()
        self._lifecycle_state = "unconfigured"
        self.get_logger().info("cleaned up: model and publishers released; every parameter may be set")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything on shutdown from any state."""
        self._stop_inputs_and_worker()
        self._release()
        self._lifecycle_state = "finalized"
        self.get_logger().info("shut down: finalized")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after an error in a transition (back to unconfigured)."""
        self._stop_inputs_and_worker()
        self._release()
        self._lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _apply_to_pipeline(self, name: str, action: Callable[[], None]) -> None:
        """Run ``action`` under the pipeline lock: on the worker between frames when it runs, else now.

        Service and parameter callbacks share the one executor thread with the inputs, so they hand pipeline
        changes to the worker instead of waiting for the lock through a whole window.
        """
        worker = self._worker
        if worker is not None and worker.is_alive():
            self._pipeline_actions.append((name, action))
        else:
            with self._pipeline_lock:
                action()

    def _run_pipeline_actions(self) -> None:
        """Apply the queued pipeline changes in order (any failure is reported, the rest still run)."""
        while self._pipeline_actions:
            name, action = self._pipeline_actions.popleft()
            try:
                with self._pipeline_lock:
                    action()
            except Exception as error:  # a failed change must not stop the worker; it is reported instead
                self._problems.report("pipeline_error", f"{name} failed: {type(error).__name__}: {error}")
                self.get_logger().error(f"{name} failed: {type(error).__name__}: {error}")

    def _stop_inputs_and_worker(self) -> None:
        self._active = False
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if self._tf2_listener is not None and hasattr(self._tf2_listener, "unregister"):
            self._tf2_listener.unregister()
        self._tf2_listener = None
        self._tf2_buffer = None
        self._camera_info_sync = self._image_headers = None
        self._stop_worker.set()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            started = time.monotonic()
            worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
            waited = time.monotonic() - started
            if worker.is_alive():
                self._stopping_worker = worker
                self._logger_for_shutdown().warn(
                    f"worker still running a window after {waited:.1f} s; it stops after that window "
                    "and activation is refused until then"
                )
            else:
                self._logger_for_shutdown().info(f"worker stopped ({waited:.2f} s)")
        self._run_pipeline_actions()
        self._queue.clear()

    def _logger_for_shutdown(self) -> Any:
        """The node's logger; once Ctrl-C shut the context down, a console-only one (/rosout is gone)."""
        if self.context.ok():
            return self.get_logger()
        return rclpy.logging.get_logger(f"{self.get_name()}.shutdown")

    def _release(self) -> None:
        for publisher in [*self._output_publishers.values(), self._tf_publisher, self._tf_static_publisher]:
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._output_publishers = {}
        self._tf_publisher = self._tf_static_publisher = None
        with self._pipeline_lock:
            if self._bundle is not None:
                self._bundle.release()
            self._bundle = None
        self._builder = None
        self._settings = None
        self._configured = False
        self._static_frames.clear()
        self._map.clear()
        self._trajectory.clear()
        self._last_enqueued_stamp = None
        self._processed_size = None
        self._last_input = {}

    def _start_tf2_listener(self) -> None:
        """Listen with tf2_ros (when installed) for the camera mounting and, in tf_mode map, robot odometry.

        The mounting ``base_frame -> optical`` comes from tf2 when ``base_to_optical_from_tf`` is set and
        the node does not publish it itself (``publish_optical_static_tf``): until the lookup succeeds,
        poses, odometry and TF are withheld and ``page4d: tf`` says what it waits for. Without tf2_ros the
        parameters give the mounting and the robot odometry is read from ``/tf`` by hand (one direct edge).
        """
        settings = self._settings
        assert settings is not None and self._builder is not None
        self._tf2_mounting = False
        wants_mounting = settings["base_to_optical_from_tf"] and not settings["publish_optical_static_tf"]
        wants_odometry = settings["tf_mode"] == "map"
        if not (wants_mounting or wants_odometry):
            return
        tf2_ros = optional_ros_module("tf2_ros")
        if tf2_ros is None:
            self.get_logger().info(
                "tf2_ros is not installed: the camera mounting comes from base_to_optical_xyz/rpy"
                + (", the robot odometry from /tf (direct edge only)" if wants_odometry else "")
            )
            return
        self._tf2_buffer = tf2_ros.Buffer()
        self._tf2_listener = tf2_ros.TransformListener(self._tf2_buffer, self)
        if wants_mounting and not self._builder.anchor.anchored:
            self._tf2_mounting = True
            self._builder.mounting_pending = (
                f"no tf2 lookup of {settings['base_frame']} -> the image's optical frame yet"
            )
        if wants_odometry:
            self._builder.robot_odometry_lookup = self._robot_odometry_from_tf2

    def _mounting_from_tf2(self, optical_frame: str) -> None:
        """Until it succeeds, look the camera mounting base_frame -> optical frame up in tf2."""
        builder, buffer, settings = self._builder, self._tf2_buffer, self._settings
        if not self._tf2_mounting or buffer is None or builder is None or settings is None:
            return
        try:
            transform = buffer.lookup_transform(settings["base_frame"], optical_frame, Time()).transform
        except Exception as error:  # tf2 raises several exception types, all meaning "not available yet"
            builder.mounting_pending = (
                f"tf2 has no {settings['base_frame']} -> {optical_frame} ({type(error).__name__}: "
                f"{str(error).strip()}); publish it (URDF / robot_state_publisher / "
                "static_transform_publisher), or set base_to_optical_from_tf false to use "
                "base_to_optical_xyz/rpy"
            )
            return
        try:
            T = conversions.translation_quaternion_to_matrix(
                (transform.translation.x, transform.translation.y, transform.translation.z),
                (transform.rotation.x, transform.rotation.y, transform.rotation.z, transform.rotation.w),
            )
        except ValueError as error:  # e.g. a zero quaternion in the URDF's transform: keep waiting, say why
            base = settings["base_frame"]
            builder.mounting_pending = f"tf2's {base} -> {optical_frame} is unusable: {error}"
            return
        builder.set_base_to_optical(T)
        self._tf2_mounting = False
        self.get_logger().info(f"camera mounting {settings['base_frame']} -> {optical_frame} read from tf2")

    def _robot_odometry_from_tf2(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """The robot's odom_frame -> base_frame at ``stamp_ns`` from tf2 (interpolated, along any chain).

        Waits up to :data:`TF2_ODOMETRY_WAIT_S` for a stamp newer than the buffer holds; a stamp still
        ahead of the newest odometry by at most ``tolerance_ns`` takes the newest one.
        """
        buffer, settings = self._tf2_buffer, self._settings
        if buffer is None or settings is None:
            return None
        odom, base = settings["odom_frame"], settings["base_frame"]
        if not buffer.can_transform(odom, base, Time()):
            return None  # no odom -> base chain at all yet: do not wait for it on every frame
        try:
            transform = buffer.lookup_transform(
                odom, base, Time(nanoseconds=stamp_ns), timeout=Duration(seconds=TF2_ODOMETRY_WAIT_S)
            )
        except Exception:  # tf2's lookup exceptions: not (yet) at this stamp; try the newest one below
            try:
                transform = buffer.lookup_transform(odom, base, Time())
            except Exception:  # the chain vanished from the buffer meanwhile
                return None
            if abs(_stamp_ns(transform.header) - stamp_ns) > tolerance_ns:
                return None
        t, q = transform.transform.translation, transform.transform.rotation
        try:
            return conversions.translation_quaternion_to_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except ValueError as error:  # a broken odometry transform: this frame gets no map -> odom
            self._problems.report("bad_tf", f"{odom} -> {base} from tf2: {error}")
            return None

    # ------------------------------------------------------------------------------------------------ inputs
    def _report_callback_error(self, source: str, error: Exception) -> None:
        message = f"{source} callback failed on a message: {type(error).__name__}: {error}"
        self._problems.report("callback_error", message)
        self.get_logger().error(message, throttle_duration_sec=5.0)

    def _guarded(self, source: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """``callback`` for a subscription, with any exception reported instead of stopping the executor.

        rclpy re-raises a callback's exception out of ``spin``, which would end the node: one message the
        conversions did not foresee must cost that message only.
        """

        def guarded(msg: Any) -> None:
            try:
                callback(msg)
            except Exception as error:  # reported (log + /diagnostics ERROR); the next message is processed
                self._report_callback_error(source, error)

        return guarded

    def _guarded_service(self, source: str, callback: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``callback`` for a service: an exception becomes ``success: false`` with the error as message."""

        def guarded(request: Any, response: Any) -> Any:
            try:
                return callback(request, response)
            except Exception as error:  # reported and answered; the node keeps running
                self._report_callback_error(source, error)
                response.success, response.message = False, f"{type(error).__name__}: {error}"
                return response

        return guarded

    def _on_image(self, msg: Image) -> None:
        self._count_image(msg.header)
        try:
            rgb = conversions.image_to_rgb(
                msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data
            )
        except conversions.ImageConversionError as error:
            self._problems.report(error.kind, str(error))
            return
        self._enqueue(rgb, _stamp_ns(msg.header), msg.header.frame_id, msg.encoding)

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._count_image(msg.header)
        try:
            rgb = conversions.compressed_to_rgb(msg.format, msg.data)
        except conversions.ImageConversionError as error:
            self._problems.report(error.kind, str(error))
            return
        self._enqueue(rgb, _stamp_ns(msg.header), msg.header.frame_id, f"compressed {msg.format}")

    def _count_image(self, header: Any) -> None:
        self._images_received += 1
        self._input_rate.tick(self.get_clock().now().nanoseconds)
        image_headers = self._image_headers
        if image_headers is not None:  # camera_info_mode synchronized with message_filters
            image_headers.signalMessage(SimpleNamespace(header=header))

    def _enqueue(self, rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str) -> None:
        settings = self._settings
        if settings is None or not self._active:
            return
        frame_id = frame_id or settings["camera_optical_frame"]
        self._last_input = {
            "encoding": encoding,
            "resolution": f"{rgb.shape[1]}x{rgb.shape[0]}",
            "frame_id": frame_id,
        }
        try:
            Frame(rgb=rgb, stamp_ns=stamp_ns, frame_id=frame_id).validate()
        except ValueError as error:  # rejected here, it costs this frame; in the pipeline, a reset
            self._problems.report("invalid_frame", f"{error}; frame dropped")
            return
        last = self._last_enqueued_stamp
        time_jump_back = False
        if last is not None and stamp_ns <= last:
            if last - stamp_ns <= int(settings["max_gap_s"] * 1e9):
                self._problems.report(
                    "backwards_stamp",
                    f"image stamp {stamp_ns} ns is not newer than the previous {last} ns; frame dropped",
                )
                return
            self._problems.report(
                "time_jump_back", f"time jumped back from {last} to {stamp_ns} ns; restarting"
            )
            time_jump_back = True
        self._last_enqueued_stamp = stamp_ns
        frame = Frame(rgb=rgb, stamp_ns=stamp_ns, frame_id=frame_id)
        if not self._queue.put(QueuedFrame(frame, time_jump_back, time.monotonic())):
            self.get_logger().debug("frame queue full: dropped the oldest frame")

    def _pair_camera_info(self, item: QueuedFrame) -> Frame | None:
        """The frame with its CameraInfo (paired now, on the worker); None when it must be dropped.

        In synchronized mode an info that arrives up to :data:`CAMERA_INFO_WAIT_S` after its image still
        pairs. Infos that arrive but do not pair (another frame id, stamps beyond the slop, another size)
        are reported (WARN) whenever the predicted intrinsics are used instead.
        """
        settings = self._settings
        assert settings is not None
        frame, infos = item.frame, self._camera_infos
        had_infos = infos.has_any()  # read once: an info arriving meanwhile was not waited for, not unpaired
        if infos.mode == "synchronized" and had_infos:
            calibration = infos.wait_lookup(
                frame.frame_id, frame.stamp_ns, item.received_s + CAMERA_INFO_WAIT_S
            )
        else:
            calibration = infos.lookup(frame.frame_id, frame.stamp_ns)
        width, height = frame.rgb.shape[1], frame.rgb.shape[0]
        if calibration is not None and (calibration.width, calibration.height) != (width, height):
            self._problems.report(
                "camera_info_mismatch",
                f"camera_info describes a {calibration.width}x{calibration.height} image (after its roi and "
                f"binning) but the image is {width}x{height}; publish the CameraInfo of this image",
            )
            calibration = None
        elif calibration is None and had_infos:
            self._problems.report(
                "camera_info_unpaired", infos.explain_missing(frame.frame_id, frame.stamp_ns)
            )
        if calibration is None and settings["require_camera_info"]:
            self._problems.report(
                "missing_camera_info", f"no camera_info for '{frame.frame_id}' at {frame.stamp_ns} ns"
            )
            return None
        return Frame(rgb=frame.rgb, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, calibration=calibration)

    def _camera_info_subscriptions(self, qos: QoSProfile) -> list[Any]:
        """The camera_info subscription; in synchronized mode through message_filters when installed.

        ``message_filters.ApproximateTimeSynchronizer`` pairs each image with the info nearest in stamp
        (within ``camera_info_slop_s``, in either arrival order); its pairs are recorded for the worker. The
        infos are also cached by frame id, which is the pairing without message_filters.
        """
        settings = self._settings
        assert settings is not None
        message_filters = (
            optional_ros_module("message_filters") if settings["camera_info_mode"] == "synchronized" else None
        )
        if message_filters is None:
            return [
                self.create_subscription(
                    CameraInfo, "camera_info", self._guarded("camera_info", self._on_camera_info), qos
                )
            ]
        info_filter = message_filters.Subscriber(self, CameraInfo, "camera_info", qos_profile=qos)
        info_filter.registerCallback(self._guarded("camera_info", self._on_camera_info))
        # The image callbacks feed the synchroniser the image headers only (no second image subscription,
        # and the queued entries do not hold the pixels).
        self._image_headers = message_filters.SimpleFilter()
        self._camera_info_sync = message_filters.ApproximateTimeSynchronizer(
            [self._image_headers, info_filter],
            queue_size=max(10, settings["frame_queue_size"]),
            slop=settings["camera_info_slop_s"],
        )
        self._camera_info_sync.registerCallback(self._guarded_pair(self._on_synchronized_camera_info))
        self._camera_infos.synchronizer = True
        return [info_filter.sub]

    def _guarded_pair(self, callback: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        """A two-message synchroniser callback with exceptions reported, as :meth:`_guarded` does."""

        def guarded(image: Any, info: Any) -> None:
            try:
                callback(image, info)
            except Exception as error:  # reported (log + /diagnostics ERROR); the next pair is processed
                self._report_callback_error("camera_info synchronizer", error)

        return guarded

    def _on_synchronized_camera_info(self, image: SimpleNamespace, info: CameraInfo) -> None:
        try:
            calibration = calibration_from_camera_info(info)
        except ValueError:  # already reported by the plain camera_info callback
            return
        frame_id = image.header.frame_id or (self._settings or {}).get("camera_optical_frame", "")
        info_frame_id = info.header.frame_id or (self._settings or {}).get("camera_optical_frame", "")
        if info_frame_id != frame_id:
            self._problems.report(
                "camera_info_frame_id",
                f"camera_info in '{info_frame_id}' paired by stamp with an image in '{frame_id}' and used; "
                "publish both in the camera's optical frame",
            )
        self._camera_infos.pair(frame_id, _stamp_ns(image.header), calibration)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            calibration = calibration_from_camera_info(msg)
        except ValueError as error:
            self._problems.report("bad_camera_info", str(error))
            return
        frame_id = msg.header.frame_id or (self._settings or {}).get("camera_optical_frame", "")
        self._camera_infos.add(frame_id, _stamp_ns(msg.header), calibration)

    def _on_odometry(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            T_odom_base = conversions.translation_quaternion_to_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        except ValueError as error:
            self._problems.report("bad_odometry", f"odometry orientation unusable: {error}; message ignored")
            return
        if not np.all(np.isfinite(T_odom_base)):
            self._problems.report("bad_odometry", "odometry pose is not finite; message ignored")
            return
        # The full pose: the worker composes it with the camera mounting (the optical centre's position).
        self._aux_inputs.append(("odometry", _stamp_ns(msg.header), T_odom_base))

    def _on_metric_depth(self, msg: Image) -> None:
        try:
            depth = conversions.depth_image_to_metres(
                msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data
            )
        except conversions.ImageConversionError as error:
            self._problems.report(f"metric_depth_{error.kind}", str(error))
            return
        if not np.any(np.isfinite(depth)):
            self._problems.report("metric_depth_invalid", "metric depth image has no finite pixel; ignored")
            return
        self._aux_inputs.append(("metric_depth", _stamp_ns(msg.header), depth))

    def _on_tf(self, msg: TFMessage) -> None:
        builder = self._builder
        if builder is None:
            return
        for transform in msg.transforms:
            parent, child = transform.header.frame_id, transform.child_frame_id
            T = None
            if builder.needs_robot_odometry(parent, child):
                t, q = transform.transform.translation, transform.transform.rotation
                try:
                    T = conversions.translation_quaternion_to_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
                except ValueError as error:
                    self._problems.report("bad_tf", f"{parent} -> {child}: {error}")
                    continue
            conflict = builder.observe_transform(parent, child, _stamp_ns(transform.header), T)
            if conflict is not None:
                self._problems.report("tf_conflict", conflict.describe())
                self.get_logger().error(conflict.describe())

    # ------------------------------------------------------------------------------------------------ worker
    def _worker_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            item = self._queue.get(timeout=0.1)
            self._run_pipeline_actions()
            if item is None:
                self._flush_when_idle(stop)
                continue
            self._last_frame_s, self._flushed_since_frame = time.monotonic(), False
            try:
                frame = self._pair_camera_info(item)
            except Exception as error:  # an unforeseen pairing failure costs this frame only
                self._report_callback_error("camera_info pairing", error)
                frame = None
            if item.time_jump_back and self._bundle is not None and self._builder is not None:
                # The jump travels with the frame after it: the frames before it are published first, then
                # the TF stamps restart, in stream order (never ahead of older queued frames).
                self._run_and_publish(self._bundle.pipeline.flush, stop)
                self._builder.restart_time()
            if frame is None:
                continue
            self._run_and_publish(lambda frame=frame: self._process(frame), stop)

    def _flush_when_idle(self, stop: threading.Event) -> None:
        """After ``idle_flush_s`` without a new frame, run the buffered frames as a window; publish them."""
        settings, bundle = self._settings, self._bundle
        idle_s = settings["idle_flush_s"] if settings is not None else 0.0
        if self._flushed_since_frame or bundle is None or idle_s <= 0:
            return
        if time.monotonic() - self._last_frame_s < idle_s:
            return
        self._flushed_since_frame = True
        if bundle.pipeline.stats.buffer_depth > 0:
            self._run_and_publish(bundle.pipeline.flush, stop)

    def _run_and_publish(self, run: Callable[[], list[Any]], stop: threading.Event) -> None:
        """Run the pipeline under its lock and publish the results (until ``stop``); a failure is reported and
        the pipeline reset."""
        started = time.perf_counter()
        try:
            with self._pipeline_lock:
                results = run()
        except Exception as error:  # the worker must survive any pipeline failure; it is reported instead
            self._problems.report("pipeline_error", f"{type(error).__name__}: {error}")
            self._last_error = f"pipeline error: {type(error).__name__}: {error}"
            self.get_logger().error(self._last_error)
            self._reset_pipeline("error")
            return
        if results:
            self._window_ms.add((time.perf_counter() - started) * 1e3)
        for result in results:
            try:
                if self._worker_must_stop(stop):
                    return
                self._publish_result(result)
            except Exception as error:  # one bad result must not stop the stream; it is reported
                if self._worker_must_stop(stop):
                    return  # Ctrl-C shut the context down during this publish: not a failure
                self._problems.report("publish_error", f"{type(error).__name__}: {error}")
                self.get_logger().error(f"publishing failed: {type(error).__name__}: {error}")

    def _worker_must_stop(self, stop: threading.Event) -> bool:
        """True once this worker was told to stop or the ROS context is shut down (e.g. by Ctrl-C)."""
        return stop.is_set() or not self.context.ok()

    def _process(self, frame: Frame) -> list[Any]:
        """Feed auxiliary inputs and one frame to the pipeline (called with the pipeline lock held)."""
        assert self._bundle is not None and self._builder is not None
        pipeline = self._bundle.pipeline
        results: list[Any] = []
        while self._aux_inputs:
            kind, stamp_ns, value = self._aux_inputs.popleft()
            try:
                if kind == "odometry":
                    pipeline.add_odometry(
                        stamp_ns, optical_position_from_odometry(value, self._builder.T_base_optical)
                    )
                elif kind == "metric_depth":
                    pipeline.add_metric_depth(stamp_ns, value)
            except ValueError as error:  # one unusable scale input is dropped; the pipeline goes on
                self._problems.report(f"bad_{kind}", f"{error}; ignored")
        size = (frame.rgb.shape[1], frame.rgb.shape[0])
        previous = self._processed_size
        if previous is not None and previous != size:
            # The pipeline publishes the buffered frames and starts a new segment, continuous in pose.
            self._problems.report(
                "resolution_change",
                f"input resolution changed {previous[0]}x{previous[1]} -> {size[0]}x{size[1]}",
            )
            self._reset_since_report = True
        self._processed_size = size
        self._mounting_from_tf2(frame.frame_id)
        results += pipeline.push(frame)
        return results

    def _reset_pipeline(self, reason: str) -> None:
        """Start a new pipeline segment; the pipeline re-anchors it at the last published pose."""
        with self._pipeline_lock:
            self._reset_pipeline_locked(reason)

    def _reset_pipeline_locked(self, reason: str) -> None:
        if self._bundle is not None:
            self._bundle.pipeline.reset(reason)
        self._resets += 1
        self._reset_since_report = True

    def _publish_result(self, result: Any) -> None:
        builder = self._builder
        if builder is None:
            return
        if result.frame_id not in self._static_frames:
            static = builder.static_transforms(result.frame_id, result.stamp_ns)
            if static:
                self._tf_static_publisher.publish(build_tf_message(self._factory, static))
            self._static_frames.add(result.frame_id)
        pose_outputs, ordered = builder.frame_messages(result)
        for topic, msg in ordered:  # /tf first: the stamp's TF exists before its images and clouds
            publisher = self._tf_publisher if topic == TF_TOPIC else self._output_publishers[topic]
            publisher.publish(msg)
        self._tf_note = pose_outputs.tf_note
        if pose_outputs.non_metric_tf and not self._non_metric_logged:
            self._non_metric_logged = True
            self.get_logger().warn(NON_METRIC_NOTE.format(source=self._settings["scale_source"]))
        if pose_outputs.estimate is not None:
            T_cam = pose_outputs.estimate.T_estimate_cam
            self._trajectory.append((result.stamp_ns, T_cam))
            if self._settings["map_accumulate"]:
                keep = ~np.asarray(result.point_is_dynamic, dtype=bool)
                self._map.add(T_cam, result.points[keep], result.colors[keep])
        now_ns = self.get_clock().now().nanoseconds
        self._latency_ms.add((now_ns - result.stamp_ns) / 1e6)
        self._output_rate.tick(now_ns)
        self._frames_processed += 1
        self._last_result = result

    # ---------------------------------------------------------------------------------------------- services
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self._active:
            response.success, response.message = False, f"node is {self._lifecycle_state}, not active"
            return response
        dropped = self._queue.clear()
        self._apply_to_pipeline("reset", lambda: self._reset_pipeline_locked("reset service"))
        self._problems.report(
            "reset", "reset requested through ~/reset: windows cleared, odometry re-anchored"
        )
        response.success = True
        response.message = (
            f"pipeline reset before the next frame, {dropped} queued frames dropped; odometry continues "
            "from the last pose"
        )
        return response

    def _on_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self._configured or self._settings is None:
            response.success, response.message = False, f"node is {self._lifecycle_state}: nothing to save"
            return response
        folder = self._settings["save_dir"] or os.path.join(
            os.environ.get("ROS_HOME", os.path.join(os.path.expanduser("~"), ".ros")), "page4d"
        )
        stamp = time.strftime("%Y%m%d_%H%M%S")
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            points, colors = self._map.snapshot()
            ply_path = Path(folder) / f"page4d_map_{stamp}.ply"
            tum_path = Path(folder) / f"page4d_trajectory_{stamp}.tum"
            write_ply(ply_path, points, colors)
            write_tum(tum_path, list(self._trajectory))
        except OSError as error:
            response.success, response.message = False, f"cannot write to {folder}: {error}"
            return response
        response.success = True
        response.message = (
            f"saved {len(points)} points to {ply_path} and {len(self._trajectory)} poses to {tum_path}"
            + ("" if self._settings["map_accumulate"] else " (map_accumulate is false: no map points kept)")
        )
        return response

    # -------------------------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, changes: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        """Accept or refuse a parameter change; it never raises (an exception here would end ``spin``)."""
        try:
            reason = self._apply_parameter_changes(changes)
        except Exception as error:  # reported and refused; the node keeps running
            self._report_callback_error("parameter change", error)
            reason = f"{type(error).__name__}: {error}"
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameter_changes(self, changes: list[rclpy.parameter.Parameter]) -> str | None:
        """Check ``changes`` and apply the tunable ones to the running node; the refusal reason, or None.

        Parameters rclpy declares itself (``use_sim_time``, QoS overrides, ...) are left to rclpy. A fixed
        parameter set to its configured value is no change (so ``ros2 param load`` of a dump succeeds).
        """
        own = [change for change in changes if change.name in parameters.PARAMETERS_BY_NAME]
        deleted = sorted(c.name for c in own if c.type_ == rclpy.parameter.Parameter.Type.NOT_SET)
        if deleted:
            return (
                f"{deleted} cannot be deleted: the node declares them; set a value instead "
                "(their defaults are in config/page4d.yaml)"
            )
        try:
            update = {change.name: parameters.check_value(change.name, change.value) for change in own}
        except ValueError as error:
            return str(error)
        if self._settings is None:
            # Checks across parameters (window_stride <= window_size, ...) run in configure.
            for name in update:
                self._override_errors.pop(name, None)
            return None
        fixed = sorted(
            name
            for name, value in update.items()
            if not parameters.PARAMETERS_BY_NAME[name].tunable and value != self._settings[name]
        )
        if fixed:
            return (
                f"{fixed} are fixed after configure; deactivate and cleanup the node, set them, "
                "then configure again"
            )
        update = {k: v for k, v in update.items() if parameters.PARAMETERS_BY_NAME[k].tunable}
        try:
            merged = parameters.validate_parameters({**self._settings, **update})
        except ValueError as error:
            return str(error)
        pipeline_changes = {k: merged[k] for k in update if k in parameters.PIPELINE_PARAMETER_NAMES}
        bundle = self._bundle
        if pipeline_changes and bundle is not None:
            # validate_parameters checked the whole PipelineConfig; the worker applies it between frames.
            self._apply_to_pipeline(
                "parameter change", lambda: bundle.pipeline.update_config(**pipeline_changes)
            )
        node_changes = {k: merged[k] for k in update}
        self._settings.update(node_changes)
        if self._builder is not None:
            self._builder.update_settings(node_changes)
        if "map_max_points" in update or "map_voxel_size" in update:
            self._map.max_points, self._map.voxel_size = merged["map_max_points"], merged["map_voxel_size"]
        return None

    # ------------------------------------------------------------------------------------------- diagnostics
    def diagnostic_records(self) -> list[diagnostics.StatusRecord]:
        """The current diagnostic statuses (input, inference, latency, scale, tracking, tf, node)."""
        now_ns = self.get_clock().now().nanoseconds
        settings = self._settings or self._display_settings()
        fresh_problems = self._problems.new_since_last_call()
        records = []

        node = diagnostics.StatusRecord("page4d: node", values={"lifecycle_state": self._lifecycle_state})
        node.values["last_error"] = self._last_error
        if self._last_error and not self._active:
            node.escalate(diagnostics.ERROR, self._last_error)
        elif not self._active:
            node.escalate(diagnostics.WARN, f"node is {self._lifecycle_state}")
        records.append(node)

        input_status = diagnostics.StatusRecord("page4d: input")
        rate = self._input_rate.rate(now_ns)
        input_status.values.update(
            {
                "input_rate_hz": f"{rate:.2f}",
                "images_received": str(self._images_received),
                "camera_info_present": str(self._camera_infos.has_any()).lower(),
                "camera_info_received": str(self._camera_infos.received),
                "encoding": self._last_input.get("encoding", ""),
                "resolution": self._last_input.get("resolution", ""),
                "frame_id": self._last_input.get("frame_id", ""),
                "rejected_inputs": str(
                    sum(
                        count
                        for kind, count in self._problems.snapshot().items()
                        if diagnostics.status_of(kind) == diagnostics.INPUT_STATUS
                    )
                ),
                "last_problem": self._problems.last_message_where(diagnostics.INPUT_STATUS),
            }
        )
        if self._active and self._last_input and not self._camera_infos.has_any():
            input_status.escalate(
                diagnostics.WARN, "no camera_info received: using the model's predicted intrinsics"
            )
        expected = settings["expected_input_rate_hz"]
        if self._active and expected > 0 and rate < expected:
            input_status.escalate(
                diagnostics.WARN, f"input rate {rate:.1f} Hz below expected {expected:.1f} Hz"
            )
        records.append(input_status)

        inference = diagnostics.StatusRecord("page4d: inference")
        window = self._window_ms.summary()
        inference.values.update(
            {
                "window_ms_mean": f"{window['mean']:.1f}",
                "window_ms_max": f"{window['max']:.1f}",
                "frames_per_second": f"{self._output_rate.rate(now_ns):.2f}",
                "frames_processed": str(self._frames_processed),
                "queue_depth": str(len(self._queue)),
                "dropped_frames": str(self._queue.dropped),
                "backend": self._bundle.description if self._bundle else "",
                "gpu_memory_mb": f"{self._bundle.gpu_memory_mb():.1f}" if self._bundle else "0.0",
                "last_error": self._last_error,
            }
        )
        if self._bundle is not None:
            for key, value in sorted(self._bundle.stats().items()):
                inference.values[f"pipeline_{key}"] = str(value)
        if fresh_problems.get("pipeline_error"):
            inference.escalate(diagnostics.ERROR, f"pipeline failed: {self._last_error}")
        records.append(inference)

        latency = diagnostics.StatusRecord("page4d: latency")
        summary = self._latency_ms.summary()
        latency.values.update(
            {"latency_ms_p50": f"{summary['p50']:.1f}", "latency_ms_p95": f"{summary['p95']:.1f}"}
        )
        if summary["p95"] > settings["transform_tolerance"] * 1e3:
            latency.escalate(
                diagnostics.WARN, f"p95 latency {summary['p95']:.0f} ms above transform_tolerance"
            )
        records.append(latency)

        scale = diagnostics.StatusRecord(
            "page4d: scale",
            values={"scale_source": settings["scale_source"], "scale": "nan", "scale_state": "no_output"},
        )
        result = self._last_result
        if result is not None:
            scale.values.update({"scale": f"{result.scale:.6g}", "scale_state": result.scale_state})
            if (
                not is_metric(result)
                and settings["tf_mode"] != "none"
                and not settings["require_metric_for_tf"]
            ):
                scale.escalate(diagnostics.WARN, f"TF published in non-metric units ({result.scale_state})")
            elif not is_metric(result):
                scale.escalate(diagnostics.WARN, f"scale not metric ({result.scale_state})")
        records.append(scale)

        tracking = diagnostics.StatusRecord(
            "page4d: tracking",
            values={
                "resets": str(self._resets),
                "segment_index": "",
                "alignment": "",
                "alignment_residual": "nan",
                "intrinsics_source": "",
            },
        )
        if result is not None:
            tracking.values.update(
                {
                    "segment_index": str(result.segment_index),
                    "alignment": str(result.alignment),
                    "alignment_residual": f"{result.alignment_residual:.4g}",
                    "intrinsics_source": str(result.intrinsics_source),
                }
            )
        if self._reset_since_report:
            tracking.escalate(diagnostics.WARN, "pipeline reset since the last report")
            self._reset_since_report = False
        records.append(tracking)

        tf_status = diagnostics.StatusRecord(
            "page4d: tf",
            values={"tf_mode": settings["tf_mode"], "last_tf_stamp_ns": "0", "conflict": "false", "note": ""},
        )
        builder = self._builder
        if builder is not None:
            tf_status.values["last_tf_stamp_ns"] = str(builder.last_tf_stamp_ns or 0)
            tf_status.values["note"] = self._tf_note
            tf_status.values["conflict"] = str(bool(builder.conflicts.conflicts)).lower()
            for conflict in builder.conflicts.conflicts.values():
                tf_status.escalate(diagnostics.ERROR, conflict.describe())
            if builder.mounting_pending:
                tf_status.escalate(
                    diagnostics.WARN,
                    f"TF and odometry wait for the camera mounting: {builder.mounting_pending}",
                )
        records.append(tf_status)
        self._route_problems(records, fresh_problems)
        return records

    def _route_problems(self, records: list[diagnostics.StatusRecord], fresh: dict[str, int]) -> None:
        """Add each problem kind's ``count_<kind>`` to its own status and raise it for new problems."""
        by_name = {record.name: record for record in records}
        for kind, count in sorted(self._problems.snapshot().items()):
            by_name[diagnostics.status_of(kind)].values[f"count_{kind}"] = str(count)
        for kind, count in sorted(fresh.items()):
            by_name[diagnostics.status_of(kind)].escalate(diagnostics.level_of(kind), f"{count} x {kind}")

    def _display_settings(self) -> dict[str, Any]:
        """Settings for diagnostics before configure: the current parameters, or the defaults if invalid."""
        try:
            return parameters.validate_parameters(self._current_parameters())
        except ValueError:
            return parameters.validate_parameters({})

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        hardware_id = self.get_fully_qualified_name()
        for record in self.diagnostic_records():
            status = DiagnosticStatus(
                level=bytes([record.level]), name=record.name, message=record.message, hardware_id=hardware_id
            )
            status.values = [KeyValue(key=key, value=value) for key, value in record.values.items()]
            array.status.append(status)
        self._diagnostics_publisher.publish(array)

    def shutdown_worker(self) -> None:
        """Stop the worker thread (used on process exit)."""
        self._stop_inputs_and_worker()


def main(args: list[str] | None = None) -> None:
    """Entry point of ``page4d_node``: spin the node on one executor thread (autostart when enabled)."""
    rclpy.init(args=args)
    node = Page4dNode()
    # One executor thread: rclpy's Python MultiThreadedExecutor spends its time polling threads and futures,
    # competing with the worker for the GIL; with it the node took in 17 to 296 of 300 images sent at 30 Hz,
    # with this one 296 to 300 (benchmarks/README.md, "Node input"). No callback waits for the worker.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        node.autostart()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A second Ctrl-C while the worker finishes its window must not break the cleanup with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.shutdown_worker()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
