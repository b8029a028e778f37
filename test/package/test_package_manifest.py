"""package.xml is a valid format-3 ament_python manifest that declares exactly what the code imports."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from catkin_pkg.package import parse_package

REPO_ROOT = Path(__file__).resolve().parents[2]

# Third-party Python modules that come from rosdep keys on a ROS machine.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "PIL": "python3-pil",
    "yaml": "python3-yaml",
    "torch": "python3-torch",
    "cv2": "python3-opencv",
}
# Modules a ROS user installs with pip (no rosdep key we can rely on); they must be in setup.py instead.
PIP_ONLY = {"safetensors", "rosbags", "tqdm", "matplotlib", "setuptools"}
# Used without a direct import: the Header of every published message, its Time stamp, and the lifecycle
# services that rclpy.lifecycle serves for the node.
USED_INDIRECTLY = {"std_msgs", "builtin_interfaces", "lifecycle_msgs"}


# ROS packages that the code uses but that PyPI does not provide (so the venv's ament index lacks them).
ROS_NOT_ON_PYPI = {"launch", "launch_ros", "tf2_ros", "message_filters"}


def _is_ros_package(module: str) -> bool:
    """True for ROS packages: those in the environment's ament index, plus the few PyPI lacks."""
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    return module in ROS_NOT_ON_PYPI or (index / module).is_file()


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    sources = list((REPO_ROOT / "page4d_ros").rglob("*.py")) + list((REPO_ROOT / "launch").glob("*.py"))
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif (  # ROS libraries every ROS install has but PyPI lacks: optional_ros_module("tf2_ros")
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "optional_ros_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                modules.add(str(node.args[0].value).split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"page4d_ros"}


def _manifest():
    package = parse_package(str(REPO_ROOT / "package.xml"))
    package.validate()
    return package


def test_manifest_is_valid_format3_ament_python():
    """catkin_pkg (the parser rosdep and colcon use) accepts it; license file and build type are right."""
    package = _manifest()
    assert package.package_format == 3
    assert package.name == "page4d_ros"
    assert package.licenses == ["Apache-2.0"]
    assert (REPO_ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert package.get_build_type() == "ament_python"
    test_depends = [dep.name for dep in package.test_depends]
    assert test_depends == ["python3-pytest", "sensor_msgs_py", "tf_transformations"]
    setup_py = (REPO_ROOT / "setup.py").read_text()
    assert re.search(r'version="([^"]+)"', setup_py).group(1) == package.version


def test_every_imported_ros_package_is_an_exec_depend_and_nothing_more():
    """ROS packages and rosdep libraries the code and launch file use are declared, and only those."""
    package = _manifest()
    declared = {dep.name for dep in package.exec_depends}
    imported = _imported_top_level_modules()
    ros_imports = {m for m in imported if _is_ros_package(m)}
    expected = ros_imports | USED_INDIRECTLY | {ROSDEP_KEYS[m] for m in imported if m in ROSDEP_KEYS}
    unknown = imported - ros_imports - set(ROSDEP_KEYS) - PIP_ONLY
    assert not unknown, f"imported modules with no declared source: {sorted(unknown)}"
    missing, unused = sorted(expected - declared), sorted(declared - expected)
    assert declared == expected, f"missing exec_depend: {missing}; declared but unused: {unused}"


def test_pip_only_modules_are_in_setup_py():
    """Libraries without a rosdep key are installable through setup.py (install_requires or an extra)."""
    setup_py = (REPO_ROOT / "setup.py").read_text()
    pip_names = {
        "safetensors": "safetensors",
        "rosbags": "rosbags",
        "tqdm": "tqdm",
        "matplotlib": "matplotlib",
    }
    for module in _imported_top_level_modules() & set(pip_names):
        assert f'"{pip_names[module]}' in setup_py, f"{module} is imported but not listed in setup.py"
