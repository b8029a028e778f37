"""rosbag2 (MCAP) message building and decoding with ``rosbags`` (no ROS installation needed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
POSE_COV_TYPE = "geometry_msgs/msg/PoseWithCovarianceStamped"
POSE_STAMPED_TYPE = "geometry_msgs/msg/PoseStamped"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"

# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
    "32SC1": ("i4", 1),
}


@lru_cache(maxsize=1)
def typestore() -> Any:
    """The ROS 2 Jazzy message typestore of ``rosbags``."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` for a nanosecond stamp."""
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](
        sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)
    )
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_message(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """A ``sensor_msgs/Image`` of ``array`` (HxW or HxWxC) in ``encoding`` (little-endian, no padding)."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; use one of {sorted(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=np.dtype("<" + dtype))
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ValueError(
            f"an {encoding} image needs shape HxW{'' if channels == 1 else f'x{channels}'}, got {array.shape}"
        )
    height, width = array.shape[:2]
    return typestore().types[IMAGE_TYPE](
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * array.itemsize,
        data=array.reshape(-1).view(np.uint8),
    )


def image_to_array(message: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into HxW or HxWxC (RGB order for colour encodings)."""
    encoding = message.encoding
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[encoding]
    item_type = np.dtype((">" if message.is_bigendian else "<") + dtype)
    height, width, step = int(message.height), int(message.width), int(message.step)
    row_bytes = width * channels * item_type.itemsize
    data = np.asarray(message.data, dtype=np.uint8)
    if step < row_bytes or data.size < step * height:
        raise ValueError(
            f"image data too short: {data.size} bytes for {height} rows of step {step} ({encoding})"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    array = np.ascontiguousarray(rows).view(item_type).astype(item_type.newbyteorder("="))
    array = array.reshape(height, width, channels)
    if encoding in ("bgr8", "bgra8"):
        array = array[..., [2, 1, 0]]
    elif encoding == "rgba8":
        array = array[..., :3]
    return array[..., 0] if channels == 1 else np.ascontiguousarray(array)


def camera_info_message(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> Any:
    """A distortion-free ``sensor_msgs/CameraInfo`` (plumb_bob, zero coefficients) for intrinsics ``K``."""
    types = typestore().types
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types[CAMERA_INFO_TYPE](
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.asarray(K, dtype=np.float64).reshape(9),
        r=np.eye(3).reshape(9),
        p=projection.reshape(12),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def transform_message(T: np.ndarray, stamp_ns: int, parent: str, child: str) -> Any:
    """A ``geometry_msgs/TransformStamped`` ``parent -> child`` for the 4x4 parent-from-child transform."""
    types = typestore().types
    qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
    transform = types["geometry_msgs/msg/Transform"](
        translation=types["geometry_msgs/msg/Vector3"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        rotation=types["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
    )
    return types["geometry_msgs/msg/TransformStamped"](
        header=header(stamp_ns, parent), child_frame_id=child, transform=transform
    )


def tf_message(transforms: Iterable[Any]) -> Any:
    """A ``tf2_msgs/TFMessage`` holding ``transforms``."""
    return typestore().types[TF_TYPE](transforms=list(transforms))


def pose_to_matrix(position: Any, orientation: Any) -> np.ndarray:
    """4x4 matrix from a ``Point``/``Vector3`` and a ``Quaternion`` message (normalising the quaternion)."""
    quaternion = np.array([orientation.x, orientation.y, orientation.z, orientation.w], dtype=np.float64)
    norm = np.linalg.norm(quaternion)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"invalid quaternion {quaternion.tolist()} in a pose message")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quaternion / norm).as_matrix()
    T[:3, 3] = [position.x, position.y, position.z]
    return T


def open_bag_reader(path: str | Path) -> Any:
    """An opened ``rosbags`` reader for a rosbag2 folder (clear error when ``path`` is not one)."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise ValueError(f"{path} is not a rosbag2 folder (no metadata.yaml inside)")
    reader = Reader(path)
    reader.open()
    return reader


def iter_bag_messages(path: str | Path, topics: Iterable[str]) -> Iterator[tuple[str, str, int, Any]]:
    """Deserialised ``(topic, msgtype, log_time_ns, message)`` of the given topics, in log-time order."""
    wanted = set(topics)
    store = typestore()
    reader = open_bag_reader(path)
    try:
        connections = [connection for connection in reader.connections if connection.topic in wanted]
        for connection, log_time, raw in reader.messages(connections=connections):
            yield (
                connection.topic,
                connection.msgtype,
                log_time,
                store.deserialize_cdr(raw, connection.msgtype),
            )
    finally:
        reader.close()


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic name -> message type of a rosbag2 folder."""
    reader = open_bag_reader(path)
    try:
        return {connection.topic: connection.msgtype for connection in reader.connections}
    finally:
        reader.close()


class BagWriter:
    """Thin MCAP rosbag2 writer: ``add_topic`` once, then ``write(topic, log_time_ns, message)``.

    Args:
        path: the bag folder to create (must not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        path = Path(path)
        if path.exists():
            raise FileExistsError(
                f"{path} already exists; rosbag2 writers need a new folder (remove it or pick another)"
            )
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, tuple[Any, str]] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic and its message type."""
        connection = self._writer.add_connection(topic, msgtype, typestore=typestore())
        self._connections[topic] = (connection, msgtype)

    def write(self, topic: str, log_time_ns: int, message: Any) -> None:
        """Serialise and write one message."""
        connection, msgtype = self._connections[topic]
        self._writer.write(connection, int(log_time_ns), typestore().serialize_cdr(message, msgtype))

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml)."""
        self._writer.close()

    def __enter__(self) -> BagWriter:
        """Context-manager entry."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on exit."""
        self.close()
