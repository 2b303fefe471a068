"""SARM2 rewards and the SPIRAL policy next to your own camera and arm drivers.

    ros2 launch sarm2_bringup robot.launch.py reward_checkpoint:=/models/sarm2 \
        policy_checkpoint:=/models/vla camera_topic:=/wrist_camera/color/image_raw \
        command_interface:=joint_trajectory command_topic:=/arm_controller/joint_trajectory

Your drivers publish the camera and joint states; this launch file adds the reward node and the
policy node (which records each episode as a bag). Every topic is an argument; safety limits,
control rate and the rest come from sarm2_bringup's config/policy_node.yaml and
config/reward_node.yaml (copy them and pass your own with policy_params:=... /
reward_params:=...). Success on a real robot comes from the reward model's success probability,
at the threshold the reward checkpoint calibrated for the task when it was fine-tuned on
labelled rollouts (else the policy node's success_threshold): nothing reads simulator ground
truth here.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from sarm2_bringup.ros.launch_parts import config_directory, rviz


def generate_launch_description():
    # String-array parameters take a list of substitution lists ([[...]]): a flat list of
    # substitutions is concatenated into one string by launch_ros.
    config = config_directory()
    use_sim_time = LaunchConfiguration('use_sim_time')
    camera_topic = LaunchConfiguration('camera_topic')
    joint_states = LaunchConfiguration('joint_states_topic')
    arguments = [
        DeclareLaunchArgument('reward_checkpoint', description='SARM2 checkpoint directory'),
        DeclareLaunchArgument('policy_checkpoint', description='compact VLA checkpoint directory'),
        DeclareLaunchArgument('task', default_value='',
                              description='task name (its instruction comes from the catalogue)'),
        DeclareLaunchArgument('camera_name', default_value='corner',
                              description='camera name the checkpoints were trained with'),
        DeclareLaunchArgument('camera_topic', default_value='/camera/corner/image_raw',
                              description='sensor_msgs/Image topic of that camera'),
        DeclareLaunchArgument('joint_states_topic', default_value='/joint_states',
                              description='sensor_msgs/JointState topic of the arm'),
        DeclareLaunchArgument('command_interface', default_value='twist',
                              description='twist | joint_trajectory | joint_array'),
        DeclareLaunchArgument('command_topic', default_value='/servo_node/delta_twist_cmds',
                              description='topic the (safety-filtered) commands go to'),
        DeclareLaunchArgument('gripper_topic', default_value='/gripper/command',
                              description="std_msgs/Float64 gripper command topic; '' = none"),
        DeclareLaunchArgument('estop_topic', default_value='/estop',
                              description='std_msgs/Bool e-stop; true latches until reset'),
        DeclareLaunchArgument('bag_directory', default_value='rollouts',
                              description='one rosbag2 bag per episode is recorded here'),
        DeclareLaunchArgument('reward_params',
                              default_value=PathJoinSubstitution([config, 'reward_node.yaml']),
                              description='parameter file of the reward node'),
        DeclareLaunchArgument('policy_params',
                              default_value=PathJoinSubstitution([config, 'policy_node.yaml']),
                              description='parameter file of the policy node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='follow /clock (e.g. when replaying bags)'),
    ]
    reward = Node(
        package='sarm2_reward', executable='reward_node', name='reward_node', output='screen',
        parameters=[LaunchConfiguration('reward_params'),
                    {'checkpoint': LaunchConfiguration('reward_checkpoint'),
                     'cameras': [[LaunchConfiguration('camera_name')]],
                     'camera_topics': [[camera_topic]], 'joint_states_topic': joint_states,
                     'task': LaunchConfiguration('task'), 'autostart': True,
                     'use_sim_time': use_sim_time}])
    policy = Node(
        package='spiral_policy', executable='policy_node', name='policy_node', output='screen',
        parameters=[LaunchConfiguration('policy_params'),
                    {'checkpoint': LaunchConfiguration('policy_checkpoint'),
                     'cameras': [[LaunchConfiguration('camera_name')]],
                     'camera_topics': [[camera_topic]], 'joint_states_topic': joint_states,
                     'command_interface': LaunchConfiguration('command_interface'),
                     'command_topic': LaunchConfiguration('command_topic'),
                     'gripper_topic': LaunchConfiguration('gripper_topic'),
                     'estop_topic': LaunchConfiguration('estop_topic'),
                     'bag_directory': LaunchConfiguration('bag_directory'),
                     # A real robot has no simulator ground truth: success comes from SARM2.
                     'success_source': 'reward', 'reset_service': '', 'set_task_service': '',
                     # The reward model's own calibrated threshold for the task, when it has one.
                     'success_calibration': LaunchConfiguration('reward_checkpoint'),
                     'autostart': True, 'use_sim_time': use_sim_time}])
    return LaunchDescription(arguments + rviz(use_sim_time) + [reward, policy])
