"""Running a node from its console script, shared by every node of the stack.

- It cannot start (a bad params file, an unknown or mistyped parameter, a missing file): one
  line saying what to fix on stderr, exit code 2, no traceback.
- Ctrl-C (SIGINT) or SIGTERM: rclpy's own signal handler would shut the context down at once,
  so a node could no longer publish its last words (the policy node's final stop command, the
  episode status, the bag's closing metadata). Here the signal only stops spinning; the node's
  ``finish_before_shutdown()`` (if it has one) runs while the context is still valid, then the
  node is destroyed and rclpy shut down.
- A lifecycle node whose ``config.autostart`` is set is configured and activated at startup; a
  failed configure leaves it unconfigured (and saying why) rather than exiting.
"""

import signal
import sys

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

# Problems at startup that are the user's to fix (parameters, files, interfaces), not bugs.
STARTUP_ERRORS = (ValueError, TypeError, OSError, ImportError, rclpy_implementation.RCLError)


def startup_error_text(error: BaseException) -> str:
    """One line from an exception raised while starting a node (rcl's file locations cut)."""
    text = ' '.join(str(error).split())
    # rcl appends the C source locations (", at /path/file.c:123") to its messages.
    return text.split(', at /')[0] or type(error).__name__


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def spin_node(node_class, num_threads: int = 1, args=None) -> None:
    """Create ``node_class()``, bring it up and spin it until Ctrl-C or SIGTERM.

    Exits with code 2 and one line on stderr when the node cannot be created.
    """
    name = getattr(node_class, 'NODE_NAME', node_class.__name__)
    node = None
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        node = node_class()
    except STARTUP_ERRORS as error:
        print(f'{name}: error: {startup_error_text(error)}', file=sys.stderr)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return
    # One thread: callbacks run in this (main) thread, where e.g. the simulator's GL context
    # was created; MultiThreadedExecutor would run them in a pool thread.
    executor = (SingleThreadedExecutor() if num_threads == 1
                else MultiThreadedExecutor(num_threads=num_threads))
    executor.add_node(node)
    try:
        if isinstance(node, LifecycleNode) and node.config.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A second Ctrl-C must not cut the node's last words short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        finish = getattr(node, 'finish_before_shutdown', None)
        if finish is not None and rclpy.ok():
            finish()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
