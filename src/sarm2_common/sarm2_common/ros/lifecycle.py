"""Running a lifecycle node from its console script (shared by the reward and policy nodes)."""

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn


def spin_lifecycle_node(node_class, num_threads: int, args=None) -> None:
    """Create ``node_class()``, configure + activate it if its ``autostart`` is set, and spin.

    The node starts inactive unless ``node.config.autostart``; a failed configure leaves it
    unconfigured (and saying why) rather than exiting. Ctrl-C shuts down cleanly (exit 0).
    """
    rclpy.init(args=args)
    node = node_class()
    executor = MultiThreadedExecutor(num_threads=num_threads)
    executor.add_node(node)
    try:
        if node.config.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
