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

from pathlib import Path
import signal
import sys

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

WAKE_PERIOD = 0.2   # s, longest wait before a signal is handled
GIL_SWITCH_INTERVAL = 0.0005   # s, for nodes on a MultiThreadedExecutor (see spin_node)
# Problems at startup that are the user's to fix (parameters, files, interfaces), not bugs.
STARTUP_ERRORS = (ValueError, TypeError, OSError, ImportError, rclpy_implementation.RCLError)


def startup_error_text(error: BaseException) -> str:
    """One line from an exception raised while starting a node (rcl's file locations cut)."""
    text = ' '.join(str(error).split())
    # rcl appends the C source locations (", at /path/file.c:123") to its messages.
    return text.split(', at /')[0] or type(error).__name__


def params_file_problem(args) -> str:
    """Say what is wrong with a ``--params-file`` of the command line ('' when all are fine).

    Checked before rcl reads them, so a missing or malformed file is one clear line (rcl would
    log its own error line first).
    """
    import yaml

    class ParamsLoader(yaml.SafeLoader):
        """Safe YAML plus the tuples that launch_ros writes.

        ``Node(parameters=[{'cameras': [...]}])`` becomes ``cameras: !!python/tuple [...]`` in
        launch_ros's temporary params file, which rcl reads as a list.
        """

    ParamsLoader.add_constructor('tag:yaml.org,2002:python/tuple',
                                 yaml.SafeLoader.construct_sequence)
    args = list(sys.argv if args is None else args)
    for flag, path in zip(args, args[1:]):
        if flag != '--params-file':
            continue
        try:
            document = yaml.load(Path(path).read_text(), Loader=ParamsLoader)  # noqa: S506
        except OSError as error:
            return f'params file {path}: {error.strerror}'
        except yaml.YAMLError as error:
            return f'params file {path}: not valid YAML ({" ".join(str(error).split())})'
        if not _node_sections(document):
            return (f'params file {path}: expected "<node name>: {{ros__parameters: {{...}}}}" '
                    'sections')
    return ''


def _node_sections(document) -> bool:
    """Tell whether ``document`` (a params file, or a namespace in one) holds node sections."""
    if not isinstance(document, dict) or not document:
        return False
    if 'ros__parameters' in document:
        return isinstance(document['ros__parameters'], dict)
    return all(_node_sections(value) for value in document.values())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _awake() -> None:
    """Do nothing: the timer only makes the executor return to Python now and then."""


def spin_node(node_class, num_threads: int = 1, args=None, name: str = '', **node_kwargs
              ) -> None:
    """Create ``node_class(**node_kwargs)``, bring it up and spin it until Ctrl-C or SIGTERM.

    A node with a ``finished`` future (e.g. a bag player at the end of its bag) also stops when
    that future completes; a node with a ``spin_with(executor)`` method runs its own loop on the
    executor (the reward node: one thread takes input and runs the model). Exits with code 2
    and one line on stderr when the node cannot be created.
    """
    name = name or getattr(node_class, 'NODE_NAME', node_class.__name__)
    problem = params_file_problem(args)
    if problem:
        print(f'{name}: error: {problem}', file=sys.stderr)
        raise SystemExit(2)
    node = None
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        node = node_class(**node_kwargs)
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
    if num_threads > 1:
        # rclpy's MultiThreadedExecutor re-yields a submitted callback until a pool thread has
        # started it, holding the GIL in between; with Python's 5 ms GIL switch interval that
        # loop starved the policy node's control thread (100 control steps at 20 Hz took
        # 14-23 s instead of 5 s, ticks up to 1 s late, on 2 cores). At 0.5 ms: 5.2-5.6 s.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    executor.add_node(node)
    try:
        if isinstance(node, LifecycleNode) and node.config.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        # Python runs a signal handler only between bytecodes, and an idle wait set (e.g. every
        # timer on a /clock that stopped) would never return: a steady-clock timer wakes the
        # executor so Ctrl-C is handled within WAKE_PERIOD.
        node.create_timer(WAKE_PERIOD, _awake, clock=Clock(clock_type=ClockType.STEADY_TIME))
        finished = getattr(node, 'finished', None)
        spin_with = getattr(node, 'spin_with', None)
        if spin_with is not None:
            spin_with(executor)           # a node that runs its own loop on the executor
        elif finished is not None:
            executor.spin_until_future_complete(finished)
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Shutting down already: a further Ctrl-C changes nothing, and SIGTERM (ros2 launch
        # sends it only after giving SIGINT its time) ends a stuck shutdown at once.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        finish = getattr(node, 'finish_before_shutdown', None)
        if finish is not None and rclpy.ok():
            finish()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
