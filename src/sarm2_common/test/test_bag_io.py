"""Bags written by bag_io are real rosbag2/MCAP files; bag_dataset turns them into episodes."""

import collections
import logging
import shutil

from mcap.reader import make_reader
from mcap.records import Chunk
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from sarm2_common import bag_io, topics
from sarm2_common.bag_dataset import read_episode, read_episodes
from sarm2_common.episode import UNLABELLED
from sarm2_common.vocabulary import primitive_id

FRAMES = 6
PERIOD_NS = 12_500_000
CAMERAS = ('corner', 'wrist')
JOINTS = tuple(f'j{i}' for i in range(9))


def _frame_image(camera: str, k: int) -> np.ndarray:
    rng = np.random.default_rng(1000 * CAMERAS.index(camera) + k)
    return rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)


def _write_episode(path, success=True, jitter_ns=0, labels=True, log_delay_ns=0,
                   chunk_size=1 << 20):
    """Write a small episode in the demo layout.

    With jitter, streams are stamped like a live robot's; with a log delay, messages are logged
    later than their stamps, like a rollout recorder logging what the policy used when it did.
    """
    with bag_io.BagWriter(path, chunk_size=chunk_size) as bag:
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            0, bag_io.METADATA_START, 'ep-1', 'push-v3', 'push the puck', 7,
            metadata_json='{"mode": "expert"}'), 0)
        for k in range(FRAMES):
            stamp = k * PERIOD_NS
            for camera in CAMERAS:
                # the second camera runs a little behind the first
                camera_stamp = stamp + (jitter_ns if camera == 'wrist' else 0)
                bag.write(topics.image_topic(camera), bag_io.image_message(
                    _frame_image(camera, k), camera_stamp, camera), camera_stamp + log_delay_ns)
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                JOINTS, np.full(9, k, dtype=np.float32), stamp - jitter_ns), stamp + log_delay_ns)
            if labels:
                name = 'reach' if k < 3 else 'sweep'
                bag.write(bag_io.GROUND_TRUTH_TOPIC, bag_io.ground_truth_message(
                    stamp, 'push-v3', 'ep-1', k, success and k == FRAMES - 1,
                    primitive_id(name), name, 0.5), stamp)
            # the command follows the frame it answers (a policy needs time to compute it)
            bag.write(bag_io.ACTION_TOPIC, bag_io.action_message(
                np.array([k, 0.0, 0.0, -1.0])), stamp + 2 * jitter_ns + log_delay_ns)
        end = (FRAMES - 1) * PERIOD_NS
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            end, bag_io.METADATA_END, 'ep-1', 'push-v3', 'push the puck', 7, success=success,
            reason='success' if success else 'step_limit', steps=FRAMES - 1,
            metadata_json='{"mode": "expert"}'), end + 1)
    return path


EXPECTED_COUNTS = {
    '/camera/corner/image_raw': FRAMES, '/camera/wrist/image_raw': FRAMES,
    '/joint_states': FRAMES, '/sim/ground_truth': FRAMES, '/sim/action': FRAMES,
    '/episode/metadata': 2}
EXPECTED_TYPES = {
    '/camera/corner/image_raw': 'sensor_msgs/msg/Image',
    '/camera/wrist/image_raw': 'sensor_msgs/msg/Image',
    '/joint_states': 'sensor_msgs/msg/JointState',
    '/sim/ground_truth': 'sarm2_msgs/msg/SimGroundTruth',
    '/sim/action': 'std_msgs/msg/Float64MultiArray',
    '/episode/metadata': 'sarm2_msgs/msg/EpisodeMetadata'}


def test_topic_names_round_trip():
    assert topics.image_topic('corner') == '/camera/corner/image_raw'
    assert topics.camera_of_topic('/camera/corner/image_raw') == 'corner'
    assert topics.camera_of_topic('/camera/a/b/image_raw') is None
    assert topics.camera_of_topic('/joint_states') is None


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_image_conversion_handles_encodings_and_row_padding(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    message = bag_io.image_message(rgb, 0, 'cam')
    depth = 1 if encoding == 'mono8' else 3
    pixels = {'rgb8': rgb, 'bgr8': rgb[:, :, ::-1], 'mono8': rgb[:, :, :1]}[encoding]
    padded = np.zeros((5, 7 * depth + 3), dtype=np.uint8)  # 3 bytes of row padding
    padded[:, :7 * depth] = pixels.reshape(5, -1)
    message.encoding, message.step, message.data = encoding, 7 * depth + 3, padded.reshape(-1)
    expected = np.repeat(rgb[:, :, :1], 3, axis=2) if encoding == 'mono8' else rgb
    np.testing.assert_array_equal(bag_io.image_from_message(message), expected)
    message.encoding = '32FC1'
    with pytest.raises(ValueError, match='unsupported'):
        bag_io.image_from_message(message)


def test_rosbags_reads_types_counts_and_compression(tmp_path):
    bag = _write_episode(tmp_path / 'bag')
    with Reader(bag) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == EXPECTED_TYPES
        assert {t: info.msgcount for t, info in reader.topics.items()} == EXPECTED_COUNTS
    # MCAP storage, compressed per chunk (rosbag2's storage-level compression)
    with open(next(bag.glob('*.mcap')), 'rb') as stream:
        chunks = [r for r in StreamReader(stream, emit_chunks=True).records
                  if isinstance(r, Chunk)]
    assert chunks and {chunk.compression for chunk in chunks} == {'zstd'}
    assert bag_io.topic_counts(bag) == EXPECTED_COUNTS


def test_mcap_library_decodes_the_same_bag(tmp_path):
    bag = _write_episode(tmp_path / 'bag')
    counts, types = collections.Counter(), {}
    with open(next(bag.glob('*.mcap')), 'rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            counts[channel.topic] += 1
            types[channel.topic] = schema.name
            if channel.topic == '/sim/ground_truth':
                assert decoded.task == 'push-v3' and decoded.step == message.log_time // PERIOD_NS
            if channel.topic == '/camera/corner/image_raw':
                k = decoded.header.stamp.nanosec // PERIOD_NS
                np.testing.assert_array_equal(
                    np.frombuffer(bytes(decoded.data), np.uint8).reshape(16, 20, 3),
                    _frame_image('corner', k))
    assert dict(counts) == EXPECTED_COUNTS
    assert types == EXPECTED_TYPES


@pytest.mark.parametrize('jitter_ns, log_delay_ns', [(0, 0), (3_000_000, 0),
                                                     (3_000_000, 2 * PERIOD_NS)])
def test_episode_frames_are_aligned(tmp_path, jitter_ns, log_delay_ns):
    episode = read_episode(_write_episode(tmp_path / 'bag', jitter_ns=jitter_ns,
                                          log_delay_ns=log_delay_ns))
    assert len(episode) == FRAMES and episode.cameras == list(CAMERAS)
    assert episode.task == 'push-v3' and episode.instruction == 'push the puck'
    assert episode.success and episode.metadata['complete']
    assert episode.metadata['mode'] == 'expert' and episode.metadata['seed'] == 7
    for k in range(FRAMES):
        for camera in CAMERAS:
            np.testing.assert_array_equal(episode.images[camera][k], _frame_image(camera, k))
        assert episode.joint_positions[k, 0] == k
        assert episode.actions[k, 0] == k  # the command that followed frame k
    names = ['reach'] * 3 + ['sweep'] * 3
    np.testing.assert_array_equal(episode.primitive_ids, [primitive_id(n) for n in names])
    np.testing.assert_allclose(episode.timestamps, np.arange(FRAMES) * PERIOD_NS / 1e9)


def test_unlabelled_failed_episode(tmp_path):
    episode = read_episode(_write_episode(tmp_path / 'bag', success=False, labels=False))
    assert not episode.success and episode.metadata['reason'] == 'step_limit'
    assert np.all(episode.primitive_ids == UNLABELLED)


def test_bad_bags_are_skipped_or_partially_read(tmp_path, caplog):
    good = _write_episode(tmp_path / 'data' / 'good', chunk_size=4096)
    cut = tmp_path / 'data' / 'cut'
    shutil.copytree(good, cut)
    (cut / bag_io.BAG_METADATA_FILE).unlink()  # like a recorder killed before close
    mcap_file = next(cut.glob('*.mcap'))
    mcap_file.write_bytes(mcap_file.read_bytes()[:-200])
    broken = tmp_path / 'data' / 'broken'
    broken.mkdir()
    (broken / bag_io.BAG_METADATA_FILE).write_text('not: [a bag')
    empty = tmp_path / 'data' / 'empty'
    empty.mkdir()
    (empty / 'x.mcap').write_bytes(b'\x89MCAP0\r\n garbage')
    with caplog.at_level(logging.WARNING):
        episodes = read_episodes(tmp_path / 'data')
    by_name = {e.metadata['bag_path'].rsplit('/', 1)[-1]: e for e in episodes}
    assert set(by_name) == {'good', 'cut'}
    assert by_name['good'].metadata['complete']
    assert not by_name['cut'].metadata['complete'] and 0 < len(by_name['cut']) <= FRAMES
    assert 'broken' in caplog.text and 'empty' in caplog.text
    assert read_episodes([good, tmp_path / 'nowhere'])[0].episode_id == 'ep-1'


def test_rollout_base_actions_are_read_into_metadata(tmp_path):
    """Rollout bags hold the policy's raw action too; it is aligned like the executed one."""
    bag = tmp_path / 'rollout'
    with bag_io.BagWriter(bag) as writer:
        for k in range(FRAMES):
            stamp = k * PERIOD_NS
            writer.write(topics.image_topic('corner'), bag_io.image_message(
                _frame_image('corner', k), stamp, 'corner'), stamp)
            writer.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                JOINTS, np.zeros(9, dtype=np.float32), stamp), stamp)
            writer.write(bag_io.BASE_ACTION_TOPIC, bag_io.action_message(
                np.array([k, 2.0 * k, 0.0, 1.0])), stamp + 1)
            writer.write(bag_io.ACTION_TOPIC, bag_io.action_message(
                np.array([k / 10, 0.0, 0.0, 1.0])), stamp + 2)
    episode = read_episode(bag)
    base = episode.metadata['base_actions']
    assert base.shape == (FRAMES, 4)
    assert base[:, 1].tolist() == [2.0 * k for k in range(FRAMES)]
    assert episode.actions[:, 0].tolist() == pytest.approx([k / 10 for k in range(FRAMES)])


def test_bag_with_altered_bytes_is_skipped_not_trained_on(tmp_path, caplog):
    good = _write_episode(tmp_path / 'data' / 'good')
    altered = tmp_path / 'data' / 'altered'
    shutil.copytree(good, altered)
    (mcap_file,) = altered.glob('*.mcap')
    data = bytearray(mcap_file.read_bytes())
    data[len(data) // 2] ^= 0x01                    # one flipped bit inside the data
    mcap_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        episodes = read_episodes(tmp_path / 'data')
    assert [e.metadata['bag_path'].rsplit('/', 1)[-1] for e in episodes] == ['good']
    assert 'altered' in caplog.text
