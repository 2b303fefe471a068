"""Simulated arm node: a Meta-World arm that speaks the topics of a real arm and camera driver.

Topics (defaults; remap as usual):
    out  /camera/<name>/image_raw       sensor_msgs/Image rgb8, per camera, at camera_rate
         /camera/<name>/camera_info     sensor_msgs/CameraInfo, with every image
         /joint_states                  sensor_msgs/JointState, 7 arm joints (rad) + 2 fingers (m)
         /sim/ground_truth              sarm2_msgs/SimGroundTruth, EVALUATION ONLY, every step
         /clock                         rosgraph_msgs/Clock, simulated time (publish_clock)
         /diagnostics                   diagnostic_msgs/DiagnosticArray, 1 Hz
    in   /servo_node/delta_twist_cmds   geometry_msgs/TwistStamped, linear m/s in `world`
         /gripper/command               std_msgs/Float64, -1 open .. 1 close
         /sim/action                    std_msgs/Float64MultiArray, raw [dx, dy, dz, grip] -1..1
Services: /sim/reset (sarm2_msgs/ResetEpisode), /sim/set_task (sarm2_msgs/SetTask).

The simulation steps at sim_rate on a steady (wall) clock, so it runs with use_sim_time too,
where /clock comes from this node. Velocity commands older than command_timeout are dropped
(the arm stops, like MoveIt Servo); the gripper keeps its last command. Bad commands (NaN,
wrong size) are never applied; too large ones are clamped; both are logged once and counted in
/diagnostics.
"""

import time
import uuid

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sarm2_common.catalogue import load_catalogue
from sarm2_common.ros.parameters import NodeParameters
from sarm2_common.ros.qos import RELIABLE, SENSOR_DATA
from sarm2_common.ros.spin import spin_node
from sarm2_common.ros.stamps import NS, time_msg
from sarm2_common.topics import DIAGNOSTICS_TOPIC
from sarm2_common.vocabulary import primitive_id
from sarm2_msgs.msg import SimGroundTruth
from sarm2_msgs.srv import ResetEpisode, SetTask
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Float64MultiArray

from .conversions import camera_info_msg, image_msg, joint_state_msg
from ..sim_arm import SimArm
from ..sim_node_config import (BASE_FRAME, camera_frame, camera_image_topic,
                               camera_info_topic, check_command, CheckedCommand, CLOCK_TOPIC,
                               EVALUATION_TOPIC,
                               GRIPPER_TOPIC, JOINT_STATE_TOPIC, RAW_ACTION_SIZE,
                               RAW_ACTION_TOPIC, RESET_SERVICE, SET_TASK_SERVICE,
                               SimNodeConfig, twist_to_action, TWIST_TOPIC)

class SimNode(Node):
    """Publishes simulated camera and joint data and executes arm commands."""

    NODE_NAME = 'sim_node'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        # A bad startup configuration stops the node with the reason (raised from here).
        self._node_parameters = NodeParameters(self, SimNodeConfig,
                                          on_change=self._on_parameters_changed)
        self.config = self._node_parameters.config

        self.arm = SimArm(self.config.arm)
        self.episode_id = ''
        self.counters = {'steps': 0, 'episodes': 0, 'interrupted_episodes': 0,
                         'rejected_commands': 0, 'clamped_commands': 0, 'stale_commands': 0,
                         'images': 0}
        self._warned: set[str] = set()
        self._velocity = [0.0, 0.0, 0.0]
        self._velocity_time = -float('inf')
        self._gripper = -1.0
        self._sim_time_ns = 0
        self._step_seconds = 0.0
        self._rate_mark = (time.monotonic(), 0, 0)  # for the achieved rates in diagnostics

        group = MutuallyExclusiveCallbackGroup()  # the simulator is not thread-safe
        self._image_pubs, self._info_pubs = {}, {}
        self._make_camera_publishers()
        self._joint_pub = self.create_publisher(JointState, JOINT_STATE_TOPIC, SENSOR_DATA)
        self._truth_pub = self.create_publisher(SimGroundTruth, EVALUATION_TOPIC, RELIABLE)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE)
        self._clock_pub = (self.create_publisher(ClockMsg, CLOCK_TOPIC, RELIABLE)
                           if self.config.publish_clock else None)
        self.create_subscription(TwistStamped, TWIST_TOPIC, self._on_twist, RELIABLE,
                                 callback_group=group)
        self.create_subscription(Float64, GRIPPER_TOPIC, self._on_gripper, RELIABLE,
                                 callback_group=group)
        self.create_subscription(Float64MultiArray, RAW_ACTION_TOPIC, self._on_raw_action,
                                 RELIABLE, callback_group=group)
        self.create_service(ResetEpisode, RESET_SERVICE, self._on_reset, callback_group=group)
        self.create_service(SetTask, SET_TASK_SERVICE, self._on_set_task, callback_group=group)
        # Steady clock: with use_sim_time the node's ROS clock only moves when this node steps.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / self.config.sim_rate, self._step, group, clock=steady)
        self.create_timer(1.0 / self.config.camera_rate, self._publish_images, group,
                          clock=steady)
        self.create_timer(1.0 / self.config.joint_state_rate, self._publish_joints, group,
                          clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, group, clock=steady)
        self._start_episode(self.config.seed, '')
        self.get_logger().info(
            f'simulating {self.arm.spec.name} ({self.arm.instruction!r}), cameras '
            f'{list(self.config.cameras)} at {self.config.image_size} px')

    # --- episode control ----------------------------------------------------------------------

    def _start_episode(self, seed: int | None, episode_id: str) -> None:
        if self.episode_id and 0 < self.arm.step_count and not self.arm.expert_finished:
            self.counters['interrupted_episodes'] += 1
            self.get_logger().info(f'episode {self.episode_id} reset at step '
                                   f'{self.arm.step_count} before it finished')
        self.arm.reset(seed)
        self.episode_id = episode_id or f'{self.arm.spec.name}-{uuid.uuid4().hex[:12]}'
        self.counters['episodes'] += 1
        self._velocity, self._velocity_time, self._gripper = [0.0] * 3, -float('inf'), -1.0

    def _on_reset(self, request, response):
        seed = None if request.seed < 0 else int(request.seed)
        self._start_episode(seed, request.episode_id)
        response.success = True
        response.episode_id = self.episode_id
        response.message = (f'reset {self.arm.spec.name} with seed {self.arm.episode_seed}, '
                            f'episode {self.episode_id}')
        return response

    def _on_set_task(self, request, response):
        catalogue = load_catalogue()
        if request.task not in catalogue:
            response.success = False
            response.message = (f'unknown task {request.task!r}; the catalogue has: '
                                f'{", ".join(catalogue)}')
            self._report('set_task', response.message)
            return response
        if request.task != self.arm.spec.name:
            self.arm.close()
            self.config = SimNodeConfig(**{**self._config_values(), 'task': request.task})
            self.arm = SimArm(self.config.arm)
        self.episode_id = ''
        self._start_episode(None, '')
        instruction = request.instruction or self.arm.instruction
        response.success = True
        response.message = f'task {request.task} ({instruction!r}), episode {self.episode_id}'
        return response

    def _config_values(self) -> dict:
        return {name: getattr(self.config, name) for name in SimNodeConfig.names()}

    # --- commands ------------------------------------------------------------------------------

    def _report(self, kind: str, problem: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.get_logger().warning(f'{kind}: {problem} (logged once, counted in diagnostics)')

    def _count(self, kind: str, checked) -> bool:
        if checked.values is None:
            self.counters['rejected_commands'] += 1
            self._report(f'rejected {kind} command', checked.problem)
            return False
        if checked.clamped:
            self.counters['clamped_commands'] += 1
            self._report(f'clamped {kind} command', checked.problem)
        return True

    def _on_twist(self, msg: TwistStamped) -> None:
        linear = msg.twist.linear
        if msg.header.frame_id not in ('', BASE_FRAME):
            # no tf here: a twist in another frame cannot be applied correctly
            self._count('twist', CheckedCommand(
                None, f'frame {msg.header.frame_id!r} is not {BASE_FRAME!r}'))
            return
        checked = check_command([linear.x, linear.y, linear.z], self.config.max_linear_speed, 3)
        if self._count('twist', checked):
            self._velocity = list(twist_to_action(checked.values, self.arm.max_linear_speed))
            self._velocity_time = time.monotonic()

    def _on_gripper(self, msg: Float64) -> None:
        checked = check_command([msg.data], 1.0, 1)
        if self._count('gripper', checked):
            self._gripper = float(checked.values[0])

    def _on_raw_action(self, msg: Float64MultiArray) -> None:
        checked = check_command(msg.data, 1.0, RAW_ACTION_SIZE)
        if self._count('raw action', checked):
            self._velocity = [float(v) for v in checked.values[:3]]
            self._velocity_time = time.monotonic()
            self._gripper = float(checked.values[3])

    # --- periodic work -------------------------------------------------------------------------

    def _stamp_ns(self) -> int:
        if self.config.publish_clock:
            return self._sim_time_ns
        return self.get_clock().now().nanoseconds

    def _step(self) -> None:
        if time.monotonic() - self._velocity_time > self.config.command_timeout:
            if any(self._velocity):
                self.counters['stale_commands'] += 1
            self._velocity = [0.0, 0.0, 0.0]
        started = time.perf_counter()
        _, info = self.arm.step([*self._velocity, self._gripper], render=False)
        self._step_seconds = time.perf_counter() - started
        self.counters['steps'] += 1
        self._sim_time_ns += int(round(self.arm.control_period * NS))
        if self._clock_pub is not None:
            self._clock_pub.publish(ClockMsg(clock=time_msg(self._sim_time_ns)))
        truth = SimGroundTruth(task=self.arm.spec.name, episode_id=self.episode_id,
                               step=self.arm.step_count, success=info.success,
                               expert_primitive_id=primitive_id(info.primitive),
                               expert_primitive_name=info.primitive,
                               sim_reward=float(info.sim_reward))
        truth.header.stamp = time_msg(self._stamp_ns())
        self._truth_pub.publish(truth)

    def _make_camera_publishers(self) -> None:
        for camera in self.config.cameras:
            self._image_pubs[camera] = self.create_publisher(
                Image, camera_image_topic(camera), SENSOR_DATA)
            self._info_pubs[camera] = self.create_publisher(
                CameraInfo, camera_info_topic(camera), SENSOR_DATA)

    def _publish_images(self) -> None:
        stamp = self._stamp_ns()
        for camera, image in self.arm.render().items():
            frame = camera_frame(camera)
            self._image_pubs[camera].publish(image_msg(image, stamp, frame))
            self._info_pubs[camera].publish(camera_info_msg(
                self.config.image_size, self.arm.camera_fovy(camera), stamp, frame))
            self.counters['images'] += 1

    def _publish_joints(self) -> None:
        positions = self.arm.joint_positions()
        self._joint_pub.publish(joint_state_msg(self.arm.joint_names, positions,
                                                self._stamp_ns()))

    def _publish_diagnostics(self) -> None:
        problems = self.counters['rejected_commands'] + self.counters['clamped_commands']
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f'{self.get_name()}: simulated arm', hardware_id=self.arm.spec.name,
            message=(f'{problems} bad commands (rejected or clamped)' if problems
                     else 'running'))
        now, steps, images = time.monotonic(), self.counters['steps'], self.counters['images']
        then, steps_then, images_then = self._rate_mark
        self._rate_mark = (now, steps, images)
        elapsed = max(now - then, 1e-9)
        values = {**self.counters, 'task': self.arm.spec.name, 'episode_id': self.episode_id,
                  'episode_step': self.arm.step_count,
                  'step_time_ms': f'{1000 * self._step_seconds:.2f}',
                  'achieved_sim_rate_hz': f'{(steps - steps_then) / elapsed:.1f}',
                  'achieved_image_rate_hz': f'{(images - images_then) / elapsed:.1f}'}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _on_parameters_changed(self, config: SimNodeConfig, names: list[str]) -> None:
        # Only the command limits change at run time (the rest is read-only); the current
        # task (set by /sim/set_task) stays.
        self.config = SimNodeConfig(**{**self._config_values(),
                                       **{name: getattr(config, name) for name in names}})

    def destroy_node(self) -> None:
        """Free the simulator along with the node."""
        self.arm.close()
        super().destroy_node()


def main(args=None) -> None:
    """Run the sim node until shutdown (console script ``sim_node``)."""
    spin_node(SimNode, args=args)


if __name__ == '__main__':
    main()
