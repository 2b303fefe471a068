"""rosbag2 bags (MCAP storage) without ROS: topic names, messages, writer and reader.

Shared by the demonstration recorder (sarm2_sim) and the rollout recorder: both write the same
topics, so one reader (``bag_dataset``) turns either into training episodes. Built on the pure
Python ``rosbags`` package, whose CDR encoding and RIHS01 type hashes match rosidl's; the
project's own interfaces are registered from the installed ``sarm2_msgs`` .msg files.

Demo/rollout bag layout (one bag = one episode; all stamps in the episode's clock):

- ``/camera/<name>/image_raw``  sensor_msgs/msg/Image, rgb8, one per frame and camera
- ``/joint_states``             sensor_msgs/msg/JointState, arm joints (rad) + fingers (m)
- ``/sim/action``               std_msgs/msg/Float64MultiArray, the command issued after the frame
- ``/sim/ground_truth``         sarm2_msgs/msg/SimGroundTruth, per-frame primitive label + success
- ``/episode/metadata``         sarm2_msgs/msg/EpisodeMetadata, kind=start first, kind=end last
"""

from collections.abc import Iterator
import functools
import os
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_types_from_msg, Stores, get_typestore
from rosbags.typesys.store import Typestore

from sarm2_common.bag_writer import StreamingBagWriter


ACTION_TOPIC = '/sim/action'
# Rollouts: the policy's raw action before the safety filter (ACTION_TOPIC holds the executed one).
BASE_ACTION_TOPIC = '/policy/base_action'
INSTRUCTION_TOPIC = '/policy/instruction'
GROUND_TRUTH_TOPIC = '/sim/ground_truth'
METADATA_TOPIC = '/episode/metadata'

IMAGE_TYPE = 'sensor_msgs/msg/Image'
JOINT_STATE_TYPE = 'sensor_msgs/msg/JointState'
ACTION_TYPE = 'std_msgs/msg/Float64MultiArray'
GROUND_TRUTH_TYPE = 'sarm2_msgs/msg/SimGroundTruth'
METADATA_TYPE = 'sarm2_msgs/msg/EpisodeMetadata'
STAGE_REWARD_TYPE = 'sarm2_msgs/msg/StageReward'

METADATA_START = 'start'
METADATA_END = 'end'
BAG_METADATA_FILE = 'metadata.yaml'

_INTERFACE_PACKAGE = 'sarm2_msgs'


def interface_dir() -> Path:
    """Find the directory holding sarm2_msgs' msg/ folder (install space, then source tree)."""
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'share' / _INTERFACE_PACKAGE
        if prefix and (candidate / 'msg').is_dir():
            return candidate
    source_tree = Path(__file__).resolve().parents[2] / _INTERFACE_PACKAGE
    if (source_tree / 'msg').is_dir():
        return source_tree
    raise FileNotFoundError(f'cannot find {_INTERFACE_PACKAGE} interfaces: source the workspace '
                            f'(install/setup.sh) or keep the source tree at {source_tree}')


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Return the ROS 2 Kilted type store with sarm2_msgs' messages registered."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted((interface_dir() / 'msg').glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(encoding='utf-8'),
                                        f'{_INTERFACE_PACKAGE}/msg/{path.stem}'))
    store.register(types)
    return store


# --- message building -------------------------------------------------------------------------

def _stamp(stamp_ns: int):
    time_type = typestore().types['builtin_interfaces/msg/Time']
    return time_type(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def header(stamp_ns: int, frame_id: str = ''):
    """Return a std_msgs/Header at ``stamp_ns`` nanoseconds."""
    return typestore().types['std_msgs/msg/Header'](stamp=_stamp(stamp_ns), frame_id=frame_id)


def stamp_to_ns(stamp) -> int:
    """Return a builtin_interfaces/Time (from rosbags or rclpy) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_message(image: np.ndarray, stamp_ns: int, frame_id: str):
    """Build an rgb8 sensor_msgs/Image from a uint8 [H, W, 3] array."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}')
    height, width, _ = image.shape
    return typestore().types[IMAGE_TYPE](
        header=header(stamp_ns, frame_id), height=height, width=width, encoding='rgb8',
        is_bigendian=0, step=width * 3,
        data=np.ascontiguousarray(image).reshape(-1))


def image_from_message(message) -> np.ndarray:
    """Return an Image message as uint8 [H, W, 3] RGB (rgb8, bgr8, rgba8, bgra8, mono8)."""
    channels = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
    if message.encoding not in channels:
        raise ValueError(f'unsupported image encoding {message.encoding!r}; '
                         f'expected one of {", ".join(channels)}')
    depth = channels[message.encoding]
    rows = np.frombuffer(bytes(message.data) if not isinstance(message.data, np.ndarray)
                         else message.data, dtype=np.uint8)
    if rows.size < message.step * message.height:
        raise ValueError(f'image data has {rows.size} bytes, expected step {message.step} x '
                         f'height {message.height}')
    pixels = rows[:message.step * message.height].reshape(message.height, message.step)
    pixels = pixels[:, :message.width * depth].reshape(message.height, message.width, depth)
    if message.encoding == 'mono8':
        return np.repeat(pixels, 3, axis=2)
    if message.encoding.startswith('bgr'):
        pixels = pixels[:, :, 2::-1]
    return np.ascontiguousarray(pixels[:, :, :3])


def joint_state_message(names: tuple[str, ...] | list[str], positions: np.ndarray,
                        stamp_ns: int, frame_id: str = ''):
    """Build a sensor_msgs/JointState with positions only."""
    return typestore().types[JOINT_STATE_TYPE](
        header=header(stamp_ns, frame_id), name=list(names),
        position=np.asarray(positions, dtype=np.float64),
        velocity=np.zeros(0, dtype=np.float64), effort=np.zeros(0, dtype=np.float64))


def action_message(action: np.ndarray):
    """Build a std_msgs/Float64MultiArray holding one action vector."""
    types = typestore().types
    layout = types['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0)
    return types[ACTION_TYPE](layout=layout, data=np.asarray(action, dtype=np.float64))


def ground_truth_message(stamp_ns: int, task: str, episode_id: str, step: int, success: bool,
                         primitive_id: int, primitive_name: str, sim_reward: float):
    """Build a sarm2_msgs/SimGroundTruth."""
    return typestore().types[GROUND_TRUTH_TYPE](
        header=header(stamp_ns), task=task, episode_id=episode_id, step=int(step),
        success=bool(success), expert_primitive_id=int(primitive_id),
        expert_primitive_name=primitive_name, sim_reward=float(sim_reward))


def metadata_message(stamp_ns: int, kind: str, episode_id: str, task: str, instruction: str,
                     seed: int = -1, success: bool = False, reason: str = '', steps: int = 0,
                     metadata_json: str = '{}'):
    """Build a sarm2_msgs/EpisodeMetadata record (kind: METADATA_START or METADATA_END)."""
    if kind not in (METADATA_START, METADATA_END):
        raise ValueError(f'metadata kind must be {METADATA_START!r} or {METADATA_END!r}')
    return typestore().types[METADATA_TYPE](
        header=header(stamp_ns), kind=kind, episode_id=episode_id, task=task,
        instruction=instruction, seed=int(seed), success=bool(success), reason=reason,
        steps=int(steps), metadata_json=metadata_json)


# --- writing and reading ----------------------------------------------------------------------

class BagWriter:
    """Write one rosbag2 bag (MCAP, zstd-compressed checksummed chunks) message by message.

    Use as a context manager; ``metadata.yaml`` appears only when the bag is closed, which is how
    readers and the recorder tell a finished bag from one cut short.
    """

    def __init__(self, path: str | Path, compress: bool = True, chunk_size: int = 1 << 20):
        self.path = Path(path)
        self._compression = 'zstd' if compress else ''
        self._chunk_size = chunk_size       # bytes of records per checksummed chunk
        self._writer: StreamingBagWriter | None = None
        self.message_count = 0

    def __enter__(self) -> 'BagWriter':
        self._writer = StreamingBagWriter(self.path, typestore(), streaming=False,
                                          compression=self._compression,
                                          chunk_size=self._chunk_size)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml)."""
        if self._writer is not None:
            self._writer.close()

    def write(self, topic: str, message, timestamp_ns: int) -> None:
        """Serialize and write a rosbags message object."""
        msgtype = message.__msgtype__
        data = typestore().serialize_cdr(message, msgtype)
        self._write(topic, msgtype, data, timestamp_ns, canonical=False)

    def write_serialized(self, topic: str, msgtype: str, data: bytes, timestamp_ns: int) -> None:
        """Write CDR bytes as produced by rclpy.serialization.serialize_message."""
        self._write(topic, msgtype, data, timestamp_ns, canonical=True)

    def _write(self, topic: str, msgtype: str, data: bytes, timestamp_ns: int,
               canonical: bool) -> None:
        if self._writer is None:
            raise ValueError(f'{self.path}: open the bag with "with BagWriter(...)" first')
        recorded = self._writer.connection_type(topic)
        if recorded is None:
            self._writer.add_connection(topic, msgtype)
        elif recorded != msgtype:
            raise ValueError(f'topic {topic} already holds {recorded}, not {msgtype}')
        self._writer.write(topic, data, int(timestamp_ns), canonical=canonical)
        self.message_count += 1


def is_bag_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like a rosbag2 bag directory (finished or not)."""
    path = Path(path)
    return path.is_dir() and ((path / BAG_METADATA_FILE).is_file()
                              or any(path.glob('*.mcap')))


def is_finished_bag(path: str | Path) -> bool:
    """Whether the bag at ``path`` was closed (its metadata.yaml exists)."""
    return (Path(path) / BAG_METADATA_FILE).is_file()


def topic_counts(path: str | Path) -> dict[str, int]:
    """Message count per topic of a finished bag, from its metadata (no message reads)."""
    with Reader(path) as reader:
        return {topic: info.msgcount for topic, info in reader.topics.items()}


def read_messages(path: str | Path, topics: tuple[str, ...] | None = None
                  ) -> Iterator[tuple[str, int, object]]:
    """Yield (topic, log time ns, deserialized message) of a finished bag in time order."""
    store = typestore()
    with Reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, timestamp, data in reader.messages(connections=connections):
            yield connection.topic, timestamp, store.deserialize_cdr(data, connection.msgtype)
