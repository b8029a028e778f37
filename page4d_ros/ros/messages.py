"""Message builders shared by the node (rclpy messages) and the bag tool (rosbags messages).

Both libraries construct messages from keyword arguments with the ROS field names; they differ only in how
arrays are stored. A :class:`MessageFactory` hides that difference, so each builder below is written once and
fills every field explicitly (rosbags requires all of them). No rclpy import happens here.
"""

from __future__ import annotations

import array
import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from page4d_ros.ros import conversions


class MessageFactory:
    """Creates messages by full type name (``"sensor_msgs/msg/Image"``) for one message library."""

    def make(self, type_name: str, **fields: Any) -> Any:
        """Construct a message of ``type_name`` from keyword fields."""
        raise NotImplementedError

    def byte_array(self, data: np.ndarray) -> Any:
        """Wrap a uint8 array for a ``uint8[]`` field."""
        raise NotImplementedError

    def fixed_floats(self, values: Iterable[float]) -> Any:
        """Wrap values for a fixed-size ``float64[N]`` field."""
        return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)

    def float_sequence(self, values: Iterable[float]) -> Any:
        """Wrap values for an unbounded ``float64[]`` field."""
        raise NotImplementedError


class RclpyMessageFactory(MessageFactory):
    """Builds rclpy (rosidl Python) messages; byte payloads use ``array.array('B')`` (fast assignment)."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def message_class(self, type_name: str) -> type:
        """The rosidl Python class of ``type_name`` (imported on first use)."""
        cls = self._classes.get(type_name)
        if cls is None:
            package, _, name = type_name.split("/")
            cls = getattr(importlib.import_module(f"{package}.msg"), name)
            self._classes[type_name] = cls
        return cls

    def make(self, type_name: str, **fields: Any) -> Any:
        """Construct an rclpy message."""
        return self.message_class(type_name)(**fields)

    def byte_array(self, data: np.ndarray) -> Any:
        """``array.array('B')`` filled with one memory copy (list or numpy assignment is ~1000x slower)."""
        buffer = array.array("B")
        buffer.frombytes(np.ascontiguousarray(data).view(np.uint8).reshape(-1))
        return buffer

    def float_sequence(self, values: Iterable[float]) -> Any:
        """``array.array('d')`` as rosidl expects for ``float64[]``."""
        return array.array("d", [float(value) for value in values])


class RosbagsMessageFactory(MessageFactory):
    """Builds ``rosbags`` dataclass messages from a typestore (numpy arrays for every array field)."""

    def __init__(self, typestore: Any) -> None:
        self._typestore = typestore

    def make(self, type_name: str, **fields: Any) -> Any:
        """Construct a rosbags message."""
        return self._typestore.types[type_name](**fields)

    def byte_array(self, data: np.ndarray) -> Any:
        """A flat contiguous uint8 numpy array."""
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)

    def float_sequence(self, values: Iterable[float]) -> Any:
        """A float64 numpy array."""
        return self.fixed_floats(values)


def build_time(factory: MessageFactory, stamp_ns: int) -> Any:
    """``builtin_interfaces/Time`` from integer nanoseconds."""
    sec, nanosec = conversions.stamp_to_sec_nanosec(int(stamp_ns))
    return factory.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def build_header(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with the given stamp and frame."""
    return factory.make("std_msgs/msg/Header", stamp=build_time(factory, stamp_ns), frame_id=frame_id)


def build_image(factory: MessageFactory, header: Any, image: np.ndarray, encoding: str) -> Any:
    """``sensor_msgs/Image`` from an array (see :func:`conversions.image_payload` for the encodings)."""
    height, width, step, payload = conversions.image_payload(image, encoding)
    return factory.make(
        "sensor_msgs/msg/Image",
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=factory.byte_array(payload),
    )


def build_camera_info(factory: MessageFactory, header: Any, K: np.ndarray, width: int, height: int) -> Any:
    """``sensor_msgs/CameraInfo`` of a rectified ``width`` x ``height`` pinhole image, intrinsics ``K``."""
    d, k, r, p = conversions.camera_info_arrays(K)
    roi = factory.make(
        "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return factory.make(
        "sensor_msgs/msg/CameraInfo",
        header=header,
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=factory.float_sequence(d),
        k=factory.fixed_floats(k),
        r=factory.fixed_floats(r),
        p=factory.fixed_floats(p),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def build_point_cloud(factory: MessageFactory, header: Any, points: np.ndarray, colors: np.ndarray) -> Any:
    """Unorganised ``sensor_msgs/PointCloud2`` (x, y, z, rgb FLOAT32; ``is_dense`` when all finite)."""
    payload = conversions.point_cloud_payload(points, colors)
    fields = [
        factory.make(
            "sensor_msgs/msg/PointField",
            name=name,
            offset=offset,
            datatype=conversions.POINT_FIELD_FLOAT32,
            count=1,
        )
        for name, offset in conversions.POINT_FIELDS
    ]
    count = int(points.shape[0])
    return factory.make(
        "sensor_msgs/msg/PointCloud2",
        header=header,
        height=1,
        width=count,
        fields=fields,
        is_bigendian=False,
        point_step=conversions.POINT_STEP,
        row_step=conversions.POINT_STEP * count,
        data=factory.byte_array(payload),
        is_dense=bool(np.all(np.isfinite(points))),
    )


def build_pose(factory: MessageFactory, T: np.ndarray) -> Any:
    """``geometry_msgs/Pose`` from a 4x4 transform."""
    translation, quaternion = conversions.matrix_to_translation_quaternion(T)
    position = factory.make("geometry_msgs/msg/Point", x=translation[0], y=translation[1], z=translation[2])
    orientation = factory.make(
        "geometry_msgs/msg/Quaternion", x=quaternion[0], y=quaternion[1], z=quaternion[2], w=quaternion[3]
    )
    return factory.make("geometry_msgs/msg/Pose", position=position, orientation=orientation)


def build_transform_stamped(
    factory: MessageFactory, stamp_ns: int, parent_frame: str, child_frame: str, T: np.ndarray
) -> Any:
    """``geometry_msgs/TransformStamped`` expressing ``child_frame`` in ``parent_frame``."""
    translation, quaternion = conversions.matrix_to_translation_quaternion(T)
    transform = factory.make(
        "geometry_msgs/msg/Transform",
        translation=factory.make(
            "geometry_msgs/msg/Vector3", x=translation[0], y=translation[1], z=translation[2]
        ),
        rotation=factory.make(
            "geometry_msgs/msg/Quaternion", x=quaternion[0], y=quaternion[1], z=quaternion[2], w=quaternion[3]
        ),
    )
    return factory.make(
        "geometry_msgs/msg/TransformStamped",
        header=build_header(factory, stamp_ns, parent_frame),
        child_frame_id=child_frame,
        transform=transform,
    )


def build_tf_message(factory: MessageFactory, transforms: Sequence[Any]) -> Any:
    """``tf2_msgs/TFMessage`` holding ``transforms``."""
    return factory.make("tf2_msgs/msg/TFMessage", transforms=list(transforms))


def covariance_matrix(position_sigma_m: float, rotation_sigma_rad: float) -> np.ndarray:
    """Diagonal 6x6 pose covariance (x, y, z, roll, pitch, yaw) flattened row-major to 36 values."""
    variances = [position_sigma_m**2] * 3 + [rotation_sigma_rad**2] * 3
    return np.diag(variances).reshape(-1)


def build_pose_with_covariance_stamped(
    factory: MessageFactory, stamp_ns: int, frame_id: str, T: np.ndarray, covariance: np.ndarray
) -> Any:
    """``geometry_msgs/PoseWithCovarianceStamped``."""
    pose = factory.make(
        "geometry_msgs/msg/PoseWithCovariance",
        pose=build_pose(factory, T),
        covariance=factory.fixed_floats(covariance),
    )
    return factory.make(
        "geometry_msgs/msg/PoseWithCovarianceStamped",
        header=build_header(factory, stamp_ns, frame_id),
        pose=pose,
    )


TWIST_UNKNOWN_VARIANCE = 1.0e6
"""Twist variance when no velocity is known (first pose, after a time jump): large, not the -1 of Imu."""


def build_odometry(
    factory: MessageFactory,
    stamp_ns: int,
    frame_id: str,
    child_frame_id: str,
    T: np.ndarray,
    covariance: np.ndarray,
    twist: tuple[np.ndarray, np.ndarray] | None = None,
    twist_covariance: np.ndarray | None = None,
) -> Any:
    """``nav_msgs/Odometry`` with pose and covariance and the twist ``(linear, angular)`` in the child frame.

    Without a twist it is zero with :data:`TWIST_UNKNOWN_VARIANCE` on the diagonal, so a filter such as
    robot_localization gives it no weight (rather than fusing "not moving").
    """
    pose = factory.make(
        "geometry_msgs/msg/PoseWithCovariance",
        pose=build_pose(factory, T),
        covariance=factory.fixed_floats(covariance),
    )
    if twist is None:
        linear, angular = np.zeros(3), np.zeros(3)
        twist_covariance = np.diag([TWIST_UNKNOWN_VARIANCE] * 6).reshape(-1)
    else:
        linear, angular = (np.asarray(v, dtype=np.float64) for v in twist)
        if twist_covariance is None:
            raise ValueError("a twist needs its covariance")

    def vector(values: np.ndarray) -> Any:
        return factory.make(
            "geometry_msgs/msg/Vector3", x=float(values[0]), y=float(values[1]), z=float(values[2])
        )

    twist_message = factory.make(
        "geometry_msgs/msg/TwistWithCovariance",
        twist=factory.make("geometry_msgs/msg/Twist", linear=vector(linear), angular=vector(angular)),
        covariance=factory.fixed_floats(twist_covariance),
    )
    return factory.make(
        "nav_msgs/msg/Odometry",
        header=build_header(factory, stamp_ns, frame_id),
        child_frame_id=child_frame_id,
        pose=pose,
        twist=twist_message,
    )


def build_pose_stamped(factory: MessageFactory, stamp_ns: int, frame_id: str, T: np.ndarray) -> Any:
    """``geometry_msgs/PoseStamped`` of a 4x4 pose in ``frame_id``."""
    return factory.make(
        "geometry_msgs/msg/PoseStamped",
        header=build_header(factory, stamp_ns, frame_id),
        pose=build_pose(factory, T),
    )


def build_path(factory: MessageFactory, stamp_ns: int, frame_id: str, poses: Sequence[Any]) -> Any:
    """``nav_msgs/Path`` in ``frame_id`` from already built PoseStamped messages (built once per pose)."""
    return factory.make(
        "nav_msgs/msg/Path", header=build_header(factory, stamp_ns, frame_id), poses=list(poses)
    )
