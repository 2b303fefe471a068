# Source this file to get the workspace environment: venv, colcon install space, ROS settings.
# (install/setup.sh is not `set -u` safe, so this file must not be sourced with -u active.)
_SARM2_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/${ROS_DISTRO}/setup.sh" ]; then
  . "/opt/ros/${ROS_DISTRO}/setup.sh"
fi
export VIRTUAL_ENV="$_SARM2_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
if [ -f "$_SARM2_ROOT/install/setup.sh" ]; then
  COLCON_CURRENT_PREFIX="$_SARM2_ROOT/install" . "$_SARM2_ROOT/install/setup.sh"
  # ament_python console scripts live in install/<pkg>/lib/<pkg> (what `ros2 run` searches);
  # put them on PATH so `reward_node`, `record_demos`, ... work as plain commands.
  for _sarm2_bin in "$_SARM2_ROOT"/install/*/lib/*/; do
    case ":$PATH:" in *":${_sarm2_bin%/}:"*) ;; *) PATH="${_sarm2_bin%/}:$PATH" ;; esac
  done
  unset _sarm2_bin
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Fast DDS's shared-memory transport stalled reliable camera topics here for ~2.5 s at a time
# (a lost sample waits for the writer's next heartbeat), so the reward node saw frames in bursts
# and dropped them. UDP over loopback delivers them evenly. Set DEFAULT to get SHM back.
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-UDPv4}"
# MuJoCo's headless backend: EGL when available, else software OSMesa.
if [ -z "${MUJOCO_GL:-}" ]; then
  if ldconfig -p 2>/dev/null | grep -q 'libEGL.so'; then export MUJOCO_GL=egl; else export MUJOCO_GL=osmesa; fi
fi
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-$MUJOCO_GL}"
unset _SARM2_ROOT
