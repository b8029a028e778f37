"""The node as a ROS user runs it: ``ros2 launch`` of the colcon-installed package, driven by ``ros2 param``,
``ros2 lifecycle``, ``ros2 service`` and ``ros2 topic`` as subprocesses (real tools from ../shared/wheels).

The package is built with colcon into a temporary workspace and found through ``AMENT_PREFIX_PATH`` and
``PYTHONPATH`` as ``source install/setup.bash`` sets them. Every CLI call has a timeout; every process started
here is stopped at the end of its test, and the ROS 2 daemon of this test's domain is stopped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE = "/page4d/page4d"
MISSING = [
    name
    for name in ("launch", "launch_ros", "ros2cli", "ros2launch", "ros2param", "ros2lifecycle", "ros2topic")
    if importlib.util.find_spec(name) is None
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of a shell that sourced a colcon install of page4d_ros (built once for this module)."""
    if MISSING:
        pytest.skip(f"ROS tools {MISSING} are not installed (scripts/setup_env.sh installs ../shared/wheels)")
    for tool in ("ros2", "colcon"):
        if not (BIN / tool).exists():
            pytest.skip(f"'{tool}' is not installed next to {sys.executable}")
    work = tmp_path_factory.mktemp("ws")
    build = subprocess.run(
        [
            str(BIN / "colcon"),
            "--log-base",
            str(work / "log"),
            "build",
            "--paths",
            str(REPO_ROOT),
            "--build-base",
            str(work / "build"),
            "--install-base",
            str(work / "install"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # As the README says: `source install/setup.bash` (colcon-bash writes it; colcon-core alone: setup.sh).
    setup = work / "install" / "setup.bash"
    if not setup.exists():
        setup = work / "install" / "setup.sh"
    base = {
        **os.environ,
        "AMENT_PREFIX_PATH": os.environ.get("AMENT_PREFIX_PATH") or sys.prefix,  # the venv is the underlay
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
    }
    shell = "bash" if setup.suffix == ".bash" else "sh"
    sourced = subprocess.run(
        [shell, "-c", f". '{setup}' && env -0"], env=base, capture_output=True, timeout=60, check=True
    )
    env = dict(item.split("=", 1) for item in sourced.stdout.decode().split("\0") if "=" in item)
    prefix = str(work / "install" / "page4d_ros")
    assert env["AMENT_PREFIX_PATH"].split(os.pathsep)[0] == prefix, env["AMENT_PREFIX_PATH"]
    yield env
    subprocess.run([str(BIN / "ros2"), "daemon", "stop"], env=env, capture_output=True, timeout=30)


def ros2(env: dict[str, str], *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``ros2 ARGS`` to completion (stdout and stderr as text).

    Past ``timeout`` the command is stopped as a user stops it, with SIGINT (Ctrl-C), and SIGKILLed only if
    it is still there 10 s later; ``subprocess.TimeoutExpired`` then carries what it printed. Not SIGKILL
    first: a killed process leaves its Fast DDS shared-memory port behind, and a later process that is given
    the same port may never receive anything (eProsima/Fast-DDS#2811, #5469). Both CI failures of this test
    came after a killed CLI call: ``ros2 lifecycle get`` hanging for minutes, then ``ros2 topic echo --once
    /diagnostics`` hearing nothing for 60 s right after a killed ``ros2 topic hz`` had heard it at 1 Hz.
    """
    process = subprocess.Popen(
        [str(BIN / "ros2"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(process.args, timeout, output=stdout, stderr=stderr) from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


class Launched:
    """A ``ros2 launch`` process in its own session, its output in a file; stopped with SIGINT."""

    def __init__(self, env: dict[str, str], log_path: Path, *arguments: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [str(BIN / "ros2"), "launch", "page4d_ros", "page4d.launch.py", *arguments],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """What the launch printed so far."""
        return self.log_path.read_text()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT the launch (as Ctrl-C does), wait for it; SIGKILL after ``timeout``. The exit code.

        Whatever is left of its process group afterwards (a node a failed launch left behind) is killed.
        """
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # raised when the whole group has exited
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def launch(workspace: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start ``ros2 launch page4d_ros page4d.launch.py ARGS``; every launch is stopped after the test."""
    launched: list[Launched] = []

    def start(*arguments: str) -> Launched:
        launched.append(Launched(workspace, tmp_path / f"launch{len(launched)}.log", *arguments))
        return launched[-1]

    yield start
    for item in launched:
        item.stop()


def echo_once(env: dict[str, str], launched: Launched, topic: str, message_type: str, *args: str) -> str:
    """``ros2 topic echo --once TOPIC TYPE ARGS``: what it printed, asked up to 3 times (40 s each).

    A fresh CLI participant can miss its match on a loaded machine and then wait forever; a node that
    stopped publishing fails all three, with the launch log in the failure.
    """
    for _ in range(3):
        try:
            result = ros2(env, "topic", "echo", "--once", topic, message_type, *args, timeout=40)
        except subprocess.TimeoutExpired:
            continue
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    pytest.fail(f"nothing heard on {topic} in 3 tries of 40 s; launch log:\n{launched.log()[-4000:]}")


def param(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``ros2 param ARGS`` without the daemon, waiting up to 15 s for the node to be discovered."""
    return ros2(env, "param", *args, "--no-daemon", "--timeout", "15")


def lifecycle(env: dict[str, str], *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """``ros2 lifecycle ARGS`` without the daemon; asked again (3 tries) while it has not discovered the node.

    ``ros2 lifecycle`` has no discovery timeout, only a fixed ``--spin-time``, which a busy machine can miss
    (2 s was missed three times in a row by ``set`` on a quiet machine, each miss then costing a round of
    ``get`` polls; hence 5 s); "Node not found" means nothing was sent, so asking again is safe. It has no
    response timeout either: a request or response lost while its fresh DDS participant is still matching
    leaves it waiting forever, hence the ``timeout`` (``subprocess.TimeoutExpired``).
    """
    for _ in range(3):
        result = ros2(env, "lifecycle", *args, "--no-daemon", "--spin-time", "5", timeout=timeout)
        if "Node not found" not in result.stdout + result.stderr:
            break
    return result


def wait_for_lifecycle_state(
    env: dict[str, str], launched: Launched, state: str, timeout: float, fail: bool = True
) -> str:
    """Poll ``ros2 lifecycle get`` until the node reports ``state``; its last answer ("" without ``fail``).

    The node answers lifecycle requests only once autostart (model loading) is over and it spins, so a call
    can wait long on a loaded machine: a call that times out is asked again until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline and launched.process.poll() is None:
        try:
            answer = lifecycle(env, "get", NODE).stdout.strip()
        except subprocess.TimeoutExpired:
            answer = "(ros2 lifecycle get timed out)"
            continue
        if answer.startswith(f"{state} ["):
            return answer
        time.sleep(1.0)
    if not fail:
        return ""
    pytest.fail(f"node not '{state}' (last answer {answer!r}); launch log:\n{launched.log()[-4000:]}")


def change_state(
    env: dict[str, str], launched: Launched, transition: str, reached: str, timeout: float = 300.0
) -> None:
    """``ros2 lifecycle set NODE transition`` until ``ros2 lifecycle get`` reports ``reached``.

    A ``set`` that timed out may have lost its request (the node never logs the transition) or only the
    response (the node made it): success is judged by the state the node reports, and the ``set`` is sent
    again while the node is not there yet. Measured in two CI runs: ``set configure`` after ``cleanup`` waited
    past 120 s twice in a row, once with the node configured and once without.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and launched.process.poll() is None:
        try:
            result = lifecycle(env, "set", NODE, transition, timeout=45)
            assert "Transitioning failed" not in result.stdout + result.stderr, result.stdout + result.stderr
        except subprocess.TimeoutExpired:
            pass
        if wait_for_lifecycle_state(env, launched, reached, timeout=20, fail=False):
            return
    wait_for_lifecycle_state(env, launched, reached, timeout=1)


def stream_images(stop: threading.Event, context: Any, ros_helpers: Any, sequence: Any) -> None:
    """Publish the synthetic sequence to /camera/color/image_rect at 5 Hz, looping, until ``stop``."""
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    node = rclpy.create_node("page4d_cli_camera", context=context)
    image_pub = node.create_publisher(Image, "/camera/color/image_rect", 10)
    info_pub = node.create_publisher(CameraInfo, "/camera/color/camera_info", 10)
    height, width = sequence.rgb.shape[1:3]
    stamp = 1_700_000_000_000_000_000
    index = 0
    try:
        while not stop.is_set():
            stamp += 200_000_000
            frame = index % len(sequence.rgb)
            info_pub.publish(
                ros_helpers.camera_info_message(sequence.K[frame], width, height, stamp, sequence.frame_id)
            )
            image_pub.publish(
                ros_helpers.image_message(sequence.rgb[frame], "rgb8", stamp, sequence.frame_id)
            )
            index += 1
            stop.wait(0.2)
    finally:
        node.destroy_node()


def test_launch_and_drive_the_node_with_the_ros2_cli(
    workspace, launch, tmp_path: Path, tiny_checkpoint, ros_context, ros_helpers, synthetic_sequence
):
    """README's launch command with RViz requested (not installed here), then a user's CLI session."""
    env = workspace
    params = tmp_path / "fast.yaml"
    fast = ros_helpers.fast_node_parameters(tiny_checkpoint)
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": fast}}))
    launched = launch(
        f"params_file:={params}",
        "image_topic:=/camera/color/image_rect",
        "camera_info_topic:=/camera/color/camera_info",
        f"checkpoint_path:={tiny_checkpoint}",
        "device:=cpu",
        "base_frame:=camera_link",
        "use_rviz:=true",
    )
    wait_for_lifecycle_state(env, launched, "active", timeout=240)
    assert "rviz2 is not installed" in launched.log() and "starting the node without RViz" in launched.log()

    describe = param(env, "describe", NODE, "conf_percentile", "model_long_side")
    assert describe.returncode == 0, describe.stderr
    text = describe.stdout
    assert "Min value: 0.0" in text and "Max value: 100.0" in text, text
    assert "Step: 14" in text and "Max value: 4088" in text, text
    assert "Additional constraints: in [0, 100]; tunable while active" in text, text

    # Defect 1: a parameter rclpy declared itself must not kill the node.
    result = param(env, "set", NODE, "use_sim_time", "true")
    assert "Set parameter successful" in result.stdout, result.stdout + result.stderr
    assert param(env, "get", NODE, "use_sim_time").stdout.strip().endswith("True")
    result = param(env, "set", NODE, "use_sim_time", "false")
    assert "Set parameter successful" in result.stdout, result.stdout + result.stderr

    result = param(env, "set", NODE, "conf_percentile", "12.5")
    assert "Set parameter successful" in result.stdout, result.stderr
    result = param(env, "set", NODE, "conf_percentile", "150.0")
    assert "Setting parameter failed" in result.stderr, result.stdout
    result = param(env, "set", NODE, "window_size", "6")
    assert "Setting parameter failed" in result.stderr and "fixed after configure" in result.stderr
    result = param(env, "delete", NODE, "conf_percentile")
    assert "cannot be deleted" in result.stdout + result.stderr, result.stdout + result.stderr

    dump = param(env, "dump", NODE)
    assert dump.returncode == 0, dump.stderr
    dumped = yaml.safe_load(dump.stdout)
    assert dumped[NODE]["ros__parameters"]["conf_percentile"] == 12.5
    dump_file = tmp_path / "dump.yaml"
    dump_file.write_text(dump.stdout)
    load = param(env, "load", NODE, str(dump_file))
    failed = [line for line in (load.stdout + load.stderr).splitlines() if "failed" in line]
    # rclpy itself refuses its read-only start_type_description_service on every Jazzy node.
    assert all("start_type_description_service" in line for line in failed), failed
    assert load.returncode == 0, load.stdout + load.stderr
    assert "Set parameter use_sim_time successful" in load.stdout, load.stdout

    reset = ros2(env, "service", "call", f"{NODE}/reset", "std_srvs/srv/Trigger")
    assert "success=True" in reset.stdout, reset.stdout + reset.stderr

    stop = threading.Event()
    camera = threading.Thread(
        target=stream_images, args=(stop, ros_context, ros_helpers, synthetic_sequence), daemon=True
    )
    camera.start()
    try:
        frame_id = echo_once(
            env, launched, "/page4d/depth/image", "sensor_msgs/msg/Image", "--field", "header.frame_id"
        )
        assert synthetic_sequence.frame_id in frame_id, frame_id
        try:
            hz_output = ros2(env, "topic", "hz", "/diagnostics", "--window", "4", timeout=8).stdout
        except subprocess.TimeoutExpired as expired:  # hz runs until stopped: what it printed counts
            hz_output = expired.stdout
        assert "average rate" in (hz_output or ""), hz_output
        diagnostics = echo_once(env, launched, "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
        assert "page4d: tracking" in diagnostics and "count_reset" in diagnostics, diagnostics
    finally:
        stop.set()
        camera.join(timeout=10)

    # Defect 2: the documented procedure for a fixed parameter, with ros2 lifecycle.
    for transition, reached in (("deactivate", "inactive"), ("cleanup", "unconfigured")):
        change_state(env, launched, transition, reached)
    result = param(env, "set", NODE, "window_size", "6")
    assert "Set parameter successful" in result.stdout, result.stdout + result.stderr
    for transition, reached in (("configure", "inactive"), ("activate", "active")):
        change_state(env, launched, transition, reached)
    assert param(env, "get", NODE, "window_size").stdout.strip().endswith("6")

    log = launched.log()
    for line in ("deactivated:", "cleaned up:", "worker stopped"):
        assert line in log, line
    assert launched.stop() == 0, launched.log()[-3000:]
    final = launched.log()
    assert "Traceback" not in final and "context is invalid" not in final, final[-3000:]
    assert "[ERROR]" not in final, final[-3000:]


def test_launch_with_a_mistyped_params_file_fails_loudly(workspace, launch, tmp_path: Path):
    """A params_file that does not exist stops the launch with a message naming it (no node starts)."""
    missing = tmp_path / "page4d_typo.yaml"
    launched = launch(f"params_file:={missing}")
    try:
        launched.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"launch kept running with a missing params file:\n{launched.log()[-3000:]}")
    assert launched.process.returncode != 0
    log = launched.log()
    assert str(missing) in log and "is not a file" in log, log
    assert "page4d_node" not in log or "process started" not in log, log
