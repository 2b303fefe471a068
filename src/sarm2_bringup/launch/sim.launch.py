"""The whole loop without hardware: simulated arm + reward node + policy node (+ RViz).

    ros2 launch sarm2_bringup sim.launch.py reward_checkpoint:=runs/latest/reward/checkpoint \
        policy_checkpoint:=runs/latest/vla/checkpoint task:=drawer-open-v3

Then run an episode (the policy node records it as a bag under rollouts/):

    ros2 action send_goal /policy_node/run_episode sarm2_msgs/action/RunEpisode \
        "{task: drawer-open-v3, record: true}"

The sim node speaks the same topics as a real arm and camera driver, so this graph is the robot
graph (robot.launch.py) with the simulator in place of the drivers. It is the same graph, with
the same parameters, as `make demo` and `spiral_loop` start: both take the node parameters from
config/*.yaml plus ``sarm2_bringup.sim_graph.sim_graph_parameters``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from sarm2_bringup.ros.launch_parts import config_directory, rviz
from sarm2_bringup.sim_graph import SIM_GRAPH_NODES, sim_graph_parameters


def _graph(context):
    def argument(name):
        return LaunchConfiguration(name).perform(context)

    parameters = sim_graph_parameters(
        argument('task'), argument('reward_checkpoint'), argument('policy_checkpoint'),
        argument('bag_directory'), cameras=[argument('camera')],
        image_size=int(argument('image_size')),
        use_sim_time=argument('use_sim_time').lower() == 'true')
    config = config_directory()
    return [Node(package=package, executable=name, name=name, output='screen',
                 parameters=[PathJoinSubstitution([config, f'{name}.yaml']), parameters[name]])
            for name, package in SIM_GRAPH_NODES]


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument('task', default_value='pick-place-v3',
                              description='task of the catalogue (sarm2_common/tasks.yaml)'),
        DeclareLaunchArgument('camera', default_value='corner',
                              description='sim camera the reward model and policy see'),
        DeclareLaunchArgument('image_size', default_value='64',
                              description='camera image size, px (the size trained on)'),
        DeclareLaunchArgument('reward_checkpoint',
                              description='SARM2 checkpoint directory (train_reward_model)'),
        DeclareLaunchArgument('policy_checkpoint',
                              description='compact VLA checkpoint directory (train_vla)'),
        DeclareLaunchArgument('bag_directory', default_value='rollouts',
                              description='where the policy node records one bag per episode'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='sim publishes /clock and every node follows it'),
    ]
    return LaunchDescription(arguments + rviz(LaunchConfiguration('use_sim_time'))
                             + [OpaqueFunction(function=_graph)])
