"""Test-session settings shared by every test directory (also under `colcon test`).

ROS 2 isolation: other processes on this host may run ROS 2, so tests use a private domain id
and only discover peers on localhost. Child processes inherit these variables.
"""

import fcntl
import os
import pathlib
import sys
import tempfile

# ros_harness.py (helpers for multi-process tests) sits beside this file; make it importable from
# every test directory, including per-package runs under `colcon test`.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

_DOMAIN_LOCK = None


def claim_domain_id() -> int:
    """Pick a domain id in 1..100 that no other test session on this host is using.

    Two test sessions in one domain see each other's topics (a joint state from one test
    arriving in another's subscriber), so each session holds an exclusive lock on its id for
    as long as it runs; the lock goes away with the process, even when it is killed.
    """
    global _DOMAIN_LOCK
    start = os.getpid() % 100
    for offset in range(100):
        domain = 1 + (start + offset) % 100
        handle = open(pathlib.Path(tempfile.gettempdir()) / f'sarm2-test-domain-{domain}.lock',
                      'w')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _DOMAIN_LOCK = handle
        return domain
    raise RuntimeError('all ROS domain ids 1..100 are in use by other test sessions')


if 'ROS_DOMAIN_ID' not in os.environ:
    os.environ['ROS_DOMAIN_ID'] = str(claim_domain_id())
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# Kilted's Python messages only type-check fields when asked to; tests want the checks.
os.environ['ROS_PYTHON_CHECK_FIELDS'] = '1'
os.environ.setdefault('MUJOCO_GL', 'egl')

import pytest  # noqa: E402  (after the environment is set, before any test imports rclpy)


@pytest.fixture(autouse=True)
def scheduling_stays_normal():
    """Fail a test that leaves this process on another CPU scheduling policy.

    A library that switches to real-time scheduling (SVT-AV1 did) makes every node started
    afterwards inherit it, and a busy real-time node starves the whole machine.
    """
    before = os.sched_getscheduler(0)
    yield
    after = os.sched_getscheduler(0)
    if after != before:
        os.sched_setscheduler(0, before, os.sched_param(0))
        pytest.fail(f'the test changed the scheduling policy of the test process ({before} -> '
                    f'{after}); restored')


@pytest.fixture
def ros_context():
    """Initialise rclpy (default context) for the test process; shut it down afterwards."""
    rclpy = pytest.importorskip('rclpy')
    rclpy.init()
    yield
    rclpy.shutdown()
