"""Settings of the simulated-arm node, its default topic names, and command checking (ROS-free).

The node's parameters map one to one onto ``SimNodeConfig``; the topic names are the defaults
(remap them like any ROS topic). Bag topics shared with the recorders come from
``sarm2_common.bag_io`` so a recorded rollout and a demonstration use the same names.
"""

from dataclasses import dataclass, field

import numpy as np
from sarm2_common.node_parameters import AT_STARTUP, check_fields, parameter, parameter_names
from sarm2_common.bag_io import ACTION_TOPIC, GROUND_TRUTH_TOPIC
from sarm2_common.topics import image_topic, JOINT_STATES_TOPIC

from sarm2_sim.sim_arm import (ACTION_SIZE, CAMERAS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE,
                               SimArmConfig)

TWIST_TOPIC = '/servo_node/delta_twist_cmds'
GRIPPER_TOPIC = '/gripper/command'
RAW_ACTION_TOPIC = ACTION_TOPIC
JOINT_STATE_TOPIC = JOINT_STATES_TOPIC
EVALUATION_TOPIC = GROUND_TRUTH_TOPIC
RESET_SERVICE = '/sim/reset'
SET_TASK_SERVICE = '/sim/set_task'
CLOCK_TOPIC = '/clock'
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
    """Parameters of the sim node (sarm2_bringup/config/sim_node.yaml sets them by example)."""

    task: str = parameter('pick-place-v3', 'catalogue task at startup (change: /sim/set_task)',
                          applies=AT_STARTUP)
    cameras: tuple[str, ...] = parameter(('corner',), 'cameras to publish, from: '
                                         + ', '.join(CAMERAS), choices=CAMERAS,
                                         applies=AT_STARTUP)
    image_size: int = parameter(64, 'square image size, px', low=MIN_IMAGE_SIZE,
                                high=MAX_IMAGE_SIZE, applies=AT_STARTUP)
    seed: int = parameter(0, 'seed of the first episode; later resets draw from it',
                          applies=AT_STARTUP)
    sim_rate: float = parameter(20.0, 'simulation steps per wall-clock second (80 = real time; '
                                'the policy takes one action per step)', low=0.1, high=1000.0,
                                applies=AT_STARTUP)
    camera_rate: float = parameter(20.0, 'images per second per camera', low=0.1, high=1000.0,
                                   applies=AT_STARTUP)
    joint_state_rate: float = parameter(40.0, 'joint state messages per second', low=0.1,
                                        high=1000.0, applies=AT_STARTUP)
    command_timeout: float = parameter(0.5, 's after which a velocity command is stale (arm '
                                       'stops)', low=0.01, high=10.0)
    max_linear_speed: float = parameter(0.8, 'm/s; faster twist commands are clamped and '
                                        'reported', low=0.01, high=0.8)
    publish_clock: bool = parameter(False, 'publish simulated time on /clock (for '
                                    'use_sim_time)', applies=AT_STARTUP)
    arm: SimArmConfig = field(init=False, repr=False)

    def __post_init__(self):
        check_fields(self)
        self.arm = SimArmConfig(task=self.task, cameras=tuple(self.cameras),
                                image_size=int(self.image_size), seed=int(self.seed),
                                max_steps=np.iinfo(np.int32).max)

    @classmethod
    def names(cls) -> list[str]:
        """Parameter names, in declaration order."""
        return parameter_names(cls)


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
