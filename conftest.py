"""Test-session settings shared by every test directory (also under `colcon test`).

ROS 2 isolation: other processes on this host may run ROS 2, so tests use a private domain id
and only discover peers on localhost. Child processes inherit these variables.
"""

import os
import pathlib
import sys

# ros_harness.py (helpers for multi-process tests) sits beside this file; make it importable from
# every test directory, including per-package runs under `colcon test`.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# Kilted's Python messages only type-check fields when asked to; tests want the checks.
os.environ['ROS_PYTHON_CHECK_FIELDS'] = '1'
os.environ.setdefault('MUJOCO_GL', 'egl')

import pytest  # noqa: E402  (after the environment is set, before any test imports rclpy)


@pytest.fixture
def ros_context():
    """Initialise rclpy (default context) for the test process; shut it down afterwards."""
    rclpy = pytest.importorskip('rclpy')
    rclpy.init()
    yield
    rclpy.shutdown()
