"""Launch the page4d lifecycle node (autostarts itself) and, optionally, RViz.

Example::

    ros2 launch page4d_ros page4d.launch.py image_topic:=/camera/color/image_rect \\
        camera_info_topic:=/camera/color/camera_info checkpoint_path:=/models/page4d.safetensors \\
        use_rviz:=true

Arguments left empty keep the value of ``params_file`` (default: the package's config/page4d.yaml). A
``params_file`` that does not exist stops the launch with an error; ``use_rviz:=true`` without rviz2 installed
warns and starts the node alone.
"""

import os

import yaml
from ament_index_python.packages import (
    PackageNotFoundError,
    get_package_prefix,
    get_package_share_directory,
)
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription

NODE_PARAMETER_ARGUMENTS = (
    "image_transport",
    "checkpoint_path",
    "model_preset",
    "device",
    "precision",
    "window_size",
    "tf_mode",
    "base_frame",
    "odom_frame",
    "scale_source",
    "require_metric_for_tf",
    "autostart",
)
"""Launch arguments passed to the node as parameters of the same name (only when not empty)."""

ARGUMENTS = (
    ("namespace", "page4d", "Namespace of the node and its topics."),
    ("params_file", "", "Parameters YAML; empty uses page4d_ros/config/page4d.yaml."),
    ("image_topic", "/camera/color/image_rect", "Rectified input image topic (remapped to 'image')."),
    ("camera_info_topic", "/camera/color/camera_info", "CameraInfo of the input images."),
    ("image_transport", "", "raw or compressed (subscribes to <image_topic>/compressed)."),
    ("checkpoint_path", "", "Local checkpoint file; empty uses the params file / shipped model."),
    ("model_preset", "", "Network preset when the file stores no config (e.g. pi3, vggt-omega, vggt-1b)."),
    ("device", "", "auto, cpu, cuda or cuda:N."),
    ("precision", "", "auto, fp32, bf16 or fp16."),
    ("window_size", "", "Frames per network window."),
    ("tf_mode", "", "odom, map or none."),
    ("base_frame", "", "Robot body frame (camera_link on camera-only rigs)."),
    ("odom_frame", "", "Odometry frame."),
    ("scale_source", "", "none, fixed, odometry, depth or camera_height."),
    (
        "require_metric_for_tf",
        "",
        "true: withhold TF and odometry until the scale is metric (default false: model units, WARN).",
    ),
    ("use_sim_time", "false", "Use /clock (set true when playing bags with --clock)."),
    ("autostart", "", "Configure and activate on start-up (default true)."),
    ("log_level", "info", "Node log level."),
    ("use_rviz", "false", "Start RViz with config/page4d.rviz."),
)
"""(name, default, description) of every launch argument."""


def _launch_nodes(context, *args, **kwargs):
    """Build the node with the parameter overrides the user actually set."""
    share = get_package_share_directory("page4d_ros")
    default_params = os.path.join(share, "config", "page4d.yaml")
    params_file = LaunchConfiguration("params_file").perform(context) or default_params
    if not os.path.isfile(params_file):
        raise RuntimeError(
            f"params_file '{params_file}' is not a file; give an existing parameters YAML "
            f"(e.g. a copy of {default_params}) or leave params_file empty for that default"
        )
    overrides = {"use_sim_time": yaml.safe_load(LaunchConfiguration("use_sim_time").perform(context))}
    for name in NODE_PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value != "":
            overrides[name] = value if name in ("checkpoint_path", "model_preset") else yaml.safe_load(value)
    image_topic = LaunchConfiguration("image_topic").perform(context)
    node = LifecycleNode(
        package="page4d_ros",
        executable="page4d_node",
        name="page4d",
        namespace=LaunchConfiguration("namespace"),
        parameters=[params_file, overrides],
        remappings=[
            ("image", image_topic),
            ("image/compressed", image_topic + "/compressed"),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
    )
    if not yaml.safe_load(LaunchConfiguration("use_rviz").perform(context)):
        return [node]
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        get_logger("page4d.launch").warning(
            "use_rviz:=true but rviz2 is not installed (e.g. apt install ros-$ROS_DISTRO-rviz2): "
            "starting the node without RViz"
        )
        return [node]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", os.path.join(share, "config", "page4d.rviz")],
        parameters=[{"use_sim_time": overrides["use_sim_time"]}],
        output="log",
    )
    return [node, rviz]


def generate_launch_description():
    """Declare the arguments, keep Hugging Face offline, start the node (and RViz)."""
    declarations = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription(
        [
            *declarations,
            SetEnvironmentVariable("HF_HUB_OFFLINE", "1"),
            OpaqueFunction(function=_launch_nodes),
        ]
    )
