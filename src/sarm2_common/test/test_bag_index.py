"""Message index of MCAP bags: every message found where the full readers find it (ROS-free)."""

import numpy as np
import pytest

from sarm2_common import bag_io
from sarm2_common.bag_index import HEAD_BYTES, header_stamp_ns, index_bag
from sarm2_common.bag_playback import read_bag
from sarm2_common.topics import image_topic, JOINT_STATES_TOPIC

PERIOD_NS = 50_000_000
CAMERA = image_topic('corner')


def messages(frames: int):
    """Yield (topic, message, log time): an image and a joint state per frame."""
    rng = np.random.default_rng(0)
    for k in range(frames):
        stamp = 1_000_000_000 + k * PERIOD_NS
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        yield CAMERA, bag_io.image_message(image, stamp, 'cam'), stamp + 7
        yield JOINT_STATES_TOPIC, bag_io.joint_state_message(
            [f'j{i}' for i in range(9)], np.full(9, k, np.float32), stamp), stamp + 9


def write_rosbags(path, frames: int, compress: bool):
    """Write a bag as rosbag2 does: chunked, zstd-compressed or not, with a summary."""
    with bag_io.BagWriter(path, compress=compress) as bag:
        for topic, message, log_time in messages(frames):
            bag.write(topic, message, log_time)
    return path


def write_unchunked(path, frames: int):
    """Write a bag as the rollout recorder does: plain message records, no chunks."""
    from mcap.writer import Writer

    path.mkdir()
    store = bag_io.typestore()
    with open(path / 'bag.mcap', 'wb') as stream:
        writer = Writer(stream, use_chunking=False)
        writer.start('ros2', 'test')
        channels = {}
        for topic, message, log_time in messages(frames):
            msgtype = message.__msgtype__
            if topic not in channels:
                msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
                schema = writer.register_schema(msgtype, 'ros2msg', msgdef.encode())
                channels[topic] = writer.register_channel(topic, 'cdr', schema)
            writer.add_message(channels[topic], log_time, bytes(store.serialize_cdr(
                message, msgtype)), log_time)
        writer.finish()
    (path / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}\n')
    return path


WRITERS = {
    'zstd chunks': lambda path, frames: write_rosbags(path, frames, compress=True),
    'plain chunks': lambda path, frames: write_rosbags(path, frames, compress=False),
    'no chunks': write_unchunked,
}


@pytest.mark.parametrize('layout', WRITERS)
def test_index_reads_every_message_as_stored(tmp_path, layout):
    # Enough frames for several chunks, so messages are found across chunk boundaries.
    bag = WRITERS[layout](tmp_path / 'bag', 400)
    index = index_bag(bag)
    stored, report = read_bag(bag)
    assert report.complete and not index.problems
    assert index.message_count == len(stored) == 800
    for topic in (CAMERA, JOINT_STATES_TOPIC):
        expected = [m for m in stored if m.topic == topic]
        refs = index.topics[topic].messages
        assert [ref.log_time_ns for ref in refs] == [m.timestamp_ns for m in expected]
        assert all(index.read(ref) == m.data for ref, m in zip(refs, expected))
        assert all(ref.head == m.data[:HEAD_BYTES] for ref, m in zip(refs, expected))
    (image_topic,) = index.topics_of_type(bag_io.IMAGE_TYPE)
    stamps = [header_stamp_ns(ref.head) for ref in image_topic.messages]
    assert stamps == [1_000_000_000 + k * PERIOD_NS for k in range(400)]


def test_keep_selects_topics(tmp_path):
    bag = write_rosbags(tmp_path / 'bag', 10, compress=True)
    index = index_bag(bag, keep=lambda topic, msgtype: msgtype == bag_io.IMAGE_TYPE)
    assert list(index.topics) == [CAMERA] and index.message_count == 10


@pytest.mark.parametrize('layout', ['zstd chunks', 'no chunks'])
def test_cut_short_bag_keeps_the_messages_before_the_cut(tmp_path, layout):
    bag = WRITERS[layout](tmp_path / 'bag', 1500)
    (mcap_file,) = bag.glob('*.mcap')
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[:len(data) * 6 // 10])
    (bag / 'metadata.yaml').unlink()
    index = index_bag(bag)
    assert any('runs past the end' in p or 'unreadable after' in p for p in index.problems)
    assert any('metadata.yaml missing' in p for p in index.problems)
    refs = index.topics[CAMERA].messages
    assert 500 < len(refs) < 1500
    last = bag_io.typestore().deserialize_cdr(index.read(refs[-1]), bag_io.IMAGE_TYPE)
    assert bag_io.stamp_to_ns(last.header.stamp) == header_stamp_ns(refs[-1].head)


def test_not_an_mcap_file_is_a_clear_error(tmp_path):
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'bag.mcap').write_bytes(b'this is not a bag at all')
    with pytest.raises(ValueError, match='not an MCAP file'):
        index_bag(bag)
    with pytest.raises(ValueError, match='not a CDR message'):
        header_stamp_ns(b'\x01\x02')
