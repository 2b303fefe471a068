"""Approximate-time pairing of camera frames with cameras and joint states.

Closest partner within slop, no waiting for same-stamp publishers, joint states blended to the
frame's stamp, and every reference frame accounted for.
"""

import numpy as np
import pytest

from sarm2_common import bag_io
from sarm2_reward.stamp_pairing import Blend, header_stamp_ns, StampPairer

MS = 1_000_000


def _pairer(**kwargs):
    options = {'slop_ns': 10 * MS, 'max_delay_ns': 100 * MS}
    options.update(kwargs)
    return StampPairer(['cam', 'wrist', 'joints'], 'cam', **options)


def test_same_stamp_streams_pair_as_soon_as_the_last_partner_arrives():
    pairer = _pairer()
    assert pairer.add('cam', 1000 * MS, 'c0') == []
    assert pairer.add('wrist', 1000 * MS, 'w0') == []
    [frame] = pairer.add('joints', 1000 * MS, 'j0')
    assert frame.items == {'cam': 'c0', 'wrist': 'w0', 'joints': 'j0'}
    assert frame.stamp_ns == 1000 * MS and frame.skew_ns == 0
    assert pairer.pending() == 0 and pairer.stats.paired == 1


def test_arrival_order_does_not_matter():
    pairer = _pairer()
    assert pairer.add('joints', 50 * MS, 'j') == []
    assert pairer.add('wrist', 50 * MS, 'w') == []
    [frame] = pairer.add('cam', 50 * MS, 'c')
    assert frame.items == {'cam': 'c', 'wrist': 'w', 'joints': 'j'}


def test_the_closest_partner_wins_and_waits_until_nothing_closer_can_come():
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=20 * MS)
    pairer.add('joints', 90 * MS, 'j90')
    # A joint message before the frame is within slop, but a later one may be closer: wait.
    assert pairer.add('cam', 100 * MS, 'c100') == []
    # 102 ms is after the frame, so no future message can be closer than it: decide now.
    [frame] = pairer.add('joints', 102 * MS, 'j102')
    assert frame.items['joints'] == 'j102' and frame.skew_ns == 2 * MS


def test_frames_without_a_partner_within_slop_are_dropped_and_counted():
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=5 * MS)
    pairer.add('joints', 0, 'j0')
    assert pairer.add('cam', 100 * MS, 'c100') == []
    # Joints jump past the frame by more than slop: the frame can never be paired.
    assert pairer.add('joints', 200 * MS, 'j200') == []
    assert pairer.stats.unpaired == 1 and pairer.stats.unpaired_by_stream['joints'] == 1
    assert pairer.add('cam', 201 * MS, 'c201') == []
    [frame] = pairer.add('joints', 205 * MS, 'j205')
    assert frame.items == {'cam': 'c201', 'joints': 'j200'}


def test_a_stalled_stream_cannot_hold_frames_forever():
    """A camera that stops: waiting frames are given up once max_delay has passed."""
    pairer = _pairer()
    for i in range(5):
        pairer.add('joints', i * 33 * MS, f'j{i}')
        pairer.add('cam', i * 33 * MS, f'c{i}')
    # 'wrist' never published: frames older than 100 ms behind the newest are dropped.
    assert pairer.pending() <= 4
    assert pairer.stats.unpaired_by_stream['wrist'] >= 1
    assert pairer.stats.paired == 0


def test_buffers_stay_bounded():
    pairer = _pairer(history=8, max_delay_ns=10**15)
    for i in range(1000):
        pairer.add('cam', i * MS, i)
        pairer.add('joints', i * MS, i)
    assert pairer.pending() <= 8
    assert all(len(b) <= 8 for b in pairer._buffers.values())
    assert pairer.stats.unpaired == 1000 - pairer.pending()


def test_a_stamp_going_backwards_is_dropped_and_counted():
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=0)
    pairer.add('joints', 100 * MS, 'j')
    [frame] = pairer.add('cam', 100 * MS, 'c')
    assert pairer.add('cam', 50 * MS, 'old') == []
    assert pairer.stats.backwards == 1 and pairer.stats.timeline_resets == 0
    pairer.add('joints', 133 * MS, 'j2')
    [frame] = pairer.add('cam', 133 * MS, 'c2')
    assert frame.items['cam'] == 'c2'


def test_a_clock_that_restarts_is_followed_after_a_few_messages():
    """Bag replay loops / sim resets: stamps restart from zero and stay there."""
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=0, resync_after=3)
    for t in (1000, 1033, 1066):
        pairer.add('joints', t * MS, t)
        pairer.add('cam', t * MS, t)
    out = []
    for t in (0, 33, 66, 99):
        pairer.add('joints', t * MS, t)
        out += pairer.add('cam', t * MS, t)
    assert pairer.stats.timeline_resets >= 1
    assert [f.items['cam'] for f in out][-2:] == [66, 99]


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match='reference stream'):
        StampPairer(['a'], 'b', slop_ns=0)
    with pytest.raises(ValueError, match='unique'):
        StampPairer(['a', 'a'], 'a', slop_ns=0)
    with pytest.raises(ValueError, match='unknown stream'):
        StampPairer(['a'], 'a', slop_ns=0).add('x', 0, None)


def test_joint_states_are_blended_to_the_frame_stamp_when_they_bracket_it():
    """A rollout bag: one joint state per control step, ~20 ms away from the camera frame."""
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=10 * MS, interpolate=['joints'],
                         max_gap_ns=100 * MS)
    pairer.add('joints', 80 * MS, 'j80')
    assert pairer.add('cam', 100 * MS, 'c100') == []        # waits for a state after it
    [frame] = pairer.add('joints', 130 * MS, 'j130')
    assert frame.items['joints'] == Blend('j80', 'j130', pytest.approx(0.4))
    assert frame.stamps_ns['joints'] == 80 * MS and pairer.stats.interpolated == 1
    # Neither state is within the 10 ms slop: nearest-only pairing would have lost the frame.
    assert pairer.stats.unpaired == 0


def test_states_too_far_apart_are_not_blended_and_a_near_enough_one_is_used():
    """Nearest joint state within max(slop, max_gap / 2): 25 ms here."""
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=10 * MS, interpolate=['joints'],
                         max_gap_ns=50 * MS)
    pairer.add('joints', 0, 'j0')
    pairer.add('cam', 78 * MS, 'c78')
    [frame] = pairer.add('joints', 100 * MS, 'j100')       # gap 100 ms > 50 ms: no blend
    assert frame.items['joints'] == 'j100'                 # 22 ms away: close enough
    pairer.add('cam', 160 * MS, 'c160')
    assert pairer.add('joints', 300 * MS, 'j300') == []    # nearest is 60 ms away
    assert pairer.stats.unpaired_by_stream['joints'] == 1
    # An exact stamp is used as is, never blended with itself.
    pairer.add('cam', 300 * MS, 'c300')
    assert pairer.stats.paired == 2


def test_a_fresh_joint_state_is_used_without_waiting_for_the_next():
    """A 200 Hz arm: the state 3 ms before the frame is as good as an interpolated one."""
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=20 * MS, interpolate=['joints'],
                         max_gap_ns=100 * MS, fresh_ns=5 * MS)
    pairer.add('joints', 97 * MS, 'j97')
    [frame] = pairer.add('cam', 100 * MS, 'c100')
    assert frame.items['joints'] == 'j97'
    pairer.add('joints', 150 * MS, 'j150')
    assert pairer.add('cam', 160 * MS, 'c160') == []      # 10 ms old: wait and interpolate
    [frame] = pairer.add('joints', 170 * MS, 'j170')
    assert frame.items['joints'] == Blend('j150', 'j170', pytest.approx(0.5))


def test_cameras_are_never_blended():
    pairer = StampPairer(['cam', 'wrist'], 'cam', slop_ns=5 * MS, max_gap_ns=100 * MS)
    pairer.add('wrist', 80 * MS, 'w80')
    pairer.add('cam', 100 * MS, 'c100')
    assert pairer.add('wrist', 130 * MS, 'w130') == []
    assert pairer.stats.unpaired_by_stream['wrist'] == 1


def test_a_frame_is_decided_after_max_delay_even_if_nothing_else_arrives():
    """The last frame of a replayed bag: no later joint state will ever come."""
    now = [0]  # monotonic ns, moved by hand
    pairer = StampPairer(['cam', 'joints'], 'cam', slop_ns=25 * MS, interpolate=['joints'],
                         max_gap_ns=100 * MS, max_delay_ns=200 * MS, clock=lambda: now[0])
    pairer.add('joints', 980 * MS, 'j980')
    assert pairer.add('cam', 1000 * MS, 'c1000') == []
    now[0] += 150 * MS
    assert pairer.flush_expired() == []
    now[0] += 100 * MS
    [frame] = pairer.flush_expired()
    assert frame.items == {'cam': 'c1000', 'joints': 'j980'} and pairer.pending() == 0


def test_every_reference_frame_is_accounted_for():
    """Random arrival order, gaps, resets and a stamp going back: the identity always holds."""
    rng = np.random.default_rng(0)
    now = [0]  # monotonic ns: each message's arrival time
    pairer = StampPairer(['cam', 'wrist', 'joints'], 'cam', slop_ns=12 * MS,
                         interpolate=['joints'], max_gap_ns=60 * MS, max_delay_ns=150 * MS,
                         history={'cam': 4, 'joints': 32}, clock=lambda: now[0])
    added = paired = 0
    events = []
    for k in range(400):
        t = k * 33 * MS
        events += [(t + int(rng.integers(0, 45)) * MS, 'cam', t + int(rng.integers(-2, 3)) * MS)]
        if rng.random() > 0.1:
            events += [(t + int(rng.integers(0, 80)) * MS, 'wrist', t)]
        for j in range(0, 33, 7 if k % 50 < 40 else 33):   # joint stream thins out at times
            events += [(t + j * MS + int(rng.integers(0, 9)) * MS, 'joints', t + j * MS)]
    events.sort(key=lambda e: e[0])
    for i, (arrival, stream, stamp) in enumerate(events):
        now[0] = arrival
        if i == len(events) // 2:
            pairer.clear()
        added += stream == 'cam'
        paired += len(pairer.add(stream, stamp, stream))
        paired += len(pairer.flush_expired())
    stats = pairer.stats
    assert stats.paired == paired and stats.unpaired > 0 and stats.interpolated > 0
    assert stats.backwards_by_stream['cam'] > 0 and stats.discarded > 0
    assert added == (stats.paired + stats.unpaired + stats.backwards_by_stream['cam']
                     + stats.discarded + pairer.pending())


def test_header_stamp_is_read_from_serialized_messages():
    store = bag_io.typestore()
    stamp = 1_700_000_123 * 10**9 + 456_789
    image = bag_io.image_message(np.zeros((4, 4, 3), np.uint8), stamp, 'cam')
    joints = bag_io.joint_state_message(['a', 'b'], np.ones(2, np.float32), stamp)
    for message, msgtype in ((image, bag_io.IMAGE_TYPE), (joints, bag_io.JOINT_STATE_TYPE)):
        for little_endian in (True, False):
            data = bytes(store.serialize_cdr(message, msgtype, little_endian=little_endian))
            assert header_stamp_ns(data) == stamp
    with pytest.raises(ValueError, match='not a CDR'):
        header_stamp_ns(b'\x00\x01\x00')
    with pytest.raises(ValueError, match='not a CDR'):
        header_stamp_ns(b'{"json": "not cdr"}')
