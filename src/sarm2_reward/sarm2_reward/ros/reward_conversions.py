"""Message <-> array conversion for the reward node, as pure functions (no node state).

Images go through the real ``cv_bridge`` when it is importable (robot installs) and through
``sarm2_common.image_encoding`` (same semantics, numpy only) otherwise.
"""

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
import numpy as np
from sarm2_msgs.msg import StageReward
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..backend import RewardEstimate
from sarm2_common.image_encoding import decode_image, encode_image, ImageDecodeError, to_rgb8
from ..reward_diagnostics import DiagnosticReport

try:  # Only robot installs have ROS 2's cv_bridge; PyPI's cv-bridge is a broken ROS 1 repack.
    from cv_bridge import CvBridge, CvBridgeError
    _BRIDGE = CvBridge()
except ImportError:  # pragma: no cover - depends on the install
    _BRIDGE = None

MARKER_NAMESPACE = 'sarm2_reward'
BAR_LENGTH = 0.4  # m, full progress bar in RViz


def using_cv_bridge() -> bool:
    """Tell whether images are converted by the real cv_bridge."""
    return _BRIDGE is not None


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """Decode a sensor_msgs/Image to uint8 RGB [H, W, 3]; ImageDecodeError says what is wrong."""
    if _BRIDGE is not None:
        # cv_bridge misreads malformed buffers instead of refusing them: check sizes first.
        decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step,
                     msg.data)
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
        except CvBridgeError as exc:
            raise ImageDecodeError(str(exc)) from None
    array = decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step,
                         msg.data)
    return to_rgb8(array, msg.encoding)


def rgb_to_image_msg(image: np.ndarray, header: Header) -> Image:
    """Pack uint8 RGB [H, W, 3] as an rgb8 sensor_msgs/Image with ``header``."""
    fields = encode_image(image, 'rgb8')
    return Image(header=header, height=fields.height, width=fields.width, encoding='rgb8',
                 is_bigendian=int(fields.is_bigendian), step=fields.step, data=fields.data)


class JointStateError(ValueError):
    """A JointState the model cannot use; ``kind`` is joint_names, joint_size or joint_nan."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def joint_positions(msg: JointState, names: list[str], state_dim: int | None) -> np.ndarray:
    """Joint positions in model order as float32 [state_dim]; JointStateError on a mismatch.

    ``names`` empty: the message's own order is used and only the length is checked;
    ``state_dim`` None: any length (a backend that ignores the joints).
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
    if state_dim is not None and positions.shape != (state_dim,):
        raise JointStateError(
            f'joint_states has {positions.size} positions, the model expects {state_dim}'
            + ('' if names else ' (set joint_names to pick them)'), 'joint_size')
    if not np.all(np.isfinite(positions)):
        raise JointStateError('joint_states positions contain NaN or infinity', 'joint_nan')
    return positions.astype(np.float32)


def stage_reward_msg(estimate: RewardEstimate, header: Header, task: str, instruction: str,
                     episode_id: str, frame_index: int) -> StageReward:
    """Build the StageReward for one frame; ``header`` is the camera image's header."""
    return StageReward(
        header=header, task=task, instruction=instruction, episode_id=episode_id,
        frame_index=int(frame_index), primitive_id=estimate.primitive_id,
        primitive_name=estimate.primitive_name,
        primitive_confidence=float(estimate.primitive_confidence),
        group_id=estimate.group_id, group_name=estimate.group_name,
        primitive_probabilities=estimate.primitive_probs.astype(np.float32).tolist(),
        group_probabilities=estimate.group_probs.astype(np.float32).tolist(),
        progress=float(estimate.progress), value=float(estimate.value),
        reward=float(estimate.reward), success_probability=float(estimate.success_probability),
        model_id=estimate.model_id, inference_time=float(estimate.inference_time))


def _color(r: float, g: float, b: float, a: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def reward_markers(estimate: RewardEstimate, header: Header, lifetime_s: float = 1.0
                   ) -> MarkerArray:
    """RViz markers in ``header.frame_id``: stage text, progress bar, success sphere.

    Layout (metres, in the marker frame): text at z=0.55, bar along +y at z=0.45 with its empty
    part grey, a sphere at the bar's end that goes red -> green with the success probability.
    """
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    progress = float(np.clip(estimate.progress, 0.0, 1.0))
    success = float(np.clip(estimate.success_probability, 0.0, 1.0))

    def marker(marker_id: int, marker_type: int) -> Marker:
        m = Marker(header=header, ns=MARKER_NAMESPACE, id=marker_id, type=marker_type,
                   action=Marker.ADD, lifetime=lifetime, frame_locked=False)
        m.pose.orientation.w = 1.0
        return m

    text = marker(0, Marker.TEXT_VIEW_FACING)
    text.text = (f'{estimate.primitive_name} ({estimate.primitive_confidence:.2f})  '
                 f'progress {progress:.2f}  success {success:.2f}')
    text.pose.position.z = 0.55
    text.scale.z = 0.05
    text.color = _color(1.0, 1.0, 1.0)

    background = marker(1, Marker.CUBE)
    background.pose.position = Point(x=0.0, y=BAR_LENGTH / 2, z=0.45)
    background.scale.x, background.scale.y, background.scale.z = 0.02, BAR_LENGTH, 0.03
    background.color = _color(0.3, 0.3, 0.3, 0.6)

    fill = marker(2, Marker.CUBE)
    fill_length = max(progress * BAR_LENGTH, 1e-3)  # RViz rejects zero scales
    fill.pose.position = Point(x=0.0, y=fill_length / 2, z=0.45)
    fill.scale.x, fill.scale.y, fill.scale.z = 0.025, fill_length, 0.035
    fill.color = _color(0.2, 0.8, 0.3)

    sphere = marker(3, Marker.SPHERE)
    sphere.pose.position = Point(x=0.0, y=BAR_LENGTH + 0.04, z=0.45)
    sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.05
    sphere.color = _color(1.0 - success, success, 0.1)
    return MarkerArray(markers=[text, background, fill, sphere])


def diagnostics_msg(report: DiagnosticReport, stamp, name: str, hardware_id: str
                    ) -> DiagnosticArray:
    """One DiagnosticArray with one status built from a monitor report."""
    status = DiagnosticStatus(level=bytes([report.level]), name=name, message=report.message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
