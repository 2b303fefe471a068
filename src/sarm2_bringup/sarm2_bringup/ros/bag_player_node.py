"""Replay a recorded rosbag2 bag onto live topics, like ``ros2 bag play``.

``ros2 bag`` is not always installed (never from the PyPI wheels). This player keeps the recorded
timing scaled by a rate factor, with optional loop, topic filter and /clock.

A replay publishes the sensor topics only (images, joint states, poses) unless told otherwise:
a rollout bag also holds the commands the policy sent, and an arm driver in the same ROS domain
would execute them again. Recorded commands go out only when named in ``publish_commands``,
with a warning; other recorded outputs (rewards, status) only when named in ``topics``.

Messages are published as the stored CDR bytes, so what the subscribers get is byte-for-byte what
was recorded, header stamps included. Unreadable parts of truncated or corrupted bags are logged
once and the rest is played.

    bag_player runs/demos/pick-place-v3/ep000 --rate 2 --topics /camera/corner/image_raw
    bag_player --ros-args -p bag:=<dir> -p loop:=true
"""

import argparse
import importlib
import sys
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sarm2_common import topics
from sarm2_common.bag_playback import playback_schedule, read_bag, select_topics
from sarm2_common.ros.parameters import NodeParameters
from sarm2_common.ros.qos import LATCHED, RELIABLE
from sarm2_common.ros.spin import startup_error_text, STARTUP_ERRORS

from ..bag_player_config import BagPlayerConfig

# Topics whose live publishers are latched (transient local): a replay must match them, or a
# transient-local subscriber (the reward node's /episode/status) never connects.
LATCHED_TOPICS = (topics.EPISODE_STATUS_TOPIC,)
# After the first played topic is matched, how long the others get to be matched too.
SUBSCRIBER_GRACE = 2.0    # s


def message_class(msgtype: str):
    """Import the Python class of a ROS type name such as ``sensor_msgs/msg/Image``."""
    try:
        package, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ValueError, ImportError, AttributeError):
        raise ValueError(f'message type {msgtype!r} is not installed here') from None


class BagPlayerNode(Node):
    """Publishes one bag's messages with their recorded timing."""

    NODE_NAME = 'bag_player'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self.config = NodeParameters(self, BagPlayerConfig).config
        bag = self.config.bag
        messages, report = read_bag(bag)
        for problem in report.problems:
            self.get_logger().warning(f'{bag}: {problem}')
        available = {}
        for message in messages:
            available.setdefault(message.topic, message.msgtype)
        selection = select_topics(available, self.config.topics, self.config.publish_commands)
        self._explain(selection)
        self.messages = [m for m in messages if m.topic in selection.play]
        if not self.messages:
            raise ValueError(f'{bag}: no readable messages to play'
                             + (f' on topics {list(self.config.topics)}' if self.config.topics
                                else ' (no sensor topics; name topics to play with --topics)'))
        self.publishers_by_topic = {}
        for topic in selection.play:
            # Reliable: it matches reliable subscribers (lossless replay into an evaluation) as
            # well as the best-effort ones live sensors are read with.
            qos = LATCHED if topic in LATCHED_TOPICS else RELIABLE
            self.publishers_by_topic[topic] = self.create_publisher(
                message_class(available[topic]), topic, qos)
        self.clock_publisher = (self.create_publisher(Clock, '/clock', RELIABLE)
                                if self.config.publish_clock else None)
        self.published = 0
        self.done = threading.Event()
        self.get_logger().info(
            f'playing {len(self.messages)} messages on {len(self.publishers_by_topic)} topics '
            f'from {bag} at {self.config.rate}x' + (' (loop)' if self.config.loop else ''))
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _explain(self, selection) -> None:
        log = self.get_logger()
        if selection.not_sensor:
            log.info(f'not replayed (not sensor data; name them with --topics to replay): '
                     f'{", ".join(selection.not_sensor)}')
        if selection.commands_refused:
            log.warning(f'not replaying command topics {", ".join(selection.commands_refused)}: '
                        'recorded commands would move a live arm; name them with '
                        '--publish-commands to replay them anyway')
        commands = [t for t in selection.play if t in self.config.publish_commands]
        if commands:
            log.warning(f'REPLAYING RECORDED COMMANDS on {", ".join(commands)}: an arm driver '
                        'in this ROS domain will execute them')
        if selection.missing:
            log.warning(f'not in the bag: {", ".join(selection.missing)}')

    def _wait_for_subscribers(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        first_matched = None
        waiting = list(self.publishers_by_topic)
        while time.monotonic() < deadline and rclpy.ok():
            waiting = [topic for topic, publisher in self.publishers_by_topic.items()
                       if publisher.get_subscription_count() < count]
            if not waiting:
                return
            if len(waiting) < len(self.publishers_by_topic) and first_matched is None:
                first_matched = time.monotonic()
            if first_matched is not None and time.monotonic() - first_matched > SUBSCRIBER_GRACE:
                break
            time.sleep(0.05)
        self.get_logger().warning(f'playing without {count} subscriber(s) on {waiting}')

    def _play(self) -> None:
        if self.config.wait_for_subscribers:
            self._wait_for_subscribers(self.config.wait_for_subscribers)
        time.sleep(self.config.start_delay)
        start = time.monotonic()
        for offset, message in playback_schedule(self.messages, self.config.playback()):
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not rclpy.ok():
                return
            self.publishers_by_topic[message.topic].publish(message.data)
            if self.clock_publisher is not None:
                stamp = Clock()
                stamp.clock.sec, stamp.clock.nanosec = divmod(message.timestamp_ns, 10**9)
                self.clock_publisher.publish(stamp)
            self.published += 1
        self.get_logger().info(f'finished: published {self.published} messages')
        self.done.set()


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse the ros2-bag-play-like command line (ROS arguments already removed)."""
    parser = argparse.ArgumentParser(
        prog='bag_player', description='Replay a rosbag2 bag (MCAP) onto live ROS 2 topics '
        'with its recorded timing; truncated bags play up to the first unreadable byte. By '
        'default only sensor topics (images, joint states, poses) are played; recorded '
        'commands are never published unless named with --publish-commands.')
    parser.add_argument('bag', nargs='?', help='bag directory or .mcap file')
    parser.add_argument('--rate', type=float, help='speed factor, e.g. 2.0 (default 1.0)')
    parser.add_argument('--loop', action='store_true', help='start again at the end')
    parser.add_argument('--topics', nargs='+', help='only these topics (default: sensor topics)')
    parser.add_argument('--publish-commands', nargs='+', metavar='TOPIC',
                        help='also replay these recorded command topics (moves a live arm!)')
    parser.add_argument('--clock', action='store_true', help='publish recorded time on /clock')
    parser.add_argument('--wait-for-subscribers', type=int, metavar='N',
                        help='wait until every topic has N subscribers before playing')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the bag player (console script ``bag_player``); exit code 2 on bad input."""
    argv = sys.argv if argv is None else argv
    args = parse_arguments(rclpy.utilities.remove_ros_args(argv)[1:])
    overrides = []
    for name, value in (('bag', args.bag), ('rate', args.rate), ('topics', args.topics),
                        ('publish_commands', args.publish_commands),
                        ('wait_for_subscribers', args.wait_for_subscribers)):
        if value is not None:
            overrides.append(rclpy.parameter.Parameter(name, value=value))
    if args.loop:
        overrides.append(rclpy.parameter.Parameter('loop', value=True))
    if args.clock:
        overrides.append(rclpy.parameter.Parameter('publish_clock', value=True))
    try:
        rclpy.init(args=argv)
        node = BagPlayerNode(parameter_overrides=overrides)
    except STARTUP_ERRORS as error:
        print(f'bag_player: error: {startup_error_text(error)}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        while rclpy.ok() and not node.done.is_set():
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
