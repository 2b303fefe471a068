"""The one rosbag2 (MCAP) writer of the stack: readable after each flush, every byte checksummed.

Two properties the ordinary writers lack, both needed for robot data:

- **Readable after a crash.** An MCAP file becomes readable only when its footer is written, and
  rosbag2's ``metadata.yaml`` only at close. A policy process killed mid-episode (power cut,
  OOM, Ctrl-C twice) would leave an unreadable rollout exactly when it is most needed. Here
  every flush appends the pending records, then a DataEnd record and a summary-less Footer,
  calls fsync, and (for a streaming bag) rewrites ``metadata.yaml`` atomically; the next flush
  overwrites that tail. Readers (rosbags, mcap, rosbag2) handle summary-less files by scanning.
- **Corruption is detected, not trained on.** The records of each flush form one MCAP Chunk
  whose ``uncompressed_crc`` is the CRC-32 of its records, and the DataEnd record carries the
  CRC-32 of the whole data section. A flipped byte fails the chunk's check in every reader
  (``sarm2_common.bag_playback`` verifies both), so a damaged bag is reported and skipped.

Messages arrive serialized (CDR, from rclpy or rosbags). Bytes from rclpy are stored in canonical
form (``canonical_cdr``) so every reader accepts them; schemas come from a rosbags typestore
(``sarm2_common.bag_io`` registers the sarm2_msgs types there).
"""

import io
import os
from pathlib import Path
import struct
import time
import zlib

from rosbags.rosbag2.metadata import dump_qos_v9
from ruamel.yaml import YAML

MAGIC = b'\x89MCAP0\r\n'
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = \
    1, 2, 3, 4, 5, 6, 15
BAG_VERSION = 9
LIBRARY = 'sarm2_common.bag_writer'
COMPRESSIONS = ('', 'zstd')


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


class _Connection:
    def __init__(self, channel_id: int, topic: str, msgtype: str, digest: str):
        self.channel_id, self.topic, self.msgtype, self.digest = channel_id, topic, msgtype, digest
        self.count = 0          # messages written (pending included)
        self.sequence = 0       # messages in the file


class StreamingBagWriter:
    """One rosbag2 bag directory with one MCAP file, written in checksummed chunks.

    ``streaming`` (rollouts): flush at least every ``flush_period`` s, fsync, and keep
    ``metadata.yaml`` current, so the bag is complete up to the last flush at all times.
    Otherwise (demonstrations): flush when a chunk reaches ``chunk_size`` bytes, write
    ``metadata.yaml`` only at close (its presence tells a finished bag from one cut short).
    """

    def __init__(self, path: str | Path, typestore, flush_period: float = 1.0,
                 streaming: bool = True, compression: str = '', chunk_size: int = 1 << 20):
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists already; bags are never overwritten')
        if not flush_period > 0:
            raise ValueError('flush_period must be > 0 s')
        if compression not in COMPRESSIONS:
            raise ValueError(f'compression {compression!r}; choose one of {COMPRESSIONS}')
        self.path.mkdir(parents=True)
        self.typestore = typestore
        self.flush_period = flush_period
        self.streaming = streaming
        self.compression = compression
        self.chunk_size = chunk_size
        self.mcap_path = self.path / f'{self.path.name}.mcap'
        self._file = open(self.mcap_path, 'xb')
        start = MAGIC + _record(OP_HEADER, _string('ros2') + _string(LIBRARY))
        self._file.write(start)
        self._data_crc = zlib.crc32(start)        # CRC of the data section so far
        self._data_end = self._file.tell()        # where the DataEnd + Footer tail starts
        self._pending_meta = io.BytesIO()           # schema and channel records
        self._pending_messages: list = []           # (log time, arrival, connection, CDR)
        self._pending_bytes = 0
        self._chunk_start = self._chunk_end = None
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
            self._pending_meta.write(_record(OP_SCHEMA, content))
        channel_id = len(self._connections) + 1
        metadata = _string('offered_qos_profiles') + _string('')
        content = (struct.pack('<HH', channel_id, self._schemas[msgtype]) + _string(topic)
                   + _string('cdr') + struct.pack('<I', len(metadata)) + metadata)
        self._pending_meta.write(_record(OP_CHANNEL, content))
        self._connections[topic] = _Connection(channel_id, topic, msgtype,
                                               self.typestore.hash_rihs01(msgtype))

    def connection_type(self, topic: str) -> str | None:
        """Return the message type recorded on ``topic`` (None: the topic is not in the bag)."""
        connection = self._connections.get(topic)
        return connection.msgtype if connection is not None else None

    def write(self, topic: str, data: bytes, timestamp: int, canonical: bool = True) -> None:
        """Append one CDR-serialized message logged at ``timestamp`` (ns).

        Messages are ordered by log time within each flush (scanning readers need log-time
        order). ``canonical``: re-encode the bytes first (needed for rclpy's; bytes serialized
        by the typestore already are). Raises ValueError for bytes that do not decode as the
        type.
        """
        if self.closed:
            raise ValueError(f'bag {self.path} is closed')
        connection = self._connections.get(topic)
        if connection is None:
            raise KeyError(f'topic {topic} was not added to bag {self.path}')
        if canonical:
            data = canonical_cdr(self.typestore, data, connection.msgtype)
        connection.count += 1
        self._pending_messages.append((int(timestamp), len(self._pending_messages),
                                       connection, data))
        self._pending_bytes += len(data) + 31
        if self.streaming:
            self.flush_if_due()
        elif self._pending_bytes >= self.chunk_size:
            self.flush()

    def flush_if_due(self) -> bool:
        """Flush when the last flush is ``flush_period`` old; return whether it flushed."""
        if time.monotonic() - self._last_flush >= self.flush_period:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the pending records as one checksummed chunk; the file is valid afterwards."""
        self._file.seek(self._data_end)
        records = self._pending_meta.getvalue() + self._message_records()
        if records:
            chunk = self._chunk(records)
            self._file.write(chunk)
            self._data_crc = zlib.crc32(chunk, self._data_crc)
        self._pending_meta = io.BytesIO()
        self._data_end = self._file.tell()
        footer = struct.pack('<QQI', 0, 0, 0)
        self._file.write(_record(OP_DATA_END, struct.pack('<I', self._data_crc))
                         + _record(OP_FOOTER, footer) + MAGIC)
        self._file.truncate()
        self._file.flush()
        if self.streaming:
            os.fsync(self._file.fileno())
            self._write_metadata()
        self._last_flush = time.monotonic()

    def _message_records(self) -> bytes:
        """Return the pending messages as MCAP records in log-time order (ties: arrival)."""
        pending, self._pending_messages, self._pending_bytes = self._pending_messages, [], 0
        pending.sort(key=lambda item: (item[0], item[1]))
        records = io.BytesIO()
        self._chunk_start = self._chunk_end = None
        for timestamp, _, connection, data in pending:
            if timestamp < self._last_time:
                if not self.streaming:
                    raise ValueError(
                        f'{connection.topic}: log time {timestamp} ns is before messages '
                        f'already written ({self._last_time} ns); write in log-time order')
                # Live recorders write from several threads whose clocks differ by
                # microseconds: a message that missed its flush is logged at the flush time.
                timestamp = self._last_time
            self._last_time = timestamp
            if self._first_time is None:
                self._first_time = timestamp
            self._chunk_start = timestamp if self._chunk_start is None else self._chunk_start
            self._chunk_end = timestamp
            connection.sequence += 1
            header = struct.pack('<HIQQ', connection.channel_id, connection.sequence, timestamp,
                                 timestamp)
            records.write(_record(OP_MESSAGE, header + data))
        return records.getvalue()

    def _chunk(self, records: bytes) -> bytes:
        data = records
        if self.compression == 'zstd':
            import zstandard

            data = zstandard.ZstdCompressor().compress(records)
        start = self._chunk_start if self._chunk_start is not None else 0
        end = self._chunk_end if self._chunk_end is not None else 0
        content = (struct.pack('<QQQI', start, end, len(records), zlib.crc32(records))
                   + _string(self.compression) + struct.pack('<Q', len(data)) + data)
        return _record(OP_CHUNK, content)

    def close(self) -> None:
        """Flush, write ``metadata.yaml`` and close; the bag is exactly as after a flush."""
        if self.closed:
            return
        self.flush()
        if not self.streaming:
            os.fsync(self._file.fileno())
            self._write_metadata()
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
            # Chunk compression inside the MCAP file is not rosbag2 file compression.
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
