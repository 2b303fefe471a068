"""bag_player replays a bag over DDS: same bytes, same stamps, recorded spacing, and exits 0."""

import time

import numpy as np
import pytest

from ros_harness import console_script, PeerProcess, spin_until
from sarm2_common import bag_io, topics

pytestmark = pytest.mark.ros

FRAMES = 20
PERIOD_NS = 100_000_000


def write_bag(path):
    with bag_io.BagWriter(path) as bag:
        for k in range(FRAMES):
            stamp = 5_000_000_000 + k * PERIOD_NS
            image = np.full((8, 8, 3), k, np.uint8)
            bag.write(topics.image_topic('corner'), bag_io.image_message(image, stamp, 'cam'),
                      stamp)
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                [f'j{i}' for i in range(9)], np.full(9, k, np.float32), stamp), stamp)
    return path


def test_replay_publishes_recorded_messages_with_timing(ros_context, tmp_path):
    import rclpy
    from sensor_msgs.msg import Image, JointState

    from sarm2_common.ros.qos import SENSOR_DATA

    bag = write_bag(tmp_path / 'bag')
    node = rclpy.create_node('replay_listener')
    images, joints = [], []
    node.create_subscription(Image, '/camera/corner/image_raw',
                             lambda m: images.append((time.monotonic(), m)), SENSOR_DATA)
    node.create_subscription(JointState, '/joint_states', joints.append, SENSOR_DATA)
    player = PeerProcess([console_script('sarm2_bringup', 'bag_player'), str(bag),
                          '--rate', '2.0', '--topics', '/camera/corner/image_raw',
                          '--wait-for-subscribers', '1', '--ros-args', '-p', 'start_delay:=0.5'],
                         'bag_player', tmp_path)
    with player:
        assert spin_until(node, lambda: not player.alive(), timeout=40), player.output()
        # Messages already delivered to this process still wait for their callbacks.
        spin_until(node, lambda: len(images) == FRAMES, timeout=3)
        assert len(images) >= FRAMES - 2, ([m.data[0] for _, m in images], player.output())
        code = player.stop()
    node.destroy_node()
    assert code == 0, player.output()
    assert joints == []                                    # filtered out
    # Best-effort QoS may drop a frame on a loaded machine; what arrives is exact.
    for _, image in images:
        k = image.data[0]
        assert bytes(image.data) == bytes([k]) * (8 * 8 * 3)
        assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == \
            5_000_000_000 + k * PERIOD_NS
    arrival = [t for t, _ in images]
    span = arrival[-1] - arrival[0]
    recorded = (images[-1][1].data[0] - images[0][1].data[0]) * PERIOD_NS / 1e9 / 2.0
    assert span == pytest.approx(recorded, abs=0.25)


def test_missing_bag_exits_nonzero_with_message(tmp_path):
    player = PeerProcess([console_script('sarm2_bringup', 'bag_player'),
                          str(tmp_path / 'nope')], 'bag_player_missing', tmp_path)
    with player:
        player.process.wait(30)
    assert player.process.returncode == 2
    assert 'no such bag directory' in player.output()
