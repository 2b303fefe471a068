"""Joint command interfaces of the policy node over real DDS (issue #6).

The policy node runs as a separate OS process with ``command_interface`` ``joint_trajectory``
(trajectory_msgs/JointTrajectory, for a joint_trajectory_controller) or ``joint_array``
(std_msgs/Float64MultiArray, for a ros2_control forward position controller), plus the
std_msgs/Float64 gripper command. This process plays the arm: it publishes camera frames and
joint states (in another joint order than the policy's, as joint_state_broadcaster may) and
records every command.

The policy is a tiny compact VLA whose action head is scaled up: it asks for joint targets tens
of radians away and gripper commands far out of range. Every command must still respect the
configured joint position limits, the per-command step limit ``min(max_joint_step,
max_joint_velocity / control_rate)`` (starting from the measured joints) and the gripper range.
The commands are checked message by message as received, and against the rollout bag the node
recorded (every command it sent, so a message lost on the way is noticed, not skipped).
"""

import time

import numpy as np
import pytest

from ros_harness import (BackgroundNode, CONFIG_DIR, console_script, NodeLauncher,
                         settle_discovery, unique_name, wait_future, wait_until)

PARAMS = CONFIG_DIR / 'policy_node.yaml'
COMMAND_JOINTS = [f'joint_{i}' for i in range(7)]
FINGERS = ['finger_left', 'finger_right']
POLICY_JOINTS = COMMAND_JOINTS + FINGERS            # the policy state order (joint_names)
# Measured positions, distinct per joint so that a joint taken for another one shows.
MEASURED = dict(zip(POLICY_JOINTS, [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.02, 0.02]))
MEASURED_COMMAND_JOINTS = np.array([MEASURED[name] for name in COMMAND_JOINTS])
LOWER = np.round(MEASURED_COMMAND_JOINTS - 0.12 - 0.02 * np.arange(7), 6)
UPPER = np.round(MEASURED_COMMAND_JOINTS + 0.10 + 0.02 * np.arange(7), 6)
RATE = 10.0
MAX_VELOCITY = np.array([0.2, 0.25, 0.3, 0.4, 0.5, 0.8, 1.0])    # rad/s
MAX_STEP = 0.05                                                   # rad per command
# Largest change per command: the velocity limit binds for the first four joints, the step
# limit for the last three.
STEP_BOUND = np.minimum(MAX_STEP, MAX_VELOCITY / RATE)
GRIPPER_MIN, GRIPPER_MAX = -0.3, 0.6
STEPS = 50
GRIPPER_TOPIC = '/gripper/command'
TOLERANCE = 1e-9
INTERFACES = {
    'joint_trajectory': ('/arm_controller/joint_trajectory',
                         'trajectory_msgs/msg/JointTrajectory'),
    'joint_array': ('/forward_position_controller/commands',
                    'std_msgs/msg/Float64MultiArray'),
}

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def adversarial_checkpoint(tmp_path_factory):
    """Save a tiny random compact VLA (7 joints + gripper) whose 50x action head acts wildly."""
    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig, save_checkpoint
    import torch

    torch.manual_seed(0)
    config = CompactVlaConfig(image_size=16, chunk_size=4, d_model=16, num_heads=2,
                              num_layers=1, conv_channels=(8, 8), text_buckets=16,
                              state_dim=len(POLICY_JOINTS), action_dim=len(COMMAND_JOINTS) + 1)
    model = CompactVla(config)
    with torch.no_grad():
        model.action_head.weight.mul_(50.0)
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp('vla') / 'tiny_vla')


@pytest.fixture
def launcher(tmp_path):
    nodes = NodeLauncher(tmp_path, log_tail=6000)
    yield nodes
    nodes.stop_all()


def ros_list(values) -> str:
    """Format a parameter list for ``-p name:=[...]`` (floats keep their decimal point)."""
    return '[' + ', '.join(repr(float(v)) if not isinstance(v, str) else v
                           for v in values) + ']'


def node_params(interface: str, checkpoint, bag_dir) -> list[str]:
    params = {
        'checkpoint': str(checkpoint), 'autostart': 'true', 'success_source': 'none',
        'reset_service': "''", 'set_task_service': "''", 'control_rate': str(RATE),
        'max_steps': str(STEPS), 'time_limit': '1000.0', 'start_timeout': '30.0',
        # generous: a busy machine must not turn this test into a watchdog test
        'safety_watchdog_timeout': '2.0',
        'bag_directory': str(bag_dir), 'flush_period': '0.2',
        'command_interface': interface, 'command_topic': INTERFACES[interface][0],
        'gripper_topic': GRIPPER_TOPIC, 'joint_names': ros_list(POLICY_JOINTS),
        'command_joint_names': ros_list(COMMAND_JOINTS),
        'safety_joint_lower': ros_list(LOWER), 'safety_joint_upper': ros_list(UPPER),
        'safety_max_joint_velocity': ros_list(MAX_VELOCITY),
        'safety_max_joint_step': str(MAX_STEP),
        'safety_gripper_min': str(GRIPPER_MIN), 'safety_gripper_max': str(GRIPPER_MAX),
    }
    return [f'{k}:={v}' for k, v in params.items()]


class JointArm:
    """This process as a joint-controlled arm: camera and joint states at 30 Hz, records commands.

    Every subscription keeps a deep history so no command of an episode is dropped when this
    process spins late.
    """

    def __init__(self, rclpy, interface: str, node_name: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.action import ActionClient
        from rclpy.qos import QoSProfile
        from sarm2_msgs.action import RunEpisode
        from sarm2_common.ros.qos import RELIABLE, SENSOR_DATA
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32MultiArray, Float64, Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        self.node_name = node_name
        self.command_topic = INTERFACES[interface][0]
        self.node = rclpy.create_node(f'fake_joint_arm_{node_name[-8:]}')
        self.image_pub = self.node.create_publisher(Image, '/camera/corner/image_raw',
                                                    SENSOR_DATA)
        self.joint_pub = self.node.create_publisher(JointState, '/joint_states', SENSOR_DATA)
        deep = QoSProfile(depth=1000, reliability=RELIABLE.reliability)
        command_type = JointTrajectory if interface == 'joint_trajectory' else Float64MultiArray
        self.commands, self.grippers, self.diagnostics = [], [], []
        self._subscriptions = [
            self.node.create_subscription(command_type, self.command_topic,
                                          self.commands.append, deep),
            self.node.create_subscription(Float64, GRIPPER_TOPIC, self.grippers.append, deep),
            self.node.create_subscription(Float32MultiArray, f'/{node_name}/base_action',
                                          lambda _: None, deep),
            self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                          self._on_diagnostics, deep),
        ]
        self.action = ActionClient(self.node, RunEpisode, f'/{node_name}/run_episode')
        self.goal_type = RunEpisode.Goal
        self._messages = (Image, JointState)
        self._background = BackgroundNode(self.node, self._publish_loop)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'{self.node_name}:'):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def _publish_loop(self, stop) -> None:
        image_type, joint_type = self._messages
        rng = np.random.default_rng(0)
        # joint_state_broadcaster publishes in its own order: not the policy's
        order = list(reversed(POLICY_JOINTS))
        while not stop.wait(1 / 30):
            stamp = self.node.get_clock().now().to_msg()
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            image = image_type(height=32, width=32, encoding='rgb8', step=96,
                               data=pixels.tobytes())
            image.header.stamp = stamp
            self.image_pub.publish(image)
            joints = joint_type(name=order, position=[MEASURED[name] for name in order])
            joints.header.stamp = stamp
            self.joint_pub.publish(joints)

    def wait_for_node(self, timeout: float) -> None:
        """Wait until the node's action server and its publishers are matched, both ways."""
        assert self.action.wait_for_server(timeout_sec=timeout), 'no run_episode server'
        assert wait_until(lambda: all(s.get_publisher_count() > 0
                                      for s in self._subscriptions), timeout), \
            'the policy node never matched the command, gripper, action and diagnostics topics'
        settle_discovery()      # the node's side of each connection may still be matching

    def run_episode(self, timeout: float = 180.0):
        """Run a recorded episode of STEPS steps; return the action result response."""
        goal = self.goal_type(task='reach-v3', instruction='reach the target', seed=3,
                              max_steps=STEPS, record=True)
        handle = wait_future(self.action.send_goal_async(goal), 30)
        assert handle.accepted, 'goal rejected'
        return wait_future(handle.get_result_async(), timeout)

    def publisher_types(self, topic: str) -> set[tuple[str, str]]:
        return {(info.node_name, info.topic_type)
                for info in self.node.get_publishers_info_by_topic(topic)}

    def close(self) -> None:
        self._background.close()


def read_bag(path, topics) -> dict[str, list]:
    """Deserialized messages of ``topics`` in a rollout bag, in recording order."""
    from rosbags.rosbag2 import Reader
    from sarm2_common import bag_io

    store = bag_io.typestore()
    messages = {topic: [] for topic in topics}
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic in messages]
        for connection, _, raw in reader.messages(connections=connections):
            messages[connection.topic].append(store.deserialize_cdr(raw, connection.msgtype))
    return messages


def positions(interface: str, msg) -> np.ndarray:
    if interface == 'joint_trajectory':
        return np.asarray(msg.points[0].positions, dtype=np.float64)
    return np.asarray(msg.data, dtype=np.float64)


@pytest.mark.parametrize('interface', list(INTERFACES))
def test_joint_commands_respect_the_safety_limits(interface, ros_context, launcher,
                                                  adversarial_checkpoint, tmp_path):
    from action_msgs.msg import GoalStatus
    import rclpy
    from sarm2_common import bag_io

    name = unique_name()
    topic, msgtype = INTERFACES[interface]
    arm = JointArm(rclpy, interface, name)
    try:
        node = launcher.start(console_script('spiral_policy', 'policy_node'), name=name,
                              params_file=PARAMS,
                              params=node_params(interface, adversarial_checkpoint,
                                                 tmp_path / 'bags'))
        arm.wait_for_node(timeout=120)
        sent_after = time.time()        # wall clock, like the node's header stamps
        response = arm.run_episode()
        received_by = time.time()
        assert response.status == GoalStatus.STATUS_SUCCEEDED, response.result.reason
        assert response.result.reason == 'step_limit' and response.result.steps == STEPS

        # The node publishes the configured types (and only it publishes there).
        assert arm.publisher_types(topic) == {(name, msgtype)}
        assert arm.publisher_types(GRIPPER_TOPIC) == {(name, 'std_msgs/msg/Float64')}

        # Every command the node sent (its rollout bag) reached this process, in order.
        recorded = read_bag(response.result.bag_path,
                            [topic, GRIPPER_TOPIC, bag_io.BASE_ACTION_TOPIC])
        assert len(recorded[topic]) >= 10, f'only {len(recorded[topic])} commands sent'
        assert wait_until(lambda: len(arm.commands) >= len(recorded[topic])
                          and len(arm.grippers) >= len(recorded[GRIPPER_TOPIC]), 30), \
            f'DDS lost commands: {len(arm.commands)} of {len(recorded[topic])} arrived, ' \
            f'{len(arm.grippers)} of {len(recorded[GRIPPER_TOPIC])} gripper commands'
        assert len(arm.commands) == len(recorded[topic])
        commands = np.array([positions(interface, msg) for msg in arm.commands])
        np.testing.assert_array_equal(
            commands, np.array([positions(interface, msg) for msg in recorded[topic]]))
        grippers = np.array([msg.data for msg in arm.grippers])
        np.testing.assert_array_equal(grippers,
                                      [msg.data for msg in recorded[GRIPPER_TOPIC]])

        # The node counts what its safety filter changed (/diagnostics, once a second).
        def counted() -> bool:
            return any(all(int(values.get(f'safety_{what}', 0)) > 0
                           for what in ('joint_limit', 'joint_step', 'gripper_limit'))
                       for values in arm.diagnostics)

        assert wait_until(counted, 30), \
            arm.diagnostics[-1:] if arm.diagnostics else 'no diagnostics from the node'
    finally:
        arm.close()
    assert node.alive()

    # --- message format ---
    assert commands.shape == (len(arm.commands), len(COMMAND_JOINTS))
    if interface == 'joint_trajectory':
        period = 1.0 / RATE
        stamps = []
        for msg in arm.commands:
            assert list(msg.joint_names) == COMMAND_JOINTS
            assert len(msg.points) == 1 and not len(msg.points[0].velocities)
            reach = msg.points[0].time_from_start
            assert reach.sec + reach.nanosec * 1e-9 == pytest.approx(period)
            stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        # Stamped by the node while the episode ran, in order (the same host's wall clock).
        assert sent_after - 1e-3 <= stamps[0] and stamps[-1] <= received_by + 1e-3, \
            (sent_after, stamps[0], stamps[-1], received_by)
        assert all(b >= a for a, b in zip(stamps, stamps[1:])), 'stamps go backwards'
    else:
        assert all(len(msg.data) == len(COMMAND_JOINTS) for msg in arm.commands)

    # --- the policy really asked for unsafe motion (else this test could not fail) ---
    asked = np.array([np.asarray(msg.data) for msg in recorded[bag_io.BASE_ACTION_TOPIC]])
    assert asked.shape[1] == len(COMMAND_JOINTS) + 1
    assert np.any((asked[:, :7] < LOWER) | (asked[:, :7] > UPPER)), \
        'the policy never asked for a position beyond the limits'
    assert np.any((asked[:, 7] < GRIPPER_MIN) | (asked[:, 7] > GRIPPER_MAX))

    # --- joint position limits ---
    assert np.all(commands >= LOWER - TOLERANCE) and np.all(commands <= UPPER + TOLERANCE), \
        f'commands beyond the position limits:\n{commands}'
    assert np.any(np.isclose(commands, LOWER, rtol=0, atol=TOLERANCE)
                  | np.isclose(commands, UPPER, rtol=0, atol=TOLERANCE)), \
        'no command reached a position limit although the policy pushed past them'

    # --- step and velocity limits, the first step measured from the measured joints ---
    steps = np.abs(np.diff(np.vstack([MEASURED_COMMAND_JOINTS, commands]), axis=0))
    too_big = np.argwhere(steps > STEP_BOUND + TOLERANCE)
    assert not too_big.size, f'steps {steps[tuple(too_big.T)]} at (command, joint) ' \
                             f'{too_big.tolist()} exceed {STEP_BOUND}'
    assert np.all(steps * RATE <= MAX_VELOCITY + 1e-6)
    assert np.any(np.isclose(steps, STEP_BOUND, rtol=0, atol=TOLERANCE)), \
        'no command moved by the full step although the policy asked for more'

    # --- the arm is really driven ---
    assert np.abs(commands - MEASURED_COMMAND_JOINTS).max() >= 2 * STEP_BOUND.min()
    assert len({tuple(row) for row in commands}) > 1, 'every command is the same'

    # --- gripper: Float64 commands clipped into the configured range ---
    assert grippers.size >= 10
    assert np.all((grippers >= GRIPPER_MIN) & (grippers <= GRIPPER_MAX)), grippers
    expected = set(np.clip(asked[:, 7].astype(np.float64), GRIPPER_MIN, GRIPPER_MAX)[
        (asked[:, 7] < GRIPPER_MIN) | (asked[:, 7] > GRIPPER_MAX)])
    assert expected <= set(grippers), f'no clipped gripper command for {expected}'
