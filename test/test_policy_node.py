"""The policy node as a separate OS process over real DDS.

- e-stop: after the e-stop message no motion command follows (within one control period),
  the episode aborts, goals are refused until ~/reset_estop;
- watchdog: a stalled camera makes the node hold position within timeout + one period, and
  motion resumes when frames come back;
- SIGKILL mid-episode leaves a rollout bag that rosbags, mcap and bag_dataset read;
- with the simulated arm node (and the reward node when present), a RunEpisode goal runs an
  episode to success or its limit, the bag holds every recorded topic, and it exports to a
  LeRobot dataset with the live rewards.

In the first three tests this process plays the arm (camera, joint states, end-effector pose)
and listens to the commands; the policy is a tiny random compact VLA, so its commands are
arbitrary motions, which is what the safety checks need.
"""

import json
from pathlib import Path
import threading
import time
import uuid

import numpy as np
import pytest

from ros_harness import (BackgroundNode, call_idempotent, CONFIG_DIR, NodeLauncher,
                         settle_discovery, unique_name, wait_future, wait_until)

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / 'install' / 'spiral_policy' / 'lib' / 'spiral_policy' / 'policy_node'
SIM_NODE = REPO / 'install' / 'sarm2_sim' / 'lib' / 'sarm2_sim' / 'sim_node'
REWARD_NODE = REPO / 'install' / 'sarm2_reward' / 'lib' / 'sarm2_reward' / 'reward_node'
PARAMS = CONFIG_DIR / 'policy_node.yaml'
JOINT_NAMES = [f'joint_{i}' for i in range(7)] + ['finger_left', 'finger_right']
RATE = 20.0
PERIOD = 1.0 / RATE
WATCHDOG = 0.3
# DDS delivery and scheduling slack on a loaded 2-core machine (load average ~10 measured).
SLACK = 0.1

pytestmark = pytest.mark.ros


@pytest.fixture
def start_node(tmp_path):
    launcher = NodeLauncher(tmp_path, log_tail=6000)

    def start(executable, name, params, params_file=PARAMS):
        return launcher.start(executable, name=name, params=params, params_file=params_file)

    yield start
    launcher.stop_all()


@pytest.fixture(scope='module')
def ros():
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig, save_checkpoint
    import torch

    torch.manual_seed(0)
    config = CompactVlaConfig(image_size=16, chunk_size=4, d_model=16, num_heads=2,
                              num_layers=1, conv_channels=(8, 8), text_buckets=16)
    model = CompactVla(config)
    # large output weights: the random policy asks for big, fast motions
    with torch.no_grad():
        model.action_head.weight.mul_(50.0)
    return save_checkpoint(model.eval(), tmp_path / 'tiny_vla')


class FakeArm:
    """This process as the arm: camera, joints, ee pose at 30 Hz; records commands."""

    def __init__(self, rclpy):
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from rclpy.action import ActionClient
        from rclpy.qos import QoSProfile
        from sarm2_msgs.action import RunEpisode
        from sarm2_common.ros.qos import RELIABLE, SENSOR_DATA
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger

        self.rclpy = rclpy
        self.node = rclpy.create_node(f'fake_arm_{uuid.uuid4().hex[:6]}')
        self.image_pub = self.node.create_publisher(Image, '/camera/corner/image_raw',
                                                    SENSOR_DATA)
        self.joint_pub = self.node.create_publisher(JointState, '/joint_states', SENSOR_DATA)
        self.pose_pub = self.node.create_publisher(PoseStamped, '/arm/ee_pose', SENSOR_DATA)
        self.estop_pub = self.node.create_publisher(Bool, '/estop', RELIABLE)
        self.twists: list[tuple[float, np.ndarray]] = []
        # Deep history: every command of an episode must be recorded, even when this process
        # spins late (keep-last 10 would silently drop the oldest).
        self.node.create_subscription(TwistStamped, '/arm/cartesian_velocity', self._on_twist,
                                      QoSProfile(depth=1000, reliability=RELIABLE.reliability))
        self._clients = (ActionClient, RunEpisode, Trigger)
        self.action = self.reset_estop = self._client_spin = None
        self.goal_type = RunEpisode.Goal
        self.camera_on = True
        self.stamp_offset = 0.0          # s subtracted from the camera's header stamps
        self.last_image_time = 0.0
        self.statuses = []
        from sarm2_common.ros.qos import LATCHED
        from sarm2_msgs.msg import EpisodeStatus
        self.node.create_subscription(EpisodeStatus, '/episode/status', self.statuses.append,
                                      LATCHED)
        self._messages = (Image, JointState, PoseStamped)
        self._background = BackgroundNode(self.node, self._publish_loop)

    def connect(self, node_name: str) -> None:
        """Talk to the policy node called ``node_name`` (from a client node of its own).

        rclpy's ActionClient joins its node's wait set before its lock exists, so creating one
        on a node another thread spins can kill that thread: the clients get a fresh node,
        spun only once they exist.
        """
        action_client, run_episode, trigger = self._clients
        node = self.rclpy.create_node(f'fake_arm_client_{uuid.uuid4().hex[:6]}')
        self.action = action_client(node, run_episode, f'/{node_name}/run_episode')
        self.reset_estop = node.create_client(trigger, f'/{node_name}/reset_estop')
        self._client_spin = BackgroundNode(node, lambda stop: stop.wait())

    def _on_twist(self, msg):
        # Commands are timed by their header stamp (the node's clock, wall time here), not by
        # when this process got around to handling them.
        linear = msg.twist.linear
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.twists.append((sent, np.array([linear.x, linear.y, linear.z])))

    def _publish_loop(self, stop):
        image_type, joint_type, pose_type = self._messages
        rng = np.random.default_rng(0)
        while not stop.wait(1 / 30):
            now = self.node.get_clock().now()
            stamp = now.to_msg()
            if self.camera_on:
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                image = image_type(height=32, width=32, encoding='rgb8', step=96,
                                   data=pixels.tobytes())
                old = now.nanoseconds - int(self.stamp_offset * 1e9)
                image.header.stamp.sec, image.header.stamp.nanosec = divmod(old, 10**9)
                self.image_pub.publish(image)
                self.last_image_time = time.time()
            joints = joint_type(name=JOINT_NAMES, position=[0.1] * 9)
            joints.header.stamp = stamp
            self.joint_pub.publish(joints)
            pose = pose_type()
            pose.header.stamp = stamp
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
            self.pose_pub.publish(pose)

    def send_goal(self, timeout=20.0, **fields):
        assert self.action.wait_for_server(timeout_sec=timeout), 'no run_episode server'
        settle_discovery()
        goal = self.goal_type(task=fields.pop('task', 'reach-v3'),
                              instruction=fields.pop('instruction', 'reach the target'),
                              **fields)
        future = self.action.send_goal_async(goal)
        handle = wait_future(future, timeout)
        return handle

    def motions_between(self, since: float, until: float) -> list[float]:
        return [t for t, v in self.twists if since < t <= until and np.abs(v).max() > 1e-9]

    def motions_after(self, since: float) -> list[float]:
        return [t for t, v in self.twists if t > since and np.abs(v).max() > 1e-9]

    def wait_motion(self, count=5, timeout=20.0) -> None:
        start = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.motions_after(start)) >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f'no motion commands within {timeout} s')

    def close(self):
        if self._client_spin is not None:
            self._client_spin.close()
        self._background.close()


def node_params(checkpoint, bag_dir, **extra):
    params = {'checkpoint': str(checkpoint), 'autostart': 'true', 'success_source': 'none',
              'reset_service': "''", 'set_task_service': "''", 'control_rate': str(RATE),
              'safety_watchdog_timeout': str(WATCHDOG), 'max_steps': '100000',
              'time_limit': '1000.0', 'bag_directory': str(bag_dir), 'flush_period': '0.2',
              'safety_max_cartesian_speed': '0.5', 'command_topic': '/arm/cartesian_velocity',
              'ee_pose_topic': '/arm/ee_pose', 'safety_enforce_workspace': 'true'}
    params.update(extra)
    return [f'{k}:={v}' for k, v in params.items()]


@pytest.fixture
def arm(ros):
    fake = FakeArm(ros)
    yield fake
    fake.close()


def test_estop_and_watchdog_stop_motion(ros, arm, start_node, tiny_checkpoint, tmp_path):
    from action_msgs.msg import GoalStatus
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'bags'))
    arm.connect(name)
    handle = arm.send_goal(record=True)
    assert handle.accepted
    arm.wait_motion()
    # every command respects the configured speed limit
    assert max(np.linalg.norm(v) for _, v in arm.twists) <= 0.5 + 1e-9

    # --- e-stop ---
    estop_time = time.time()            # wall clock, like the command stamps
    arm.estop_pub.publish(Bool(data=True))
    result = wait_future(handle.get_result_async(), 30)
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == 'estop'
    # The spin thread handles commands when it gets the CPU: wait until it has seen the stop.
    assert wait_until(lambda: any(t > estop_time and not v.any() for t, v in arm.twists),
                      15), 'no stop command'
    time.sleep(0.5)
    late = [t - estop_time for t in arm.motions_after(estop_time + PERIOD + SLACK)]
    assert not late, f'motion commands {late} s after the e-stop'
    assert not arm.send_goal(record=False).accepted     # latched
    assert arm.reset_estop.wait_for_service(timeout_sec=5)
    assert wait_future(arm.reset_estop.call_async(Trigger.Request()), 30).success

    # --- watchdog: stall the camera ---
    handle = arm.send_goal(record=False)
    assert handle.accepted
    arm.wait_motion()
    arm.camera_on = False
    time.sleep(WATCHDOG + 1.0)
    stall_time = arm.last_image_time       # the last frame ever sent

    def holds():
        return [t for t, v in arm.twists if t > stall_time + WATCHDOG + PERIOD and not v.any()]

    assert wait_until(lambda: len(holds()) >= 5, 15), \
        'the node should keep commanding zero velocity while stale'
    late = [t - stall_time for t in
            arm.motions_after(stall_time + WATCHDOG + PERIOD + SLACK)]
    assert not late, f'motion commands {late} s after the camera stalled'
    arm.camera_on = True
    arm.wait_motion(timeout=5)          # fresh frames: the policy drives again
    handle.cancel_goal_async()
    result = wait_future(handle.get_result_async(), 30)
    assert result.status == GoalStatus.STATUS_CANCELED
    assert result.result.reason == 'canceled'
    assert node.alive()


def test_killed_policy_process_leaves_a_readable_bag(ros, arm, start_node, tiny_checkpoint,
                                                     tmp_path):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader
    from sarm2_common import bag_io, topics
    from sarm2_common.bag_dataset import read_episode

    bags = tmp_path / 'bags'
    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, bags))
    arm.connect(name)
    handle = arm.send_goal(record=True)
    assert handle.accepted
    arm.wait_motion(count=20)
    time.sleep(1.0)
    node.kill()
    (bag,) = [path for path in bags.iterdir() if path.is_dir()]
    with Reader(bag) as reader:
        counts = {}
        for connection, _, _ in reader.messages():
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    assert counts[topics.image_topic('corner')] >= 10
    assert counts[bag_io.ACTION_TOPIC] >= 10 and counts['/policy/base_action'] >= 10
    assert counts[bag_io.METADATA_TOPIC] == 1          # start only: the end never came
    with open(next(bag.glob('*.mcap')), 'rb') as stream:
        assert sum(1 for _ in make_reader(stream).iter_messages()) == sum(counts.values())
    episode = read_episode(bag)
    assert len(episode) >= 10 and not episode.metadata['complete']
    assert episode.instruction == 'reach the target'


@pytest.fixture
def tiny_reward_checkpoint(tmp_path):
    from sarm2_reward.checkpoint import save_checkpoint
    from sarm2_reward.model import Sarm2Config, Sarm2Model
    import torch

    torch.manual_seed(0)
    model = Sarm2Model(Sarm2Config(
        cameras=('corner',), image_size=32, cnn_channels=(4, 8), frame_embed_dim=16,
        d_model=16, n_heads=2, stage_layers=1, value_layers=1, num_experts=4, top_k=2,
        expert_hidden=8))
    return save_checkpoint(model, tmp_path / 'tiny_reward')


def test_sim_reward_and_policy_nodes_run_a_recorded_episode(ros, start_node, tiny_checkpoint,
                                                            tiny_reward_checkpoint, tmp_path):
    from action_msgs.msg import GoalStatus
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
    from rosbags.rosbag2 import Reader
    from sarm2_msgs.action import RunEpisode
    from sarm2_common import bag_io, topics
    from sarm2_common.bag_dataset import read_episode

    start_node(SIM_NODE, 'sim_node', ['task:=reach-v3', 'image_size:=64',
                                      'max_linear_speed:=0.8'], params_file=None)
    start_node(REWARD_NODE, 'reward_node', [f'checkpoint:={tiny_reward_checkpoint}',
                                            'autostart:=true'], params_file=None)
    bags = tmp_path / 'bags'
    name = unique_name()
    start_node(NODE, name, [
        f'checkpoint:={tiny_checkpoint}', 'autostart:=true', f'bag_directory:={bags}',
        'success_source:=sim', 'max_steps:=40', 'control_rate:=10.0', 'start_timeout:=30.0'])
    node = ros.create_node(f'episode_client_{uuid.uuid4().hex[:6]}')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        client = ActionClient(node, RunEpisode, f'/{name}/run_episode')
        assert client.wait_for_server(timeout_sec=60), 'policy node action server missing'
        settle_discovery()
        # the reward node publishes once configured (its model loads slowly on a busy machine)
        deadline = time.monotonic() + 60
        while node.count_publishers('/sarm2/stage_reward') == 0:
            assert time.monotonic() < deadline, 'reward node never configured'
            time.sleep(0.1)
        feedback = []
        handle = wait_future(client.send_goal_async(
            RunEpisode.Goal(task='reach-v3', seed=7, record=True),
            feedback_callback=feedback.append), 30)
        assert handle.accepted
        response = wait_future(handle.get_result_async(), 120)
    finally:
        executor.shutdown()
        node.destroy_node()
    result = response.result
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert result.reason in ('success', 'step_limit') and result.success == (
        result.reason == 'success')
    assert 0 < result.steps <= 40 and feedback
    bag = Path(result.bag_path)
    assert bag.parent == bags
    expected = {topics.image_topic('corner'), topics.JOINT_STATES_TOPIC, bag_io.ACTION_TOPIC,
                '/policy/base_action', '/policy/instruction', '/servo_node/delta_twist_cmds',
                '/gripper/command', '/sarm2/stage_reward', '/episode/status',
                bag_io.METADATA_TOPIC, bag_io.GROUND_TRUTH_TOPIC}
    with Reader(bag) as reader:
        counts = {}
        for connection, _, _ in reader.messages():
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    assert expected <= set(counts), f'missing {expected - set(counts)}'
    assert counts[bag_io.METADATA_TOPIC] == 2 and counts['/episode/status'] == 2
    with open(next(bag.glob('*.mcap')), 'rb') as stream:
        decoded = {channel.topic: message for _, channel, _, message in
                   make_reader(stream, decoder_factories=[DecoderFactory()])
                   .iter_decoded_messages()}
    assert decoded['/policy/instruction'].data == 'move the gripper to the target position'
    assert decoded[bag_io.METADATA_TOPIC].kind == 'end'
    assert decoded[bag_io.METADATA_TOPIC].reason == result.reason
    metadata = json.loads(decoded[bag_io.METADATA_TOPIC].metadata_json)
    assert metadata['seed'] == 7 and len(metadata['checkpoint_sha256']) == 64
    assert metadata['node_config']['safety_max_cartesian_speed'] == 0.8
    episode = read_episode(bag)
    assert episode.metadata['complete'] and episode.task == 'reach-v3'
    assert episode.actions.shape[1] == 4 and len(episode) >= 10
    # The real rollout bag exports to LeRobot with the live rewards in it (on the control grid).
    from sarm2_reward.lerobot_dataset import read_lerobot_dataset
    from sarm2_reward.lerobot_export import ExportConfig, export_lerobot
    export_lerobot([bag], tmp_path / 'lerobot', ExportConfig(fps=10), progress=False)
    (exported,) = read_lerobot_dataset(tmp_path / 'lerobot')
    assert exported.task == 'reach-v3' and exported.success == result.success
    assert len(exported) >= 10 and exported.actions.shape[1] == 4
    assert exported.metadata['reward_source'].startswith('live:sarm2')
    assert np.isfinite(exported.metadata['rewards']['progress']).any()


def test_remote_openpi_policy_drives_the_arm(ros, arm, start_node, tmp_path):
    """A policy served over the openpi websocket protocol drives the arm through the node."""
    from action_msgs.msg import GoalStatus
    from spiral_policy.adapters.openpi_client import packb, unpackb
    from websockets.sync.server import serve

    prompts = []

    def session(websocket):
        websocket.send(packb({'policy_name': 'constant_pi'}))
        for message in websocket:
            request = unpackb(message)
            prompts.append(request['prompt'])
            assert request['observation/image'].shape == (224, 224, 3)
            actions = np.tile(np.array([0.5, 0.0, -0.25, 1.0, 9.0, 9.0, 9.0]), (10, 1))
            websocket.send(packb({'actions': actions}))

    server = serve(session, 'localhost', 0, compression=None, max_size=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        name = unique_name()
        start_node(NODE, name, node_params(
            'unused', tmp_path / 'bags', policy_type='openpi', openpi_port=str(port)))
        arm.connect(name)
        handle = arm.send_goal(record=False, max_steps=30)
        assert handle.accepted
        response = wait_future(handle.get_result_async(), 60)
    finally:
        server.shutdown()
        thread.join(5)
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert response.result.reason == 'step_limit' and response.result.steps == 30
    assert prompts and set(prompts) == {'reach the target'}
    # 0.8 m/s per unit action (config/policy_node.yaml): (0.5, 0, -0.25) -> (0.4, 0, -0.2) m/s,
    # scaled down to the 0.5 m/s speed limit of this test
    moving = [v for _, v in arm.twists if v.any()]
    expected = np.array([0.4, 0.0, -0.2]) * min(1.0, 0.5 / np.linalg.norm([0.4, 0.0, -0.2]))
    # Most of the 30 steps move; the first ones wait for the server's first chunk.
    assert len(moving) >= 15
    np.testing.assert_allclose(moving[0], expected, atol=1e-6)


# ---- faults: stamps, Ctrl-C, bad goals, bad parameters, bad checkpoints -----------------------
@pytest.mark.parametrize('age', [15.0, 3600.0])
def test_frames_stamped_long_ago_never_move_the_arm(ros, arm, start_node, tiny_checkpoint,
                                                   tmp_path, age):
    """Old camera frames (a stalled driver, a replay) hold the arm, however fresh their arrival.

    Motion resumes when the stamps are current again.
    """
    arm.stamp_offset = age
    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'bags'))
    arm.connect(name)
    started = time.time()
    handle = arm.send_goal(record=False)
    assert handle.accepted
    assert wait_until(lambda: len([t for t, v in arm.twists if t > started]) >= 20, 20), \
        node.output()
    assert arm.motions_after(started) == [], 'old frames moved the arm'
    assert 'observation_stamps' in node.output()          # the log says what to do
    arm.stamp_offset = 0.0
    arm.wait_motion(timeout=10)
    handle.cancel_goal_async()


def test_ctrl_c_mid_episode_stops_the_arm_and_closes_the_bag(ros, arm, start_node,
                                                            tiny_checkpoint, tmp_path):
    import signal

    from sarm2_common import bag_io
    from sarm2_common.bag_playback import read_bag
    from sarm2_msgs.msg import EpisodeStatus

    bags = tmp_path / 'bags'
    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, bags))
    arm.connect(name)
    assert arm.send_goal(record=True).accepted
    arm.wait_motion()
    interrupted = time.time()
    node.process.send_signal(signal.SIGINT)
    assert node.process.wait(20) == 0, node.output()
    # The last command is a stop, sent after Ctrl-C; the last status says why it ended.
    assert wait_until(lambda: any(t > interrupted and not v.any() for t, v in arm.twists), 10)
    assert not arm.twists[-1][1].any(), 'the arm was left moving'
    assert wait_until(lambda: arm.statuses and arm.statuses[-1].reason == 'shutdown', 10), \
        [(s.state, s.reason) for s in arm.statuses]
    assert arm.statuses[-1].state == EpisodeStatus.ABORTED
    (bag,) = [path for path in bags.iterdir() if path.is_dir()]
    messages, report = read_bag(bag, (bag_io.METADATA_TOPIC,))
    assert report.complete, report.problems
    store = bag_io.typestore()
    end = store.deserialize_cdr(messages[-1].data, messages[-1].msgtype)
    assert end.kind == 'end' and end.reason == 'shutdown' and end.steps > 0
    assert "publisher's context is invalid" not in node.output()


@pytest.mark.parametrize('fields, problem', [
    ({'time_limit': -1.0}, 'time_limit'),
    ({'time_limit': float('nan')}, 'time_limit'),
    ({'instruction': 'x' * 10_000}, 'instruction'),
    ({'task': ''}, 'no task'),
])
def test_bad_goals_are_rejected_with_a_reason(ros, arm, start_node, tiny_checkpoint, tmp_path,
                                              fields, problem):
    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'bags'))
    arm.connect(name)
    handle = arm.send_goal(record=False, **fields)
    assert not handle.accepted
    assert wait_until(lambda: 'goal rejected' in node.output() and problem in node.output(),
                      10), node.output()
    assert arm.send_goal(record=False).accepted           # the node is fine afterwards


def run_node_expecting_failure(arguments: list[str], tmp_path) -> tuple[int, list[str]]:
    """Start the policy node with ``arguments``; return its exit code and stderr lines."""
    import subprocess

    result = subprocess.run([str(NODE), '--ros-args', *arguments], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize('case', ['typo', 'mistyped', 'nan', 'interface', 'params_file'])
def test_startup_mistakes_stop_the_node_with_one_line(tmp_path, case):
    typo = tmp_path / 'typo.yaml'
    typo.write_text('/**:\n  ros__parameters:\n    safety_max_cartesion_speed: 0.05\n')
    arguments, expected = {
        'typo': (['--params-file', str(typo)],
                 "unknown parameter 'safety_max_cartesion_speed' (did you mean "
                 "'safety_max_cartesian_speed'?)"),
        'mistyped': (['-p', 'control_rate:=fast'], 'control_rate: expected float'),
        'nan': (['-p', 'safety_watchdog_timeout:=.nan'], 'safety_watchdog_timeout'),
        'interface': (['-p', 'command_interface:=warp'], 'command_interface'),
        'params_file': (['--params-file', str(tmp_path / 'missing.yaml')],
                        'missing.yaml: No such file or directory'),
    }[case]
    code, lines = run_node_expecting_failure(arguments, tmp_path)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith('policy_node: error:'), lines
    assert expected in lines[0], lines


def test_use_sim_time_can_be_set(ros, start_node, tiny_checkpoint, tmp_path):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'bags',
                                              use_sim_time='false'))
    probe = ros.create_node(f'parameter_probe_{uuid.uuid4().hex[:6]}')
    try:
        client = probe.create_client(SetParameters, f'/{name}/set_parameters')
        assert client.wait_for_service(30), node.output()
        value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True)
        request = SetParameters.Request(parameters=[Parameter(name='use_sim_time', value=value)])
        answer = call_idempotent(probe, client, request)
        assert answer.results[0].successful, answer
    finally:
        probe.destroy_node()
    assert node.alive() and 'TypeError' not in node.output()


@pytest.mark.parametrize('damage', ['truncated', 'pickle'])
def test_checkpoint_that_fails_to_load_is_logged_and_diagnosed(ros, start_node, tiny_checkpoint,
                                                               tmp_path, damage):
    import shutil

    from diagnostic_msgs.msg import DiagnosticArray

    broken = tmp_path / 'broken'
    shutil.copytree(tiny_checkpoint, broken)
    weights = broken / 'model.safetensors'
    if damage == 'truncated':
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        weights.write_bytes(b'\x80\x04\x95' + bytes(200))      # a pickle's first bytes
    name = unique_name()
    node = start_node(NODE, name, node_params(broken, tmp_path / 'bags',
                                              diagnostics_period='0.2'))
    probe = ros.create_node(f'diagnostics_probe_{uuid.uuid4().hex[:6]}')
    reports = []
    probe.create_subscription(DiagnosticArray, '/diagnostics', lambda m: reports.extend(
        s for s in m.status if s.name.startswith(name)), 50)
    try:
        import rclpy

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                s.level == b'\x02' and 'not configured' in s.message for s in reports):
            rclpy.spin_once(probe, timeout_sec=0.1)
    finally:
        probe.destroy_node()
    assert any(s.level == b'\x02' and 'model.safetensors' in s.message for s in reports), \
        [(s.level, s.message) for s in reports[-3:]]
    assert 'configure failed' in node.output() and node.alive()


def test_reward_success_needs_consecutive_frames_and_a_reward_node(ros, arm, start_node,
                                                                   tiny_checkpoint, tmp_path):
    from sarm2_common.ros.qos import RELIABLE
    from sarm2_msgs.msg import StageReward

    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'bags',
                                              success_source='reward', success_frames='3'))
    arm.connect(name)
    handle = arm.send_goal(record=False)
    assert handle.accepted
    # Nothing publishes rewards yet: the node says so.
    assert wait_until(lambda: 'nothing publishes /sarm2/stage_reward' in node.output(), 10), \
        node.output()
    rewards = arm.node.create_publisher(StageReward, '/sarm2/stage_reward', RELIABLE)
    settle_discovery()

    def publish(probability):
        rewards.publish(StageReward(success_probability=probability))
        time.sleep(0.05)

    for probability in (0.1, 0.95, 0.1, 0.95, 0.95, 0.2):     # spikes, never 3 in a row
        publish(probability)
    time.sleep(0.5)
    assert not handle.get_result_async().done()
    for probability in (0.95, 0.96, 0.97):
        publish(probability)
    response = wait_future(handle.get_result_async(), 20)
    assert response.result.success and response.result.reason == 'success'


def test_reward_success_uses_the_reward_checkpoints_calibrated_threshold(
        ros, arm, start_node, tiny_checkpoint, tiny_reward_checkpoint, tmp_path):
    """A fine-tuned reward checkpoint's per-task threshold replaces ``success_threshold``.

    It holds for the frames it was calibrated for, even when ``success_frames`` asks for fewer.
    """
    from sarm2_common.ros.qos import RELIABLE
    from sarm2_msgs.msg import StageReward
    from sarm2_reward.checkpoint import load_checkpoint, save_checkpoint

    calibrated = save_checkpoint(load_checkpoint(tiny_reward_checkpoint), tmp_path / 'rm2',
                                 metadata={'success_calibration': {
                                     'threshold': 0.99, 'consecutive_frames': 3,
                                     'per_task': {'reach-v3': {'threshold': 0.5,
                                                               'consecutive_frames': 3}}}})
    name = unique_name()
    node = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'bags',
                                              success_source='reward', success_threshold='0.9',
                                              success_frames='1',
                                              success_calibration=str(calibrated)))
    arm.connect(name)
    rewards = arm.node.create_publisher(StageReward, '/sarm2/stage_reward', RELIABLE)
    handle = arm.send_goal(record=False)
    assert handle.accepted
    assert wait_until(lambda: 'success threshold 0.500 held 3 frames from' in node.output(), 10), \
        node.output()
    settle_discovery()
    for _ in range(2):       # under the parameter's 0.9, at the task's calibrated 0.5; 2 < 3
        rewards.publish(StageReward(success_probability=0.6))
        time.sleep(0.05)
    time.sleep(0.5)
    assert not handle.get_result_async().done()
    rewards.publish(StageReward(success_probability=0.6))      # the third frame in a row
    response = wait_future(handle.get_result_async(), 20)
    assert response.result.success and response.result.reason == 'success'

    # A calibration that cannot be read rejects the goal with a reason; the node keeps running.
    (calibrated / 'config.json').write_text('{not json')
    assert not arm.send_goal(record=False).accepted
    assert wait_until(lambda: 'goal rejected: success_calibration:' in node.output(), 10)
    assert 'rm2/config.json: not valid JSON' in node.output() and node.alive()


def test_two_policy_nodes_with_one_name_are_reported(ros, start_node, tiny_checkpoint, tmp_path):
    name = unique_name()
    first = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'a',
                                               diagnostics_period='0.2'))
    second = start_node(NODE, name, node_params(tiny_checkpoint, tmp_path / 'b',
                                                diagnostics_period='0.2'))
    assert wait_until(lambda: 'nodes are named' in first.output() + second.output(), 30), \
        first.output() + second.output()
