"""Tolerant bag reading and replay timing (ROS-free)."""

import shutil

import numpy as np
import pytest

from sarm2_common import bag_io, topics
from sarm2_common.bag_playback import PlaybackConfig, playback_schedule, read_bag

PERIOD_NS = 50_000_000
FRAMES = 40


def write_bag(path, frames=FRAMES, chunk_size=1 << 20, compress=True):
    rng = np.random.default_rng(0)
    with bag_io.BagWriter(path, compress=compress, chunk_size=chunk_size) as bag:
        for k in range(frames):
            stamp = 1_000_000_000 + k * PERIOD_NS
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            bag.write(topics.image_topic('corner'), bag_io.image_message(image, stamp, 'cam'),
                      stamp)
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                [f'j{i}' for i in range(9)], np.full(9, k, np.float32), stamp), stamp + 1)
    return path


def test_finished_bag_reads_completely_in_time_order(tmp_path):
    messages, report = read_bag(write_bag(tmp_path / 'bag'))
    assert report.complete and report.messages == 2 * FRAMES
    stamps = [m.timestamp_ns for m in messages]
    assert stamps == sorted(stamps)
    assert {m.msgtype for m in messages} == {bag_io.IMAGE_TYPE, bag_io.JOINT_STATE_TYPE}
    first_image = bag_io.typestore().deserialize_cdr(messages[0].data, bag_io.IMAGE_TYPE)
    assert (first_image.height, first_image.width) == (32, 32)


def test_topic_filter(tmp_path):
    messages, _ = read_bag(write_bag(tmp_path / 'bag'), topics=(topics.JOINT_STATES_TOPIC,))
    assert len(messages) == FRAMES and {m.topic for m in messages} == {topics.JOINT_STATES_TOPIC}


def test_truncated_bag_reports_and_keeps_the_readable_part(tmp_path):
    # Enough frames for several ~1 MB chunks: the chunk cut in half is lost, the earlier ones
    # are kept.
    bag = write_bag(tmp_path / 'bag', frames=1500)
    (mcap_file,) = bag.glob('*.mcap')
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[:len(data) * 6 // 10])
    messages, report = read_bag(bag)
    assert not report.complete and 'unreadable after' in report.problems[0]
    assert 500 < len(messages) < 3000


@pytest.mark.parametrize('cut', [1, 7, 300])
def test_bag_cut_inside_its_summary_is_reported_not_raised(tmp_path, cut):
    # A cut a few bytes into the last record ends in a short length field (struct.error).
    bag = write_bag(tmp_path / 'bag', frames=5)
    (mcap_file,) = bag.glob('*.mcap')
    mcap_file.write_bytes(mcap_file.read_bytes()[:-cut])
    messages, report = read_bag(bag)
    assert not report.complete and 'unreadable after' in report.problems[0]
    assert len(messages) <= 10


def test_killed_recorder_bag_without_metadata_is_read_and_reported(tmp_path):
    bag = write_bag(tmp_path / 'bag')
    (bag / 'metadata.yaml').unlink()
    messages, report = read_bag(bag)
    assert len(messages) == 2 * FRAMES
    assert any('metadata.yaml missing' in p for p in report.problems)


def record_offsets(mcap_file) -> list[tuple[int, int]]:
    """(file offset, opcode) of every top-level MCAP record."""
    data = mcap_file.read_bytes()
    offsets, position = [], 8                       # after the magic
    while position + 9 <= len(data):
        opcode = data[position]
        length = int.from_bytes(data[position + 1:position + 9], 'little')
        offsets.append((position, opcode))
        if opcode == 2:                             # footer
            break
        position += 9 + length
    return offsets


@pytest.mark.parametrize('flipped', [1, 20])
def test_altered_bytes_fail_the_chunk_checksum_and_earlier_chunks_are_kept(tmp_path, flipped):
    # Uncompressed chunks: altered image bytes still decode, only the checksum can tell.
    bag = write_bag(tmp_path / 'bag', frames=200, chunk_size=64 * 1024, compress=False)
    (mcap_file,) = bag.glob('*.mcap')
    chunks = [offset for offset, opcode in record_offsets(mcap_file) if opcode == 6]
    assert len(chunks) >= 3
    data = bytearray(mcap_file.read_bytes())
    # Flip bytes in the middle of the second chunk's payload.
    middle = (chunks[1] + chunks[2]) // 2
    for i in range(flipped):
        data[middle + 7 * i] ^= 0x5A
    mcap_file.write_bytes(bytes(data))
    messages, report = read_bag(bag)
    assert report.corrupt and 'checksum mismatch' in report.problems[0]
    assert 0 < len(messages) < 400


def test_damaged_record_framing_is_reported_and_earlier_chunks_are_kept(tmp_path):
    bag = write_bag(tmp_path / 'bag', frames=200, chunk_size=64 * 1024)
    (mcap_file,) = bag.glob('*.mcap')
    second_chunk = [offset for offset, opcode in record_offsets(mcap_file) if opcode == 6][1]
    data = bytearray(mcap_file.read_bytes())
    data[second_chunk:second_chunk + 9] = bytes([255] * 9)
    mcap_file.write_bytes(bytes(data))
    messages, report = read_bag(bag)
    assert not report.complete and 'unreadable after' in report.problems[0]
    assert 0 < len(messages) < 400


def test_not_a_bag_is_a_clear_error(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='not a rosbag2 bag'):
        read_bag(tmp_path / 'empty')
    with pytest.raises(FileNotFoundError):
        read_bag(tmp_path / 'missing')


def test_schedule_scales_time_and_loops(tmp_path):
    messages, _ = read_bag(write_bag(tmp_path / 'bag', frames=3))
    images = PlaybackConfig(rate=2.0, topics=(topics.image_topic('corner'),))
    times = [t for t, _ in playback_schedule(messages, images)]
    assert times == pytest.approx([0.0, 0.025, 0.05])
    looped = playback_schedule(messages, PlaybackConfig(rate=1.0, loop=True,
                                                        topics=(topics.JOINT_STATES_TOPIC,)))
    times = [next(looped)[0] for _ in range(6)]
    # Second pass starts one median gap (50 ms) after the last message of the first.
    assert times == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    with pytest.raises(ValueError, match='rate'):
        PlaybackConfig(rate=0.0)


def test_copy_of_bag_is_independent(tmp_path):
    """A bag directory can be copied and replayed elsewhere (no absolute paths inside)."""
    bag = write_bag(tmp_path / 'bag', frames=2)
    copy = shutil.copytree(bag, tmp_path / 'moved')
    assert len(read_bag(copy)[0]) == 4
