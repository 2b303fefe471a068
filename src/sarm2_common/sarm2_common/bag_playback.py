"""Read rosbag2 bags tolerantly and schedule their messages for replay (ROS-free).

Recorded episodes are the product's data, and some of them end badly: a killed recorder leaves an
MCAP file without its summary or ``metadata.yaml``, a full disk truncates a chunk, a bad disk
flips a byte. The one reader here (players and dataset readers use it alike) streams the MCAP
records, verifies every chunk's and the data section's CRC, keeps every message up to the
first unreadable or corrupt record, and reports what could not be read (``ReadReport``:
``corrupt`` when a checksum failed) instead of failing the whole bag. The CDR bytes are
returned as stored, so a player can publish them unchanged (the same bytes ``rclpy``
serializes).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mcap.records import Channel, Message, Schema
from mcap.stream_reader import CRCValidationError, StreamReader


@dataclass
class RawMessage:
    """One stored message: topic, ROS type name, log time and the serialized CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@dataclass
class ReadReport:
    """What reading a bag produced: message count, and problems if part of it was unreadable."""

    path: Path
    messages: int = 0
    problems: list[str] = field(default_factory=list)
    corrupt: bool = False                      # a checksum did not match (data altered)

    @property
    def complete(self) -> bool:
        return not self.problems


def bag_files(path: str | Path) -> list[Path]:
    """Return the storage files of a bag directory (or one .mcap file) in recording order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f'{path}: no such bag directory')
    files = sorted(path.glob('*.mcap'))
    if not files:
        if any(path.glob('*.db3')):
            raise ValueError(f'{path}: sqlite3 bags are not supported for replay; convert to '
                             'MCAP (ros2 bag convert) or re-record with the default storage')
        raise ValueError(f'{path}: not a rosbag2 bag (no .mcap file)')
    return files


def iter_raw_messages(path: str | Path, report: ReadReport,
                      topics: tuple[str, ...] | None = None) -> Iterator[RawMessage]:
    """Yield the readable messages of a bag in file order; record problems in ``report``.

    Stops at the first unreadable record of each file (nothing after a corrupt byte can be
    trusted) and moves on to the next file.
    """
    for file in bag_files(path):
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        try:
            with open(file, 'rb') as stream:
                for record in StreamReader(stream, validate_crcs=True).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        channels[record.id] = (record.topic, schemas.get(record.schema_id, ''))
                    elif isinstance(record, Message) and record.channel_id in channels:
                        topic, msgtype = channels[record.channel_id]
                        if topics is None or topic in topics:
                            report.messages += 1
                            yield RawMessage(topic, msgtype, record.log_time, bytes(record.data))
        except CRCValidationError as error:
            # A chunk (or the data section) does not match its checksum: the recorded bytes
            # were altered after writing. Messages of that chunk were not yielded.
            report.corrupt = True
            report.problems.append(f'{file.name}: checksum mismatch after {report.messages} '
                                   f'messages: the file is corrupt ({error})')
        except Exception as error:  # noqa: BLE001 - see below
            # zstd/lz4 decompression and struct unpacking raise a variety of exception types;
            # the file is unreadable from here on, whatever the type.
            report.problems.append(f'{file.name}: unreadable after {report.messages} messages '
                                   f'({type(error).__name__}: {error})')
    if not (Path(path) / 'metadata.yaml').exists() and Path(path).is_dir():
        report.problems.append('metadata.yaml missing: the recorder did not close the bag')


def read_bag(path: str | Path, topics: tuple[str, ...] | None = None
             ) -> tuple[list[RawMessage], ReadReport]:
    """Read all readable messages, sorted by log time (stable), with the read report."""
    report = ReadReport(Path(path))
    messages = list(iter_raw_messages(path, report, topics))
    messages.sort(key=lambda m: m.timestamp_ns)
    return messages, report


# What a replay publishes by default: measurements (sensor_msgs, poses, transforms). Commands
# must never reach a live arm from a recording unless the user names them explicitly; outputs of
# our own nodes (rewards, status, metadata) would mix with the live ones.
SENSOR_TYPE_PREFIXES = ('sensor_msgs/msg/', 'geometry_msgs/msg/PoseStamped',
                        'geometry_msgs/msg/PoseWithCovarianceStamped', 'tf2_msgs/msg/TFMessage',
                        'nav_msgs/msg/Odometry')
COMMAND_TYPES = ('geometry_msgs/msg/Twist', 'geometry_msgs/msg/TwistStamped',
                 'trajectory_msgs/msg/JointTrajectory', 'std_msgs/msg/Float64MultiArray',
                 'std_msgs/msg/Float64', 'std_msgs/msg/Float32MultiArray',
                 'control_msgs/msg/JointJog')


def is_sensor_type(msgtype: str) -> bool:
    """Tell whether ``msgtype`` is a measurement a replay publishes by default."""
    return msgtype.startswith(SENSOR_TYPE_PREFIXES)


@dataclass
class TopicSelection:
    """Which recorded topics a replay publishes, and which it leaves out (and why)."""

    play: tuple[str, ...]
    commands_refused: tuple[str, ...] = ()     # named, but command types not allowed
    not_sensor: tuple[str, ...] = ()           # left out by default (not measurements)
    missing: tuple[str, ...] = ()              # named, but not in the bag


def select_topics(available: dict[str, str], requested: tuple[str, ...] = (),
                  allowed_commands: tuple[str, ...] = ()) -> TopicSelection:
    """Choose the topics of a bag (topic -> type) to replay.

    No ``requested`` topics: the sensor topics only. Requested topics are played as named,
    except command-typed ones, which also have to be in ``allowed_commands``; an allowed
    command topic is played in either case.
    """
    if requested:
        candidates = [t for t in requested if t in available]
        missing = tuple(t for t in requested if t not in available)
        not_sensor = ()
    else:
        candidates = [t for t in available if is_sensor_type(available[t])]
        missing = ()
        not_sensor = tuple(t for t in available
                           if not is_sensor_type(available[t]) and t not in allowed_commands)
    candidates += [t for t in allowed_commands if t in available and t not in candidates]
    missing += tuple(t for t in allowed_commands if t not in available)
    refused = tuple(t for t in candidates
                    if available[t] in COMMAND_TYPES and t not in allowed_commands)
    play = tuple(t for t in candidates if t not in refused)
    return TopicSelection(play, refused, not_sensor, missing)


@dataclass
class PlaybackConfig:
    """How to replay: speed factor, repetitions and a topic filter."""

    rate: float = 1.0                       # 2.0 plays twice as fast
    loop: bool = False
    topics: tuple[str, ...] = ()            # empty: every topic
    start_offset: float = 0.0               # s of the bag to skip at the start

    def __post_init__(self):
        if not 0.01 <= self.rate <= 100.0:
            raise ValueError(f'rate must be within 0.01..100, got {self.rate}')
        if self.start_offset < 0:
            raise ValueError(f'start_offset must be >= 0 s, got {self.start_offset}')
        self.topics = tuple(self.topics)


def playback_schedule(messages: list[RawMessage], config: PlaybackConfig
                      ) -> Iterator[tuple[float, RawMessage]]:
    """Yield (seconds after playback start, message) in order; endless when looping.

    Time between messages is the recorded time divided by ``rate``; a loop starts again one
    median inter-message gap after the previous pass ended, so the first and last messages do
    not arrive together.
    """
    selected = [m for m in messages if not config.topics or m.topic in config.topics]
    if not selected:
        return
    start_ns = selected[0].timestamp_ns + int(config.start_offset * 1e9)
    selected = [m for m in selected if m.timestamp_ns >= start_ns]
    if not selected:
        return
    span = (selected[-1].timestamp_ns - start_ns) / 1e9
    gaps = sorted(b.timestamp_ns - a.timestamp_ns for a, b in zip(selected, selected[1:]))
    pause = (gaps[len(gaps) // 2] / 1e9) if gaps else 0.1
    offset = 0.0
    while True:
        for message in selected:
            yield offset + (message.timestamp_ns - start_ns) / 1e9 / config.rate, message
        if not config.loop:
            return
        offset += (span + pause) / config.rate
