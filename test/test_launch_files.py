"""launch_pytest tests of the launch files: start, topics flow, every process exits 0.

They run where `launch_pytest` and `launch_ros` are installed (every ROS 2 install) and are
skipped where they are not (the PyPI wheels have no launch). No module-level importorskip:
launch_testing's collector imports every test file, and a module-level skip would drop the
whole directory.
"""

import importlib.util
from pathlib import Path
import threading
import time

import numpy as np
import pytest

from ros_harness import CONFIG_DIR, tiny_sim_checkpoints

try:
    import launch
    from launch.actions import SetLaunchConfiguration
    import launch_pytest
    from launch_ros.actions import Node as LaunchNode
except ImportError:
    launch_pytest = None

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = REPO / 'install' / 'sarm2_bringup' / 'share' / 'sarm2_bringup' / 'launch'

pytestmark = [
    pytest.mark.ros, pytest.mark.slow,
    pytest.mark.skipif(launch_pytest is None,
                       reason='launch_pytest/launch_ros not installed (they come with ROS 2)'),
]


def launch_fixture(function):
    """Make a launch_pytest fixture where launch_pytest exists; leave the function elsewhere."""
    return launch_pytest.fixture(function) if launch_pytest is not None else function


def included(name: str, **arguments) -> tuple:
    """Load an installed launch file with ``arguments`` set; return its entities and Nodes."""
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), LAUNCH_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    nodes = [e for e in description.entities if isinstance(e, LaunchNode)]
    settings = [SetLaunchConfiguration(key, str(value)) for key, value in arguments.items()]
    return settings + description.entities, nodes


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Tiny random SARM2 and VLA checkpoints that fit the simulated arm."""
    return tiny_sim_checkpoints(tmp_path_factory.mktemp('launch_checkpoints'))


class Listener:
    """Counts messages on topics from a background spin thread."""

    def __init__(self, topics: dict):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from sarm2_common.ros.qos import SENSOR_DATA

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('launch_test_listener', context=self.context)
        self.counts = dict.fromkeys(topics, 0)
        for topic, message_type in topics.items():
            self.node.create_subscription(message_type, topic,
                                          lambda _, t=topic: self._count(t), SENSOR_DATA)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _count(self, topic: str) -> None:
        self.counts[topic] += 1

    def wait_for(self, minimum: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(count >= minimum for count in self.counts.values()):
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def started_cleanly(nodes) -> dict:
    """Exit codes of the launched node processes (nodes whose condition was false are absent)."""
    return {node.node_name.rsplit('/', 1)[-1]: node.return_code
            for node in nodes if node.process_details}


def sim_topics():
    from sarm2_msgs.msg import StageReward
    from sensor_msgs.msg import Image, JointState

    return {'/camera/corner/image_raw': Image, '/joint_states': JointState,
            '/sarm2/stage_reward': StageReward}


@launch_fixture
def sim_launch(checkpoints, tmp_path):
    entities, nodes = included('sim.launch.py', reward_checkpoint=checkpoints[0],
                               policy_checkpoint=checkpoints[1], task='reach-v3',
                               bag_directory=tmp_path / 'rollouts')
    return launch.LaunchDescription(entities + [launch_pytest.actions.ReadyToTest()]), nodes


def loop_runs_and_exits_cleanly(launched):
    """While launched: camera, joints and rewards flow. After shutdown: every node exited 0."""
    listener = Listener(sim_topics())
    try:
        assert listener.wait_for(3, timeout=90), listener.counts
    finally:
        listener.close()
    yield
    codes = started_cleanly(launched[1])
    assert set(codes) == {'sim_node', 'reward_node', 'policy_node'}
    assert all(code == 0 for code in codes.values()), codes


@pytest.mark.launch(fixture=sim_launch)
def test_sim_launch_runs_the_loop(sim_launch):
    yield from loop_runs_and_exits_cleanly(sim_launch)


@launch_fixture
def robot_launch(checkpoints, tmp_path):
    # The simulated arm stands in for the user's camera and arm drivers.
    drivers = LaunchNode(package='sarm2_sim', executable='sim_node', name='sim_node',
                         parameters=[str(CONFIG_DIR / 'sim_node.yaml'),
                                     {'task': 'reach-v3'}])
    entities, nodes = included('robot.launch.py', reward_checkpoint=checkpoints[0],
                               policy_checkpoint=checkpoints[1], task='reach-v3',
                               camera_topic='/camera/corner/image_raw',
                               bag_directory=tmp_path / 'rollouts')
    return (launch.LaunchDescription([drivers] + entities
                                     + [launch_pytest.actions.ReadyToTest()]),
            nodes + [drivers])


@pytest.mark.launch(fixture=robot_launch)
def test_robot_launch_runs_next_to_drivers(robot_launch):
    yield from loop_runs_and_exits_cleanly(robot_launch)


@launch_fixture
def replay_launch(checkpoints, tmp_path):
    from sarm2_common import bag_io, topics

    bag = tmp_path / 'episode'
    with bag_io.BagWriter(bag) as writer:
        for k in range(200):
            stamp = 1_000_000_000 + k * 50_000_000
            image = np.full((64, 64, 3), k % 255, np.uint8)
            writer.write(topics.image_topic('corner'),
                         bag_io.image_message(image, stamp, 'corner_optical_frame'), stamp)
            writer.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                [f'j{i}' for i in range(9)], np.zeros(9, np.float32), stamp), stamp)
    entities, nodes = included('replay.launch.py', bag=bag, reward_checkpoint=checkpoints[0],
                               task='reach-v3', shutdown_when_done='false')
    return launch.LaunchDescription(entities + [launch_pytest.actions.ReadyToTest()]), nodes


@pytest.mark.launch(fixture=replay_launch)
def test_replay_launch_feeds_the_reward_node(replay_launch):
    from sarm2_msgs.msg import StageReward

    listener = Listener({'/sarm2/stage_reward': StageReward})
    try:
        assert listener.wait_for(5, timeout=90), listener.counts
    finally:
        listener.close()
    yield
    codes = started_cleanly(replay_launch[1])
    assert codes.get('reward_node') == 0 and codes.get('bag_player') == 0, codes
