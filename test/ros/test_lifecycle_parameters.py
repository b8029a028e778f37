"""Lifecycle, parameter and diagnostics behaviour of the node as ROS tools drive it (issue 13 part A).

The node runs in this process (real rclpy, its own context and executor thread) so that a test can see its
executor survive a parameter event, hold its worker inside a window, and read its diagnostic records; the
parameter services are called over DDS by the probe node, as ``ros2 param`` does.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, SetParameters

from page4d_ros.ros import diagnostics, parameters

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]


class InProcessNode:
    """A ``Page4dNode`` spun on its own executor thread; ``spinning`` says whether ``spin`` still runs."""

    def __init__(self, context: Any, values: dict[str, Any]) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter as NodeParameter

        from page4d_ros.ros import node as node_module

        overrides = [NodeParameter(name, value=value) for name, value in values.items()]
        self.node = node_module.Page4dNode(context=context, parameter_overrides=overrides)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.spin_error: BaseException | None = None
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except BaseException as error:  # recorded: the test asserts that nothing ends spin
            self.spin_error = error

    @property
    def spinning(self) -> bool:
        """True while the executor thread is alive."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the worker, the executor and the node."""
        self.node.shutdown_worker()
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def make_node(ros_context: Any) -> Iterator[Any]:
    """Factory of in-process nodes (``autostart`` off unless given), all closed after the test."""
    nodes: list[InProcessNode] = []

    def make(values: dict[str, Any]) -> InProcessNode:
        nodes.append(InProcessNode(ros_context, {"autostart": False, **values}))
        return nodes[-1]

    yield make
    for item in nodes:
        item.close()


def state(transition: Any, node: Any) -> str:
    """Run a lifecycle transition of ``node``; the label of the state it ends in (rclpy's state machine)."""
    transition()
    return node._state_machine.current_state[1]


def parameter_message(name: str, value: Any) -> Parameter:
    """An rcl_interfaces Parameter as ``ros2 param set`` sends it (``None``: not set, i.e. a delete)."""
    from rclpy.parameter import Parameter as NodeParameter

    if value is None:
        return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_NOT_SET))
    return NodeParameter(name, value=value).to_parameter_msg()


def set_remote(probe: Any, node_name: str, **values: Any) -> list[Any]:
    """Call the node's ``set_parameters`` service over DDS; the per-parameter results."""
    request = SetParameters.Request(parameters=[parameter_message(k, v) for k, v in values.items()])
    response = probe.call(SetParameters, f"{node_name}/set_parameters", request, timeout=20.0)
    assert response is not None, "set_parameters did not answer"
    return list(response.results)


def test_rclpy_parameters_and_a_dump_reload_never_end_spin(make_node, probe, tiny_checkpoint, ros_helpers):
    """Defect 1: ``use_sim_time`` (declared by rclpy) and a reload of every current value are accepted."""
    item = make_node(ros_helpers.fast_node_parameters(tiny_checkpoint))
    node = item.node
    name = node.get_fully_qualified_name()
    assert all(r.successful for r in set_remote(probe, name, use_sim_time=True)), "use_sim_time refused"
    assert item.spinning, f"spin ended: {item.spin_error!r}"
    assert node.get_parameter("use_sim_time").value is True
    node.trigger_configure()
    node.trigger_activate()
    # What ``ros2 param load`` of a ``ros2 param dump`` sends: every parameter at its current value.
    current = {n: node.get_parameter(n).value for n in parameters.PARAMETERS_BY_NAME}
    current.update(use_sim_time=False, conf_percentile=12.5)
    results = set_remote(probe, name, **current)
    refused = [(n, r.reason) for n, r in zip(current, results, strict=True) if not r.successful]
    assert not refused, refused
    assert item.spinning, f"spin ended: {item.spin_error!r}"
    assert node.get_parameter("conf_percentile").value == 12.5
    # A real change of a fixed parameter while configured is still refused, with what to do.
    (result,) = set_remote(probe, name, window_size=6)
    assert not result.successful and "cleanup" in result.reason


def test_fixed_parameters_change_after_deactivate_and_cleanup(make_node, tiny_checkpoint, ros_helpers):
    """Defect 2: the documented procedure (deactivate, cleanup, set, configure) works."""
    from rclpy.parameter import Parameter as NodeParameter

    node = make_node(ros_helpers.fast_node_parameters(tiny_checkpoint)).node
    node.trigger_configure()
    node.trigger_activate()
    assert not node.set_parameters([NodeParameter("window_size", value=6)])[0].successful
    node.trigger_deactivate()
    node.trigger_cleanup()
    result = node.set_parameters([NodeParameter("window_size", value=6)])[0]
    assert result.successful, result.reason
    node.trigger_configure()
    assert node._settings is not None and node._settings["window_size"] == 6
    assert state(node.trigger_activate, node) == "active"


def test_descriptors_carry_ranges_and_unconfigured_sets_are_checked(make_node, probe, tiny_checkpoint):
    """Defect 15: ranges and constraints in the descriptors; set/delete while unconfigured get answers."""
    item = make_node({"checkpoint_path": str(tiny_checkpoint), "device": "cpu"})
    name = item.node.get_fully_qualified_name()
    request = DescribeParameters.Request(
        names=["conf_percentile", "model_long_side", "window_size", "tf_mode", "device"]
    )
    response = probe.call(DescribeParameters, f"{name}/describe_parameters", request, timeout=20.0)
    assert response is not None
    described = {d.name: d for d in response.descriptors}
    percentile = described["conf_percentile"].floating_point_range[0]
    assert (percentile.from_value, percentile.to_value) == (0.0, 100.0)
    long_side = described["model_long_side"].integer_range[0]
    assert (long_side.from_value, long_side.to_value, long_side.step) == (0, 4088, 14)
    assert described["window_size"].additional_constraints.endswith("fixed after configure")
    assert "one of: odom, map, none" in described["tf_mode"].additional_constraints
    for descriptor in described.values():
        assert "fixed after configure" not in descriptor.description.lower(), descriptor.description

    refusals = {
        "conf_percentile": 150.0,  # out of range (also refused by rclpy's own range check)
        "mask_rel_tolerance": 0.0,  # the open end of (0, 1]
        "tf_mode": "world",
        "window_size": 2.5,
    }
    for parameter, value in refusals.items():
        (result,) = set_remote(probe, name, **{parameter: value})
        assert not result.successful, parameter
    (result,) = set_remote(probe, name, mask_rel_tolerance=0.0)
    assert "mask_rel_tolerance" in result.reason and "(0, 1]" in result.reason, result.reason
    (result,) = set_remote(probe, name, tf_mode="world")
    assert "one of" in result.reason, result.reason
    (deleted,) = set_remote(probe, name, conf_percentile=None)
    assert not deleted.successful and "cannot be deleted" in deleted.reason, deleted.reason
    assert (
        item.node.get_parameter("conf_percentile").value
        == parameters.PARAMETERS_BY_NAME["conf_percentile"].default
    )
    assert all(r.successful for r in set_remote(probe, name, conf_percentile=20.0, window_size=6))
    assert item.spinning


def test_descriptor_ranges_agree_with_validation():
    """Each declared range is what validation enforces: its ends are accepted, just outside refused."""
    for spec in parameters.PARAMETERS:
        bounds = spec.range
        if bounds is None:
            continue
        integer = isinstance(spec.default, int)
        below = bounds.low - (1 if integer else 1e-6)
        inside_low = bounds.low + (bounds.step or 1 if integer else 1e-6) if bounds.low_open else bounds.low
        values = [(inside_low, True), (below, False), (bounds.low, not bounds.low_open)]
        if bounds.high != float("inf"):
            values += [(bounds.high, True), (bounds.high + (1 if integer else 1e-6), False)]
        for value, accepted in values:
            value = int(value) if integer else float(value)
            companions = _companions(spec.name, value)
            try:
                parameters.validate_parameters({**companions, spec.name: value})
                ok = True
            except ValueError:
                ok = False
            assert ok == accepted, (spec.name, value, bounds)


def _companions(name: str, value: float) -> dict[str, Any]:
    """Other parameters that must move with ``name`` = ``value`` for the cross-parameter checks to pass."""
    if name in ("window_size", "max_window_size", "window_stride"):
        size = max(1, min(1024, int(value)))
        return {"max_window_size": size, "window_size": size, "window_stride": 1, "buffer_max_frames": 2048}
    if name == "buffer_max_frames":
        return {"window_size": 1, "window_stride": 1}
    if name == "min_depth_m":
        return {"max_depth_m": value + 1.0}
    if name == "max_depth_m":
        return {"min_depth_m": 0.0}
    return {}


def test_out_of_range_start_up_value_keeps_the_node_alive_and_fails_configure(make_node, tiny_checkpoint):
    """An out-of-range value in a params file does not crash the constructor; configure says why."""
    from rclpy.parameter import Parameter as NodeParameter

    node = make_node(
        {"checkpoint_path": str(tiny_checkpoint), "device": "cpu", "conf_percentile": 150.0}
    ).node
    assert state(node.trigger_configure, node) == "unconfigured"
    assert "conf_percentile" in node._last_error and "out of range" in node._last_error
    assert node.set_parameters([NodeParameter("conf_percentile", value=10.0)])[0].successful
    assert state(node.trigger_configure, node) == "inactive"


def test_activation_waits_for_the_previous_worker(make_node, tiny_checkpoint, ros_helpers, monkeypatch):
    """Defect 9: a worker still inside a window after deactivate blocks activation until it has exited."""
    import numpy as np

    from page4d_ros.pipeline.types import Frame
    from page4d_ros.ros import node as node_module
    from page4d_ros.ros.scheduling import QueuedFrame

    monkeypatch.setattr(node_module, "WORKER_JOIN_TIMEOUT_S", 0.3, raising=False)
    node = make_node(ros_helpers.fast_node_parameters(tiny_checkpoint)).node
    node.trigger_configure()
    node.trigger_activate()
    inside, release = threading.Event(), threading.Event()

    def slow_window(frame: Frame) -> list[Any]:
        inside.set()
        release.wait(30.0)
        return []

    monkeypatch.setattr(node, "_process", slow_window)
    frame = Frame(rgb=np.zeros((48, 64, 3), np.uint8), stamp_ns=1, frame_id="camera_optical_frame")
    node._queue.put(QueuedFrame(frame))
    assert inside.wait(10.0)
    assert state(node.trigger_deactivate, node) == "inactive"
    assert state(node.trigger_activate, node) == "inactive", "activated beside a running worker"
    release.set()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(t.name == "page4d-worker" for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name == "page4d-worker" for t in threading.enumerate()), "old worker never exited"
    assert state(node.trigger_activate, node) == "active"
    workers = [t for t in threading.enumerate() if t.name == "page4d-worker"]
    assert len(workers) == 1


def readme_status_keys() -> dict[str, set[str]]:
    """Status name -> keys, from the README's diagnostics table (``count_*`` keys, which appear with the first
    problem of their kind, and the values in parentheses left out)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("### Diagnostics (`/diagnostics`)", 1)[1].split("\n### ", 1)[0]
    keys: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`page4d:"):
            names = set(re.findall(r"`([a-z_0-9<>*]+)`", re.sub(r"\([^)]*\)", "", cells[1])))
            keys[cells[0].strip("`")] = {
                n for n in names if "<" not in n and "*" not in n and not n.startswith("count_")
            }
    return keys


def test_every_status_carries_its_documented_keys_from_the_start(make_node, tiny_checkpoint, ros_helpers):
    """Defect 19: before any output, every status already has every key the README lists."""
    node = make_node(ros_helpers.fast_node_parameters(tiny_checkpoint)).node
    documented = readme_status_keys()
    assert set(documented) == {
        "page4d: node",
        "page4d: input",
        "page4d: inference",
        "page4d: latency",
        "page4d: scale",
        "page4d: tracking",
        "page4d: tf",
    }
    for phase in ("unconfigured", "active"):
        records = {record.name: record for record in node.diagnostic_records()}
        for name, keys in documented.items():
            assert keys <= set(records[name].values), (phase, name, keys - set(records[name].values))
        if phase == "unconfigured":
            node.trigger_configure()
            node.trigger_activate()
    assert node.diagnostic_records()[0].values["lifecycle_state"] == "active"


def test_problems_go_to_their_own_status(make_node, tmp_path: Path, tiny_checkpoint, ros_helpers):
    """Defect 14: a failed configure is a node problem, ``~/reset`` a tracking event, not rejected inputs."""
    from std_srvs.srv import Trigger

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    node = make_node(ros_helpers.fast_node_parameters(broken)).node
    assert state(node.trigger_configure, node) == "unconfigured"
    records = {record.name: record for record in node.diagnostic_records()}
    assert records["page4d: node"].level == diagnostics.ERROR
    assert records["page4d: node"].values["count_configure"] == "1"
    assert records["page4d: input"].level == diagnostics.OK, records["page4d: input"].message
    assert records["page4d: input"].values["rejected_inputs"] == "0"
    assert not any(k.startswith("count_") for k in records["page4d: input"].values)

    from rclpy.parameter import Parameter as NodeParameter

    node.set_parameters([NodeParameter("checkpoint_path", value=str(tiny_checkpoint))])
    node.trigger_configure()
    node.trigger_activate()
    node.diagnostic_records()
    response = node._on_reset(Trigger.Request(), Trigger.Response())
    assert response.success
    node._problems.report("pipeline_error", "RuntimeError: a failing window")
    node._problems.report("tf_conflict", "another node publishes odom -> camera_link")
    node._problems.report("encoding", "unsupported encoding 'yuv422'")
    records = {record.name: record for record in node.diagnostic_records()}
    assert records["page4d: tracking"].values["count_reset"] == "1"
    assert records["page4d: tracking"].level == diagnostics.WARN
    assert records["page4d: inference"].values["count_pipeline_error"] == "1"
    assert records["page4d: inference"].level == diagnostics.ERROR
    assert records["page4d: tf"].values["count_tf_conflict"] == "1"
    assert records["page4d: tf"].level == diagnostics.ERROR
    input_status = records["page4d: input"]
    assert input_status.values["rejected_inputs"] == "1"
    assert input_status.values["last_problem"].startswith("encoding:")
    assert input_status.level == diagnostics.WARN and "tf_conflict" not in input_status.message
    assert {k for k in input_status.values if k.startswith("count_")} == {"count_encoding"}


SLOW_PUBLISH_NODE = """
import sys
import time

from page4d_ros.ros import node as node_module

original = node_module.Page4dNode._process


def slow_window(self, frame):
    results = original(self, frame)
    if results:
        print("TEST: window computed, publishing in 4 s", flush=True)
        time.sleep(4.0)
    return results


node_module.Page4dNode._process = slow_window
node_module.main()
"""
"""The real node, whose worker waits 4 s between computing a window and publishing it (Ctrl-C lands there)."""


def test_two_ctrl_c_while_a_window_is_published_exit_cleanly(
    spawn_process, probe, tiny_checkpoint, synthetic_sequence, ros_helpers, tmp_path: Path
):
    """Defect 16: no traceback from a second SIGINT in cleanup, no ERROR from publishing on a dead context."""
    from sensor_msgs.msg import Image

    h, seq = ros_helpers, synthetic_sequence
    params = tmp_path / "slow.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": h.fast_node_parameters(tiny_checkpoint)}}))
    process = spawn_process(
        "-c", SLOW_PUBLISH_NODE, "--ros-args", "--params-file", str(params), env={"OMP_NUM_THREADS": "1"}
    )
    log_path = tmp_path / "proc0.log"
    # The node's own log says when it is active (its diagnostics would too, a period later).
    assert probe.wait_for(
        lambda: process.poll() is not None or "active: waiting for images" in log_path.read_text(), 120.0
    ), log_path.read_text()[-3000:]
    assert process.poll() is None, log_path.read_text()[-3000:]
    image_pub = probe.node.create_publisher(Image, f"{h.NAMESPACE}/image", 10)
    assert probe.wait_for(lambda: image_pub.get_subscription_count() > 0, 30.0)
    time.sleep(0.3)
    for index in range(6):
        image_pub.publish(h.image_message(seq.rgb[index], "rgb8", int(seq.stamps_ns[index]), seq.frame_id))
        time.sleep(0.1)
    assert probe.wait_for(lambda: "window computed" in log_path.read_text(), 60.0), log_path.read_text()
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.7)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "context is invalid" not in log and "[ERROR]" not in log, log[-3000:]
    assert "worker stopped" in log, log[-3000:]
