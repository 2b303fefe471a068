"""Message <-> array conversions every node shares, as pure functions (no node state).

Images go through the real ``cv_bridge`` when it is importable (robot installs) and through
``sarm2_common.image_encoding`` (same semantics, numpy only) otherwise.
"""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header

from sarm2_common.diagnostics import DiagnosticReport
from sarm2_common.image_encoding import decode_image, encode_image, ImageDecodeError, to_rgb8

try:  # Only robot installs have ROS 2's cv_bridge; PyPI's cv-bridge is a broken ROS 1 repack.
    from cv_bridge import CvBridge, CvBridgeError
    _BRIDGE = CvBridge()
except ImportError:  # pragma: no cover - depends on the install
    _BRIDGE = None


def using_cv_bridge() -> bool:
    """Tell whether images are converted by the real cv_bridge."""
    return _BRIDGE is not None


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """Decode a sensor_msgs/Image to uint8 RGB [H, W, 3]; ImageDecodeError says what is wrong."""
    # Sizes are checked first in both paths: cv_bridge misreads malformed buffers instead of
    # refusing them.
    array = decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step,
                         msg.data)
    if _BRIDGE is not None:
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
        except CvBridgeError as exc:
            raise ImageDecodeError(str(exc)) from None
    return to_rgb8(array, msg.encoding)


def rgb_to_image_msg(image: np.ndarray, header: Header) -> Image:
    """Pack uint8 RGB [H, W, 3] as an rgb8 sensor_msgs/Image with ``header``."""
    fields = encode_image(image, 'rgb8')
    return Image(header=header, height=fields.height, width=fields.width, encoding='rgb8',
                 is_bigendian=int(fields.is_bigendian), step=fields.step, data=fields.data)


class JointStateError(ValueError):
    """A JointState that cannot be used; ``kind`` is joint_names, joint_size or joint_nan."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def joint_positions(msg: JointState, names=()) -> np.ndarray:
    """Positions of a JointState as float64, in ``names`` order if given (else message order).

    Full precision: the safety filter starts an episode's step limit from these positions (a
    float32 copy would let the first command exceed the limit by its rounding error).
    Raises JointStateError naming missing joints, a name/position mismatch or NaN/inf.
    """
    positions = np.asarray(msg.position, dtype=np.float64)
    if names:
        if len(msg.name) != len(positions):
            raise JointStateError(f'joint_states has {len(msg.name)} names but '
                                  f'{len(positions)} positions', 'joint_names')
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [n for n in names if n not in index]
        if missing:
            raise JointStateError(f'joint_states lacks joints {missing} (it has '
                                  f'{list(msg.name)})', 'joint_names')
        positions = positions[[index[n] for n in names]]
    if not np.all(np.isfinite(positions)):
        raise JointStateError('joint_states positions contain NaN or infinity', 'joint_nan')
    return positions


def diagnostics_msg(report: DiagnosticReport, stamp, name: str, hardware_id: str
                    ) -> DiagnosticArray:
    """Return one DiagnosticArray with one status built from a monitor report."""
    status = DiagnosticStatus(level=bytes([report.level]), name=name, message=report.message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
