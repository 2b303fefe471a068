"""Replay a recorded episode bag into the reward node, to watch or evaluate a reward model.

    ros2 launch sarm2_bringup replay.launch.py bag:=rollouts/episode_0003 \
        reward_checkpoint:=runs/demo/sarm2 rate:=1.0

The bag player publishes the recorded sensor topics (camera and joint messages) with their
original timing (and /clock, which every node follows), and the reward node publishes
StageReward, progress, reward, markers and the overlay image as it would live. The recorded
commands and rewards are not replayed: no arm in the same ROS domain moves, and the live rewards
are the only ones on /sarm2/stage_reward. For metrics and plots over a directory of bags
without ROS, use `evaluate_reward_model`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from sarm2_bringup.ros.launch_parts import config_directory, rviz


def generate_launch_description():
    config = config_directory()
    arguments = [
        DeclareLaunchArgument('bag', description='rosbag2 bag directory to replay'),
        DeclareLaunchArgument('reward_checkpoint', description='SARM2 checkpoint directory'),
        DeclareLaunchArgument('task', default_value='',
                              description='task of the bag (its instruction from the catalogue)'),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback speed factor'),
        DeclareLaunchArgument('wait_for_subscribers', default_value='1',
                              description='start playing once the reward node has subscribed '
                              '(0: at once)'),
        DeclareLaunchArgument('shutdown_when_done', default_value='true',
                              description='stop every node when the bag has been played'),
    ]
    player = Node(
        package='sarm2_bringup', executable='bag_player', name='bag_player', output='screen',
        parameters=[{'bag': LaunchConfiguration('bag'), 'rate': LaunchConfiguration('rate'),
                     'publish_clock': True,
                     'wait_for_subscribers': LaunchConfiguration('wait_for_subscribers')}])
    reward = Node(
        package='sarm2_reward', executable='reward_node', name='reward_node', output='screen',
        parameters=[PathJoinSubstitution([config, 'reward_node.yaml']),
                    {'checkpoint': LaunchConfiguration('reward_checkpoint'),
                     'task': LaunchConfiguration('task'), 'autostart': True,
                     # Replay is lossless: take every recorded frame.
                     'sensor_qos_reliability': 'reliable', 'use_sim_time': True}])
    stop_at_end = RegisterEventHandler(
        OnProcessExit(target_action=player, on_exit=[EmitEvent(event=Shutdown(
            reason='bag played'))]),
        condition=IfCondition(LaunchConfiguration('shutdown_when_done')))
    return LaunchDescription(arguments + rviz(True) + [player, reward, stop_at_end])
