"""The reward node's message conversions: pure functions on generated message types, no DDS."""

import numpy as np
import pytest

from sarm2_common.ros.conversions import JointStateError
from sarm2_common.vocabulary import NUM_GROUPS, NUM_PRIMITIVES, primitive
from sarm2_reward.backend import RewardEstimate
from sarm2_reward.ros.reward_conversions import (model_joint_state, reward_markers,
                                                 stage_reward_msg)
from sensor_msgs.msg import JointState
from std_msgs.msg import Header

NAMES = [f'j{i}' for i in range(9)]


def _estimate(progress=0.4, name='pick_grab'):
    probs = np.full(NUM_PRIMITIVES, 0.01, np.float32)
    probs[primitive(name).id] = 1.0
    probs /= probs.sum()
    groups = np.zeros(NUM_GROUPS, np.float32)
    groups[primitive(name).group_id] = 1.0
    return RewardEstimate(probs, groups, progress, progress - 1.0, 0.02, 0.1, 'sarm2-abc',
                          0.004)


def test_model_joint_state_checks_the_size_the_model_expects():
    msg = JointState(name=list(reversed(NAMES)), position=[float(i) for i in range(9)])
    state = model_joint_state(msg, NAMES, 9)
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, np.arange(9)[::-1])
    with pytest.raises(JointStateError) as error:
        model_joint_state(JointState(name=[], position=[0.0] * 8), [], 9)
    assert error.value.kind == 'joint_size'
    assert model_joint_state(JointState(name=[], position=[0.0] * 8), [], None).shape == (8,)


def test_stage_reward_message_carries_the_estimate_and_the_camera_header():
    header = Header(frame_id='corner_camera')
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg = stage_reward_msg(_estimate(), header, 'pick-place-v3', 'pick it', 'ep1', 7)
    assert msg.header.stamp.sec == 12 and msg.header.frame_id == 'corner_camera'
    assert (msg.primitive_name, msg.group_name) == ('pick_grab', 'acquire')
    assert msg.primitive_id == primitive('pick_grab').id and msg.frame_index == 7
    assert len(msg.primitive_probabilities) == NUM_PRIMITIVES
    assert sum(msg.primitive_probabilities) == pytest.approx(1.0, abs=1e-5)
    assert msg.progress == pytest.approx(0.4) and msg.value == pytest.approx(-0.6)
    assert msg.model_id == 'sarm2-abc' and msg.inference_time == pytest.approx(0.004)


def test_markers_show_stage_and_a_bar_proportional_to_progress():
    header = Header(frame_id='base_link')
    half = reward_markers(_estimate(0.5), header).markers
    full = reward_markers(_estimate(1.0, 'place'), header).markers
    assert half[0].text.startswith('pick_grab') and full[0].text.startswith('place')
    assert full[2].scale.y == pytest.approx(2 * half[2].scale.y)
    assert reward_markers(_estimate(0.0), header).markers[2].scale.y > 0  # never a zero scale
    assert all(m.header.frame_id == 'base_link' for m in half)

