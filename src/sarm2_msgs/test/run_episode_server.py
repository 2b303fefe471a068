"""Peer process: a RunEpisode action server whose feedback and result are computed from the goal.

The test checks that every goal field reached this process and every result field came back.
"""

import rclpy
from rclpy.action import ActionServer
from rclpy.executors import ExternalShutdownException
from sarm2_msgs.action import RunEpisode


def execute(goal_handle):
    goal = goal_handle.request
    for step in range(3):
        goal_handle.publish_feedback(RunEpisode.Feedback(
            step=step, primitive_name='reach', progress=step / 4.0, reward=0.25))
    goal_handle.succeed()
    return RunEpisode.Result(
        success=goal.record, episode_return=float(goal.seed) / 2.0, steps=goal.max_steps,
        duration=goal.time_limit, episode_id=f'{goal.task}-{goal.seed}',
        bag_path=f'/bags/{goal.task}', reason=f'echo: {goal.instruction}')


def main():
    rclpy.init()
    node = rclpy.create_node('run_episode_server')
    ActionServer(node, RunEpisode, '/plumbing/run_episode', execute)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
