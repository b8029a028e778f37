"""Our numpy conversions against the ROS libraries that do the same job (sensor_msgs_py, tf_transformations).

Times, interleaved and repeated (the median is reported, so that load from other processes on a shared machine
affects both sides alike):

- building a PointCloud2 of N coloured points: ``messages.build_point_cloud`` against
  ``sensor_msgs_py.point_cloud2.create_cloud`` with the same fields;
- reading it back to an [N, 3] array: ``np.frombuffer`` against ``point_cloud2.read_points_numpy``;
- a 4x4 pose to translation + quaternion: ``conversions.matrix_to_translation_quaternion`` against
  ``tf_transformations.quaternion_from_matrix`` (per call) and the batched form ``~/save`` uses.

Usage: ``.venv/bin/python benchmarks/ros_libraries.py [--points 20000] [--repeats 7]``. Needs the wheels of
``../shared/wheels`` (scripts/setup_env.sh installs them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def median_ms(functions: dict[str, Callable[[], object]], repeats: int, inner: int) -> dict[str, float]:
    """Median milliseconds per call of each function, the functions interleaved in every repeat."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            for _ in range(inner):
                function()
            samples[name].append((time.perf_counter() - started) * 1e3 / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    """Run the comparisons and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--poses", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import tf_transformations
    from rclpy.serialization import serialize_message  # noqa: F401  (rclpy messages must import)
    from scipy.spatial.transform import Rotation
    from sensor_msgs.msg import PointField
    from sensor_msgs_py import point_cloud2
    from std_msgs.msg import Header

    from page4d_ros.ros import conversions, messages

    rng = np.random.default_rng(0)
    points = rng.normal(size=(args.points, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(args.points, 3), dtype=np.uint8)
    factory = messages.RclpyMessageFactory()
    header = messages.build_header(factory, 1, "cam")
    ours = messages.build_point_cloud(factory, header, points, colors)
    fields = [
        PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
        for n, o in conversions.POINT_FIELDS
    ]
    rgb = conversions.pack_rgb_float(colors)
    rows = [(*p, c) for p, c in zip(points.tolist(), rgb.tolist())]
    ros_header = Header(frame_id="cam")

    build = median_ms(
        {
            "ours": lambda: messages.build_point_cloud(factory, header, points, colors),
            "sensor_msgs_py (list of tuples)": lambda: point_cloud2.create_cloud(ros_header, fields, rows),
        },
        args.repeats,
        3,
    )
    read = median_ms(
        {
            "ours": lambda: np.frombuffer(ours.data, np.float32).reshape(-1, 4)[:, :3].copy(),
            "sensor_msgs_py": lambda: point_cloud2.read_points_numpy(ours, field_names=("x", "y", "z")),
        },
        args.repeats,
        3,
    )
    poses = np.tile(np.eye(4), (args.poses, 1, 1))
    poses[:, :3, :3] = Rotation.random(args.poses, random_state=0).as_matrix()
    quaternion = median_ms(
        {
            "ours, per pose": lambda: [conversions.matrix_to_translation_quaternion(T) for T in poses],
            "ours, batched": lambda: conversions.matrices_to_translations_quaternions(poses),
            "tf_transformations, per pose": lambda: [
                tf_transformations.quaternion_from_matrix(T) for T in poses
            ],
        },
        args.repeats,
        1,
    )
    print(
        f"PointCloud2 of {args.points} points, build (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in build.items())
    )
    print(
        f"PointCloud2 of {args.points} points, read xyz (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in read.items())
    )
    print(
        f"{args.poses} poses to quaternions (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in quaternion.items())
    )


if __name__ == "__main__":
    main()
