"""Test-session settings shared by every test directory (also under `colcon test`).

ROS 2 isolation: other processes on this host may run ROS 2, so tests use a private domain id
and only discover peers on localhost. Child processes inherit these variables.
"""

import os

os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# Kilted's Python messages only type-check fields when asked to; tests want the checks.
os.environ['ROS_PYTHON_CHECK_FIELDS'] = '1'
os.environ.setdefault('MUJOCO_GL', 'egl')
