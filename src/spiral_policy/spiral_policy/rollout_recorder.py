"""Rollout recording: one rosbag2 bag (MCAP) per episode that survives a crash (ROS-free).

Why not the ordinary bag writer: an MCAP file becomes readable only when its footer is written
at close, and rosbag2's ``metadata.yaml`` is written only then too. A policy process killed
mid-episode (power cut, OOM, Ctrl-C twice) would leave an unreadable rollout exactly when it is
most needed. ``StreamingBagWriter`` therefore keeps the bag valid on disk at all times:

- messages are appended as plain (unchunked) MCAP message records, in log-time order;
- at least every ``flush_period`` seconds the pending records are appended, followed by a
  DataEnd record and a summary-less Footer, then ``fsync``; the next flush overwrites that
  footer. Readers (rosbags, mcap) handle summary-less files by scanning;
- ``metadata.yaml`` is rewritten atomically (temp file + rename) at every flush.

A crash therefore loses at most the records of the last ``flush_period``; what is on disk opens
with ``rosbags`` and ``mcap`` without any repair step. Messages arrive already serialized (CDR,
from rclpy or rosbags) and are stored in canonical form (``canonical_cdr``), so the bag holds
exactly the messages the node received or sent; schemas come from a rosbags typestore
(``sarm2_common.bag_io`` registers the sarm2_msgs types there).
"""

from dataclasses import dataclass
import io
import json
import os
from pathlib import Path
import struct
import time

from rosbags.rosbag2.metadata import dump_qos_v9
from ruamel.yaml import YAML

MAGIC = b'\x89MCAP0\r\n'
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_DATA_END = 1, 2, 3, 4, 5, 15
BAG_VERSION = 9
LIBRARY = 'spiral_policy.rollout_recorder'


def canonical_cdr(typestore, data: bytes, msgtype: str) -> bytes:
    """Re-encode CDR bytes of ``msgtype`` exactly, without trailing bytes.

    rclpy's ``serialize_message`` (Kilted wheels, Fast CDR) can return a buffer longer than the
    message, with uninitialised bytes at the end (seen for sensor_msgs/JointState); rosbags then
    refuses to read it ("CDR message size mismatch"). Decoding up to the message's real end and
    encoding again gives the canonical bytes every reader accepts.
    """
    view = memoryview(data)
    if len(view) < 4 or bytes(view[:2]) not in (b'\x00\x00', b'\x00\x01'):
        raise ValueError(f'{msgtype}: not plain CDR (encapsulation {bytes(view[:4])!r})')
    msgdef = typestore.get_msgdef(msgtype)
    decode = msgdef.deserialize_cdr_le if view[1] else msgdef.deserialize_cdr_be
    message, _ = decode(view[4:], 0, msgdef.cls, typestore)
    return bytes(typestore.serialize_cdr(message, msgtype, little_endian=bool(view[1])))


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack('<I', len(data)) + data


def _record(op: int, content: bytes) -> bytes:
    return struct.pack('<BQ', op, len(content)) + content


@dataclass
class _Connection:
    channel_id: int
    topic: str
    msgtype: str
    digest: str
    count: int = 0


class StreamingBagWriter:
    """A rosbag2 MCAP bag directory that is readable at every flush boundary."""

    def __init__(self, path: str | Path, typestore, flush_period: float = 1.0):
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists already; bags are never overwritten')
        if not flush_period > 0:
            raise ValueError('flush_period must be > 0 s')
        self.path.mkdir(parents=True)
        self.typestore = typestore
        self.flush_period = flush_period
        self.mcap_path = self.path / f'{self.path.name}.mcap'
        self._file = open(self.mcap_path, 'xb')
        self._file.write(MAGIC + _record(OP_HEADER, _string('ros2') + _string(LIBRARY)))
        self._data_end = self._file.tell()      # where the DataEnd + Footer tail starts
        self._pending = io.BytesIO()
        self._schemas: dict[str, int] = {}
        self._connections: dict[str, _Connection] = {}
        self._first_time: int | None = None
        self._last_time = 0
        self._last_flush = time.monotonic()
        self.custom_data: dict[str, str] = {}
        self.closed = False
        self.flush()

    def add_connection(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` with message type ``msgtype`` (e.g. 'sensor_msgs/msg/Image')."""
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise ValueError(f'topic {topic} is already recorded as '
                                 f'{self._connections[topic].msgtype}, not {msgtype}')
            return
        if msgtype not in self._schemas:
            msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
            schema_id = len(self._schemas) + 1
            self._schemas[msgtype] = schema_id
            content = (struct.pack('<H', schema_id) + _string(msgtype) + _string('ros2msg')
                       + _string(msgdef))
            self._pending.write(_record(OP_SCHEMA, content))
        channel_id = len(self._connections) + 1
        metadata = _string('offered_qos_profiles') + _string('')
        content = (struct.pack('<HH', channel_id, self._schemas[msgtype]) + _string(topic)
                   + _string('cdr') + struct.pack('<I', len(metadata)) + metadata)
        self._pending.write(_record(OP_CHANNEL, content))
        self._connections[topic] = _Connection(channel_id, topic, msgtype,
                                               self.typestore.hash_rihs01(msgtype))

    def write(self, topic: str, data: bytes, timestamp: int) -> None:
        """Append one CDR-serialized message; ``timestamp`` in ns (made non-decreasing).

        Raises ValueError for bytes that do not decode as the topic's type.
        """
        if self.closed:
            raise ValueError(f'bag {self.path} is closed')
        connection = self._connections.get(topic)
        if connection is None:
            raise KeyError(f'topic {topic} was not added to bag {self.path}')
        # Summary-less MCAP is read by scanning, which requires log-time order.
        timestamp = max(int(timestamp), self._last_time)
        self._last_time = timestamp
        if self._first_time is None:
            self._first_time = timestamp
        data = canonical_cdr(self.typestore, data, connection.msgtype)
        connection.count += 1
        header = struct.pack('<HIQQ', connection.channel_id, connection.count, timestamp,
                             timestamp)
        self._pending.write(_record(OP_MESSAGE, header + data))
        self.flush_if_due()

    def flush_if_due(self) -> bool:
        """Flush when the last flush is ``flush_period`` old; return whether it flushed."""
        if time.monotonic() - self._last_flush >= self.flush_period:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Make everything written so far durable and readable."""
        self._file.seek(self._data_end)
        self._file.write(self._pending.getvalue())
        self._pending = io.BytesIO()
        self._data_end = self._file.tell()
        footer = struct.pack('<QQI', 0, 0, 0)
        self._file.write(_record(OP_DATA_END, struct.pack('<I', 0)) + _record(OP_FOOTER, footer)
                         + MAGIC)
        self._file.truncate()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._write_metadata()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close; the bag stays exactly as readable as after any flush."""
        if self.closed:
            return
        self.flush()
        self._file.close()
        self.closed = True

    @property
    def message_count(self) -> int:
        return sum(c.count for c in self._connections.values())

    def _write_metadata(self) -> None:
        start = self._first_time or 0
        duration = max(0, self._last_time - start)
        count = self.message_count
        info = {
            'version': BAG_VERSION,
            'storage_identifier': 'mcap',
            'relative_file_paths': [self.mcap_path.name],
            'duration': {'nanoseconds': duration},
            'starting_time': {'nanoseconds_since_epoch': start},
            'message_count': count,
            'topics_with_message_count': [
                {'topic_metadata': {'name': c.topic, 'type': c.msgtype,
                                    'serialization_format': 'cdr',
                                    'offered_qos_profiles': dump_qos_v9([]),
                                    'type_description_hash': c.digest},
                 'message_count': c.count}
                for c in self._connections.values()],
            'compression_format': '',
            'compression_mode': '',
            'files': [{'path': self.mcap_path.name,
                       'starting_time': {'nanoseconds_since_epoch': start},
                       'duration': {'nanoseconds': duration}, 'message_count': count}],
            'custom_data': dict(self.custom_data) or None,
            'ros_distro': 'rosbags',
        }
        yaml = YAML(typ='safe')
        yaml.default_flow_style = False
        stream = io.StringIO()
        yaml.dump({'rosbag2_bagfile_information': info}, stream)
        target = self.path / 'metadata.yaml'
        temporary = target.with_suffix('.yaml.tmp')
        temporary.write_text(stream.getvalue())
        os.replace(temporary, target)


class RolloutRecorder:
    """One ``StreamingBagWriter`` per episode under ``directory/<episode_id>``."""

    def __init__(self, directory: str | Path, typestore, flush_period: float = 1.0):
        self.directory = Path(directory)
        self.typestore = typestore
        self.flush_period = flush_period
        self.writer: StreamingBagWriter | None = None
        self.dropped = 0

    @property
    def recording(self) -> bool:
        return self.writer is not None

    def start(self, episode_id: str, topics: dict[str, str], metadata: dict) -> Path:
        """Open the bag of a new episode; ``topics`` maps topic -> message type."""
        if self.writer is not None:
            self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        writer = StreamingBagWriter(self.directory / episode_id, self.typestore,
                                    self.flush_period)
        writer.custom_data['episode_metadata'] = json.dumps(metadata, sort_keys=True)
        for topic, msgtype in topics.items():
            writer.add_connection(topic, msgtype)
        writer.flush()
        self.writer = writer
        return writer.path

    def write(self, topic: str, data: bytes, timestamp: int) -> bool:
        """Record one serialized message; False (and counted) if no bag is open or it failed."""
        if self.writer is None:
            return False
        try:
            self.writer.write(topic, data, timestamp)
        except Exception:  # noqa: BLE001 - a message that cannot be recorded is only counted
            self.dropped += 1
            return False
        return True

    def flush_if_due(self) -> None:
        """Call from the control loop so quiet periods still reach the disk."""
        if self.writer is not None:
            self.writer.flush_if_due()

    def stop(self, metadata: dict | None = None) -> Path | None:
        """Close the current bag (adding final metadata); return its path."""
        writer, self.writer = self.writer, None
        if writer is None:
            return None
        if metadata is not None:
            writer.custom_data['episode_metadata'] = json.dumps(metadata, sort_keys=True)
        writer.close()
        return writer.path
