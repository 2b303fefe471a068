"""Conversions every node shares: images, joint states, diagnostics, stamps (no DDS)."""

from builtin_interfaces.msg import Time
import numpy as np
import pytest
from sarm2_common.diagnostics import DiagnosticReport, WARN
from sarm2_common.image_encoding import ImageDecodeError
from sarm2_common.ros.conversions import (diagnostics_msg, image_msg_to_rgb, joint_positions,
                                          JointStateError, rgb_to_image_msg)
from sarm2_common.ros.stamps import stamp_ns, stamp_seconds, time_msg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header

NAMES = [f'j{i}' for i in range(9)]


def test_joint_positions_reordered_by_name_and_checked():
    msg = JointState(name=list(reversed(NAMES)), position=[float(i) for i in range(9)])
    np.testing.assert_array_equal(joint_positions(msg, NAMES), np.arange(9)[::-1])
    np.testing.assert_array_equal(joint_positions(msg), np.arange(9))
    assert joint_positions(msg).dtype == np.float64
    extra = JointState(name=NAMES + ['wheel'], position=[0.0] * 10)
    assert joint_positions(extra, NAMES).shape == (9,)
    cases = [
        (JointState(name=NAMES[:8] + ['other'], position=[0.0] * 9), NAMES, 'joint_names'),
        (JointState(name=NAMES, position=[0.0] * 8), NAMES, 'joint_names'),
        (JointState(name=NAMES, position=[float('nan')] + [0.0] * 8), NAMES, 'joint_nan'),
        (JointState(name=[], position=[float('inf')] * 9), [], 'joint_nan'),
    ]
    for msg, names, kind in cases:
        with pytest.raises(JointStateError) as error:
            joint_positions(msg, names)
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


def test_diagnostics_message():
    report = DiagnosticReport(WARN, '2 bad inputs', {'bad_inputs': '2'})
    msg = diagnostics_msg(report, Header().stamp, 'reward_node: reward', 'sarm2-abc')
    status = msg.status[0]
    assert status.level == b'\x01' and status.message == '2 bad inputs'
    assert status.values[0].key == 'bad_inputs' and status.hardware_id == 'sarm2-abc'


def test_stamps():
    stamp = Time(sec=3, nanosec=500_000_000)
    assert stamp_seconds(stamp) == 3.5 and stamp_ns(stamp) == 3_500_000_000
    assert time_msg(3_500_000_000) == stamp
