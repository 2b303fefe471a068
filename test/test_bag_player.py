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


def write_rollout_bag(path):
    """Write a bag like a policy node's rollout: sensors, commands and the raw action."""
    store = bag_io.typestore()
    twist_type, twist, vector3 = (store.types['geometry_msgs/msg/TwistStamped'],
                                  store.types['geometry_msgs/msg/Twist'],
                                  store.types['geometry_msgs/msg/Vector3'])
    gripper = store.types['std_msgs/msg/Float64']
    with bag_io.BagWriter(path) as bag:
        for k in range(FRAMES):
            stamp = 5_000_000_000 + k * PERIOD_NS
            bag.write(topics.image_topic('corner'), bag_io.image_message(
                np.full((8, 8, 3), k, np.uint8), stamp, 'cam'), stamp)
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                [f'j{i}' for i in range(9)], np.full(9, k, np.float32), stamp), stamp)
            bag.write('/servo_node/delta_twist_cmds', twist_type(
                header=bag_io.header(stamp, 'world'),
                twist=twist(linear=vector3(x=0.1, y=0.0, z=0.0),
                            angular=vector3(x=0.0, y=0.0, z=0.0))), stamp + 1)
            bag.write('/gripper/command', gripper(data=1.0), stamp + 1)
            bag.write(bag_io.ACTION_TOPIC, bag_io.action_message(np.zeros(4)), stamp + 1)
    return path


def replay_counts(tmp_path, extra_args: list[str]) -> tuple[dict, str]:
    """Replay the rollout bag with ``extra_args``; count what arrives on each topic."""
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64, Float64MultiArray

    from sarm2_common.ros.qos import RELIABLE

    bag = write_rollout_bag(tmp_path / 'rollout')
    node = rclpy.create_node('replay_command_listener')
    counts = {}
    for topic, kind in ((topics.image_topic('corner'), Image),
                        (topics.JOINT_STATES_TOPIC, JointState),
                        ('/servo_node/delta_twist_cmds', TwistStamped),
                        ('/gripper/command', Float64), (bag_io.ACTION_TOPIC, Float64MultiArray)):
        counts[topic] = 0
        node.create_subscription(kind, topic,
                                 lambda _, t=topic: counts.__setitem__(t, counts[t] + 1),
                                 RELIABLE)
    player = PeerProcess([console_script('sarm2_bringup', 'bag_player'), str(bag),
                          '--rate', '4.0', '--wait-for-subscribers', '1', *extra_args],
                         'bag_player_commands', tmp_path)
    with player:
        assert spin_until(node, lambda: not player.alive(), timeout=40), player.output()
        spin_until(node, lambda: False, timeout=1.0)
        code = player.stop()
        output = player.output()
    node.destroy_node()
    assert code == 0, output
    return counts, output


def test_replay_never_publishes_recorded_commands_unless_named(ros_context, tmp_path):
    counts, output = replay_counts(tmp_path, [])
    assert counts[topics.image_topic('corner')] > 0 and counts[topics.JOINT_STATES_TOPIC] > 0
    assert counts['/servo_node/delta_twist_cmds'] == counts['/gripper/command'] == 0
    assert counts[bag_io.ACTION_TOPIC] == 0
    # Naming a command topic in --topics is not enough either.
    counts, output = replay_counts(tmp_path / 'named', ['--topics',
                                                        '/servo_node/delta_twist_cmds',
                                                        topics.image_topic('corner')])
    assert counts['/servo_node/delta_twist_cmds'] == 0 and 'publish-commands' in output


def test_replay_publishes_commands_named_explicitly_with_a_warning(ros_context, tmp_path):
    counts, output = replay_counts(tmp_path, ['--publish-commands', '/gripper/command'])
    assert counts['/gripper/command'] > 0 and counts['/servo_node/delta_twist_cmds'] == 0
    assert 'REPLAYING RECORDED COMMANDS on /gripper/command' in output


def test_corrupt_bag_is_refused_in_one_line(tmp_path):
    bag = write_rollout_bag(tmp_path / 'rollout')
    (mcap_file,) = bag.glob('*.mcap')
    data = bytearray(mcap_file.read_bytes())
    data[len(data) // 2] ^= 0x10
    mcap_file.write_bytes(bytes(data))
    player = PeerProcess([console_script('sarm2_bringup', 'bag_player'), str(bag)],
                         'bag_player_corrupt', tmp_path)
    with player:
        player.process.wait(30)
    lines = [line for line in player.output().splitlines() if line.strip()]
    assert player.process.returncode == 2, player.output()
    assert len(lines) == 1 and 'bag_player: error:' in lines[0], player.output()
