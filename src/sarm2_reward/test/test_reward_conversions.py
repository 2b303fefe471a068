"""The reward node's message conversions: pure functions on generated message types, no DDS."""

import numpy as np
import pytest

from sarm2_reward.backend import RewardEstimate
from sarm2_common.image_encoding import ImageDecodeError
from sarm2_reward.reward_diagnostics import DiagnosticReport, WARN
from sarm2_reward.ros.reward_conversions import (diagnostics_msg, image_msg_to_rgb,
                                                 joint_positions, JointStateError,
                                                 reward_markers, rgb_to_image_msg,
                                                 stage_reward_msg)
from sarm2_common.vocabulary import NUM_GROUPS, NUM_PRIMITIVES, primitive
from sensor_msgs.msg import Image, JointState
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


def test_joint_positions_reordered_by_name_and_checked():
    msg = JointState(name=list(reversed(NAMES)), position=[float(i) for i in range(9)])
    np.testing.assert_array_equal(joint_positions(msg, NAMES, 9), np.arange(9)[::-1])
    np.testing.assert_array_equal(joint_positions(msg, [], 9), np.arange(9))
    extra = JointState(name=NAMES + ['wheel'], position=[0.0] * 10)
    assert joint_positions(extra, NAMES, 9).shape == (9,)
    cases = [
        (JointState(name=NAMES[:8] + ['other'], position=[0.0] * 9), NAMES, 'joint_names'),
        (JointState(name=NAMES, position=[0.0] * 8), NAMES, 'joint_names'),
        (JointState(name=[], position=[0.0] * 8), [], 'joint_size'),
        (JointState(name=NAMES, position=[float('nan')] + [0.0] * 8), NAMES, 'joint_nan'),
        (JointState(name=[], position=[float('inf')] * 9), [], 'joint_nan'),
    ]
    for msg, names, kind in cases:
        with pytest.raises(JointStateError) as error:
            joint_positions(msg, names, 9)
        assert error.value.kind == kind


def test_image_messages_with_padding_and_bgr_decode_to_rgb():
    rgb = np.random.default_rng(0).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    rows = rgb[:, :, ::-1].reshape(3, 12)
    padded = np.concatenate([rows, np.zeros((3, 4), np.uint8)], axis=1)
    msg = Image(height=3, width=4, encoding='bgr8', step=16, data=padded.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    with pytest.raises(ImageDecodeError):
        image_msg_to_rgb(Image(height=3, width=4, encoding='bgr8', step=16, data=b''))
    round_trip = rgb_to_image_msg(rgb, Header(frame_id='cam'))
    assert round_trip.encoding == 'rgb8' and round_trip.step == 12
    np.testing.assert_array_equal(image_msg_to_rgb(round_trip), rgb)


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


def test_diagnostics_message():
    report = DiagnosticReport(WARN, '2 bad inputs', {'bad_inputs': '2'})
    msg = diagnostics_msg(report, Header().stamp, 'reward_node: reward', 'sarm2-abc')
    status = msg.status[0]
    assert status.level == b'\x01' and status.message == '2 bad inputs'
    assert status.values[0].key == 'bad_inputs' and status.hardware_id == 'sarm2-abc'
