"""Settings of the simulated-arm node, its default topic names, and command checking (ROS-free).

The node's parameters map one to one onto ``SimNodeConfig``; the topic names are the defaults
(remap them like any ROS topic). Bag topics shared with the recorders come from
``sarm2_common.bag_io`` so a recorded rollout and a demonstration use the same names.
"""

from dataclasses import dataclass, field
import math

import numpy as np
from sarm2_common.bag_io import ACTION_TOPIC, GROUND_TRUTH_TOPIC, image_topic, JOINT_STATES_TOPIC

from sarm2_sim.sim_arm import ACTION_SIZE, SimArmConfig

TWIST_TOPIC = '/servo_node/delta_twist_cmds'
GRIPPER_TOPIC = '/gripper/command'
RAW_ACTION_TOPIC = ACTION_TOPIC
JOINT_STATE_TOPIC = JOINT_STATES_TOPIC
EVALUATION_TOPIC = GROUND_TRUTH_TOPIC
RESET_SERVICE = '/sim/reset'
SET_TASK_SERVICE = '/sim/set_task'
CLOCK_TOPIC = '/clock'
DIAGNOSTICS_TOPIC = '/diagnostics'
BASE_FRAME = 'world'


def camera_image_topic(camera: str) -> str:
    """Return the image topic of ``camera``."""
    return image_topic(camera)


def camera_info_topic(camera: str) -> str:
    """Return the CameraInfo topic of ``camera`` (next to its image topic)."""
    return image_topic(camera).rsplit('/', 1)[0] + '/camera_info'


def camera_frame(camera: str) -> str:
    """Return the optical frame id of ``camera`` (REP-103 optical frame convention)."""
    return f'{camera}_optical_frame'


@dataclass
class SimNodeConfig:
    """Parameters of the sim node (see config/sim_node.yaml for their documentation)."""

    task: str = 'pick-place-v3'
    cameras: tuple[str, ...] = ('corner',)
    image_size: int = 64
    seed: int = 0
    sim_rate: float = 80.0
    camera_rate: float = 20.0
    joint_state_rate: float = 50.0
    command_timeout: float = 0.5
    max_linear_speed: float = 0.5
    publish_clock: bool = False
    arm: SimArmConfig = field(init=False, repr=False)

    def __post_init__(self):
        for name in ('sim_rate', 'camera_rate', 'joint_state_rate'):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.1 <= value <= 1000.0):
                raise ValueError(f'{name} must be within 0.1..1000 Hz, got {value}')
        if not (math.isfinite(self.command_timeout) and self.command_timeout > 0.0):
            raise ValueError(f'command_timeout must be > 0 s, got {self.command_timeout}')
        if not (math.isfinite(self.max_linear_speed) and self.max_linear_speed > 0.0):
            raise ValueError(f'max_linear_speed must be > 0 m/s, got {self.max_linear_speed}')
        self.arm = SimArmConfig(task=self.task, cameras=tuple(self.cameras),
                                image_size=int(self.image_size), seed=int(self.seed),
                                max_steps=np.iinfo(np.int32).max)


@dataclass(frozen=True)
class CheckedCommand:
    """A command after checking: the values to apply (None: rejected) and what was wrong."""

    values: np.ndarray | None
    problem: str = ''

    @property
    def clamped(self) -> bool:
        return self.values is not None and bool(self.problem)


def check_command(values, limit: float, size: int) -> CheckedCommand:
    """Reject non-finite or wrongly sized commands; clamp magnitudes above ``limit``.

    Vectors are scaled down as a whole (the direction is kept), so a velocity twice too fast
    becomes the fastest allowed velocity along the same line.
    """
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != size:
        return CheckedCommand(None, f'expected {size} values, got {array.size}')
    if not np.all(np.isfinite(array)):
        return CheckedCommand(None, f'non-finite values {array.tolist()}')
    peak = float(np.max(np.abs(array))) if size else 0.0
    if peak > limit:
        return CheckedCommand(array * (limit / peak),
                              f'magnitude {peak:.3g} above {limit:.3g}, clamped')
    return CheckedCommand(array)


def twist_to_action(linear_velocity: np.ndarray, arm_max_speed: float) -> np.ndarray:
    """Convert a checked linear velocity (m/s, base frame) to the arm's normalized xyz action."""
    return np.asarray(linear_velocity, dtype=np.float64) / arm_max_speed


RAW_ACTION_SIZE = ACTION_SIZE
