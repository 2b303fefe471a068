"""The whole loop without hardware: simulated arm + reward node + policy node (+ RViz).

    ros2 launch sarm2_bringup sim.launch.py reward_checkpoint:=runs/demo/sarm2 \
        policy_checkpoint:=runs/demo/vla task:=push-v3

Then run an episode (the policy node records it as a bag under rollouts/):

    ros2 action send_goal /policy_node/run_episode sarm2_msgs/action/RunEpisode \
        "{task: push-v3, record: true}"

The sim node speaks the same topics as a real arm and camera driver, so this graph is the robot
graph (robot.launch.py) with the simulator in place of the drivers.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare('sarm2_bringup'), 'config'])
    use_sim_time = LaunchConfiguration('use_sim_time')
    arguments = [
        DeclareLaunchArgument('task', default_value='pick-place-v3',
                              description='task of the catalogue (sarm2_common/tasks.yaml)'),
        DeclareLaunchArgument('camera', default_value='corner',
                              description='sim camera the reward model and policy see'),
        DeclareLaunchArgument('reward_checkpoint',
                              description='SARM2 checkpoint directory (train_reward_model)'),
        DeclareLaunchArgument('policy_checkpoint',
                              description='compact VLA checkpoint directory (train_vla)'),
        DeclareLaunchArgument('bag_directory', default_value='rollouts',
                              description='where the policy node records one bag per episode'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='sim publishes /clock and every node follows it'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='start RViz with config/sarm2.rviz'),
    ]
    sim = Node(
        package='sarm2_sim', executable='sim_node', name='sim_node', output='screen',
        parameters=[PathJoinSubstitution([config, 'sim_node.yaml']),
                    {'task': LaunchConfiguration('task'), 'publish_clock': use_sim_time,
                     'use_sim_time': use_sim_time}])
    reward = Node(
        package='sarm2_reward', executable='reward_node', name='reward_node', output='screen',
        parameters=[PathJoinSubstitution([config, 'reward_node.yaml']),
                    {'checkpoint': LaunchConfiguration('reward_checkpoint'),
                     'task': LaunchConfiguration('task'), 'autostart': True,
                     'use_sim_time': use_sim_time}])
    policy = Node(
        package='spiral_policy', executable='policy_node', name='policy_node', output='screen',
        parameters=[PathJoinSubstitution([config, 'policy_node.yaml']),
                    {'checkpoint': LaunchConfiguration('policy_checkpoint'),
                     'bag_directory': LaunchConfiguration('bag_directory'),
                     'autostart': True, 'use_sim_time': use_sim_time}])
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        arguments=['-d', PathJoinSubstitution([config, 'sarm2.rviz'])],
        parameters=[{'use_sim_time': use_sim_time}],
        condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription(arguments + [sim, reward, policy, rviz])
