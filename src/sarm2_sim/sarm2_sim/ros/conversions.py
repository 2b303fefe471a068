"""Pure conversions between the simulated arm's arrays and ROS messages."""

import math

import numpy as np
from sarm2_common.ros.stamps import time_msg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header

def image_msg(image: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """Return an rgb8 Image for a uint8 [H, W, 3] array."""
    height, width, _ = image.shape
    msg = Image(header=Header(stamp=time_msg(stamp_ns), frame_id=frame_id), height=height,
                width=width, encoding='rgb8', is_bigendian=0, step=width * 3)
    msg.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return msg


def camera_info_msg(size: int, fovy_degrees: float, stamp_ns: int, frame_id: str) -> CameraInfo:
    """Return the pinhole CameraInfo of a square MuJoCo camera (no distortion)."""
    focal = (size / 2.0) / math.tan(math.radians(fovy_degrees) / 2.0)
    centre = (size - 1) / 2.0
    return CameraInfo(
        header=Header(stamp=time_msg(stamp_ns), frame_id=frame_id), height=size, width=size,
        distortion_model='plumb_bob', d=[0.0] * 5,
        k=[focal, 0.0, centre, 0.0, focal, centre, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[focal, 0.0, centre, 0.0, 0.0, focal, centre, 0.0, 0.0, 0.0, 1.0, 0.0])


def joint_state_msg(names, positions: np.ndarray, stamp_ns: int) -> JointState:
    """Return a JointState with positions (rad for revolute, m for prismatic joints)."""
    return JointState(header=Header(stamp=time_msg(stamp_ns)), name=list(names),
                      position=[float(p) for p in positions])
