"""Publisher process for the DDS transport test: sends numbered images and TF messages, then exits.

Usage: python dds_peer.py {best_effort|reliable} COUNT WIDTH HEIGHT
Each image's bytes are ``(index + row) % 256`` per row so the receiver can check every byte.
"""

import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from tf2_msgs.msg import TFMessage


def make_image(index: int, width: int, height: int) -> Image:
    """An rgb8 image whose row r holds the byte value (index + r) % 256."""
    rows = (np.arange(height, dtype=np.int64)[:, None] + index) % 256
    pixels = np.broadcast_to(rows.astype(np.uint8), (height, width * 3))
    msg = Image()
    msg.header.frame_id = "camera_optical_frame"
    msg.header.stamp.sec = 1000 + index
    msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def make_tf(index: int) -> TFMessage:
    """A TF message with one odom -> base_link edge whose x equals the index."""
    transform = TransformStamped()
    transform.header.frame_id = "odom"
    transform.header.stamp.sec = 1000 + index
    transform.child_frame_id = "base_link"
    transform.transform.translation.x = float(index)
    transform.transform.rotation.w = 1.0
    return TFMessage(transforms=[transform])


def main() -> None:
    """Wait for the subscribers, publish COUNT images and TF messages at 20 Hz, linger, exit."""
    reliability_name, count, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    reliability = (
        ReliabilityPolicy.BEST_EFFORT if reliability_name == "best_effort" else ReliabilityPolicy.RELIABLE
    )
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=count, reliability=reliability)
    rclpy.init()
    node = rclpy.create_node("dds_peer_publisher")
    image_pub = node.create_publisher(Image, "peer_test/image", qos)
    tf_pub = node.create_publisher(TFMessage, "peer_test/tf", qos)
    deadline = time.monotonic() + 30.0
    while (image_pub.get_subscription_count() == 0 or tf_pub.get_subscription_count() == 0) and (
        time.monotonic() < deadline
    ):
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the reverse discovery (reader -> writer) settle before the first sample
    for index in range(count):
        image_pub.publish(make_image(index, width, height))
        tf_pub.publish(make_tf(index))
        time.sleep(0.05)
    time.sleep(2.0)  # keep the writer alive while the reader drains (reliable retransmissions)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
