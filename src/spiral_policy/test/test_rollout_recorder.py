"""Streaming rollout bags: readable by rosbags, mcap and bag_dataset, even after SIGKILL."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from sarm2_common import bag_io, topics
from sarm2_common.bag_dataset import read_episode
from sarm2_common.bag_writer import StreamingBagWriter
from spiral_policy.rollout_recorder import RolloutRecorder

TOPICS = {topics.image_topic('corner'): bag_io.IMAGE_TYPE,
          topics.JOINT_STATES_TOPIC: bag_io.JOINT_STATE_TYPE,
          bag_io.ACTION_TOPIC: bag_io.ACTION_TYPE,
          bag_io.METADATA_TOPIC: bag_io.METADATA_TYPE}


def write_frame(recorder, step, stamp):
    store = bag_io.typestore()
    image = np.full((8, 8, 3), step % 256, np.uint8)
    for topic, message in (
            (topics.image_topic('corner'), bag_io.image_message(image, stamp, 'corner')),
            (topics.JOINT_STATES_TOPIC,
             bag_io.joint_state_message(['j'] * 9, np.full(9, step, np.float64), stamp)),
            (bag_io.ACTION_TOPIC, bag_io.action_message(np.array([step, 0, 0, 1.0])))):
        recorder.write(topic, store.serialize_cdr(message, message.__msgtype__), stamp)


def metadata_bytes(kind, stamp, success=False, steps=0):
    message = bag_io.metadata_message(stamp, kind, 'ep1', 'reach-v3', 'reach it', seed=3,
                                      success=success, reason='success' if success else '',
                                      steps=steps, metadata_json='{"policy": "p@1"}')
    return bag_io.typestore().serialize_cdr(message, message.__msgtype__)


def test_finished_bag_opens_everywhere(tmp_path):
    recorder = RolloutRecorder(tmp_path, bag_io.typestore())
    path = recorder.start('ep1', TOPICS, {'task': 'reach-v3'})
    recorder.write(bag_io.METADATA_TOPIC, metadata_bytes('start', 1000), 1000)
    for step in range(5):
        write_frame(recorder, step, 10_000 + step * 100_000_000)
    recorder.write(bag_io.METADATA_TOPIC, metadata_bytes('end', 10**9, True, 5), 10**9)
    assert recorder.stop({'task': 'reach-v3', 'success': True}) == path
    with Reader(path) as reader:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
        assert counts[topics.JOINT_STATES_TOPIC] == 5 and counts[bag_io.METADATA_TOPIC] == 2
        assert len(list(reader.messages())) == 17
        assert '"success": true' in reader.storage.metadata.custom['episode_metadata']
    with open(next(path.glob('*.mcap')), 'rb') as stream:
        decoded = list(make_reader(stream, decoder_factories=[DecoderFactory()])
                       .iter_decoded_messages())
    assert len(decoded) == 17
    assert decoded[-1][3].kind == 'end'
    episode = read_episode(path)
    assert len(episode) == 5 and episode.success and episode.metadata['complete']
    np.testing.assert_allclose(episode.actions[:, 0], np.arange(5))


@pytest.mark.parametrize('flipped', [1, 20])
def test_rollout_with_altered_bytes_is_refused_by_the_dataset_reader(tmp_path, flipped):
    recorder = RolloutRecorder(tmp_path, bag_io.typestore())
    path = recorder.start('ep1', TOPICS, {'task': 'reach-v3'})
    for step in range(5):
        write_frame(recorder, step, 10_000 + step * 100_000_000)
    recorder.stop({'task': 'reach-v3'})
    (mcap_file,) = path.glob('*.mcap')
    data = bytearray(mcap_file.read_bytes())
    middle = len(data) // 2                 # inside the recorded images
    for i in range(flipped):
        data[middle + 3 * i] ^= 0xFF
    mcap_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='checksum mismatch'):
        read_episode(path)


def test_rclpy_bytes_are_stored_canonically(tmp_path):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    raw = serialize_message(JointState(name=['joint_0', 'joint_1'], position=[0.5, -1.0]))
    writer = StreamingBagWriter(tmp_path / 'bag', bag_io.typestore())
    writer.add_connection(topics.JOINT_STATES_TOPIC, bag_io.JOINT_STATE_TYPE)
    writer.write(topics.JOINT_STATES_TOPIC, raw, 5)
    with pytest.raises(ValueError):
        writer.write(topics.JOINT_STATES_TOPIC, b'\x00\x07\x00\x00', 6)
    writer.close()
    ((topic, _, message),) = list(bag_io.read_messages(tmp_path / 'bag'))
    assert list(message.name) == ['joint_0', 'joint_1']
    np.testing.assert_array_equal(message.position, [0.5, -1.0])
    recorder = RolloutRecorder(tmp_path, bag_io.typestore())
    assert not recorder.write('/x', raw, 0)        # no bag open


def test_topic_type_conflicts_and_no_overwrite(tmp_path):
    writer = StreamingBagWriter(tmp_path / 'bag', bag_io.typestore())
    writer.add_connection('/a', bag_io.ACTION_TYPE)
    with pytest.raises(ValueError):
        writer.add_connection('/a', bag_io.IMAGE_TYPE)
    with pytest.raises(KeyError):
        writer.write('/b', b'', 0)
    writer.close()
    with pytest.raises(FileExistsError):
        StreamingBagWriter(tmp_path / 'bag', bag_io.typestore())


CHILD = r"""
import sys, time
sys.path[:0] = {paths!r}
from pathlib import Path
from sarm2_common import bag_io
from spiral_policy.rollout_recorder import RolloutRecorder
import test_rollout_recorder as t
recorder = RolloutRecorder(Path(sys.argv[1]), bag_io.typestore(), flush_period=0.2)
recorder.start('ep1', t.TOPICS, {{}})
recorder.write(bag_io.METADATA_TOPIC, t.metadata_bytes('start', 1), 1)
step = 0
while True:
    t.write_frame(recorder, step, 10 + step * 1000)
    print(step, flush=True)
    step += 1
    time.sleep(0.01)
"""


def test_sigkill_mid_episode_leaves_a_readable_bag(tmp_path):
    code = CHILD.format(paths=[str(Path(__file__).parent)] + sys.path)
    child = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    written = -1
    started = time.monotonic()
    while written < 60 and time.monotonic() - started < 60:
        written = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert written >= 60
    bag = tmp_path / 'ep1'
    with Reader(bag) as reader:
        steps = [int(bag_io.typestore().deserialize_cdr(data, c.msgtype).position[0])
                 for c, _, data in reader.messages()
                 if c.topic == topics.JOINT_STATES_TOPIC]
    # at ~100 frames/s and a 0.2 s flush period, at most ~20 frames (+ scheduling) are lost
    assert steps == list(range(len(steps))) and len(steps) >= written - 60
    with open(next(bag.glob('*.mcap')), 'rb') as stream:
        seen = [channel.topic for _, channel, _ in make_reader(stream).iter_messages()]
    assert seen.count(topics.JOINT_STATES_TOPIC) == len(steps)
    episode = read_episode(bag)
    # frames follow the camera; a flush may fall between a frame's image and its joint state
    assert len(episode) == seen.count(topics.image_topic('corner'))
    assert len(episode) in (len(steps), len(steps) + 1) and not episode.metadata['complete']
