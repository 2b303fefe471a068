"""Approximate-time pairing: closest partner within slop, no waiting for same-stamp publishers."""

import pytest

from sarm2_reward.stamp_pairing import StampPairer

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
