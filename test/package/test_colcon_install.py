"""colcon builds the package as a ROS 2 workspace would; its install tree has what `ros2 launch/run` need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COLCON = Path(sys.executable).with_name("colcon")


@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory) -> Path:
    """Build the package with colcon into a temporary install base and return the package prefix."""
    if not COLCON.exists():
        pytest.skip(f"colcon is not installed next to {sys.executable} (pip install colcon-core colcon-ros)")
    work = tmp_path_factory.mktemp("colcon")
    result = subprocess.run(
        [
            str(COLCON),
            "--log-base",
            str(work / "log"),
            "build",
            "--paths",
            str(REPO_ROOT),
            "--build-base",
            str(work / "build"),
            "--install-base",
            str(work / "install"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "install" / "page4d_ros"


def test_share_folder_holds_manifest_launch_and_config(install_prefix):
    """share/page4d_ros has package.xml, every launch and config file, and the ament index marker."""
    share = install_prefix / "share" / "page4d_ros"
    assert (share / "package.xml").read_bytes() == (REPO_ROOT / "package.xml").read_bytes()
    assert (install_prefix / "share" / "ament_index" / "resource_index" / "packages" / "page4d_ros").is_file()
    sources = sorted(p.name for p in (REPO_ROOT / "launch").glob("*.launch.py"))
    assert "page4d.launch.py" in sources
    assert sorted(p.name for p in (share / "launch").iterdir()) == sources
    config_sources = sorted(
        p.name for p in (REPO_ROOT / "config").iterdir() if p.suffix in {".yaml", ".rviz", ".xml"}
    )
    assert {"page4d.yaml", "page4d.rviz"} <= set(config_sources)
    assert sorted(p.name for p in (share / "config").iterdir()) == config_sources


def test_ament_index_finds_share_and_executables(install_prefix):
    """ament_index_python resolves the share folder; executables sit in lib/page4d_ros for `ros2 run`."""
    code = (
        "from ament_index_python.packages import get_package_share_directory, get_package_prefix;"
        "print(get_package_share_directory('page4d_ros'));print(get_package_prefix('page4d_ros'))"
    )
    env = {**os.environ, "AMENT_PREFIX_PATH": str(install_prefix)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    share, prefix = out.stdout.split()
    assert Path(share) == install_prefix / "share" / "page4d_ros"
    assert Path(prefix) == install_prefix
    for name in ("page4d_node", "page4d-bag", "page4d-synth", "page4d-eval", "page4d-train", "page4d-demo"):
        executable = install_prefix / "lib" / "page4d_ros" / name
        assert executable.is_file() and os.access(executable, os.X_OK), name
