"""Policy node message conversions (pure functions, no node)."""

import numpy as np

from builtin_interfaces.msg import Time
from spiral_policy.ros.conversions import (float64_array, float_array, gripper_command,
                                           joint_trajectory_command, twist_command)


def test_commands():
    stamp = Time(sec=3, nanosec=500_000_000)
    twist = twist_command(np.array([0.1, -0.2, 0.3]), stamp, 'world')
    assert (twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z) == (0.1, -0.2, 0.3)
    assert twist.twist.angular.x == 0 and twist.header.frame_id == 'world'
    assert gripper_command(np.float32(0.5)).data == 0.5
    trajectory = joint_trajectory_command(['j1', 'j2'], np.array([0.1, 0.2]), stamp, 1.25)
    point = trajectory.points[0]
    assert list(point.positions) == [0.1, 0.2]
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (1, 250_000_000)
    assert list(float64_array(np.array([1.0, 2.0])).data) == [1.0, 2.0]


def test_float_array_keeps_nan_and_inf():
    data = np.asarray(float_array(np.array([np.nan, np.inf, 1e300, 1.5])).data)
    assert np.isnan(data[0]) and np.isinf(data[1]) and np.isinf(data[2]) and data[3] == 1.5
