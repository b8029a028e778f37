"""config/fastdds_loopback.xml lets every participant on the machine discover every other one.

With the initial peer 127.0.0.1, Fast DDS probes the discovery ports of participant ids 0..N-1 only (N is the
UDP transport's ``maxInitialPeersRange``, default 4). A robot runs more processes than that; so did the test
suite, where two late participants (a probe and a node) then never met.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

LATE_PAIR = """
import sys, time
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

early = []
for index in range(6):  # participants that take the ids 0..5 first
    context = Context()
    rclpy.init(context=context)
    early.append((context, rclpy.create_node(f"early_{index}", context=context)))
received = []
contexts, nodes = [], []
for name in ("late_publisher", "late_subscriber"):
    context = Context()
    rclpy.init(context=context)
    contexts.append(context)
    nodes.append(rclpy.create_node(name, context=context))
publisher = nodes[0].create_publisher(String, "/page4d_discovery_check", 10)
nodes[1].create_subscription(String, "/page4d_discovery_check", lambda msg: received.append(msg.data), 10)
executor = SingleThreadedExecutor(context=contexts[1])
executor.add_node(nodes[1])
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and not received:
    publisher.publish(String(data="hello"))
    executor.spin_once(timeout_sec=0.2)
print("received" if received else "not discovered", flush=True)
"""
"""Six early participants, then a publisher/subscriber pair that must find each other."""


def test_two_late_participants_discover_each_other():
    """The 7th and 8th participant of one machine exchange a message within 20 s."""
    result = subprocess.run(
        [sys.executable, "-c", LATE_PAIR, "20"], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "received", result.stdout + result.stderr[-2000:]


SERVICE_CALL = """
import rclpy
from std_srvs.srv import Trigger

rclpy.init()
node = rclpy.create_node("profile_check")
node.create_service(Trigger, "/page4d_profile_check", lambda request, _: Trigger.Response(success=True))
client = node.create_client(Trigger, "/page4d_profile_check")
assert client.wait_for_service(timeout_sec=10.0)
future = client.call_async(Trigger.Request())
rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
print("answered" if future.done() and future.result().success else "no answer", flush=True)
"""
"""A service and its client in one process: the reply writer takes the profile's "service" settings."""


def test_the_profile_loads_without_errors_and_services_answer():
    """Fast DDS parses the whole shipped profile (a bad element drops the file with only a log line)."""
    result = subprocess.run(
        [sys.executable, "-c", SERVICE_CALL], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert "XMLPARSER" not in output and "Error parsing" not in output, output[-3000:]
    assert result.returncode == 0 and result.stdout.strip() == "answered", output[-3000:]
