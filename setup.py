"""ament_python packaging of page4d_ros (also pip-installable for development and tests)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "page4d_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "benchmarks", "benchmarks.*"]),
    package_data={package_name: ["models/*.safetensors", "models/*.md", "models/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        (
            "share/" + package_name + "/config",
            glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"),
        ),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy",
        "scipy",
        "opencv-python-headless",
        "pillow",
        "pyyaml",
        "safetensors",
        "torch>=2.4",
    ],
    extras_require={
        "tools": ["rosbags>=0.10", "tqdm", "matplotlib"],
        "test": [
            "pytest",
            "pytest-timeout",
            "ruff",
            "catkin_pkg",
            "colcon-core",
            "colcon-ros",
            "colcon-bash",
            "rosbags>=0.10",
            "tqdm",
            "matplotlib",
        ],
    },
    zip_safe=True,
    maintainer="page4d_ros maintainers",
    maintainer_email="maintainers@page4d-ros.dev",
    description="ROS 2 node running PAGE-4D / VGGT on camera windows: TF poses, depth, clouds, masks.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "page4d_node = page4d_ros.ros.node:main",
            "page4d-bag = page4d_ros.tools.bag:main",
            "page4d-synth = page4d_ros.tools.synth:main",
            "page4d-eval = page4d_ros.tools.evaluate:main",
            "page4d-train = page4d_ros.tools.train:main",
            "page4d-demo = page4d_ros.tools.demo:main",
        ],
    },
)
