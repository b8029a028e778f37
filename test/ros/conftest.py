"""Fixtures for the ROS layer tests: a node launcher and a DDS probe node (``tiny_checkpoint`` is shared).

The probe is an rclpy node in the test process (its own Context and executor thread) that publishes inputs,
records every output message and calls services; the node under test runs in a separate process.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

NAMESPACE = "/page4d"
NODE = "/page4d/page4d"


@pytest.fixture(scope="session")
def synthetic_sequence() -> Any:
    """A 16-frame 160x120 dynamic synthetic sequence (walking camera, moving objects)."""
    from page4d_ros.synthetic.scene import generate_sequence

    return generate_sequence(3, 16, 160, 120, camera_motion="walk", num_movers=2)


def fast_node_parameters(checkpoint: Path, **overrides: Any) -> dict[str, Any]:
    """Parameters for a fast CPU node: tiny model, 112 px input, windows of 4 with stride 2."""
    values: dict[str, Any] = {
        "checkpoint_path": str(checkpoint),
        "device": "cpu",
        "warmup_iters": 1,
        "window_size": 4,
        "window_stride": 2,
        "model_long_side": 112,
        "frame_queue_size": 32,
        "publish_optical_static_tf": True,
        "base_frame": "camera_link",
        "diagnostics_period": 0.5,
        "mask_dilate_px": 1,
    }
    values.update(overrides)
    return values


SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "page4d_ros" / "models" / "page4d_small.safetensors"


def shipped_model_parameters(**overrides: Any) -> dict[str, Any]:
    """A node with the shipped model at its own size, windows 8/4, reliable input that keeps 64 messages."""
    values = {
        "model_long_side": 0,
        "window_size": 8,
        "window_stride": 4,
        "input_qos": "reliable",
        "input_queue_depth": 64,
        "frame_queue_size": 64,
        **overrides,
    }
    return fast_node_parameters(SHIPPED_MODEL, **values)


@pytest.fixture
def start_node(spawn_process: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    """Start ``page4d_node`` in its own process with a params file made of the given values."""

    def start(values: dict[str, Any]) -> Any:
        params = tmp_path / f"params_{len(list(tmp_path.glob('params_*.yaml')))}.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
        log_path = tmp_path / f"proc{len(list(tmp_path.glob('proc*.log')))}.log"
        # One intra-op thread: on a shared 2-core machine torch's spinning threads slow inference 50-fold.
        process = spawn_process(
            "-m",
            "page4d_ros.ros.node",
            "--ros-args",
            "--params-file",
            str(params),
            env={"OMP_NUM_THREADS": "1"},
        )
        process.log_path = log_path
        return process

    return start


def stamp_of(header: Any) -> int:
    """Integer nanoseconds of a header stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_message(
    array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str, step: int | None = None
) -> Any:
    """A sensor_msgs/Image filled by hand (independent of the package's builders)."""
    import array as pyarray

    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1]) if array.ndim > 1 else 0
    msg.encoding = encoding
    contiguous = np.ascontiguousarray(array)
    msg.step = step if step is not None else (contiguous.strides[0] if contiguous.ndim > 1 else 0)
    data = pyarray.array("B")
    data.frombytes(contiguous.tobytes())
    msg.data = data
    return msg


def camera_info_message(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> Any:
    """A sensor_msgs/CameraInfo of a rectified pinhole camera, filled by hand."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = np.asarray(K, dtype=np.float64).reshape(-1)
    msg.r = np.eye(3).reshape(-1)
    msg.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).astype(np.float64)
    return msg


class RosProbe:
    """Test-side rclpy node: publishes inputs, records outputs by topic, calls services (spun in a thread)."""

    def __init__(self, context: Any, name: str = "page4d_probe") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name, context=context)
        # One executor thread: rclpy's Python MultiThreadedExecutor holds the GIL polling its threads and
        # stalled the test's own publishing for seconds at a time.
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def subscribe(self, topic: str, msg_type: type, qos: Any = None, key: str | None = None) -> Any:
        """Record every message of ``topic`` under ``key`` (default: the topic)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        key = key or topic

        def record(msg: Any) -> None:
            with self.lock:
                self.received[key].append(msg)

        return self.node.create_subscription(msg_type, topic, record, qos)

    def messages(self, key: str) -> list[Any]:
        """A copy of what was received under ``key``."""
        with self.lock:
            return list(self.received[key])

    def clear(self, key: str) -> None:
        """Forget what was received under ``key``."""
        with self.lock:
            self.received[key] = []

    def wait_for(self, condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
        """Poll ``condition`` until true or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(interval)
        return condition()

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 30.0) -> Any:
        """Call a service and return its response (None on timeout)."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            self.wait_for(future.done, timeout)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def diagnostics(self) -> dict[str, Any]:
        """The newest status of each name from /diagnostics (name -> DiagnosticStatus)."""
        statuses: dict[str, Any] = {}
        for array in self.messages("/diagnostics"):
            for status in array.status:
                statuses[status.name] = status
        return statuses

    def diagnostic_values(self, name: str) -> dict[str, str]:
        """Key/values of the newest status ``name``."""
        status = self.diagnostics().get(name)
        return {kv.key: kv.value for kv in status.values} if status is not None else {}

    def ever_diagnosed(self, name: str, level: int, text: str) -> bool:
        """True when any received status ``name`` had ``level`` and ``text`` in its message."""
        for array in self.messages("/diagnostics"):
            for status in array.status:
                if status.name == name and status.level[0] == level and text in status.message:
                    return True
        return False

    def wait_for_state(self, process: Any, state: str, timeout: float = 90.0) -> None:
        """Wait until the node's diagnostics report lifecycle ``state``; else fail with the node's log."""

        def reached() -> bool:
            return (
                process.poll() is not None
                or self.diagnostic_values("page4d: node").get("lifecycle_state") == state
            )

        self.wait_for(reached, timeout)
        if self.diagnostic_values("page4d: node").get("lifecycle_state") != state:
            log = Path(process.log_path).read_text()[-3000:] if Path(process.log_path).exists() else ""
            pytest.fail(f"node not '{state}' (exit code {process.poll()}); its log ends with:\n{log}")

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def probe(ros_context: Any) -> Iterator[RosProbe]:
    """A probe node subscribed to /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray

    probe = RosProbe(ros_context)
    probe.subscribe("/diagnostics", DiagnosticArray)
    try:
        yield probe
    finally:
        probe.close()


@pytest.fixture
def ros_helpers() -> Any:
    """Module-like access to the message helpers of this conftest (test files cannot import each other)."""

    class Helpers:
        NAMESPACE = NAMESPACE
        NODE = NODE
        stamp_of = staticmethod(stamp_of)
        image_message = staticmethod(image_message)
        camera_info_message = staticmethod(camera_info_message)
        fast_node_parameters = staticmethod(fast_node_parameters)
        shipped_model_parameters = staticmethod(shipped_model_parameters)

    return Helpers
