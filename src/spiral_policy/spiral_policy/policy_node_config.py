"""Configuration of the policy node, ROS-free: the node's parameters map one-to-one onto it.

The node validates every parameter change by building a ``PolicyNodeConfig`` with the new value,
so the YAML file (config/policy_node.yaml), ROS parameters and tests share one set of rules.
``PARAMETER_DOCS`` are the parameter descriptions. The ``safety_*`` parameters become the
``SafetyConfig`` every command passes through.
"""

from dataclasses import dataclass, fields

from spiral_policy.episode_runner import COMMAND_INTERFACES, CommandMapping, EpisodeLimits
from spiral_policy.safety import SafetyConfig
from spiral_policy.vla import ChunkExecutorConfig, EXECUTION_MODES

POLICY_TYPES = ('compact_vla', 'openpi')
SUCCESS_SOURCES = ('reward', 'sim', 'none')

PARAMETER_DOCS = {
    'policy_type': 'compact_vla (checkpoint directory) or openpi (remote websocket server)',
    'checkpoint': 'compact VLA checkpoint directory (config.json + model.safetensors)',
    'residual_checkpoint': 'SPIRAL residual directory (spiral_update --out); empty: base policy '
                           'only. Runs base + residual with best-of-k candidates by Q',
    'openpi_host': 'openpi policy server host',
    'openpi_port': 'openpi policy server port',
    'openpi_image_keys': 'camera=server_key pairs, e.g. corner=observation/image',
    'openpi_state_key': 'server key of the joint state',
    'openpi_prompt_key': 'server key of the instruction',
    'openpi_image_size': 'pixels, square image size sent to the server',
    'openpi_chunk_size': 'leading actions of the server horizon to execute',
    'cameras': 'camera names in policy order',
    'camera_topics': 'image topic per camera; empty: /camera/<name>/image_raw',
    'joint_states_topic': 'sensor_msgs/JointState topic (policy state)',
    'joint_names': 'joints taken from joint states, in policy order; empty: message order',
    'ee_pose_topic': 'geometry_msgs/PoseStamped end-effector position (workspace box)',
    'reward_topic': 'sarm2_msgs/StageReward topic (success probability, dense reward)',
    'success_source': 'reward: reward model success probability; sim: simulator ground truth '
                      '(simulation only); none: run to the step/time limit',
    'success_threshold': 'success probability that ends an episode as a success',
    'ground_truth_topic': 'sarm2_msgs/SimGroundTruth topic (success_source sim only)',
    'command_interface': 'twist (geometry_msgs/TwistStamped), joint_trajectory '
                         '(trajectory_msgs/JointTrajectory) or joint_array '
                         '(std_msgs/Float64MultiArray, ros2_control forward controller)',
    'command_topic': 'topic of the arm command',
    'gripper_topic': 'std_msgs/Float64 gripper command topic; empty: no gripper',
    'command_frame_id': 'frame_id of TwistStamped commands',
    'velocity_scale': 'm/s per unit of a twist action (sim: SimArm.max_linear_speed)',
    'command_joint_names': 'joints of joint commands, in action order; they must lead the '
                           'policy state (joint_names)',
    'control_rate': 'Hz, control loop rate',
    'execution_mode': 'chunk (execute chunks open loop) or ensemble (temporal ensembling)',
    'execute_steps': 'actions executed per chunk in chunk mode; 0: the whole chunk',
    'ensemble_decay': 'temporal ensembling weight decay per step of prediction age',
    'max_steps': 'default control steps per episode (a goal may override)',
    'time_limit': 's, default episode time limit (a goal may override)',
    'start_timeout': 's to wait for fresh observations after the reset at episode start',
    'reset_service': 'sarm2_msgs/ResetEpisode service called at episode start; empty: none',
    'set_task_service': 'sarm2_msgs/SetTask service called at episode start; empty: none',
    'bag_directory': 'directory for rollout bags (one per episode)',
    'flush_period': 's, longest time recorded data waits before reaching the disk',
    'estop_topic': 'std_msgs/Bool topic; true latches the e-stop until ~/reset_estop',
    'safety_joint_lower': 'rad, lower joint position limits (joint interfaces)',
    'safety_joint_upper': 'rad, upper joint position limits (joint interfaces)',
    'safety_max_joint_velocity': 'rad/s, one value or one per joint',
    'safety_max_joint_step': 'rad, largest change of a joint target per command',
    'safety_max_cartesian_speed': 'm/s, largest end-effector linear speed',
    'safety_workspace_min': 'm, x y z lower corner of the workspace box (command frame)',
    'safety_workspace_max': 'm, x y z upper corner of the workspace box',
    'safety_enforce_workspace': 'hold unless the end-effector position is known and in the box',
    'safety_gripper_min': 'lowest gripper command',
    'safety_gripper_max': 'highest gripper command',
    'safety_watchdog_timeout': 's, observation age beyond which the arm holds position',
    'diagnostics_period': 's between /diagnostics messages',
    'autostart': 'configure and activate at startup instead of waiting for lifecycle commands',
}
READ_ONLY = ('autostart', 'diagnostics_period')
# Everything else takes effect at the next configure, except these (next episode):
PER_EPISODE = ('max_steps', 'time_limit', 'success_source', 'success_threshold',
               'execution_mode', 'execute_steps', 'ensemble_decay', 'bag_directory',
               'flush_period', 'start_timeout')


@dataclass
class PolicyNodeConfig:
    policy_type: str = 'compact_vla'
    checkpoint: str = ''
    residual_checkpoint: str = ''
    openpi_host: str = 'localhost'
    openpi_port: int = 8000
    openpi_image_keys: tuple[str, ...] = ('corner=observation/image',)
    openpi_state_key: str = 'observation/state'
    openpi_prompt_key: str = 'prompt'
    openpi_image_size: int = 224
    openpi_chunk_size: int = 10
    cameras: tuple[str, ...] = ('corner',)
    camera_topics: tuple[str, ...] = ()
    joint_states_topic: str = '/joint_states'
    joint_names: tuple[str, ...] = ()
    ee_pose_topic: str = '/arm/ee_pose'
    reward_topic: str = '/sarm2/stage_reward'
    success_source: str = 'reward'
    success_threshold: float = 0.9
    ground_truth_topic: str = '/sim/ground_truth'
    command_interface: str = 'twist'
    command_topic: str = '/arm/cartesian_velocity'
    gripper_topic: str = '/gripper/command'
    command_frame_id: str = 'world'
    velocity_scale: float = 0.8
    command_joint_names: tuple[str, ...] = ()
    control_rate: float = 10.0
    execution_mode: str = 'chunk'
    execute_steps: int = 0
    ensemble_decay: float = 0.01
    max_steps: int = 200
    time_limit: float = 60.0
    start_timeout: float = 5.0
    reset_service: str = ''
    set_task_service: str = ''
    bag_directory: str = 'rollouts'
    flush_period: float = 1.0
    estop_topic: str = '/estop'
    safety_joint_lower: tuple[float, ...] = ()
    safety_joint_upper: tuple[float, ...] = ()
    safety_max_joint_velocity: tuple[float, ...] = (1.0,)
    safety_max_joint_step: float = 0.05
    safety_max_cartesian_speed: float = 0.25
    safety_workspace_min: tuple[float, ...] = (-1.0, -1.0, 0.0)
    safety_workspace_max: tuple[float, ...] = (1.0, 1.0, 1.5)
    safety_enforce_workspace: bool = True
    safety_gripper_min: float = -1.0
    safety_gripper_max: float = 1.0
    safety_watchdog_timeout: float = 0.5
    diagnostics_period: float = 1.0
    autostart: bool = False

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        if self.policy_type not in POLICY_TYPES:
            raise ValueError(f'policy_type {self.policy_type!r}; choose one of {POLICY_TYPES}')
        if self.success_source not in SUCCESS_SOURCES:
            raise ValueError(f'success_source {self.success_source!r}; choose one of '
                             f'{SUCCESS_SOURCES}')
        if self.command_interface not in COMMAND_INTERFACES:
            raise ValueError(f'command_interface {self.command_interface!r}; choose one of '
                             f'{COMMAND_INTERFACES}')
        if self.execution_mode not in EXECUTION_MODES:
            raise ValueError(f'execution_mode {self.execution_mode!r}; choose one of '
                             f'{EXECUTION_MODES}')
        if not self.cameras:
            raise ValueError('cameras: at least one camera')
        if self.camera_topics and len(self.camera_topics) != len(self.cameras):
            raise ValueError(f'camera_topics has {len(self.camera_topics)} entries for '
                             f'{len(self.cameras)} cameras')
        if not self.control_rate > 0 or not self.flush_period > 0 or not self.start_timeout > 0:
            raise ValueError('control_rate, flush_period and start_timeout must be > 0')
        if not self.command_topic:
            raise ValueError('command_topic must not be empty')
        if self.safety_enforce_workspace and self.command_interface == 'twist' \
                and not self.ee_pose_topic:
            raise ValueError('safety_enforce_workspace needs ee_pose_topic (the end-effector '
                             'position); set it, or disable the workspace box explicitly')
        for pair in self.openpi_image_keys:
            if '=' not in pair:
                raise ValueError(f'openpi_image_keys entry {pair!r} is not camera=key')
        # Building the parts validates them (and names the offending value).
        self.safety()
        self.mapping()
        self.execution()
        self.limits()

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate

    def topic_of(self, camera: str) -> str:
        """Image topic of ``camera``."""
        if self.camera_topics:
            return self.camera_topics[self.cameras.index(camera)]
        return f'/camera/{camera}/image_raw'

    def safety(self) -> SafetyConfig:
        return SafetyConfig(
            joint_lower=self.safety_joint_lower, joint_upper=self.safety_joint_upper,
            max_joint_velocity=self.safety_max_joint_velocity,
            max_joint_step=self.safety_max_joint_step,
            max_cartesian_speed=self.safety_max_cartesian_speed,
            workspace_min=self.safety_workspace_min, workspace_max=self.safety_workspace_max,
            enforce_workspace=self.safety_enforce_workspace and self.command_interface == 'twist',
            gripper_min=self.safety_gripper_min, gripper_max=self.safety_gripper_max,
            watchdog_timeout=self.safety_watchdog_timeout)

    def mapping(self) -> CommandMapping:
        mapping = CommandMapping(self.command_interface, self.velocity_scale,
                                 len(self.command_joint_names), bool(self.gripper_topic))
        if mapping.interface != 'twist' and len(self.safety_joint_lower) != mapping.num_joints:
            raise ValueError(f'{mapping.num_joints} command_joint_names but '
                             f'{len(self.safety_joint_lower)} safety joint limits')
        # The safety filter reads the measured joint positions from the front of the policy
        # state, so the commanded joints must lead it.
        if mapping.interface != 'twist' and self.joint_names and \
                self.joint_names[:mapping.num_joints] != self.command_joint_names:
            raise ValueError(f'command_joint_names {list(self.command_joint_names)} must be the '
                             f'first entries of joint_names {list(self.joint_names)}')
        return mapping

    def execution(self) -> ChunkExecutorConfig:
        return ChunkExecutorConfig(self.execution_mode, self.execute_steps, self.ensemble_decay)

    def limits(self, max_steps: int = 0, time_limit: float = 0.0) -> EpisodeLimits:
        """Episode limits; a goal's non-zero values override the defaults."""
        return EpisodeLimits(max_steps or self.max_steps, time_limit or self.time_limit,
                             self.success_threshold)

    def openpi_keys(self) -> dict[str, str]:
        return dict(pair.split('=', 1) for pair in self.openpi_image_keys)

    def stream_names(self) -> tuple[str, ...]:
        """Observation streams the watchdog requires."""
        streams = tuple(f'camera/{camera}' for camera in self.cameras) + ('joint_states',)
        if self.safety().enforce_workspace:
            streams += ('ee_pose',)
        return streams
