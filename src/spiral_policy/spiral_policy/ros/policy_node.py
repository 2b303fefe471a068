"""Policy node: runs a VLA on the arm episode by episode, safely, and records every rollout.

Lifecycle node, starts unconfigured. ``configure`` loads the policy (compact VLA checkpoint or
a connection to an openpi server) and creates the interfaces; ``activate`` starts the control
loop and accepts RunEpisode goals; ``deactivate`` aborts a running episode and stops;
``cleanup`` frees the policy. ``autostart:=true`` does configure + activate at startup.

Each control period (``control_rate``) the loop builds the observation from the latest camera
and joint messages, asks the policy for an action chunk when the chunk is used up (or every step
with temporal ensembling), and publishes only what ``SafetyFilter`` returns (see
``episode_runner``). The e-stop callback takes the same lock as the command path, so once it
returns no motion command can follow until ``~/reset_estop``.

Topics (defaults):
    in   /camera/<name>/image_raw   sensor_msgs/Image, one per camera
         /joint_states              sensor_msgs/JointState
         /arm/ee_pose               geometry_msgs/PoseStamped (workspace box, twist interface)
         /sarm2/stage_reward        sarm2_msgs/StageReward (success probability, dense reward)
         /sim/ground_truth          sarm2_msgs/SimGroundTruth (success_source sim only)
         /estop                     std_msgs/Bool (true latches the e-stop)
    out  /arm/cartesian_velocity    geometry_msgs/TwistStamped | trajectory_msgs/JointTrajectory
                                    | std_msgs/Float64MultiArray (command_interface)
         /gripper/command           std_msgs/Float64
         /episode/status            sarm2_msgs/EpisodeStatus (reliable, transient local)
         ~/base_action, ~/executed_action   std_msgs/Float32MultiArray (policy action units)
         /diagnostics               diagnostic_msgs/DiagnosticArray
Action: ~/run_episode (sarm2_msgs/RunEpisode). Service: ~/reset_estop (std_srvs/Trigger).

Rollout bags (one per episode, ``bag_directory/<episode_id>``) use the demo layout of
``sarm2_common.bag_io`` so ``bag_dataset.read_episodes`` reads them: the camera and joint
messages the policy saw, ``/sim/action`` (executed action after safety, policy units),
``/policy/base_action`` (policy output), ``/policy/instruction``, the published commands under
their topics, rewards, ground truth (sim), ``/episode/status`` and ``/episode/metadata``.
"""

from collections import deque
from dataclasses import dataclass, field, fields
import json
import threading
import time
import typing
import uuid

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from sarm2_msgs.action import RunEpisode
from sarm2_msgs.msg import EpisodeMetadata, EpisodeStatus, SimGroundTruth, StageReward
from sarm2_msgs.srv import ResetEpisode, SetTask
from sarm2_common import bag_io
from sarm2_common.ros.lifecycle import spin_lifecycle_node
from sarm2_common.ros.qos import LATCHED, RELIABLE, SENSOR_DATA
from sarm2_common.catalogue import catalogue_instruction
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32MultiArray, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from .conversions import (float64_array, float_array, gripper_command, image_to_rgb,
                          joint_positions, joint_trajectory_command, twist_command)
from ..compact_vla import CompactVlaPolicy
from ..episode_runner import (ControlCore, END_CANCELED, END_ESTOP, END_FAULT, END_STEP_LIMIT,
                              END_SUCCESS, END_TIME_LIMIT, end_reason, EpisodeLimits,
                              StepOutput)
from ..policy_node_config import PARAMETER_DOCS, PolicyNodeConfig, READ_ONLY
from ..rollout_recorder import RolloutRecorder
from ..safety import SafetyFilter, STOP
from ..vla import PolicyObservation

NS = 1_000_000_000
INSTRUCTION_TOPIC = '/policy/instruction'
STATUS_TOPIC = '/episode/status'
_COMMAND_TYPES = {'twist': TwistStamped, 'joint_trajectory': JointTrajectory,
                  'joint_array': Float64MultiArray}
_STATE_OF_REASON = {END_SUCCESS: EpisodeStatus.SUCCEEDED, END_STEP_LIMIT: EpisodeStatus.FAILED,
                    END_TIME_LIMIT: EpisodeStatus.FAILED}
_PARAMETER_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                    float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {float: ParameterType.PARAMETER_DOUBLE_ARRAY,
                str: ParameterType.PARAMETER_STRING_ARRAY}
# rclpy types an empty list default as a byte array, which then refuses string or double
# overrides: empty array parameters are declared by type only (unset reads back as empty).
_UNSET_ARRAYS = {float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}


def _msgtype(message_class) -> str:
    module = message_class.__module__.split('.')[0]
    return f'{module}/msg/{message_class.__name__}'


@dataclass
class _Episode:
    episode_id: str
    task: str
    instruction: str
    seed: int
    limits: EpisodeLimits
    goal_handle: object
    started: float                              # node clock, s
    steps: int = 0
    episode_return: float = 0.0
    success_probability: float = 0.0
    sim_success: bool = False
    primitive: str = ''
    progress: float = 0.0
    reward: float = 0.0
    reason: str = ''
    bag_path: str = ''
    done: threading.Event = field(default_factory=threading.Event)
    recorded: dict = field(default_factory=dict)     # bag topic -> id of last message written


class PolicyNode(LifecycleNode):
    """Runs RunEpisode goals with a VLA behind the safety filter, recording each rollout."""

    def __init__(self, **kwargs):
        super().__init__('policy_node', **kwargs)
        self._declare_parameters()
        self.config = self._read_config()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self._command_lock = threading.Lock()    # command path vs e-stop
        self._record_lock = threading.Lock()     # the recorder is written from several threads
        self._data_lock = threading.Lock()       # latest observations
        self._policy = None
        self._core: ControlCore | None = None
        self._safety: SafetyFilter | None = None
        self._recorder: RolloutRecorder | None = None
        self._episode: _Episode | None = None
        self._goal_running = False               # accepted goal not finished yet
        self._active = False
        self._estop_reason = ''
        self._latest: dict[str, tuple[object, float]] = {}   # stream -> (message, receive s)
        self._decoded: dict[str, tuple[object, np.ndarray]] = {}
        self._io: list = []
        self._publishers_io: dict = {}
        self._service_clients: dict = {}
        self._action_server = None
        self._timer = None
        self._counts: dict[str, int] = {}
        self._logged_once: set[str] = set()
        self._intervals = deque(maxlen=2000)
        self._inference_times = deque(maxlen=500)
        self._last_tick: float | None = None
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._estop_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        self._status_pub = self.create_publisher(EpisodeStatus, STATUS_TOPIC, LATCHED)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', RELIABLE)
        self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        self.create_subscription(Bool, self.config.estop_topic, self._on_estop, RELIABLE,
                                 callback_group=self._estop_group)
        self.create_service(Trigger, '~/reset_estop', self._on_reset_estop,
                            callback_group=self._estop_group)
        self.get_logger().info('policy node unconfigured')

    # ---- parameters ----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        defaults = PolicyNodeConfig()
        for f in fields(PolicyNodeConfig):
            default = getattr(defaults, f.name)
            if isinstance(default, tuple):
                element = typing.get_args(f.type)[0]
                kind = _ARRAY_TYPES[element]
                default = list(default) if default else _UNSET_ARRAYS[element]
            else:
                kind = _PARAMETER_TYPES[type(default)]
            descriptor = ParameterDescriptor(name=f.name, type=kind,
                                             description=PARAMETER_DOCS[f.name],
                                             read_only=f.name in READ_ONLY)
            self.declare_parameter(f.name, default, descriptor)

    def _read_config(self, overrides: dict | None = None) -> PolicyNodeConfig:
        # Unset (declared-by-type) array parameters read as empty.
        values = {name: self.get_parameter_or(name, Parameter(name, value=[])).value
                  for name in PolicyNodeConfig.names()}
        values.update(overrides or {})
        return PolicyNodeConfig(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in values.items()})

    def _validate_parameters(self, parameters) -> SetParametersResult:
        try:
            self._read_config({p.name: p.value for p in parameters})
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.config = self._read_config()
            safety = SafetyFilter(self.config.safety(), self.config.stream_names())
            policy = self._load_policy()
            core = ControlCore(policy, safety, self.config.mapping(), self.config.execution())
        except (ValueError, OSError, ConnectionError, RuntimeError) as error:
            self.get_logger().error(f'configure failed: {error}')
            self._count('configure_failed')
            return TransitionCallbackReturn.FAILURE
        if self._estop_reason:
            safety.trigger_estop(self._estop_reason)
        self._policy, self._safety, self._core = policy, safety, core
        try:
            self._create_interfaces()
        except Exception as error:  # noqa: BLE001 - rclpy would swallow it silently
            self.get_logger().error(f'configure failed creating interfaces: {error!r}')
            self._destroy_interfaces()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'configured: policy {policy.policy_id}, '
                               f'{self.config.command_interface} on {self.config.command_topic}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._active = True
        self._last_tick = None
        self._timer = self.create_timer(self.config.control_period, self._control_tick,
                                        callback_group=self._control_group)
        self._publish_status(None, EpisodeStatus.IDLE)
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._active = False
        episode = self._episode
        if episode is not None:
            self._finish(episode, f'{END_FAULT}: node deactivated')
            episode.done.wait(5.0)
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        close = getattr(self._policy, 'close', None)
        if close is not None:
            close()
        self._policy = self._core = self._safety = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        episode = self._episode
        if episode is not None:
            self._finish(episode, f'{END_FAULT}: shutdown')
        return TransitionCallbackReturn.SUCCESS

    def _load_policy(self):
        base = self._load_base_policy()
        if not self.config.residual_checkpoint:
            return base
        # SPIRAL: the frozen base plus the learned residual; refuses a residual trained on
        # another base policy.
        from ..spiral.residual_policy import ResidualPolicy

        return ResidualPolicy.from_checkpoint(self.config.residual_checkpoint, base)

    def _load_base_policy(self):
        config = self.config
        if config.policy_type == 'compact_vla':
            if not config.checkpoint:
                raise ValueError('the checkpoint parameter is empty: set it to a compact VLA '
                                 'checkpoint directory')
            return CompactVlaPolicy.from_checkpoint(config.checkpoint)
        from ..adapters.openpi_client import OpenPiClientConfig, OpenPiWebsocketPolicy

        return OpenPiWebsocketPolicy(OpenPiClientConfig(
            host=config.openpi_host, port=config.openpi_port, image_keys=config.openpi_keys(),
            state_key=config.openpi_state_key, prompt_key=config.openpi_prompt_key,
            image_size=config.openpi_image_size, action_dim=config.mapping().action_dim,
            chunk_size=config.openpi_chunk_size))

    def _create_interfaces(self) -> None:
        config = self.config
        group = self._input_group
        for camera in config.cameras:
            self._io.append(self.create_subscription(
                Image, config.topic_of(camera),
                lambda msg, c=camera: self._store(f'camera/{c}', msg), SENSOR_DATA,
                callback_group=group))
        self._io.append(self.create_subscription(
            JointState, config.joint_states_topic, lambda msg: self._store('joint_states', msg),
            SENSOR_DATA, callback_group=group))
        if config.ee_pose_topic:
            self._io.append(self.create_subscription(
                PoseStamped, config.ee_pose_topic, lambda msg: self._store('ee_pose', msg),
                SENSOR_DATA, callback_group=group))
        self._io.append(self.create_subscription(StageReward, config.reward_topic,
                                                 self._on_reward, RELIABLE,
                                                 callback_group=group))
        if config.success_source == 'sim':
            self._io.append(self.create_subscription(SimGroundTruth, config.ground_truth_topic,
                                                     self._on_ground_truth, RELIABLE,
                                                     callback_group=group))
        self._publishers_io = {
            'command': self.create_publisher(_COMMAND_TYPES[config.command_interface],
                                             config.command_topic, RELIABLE),
            'base_action': self.create_publisher(Float32MultiArray, '~/base_action', RELIABLE),
            'executed_action': self.create_publisher(Float32MultiArray, '~/executed_action',
                                                     RELIABLE),
        }
        if config.gripper_topic:
            self._publishers_io['gripper'] = self.create_publisher(Float64, config.gripper_topic,
                                                                   RELIABLE)
        self._service_clients = {}
        for key, kind, name in (('reset', ResetEpisode, config.reset_service),
                                ('set_task', SetTask, config.set_task_service)):
            if name:
                self._service_clients[key] = self.create_client(
                    kind, name, callback_group=self._action_group)
        self._action_server = ActionServer(
            self, RunEpisode, '~/run_episode', execute_callback=self._execute,
            goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=self._action_group)

    def _destroy_interfaces(self) -> None:
        for subscription in self._io:
            self.destroy_subscription(subscription)
        for publisher in self._publishers_io.values():
            self.destroy_publisher(publisher)
        for client in self._service_clients.values():
            self.destroy_client(client)
        if self._action_server is not None:
            self._action_server.destroy()
        self._io, self._publishers_io, self._service_clients = [], {}, {}
        self._action_server = None

    # ---- inputs ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds / NS

    def _store(self, stream: str, msg) -> None:
        now = self._now()
        with self._data_lock:
            self._latest[stream] = (msg, now)
        safety = self._safety
        if safety is not None:
            safety.observe(stream, _capture_time(msg, now))

    def _on_reward(self, msg: StageReward) -> None:
        episode = self._episode
        if episode is None or episode.done.is_set() or \
                (msg.episode_id and msg.episode_id != episode.episode_id):
            return
        episode.success_probability = float(msg.success_probability)
        episode.episode_return += float(msg.reward)
        episode.primitive, episode.progress = msg.primitive_name, float(msg.progress)
        episode.reward = float(msg.reward)
        self._record(self.config.reward_topic, msg)

    def _on_ground_truth(self, msg: SimGroundTruth) -> None:
        episode = self._episode
        if episode is None or episode.done.is_set() or \
                (msg.episode_id and msg.episode_id != episode.episode_id):
            return
        episode.sim_success = episode.sim_success or bool(msg.success)
        self._record(bag_io.GROUND_TRUTH_TOPIC, msg)

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            return
        with self._command_lock:
            first = not self._estop_reason
            self._estop_reason = 'estop'
            if self._safety is not None:
                self._safety.trigger_estop('estop')
                if first:
                    self._publish(self._core.step(None, self._ee_position(), self._now(),
                                                  self.config.control_period), stop=True)
        if first:
            self.get_logger().warn('e-stop: commands stopped until ~/reset_estop')
        episode = self._episode
        if episode is not None:
            self._finish(episode, END_ESTOP)

    def _on_reset_estop(self, request, response):
        with self._command_lock:
            self._estop_reason = ''
            if self._safety is not None:
                self._safety.reset_estop()
        self.get_logger().info('e-stop released')
        response.success, response.message = True, 'e-stop released'
        return response

    # ---- observations ----------------------------------------------------------------------
    def _observation(self, instruction: str) -> tuple[PolicyObservation | None, list]:
        """Build the policy input from the latest messages; also return what to record."""
        with self._data_lock:
            latest = dict(self._latest)
        used = []
        images = {}
        try:
            for camera in self.config.cameras:
                entry = latest.get(f'camera/{camera}')
                if entry is None:
                    return None, []
                msg = entry[0]
                cached = self._decoded.get(camera)
                if cached is None or cached[0] is not msg:
                    cached = (msg, image_to_rgb(msg))
                    self._decoded[camera] = cached
                images[camera] = cached[1]
                used.append((bag_io.image_topic(camera), msg))
            entry = latest.get('joint_states')
            if entry is None:
                return None, []
            joints = joint_positions(entry[0], self.config.joint_names)
            used.append((bag_io.JOINT_STATES_TOPIC, entry[0]))
        except ValueError as error:
            self._log_once('observation', f'bad observation (counted, skipped): {error}')
            self._count('bad_observation')
            return None, []
        return PolicyObservation(images, joints, instruction), used

    def _ee_position(self) -> np.ndarray | None:
        with self._data_lock:
            entry = self._latest.get('ee_pose')
        if entry is None:
            return None
        position = entry[0].pose.position
        return np.array([position.x, position.y, position.z])

    # ---- control loop ----------------------------------------------------------------------
    def _control_tick(self) -> None:
        tick = time.monotonic()
        if self._last_tick is not None:
            self._intervals.append(tick - self._last_tick)
        self._last_tick = tick
        episode = self._episode
        if self._recorder is not None:
            with self._record_lock:
                self._recorder.flush_if_due()
        if episode is None or self._core is None:
            return
        with self._command_lock:
            if episode.done.is_set():
                return
            obs, used = self._observation(episode.instruction)
            try:
                out = self._core.step(obs, self._ee_position(), self._now(),
                                      self.config.control_period)
            except Exception as error:  # noqa: BLE001 - any policy failure ends the episode
                self._count('policy_fault')
                self.get_logger().error(f'policy failed: {error}')
                self._finish(episode, f'{END_FAULT}: policy: {error}')
                return
            sent = self._publish(out)
        if out.inference_time is not None:
            self._inference_times.append(out.inference_time)
        if out.safety.reasons:
            self._log_once('safety:' + out.safety.reasons[0],
                           f'safety filter: {", ".join(out.safety.reasons)} (counted)')
        self._record_step(episode, used, out, sent)
        episode.steps += 1
        elapsed = self._now() - episode.started
        success = (episode.sim_success if self.config.success_source == 'sim' else
                   self.config.success_source == 'reward'
                   and episode.success_probability >= episode.limits.success_threshold)
        reason = end_reason(episode.limits, episode.steps, elapsed, success)
        if episode.goal_handle.is_cancel_requested:
            reason = END_CANCELED
        if reason is not None:
            self._finish(episode, reason)
            return
        feedback = RunEpisode.Feedback(step=episode.steps, primitive_name=episode.primitive,
                                       progress=episode.progress, reward=episode.reward)
        episode.goal_handle.publish_feedback(feedback)

    def _publish(self, out: StepOutput, stop: bool = False) -> list:
        """Publish the safety filter's output; return the (topic, message) pairs sent."""
        # STOP outputs are published once, by the e-stop callback (stop=True); holds always.
        if out.safety.values.size == 0 or (out.safety.kind == STOP and not stop):
            return []
        config = self.config
        stamp = self.get_clock().now().to_msg()
        values = out.safety.values
        if config.command_interface == 'twist':
            command = twist_command(values, stamp, config.command_frame_id)
        elif config.command_interface == 'joint_trajectory':
            command = joint_trajectory_command(config.command_joint_names, values, stamp,
                                               config.control_period)
        else:
            command = float64_array(values)
        self._publishers_io['command'].publish(command)
        sent = [(config.command_topic, command)]
        if out.safety.gripper is not None and 'gripper' in self._publishers_io:
            gripper = gripper_command(out.safety.gripper)
            self._publishers_io['gripper'].publish(gripper)
            sent.append((config.gripper_topic, gripper))
        if out.base_action is not None:
            self._publishers_io['base_action'].publish(float_array(out.base_action))
        if out.executed_action is not None:
            self._publishers_io['executed_action'].publish(float_array(out.executed_action))
        return sent

    # ---- episodes --------------------------------------------------------------------------
    def _on_goal(self, goal) -> GoalResponse:
        if not self._active or self._core is None:
            self.get_logger().warn('goal rejected: node not active')
            return GoalResponse.REJECT
        if self._estop_reason:
            self.get_logger().warn('goal rejected: e-stop latched; call ~/reset_estop')
            return GoalResponse.REJECT
        with self._data_lock:
            if self._goal_running:
                self.get_logger().warn('goal rejected: an episode is running')
                return GoalResponse.REJECT
            self._goal_running = True
        return GoalResponse.ACCEPT

    def _execute(self, goal_handle):
        try:
            return self._run_episode(goal_handle)
        finally:
            with self._data_lock:
                self._goal_running = False

    def _run_episode(self, goal_handle):
        goal = goal_handle.request
        result = RunEpisode.Result()
        instruction = goal.instruction or catalogue_instruction(goal.task)
        episode_id = uuid.uuid4().hex[:12]
        result.episode_id = episode_id
        problem = self._prepare_world(goal, instruction, episode_id)
        if problem:
            self.get_logger().error(f'episode not started: {problem}')
            result.reason = f'{END_FAULT}: {problem}'
            goal_handle.abort()
            return result
        with self._data_lock:
            joints_msg = self._latest['joint_states'][0]
        try:
            measured = joint_positions(joints_msg, self.config.command_joint_names or ())
        except ValueError:
            measured = None
        with self._command_lock:
            self._core.begin_episode(measured if self.config.command_interface != 'twist'
                                     else None)
        episode = _Episode(episode_id=episode_id, task=goal.task, instruction=instruction,
                           seed=int(goal.seed), limits=self.config.limits(goal.max_steps,
                                                                          goal.time_limit),
                           goal_handle=goal_handle, started=self._now())
        if goal.record:
            episode.bag_path = str(self._start_bag(episode))
        self._episode = episode
        self._publish_status(episode, EpisodeStatus.RUNNING)
        self.get_logger().info(f'episode {episode_id} started: {goal.task} ({instruction!r})')
        while not episode.done.wait(0.1):
            if not rclpy.ok():
                self._finish(episode, f'{END_FAULT}: shutdown')
        with self._command_lock:
            # The arm stops at the end of every episode (the estop already published its stop).
            if not self._estop_reason and self._core is not None:
                self._publish_final_stop()
        duration = self._now() - episode.started
        state = _STATE_OF_REASON.get(episode.reason, EpisodeStatus.ABORTED)
        self._publish_status(episode, state)
        self._end_bag(episode, duration)
        self._episode = None
        result.success = episode.reason == END_SUCCESS
        result.episode_return = float(episode.episode_return)
        result.steps = episode.steps
        result.duration = float(duration)
        result.bag_path = episode.bag_path
        result.reason = episode.reason
        self.get_logger().info(f'episode {episode_id} ended: {episode.reason} after '
                               f'{episode.steps} steps')
        if episode.reason == END_CANCELED:
            goal_handle.canceled()
        elif state == EpisodeStatus.ABORTED:
            goal_handle.abort()
        else:
            goal_handle.succeed()
        return result

    def _prepare_world(self, goal, instruction: str, episode_id: str) -> str:
        """Set the task, reset the arm, wait for fresh observations; return a problem or ''."""
        if not goal.task:
            return 'the goal has no task'
        if not instruction:
            return f'no instruction given and task {goal.task!r} is not in the catalogue'
        if 'set_task' in self._service_clients:
            response = self._call(self._service_clients['set_task'],
                                  SetTask.Request(task=goal.task, instruction=instruction))
            if response is None or not response.success:
                return f'set_task failed: {getattr(response, "message", "no response")}'
        if 'reset' in self._service_clients:
            response = self._call(self._service_clients['reset'],
                                  ResetEpisode.Request(episode_id=episode_id, seed=goal.seed))
            if response is None or not response.success:
                return f'reset failed: {getattr(response, "message", "no response")}'
        after = self._now()
        deadline = time.monotonic() + self.config.start_timeout
        needed = self.config.stream_names()
        while time.monotonic() < deadline:
            with self._data_lock:
                missing = [s for s in needed if s not in self._latest
                           or self._latest[s][1] <= after]
            if not missing:
                return ''
            time.sleep(0.02)
        return f'no fresh observations on {missing} within {self.config.start_timeout} s'

    def _call(self, client, request, timeout: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            return None
        return future.result()

    def _publish_final_stop(self) -> None:
        config = self.config
        if config.command_interface == 'twist':
            self._publishers_io['command'].publish(
                twist_command(np.zeros(3), self.get_clock().now().to_msg(),
                              config.command_frame_id))

    def _finish(self, episode: _Episode, reason: str) -> None:
        if not episode.reason:
            episode.reason = reason
        episode.done.set()

    def _publish_status(self, episode: _Episode | None, state: int) -> None:
        msg = EpisodeStatus(state=state)
        msg.header.stamp = self.get_clock().now().to_msg()
        if episode is not None:
            msg.episode_id, msg.task, msg.instruction = (episode.episode_id, episode.task,
                                                         episode.instruction)
            msg.step = episode.steps
            msg.elapsed = float(self._now() - episode.started)
            msg.episode_return = float(episode.episode_return)
            msg.reason = episode.reason
            msg.bag_path = episode.bag_path
        self._status_pub.publish(msg)
        if episode is not None:
            self._record(STATUS_TOPIC, msg)

    # ---- recording -------------------------------------------------------------------------
    def _start_bag(self, episode: _Episode):
        config = self.config
        if self._recorder is None or str(self._recorder.directory) != config.bag_directory:
            self._recorder = RolloutRecorder(config.bag_directory, bag_io.typestore(),
                                             config.flush_period)
        topics = {bag_io.image_topic(c): bag_io.IMAGE_TYPE for c in config.cameras}
        topics.update({
            bag_io.JOINT_STATES_TOPIC: bag_io.JOINT_STATE_TYPE,
            bag_io.ACTION_TOPIC: bag_io.ACTION_TYPE,
            bag_io.BASE_ACTION_TOPIC: _msgtype(Float32MultiArray),
            INSTRUCTION_TOPIC: _msgtype(String),
            config.command_topic: _msgtype(_COMMAND_TYPES[config.command_interface]),
            config.reward_topic: bag_io.STAGE_REWARD_TYPE,
            STATUS_TOPIC: _msgtype(EpisodeStatus),
            bag_io.METADATA_TOPIC: bag_io.METADATA_TYPE,
        })
        if config.gripper_topic:
            topics[config.gripper_topic] = _msgtype(Float64)
        if config.success_source == 'sim':
            topics[bag_io.GROUND_TRUTH_TOPIC] = bag_io.GROUND_TRUTH_TYPE
        metadata = self._metadata(episode)
        with self._record_lock:
            path = self._recorder.start(episode.episode_id, topics, metadata)
        self._record(bag_io.METADATA_TOPIC, self._metadata_msg(episode, 'start', metadata))
        self._record(INSTRUCTION_TOPIC, String(data=episode.instruction))
        return path

    def _end_bag(self, episode: _Episode, duration: float) -> None:
        if not episode.bag_path or self._recorder is None:
            return
        metadata = self._metadata(episode)
        metadata.update(success=episode.reason == END_SUCCESS, reason=episode.reason,
                        steps=episode.steps, duration=duration,
                        episode_return=episode.episode_return)
        self._record(bag_io.METADATA_TOPIC, self._metadata_msg(episode, 'end', metadata))
        with self._record_lock:
            self._recorder.stop(metadata)

    def _metadata(self, episode: _Episode) -> dict:
        policy = self._policy
        config = self.config
        return {
            'source': 'policy_node', 'episode_id': episode.episode_id, 'task': episode.task,
            'instruction': episode.instruction, 'seed': episode.seed,
            'policy_id': policy.policy_id if policy is not None else '',
            'policy_type': config.policy_type,
            'policy_config': getattr(getattr(policy, 'config', None), 'to_json',
                                     lambda: {})(),
            'checkpoint': config.checkpoint,
            'checkpoint_sha256': getattr(policy, 'weights_sha256', ''),
            'node_config': {name: getattr(config, name) for name in PolicyNodeConfig.names()},
            'limits': {'max_steps': episode.limits.max_steps,
                       'time_limit': episode.limits.time_limit,
                       'success_threshold': episode.limits.success_threshold},
        }

    def _metadata_msg(self, episode: _Episode, kind: str, metadata: dict) -> EpisodeMetadata:
        msg = EpisodeMetadata(kind=kind, episode_id=episode.episode_id, task=episode.task,
                              instruction=episode.instruction, seed=episode.seed,
                              success=bool(metadata.get('success', False)),
                              reason=episode.reason if kind == 'end' else '',
                              steps=episode.steps if kind == 'end' else 0,
                              metadata_json=json.dumps(metadata, sort_keys=True, default=str))
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def _record(self, topic: str, msg) -> None:
        recorder = self._recorder
        if recorder is None or not recorder.recording:
            return
        with self._record_lock:
            if not recorder.write(topic, serialize_message(msg),
                                  self.get_clock().now().nanoseconds):
                self._count('record_dropped')

    def _record_step(self, episode: _Episode, used: list, out: StepOutput, sent: list) -> None:
        if not episode.bag_path:
            return
        for topic, msg in used:
            # A frame reused by several control steps is recorded once.
            if episode.recorded.get(topic) is not msg:
                episode.recorded[topic] = msg
                self._record(topic, msg)
        if out.base_action is not None:
            self._record(bag_io.BASE_ACTION_TOPIC, float_array(out.base_action))
        if out.executed_action is not None:
            self._record(bag_io.ACTION_TOPIC, float64_array(out.executed_action))
        for topic, msg in sent:
            self._record(topic, msg)

    # ---- diagnostics -------------------------------------------------------------------------
    def _count(self, what: str) -> None:
        self._counts[what] = self._counts.get(what, 0) + 1

    def _log_once(self, key: str, text: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            self.get_logger().warn(text)

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f'{self.get_name()}: policy', hardware_id='policy')
        if self._estop_reason:
            status.level, status.message = DiagnosticStatus.ERROR, 'e-stop latched'
        elif self._core is None:
            status.level, status.message = DiagnosticStatus.WARN, 'not configured'
        else:
            status.level = DiagnosticStatus.OK
            status.message = 'running episode' if self._episode is not None else 'idle'
        values = {'policy': getattr(self._policy, 'policy_id', ''),
                  'episode': self._episode.episode_id if self._episode is not None else ''}
        intervals = np.asarray(self._intervals)
        if intervals.size:
            jitter = np.abs(intervals - self.config.control_period) * 1000.0
            values['jitter_p50_ms'] = f'{np.percentile(jitter, 50):.2f}'
            values['jitter_p99_ms'] = f'{np.percentile(jitter, 99):.2f}'
        if self._inference_times:
            values['inference_p50_ms'] = f'{np.median(self._inference_times) * 1000:.1f}'
        counts = dict(self._counts)
        if self._safety is not None:
            counts.update({f'safety_{k}': v for k, v in self._safety.counts.items()})
        if self._recorder is not None:
            counts['recorder_dropped'] = self._recorder.dropped
        values.update({k: str(v) for k, v in sorted(counts.items())})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(msg)


def _capture_time(msg, now: float) -> float:
    """When the observation was taken, for the watchdog: its header stamp if on our clock.

    Judging freshness by the capture stamp keeps a frame that this process handled late (a busy
    executor) from looking fresh. A stamp on another clock (e.g. simulated time while this node
    runs on wall time: more than 10 s off) falls back to the receive time ``now``.
    """
    header = getattr(msg, 'header', None)
    if header is None:
        return now
    captured = header.stamp.sec + header.stamp.nanosec / NS
    return captured if now - 10.0 <= captured <= now else now


def main(args=None) -> None:
    """Run the policy node (console script ``policy_node``)."""
    spin_lifecycle_node(PolicyNode, num_threads=5, args=args)


if __name__ == '__main__':
    main()
