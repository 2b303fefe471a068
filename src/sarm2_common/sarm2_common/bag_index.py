"""Where each message of a rosbag2 MCAP bag lies, so single messages are read on demand (ROS-free).

Why not ``bag_playback`` or ``bag_dataset``: they read every message's bytes, which for a
10-minute camera recording means gigabytes before the first frame can be shown. A viewer (the
rollout labelling page) needs the list of frames and their times at once and then one frame at a
time. ``index_bag`` walks the MCAP records by their length prefixes and keeps, per message, the
file position of its bytes and the first few of them (``head``: a header stamp is there), so
indexing a bag reads a few dozen bytes per message:

- messages stored directly in the file (the rollout recorder writes no chunks) and messages in
  uncompressed chunks are located by file offset and read with one seek;
- a compressed chunk (rosbag2's zstd/lz4 storage compression) is decompressed once while
  indexing, and again (cached, ``CHUNK_CACHE`` chunks) when one of its messages is read.

Like ``bag_playback``, a bag cut short (no footer, a truncated record, an unreadable chunk) keeps
every message before the first bad byte and says what is missing in ``problems``.
"""

from collections import OrderedDict
from dataclasses import dataclass, field
import io
from pathlib import Path
import struct
import threading

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.records import Chunk
from mcap.stream_reader import get_chunk_data_stream

from sarm2_common.bag_playback import bag_files

MAGIC = b'\x89MCAP0\r\n'
OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = 2, 3, 4, 5, 6, 15
_RECORD_PREFIX = struct.Struct('<BQ')           # opcode, content length
_MESSAGE_HEADER = struct.Struct('<HIQQ')        # channel id, sequence, log time, publish time
_CHUNK_HEADER = struct.Struct('<QQQI')          # start time, end time, uncompressed size, crc
# Bytes of each message kept in the index: CDR encapsulation (4) + std_msgs/Header stamp (8).
HEAD_BYTES = 12
# Decompressed chunks kept for reading (rosbag2 writes ~1 MB chunks).
CHUNK_CACHE = 8


@dataclass(frozen=True)
class MessageRef:
    """Where one message's serialized (CDR) bytes are.

    ``chunk`` is -1 when ``offset`` is a position in the file, else the file position of the
    compressed chunk record and ``offset`` a position in its decompressed records.
    """

    file: int
    chunk: int
    offset: int
    length: int
    log_time_ns: int
    head: bytes


@dataclass
class TopicIndex:
    """The messages of one topic, in file order."""

    topic: str
    msgtype: str
    messages: list[MessageRef] = field(default_factory=list)


def header_stamp_ns(head: bytes) -> int:
    """Return the std_msgs/Header stamp (ns) at the start of a CDR message from its first bytes.

    Every message with a header starts with it, and the header starts with the stamp
    (int32 sec, uint32 nanosec) right after the 4-byte encapsulation.
    """
    if len(head) < HEAD_BYTES or head[0] != 0 or head[1] not in (0, 1):
        raise ValueError('not a CDR message with a header stamp')
    sec, nanosec = struct.unpack('<iI' if head[1] else '>iI', head[4:12])
    return sec * 1_000_000_000 + nanosec


class BagIndex:
    """The message positions of one bag; ``read`` returns one message's CDR bytes."""

    def __init__(self, path: Path, files: list[Path]):
        self.path = path
        self.files = files
        self.topics: dict[str, TopicIndex] = {}
        self.problems: list[str] = []
        self._chunk_cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def message_count(self) -> int:
        return sum(len(t.messages) for t in self.topics.values())

    def topics_of_type(self, msgtype: str) -> list[TopicIndex]:
        """Topics holding ``msgtype`` (e.g. 'sensor_msgs/msg/Image'), sorted by name."""
        return [self.topics[name] for name in sorted(self.topics)
                if self.topics[name].msgtype == msgtype]

    def read(self, ref: MessageRef) -> bytes:
        """Return the CDR bytes of one message (thread-safe)."""
        if ref.chunk < 0:
            return self.read_all([ref])[0]
        return self._chunk_records(ref.file, ref.chunk)[ref.offset:ref.offset + ref.length]

    def read_all(self, refs: list[MessageRef]) -> list[bytes]:
        """Return the CDR bytes of many messages, opening each file once (thread-safe)."""
        handles = {}
        try:
            result = []
            for ref in refs:
                if ref.chunk >= 0:
                    result.append(self.read(ref))
                    continue
                stream = handles.get(ref.file)
                if stream is None:
                    stream = handles[ref.file] = open(self.files[ref.file], 'rb')
                stream.seek(ref.offset)
                data = stream.read(ref.length)
                if len(data) != ref.length:
                    raise ValueError(f'{self.files[ref.file].name}: message at byte '
                                     f'{ref.offset} is cut short (the file shrank since it was '
                                     'indexed)')
                result.append(data)
            return result
        finally:
            for stream in handles.values():
                stream.close()

    def _chunk_records(self, file: int, position: int) -> bytes:
        key = (file, position)
        with self._lock:
            records = self._chunk_cache.get(key)
            if records is not None:
                self._chunk_cache.move_to_end(key)
                return records
        with open(self.files[file], 'rb') as stream:
            stream.seek(position)
            _, length = _RECORD_PREFIX.unpack(stream.read(_RECORD_PREFIX.size))
            records = _decompress(stream.read(length))
        with self._lock:
            self._chunk_cache[key] = records
            while len(self._chunk_cache) > CHUNK_CACHE:
                self._chunk_cache.popitem(last=False)
        return records


def index_bag(path: str | Path, keep=None) -> BagIndex:
    """Index every message of the bag at ``path`` (a bag directory or one .mcap file).

    ``keep(topic, msgtype) -> bool`` selects the topics whose messages are kept (all when None);
    the others cost nothing but the walk past them. Raises ValueError when no file of the bag is
    an MCAP file; anything unreadable after the start goes to ``problems``.
    """
    path = Path(path)
    files = bag_files(path)
    index = BagIndex(path, files)
    for number, file in enumerate(files):
        _FileIndexer(index, number, keep).run(file)
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        index.problems.append('metadata.yaml missing: the recorder did not close the bag')
    return index


class _FileIndexer:
    """Walk one MCAP file's records (and those inside its chunks) into a BagIndex."""

    def __init__(self, index: BagIndex, number: int, keep):
        self.index = index
        self.number = number
        self.keep = keep
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, TopicIndex | None] = {}

    def run(self, file: Path) -> None:
        size = file.stat().st_size
        with open(file, 'rb') as stream:
            if stream.read(len(MAGIC)) != MAGIC:
                raise ValueError(f'{file.name}: not an MCAP file (bad magic bytes)')
            try:
                finished = self._walk(stream, len(MAGIC), size, chunk=-1)
            except (McapError, ValueError, struct.error, OSError, RuntimeError) as error:
                # zstd/lz4 raise their own error types; the rest of the file is untrusted.
                self.index.problems.append(
                    f'{file.name}: unreadable after {self.index.message_count} messages '
                    f'({type(error).__name__}: {error})')
                return
        if not finished:
            self.index.problems.append(f'{file.name}: ends without a footer (cut short after '
                                       f'{self.index.message_count} messages)')

    def _walk(self, stream, position: int, end: int, chunk: int) -> bool:
        """Index the records between ``position`` and ``end``; True if the data section ended.

        ``stream`` is the file (``chunk`` -1) or a compressed chunk's decompressed records.
        """
        prefix = _RECORD_PREFIX.size
        while position + prefix <= end:
            stream.seek(position)
            opcode, length = _RECORD_PREFIX.unpack(stream.read(prefix))
            start = position + prefix
            if start + length > end:
                raise ValueError(f'record at byte {position} runs past the end '
                                 f'({length} bytes announced)')
            if opcode == OP_MESSAGE:
                self._message(stream, start, length, chunk)
            elif opcode == OP_SCHEMA:
                schema_id, = struct.unpack('<H', stream.read(2))
                self.schemas[schema_id] = _string(stream)
            elif opcode == OP_CHANNEL:
                self._channel(stream)
            elif opcode == OP_CHUNK:
                self._chunk(stream, position, start, length)
            elif opcode in (OP_DATA_END, OP_FOOTER):
                return True
            position = start + length
        if position != end and chunk < 0:
            raise ValueError(f'{end - position} stray bytes at the end of the file')
        return chunk >= 0

    def _channel(self, stream) -> None:
        channel_id, schema_id = struct.unpack('<HH', stream.read(4))
        topic = _string(stream)
        msgtype = self.schemas.get(schema_id, '')
        if self.keep is not None and not self.keep(topic, msgtype):
            self.channels[channel_id] = None
            return
        topics = self.index.topics
        self.channels[channel_id] = topics.setdefault(topic, TopicIndex(topic, msgtype))

    def _message(self, stream, start: int, length: int, chunk: int) -> None:
        header = stream.read(_MESSAGE_HEADER.size)
        channel_id, _, log_time, _ = _MESSAGE_HEADER.unpack(header)
        topic = self.channels.get(channel_id)
        if topic is None:
            return
        data_length = length - _MESSAGE_HEADER.size
        head = stream.read(min(HEAD_BYTES, data_length))
        topic.messages.append(MessageRef(self.number, chunk, start + _MESSAGE_HEADER.size,
                                         data_length, log_time, head))

    def _chunk(self, stream, position: int, start: int, length: int) -> None:
        _CHUNK_HEADER.unpack(stream.read(_CHUNK_HEADER.size))
        compression = _string(stream)
        records_length, = struct.unpack('<Q', stream.read(8))
        records_start = stream.tell()
        if records_start + records_length > start + length:
            raise ValueError(f'chunk at byte {position} announces more records than it holds')
        if not compression:
            # Uncompressed: its messages can be read straight from the file.
            self._walk(stream, records_start, records_start + records_length, chunk=-1)
            return
        stream.seek(start)
        records = _decompress(stream.read(length))
        self._walk(io.BytesIO(records), 0, len(records), chunk=position)


def _string(stream) -> str:
    size, = struct.unpack('<I', stream.read(4))
    return stream.read(size).decode('utf-8')


def _decompress(content: bytes) -> bytes:
    """Return the records of a chunk record's content (decompressed, CRC checked)."""
    chunk = Chunk.read(ReadDataStream(io.BytesIO(content)))
    return get_chunk_data_stream(chunk, validate_crc=True)[0].read(chunk.uncompressed_size)
