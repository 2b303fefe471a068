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
    """Load an installed launch file with ``arguments`` set; return its entities and exit codes.

    The exit codes fill in as the launched processes exit (nodes created at launch time by an
    OpaqueFunction included).
    """
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), LAUNCH_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    settings = [SetLaunchConfiguration(key, str(value)) for key, value in arguments.items()]
    codes = ExitCodes()
    return [codes.handler()] + settings + description.entities, codes


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


class ExitCodes(dict):
    """Exit code of every process the launch started, by node name (filled as they exit)."""

    def handler(self):
        from launch.actions import RegisterEventHandler
        from launch.event_handlers import OnProcessExit

        return RegisterEventHandler(OnProcessExit(on_exit=self._record))

    def _record(self, event, context):
        self[event.action.node_name.rsplit('/', 1)[-1]] = event.returncode


def sim_topics():
    from sarm2_msgs.msg import StageReward
    from sensor_msgs.msg import Image, JointState

    return {'/camera/corner/image_raw': Image, '/joint_states': JointState,
            '/sarm2/stage_reward': StageReward}


@launch_fixture
def sim_launch(checkpoints, tmp_path):
    entities, codes = included('sim.launch.py', reward_checkpoint=checkpoints[0],
                               policy_checkpoint=checkpoints[1], task='reach-v3',
                               bag_directory=tmp_path / 'rollouts')
    return launch.LaunchDescription(entities + [launch_pytest.actions.ReadyToTest()]), codes


def loop_runs_and_exits_cleanly(launched):
    """While launched: camera, joints and rewards flow. After shutdown: every node exited 0."""
    listener = Listener(sim_topics())
    try:
        assert listener.wait_for(3, timeout=90), listener.counts
    finally:
        listener.close()
    yield
    codes = launched[1]
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
    entities, codes = included('robot.launch.py', reward_checkpoint=checkpoints[0],
                               policy_checkpoint=checkpoints[1], task='reach-v3',
                               camera_topic='/camera/corner/image_raw',
                               bag_directory=tmp_path / 'rollouts')
    return (launch.LaunchDescription(entities + [drivers, launch_pytest.actions.ReadyToTest()]),
            codes)


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
    entities, codes = included('replay.launch.py', bag=bag, reward_checkpoint=checkpoints[0],
                               task='reach-v3', shutdown_when_done='false')
    return launch.LaunchDescription(entities + [launch_pytest.actions.ReadyToTest()]), codes


@pytest.mark.launch(fixture=replay_launch)
def test_replay_launch_feeds_the_reward_node(replay_launch):
    from sarm2_msgs.msg import StageReward

    listener = Listener({'/sarm2/stage_reward': StageReward})
    try:
        assert listener.wait_for(5, timeout=90), listener.counts
    finally:
        listener.close()
    yield
    codes = replay_launch[1]
    assert codes.get('reward_node') == 0 and codes.get('bag_player') == 0, codes


# ---- `ros2 launch` itself, as a user runs it (the command line, Ctrl-C, a missing RViz) --------
def ros2_launch_command() -> str | None:
    """Return the `ros2` command when the launch CLI is installed, else None (tests skip)."""
    import shutil

    if launch_pytest is None or importlib.util.find_spec('ros2launch') is None:
        return None
    return shutil.which('ros2')


def run_launch(arguments: list[str], seconds: float, tmp_path) -> tuple[int, str]:
    """Run `ros2 launch sarm2_bringup ...`, stop it with SIGINT (Ctrl-C) after ``seconds``."""
    import signal
    import subprocess

    log = tmp_path / 'launch.log'
    with open(log, 'w') as stream:
        process = subprocess.Popen([ros2_launch_command(), 'launch', 'sarm2_bringup', *arguments],
                                   stdout=stream, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    return process.returncode, log.read_text()


needs_ros2_launch = pytest.mark.skipif(ros2_launch_command() is None,
                                       reason='the ros2 launch command is not installed')


@needs_ros2_launch
def test_sim_launch_runs_the_demo_graph_and_stops_cleanly_on_ctrl_c(checkpoints, tmp_path):
    """The launch file's graph is the demo's (same rates) and Ctrl-C leaves no error behind."""
    from rcl_interfaces.srv import GetParameters
    import rclpy

    code, output = None, ''
    rclpy.init()
    node = rclpy.create_node('launch_parameter_probe')
    try:
        import subprocess

        process = subprocess.Popen(
            [ros2_launch_command(), 'launch', 'sarm2_bringup', 'sim.launch.py',
             f'reward_checkpoint:={checkpoints[0]}', f'policy_checkpoint:={checkpoints[1]}',
             'task:=reach-v3', f'bag_directory:={tmp_path / "rollouts"}'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        values = {}
        for name, keys in (('sim_node', ['sim_rate', 'camera_rate', 'max_linear_speed']),
                           ('policy_node', ['control_rate', 'velocity_scale'])):
            client = node.create_client(GetParameters, f'/{name}/get_parameters')
            assert client.wait_for_service(60), name
            future = client.call_async(GetParameters.Request(names=keys))
            rclpy.spin_until_future_complete(node, future, timeout_sec=30)
            values.update({f'{name}.{k}': v.double_value
                           for k, v in zip(keys, future.result().values)})
        import signal

        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        code = process.returncode
    finally:
        node.destroy_node()
        rclpy.shutdown()
    # One definition of the sim graph: the values make demo and spiral_loop run with.
    assert values == {'sim_node.sim_rate': 20.0, 'sim_node.camera_rate': 20.0,
                      'sim_node.max_linear_speed': 0.8, 'policy_node.control_rate': 20.0,
                      'policy_node.velocity_scale': 0.8}
    assert code == 0, output
    assert 'never retrieved' not in output and 'Traceback' not in output, output


@needs_ros2_launch
def test_missing_rviz_fails_before_any_node_starts(checkpoints, tmp_path):
    from ament_index_python.packages import get_package_prefix, PackageNotFoundError

    try:
        get_package_prefix('rviz2')
        pytest.skip('rviz2 is installed here: nothing is missing')
    except PackageNotFoundError:
        pass
    code, output = run_launch(['sim.launch.py', f'reward_checkpoint:={checkpoints[0]}',
                               f'policy_checkpoint:={checkpoints[1]}', 'task:=reach-v3',
                               'rviz:=true'], 60, tmp_path)
    assert code != 0 and "package 'rviz2' not found" in output, output
    assert 'process started' not in output, output         # no orphaned sim/reward/policy


@needs_ros2_launch
def test_replay_launch_replays_sensors_only_and_does_not_stall(checkpoints, tmp_path):
    """A rollout bag's recorded commands and rewards stay in the bag; playing starts at once."""
    from geometry_msgs.msg import TwistStamped
    from sarm2_common import bag_io, topics
    from sarm2_msgs.msg import StageReward
    from std_msgs.msg import Float64

    bag = tmp_path / 'rollout'
    store = bag_io.typestore()
    twist, vector = (store.types['geometry_msgs/msg/TwistStamped'],
                     store.types['geometry_msgs/msg/Twist'])
    vector3 = store.types['geometry_msgs/msg/Vector3']
    gripper = store.types['std_msgs/msg/Float64']
    reward = store.types[bag_io.STAGE_REWARD_TYPE]
    with bag_io.BagWriter(bag) as writer:
        for k in range(60):
            stamp = 1_000_000_000 + k * 50_000_000
            writer.write(topics.image_topic('corner'), bag_io.image_message(
                np.full((64, 64, 3), k, np.uint8), stamp, 'corner'), stamp)
            writer.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                [f'j{i}' for i in range(9)], np.zeros(9, np.float32), stamp), stamp)
            command = twist(header=bag_io.header(stamp, 'world'),
                            twist=vector(linear=vector3(x=0.1, y=0.0, z=0.0),
                                         angular=vector3(x=0.0, y=0.0, z=0.0)))
            writer.write('/servo_node/delta_twist_cmds', command, stamp + 1)
            writer.write('/gripper/command', gripper(data=1.0), stamp + 1)
            writer.write(topics.STAGE_REWARD_TOPIC, reward(
                header=bag_io.header(stamp), task='reach-v3', instruction='', episode_id='old',
                frame_index=k, primitive_id=0, primitive_name='reach', primitive_confidence=1.0,
                group_id=0, group_name='', primitive_probabilities=np.zeros(0, np.float32),
                group_probabilities=np.zeros(0, np.float32), progress=0.5, value=-0.5,
                reward=0.0, success_probability=0.0, model_id='recorded-model',
                inference_time=0.0), stamp + 2)
    listener = Listener({'/servo_node/delta_twist_cmds': TwistStamped,
                         '/gripper/command': Float64, topics.STAGE_REWARD_TOPIC: StageReward})
    models = set()
    listener.node.create_subscription(StageReward, topics.STAGE_REWARD_TOPIC,
                                      lambda msg: models.add(msg.model_id), 10)
    try:
        started = time.monotonic()
        code, output = run_launch(['replay.launch.py', f'bag:={bag}',
                                   f'reward_checkpoint:={checkpoints[0]}', 'task:=reach-v3'],
                                  90, tmp_path)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert code == 0, output
    assert listener.counts['/servo_node/delta_twist_cmds'] == 0
    assert listener.counts['/gripper/command'] == 0
    assert listener.counts[topics.STAGE_REWARD_TOPIC] > 0
    assert models and 'recorded-model' not in models, models
    assert elapsed < 30, f'replay took {elapsed:.0f} s for a 3 s bag: {output}'
