"""Message <-> array conversion for the policy node, as pure functions (tested without a node)."""

import array

import numpy as np

from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import TwistStamped
from std_msgs.msg import Float32MultiArray, Float64, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


def twist_command(velocity: np.ndarray, stamp: Time, frame_id: str) -> TwistStamped:
    """Build a TwistStamped from a linear velocity (m/s, xyz); angular velocity zero."""
    msg = TwistStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in velocity)
    return msg


def gripper_command(value: float) -> Float64:
    """Build a gripper command (-1 open .. 1 close in the sim's units) as Float64."""
    return Float64(data=float(value))


def joint_trajectory_command(names, positions: np.ndarray, stamp: Time,
                             time_from_start: float) -> JointTrajectory:
    """One-point JointTrajectory reaching ``positions`` (rad) after ``time_from_start`` s."""
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(names)
    seconds = int(time_from_start)
    point = JointTrajectoryPoint(
        positions=[float(p) for p in positions],
        time_from_start=Duration(sec=seconds, nanosec=int(round((time_from_start - seconds)
                                                                * 1e9))))
    msg.points = [point]
    return msg


def float64_array(values: np.ndarray) -> Float64MultiArray:
    """Pack a float vector as Float64MultiArray.

    Used for joint positions of a ros2_control forward position controller and for actions in
    the bag layout of ``sarm2_common.bag_io``.
    """
    return Float64MultiArray(data=_packed('d', values, np.float64))


def float_array(values: np.ndarray) -> Float32MultiArray:
    """Pack a float vector (policy actions) as Float32MultiArray, NaN/inf kept as they are."""
    return Float32MultiArray(data=_packed('f', values, np.float32))


def _packed(typecode: str, values, dtype) -> array.array:
    # An array.array skips the per-element range check of Python messages, so a raw policy
    # output holding NaN or inf can still be recorded exactly as the policy produced it.
    with np.errstate(over='ignore'):
        packed = np.asarray(values, dtype=np.float64).astype(dtype).reshape(-1)
    result = array.array(typecode)
    result.frombytes(packed.tobytes())
    return result
