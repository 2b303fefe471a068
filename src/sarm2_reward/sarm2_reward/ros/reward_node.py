"""Live reward node: per-frame SARM2 stage, progress and reward on ROS 2 topics.

Lifecycle node. It starts unconfigured; ``configure`` loads the checkpoint (on failure the node
stays unconfigured and /diagnostics says why), ``activate`` starts processing, ``deactivate``
stops, ``cleanup`` frees the model. ``autostart:=true`` does configure + activate at startup.

Data flow: camera and joint-state subscriptions only stamp-pair their messages (no decoding,
no model) and put complete frames in a bounded queue that drops its oldest entry when full.
A guard condition wakes the inference callback, which runs in its own callback group (so the
MultiThreadedExecutor keeps serving subscriptions meanwhile), decodes images, runs the backend
and publishes.

Topics (defaults):
    in   /camera/<name>/image_raw     sensor_msgs/Image, one per camera
         /joint_states                sensor_msgs/JointState
         /episode/status              sarm2_msgs/EpisodeStatus (episode boundaries)
    out  /sarm2/stage_reward          sarm2_msgs/StageReward, one per processed frame
         /sarm2/progress, /sarm2/reward   std_msgs/Float32 (rqt_plot)
         /sarm2/markers               visualization_msgs/MarkerArray (RViz)
         /sarm2/overlay/image_raw     sensor_msgs/Image, annotated (drawn only when subscribed)
         /diagnostics                 diagnostic_msgs/DiagnosticArray
Services: ~/set_task (sarm2_msgs/SetTask), ~/reset (sarm2_msgs/ResetEpisode).
"""

from collections import deque
import threading
import uuid

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sarm2_common import topics
from sarm2_common.catalogue import catalogue_instruction
from sarm2_common.image_encoding import ImageDecodeError
from sarm2_common.message_limits import string_problem
from sarm2_common.ros.graph import warn_if_name_taken
from sarm2_common.ros.conversions import (diagnostics_msg, image_msg_to_rgb, JointStateError,
                                          rgb_to_image_msg, using_cv_bridge)
from sarm2_common.ros.parameters import NodeParameters
from sarm2_common.ros.qos import LATCHED, RELIABLE, SENSOR_DATA
from sarm2_common.ros.spin import spin_node
from sarm2_common.ros.stamps import NS, stamp_ns
from sarm2_msgs.msg import EpisodeStatus, StageReward
from sarm2_msgs.srv import ResetEpisode, SetTask
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Header
from visualization_msgs.msg import MarkerArray

from .reward_conversions import model_joint_state, reward_markers, stage_reward_msg
from ..backend import backend_from_config, RewardBackend
from ..frame_queue import DroppingQueue
from ..overlay import draw_overlay
from ..reward_diagnostics import OK, RewardNodeMonitor, WARN
from ..reward_node_config import RewardNodeConfig
from ..stamp_pairing import DEFAULT_HISTORY, StampPairer

JOINTS = 'joint_states'
MAX_STAMP_AHEAD_NS = 5 * NS    # a camera stamp further ahead of the node clock is bogus


class RewardNode(LifecycleNode):
    """Publishes SARM2 stage rewards for every processed camera frame."""

    NODE_NAME = 'reward_node'

    def __init__(self, backend_factory=None, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        # The factory is the seam for other reward backends (e.g. LRM): config -> RewardBackend.
        self._backend_factory = backend_factory or backend_from_config
        self._node_parameters = NodeParameters(self, RewardNodeConfig,
                                          on_change=self._on_parameters_changed)
        self.config = self._node_parameters.config

        self._lock = threading.Lock()        # backend + episode state (inference vs services)
        self._input_lock = threading.Lock()  # stamp pairer (subscriptions vs resets)
        self._backend: RewardBackend | None = None
        self._pairer: StampPairer | None = None
        self._queue: DroppingQueue | None = None
        self._cameras: list[str] = []
        self._active = False
        self._generation = 0
        self._task = self.config.task
        self._instruction = self.config.instruction
        self._episode_id = ''
        self._episode_from_status = False      # the policy node's /episode/status set the id
        self._frame_index = 0
        self._last_processed_ns: int | None = None
        self._rewards: deque = deque(maxlen=self.config.sparkline_length)
        self._seen_timeline_resets = 0
        self._seen_backwards = 0
        self._subscriptions_io: list = []
        self._publishers_io: dict = {}
        self._monitor = RewardNodeMonitor([], stale_after=self.config.stale_timeout)

        self._input_group = MutuallyExclusiveCallbackGroup()
        self._inference_group = MutuallyExclusiveCallbackGroup()
        self._wake_inference = self.create_guard_condition(
            self._run_inference, callback_group=self._inference_group)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS_TOPIC,
                                                      RELIABLE)
        self._diagnostics_timer = self.create_timer(self.config.diagnostics_period,
                                                    self._publish_diagnostics)
        self.create_service(SetTask, '~/set_task', self._on_set_task)
        self.create_service(ResetEpisode, '~/reset', self._on_reset)
        self.create_subscription(EpisodeStatus, topics.EPISODE_STATUS_TOPIC,
                                 self._on_episode_status, LATCHED)
        self.get_logger().info(
            'reward node unconfigured; image conversion: '
            f'{"cv_bridge" if using_cv_bridge() else "numpy (cv_bridge not installed)"}')

    def _on_parameters_changed(self, config: RewardNodeConfig, names: list[str]) -> None:
        # Parameters that act at run time take effect now; the rest on the next configure,
        # which reads this config.
        self.config = config

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        config = self.config
        self._monitor.state = 'configuring'
        try:
            backend = self._backend_factory(config)
            backend.warm_up()
            cameras = list(config.cameras) or list(backend.cameras)
            if sorted(cameras) != sorted(backend.cameras):
                raise ValueError(f"cameras {cameras} do not match the model's cameras "
                                 f'{backend.cameras}')
        except Exception as exc:  # any failure must leave the node unconfigured, not dead
            reason = (f'{config.backend} backend (checkpoint {config.checkpoint!r}) failed to '
                      f'load: {exc}')
            self.get_logger().error(reason)
            self._monitor.state = 'unconfigured'
            self._monitor.error = reason
            return TransitionCallbackReturn.FAILURE
        self._backend = backend
        self._cameras = cameras
        streams = cameras + [JOINTS]
        # The pairer holds as many messages per stream as the subscriptions queue, so one stream
        # lagging the other by up to that depth (large images under load) costs no frame.
        self._pairer = StampPairer(streams, cameras[0], slop_ns=int(config.pairing_slop * NS),
                                   max_delay_ns=int(config.max_pairing_delay * NS),
                                   history=max(DEFAULT_HISTORY, config.sensor_qos_depth))
        self._queue = DroppingQueue(config.queue_size)
        self._seen_timeline_resets = self._seen_backwards = 0
        self._monitor = RewardNodeMonitor(streams, stale_after=config.stale_timeout)
        self._monitor.model_id = backend.model_id
        self._monitor.device = config.device
        self._create_io(config)
        self._start_episode(self._episode_id or _new_episode_id(), self._task, self._instruction)
        self._monitor.state = 'inactive'
        self.get_logger().info(f'configured: model {backend.model_id} on {config.device}, '
                               f'cameras {cameras}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        self._monitor.state = 'active'
        self._monitor.reset_timings()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._monitor.state = 'inactive'
        if self._queue is not None:
            self._queue.clear()
        with self._input_lock:
            if self._pairer is not None:
                self._pairer.clear()  # frames from before the pause must not pair with later ones
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._monitor.state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._monitor.state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._active = False
        with self._lock:
            for subscription in self._subscriptions_io:
                self.destroy_subscription(subscription)
            for publisher in self._publishers_io.values():
                self.destroy_lifecycle_publisher(publisher)
            self._subscriptions_io, self._publishers_io = [], {}
            if self._backend is not None:
                self._backend.close()
            self._backend = None
            if self._queue is not None:
                self._queue.close()

    def _create_io(self, config: RewardNodeConfig) -> None:
        sensor_qos = QoSProfile(depth=config.sensor_qos_depth,
                                history=SENSOR_DATA.history, durability=SENSOR_DATA.durability,
                                reliability=ReliabilityPolicy.RELIABLE
                                if config.sensor_qos_reliability == 'reliable'
                                else ReliabilityPolicy.BEST_EFFORT)
        output_qos = QoSProfile(depth=config.output_qos_depth, reliability=RELIABLE.reliability,
                                history=RELIABLE.history)
        publish = self.create_lifecycle_publisher
        self._publishers_io = {
            'stage_reward': publish(StageReward, topics.STAGE_REWARD_TOPIC, output_qos),
            'progress': publish(Float32, '/sarm2/progress', output_qos),
            'reward': publish(Float32, '/sarm2/reward', output_qos),
            'markers': publish(MarkerArray, '/sarm2/markers', output_qos),
            'overlay': publish(Image, '/sarm2/overlay/image_raw', output_qos),
        }
        self._subscriptions_io = [
            self.create_subscription(Image, config.topic_of(camera, self._cameras),
                                     lambda msg, c=camera: self._on_message(c, msg),
                                     sensor_qos, callback_group=self._input_group)
            for camera in self._cameras]
        self._subscriptions_io.append(self.create_subscription(
            JointState, config.joint_states_topic, lambda msg: self._on_message(JOINTS, msg),
            sensor_qos, callback_group=self._input_group))

    # ---- input path: store and pair only -----------------------------------------------------
    def _on_message(self, stream: str, msg) -> None:
        self._monitor.heard(stream)
        if not self._active or self._pairer is None:
            return
        stamp = stamp_ns(msg.header.stamp)
        now = self.get_clock().now().nanoseconds
        # A stamp far ahead of the node clock is bogus (or another clock): adopting it would
        # make every later frame look like time went backwards. Before /clock starts (sim time
        # at 0) there is nothing to compare with.
        if now > 0 and stamp > now + MAX_STAMP_AHEAD_NS:
            self._bad_input('stamp_ahead', f'{stream}: header stamp {(stamp - now) / NS:.1f} s '
                            'ahead of the node clock (message dropped)')
            return
        with self._input_lock:
            frames = self._pairer.add(stream, stamp, msg)
            stats = self._pairer.stats
            generation = self._generation
        if stats.backwards > self._seen_backwards:
            self._seen_backwards = stats.backwards
            self._bad_input('stamp_backwards', f'{stream}: header stamp went back in time '
                            '(message dropped)')
        if stats.timeline_resets > self._seen_timeline_resets:
            self._seen_timeline_resets = stats.timeline_resets
            if self._episode_from_status:
                # The policy node owns episode boundaries: keep its episode id.
                self.get_logger().warn(f'{stream}: stamps restarted (clock reset?) inside '
                                       f'episode {self._episode_id}; keeping the episode')
                return
            self.get_logger().warn(f'{stream}: stamps restarted (clock reset or bag loop): '
                                   'starting a new episode')
            self._start_episode(_new_episode_id(), self._task, self._instruction)
            return
        for frame in frames:
            if self._queue.put((generation, frame)):
                self._monitor.dropped += 1
        if frames:
            self._wake_inference.trigger()

    # ---- inference path ------------------------------------------------------------------------
    def _run_inference(self) -> None:
        while self._active and self._queue is not None:
            item = self._queue.get_nowait()
            if item is None:
                return
            try:
                self._process(*item)
            except Exception as exc:  # a bug must not stop the node; it shows in diagnostics
                self._bad_input('internal_error', f'{type(exc).__name__}: {exc}')

    def _process(self, generation: int, frame) -> None:
        with self._lock:
            backend = self._backend
            if backend is None or generation != self._generation:
                return  # queued before a reset: belongs to the previous episode
            config = self.config
            if config.output_rate > 0 and self._last_processed_ns is not None and \
                    frame.stamp_ns - self._last_processed_ns < NS / config.output_rate:
                self._monitor.rate_skipped += 1
                return
            images = {}
            for camera in self._cameras:
                try:
                    images[camera] = image_msg_to_rgb(frame.items[camera])
                except ImageDecodeError as exc:
                    self._bad_input(f'image_{exc.kind}', f'camera {camera}: {exc}')
                    return
            try:
                joints = model_joint_state(frame.items[JOINTS], config.joint_names,
                                          backend.state_dim)
            except JointStateError as exc:
                self._bad_input(exc.kind, str(exc))
                return
            try:
                estimate = backend.step(images, joints, frame.stamp_ns / NS)
            except ValueError as exc:
                self._bad_input('model_input', str(exc))
                return
            self._last_processed_ns = frame.stamp_ns
            header = frame.items[self._cameras[0]].header
            index = self._frame_index
            self._frame_index += 1
            self._rewards.append(estimate.reward)
            self._publish(estimate, header, index, images[self._cameras[0]])
            latency = (self.get_clock().now().nanoseconds - frame.stamp_ns) / NS
            self._monitor.frame_done(latency, estimate.inference_time)
            self._monitor.frame_index = self._frame_index

    def _publish(self, estimate, header: Header, index: int, image) -> None:
        pubs = self._publishers_io
        pubs['stage_reward'].publish(stage_reward_msg(
            estimate, header, self._task, self._instruction, self._episode_id, index))
        pubs['progress'].publish(Float32(data=float(estimate.progress)))
        pubs['reward'].publish(Float32(data=float(estimate.reward)))
        marker_header = Header(stamp=header.stamp,
                               frame_id=self.config.marker_frame or header.frame_id)
        pubs['markers'].publish(reward_markers(estimate, marker_header))
        if pubs['overlay'].get_subscription_count() > 0:
            overlay = draw_overlay(image, estimate.primitive_name,
                                   estimate.primitive_confidence, estimate.progress,
                                   estimate.success_probability, self._rewards,
                                   width=self.config.overlay_width)
            pubs['overlay'].publish(rgb_to_image_msg(overlay, header))

    def _bad_input(self, kind: str, message: str) -> None:
        if self._monitor.bad_input(kind):
            self.get_logger().warn(f'bad input ({kind}): {message} '
                                   '(logged once per kind; counted in /diagnostics)')
        self._monitor.error = f'{kind}: {message}'

    # ---- episodes ------------------------------------------------------------------------------
    def _start_episode(self, episode_id: str, task: str, instruction: str,
                       from_status: bool = False) -> None:
        with self._lock:
            self._generation += 1
            self._episode_id = episode_id
            self._episode_from_status = from_status
            self._task, self._instruction = task, instruction
            self._frame_index = 0
            self._last_processed_ns = None
            self._rewards = deque(maxlen=self.config.sparkline_length)
            if self._queue is not None:
                self._queue.clear()
            with self._input_lock:
                if self._pairer is not None:
                    self._pairer.clear()
            if self._backend is not None:
                self._backend.reset(task, instruction)
            self._monitor.episode_id = episode_id
            self._monitor.frame_index = 0

    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        if msg.state != EpisodeStatus.RUNNING or not msg.episode_id \
                or msg.episode_id == self._episode_id:
            return
        problem = string_problem(msg.task, msg.instruction, msg.episode_id)
        if problem:
            self._bad_input('status_too_long', f'{topics.EPISODE_STATUS_TOPIC}: {problem} '
                            '(message ignored)')
            return
        task = msg.task or self._task
        instruction = msg.instruction or catalogue_instruction(task) or self._instruction
        self.get_logger().info(f'episode {msg.episode_id} started ({task})')
        self._start_episode(msg.episode_id, task, instruction, from_status=True)

    def _on_set_task(self, request: SetTask.Request, response: SetTask.Response):
        if not request.task:
            response.success, response.message = False, 'task must not be empty'
            return response
        problem = string_problem(request.task, request.instruction)
        if problem:
            response.success, response.message = False, problem
            return response
        instruction = request.instruction or catalogue_instruction(request.task)
        if not instruction:
            response.success = False
            response.message = (f'no instruction given and task {request.task!r} is not in the '
                                'task catalogue: pass the instruction')
            return response
        episode_id = _new_episode_id()
        self._start_episode(episode_id, request.task, instruction)
        response.success = True
        response.message = f'task {request.task!r} ({instruction!r}); new episode {episode_id}'
        return response

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        problem = string_problem(episode_id=request.episode_id)
        if problem:
            response.success, response.message = False, problem
            return response
        response.episode_id = request.episode_id or _new_episode_id()
        self._start_episode(response.episode_id, self._task, self._instruction)
        response.success = True
        response.message = (f'episode {response.episode_id} started' if self._backend is not None
                            else f'episode {response.episode_id} will start when configured')
        return response

    # ---- diagnostics ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        warn_if_name_taken(self, self._monitor.first_warning)
        report = self._monitor.report(self._pairer.stats if self._pairer is not None else None)
        backend = self._backend
        if backend is not None:
            report.values.update(backend.diagnostics())
            if backend.fault and report.level == OK:
                report.level, report.message = WARN, backend.fault
        report.values['task'] = self._task
        report.values['image_conversion'] = 'cv_bridge' if using_cv_bridge() else 'numpy'
        self._diagnostics_pub.publish(diagnostics_msg(
            report, self.get_clock().now().to_msg(), f'{self.get_name()}: reward',
            self._monitor.model_id or 'no model'))


def _new_episode_id() -> str:
    return uuid.uuid4().hex[:12]


def main(args=None) -> None:
    """Run the reward node (console script ``reward_node``)."""
    spin_node(RewardNode, num_threads=3, args=args)


if __name__ == '__main__':
    main()
