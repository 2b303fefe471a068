"""Peer process: publishes the plumbing test's StageReward and EpisodeStatus until stopped."""

import pathlib
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from sarm2_msgs.msg import EpisodeStatus, StageReward

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from plumbing_messages import episode_status, LATCHED, RELIABLE, stage_reward  # noqa: E402


def main():
    rclpy.init()
    node = rclpy.create_node('plumbing_publisher')
    rewards = node.create_publisher(StageReward, '/plumbing/stage_reward', RELIABLE)
    status = node.create_publisher(EpisodeStatus, '/plumbing/episode_status', LATCHED)
    status.publish(episode_status())
    node.create_timer(0.1, lambda: rewards.publish(stage_reward()))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
