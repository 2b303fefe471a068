"""Running a lifecycle node from its console script (shared by the reward and policy nodes)."""

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.lifecycle import TransitionCallbackReturn


def spin_lifecycle_node(node_class, num_threads: int, args=None) -> None:
    """Create ``node_class()``, configure + activate it if its ``autostart`` is set, and spin.

    ``num_threads`` > 1 spins a MultiThreadedExecutor, 1 a SingleThreadedExecutor; a node with a
    ``spin_with(executor)`` method runs its own loop on it instead of ``executor.spin()``. The
    node starts inactive unless ``node.config.autostart``; a failed configure leaves it
    unconfigured (and saying why) rather than exiting. Ctrl-C shuts down cleanly (exit 0).
    """
    rclpy.init(args=args)
    node = node_class()
    executor = MultiThreadedExecutor(num_threads=num_threads) if num_threads > 1 \
        else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.config.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        spin_with = getattr(node, 'spin_with', None)
        if spin_with is not None:
            spin_with(executor)
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
