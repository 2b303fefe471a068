"""The sim node as its own OS process over real DDS: a driver closes the loop to task success.

This test process plays the policy side: it sees only what a real arm would publish (images,
camera info, joint states), computes the hand position by forward kinematics on a local model of
the arm, and commands Cartesian velocities on the MoveIt Servo topic. The evaluation topic
(/sim/ground_truth) is read only to judge the outcome.
"""

from pathlib import Path
import time
import uuid

import numpy as np
import pytest

from ros_harness import CONFIG_DIR, NodeLauncher

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / 'install' / 'sarm2_sim' / 'lib' / 'sarm2_sim' / 'sim_node'
PARAMS_FILE = CONFIG_DIR / 'sim_node.yaml'
START_TIMEOUT = 40.0

pytestmark = pytest.mark.ros


@pytest.fixture
def start_node(tmp_path):
    launcher = NodeLauncher(tmp_path)
    yield lambda *params: launcher.start(NODE, params_file=PARAMS_FILE, params=params)
    launcher.stop_all()


@pytest.fixture(scope='module')
def ros():
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f'sim_node_test_{uuid.uuid4().hex[:6]}')
    yield node
    node.destroy_node()
    rclpy.shutdown()


class Driver:
    """The policy side: listens like a policy node, commands like one, judges on ground truth."""

    def __init__(self, node, camera='corner'):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from rosgraph_msgs.msg import Clock
        from sarm2_msgs.msg import SimGroundTruth
        from sarm2_msgs.srv import ResetEpisode, SetTask
        from sarm2_common.ros.qos import RELIABLE, SENSOR_DATA
        from sensor_msgs.msg import CameraInfo, Image, JointState
        from std_msgs.msg import Float64, Float64MultiArray

        self.node = node
        self.images, self.infos, self.joints, self.truths, self.diagnostics, self.clocks = \
            [], [], [], [], [], []
        self._subs = [
            node.create_subscription(Image, f'/camera/{camera}/image_raw', self.images.append,
                                     SENSOR_DATA),
            node.create_subscription(CameraInfo, f'/camera/{camera}/camera_info',
                                     self.infos.append, SENSOR_DATA),
            node.create_subscription(JointState, '/joint_states', self.joints.append,
                                     SENSOR_DATA),
            node.create_subscription(SimGroundTruth, '/sim/ground_truth', self.truths.append,
                                     RELIABLE),
            node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append,
                                     RELIABLE),
            node.create_subscription(Clock, '/clock', self.clocks.append, RELIABLE),
        ]
        self.twist = node.create_publisher(TwistStamped, '/servo_node/delta_twist_cmds',
                                           RELIABLE)
        self.gripper = node.create_publisher(Float64, '/gripper/command', RELIABLE)
        self.raw = node.create_publisher(Float64MultiArray, '/sim/action', RELIABLE)
        self.reset_client = node.create_client(ResetEpisode, '/sim/reset')
        self.task_client = node.create_client(SetTask, '/sim/set_task')
        self._types = {'twist': TwistStamped, 'float': Float64, 'raw': Float64MultiArray,
                       'reset': ResetEpisode, 'task': SetTask}

    def spin(self, seconds: float, until=None) -> bool:
        import rclpy

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.02)
            if until is not None and until():
                return True
        return until is None

    def call(self, client, request):
        import rclpy

        assert client.wait_for_service(timeout_sec=START_TIMEOUT)
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=20.0)
        assert future.done(), 'service call timed out'
        return future.result()

    def reset(self, seed: int):
        request = self._types['reset'].Request(episode_id='', seed=seed)
        return self.call(self.reset_client, request)

    def set_task(self, task: str):
        return self.call(self.task_client, self._types['task'].Request(task=task))

    def send_velocity(self, velocity, frame='world') -> None:
        msg = self._types['twist']()
        msg.header.frame_id = frame
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in velocity)
        self.twist.publish(msg)

    def counters(self) -> dict:
        values = self.diagnostics[-1].status[0].values
        return {kv.key: kv.value for kv in values}


def _wait_for_stream(driver, node_process):
    ok = driver.spin(START_TIMEOUT, until=lambda: driver.joints and driver.images and driver.infos
                     and driver.truths or not node_process.alive())
    assert ok and node_process.alive(), node_process.output()


def test_driver_reaches_goal_through_dds(ros, start_node):
    from sarm2_sim.sim_arm import SimArm, SimArmConfig

    # the node runs on its own /clock: its timers must not wait for simulated time
    node_process = start_node('task:=reach-v3', 'image_size:=32', 'camera_rate:=10.0',
                              'publish_clock:=true', 'use_sim_time:=true',
                              'max_linear_speed:=0.4')
    driver = Driver(ros)
    _wait_for_stream(driver, node_process)

    image, info = driver.images[-1], driver.infos[-1]
    assert (image.height, image.width, image.encoding, len(image.data)) == (32, 32, 'rgb8',
                                                                            32 * 32 * 3)
    assert info.header.frame_id == image.header.frame_id == 'corner_optical_frame'
    assert info.k[0] > 0 and info.k[2] == pytest.approx(15.5)
    assert len(driver.joints[-1].name) == 9 and len(driver.joints[-1].position) == 9
    # use_sim_time support: /clock runs, and sensor stamps are simulated time
    # /clock is its own stream: under load it may start after the images.
    assert driver.spin(START_TIMEOUT, until=lambda: driver.clocks), node_process.output()
    assert driver.clocks[-1].clock.sec < 1000

    seed = 11
    response = driver.reset(seed)
    assert response.success and response.episode_id
    twin = SimArm(SimArmConfig(task='reach-v3', cameras=()))
    try:
        twin.reset(seed)
        goal = twin.goal_position()
        driver.joints.clear()

        def succeeded():
            return any(t.success and t.episode_id == response.episode_id for t in driver.truths)

        deadline = time.monotonic() + 30.0
        while not succeeded() and time.monotonic() < deadline:
            if driver.joints:
                hand = twin.end_effector_position_at(np.array(driver.joints[-1].position))
                driver.joints.clear()
                driver.send_velocity(np.clip(4.0 * (goal - hand), -0.3, 0.3))
            driver.spin(0.02)
        assert succeeded(), f'no success; last hand {hand}, goal {goal}'
    finally:
        twin.close()
    truth = [t for t in driver.truths if t.episode_id == response.episode_id][-1]
    assert truth.task == 'reach-v3' and truth.expert_primitive_name == 'reach'
    assert node_process.alive()


def test_bad_input_is_refused_and_counted(ros, start_node):
    from sarm2_sim.sim_arm import SimArm, SimArmConfig

    # Real time (80 steps/s): the travelled distance is compared with wall-clock time.
    node_process = start_node('task:=reach-v3', 'image_size:=32', 'camera_rate:=5.0',
                              'max_linear_speed:=0.2', 'sim_rate:=80.0')
    driver = Driver(ros)
    _wait_for_stream(driver, node_process)
    twin = SimArm(SimArmConfig(task='reach-v3', cameras=()))
    try:
        driver.reset(3)
        driver.spin(0.5)
        start = twin.end_effector_position_at(np.array(driver.joints[-1].position))
        # NaN and wrong-frame twists, NaN gripper, short raw action: never applied
        driver.send_velocity([float('nan'), 0.0, 0.0])
        driver.send_velocity([0.0, 0.3, 0.0], frame='camera_link')
        driver.gripper.publish(driver._types['float'](data=float('nan')))
        driver.raw.publish(driver._types['raw'](data=[0.1, 0.2]))
        driver.spin(0.5)
        still = twin.end_effector_position_at(np.array(driver.joints[-1].position))
        assert np.linalg.norm(still - start) < 0.01
        # an absurd speed is clamped to max_linear_speed (0.2 m/s), not applied
        began = time.monotonic()
        while time.monotonic() - began < 0.5:
            driver.send_velocity([1e6, 0.0, 0.0])
            driver.spin(0.05)
        driver.joints.clear()
        driver.spin(1.0, until=lambda: driver.joints)
        moved = twin.end_effector_position_at(np.array(driver.joints[-1].position))
        travelled = float(np.linalg.norm(moved - still))
        assert 0.02 < travelled < 0.2 * (time.monotonic() - began) + 0.02
        assert np.all(np.isfinite(driver.joints[-1].position))
    finally:
        twin.close()

    # unknown task: refused with the choices; the node keeps its task
    response = driver.set_task('no-such-task-v3')
    assert not response.success and 'pick-place-v3' in response.message
    # reset in the middle of an episode starts a fresh one
    first = driver.reset(-1)
    driver.spin(0.3)
    second = driver.reset(-1)
    assert first.success and second.success and first.episode_id != second.episode_id
    driver.truths.clear()
    driver.spin(1.0, until=lambda: driver.truths)
    assert driver.truths[-1].episode_id == second.episode_id
    # switching task works
    response = driver.set_task('drawer-close-v3')
    assert response.success, response.message
    driver.truths.clear()
    driver.spin(5.0, until=lambda: driver.truths)
    assert driver.truths[-1].task == 'drawer-close-v3'

    driver.diagnostics.clear()
    driver.spin(3.0, until=lambda: driver.diagnostics)
    counters = driver.counters()
    assert int(counters['rejected_commands']) >= 4
    assert int(counters['clamped_commands']) >= 1
    assert int(counters['interrupted_episodes']) >= 1
    assert node_process.alive()
    assert node_process.output().count('rejected twist command') == 1  # logged once


@pytest.mark.parametrize('param, message', [('task:=no-such-task-v3', 'unknown task'),
                                            ('image_size:=5000', 'image_size')])
def test_bad_configuration_stops_with_a_message(start_node, param, message):
    node_process = start_node(param)
    assert node_process.process.wait(START_TIMEOUT) != 0
    assert message in node_process.output()
