"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from page4d_ros.synthetic import SyntheticSequence, bagio, generate_sequence


@pytest.fixture(scope="session")
def gt_sequence() -> SyntheticSequence:
    """A short orbit sequence with movers (seed 21, 8 frames, 80x60)."""
    return generate_sequence(21, 8, 80, 60, camera_motion="orbit", num_movers=3)


@pytest.fixture(scope="session")
def blocky_sequence() -> SyntheticSequence:
    """Hand-made ground truth whose maps survive 2x down/up-sampling exactly: constant depth per frame
    (2, 3, 4, 5 m) and a 2x2-aligned dynamic block; the camera moves 1 m along x per frame."""
    depth = np.stack([np.full((6, 8), value, dtype=np.float32) for value in (2.0, 3.0, 4.0, 5.0)])
    mask = np.zeros((4, 6, 8), dtype=bool)
    mask[:, 2:4, 4:6] = True
    poses = np.tile(np.eye(4), (4, 1, 1))
    poses[:, 0, 3] = np.arange(4.0)
    poses[:, 1, 3] = [0.0, 0.2, 0.1, 0.5]
    poses[:, :3, :3] = Rotation.from_euler("y", [[0.0], [5.0], [10.0], [20.0]], degrees=True).as_matrix()
    K = np.tile(np.array([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]]), (4, 1, 1))
    return SyntheticSequence(
        rgb=np.zeros((4, 6, 8, 3), dtype=np.uint8),
        depth=depth,
        dynamic_mask=mask,
        instance_ids=mask.astype(np.int32),
        T_world_cam=poses,
        K=K,
        stamps_ns=1_000_000_000 + np.arange(4) * 100_000_000,
    )


@pytest.fixture
def write_prediction_bag() -> Callable[..., Path]:
    """Writes a bag shaped like the node's output: ``<ns>/camera_pose``, ``<ns>/depth/image`` (32FC1),
    ``<ns>/dynamic_mask/image`` (mono8) and, when ``tf`` is true, ``/tf`` odom -> optical frame instead of
    camera_pose."""

    def write(path: Path, stamps, poses, depths, masks, namespace="/page4d", tf=False) -> Path:
        store = bagio.typestore()
        types = store.types
        with bagio.BagWriter(path) as writer:
            writer.add_topic(f"{namespace}/camera_pose", bagio.POSE_COV_TYPE)
            writer.add_topic(f"{namespace}/depth/image", bagio.IMAGE_TYPE)
            writer.add_topic(f"{namespace}/dynamic_mask/image", bagio.IMAGE_TYPE)
            writer.add_topic("/tf", bagio.TF_TYPE)
            for stamp, pose, depth, mask in zip(stamps, poses, depths, masks):
                stamp = int(stamp)
                if tf:
                    edge = bagio.transform_message(pose, stamp, "odom", "camera_optical_frame")
                    writer.write("/tf", stamp, bagio.tf_message([edge]))
                else:
                    qx, qy, qz, qw = Rotation.from_matrix(pose[:3, :3]).as_quat()
                    message = types[bagio.POSE_COV_TYPE](
                        header=bagio.header(stamp, "odom"),
                        pose=types["geometry_msgs/msg/PoseWithCovariance"](
                            pose=types["geometry_msgs/msg/Pose"](
                                position=types["geometry_msgs/msg/Point"](
                                    x=pose[0, 3], y=pose[1, 3], z=pose[2, 3]
                                ),
                                orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
                            ),
                            covariance=np.zeros(36),
                        ),
                    )
                    writer.write(f"{namespace}/camera_pose", stamp, message)
                image = bagio.image_message(depth, "32FC1", stamp, "camera_optical_frame")
                writer.write(f"{namespace}/depth/image", stamp, image)
                mono = bagio.image_message(
                    mask.astype(np.uint8) * 255, "mono8", stamp, "camera_optical_frame"
                )
                writer.write(f"{namespace}/dynamic_mask/image", stamp, mono)
        return path

    return write
