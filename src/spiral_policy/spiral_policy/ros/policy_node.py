"""Policy node: runs a VLA on the arm episode by episode, safely, and records every rollout.

Lifecycle node, starts unconfigured. ``configure`` loads the policy (compact VLA checkpoint or
a connection to an openpi server) and creates the interfaces; ``activate`` starts the control
loop and accepts RunEpisode goals; ``deactivate`` aborts a running episode and stops;
``cleanup`` frees the policy. ``autostart:=true`` does configure + activate at startup.

Each control period (``control_rate``) the loop builds the observation from the latest camera
and joint messages, asks the policy for an action chunk when the chunk is used up (or every step
with temporal ensembling), and publishes only what ``SafetyFilter`` returns (see
``episode_runner``: the watchdog is checked again after every policy query, and commands are
stamped with the time of that check). The e-stop callback takes the same lock as the command
path, so once it returns no motion command can follow until ``~/reset_estop``. Observations are
dated by their header stamps (``observation_stamps``), so old frames cannot keep the arm moving.

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

Each recorded episode is one bag (``bag_directory/<episode_id>``, see ``episode_recording``).
Stopping the node (Ctrl-C, SIGTERM) mid-episode ends it first: stop command, final status, bag
closed with reason ``shutdown``.
"""

from dataclasses import dataclass, field
import threading
import time
import uuid

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sarm2_common import bag_io, topics
from sarm2_common.catalogue import catalogue_instruction
from sarm2_common.message_limits import string_problem
from sarm2_common.ros.conversions import diagnostics_msg, image_msg_to_rgb, joint_positions
from sarm2_common.ros.graph import warn_if_name_taken
from sarm2_common.ros.parameters import NodeParameters
from sarm2_common.ros.qos import LATCHED, RELIABLE, SENSOR_DATA, sensor_qos
from sarm2_common.ros.spin import spin_node
from sarm2_common.ros.stamps import NS, stamp_seconds, time_msg
from sarm2_msgs.action import RunEpisode
from sarm2_msgs.msg import EpisodeStatus, SimGroundTruth, StageReward
from sarm2_msgs.srv import ResetEpisode, SetTask
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32MultiArray, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from .conversions import (float64_array, float_array, gripper_command, joint_trajectory_command,
                          twist_command)
from .episode_recording import EpisodeRecording, metadata_msg
from ..compact_vla import CompactVlaPolicy
from ..episode_runner import (ControlCore, END_CANCELED, END_ESTOP, END_FAULT, END_SHUTDOWN,
                              END_STEP_LIMIT, END_SUCCESS, END_TIME_LIMIT, end_reason,
                              EpisodeLimits, observation_time, StepOutput, SuccessDetector)
from ..policy_diagnostics import PolicyNodeMonitor
from ..policy_node_config import PolicyNodeConfig
from ..safety import SafetyFilter, STOP
from ..vla import PolicyObservation

_COMMAND_TYPES = {'twist': TwistStamped, 'joint_trajectory': JointTrajectory,
                  'joint_array': Float64MultiArray}
_STATE_OF_REASON = {END_SUCCESS: EpisodeStatus.SUCCEEDED, END_STEP_LIMIT: EpisodeStatus.FAILED,
                    END_TIME_LIMIT: EpisodeStatus.FAILED}
# A capture stamp this far ahead of the node clock is another clock (or bogus): counted.
STAMP_AHEAD_TOLERANCE = 0.05   # s


@dataclass
class _Episode:
    episode_id: str
    task: str
    instruction: str
    seed: int
    limits: EpisodeLimits
    goal_handle: object
    started: float                              # node clock, s
    success_detector: SuccessDetector
    threshold_origin: str = ''                  # where limits.success_threshold came from
    steps: int = 0
    episode_return: float = 0.0
    reward_success: bool = False
    sim_success: bool = False
    primitive: str = ''
    progress: float = 0.0
    reward: float = 0.0
    reason: str = ''
    bag_path: str = ''
    done: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class PolicyNode(LifecycleNode):
    """Runs RunEpisode goals with a VLA behind the safety filter, recording each rollout."""

    NODE_NAME = 'policy_node'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._node_parameters = NodeParameters(self, PolicyNodeConfig)
        self.config = self._node_parameters.config      # as configured; refreshed on configure
        self._command_lock = threading.Lock()      # command path vs e-stop
        self._data_lock = threading.Lock()         # latest observations
        self._monitor = PolicyNodeMonitor()
        self._recording = EpisodeRecording(self.get_clock().now,
                                           on_drop=lambda: self._monitor.count('record_dropped'))
        self._policy = None
        self._core: ControlCore | None = None
        self._safety: SafetyFilter | None = None
        self._episode: _Episode | None = None
        self._goal_running = False                 # accepted goal not finished yet
        self._active = False
        self._estop_reason = ''
        self._latest: dict[str, tuple[object, float]] = {}   # stream -> (message, receive s)
        self._decoded: dict[str, tuple[object, np.ndarray]] = {}
        self._io: list = []
        self._publishers_io: dict = {}
        self._service_clients: dict = {}
        self._action_server = None
        self._timer = None
        self._last_tick: float | None = None
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._estop_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        self._status_pub = self.create_publisher(EpisodeStatus, topics.EPISODE_STATUS_TOPIC,
                                                 LATCHED)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS_TOPIC,
                                                      RELIABLE)
        self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        self.create_subscription(Bool, self.config.estop_topic, self._on_estop, RELIABLE,
                                 callback_group=self._estop_group)
        self.create_service(Trigger, '~/reset_estop', self._on_reset_estop,
                            callback_group=self._estop_group)
        self.get_logger().info('policy node unconfigured')

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            config = self._node_parameters.config
            safety = SafetyFilter(config.safety(), config.stream_names())
            policy = self._load_policy(config)
            core = ControlCore(policy, safety, config.mapping(), config.execution())
        except Exception as error:  # noqa: BLE001 - a bad checkpoint must not kill the node
            text = f'{type(error).__name__}: {error}' if not str(error) else str(error)
            self.get_logger().error(f'configure failed: {text}')
            self._monitor.error = text
            self._monitor.count('configure_failed')
            return TransitionCallbackReturn.FAILURE
        self.config = config
        if self._estop_reason:
            safety.trigger_estop(self._estop_reason)
        self._policy, self._safety, self._core = policy, safety, core
        try:
            self._create_interfaces()
        except Exception as error:  # noqa: BLE001 - rclpy would swallow it silently
            self.get_logger().error(f'configure failed creating interfaces: {error!r}')
            self._monitor.error = repr(error)
            self._destroy_interfaces()
            return TransitionCallbackReturn.FAILURE
        self._monitor.error = ''
        self.get_logger().info(f'configured: policy {policy.policy_id}, '
                               f'{config.command_interface} on {config.command_topic}')
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
        self._end_running_episode(f'{END_FAULT}: node deactivated')
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
        self._end_running_episode(END_SHUTDOWN)
        return TransitionCallbackReturn.SUCCESS

    def finish_before_shutdown(self) -> None:
        """End a running episode while the node can still publish (called on Ctrl-C)."""
        self._end_running_episode(END_SHUTDOWN)

    def _end_running_episode(self, reason: str, timeout: float = 5.0) -> None:
        episode = self._episode
        if episode is not None:
            self._finish(episode, reason)
            episode.finished.wait(timeout)

    def _load_policy(self, config: PolicyNodeConfig):
        if config.torch_threads:
            # torch's default (one thread per core) made inference stall the control loop for
            # up to 0.9 s on 2 cores beside the simulator and the reward node.
            import torch

            torch.set_num_threads(config.torch_threads)
        base = self._load_base_policy(config)
        if not config.residual_checkpoint:
            return base
        # SPIRAL: the frozen base plus the learned residual; refuses a residual trained on
        # another base policy.
        from ..spiral.residual_policy import ResidualPolicy

        return ResidualPolicy.from_checkpoint(config.residual_checkpoint, base)

    @staticmethod
    def _load_base_policy(config: PolicyNodeConfig):
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
        # One group per input: a topic's messages are handled in order, different topics in
        # parallel. With one shared exclusive group, a handler that lost the group to another
        # topic re-triggered the executor, which then rebuilt its wait set in Python (see
        # spin_node on what that busy loop costs the control loop).
        def group():
            return MutuallyExclusiveCallbackGroup()

        sensor = sensor_qos(config.sensor_qos_reliability, SENSOR_DATA.depth)
        for camera in config.cameras:
            self._io.append(self.create_subscription(
                Image, config.topic_of(camera),
                lambda msg, c=camera: self._store(f'camera/{c}', msg), sensor,
                callback_group=group()))
        self._io.append(self.create_subscription(
            JointState, config.joint_states_topic, lambda msg: self._store('joint_states', msg),
            sensor, callback_group=group()))
        if config.ee_pose_topic:
            self._io.append(self.create_subscription(
                PoseStamped, config.ee_pose_topic, lambda msg: self._store('ee_pose', msg),
                sensor, callback_group=group()))
        self._io.append(self.create_subscription(StageReward, config.reward_topic,
                                                 self._on_reward, RELIABLE,
                                                 callback_group=group()))
        if config.success_source == 'sim':
            self._io.append(self.create_subscription(SimGroundTruth, config.ground_truth_topic,
                                                     self._on_ground_truth, RELIABLE,
                                                     callback_group=group()))
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
        header = getattr(msg, 'header', None)
        stamp = stamp_seconds(header.stamp) if header is not None else None
        mode = self.config.observation_stamps
        if stamp is not None and mode == 'header':
            self._check_stamp(stream, stamp, now)
        with self._data_lock:
            self._latest[stream] = (msg, now)
        safety = self._safety
        if safety is not None:
            safety.observe(stream, observation_time(stamp, now, mode))

    def _check_stamp(self, stream: str, stamp: float, now: float) -> None:
        if stamp > now + STAMP_AHEAD_TOLERANCE:
            self._problem('stamp_ahead', f'{stream}: header stamps {stamp - now:.2f} s ahead of '
                          'the node clock (dated at arrival instead; counted)')
        elif now - stamp > self.config.safety_watchdog_timeout:
            self._problem('stamp_stale', f'{stream}: header stamps {now - stamp:.1f} s old: the '
                          'watchdog holds the arm. If the driver stamps on another clock, set '
                          'observation_stamps: receive')

    def _problem(self, kind: str, text: str) -> None:
        """Count a problem; log it the first time it happens."""
        self._monitor.count(kind)
        if self._monitor.first(kind):
            self.get_logger().warn(f'{text} (logged once; counted in /diagnostics)')

    def _on_reward(self, msg: StageReward) -> None:
        episode = self._episode
        if episode is None or episode.done.is_set() or \
                (msg.episode_id and msg.episode_id != episode.episode_id):
            return
        probability = float(msg.success_probability)
        if episode.success_detector.update(probability):
            episode.reward_success = True
        episode.episode_return += float(msg.reward)
        episode.primitive, episode.progress = msg.primitive_name, float(msg.progress)
        episode.reward = float(msg.reward)
        self._recording.record(self.config.reward_topic, msg)

    def _on_ground_truth(self, msg: SimGroundTruth) -> None:
        episode = self._episode
        if episode is None or episode.done.is_set() or \
                (msg.episode_id and msg.episode_id != episode.episode_id):
            return
        episode.sim_success = episode.sim_success or bool(msg.success)
        self._recording.record(bag_io.GROUND_TRUTH_TOPIC, msg)

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            return
        with self._command_lock:
            first = not self._estop_reason
            self._estop_reason = 'estop'
            if self._safety is not None:
                self._safety.trigger_estop('estop')
                if first:
                    now = self._now()
                    self._publish(self._core.step(None, self._ee_position(), now,
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
                    cached = (msg, image_msg_to_rgb(msg))
                    self._decoded[camera] = cached
                images[camera] = cached[1]
                used.append((topics.image_topic(camera), msg))
            entry = latest.get('joint_states')
            if entry is None:
                return None, []
            joints = joint_positions(entry[0], self.config.joint_names)
            used.append((topics.JOINT_STATES_TOPIC, entry[0]))
        except ValueError as error:
            self._problem('bad_observation', f'bad observation (skipped): {error}')
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
            self._monitor.tick_interval(tick - self._last_tick)
        self._last_tick = tick
        self._recording.flush_if_due()
        episode = self._episode
        if episode is None or self._core is None:
            return
        with self._command_lock:
            if episode.done.is_set():
                return
            obs, used = self._observation(episode.instruction)
            try:
                out = self._core.step(obs, self._ee_position(), self._now(),
                                      self.config.control_period, clock=self._now)
            except Exception as error:  # noqa: BLE001 - any policy failure ends the episode
                self._monitor.count('policy_fault')
                self.get_logger().error(f'policy failed: {error}')
                self._finish(episode, f'{END_FAULT}: policy: {error}')
                return
            sent = self._publish(out)
        if out.inference_time is not None:
            self._monitor.inference(out.inference_time)
        if out.safety.reasons and self._monitor.first('safety:' + out.safety.reasons[0]):
            self.get_logger().warn(f'safety filter: {", ".join(out.safety.reasons)} (counted)')
        if episode.bag_path:
            self._recording.record_step(used, out.base_action, out.executed_action, sent)
        episode.steps += 1
        elapsed = self._now() - episode.started
        source = self.config.success_source
        success = (episode.sim_success if source == 'sim' else
                   episode.reward_success if source == 'reward' else False)
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
        """Publish the safety filter's output; return the (topic, message) pairs sent.

        Commands carry the stamp of the output's last freshness check (``checked_at``).
        """
        # STOP outputs are published once, by the e-stop callback (stop=True); holds always.
        if out.safety.values.size == 0 or (out.safety.kind == STOP and not stop):
            return []
        config = self.config
        stamp = time_msg(round(out.checked_at * NS))
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
    def _goal_problem(self, goal) -> str:
        """Say what is wrong with a goal ('' when it can run)."""
        if not goal.task:
            return 'the goal has no task'
        problem = string_problem(goal.task, goal.instruction)
        if problem:
            return problem
        try:
            self._node_parameters.config.limits(goal.max_steps, goal.time_limit)
        except ValueError as error:
            return f'bad limits: {error}'
        try:
            self._node_parameters.config.success_rule_for(goal.task)
        except ValueError as error:
            return f'success_calibration: {error}'
        return ''

    def _on_goal(self, goal) -> GoalResponse:
        if not self._active or self._core is None:
            self.get_logger().warn('goal rejected: node not active')
            return GoalResponse.REJECT
        if self._estop_reason:
            self.get_logger().warn('goal rejected: e-stop latched; call ~/reset_estop')
            return GoalResponse.REJECT
        problem = self._goal_problem(goal)
        if problem:
            self._monitor.count('goal_rejected')
            self.get_logger().warn(f'goal rejected: {problem}')
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
        config = self._node_parameters.config        # per-episode parameters apply from now
        result = RunEpisode.Result()
        instruction = goal.instruction or catalogue_instruction(goal.task)
        episode_id = uuid.uuid4().hex[:12]
        result.episode_id = episode_id
        try:
            threshold, frames, threshold_origin = config.success_rule_for(goal.task)
        except ValueError as error:      # the file changed since the goal was accepted
            problem = f'success_calibration: {error}'
        else:
            problem = self._prepare_world(goal, instruction, episode_id)
        if problem:
            self.get_logger().error(f'episode not started: {problem}')
            result.reason = f'{END_FAULT}: {problem}'
            goal_handle.abort()
            return result
        self._warn_without_rewards()
        with self._data_lock:
            joints_msg = self._latest['joint_states'][0]
        try:
            measured = joint_positions(joints_msg, self.config.command_joint_names)
        except ValueError:
            measured = None
        with self._command_lock:
            self._core.begin_episode(measured if self.config.command_interface != 'twist'
                                     else None)
        limits = config.limits(goal.max_steps, goal.time_limit, threshold, frames)
        episode = _Episode(episode_id=episode_id, task=goal.task, instruction=instruction,
                           seed=int(goal.seed), limits=limits, goal_handle=goal_handle,
                           started=self._now(),
                           success_detector=SuccessDetector(limits.success_threshold,
                                                            limits.success_frames),
                           threshold_origin=threshold_origin)
        if goal.record:
            metadata = self._metadata(episode, config)
            episode.bag_path = str(self._recording.start(
                config.bag_directory, config.flush_period, episode_id, self.config, metadata,
                instruction, metadata_msg(bag_io.METADATA_START, episode, metadata,
                                          self.get_clock().now().to_msg())))
        self._episode = episode
        self._publish_status(episode, EpisodeStatus.RUNNING)
        self.get_logger().info(f'episode {episode_id} started: {goal.task} ({instruction!r})'
                               + (f', success threshold {threshold:.3f} held {frames} frames '
                                  f'from {threshold_origin}'
                                  if config.success_source == 'reward' else ''))
        while not episode.done.wait(0.1):
            if not rclpy.ok():
                self._finish(episode, END_SHUTDOWN)
        try:
            return self._end_episode(episode, goal_handle, config, result)
        finally:
            self._episode = None
            episode.finished.set()

    def _end_episode(self, episode: _Episode, goal_handle, config, result):
        with self._command_lock:
            # The arm stops at the end of every episode (the estop already published its stop).
            if not self._estop_reason and self._core is not None:
                self._publish_final_stop()
        duration = self._now() - episode.started
        state = _STATE_OF_REASON.get(episode.reason, EpisodeStatus.ABORTED)
        self._publish_status(episode, state)
        if episode.bag_path:
            metadata = self._metadata(episode, config)
            metadata.update(success=episode.reason == END_SUCCESS, reason=episode.reason,
                            steps=episode.steps, duration=duration,
                            episode_return=episode.episode_return)
            self._recording.stop(metadata_msg(bag_io.METADATA_END, episode, metadata,
                                              self.get_clock().now().to_msg()), metadata)
        result.success = episode.reason == END_SUCCESS
        result.episode_return = float(episode.episode_return)
        result.steps = episode.steps
        result.duration = float(duration)
        result.bag_path = episode.bag_path
        result.reason = episode.reason
        self.get_logger().info(f'episode {episode.episode_id} ended: {episode.reason} after '
                               f'{episode.steps} steps')
        if episode.reason == END_CANCELED:
            goal_handle.canceled()
        elif state == EpisodeStatus.ABORTED:
            goal_handle.abort()
        else:
            goal_handle.succeed()
        return result

    def _warn_without_rewards(self) -> None:
        config = self.config
        if config.success_source == 'reward' and self.count_publishers(config.reward_topic) == 0:
            self._monitor.count('no_reward_publisher')
            self.get_logger().warn(
                f'success_source is reward but nothing publishes {config.reward_topic}: this '
                'episode can only end at its step or time limit (start the reward node, or set '
                'success_source)')

    def _prepare_world(self, goal, instruction: str, episode_id: str) -> str:
        """Set the task, reset the arm, wait for fresh observations; return a problem or ''."""
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
        timeout = self._node_parameters.config.start_timeout
        deadline = time.monotonic() + timeout
        needed = self.config.stream_names()
        while time.monotonic() < deadline:
            with self._data_lock:
                missing = [s for s in needed if s not in self._latest
                           or self._latest[s][1] <= after]
            if not missing:
                return ''
            time.sleep(0.02)
        return f'no fresh observations on {missing} within {timeout} s'

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

    @staticmethod
    def _finish(episode: _Episode, reason: str) -> None:
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
        if episode is not None and episode.bag_path:
            self._recording.record(topics.EPISODE_STATUS_TOPIC, msg)

    def _metadata(self, episode: _Episode, config: PolicyNodeConfig) -> dict:
        policy = self._policy
        return {
            'source': 'policy_node', 'episode_id': episode.episode_id, 'task': episode.task,
            'instruction': episode.instruction, 'seed': episode.seed,
            'policy_id': policy.policy_id if policy is not None else '',
            'policy_type': self.config.policy_type,
            'policy_config': getattr(getattr(policy, 'config', None), 'to_json',
                                     lambda: {})(),
            'checkpoint': self.config.checkpoint,
            'checkpoint_sha256': getattr(policy, 'weights_sha256', ''),
            'node_config': {name: getattr(config, name) for name in PolicyNodeConfig.names()},
            'limits': {'max_steps': episode.limits.max_steps,
                       'time_limit': episode.limits.time_limit,
                       'success_threshold': episode.limits.success_threshold,
                       'success_threshold_origin': episode.threshold_origin,
                       'success_frames': episode.limits.success_frames},
        }

    # ---- diagnostics -------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        warn_if_name_taken(self, self._monitor.first)
        episode = self._episode
        report = self._monitor.report(
            configured=self._core is not None, estopped=bool(self._estop_reason),
            episode_id=episode.episode_id if episode is not None else '',
            policy_id=getattr(self._policy, 'policy_id', ''),
            control_period=self.config.control_period,
            safety_counts=self._safety.counts if self._safety is not None else {},
            recorder_dropped=self._recording.dropped)
        self._diagnostics_pub.publish(diagnostics_msg(
            report, self.get_clock().now().to_msg(), f'{self.get_name()}: policy', 'policy'))


def main(args=None) -> None:
    """Run the policy node (console script ``policy_node``)."""
    spin_node(PolicyNode, num_threads=5, args=args)


if __name__ == '__main__':
    main()
