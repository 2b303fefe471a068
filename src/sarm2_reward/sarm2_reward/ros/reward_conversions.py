"""Message <-> array conversion for the reward node, as pure functions (no node state).

Images, joint states and diagnostics use the shared conversions of ``sarm2_common.ros``.
"""

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
import numpy as np
from sarm2_common.ros.conversions import joint_positions, JointStateError
from sarm2_msgs.msg import StageReward
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..backend import RewardEstimate

MARKER_NAMESPACE = 'sarm2_reward'
BAR_LENGTH = 0.4  # m, full progress bar in RViz


def model_joint_state(msg: JointState, names, state_dim: int | None) -> np.ndarray:
    """Joint positions in model order as float32 [state_dim]; JointStateError on a mismatch.

    ``names`` empty: the message's own order is used and only the length is checked;
    ``state_dim`` None: any length (a backend that ignores the joints).
    """
    positions = joint_positions(msg, names)
    if state_dim is not None and positions.shape != (state_dim,):
        raise JointStateError(
            f'joint_states has {positions.size} positions, the model expects {state_dim}'
            + ('' if names else ' (set joint_names to pick them)'), 'joint_size')
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
