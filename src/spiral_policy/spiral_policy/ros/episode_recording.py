"""Recording one policy episode as a rosbag2 bag (the policy node's recorder side).

The bag layout is the demo layout of ``sarm2_common.bag_io`` (``bag_dataset.read_episodes``
reads rollouts and demonstrations alike): the camera and joint messages the policy saw,
``/sim/action`` (executed action after safety, policy units), ``/policy/base_action`` (policy
output), ``/policy/instruction``, the published commands under their topics, rewards, ground
truth (sim), ``/episode/status`` and ``/episode/metadata`` (kind start first, kind end last).

Messages are written from several threads (control loop, reward and status callbacks), so every
write takes one lock; the recorder itself (``spiral_policy.rollout_recorder``) flushes chunks so
the bag stays readable if the process is killed.
"""

import json
import threading

from rclpy.serialization import serialize_message
from sarm2_common import bag_io, topics
from sarm2_msgs.msg import EpisodeMetadata, EpisodeStatus
from std_msgs.msg import Float32MultiArray, Float64, String

from .conversions import float64_array, float_array
from ..rollout_recorder import RolloutRecorder

COMMAND_TYPES = {'twist': 'geometry_msgs/msg/TwistStamped',
                 'joint_trajectory': 'trajectory_msgs/msg/JointTrajectory',
                 'joint_array': 'std_msgs/msg/Float64MultiArray'}


def _msgtype(message_class) -> str:
    module = message_class.__module__.split('.')[0]
    return f'{module}/msg/{message_class.__name__}'


class EpisodeRecording:
    """Writes the bag of the episode being run, if it is recorded; thread-safe."""

    def __init__(self, clock, on_drop):
        self._clock = clock                  # node clock: write times of messages
        self._on_drop = on_drop              # called when a message could not be written
        self._lock = threading.Lock()
        self._recorder: RolloutRecorder | None = None
        self._last_written: dict[str, object] = {}

    @property
    def dropped(self) -> int:
        """Messages the recorder could not write (disk full, closed bag)."""
        return self._recorder.dropped if self._recorder is not None else 0

    def start(self, directory: str, flush_period: float, episode_id: str, config,
              metadata: dict, instruction: str, start_msg: EpisodeMetadata):
        """Open ``directory/<episode_id>`` with every topic of the episode; return its path."""
        if self._recorder is None or str(self._recorder.directory) != directory:
            self._recorder = RolloutRecorder(directory, bag_io.typestore(), flush_period)
        bag_topics = {topics.image_topic(c): bag_io.IMAGE_TYPE for c in config.cameras}
        bag_topics.update({
            topics.JOINT_STATES_TOPIC: bag_io.JOINT_STATE_TYPE,
            bag_io.ACTION_TOPIC: bag_io.ACTION_TYPE,
            bag_io.BASE_ACTION_TOPIC: _msgtype(Float32MultiArray),
            bag_io.INSTRUCTION_TOPIC: _msgtype(String),
            config.command_topic: COMMAND_TYPES[config.command_interface],
            config.reward_topic: bag_io.STAGE_REWARD_TYPE,
            topics.EPISODE_STATUS_TOPIC: _msgtype(EpisodeStatus),
            bag_io.METADATA_TOPIC: bag_io.METADATA_TYPE,
        })
        if config.gripper_topic:
            bag_topics[config.gripper_topic] = _msgtype(Float64)
        if config.success_source == 'sim':
            bag_topics[bag_io.GROUND_TRUTH_TOPIC] = bag_io.GROUND_TRUTH_TYPE
        with self._lock:
            self._last_written = {}
            path = self._recorder.start(episode_id, bag_topics, metadata)
        self.record(bag_io.METADATA_TOPIC, start_msg)
        self.record(bag_io.INSTRUCTION_TOPIC, String(data=instruction))
        return path

    def record(self, topic: str, msg) -> None:
        """Write one message now (nothing happens when no bag is open)."""
        recorder = self._recorder
        if recorder is None or not recorder.recording:
            return
        with self._lock:
            if not recorder.write(topic, serialize_message(msg), self._clock().nanoseconds):
                self._on_drop()

    def record_step(self, used: list, base_action, executed_action, sent: list) -> None:
        """Write one control step: the observations used, both actions, the commands sent."""
        for topic, msg in used:
            # A frame reused by several control steps is recorded once.
            if self._last_written.get(topic) is not msg:
                self._last_written[topic] = msg
                self.record(topic, msg)
        if base_action is not None:
            self.record(bag_io.BASE_ACTION_TOPIC, float_array(base_action))
        if executed_action is not None:
            self.record(bag_io.ACTION_TOPIC, float64_array(executed_action))
        for topic, msg in sent:
            self.record(topic, msg)

    def stop(self, end_msg: EpisodeMetadata, metadata: dict) -> None:
        """Write the closing metadata and close the bag."""
        if self._recorder is None or not self._recorder.recording:
            return
        self.record(bag_io.METADATA_TOPIC, end_msg)
        with self._lock:
            self._recorder.stop(metadata)

    def flush_if_due(self) -> None:
        """Flush buffered messages to disk when the flush period has passed."""
        if self._recorder is not None:
            with self._lock:
                self._recorder.flush_if_due()


def metadata_msg(kind: str, episode, metadata: dict, stamp) -> EpisodeMetadata:
    """Build the bag's start/end metadata record of ``episode``."""
    msg = EpisodeMetadata(kind=kind, episode_id=episode.episode_id, task=episode.task,
                          instruction=episode.instruction, seed=episode.seed,
                          success=bool(metadata.get('success', False)),
                          reason=episode.reason if kind == bag_io.METADATA_END else '',
                          steps=episode.steps if kind == bag_io.METADATA_END else 0,
                          metadata_json=json.dumps(metadata, sort_keys=True, default=str))
    msg.header.stamp = stamp
    return msg
