"""Two OS processes exchange large images and TF messages through rclpy over Fast DDS on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

PEER = Path(__file__).with_name("dds_peer.py")
COUNT = 20
WIDTH, HEIGHT = 1024, 768  # rgb8: 2,359,296 bytes per image


@pytest.mark.parametrize("reliability", ["best_effort", "reliable"])
def test_large_images_and_tf_cross_processes(reliability, ros_context, spawn_process):
    """Every one of 20 x 2.36 MB images and 20 TF messages arrives intact, with either reliability."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=COUNT,
        reliability=ReliabilityPolicy.BEST_EFFORT
        if reliability == "best_effort"
        else ReliabilityPolicy.RELIABLE,
    )
    node = rclpy.create_node("dds_peer_subscriber", context=ros_context)
    images: dict[int, Image] = {}
    transforms: dict[int, float] = {}
    node.create_subscription(
        Image, "peer_test/image", lambda m: images.__setitem__(m.header.stamp.sec - 1000, m), qos
    )
    node.create_subscription(
        TFMessage,
        "peer_test/tf",
        lambda m: transforms.__setitem__(
            m.transforms[0].header.stamp.sec - 1000, m.transforms[0].transform.translation.x
        ),
        qos,
    )
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    publisher = spawn_process(str(PEER), reliability, str(COUNT), str(WIDTH), str(HEIGHT))
    deadline = time.monotonic() + 60.0
    while (len(images) < COUNT or len(transforms) < COUNT) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    publisher.wait(timeout=30)
    executor.shutdown()
    node.destroy_node()

    assert publisher.returncode == 0
    assert sorted(images) == list(range(COUNT)), f"received images {sorted(images)}"
    assert transforms == {index: float(index) for index in range(COUNT)}
    rows = np.arange(HEIGHT)[:, None]
    for index, msg in images.items():
        assert (msg.width, msg.height, msg.encoding, msg.step) == (WIDTH, HEIGHT, "rgb8", WIDTH * 3)
        pixels = np.frombuffer(msg.data, dtype=np.uint8).reshape(HEIGHT, WIDTH * 3)
        assert np.array_equal(pixels, np.broadcast_to(((rows + index) % 256).astype(np.uint8), pixels.shape))
