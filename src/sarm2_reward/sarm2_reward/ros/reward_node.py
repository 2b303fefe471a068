"""Live reward node: per-frame SARM2 stage, progress and reward on ROS 2 topics.

Lifecycle node. It starts unconfigured; ``configure`` loads the checkpoint (on failure the node
stays unconfigured and /diagnostics says why), ``activate`` starts processing, ``deactivate``
stops, ``cleanup`` frees the model. ``autostart:=true`` does configure + activate at startup.

Data flow: the node takes input only when the model can use it, so a flood of frames costs
DDS (C++) its time, not the model (the profiles behind this design are in docs/benchmarks.md,
reward_latency). One thread does everything, in ``spin_with``:

1. take every message DDS holds for the camera and joint subscriptions now, straight from the
   subscriptions (one C call each, no executor round trip). Camera subscriptions keep the last
   ``sensor_qos_depth`` frames (default 1: DDS replaces a frame the node had no time for, and
   the gap in the publisher's sequence numbers is counted as ``dropped.superseded``); joint
   states keep at least ``JOINT_QOS_DEPTH``. Subscriptions are raw: the header stamp is read
   from the serialized bytes and paired (``stamp_pairing``: nearest image of the other cameras,
   joint states interpolated); complete frames go to a bounded queue that drops its oldest
   entry, counted, beyond ``queue_size``. A frame that is dropped is never deserialized;
2. process the oldest queued frame: deserialize, decode, run the backend, publish. Optional
   outputs (progress, reward, markers, overlay) are built only while someone subscribes;
3. with nothing to process, wait on the executor for input, a service call or a timer; between
   frames, serve them every ``SERVICE_PERIOD``. Joint states do not wake the node unless a
   frame waits for one (or to see that the stream is alive): a 200 Hz arm would otherwise wake
   it 200 times a second.

No second Python thread competes for the interpreter lock while the model runs: with executor
threads receiving a flood, each of the model's many small torch calls waited for the lock and a
2 ms step took 10-30 ms. Services and timers wait for at most one model step (or
``SERVICE_PERIOD`` while frames stream in).

Every camera frame of the first camera ends in one diagnostics counter (processed, dropped by
reason, unpaired, bad, or pending): see ``reward_diagnostics``.

Topics (defaults):
    in   /camera/<name>/image_raw     sensor_msgs/Image, one per camera
         /joint_states                sensor_msgs/JointState
         /episode/status              sarm2_msgs/EpisodeStatus (episode boundaries)
    out  /sarm2/stage_reward          sarm2_msgs/StageReward, one per processed frame
         /sarm2/progress, /sarm2/reward   std_msgs/Float32 (rqt_plot)
         /sarm2/markers               visualization_msgs/MarkerArray (RViz)
         /sarm2/overlay/image_raw     sensor_msgs/Image, annotated
         /diagnostics                 diagnostic_msgs/DiagnosticArray
Services: ~/set_task (sarm2_msgs/SetTask), ~/reset (sarm2_msgs/ResetEpisode).
"""

from collections import deque
import time
import uuid

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sarm2_common import topics
from sarm2_common.catalogue import catalogue_instruction
from sarm2_common.image_encoding import ImageDecodeError
from sarm2_common.message_limits import string_problem
from sarm2_common.ros.conversions import (diagnostics_msg, image_msg_to_rgb, JointStateError,
                                          rgb_to_image_msg, using_cv_bridge)
from sarm2_common.ros.graph import warn_if_name_taken
from sarm2_common.ros.parameters import NodeParameters
from sarm2_common.ros.qos import LATCHED, RELIABLE, sensor_qos
from sarm2_common.ros.spin import spin_node
from sarm2_common.ros.stamps import NS
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
from ..stamp_pairing import Blend, DEFAULT_HISTORY, header_stamp_ns, StampPairer

JOINTS = 'joint_states'
MAX_STAMP_AHEAD_NS = 5 * NS    # a camera stamp further ahead of the node clock is bogus
# Joint states are small and often much faster than the cameras (200 Hz against 30 Hz): keep
# enough of them to cover a camera frame that arrives late (pairing) and a model step (DDS).
JOINT_HISTORY = 64
JOINT_QOS_DEPTH = 20
# s: longest wait for input before frames whose partners never came are decided.
EXPIRY_POLL = 0.05
# s: while frames stream in, how often services, timers and the episode status are served.
SERVICE_PERIOD = 0.02
class _WhenNeeded(ReentrantCallbackGroup):
    """A callback group whose entities the executor waits on only while ``needed()`` says so.

    ``CallbackGroup.can_execute`` is the executor's question "may I wait on and run this?";
    answering no leaves the messages in DDS (keep-last) until they are useful.
    """

    def __init__(self, needed):
        super().__init__()
        self._needed = needed

    def can_execute(self, entity) -> bool:
        return self._needed()


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

        self._backend: RewardBackend | None = None
        self._pairer: StampPairer | None = None
        self._queue: DroppingQueue | None = None
        self._inputs: list = []                  # (subscription, handler(data, info))
        self._sequence: dict[bytes, int] = {}    # publisher gid -> last frame sequence number
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
        # The pairer holds at least as many messages per stream as the subscriptions queue, so
        # one stream lagging another by up to that depth costs no frame.
        depth = max(DEFAULT_HISTORY, config.sensor_qos_depth)
        self._pairer = StampPairer(
            streams, cameras[0], slop_ns=int(config.pairing_slop * NS),
            max_delay_ns=int(config.max_pairing_delay * NS),
            history={**dict.fromkeys(cameras, depth), JOINTS: max(JOINT_HISTORY, depth)},
            interpolate=[JOINTS], max_gap_ns=int(config.joint_interpolation_gap * NS),
            fresh_ns=int(config.fresh_joint_age * NS))
        self._queue = DroppingQueue(config.queue_size)
        self._seen_timeline_resets = self._seen_backwards = 0
        self._monitor = RewardNodeMonitor(streams, stale_after=config.stale_timeout)
        self._monitor.model_id = backend.model_id
        self._monitor.device = config.device
        self._sequence = {}
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
        self._discard_waiting_frames()  # frames from before the pause never pair with later ones
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
        self._discard_waiting_frames()
        for subscription in self._subscriptions_io:
            self.destroy_subscription(subscription)
        for publisher in self._publishers_io.values():
            self.destroy_lifecycle_publisher(publisher)
        self._subscriptions_io, self._publishers_io, self._inputs = [], {}, []
        if self._backend is not None:
            self._backend.close()
        self._backend = None
        self._pairer = self._queue = None

    def _create_io(self, config: RewardNodeConfig) -> None:
        output_qos = QoSProfile(depth=config.output_qos_depth, reliability=RELIABLE.reliability,
                                history=RELIABLE.history)

        def publish(msg_type, topic: str):
            # No QoS event handlers: each is one more entity in every executor wait, and a
            # mismatched subscriber reports the incompatibility itself.
            return self.create_lifecycle_publisher(
                msg_type, topic, output_qos,
                event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))
        self._publishers_io = {
            'stage_reward': publish(StageReward, topics.STAGE_REWARD_TOPIC),
            'progress': publish(Float32, '/sarm2/progress'),
            'reward': publish(Float32, '/sarm2/reward'),
            'markers': publish(MarkerArray, '/sarm2/markers'),
            'overlay': publish(Image, '/sarm2/overlay/image_raw'),
        }
        # raw=True: the callback gets the serialized bytes; only frames that reach the model are
        # ever deserialized. The message info's sequence numbers reveal frames of the first
        # camera that DDS replaced before the node took them.
        inputs = [(Image, config.topic_of(c, self._cameras), c, config.sensor_qos_depth, None)
                  for c in self._cameras]
        inputs.append((JointState, config.joint_states_topic, JOINTS,
                       max(config.sensor_qos_depth, JOINT_QOS_DEPTH),
                       _WhenNeeded(self._joint_states_needed)))
        self._inputs = []
        for msg_type, topic, stream, depth, group in inputs:
            handler = self._on_frame if stream == self._cameras[0] else \
                (lambda data, info, s=stream: self._on_message(s, data))
            qos = sensor_qos(config.sensor_qos_reliability, depth)
            self._inputs.append((self.create_subscription(
                msg_type, topic, handler, qos, raw=True, callback_group=group),
                handler))
        self._subscriptions_io = [subscription for subscription, _ in self._inputs]

    def _joint_states_needed(self) -> bool:
        """Take joint states while a frame waits for one, and often enough to see the stream."""
        if self._pairer is not None and self._pairer.pending():
            return True
        heard = self._monitor.last_heard.get(JOINTS)
        return heard is None or time.monotonic() - heard > self.config.stale_timeout / 4

    # ---- the node's one thread ---------------------------------------------------------------
    def spin_with(self, executor) -> None:
        """Serve ``executor`` and run the model in this thread until the context shuts down."""
        served = time.monotonic()
        while self.context.ok():
            self._take_input()
            if self._pairer is not None:
                self._enqueue(self._pairer.flush_expired())
            item = self._queue.get_nowait() if self._queue is not None else None
            if item is None:
                executor.spin_once(timeout_sec=EXPIRY_POLL)  # idle: wait for anything
                served = time.monotonic()
                continue
            started = time.monotonic()
            try:
                self._process(*item)
            except Exception as exc:  # a bug must not stop the node; it shows in diagnostics
                self._bad_input('internal_error', f'{type(exc).__name__}: {exc}')
            self._monitor.busy(time.monotonic() - started)
            if started - served > SERVICE_PERIOD:
                executor.spin_once(timeout_sec=0.0)  # services, timers, episode status
                served = time.monotonic()

    def _take_input(self) -> None:
        """Take every message DDS holds now for the camera and joint subscriptions.

        ``take_message`` is what the executor calls for a ready subscription; calling it here
        saves an executor wait (a Python loop over every entity of the node) per message.
        Partner streams (other cameras, joint states) first: adding a frame stamped
        ``max_pairing_delay`` after a waiting one decides the waiting one with what the pairer
        holds, so after a busy spell a backlog of frames taken before the partners DDS already
        holds for them would pair its oldest frames with older joint states than their own.
        """
        for subscription, handler in self._inputs[1:] + self._inputs[:1]:
            with subscription.handle:
                while (taken := subscription.handle.take_message(
                        subscription.msg_type, subscription.raw)) is not None:
                    handler(*taken)
    # ---- input path: read the stamp, pair, hand over -----------------------------------------
    def _on_frame(self, data: bytes, info) -> None:
        gid = bytes(info['publisher_gid']['data'])
        number = info['publication_sequence_number']
        last = self._sequence.get(gid)
        if number is not None:
            self._sequence[gid] = number
            if last is not None and number > last + 1:
                skipped = number - last - 1
                self._monitor.heard(self._cameras[0], skipped)
                self._monitor.drop('superseded' if self._active else 'inactive', skipped)
        self._on_message(self._cameras[0], data)

    def _on_message(self, stream: str, data: bytes) -> None:
        self._monitor.heard(stream)
        is_frame = stream == self._cameras[0]
        if not self._active or self._pairer is None:
            if is_frame:
                self._monitor.drop('inactive')
            return
        try:
            stamp = header_stamp_ns(data)
        except ValueError as exc:
            self._bad_input('header', f'{stream}: {exc}', costs_frame=is_frame)
            return
        now = self.get_clock().now().nanoseconds
        # A stamp far ahead of the node clock is bogus (or another clock): adopting it would
        # make every later frame look like time went backwards. Before /clock starts (sim time
        # at 0) there is nothing to compare with.
        if now > 0 and stamp > now + MAX_STAMP_AHEAD_NS:
            self._bad_input('stamp_ahead', f'{stream}: header stamp {(stamp - now) / NS:.1f} s '
                            'ahead of the node clock (message dropped)', costs_frame=is_frame)
            return
        frames = self._pairer.add(stream, stamp, data)
        stats = self._pairer.stats
        if stats.backwards > self._seen_backwards:
            self._seen_backwards = stats.backwards
            # A frame lost this way is counted by the pairer (bad_frames in diagnostics).
            self._bad_input('stamp_backwards', f'{stream}: header stamp went back in time '
                            '(message dropped)', costs_frame=False)
        if stats.timeline_resets > self._seen_timeline_resets:
            self._seen_timeline_resets = stats.timeline_resets
            if self._episode_from_status:
                # The policy node owns episode boundaries: keep its episode id.
                self.get_logger().warn(f'{stream}: stamps restarted (clock reset?) inside '
                                       f'episode {self._episode_id}; keeping the episode')
            else:
                self.get_logger().warn(f'{stream}: stamps restarted (clock reset or bag loop):'
                                       ' starting a new episode')
                self._start_episode(_new_episode_id(), self._task, self._instruction)
        self._enqueue(frames)

    def _enqueue(self, frames) -> None:
        generation = self._generation
        for frame in frames:
            if self._queue.put((generation, frame)):
                self._monitor.drop('queue')

    def _discard_waiting_frames(self) -> None:
        """Forget paired and half-paired frames (counted as dropped by a reset)."""
        if self._queue is not None:
            self._monitor.drop('reset', self._queue.clear())
        if self._pairer is not None:
            self._pairer.clear()

    # ---- model path ----------------------------------------------------------------------------
    def _process(self, generation: int, frame) -> None:
        backend = self._backend
        if not self._active or backend is None or generation != self._generation:
            self._monitor.drop('reset')  # paired before a reset: the previous episode's
            return
        config = self.config
        if config.output_rate > 0 and self._last_processed_ns is not None and \
                frame.stamp_ns - self._last_processed_ns < NS / config.output_rate:
            self._monitor.drop('rate_limit')
            return
        messages = {c: deserialize_message(frame.items[c], Image) for c in self._cameras}
        images = {}
        for camera, msg in messages.items():
            try:
                images[camera] = image_msg_to_rgb(msg)
            except ImageDecodeError as exc:
                self._bad_input(f'image_{exc.kind}', f'camera {camera}: {exc}')
                return
        try:
            joints = self._joint_vector(frame.items[JOINTS], backend.state_dim)
        except JointStateError as exc:
            self._bad_input(exc.kind, str(exc))
            return
        try:
            estimate = backend.step(images, joints, frame.stamp_ns / NS)
        except ValueError as exc:
            self._bad_input('model_input', str(exc))
            return
        self._last_processed_ns = frame.stamp_ns
        header = messages[self._cameras[0]].header
        index = self._frame_index
        self._frame_index += 1
        self._rewards.append(estimate.reward)
        self._publish(estimate, header, index, images[self._cameras[0]])
        latency = (self.get_clock().now().nanoseconds - frame.stamp_ns) / NS
        self._monitor.frame_done(latency, estimate.inference_time)
        self._monitor.frame_index = self._frame_index

    def _joint_vector(self, partner, state_dim) -> np.ndarray:
        """Joint positions in model order; a ``Blend`` is interpolated to the frame's stamp."""
        names = self.config.joint_names
        if not isinstance(partner, Blend):
            return model_joint_state(deserialize_message(partner, JointState), names, state_dim)
        before = model_joint_state(deserialize_message(partner.before, JointState), names,
                                   state_dim)
        after = model_joint_state(deserialize_message(partner.after, JointState), names,
                                  state_dim)
        return ((1.0 - partner.weight) * before + partner.weight * after).astype(np.float32)

    def _publish(self, estimate, header: Header, index: int, image) -> None:
        pubs = self._publishers_io
        pubs['stage_reward'].publish(stage_reward_msg(
            estimate, header, self._task, self._instruction, self._episode_id, index))
        # The optional outputs cost the model's thread time: build them only for listeners.
        if pubs['progress'].get_subscription_count() > 0:
            pubs['progress'].publish(Float32(data=float(estimate.progress)))
        if pubs['reward'].get_subscription_count() > 0:
            pubs['reward'].publish(Float32(data=float(estimate.reward)))
        if pubs['markers'].get_subscription_count() > 0:
            marker_header = Header(stamp=header.stamp,
                                   frame_id=self.config.marker_frame or header.frame_id)
            pubs['markers'].publish(reward_markers(estimate, marker_header))
        if pubs['overlay'].get_subscription_count() > 0:
            overlay = draw_overlay(image, estimate.primitive_name,
                                   estimate.primitive_confidence, estimate.progress,
                                   estimate.success_probability, self._rewards,
                                   width=self.config.overlay_width)
            pubs['overlay'].publish(rgb_to_image_msg(overlay, header))

    def _bad_input(self, kind: str, message: str, costs_frame: bool = True) -> None:
        if self._monitor.bad_input(kind, costs_frame):
            self.get_logger().warn(f'bad input ({kind}): {message} '
                                   '(logged once per kind; counted in /diagnostics)')
        self._monitor.error = f'{kind}: {message}'

    # ---- episodes ------------------------------------------------------------------------------
    def _start_episode(self, episode_id: str, task: str, instruction: str,
                       from_status: bool = False) -> None:
        self._generation += 1
        self._episode_id = episode_id
        self._episode_from_status = from_status
        self._task, self._instruction = task, instruction
        self._frame_index = 0
        self._last_processed_ns = None
        self._rewards = deque(maxlen=self.config.sparkline_length)
        self._discard_waiting_frames()
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
                            '(message ignored)', costs_frame=False)
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
        pairer, queue = self._pairer, self._queue
        pending = (pairer.pending() if pairer is not None else 0) \
            + (len(queue) if queue is not None else 0)
        report = self._monitor.report(pairer.stats if pairer is not None else None, pending)
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
    spin_node(RewardNode, num_threads=1, args=args)


if __name__ == '__main__':
    main()
