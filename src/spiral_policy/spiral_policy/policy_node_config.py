"""Configuration of the policy node, ROS-free: the node's parameters map one-to-one onto it.

Each field is a parameter (``sarm2_common.node_parameters.parameter``: description, range or
allowed values, when a change applies); the node declares them all from this class and validates
every change by building a ``PolicyNodeConfig`` with the new value, so the YAML file
(sarm2_bringup/config/policy_node.yaml), ROS parameters and tests share one set of rules. The
``safety_*`` parameters become the ``SafetyConfig`` every command passes through.
"""

from dataclasses import dataclass

from sarm2_common.node_parameters import (AT_STARTUP, check_fields, NEXT_EPISODE, ON_CONFIGURE,
                                          parameter, parameter_names)
from sarm2_common.topics import image_topic, SENSOR_RELIABILITIES
from spiral_policy.episode_runner import COMMAND_INTERFACES, CommandMapping, EpisodeLimits
from spiral_policy.safety import SafetyConfig
from spiral_policy.vla import ChunkExecutorConfig, EXECUTION_MODES

POLICY_TYPES = ('compact_vla', 'openpi')
SUCCESS_SOURCES = ('reward', 'sim', 'none')
OBSERVATION_STAMPS = ('header', 'receive')

@dataclass
class PolicyNodeConfig:
    """The policy node's parameters (config/policy_node.yaml documents them by example)."""

    policy_type: str = parameter('compact_vla', 'compact_vla (checkpoint directory) or openpi '
                                 '(remote websocket server)', choices=POLICY_TYPES,
                                 applies=ON_CONFIGURE)
    checkpoint: str = parameter('', 'compact VLA checkpoint directory (config.json + '
                                'model.safetensors)', applies=ON_CONFIGURE)
    residual_checkpoint: str = parameter('', 'SPIRAL residual directory (spiral_update --out); '
                                         'empty: base policy only. Runs base + residual with '
                                         'best-of-k candidates by Q', applies=ON_CONFIGURE)
    torch_threads: int = parameter(1, 'CPU threads for inference (a batch of one small model: '
                                   'more threads mostly spin-wait and stall the control loop '
                                   'on a small machine); 0: torch default', low=0, high=256,
                                   applies=ON_CONFIGURE)
    openpi_host: str = parameter('localhost', 'openpi policy server host',
                                 applies=ON_CONFIGURE)
    openpi_port: int = parameter(8000, 'openpi policy server port', low=1, high=65535,
                                 applies=ON_CONFIGURE)
    openpi_image_keys: tuple[str, ...] = parameter(
        ('corner=observation/image',), 'camera=server_key pairs, e.g. corner=observation/image',
        applies=ON_CONFIGURE)
    openpi_state_key: str = parameter('observation/state', 'server key of the joint state',
                                      applies=ON_CONFIGURE)
    openpi_prompt_key: str = parameter('prompt', 'server key of the instruction',
                                       applies=ON_CONFIGURE)
    openpi_image_size: int = parameter(224, 'pixels, square image size sent to the server',
                                       low=16, high=4096, applies=ON_CONFIGURE)
    openpi_chunk_size: int = parameter(10, 'leading actions of the server horizon to execute',
                                       low=1, high=1000, applies=ON_CONFIGURE)
    cameras: tuple[str, ...] = parameter(('corner',), 'camera names in policy order',
                                         applies=ON_CONFIGURE)
    camera_topics: tuple[str, ...] = parameter((), 'image topic per camera; empty: '
                                               '/camera/<name>/image_raw', applies=ON_CONFIGURE)
    joint_states_topic: str = parameter('/joint_states', 'sensor_msgs/JointState topic (policy '
                                        'state)', applies=ON_CONFIGURE)
    joint_names: tuple[str, ...] = parameter((), 'joints taken from joint states, in policy '
                                             'order; empty: message order',
                                             applies=ON_CONFIGURE)
    sensor_qos_reliability: str = parameter('best_effort', 'camera/joint/pose subscriptions: '
                                            'best_effort (any driver) or reliable (large '
                                            'frames: needs a reliable publisher)',
                                            choices=SENSOR_RELIABILITIES, applies=ON_CONFIGURE)
    ee_pose_topic: str = parameter('/arm/ee_pose', 'geometry_msgs/PoseStamped end-effector '
                                   'position (workspace box)', applies=ON_CONFIGURE)
    reward_topic: str = parameter('/sarm2/stage_reward', 'sarm2_msgs/StageReward topic (success '
                                  'probability, dense reward)', applies=ON_CONFIGURE)
    success_source: str = parameter('reward', 'reward: reward model success probability; sim: '
                                    'simulator ground truth (simulation only); none: run to the '
                                    'step/time limit', choices=SUCCESS_SOURCES,
                                    applies=ON_CONFIGURE)
    success_threshold: float = parameter(0.9, 'success probability that counts as success '
                                         '(success_source reward)', low=0.01, high=1.0,
                                         applies=NEXT_EPISODE)
    success_frames: int = parameter(3, 'consecutive rewarded frames at or above '
                                    'success_threshold that end an episode as a success (one '
                                    'spike is not a success)', low=1, high=1000,
                                    applies=NEXT_EPISODE)
    success_calibration: str = parameter('', "reward checkpoint directory (the reward node's) "
                                         'whose success-head calibration on labelled rollouts '
                                         "sets the threshold of each episode: the task's own, "
                                         'else the pooled one, held at least the frames it was '
                                         'calibrated for; empty, or a checkpoint never '
                                         'calibrated: success_threshold (success_source reward)',
                                         applies=NEXT_EPISODE)
    ground_truth_topic: str = parameter('/sim/ground_truth', 'sarm2_msgs/SimGroundTruth topic '
                                        '(success_source sim only)', applies=ON_CONFIGURE)
    command_interface: str = parameter('twist', 'twist (geometry_msgs/TwistStamped), '
                                       'joint_trajectory (trajectory_msgs/JointTrajectory) or '
                                       'joint_array (std_msgs/Float64MultiArray, ros2_control '
                                       'forward controller)', choices=COMMAND_INTERFACES,
                                       applies=ON_CONFIGURE)
    command_topic: str = parameter('/arm/cartesian_velocity', 'topic of the arm command',
                                   applies=ON_CONFIGURE)
    gripper_topic: str = parameter('/gripper/command', 'std_msgs/Float64 gripper command topic; '
                                   'empty: no gripper', applies=ON_CONFIGURE)
    command_frame_id: str = parameter('world', 'frame_id of TwistStamped commands',
                                      applies=ON_CONFIGURE)
    velocity_scale: float = parameter(0.8, 'm/s per unit of a twist action (sim: '
                                      'SimArm.max_linear_speed)', low=0.001, high=10.0,
                                      applies=ON_CONFIGURE)
    command_joint_names: tuple[str, ...] = parameter(
        (), 'joints of joint commands, in action order; they must lead the policy state '
        '(joint_names)', applies=ON_CONFIGURE)
    control_rate: float = parameter(10.0, 'Hz, control loop rate', low=0.1, high=1000.0,
                                    applies=ON_CONFIGURE)
    execution_mode: str = parameter('chunk', 'chunk (execute chunks open loop) or ensemble '
                                    '(temporal ensembling)', choices=EXECUTION_MODES,
                                    applies=NEXT_EPISODE)
    execute_steps: int = parameter(0, 'actions executed per chunk in chunk mode; 0: the whole '
                                   'chunk', low=0, high=10000, applies=NEXT_EPISODE)
    ensemble_decay: float = parameter(0.01, 'temporal ensembling weight decay per step of '
                                      'prediction age', low=0.0, high=10.0,
                                      applies=NEXT_EPISODE)
    max_steps: int = parameter(200, 'default control steps per episode (a goal may override)',
                               low=1, high=10_000_000, applies=NEXT_EPISODE)
    time_limit: float = parameter(60.0, 's, default episode time limit (a goal may override)',
                                  low=0.01, high=1e6, applies=NEXT_EPISODE)
    start_timeout: float = parameter(5.0, 's to wait for fresh observations after the reset '
                                     'at episode start', low=0.01, high=3600.0,
                                     applies=NEXT_EPISODE)
    reset_service: str = parameter('', 'sarm2_msgs/ResetEpisode service called at episode '
                                   'start; empty: none', applies=ON_CONFIGURE)
    set_task_service: str = parameter('', 'sarm2_msgs/SetTask service called at episode start; '
                                      'empty: none', applies=ON_CONFIGURE)
    bag_directory: str = parameter('rollouts', 'directory for rollout bags (one per episode)',
                                   applies=NEXT_EPISODE)
    flush_period: float = parameter(1.0, 's, longest time recorded data waits before reaching '
                                    'the disk', low=0.01, high=60.0, applies=NEXT_EPISODE)
    estop_topic: str = parameter('/estop', 'std_msgs/Bool topic; true latches the e-stop until '
                                 '~/reset_estop', applies=AT_STARTUP)
    observation_stamps: str = parameter('header', 'how the watchdog dates observations: header '
                                        '(capture stamps, on the node clock) or receive '
                                        '(arrival time; only for drivers whose stamps are on '
                                        'another clock)', choices=OBSERVATION_STAMPS,
                                        applies=ON_CONFIGURE)
    safety_joint_lower: tuple[float, ...] = parameter(
        (), 'rad, lower joint position limits (joint interfaces)', applies=ON_CONFIGURE)
    safety_joint_upper: tuple[float, ...] = parameter(
        (), 'rad, upper joint position limits (joint interfaces)', applies=ON_CONFIGURE)
    safety_max_joint_velocity: tuple[float, ...] = parameter(
        (1.0,), 'rad/s, one value or one per joint', low=1e-4, high=100.0, applies=ON_CONFIGURE)
    safety_max_joint_step: float = parameter(0.05, 'rad, largest change of a joint target per '
                                             'command', low=1e-5, high=1.0,
                                             applies=ON_CONFIGURE)
    safety_max_cartesian_speed: float = parameter(0.25, 'm/s, largest end-effector linear '
                                                  'speed', low=1e-4, high=2.0,
                                                  applies=ON_CONFIGURE)
    safety_workspace_min: tuple[float, ...] = parameter(
        (-1.0, -1.0, 0.0), 'm, x y z lower corner of the workspace box (command frame)',
        low=-100.0, high=100.0, applies=ON_CONFIGURE)
    safety_workspace_max: tuple[float, ...] = parameter(
        (1.0, 1.0, 1.5), 'm, x y z upper corner of the workspace box', low=-100.0, high=100.0,
        applies=ON_CONFIGURE)
    safety_enforce_workspace: bool = parameter(True, 'hold unless the end-effector position is '
                                               'known and in the box', applies=ON_CONFIGURE)
    safety_gripper_min: float = parameter(-1.0, 'lowest gripper command', low=-1000.0,
                                          high=1000.0, applies=ON_CONFIGURE)
    safety_gripper_max: float = parameter(1.0, 'highest gripper command', low=-1000.0,
                                          high=1000.0, applies=ON_CONFIGURE)
    safety_watchdog_timeout: float = parameter(0.5, 's, observation age beyond which the arm '
                                               'holds position', low=0.01, high=5.0,
                                               applies=ON_CONFIGURE)
    diagnostics_period: float = parameter(1.0, 's between /diagnostics messages', low=0.05,
                                          high=60.0, applies=AT_STARTUP)
    autostart: bool = parameter(False, 'configure and activate at startup instead of waiting '
                                'for lifecycle commands', applies=AT_STARTUP)

    def __post_init__(self):
        check_fields(self)
        if not self.cameras:
            raise ValueError('cameras: at least one camera')
        if self.camera_topics and len(self.camera_topics) != len(self.cameras):
            raise ValueError(f'camera_topics has {len(self.camera_topics)} entries for '
                             f'{len(self.cameras)} cameras')
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
        """Parameter names, in declaration order."""
        return parameter_names(cls)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate

    def topic_of(self, camera: str) -> str:
        """Image topic of ``camera``."""
        if self.camera_topics:
            return self.camera_topics[self.cameras.index(camera)]
        return image_topic(camera)

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

    def limits(self, max_steps: int = 0, time_limit: float = 0.0,
               success_threshold: float | None = None,
               success_frames: int | None = None) -> EpisodeLimits:
        """Episode limits; a goal's non-zero values override the defaults."""
        if success_threshold is None:
            success_threshold = self.success_threshold
        if success_frames is None:
            success_frames = self.success_frames
        return EpisodeLimits(max_steps or self.max_steps, time_limit or self.time_limit,
                             success_threshold, success_frames)

    def success_rule_for(self, task: str) -> tuple[float, int, str]:
        """Return the success threshold of an episode of ``task``, its frames, and their origin.

        With ``success_source`` reward and ``success_calibration`` set, the reward checkpoint's
        calibrated threshold (the one the fine-tuning measured on labelled rollouts: a
        head's scores differ between tasks, so one number can be too high for one task and too
        low for another); otherwise ``success_threshold``. The frames are ``success_frames``,
        but never fewer than a calibrated threshold was measured for: holding it for fewer
        frames would let through more failures than the calibration counted (holding it for
        more only lets through fewer). Raises ``ValueError`` naming the file and field when
        the calibration cannot be read.
        """
        if self.success_source == 'reward' and self.success_calibration:
            from sarm2_reward.flywheel import calibrated_success_rule
            calibrated = calibrated_success_rule(self.success_calibration, task)
            if calibrated is None:
                return self.success_threshold, self.success_frames, (
                    f'success_threshold ({self.success_calibration} has no success calibration)')
            if calibrated.frames > self.success_frames:
                return calibrated.threshold, calibrated.frames, (
                    f'{calibrated.origin}, held {calibrated.frames} frames as calibrated '
                    f'(success_frames is {self.success_frames})')
            return calibrated.threshold, self.success_frames, calibrated.origin
        return self.success_threshold, self.success_frames, 'success_threshold'

    def openpi_keys(self) -> dict[str, str]:
        return dict(pair.split('=', 1) for pair in self.openpi_image_keys)

    def stream_names(self) -> tuple[str, ...]:
        """Observation streams the watchdog requires."""
        streams = tuple(f'camera/{camera}' for camera in self.cameras) + ('joint_states',)
        if self.safety().enforce_workspace:
            streams += ('ee_pose',)
        return streams
