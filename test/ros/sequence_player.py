"""Play a synthetic sequence as camera topics (a separate publisher process for the end-to-end tests).

Usage: ``python test/ros/sequence_player.py --seed 3 --frames 16 --width 160 --height 120 --rate 8``.
Publishes ``<namespace>/camera_info`` then ``<namespace>/image`` (rgb8) per frame, with the frame's stamp and
optical frame id, after the node's image subscription is matched; exits when done.
"""

from __future__ import annotations

import argparse
import array
import time

import numpy as np
import rclpy
from sensor_msgs.msg import CameraInfo, Image

from page4d_ros.synthetic.scene import generate_sequence


def main() -> None:
    """Parse the arguments, wait for a subscriber, publish every frame at ``--rate`` Hz."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--movers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--namespace", default="/page4d")
    args = parser.parse_args()
    sequence = generate_sequence(
        args.seed, args.frames, args.width, args.height, camera_motion="walk", num_movers=args.movers
    )
    rclpy.init()
    node = rclpy.create_node("sequence_player")
    image_pub = node.create_publisher(Image, f"{args.namespace}/image", 10)
    info_pub = node.create_publisher(CameraInfo, f"{args.namespace}/camera_info", 10)
    deadline = time.monotonic() + 60.0
    while (image_pub.get_subscription_count() == 0 or info_pub.get_subscription_count() == 0) and (
        time.monotonic() < deadline
    ):
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)
    for index in range(len(sequence)):
        sec, nanosec = divmod(int(sequence.stamps_ns[index]), 1_000_000_000)
        info = CameraInfo(width=sequence.width, height=sequence.height, distortion_model="plumb_bob")
        info.header.stamp.sec, info.header.stamp.nanosec, info.header.frame_id = (
            sec,
            nanosec,
            sequence.frame_id,
        )
        K = sequence.K[index]
        info.d = [0.0] * 5
        info.k = K.reshape(-1).astype(np.float64)
        info.r = np.eye(3).reshape(-1)
        info.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).astype(np.float64)
        info_pub.publish(info)
        image = Image(height=sequence.height, width=sequence.width, encoding="rgb8", step=3 * sequence.width)
        image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id = (
            sec,
            nanosec,
            sequence.frame_id,
        )
        data = array.array("B")
        data.frombytes(np.ascontiguousarray(sequence.rgb[index]).tobytes())
        image.data = data
        image_pub.publish(image)
        time.sleep(1.0 / args.rate)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
