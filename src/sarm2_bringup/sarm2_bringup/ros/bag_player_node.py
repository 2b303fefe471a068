"""Replay a recorded rosbag2 bag onto live topics, like ``ros2 bag play``.

``ros2 bag`` is not always installed (never from the PyPI wheels). This player keeps the recorded
timing scaled by a rate factor, with optional loop, topic filter and /clock.

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
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rosgraph_msgs.msg import Clock

from sarm2_common.bag_playback import PlaybackConfig, playback_schedule, read_bag
from sarm2_common.ros.qos import RELIABLE


def message_class(msgtype: str):
    """Import the Python class of a ROS type name such as ``sensor_msgs/msg/Image``."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


class BagPlayerNode(Node):
    """Publishes one bag's messages with their recorded timing."""

    def __init__(self, **kwargs):
        super().__init__('bag_player', **kwargs)
        self.declare_parameter('bag', '', ParameterDescriptor(
            description='rosbag2 bag directory (or .mcap file) to play', read_only=True))
        self.declare_parameter('rate', 1.0, ParameterDescriptor(
            description='playback speed factor (2.0 = twice as fast)', read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=100.0)]))
        self.declare_parameter('loop', False, ParameterDescriptor(
            description='start again at the end', read_only=True))
        self.declare_parameter('topics', [''], ParameterDescriptor(
            description='topics to play; empty = all', read_only=True,
            type=ParameterType.PARAMETER_STRING_ARRAY))
        self.declare_parameter('publish_clock', False, ParameterDescriptor(
            description='publish the recorded time on /clock (for use_sim_time)',
            read_only=True))
        self.declare_parameter('start_delay', 1.0, ParameterDescriptor(
            description='s to wait before the first message, so subscribers can connect',
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=60.0)]))
        self.declare_parameter('wait_for_subscribers', 0, ParameterDescriptor(
            description='before playing, wait (up to 30 s) until every topic has at least this '
            'many subscribers; 0 = do not wait', read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=100)]))
        bag = self.get_parameter('bag').value
        if not bag:
            raise ValueError('parameter "bag" is empty: pass the bag directory to play')
        self.config = PlaybackConfig(
            rate=self.get_parameter('rate').value, loop=self.get_parameter('loop').value,
            topics=tuple(t for t in self.get_parameter('topics').value if t))
        self.messages, report = read_bag(bag, self.config.topics or None)
        for problem in report.problems:
            self.get_logger().warning(f'{bag}: {problem}')
        if not self.messages:
            raise ValueError(f'{bag}: no readable messages'
                             + (f' on topics {list(self.config.topics)}' if self.config.topics
                                else ''))
        self.publishers_by_topic = {}
        for message in self.messages:
            if message.topic not in self.publishers_by_topic:
                # Reliable for every topic: it matches reliable subscribers (lossless replay into
                # an evaluation) as well as the best-effort ones live sensors are read with.
                self.publishers_by_topic[message.topic] = self.create_publisher(
                    message_class(message.msgtype), message.topic, RELIABLE)
        self.clock_publisher = (self.create_publisher(Clock, '/clock', RELIABLE)
                                if self.get_parameter('publish_clock').value else None)
        self.published = 0
        self.done = threading.Event()
        self.get_logger().info(
            f'playing {len(self.messages)} messages on {len(self.publishers_by_topic)} topics '
            f'from {bag} at {self.config.rate}x' + (' (loop)' if self.config.loop else ''))
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _wait_for_subscribers(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and rclpy.ok():
            waiting = [topic for topic, publisher in self.publishers_by_topic.items()
                       if publisher.get_subscription_count() < count]
            if not waiting:
                return
            time.sleep(0.05)
        self.get_logger().warning(f'playing without {count} subscriber(s) on {waiting}')

    def _play(self) -> None:
        subscribers = self.get_parameter('wait_for_subscribers').value
        if subscribers:
            self._wait_for_subscribers(subscribers)
        time.sleep(self.get_parameter('start_delay').value)
        start = time.monotonic()
        for offset, message in playback_schedule(self.messages, self.config):
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
        'with its recorded timing; truncated bags play up to the first unreadable byte.')
    parser.add_argument('bag', nargs='?', help='bag directory or .mcap file')
    parser.add_argument('--rate', type=float, help='speed factor, e.g. 2.0 (default 1.0)')
    parser.add_argument('--loop', action='store_true', help='start again at the end')
    parser.add_argument('--topics', nargs='+', help='only these topics')
    parser.add_argument('--clock', action='store_true', help='publish recorded time on /clock')
    parser.add_argument('--wait-for-subscribers', type=int, metavar='N',
                        help='wait until every topic has N subscribers before playing')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = parse_arguments(rclpy.utilities.remove_ros_args(argv)[1:])
    overrides = []
    for name, value in (('bag', args.bag), ('rate', args.rate), ('topics', args.topics),
                        ('wait_for_subscribers', args.wait_for_subscribers)):
        if value is not None:
            overrides.append(rclpy.parameter.Parameter(name, value=value))
    if args.loop:
        overrides.append(rclpy.parameter.Parameter('loop', value=True))
    if args.clock:
        overrides.append(rclpy.parameter.Parameter('publish_clock', value=True))
    rclpy.init(args=argv)
    try:
        node = BagPlayerNode(parameter_overrides=overrides)
    except (ValueError, FileNotFoundError) as error:
        print(f'bag_player: {error}', file=sys.stderr)
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
