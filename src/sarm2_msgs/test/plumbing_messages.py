"""The exact messages the plumbing test's publisher peer sends, shared with the test."""

from builtin_interfaces.msg import Time
from sarm2_msgs.msg import EpisodeStatus, StageReward
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

# Vocabulary ids written out (pick_grab = 0 in group acquire = 0, reach = 22): sarm2_msgs must
# not depend on sarm2_reward, and the values only need to be distinctive.
PICK_GRAB, REACH, ACQUIRE = 0, 22, 0
NUM_PRIMITIVES, NUM_GROUPS = 23, 8


def stage_reward() -> StageReward:
    """Build a StageReward with every field set to a distinctive value."""
    probabilities = [0.0] * NUM_PRIMITIVES
    probabilities[PICK_GRAB] = 0.75
    probabilities[REACH] = 0.25
    groups = [0.0] * NUM_GROUPS
    groups[ACQUIRE] = 1.0
    return StageReward(
        header=Header(stamp=Time(sec=12, nanosec=345_000_000), frame_id='camera_corner_optical'),
        task='pick-place-v3', instruction='pick up the puck and place it at the goal',
        episode_id='ep-000042', frame_index=17,
        primitive_id=PICK_GRAB, primitive_name='pick_grab', primitive_confidence=0.75,
        group_id=ACQUIRE, group_name='acquire',
        primitive_probabilities=probabilities, group_probabilities=groups,
        progress=0.375, value=-0.625, reward=0.0078125, success_probability=0.0625,
        model_id='sarm2:0123abcd', inference_time=0.00390625)


def episode_status() -> EpisodeStatus:
    """Build the EpisodeStatus of a finished, successful episode."""
    return EpisodeStatus(
        header=Header(stamp=Time(sec=99, nanosec=1)), episode_id='ep-000042',
        task='pick-place-v3', instruction='pick up the puck and place it at the goal',
        state=EpisodeStatus.SUCCEEDED, step=150, elapsed=7.5, episode_return=0.875,
        reason='success', bag_path='/tmp/rollouts/ep-000042')


# The stack's profiles for these topics (sarm2_common.ros.qos), restated because sarm2_msgs
# cannot depend on sarm2_reward.
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
