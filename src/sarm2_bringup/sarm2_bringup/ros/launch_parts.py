"""Pieces every launch file of the stack shares (imported by launch files only).

RViz comes first in every launch description: if rviz2 is not installed, the launch fails
before any node has started (a failure after them would leave the nodes running without
launch, ros2/launch#747).
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def config_directory() -> PathJoinSubstitution:
    """Return the installed ``share/sarm2_bringup/config`` directory."""
    return PathJoinSubstitution([FindPackageShare('sarm2_bringup'), 'config'])


def rviz(use_sim_time) -> list:
    """Return the ``rviz`` launch argument and the RViz node (config/sarm2.rviz) it starts."""
    return [
        DeclareLaunchArgument('rviz', default_value='false',
                              description='start RViz with config/sarm2.rviz'),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='log',
             arguments=['-d', PathJoinSubstitution([config_directory(), 'sarm2.rviz'])],
             parameters=[{'use_sim_time': use_sim_time}],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ]
