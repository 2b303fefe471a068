"""Policy node message conversions (pure functions, no node)."""

import numpy as np
import pytest

from builtin_interfaces.msg import Time
from sarm2_common.image_encoding import encode_image
from sensor_msgs.msg import Image, JointState
from spiral_policy.ros.conversions import (float64_array, float_array, gripper_command,
                                           image_to_rgb, joint_positions,
                                           joint_trajectory_command, stamp_seconds,
                                           twist_command)


def test_image_round_trip_and_bgr():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    fields = encode_image(rgb[:, :, ::-1].copy(), 'bgr8')
    msg = Image(height=fields.height, width=fields.width, encoding=fields.encoding,
                is_bigendian=int(fields.is_bigendian), step=fields.step, data=fields.data)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    msg.encoding = '32FC1'
    with pytest.raises(ValueError):
        image_to_rgb(msg)


def test_joint_positions_by_name():
    msg = JointState(name=['b', 'a', 'c'], position=[2.0, 1.0, 3.0])
    np.testing.assert_array_equal(joint_positions(msg), [2, 1, 3])
    np.testing.assert_array_equal(joint_positions(msg, ['a', 'c']), [1, 3])
    with pytest.raises(ValueError, match='lacks'):
        joint_positions(msg, ['z'])


def test_commands():
    stamp = Time(sec=3, nanosec=500_000_000)
    assert stamp_seconds(stamp) == 3.5
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
