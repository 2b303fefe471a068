"""Rollout labels: validation, the sidecar file, and the progress curve they imply."""

import json
import threading

import numpy as np
import pytest

from sarm2_common.rollout_labels import (check_label, label_path, LabelError, load_label,
                                         progress_targets, read_label_file, reward_targets,
                                         RolloutLabel, save_label, Segment)

TIMES = np.arange(11, dtype=np.float64)        # 11 frames, 1 s apart, duration 10 s


def label(**overrides) -> RolloutLabel:
    values = {'episode_id': 'ep1', 'success': False, 'final_progress': 0.5, 'duration': 10.0}
    values.update(overrides)
    return RolloutLabel(**values)


def test_no_segments_is_a_straight_line_to_the_final_progress():
    np.testing.assert_allclose(progress_targets(label(), TIMES), 0.05 * TIMES)


def test_segment_slopes_follow_the_anchor_rules():
    # fast 0-2 (2s), adjust 2-4 (0), mistake 4-5 (-s), unmarked 5-10 (slow, s):
    # 2*2 + 0*2 - 1*1 + 1*5 = 8 s-units; final 0.8 -> s = 0.1 per second.
    segments = (Segment(0.0, 2.0, 'progress_fast'), Segment(2.0, 4.0, 'adjust'),
                Segment(4.0, 5.0, 'mistake'))
    progress = progress_targets(label(final_progress=0.8, segments=segments), TIMES)
    expected = [0.0, 0.2, 0.4, 0.4, 0.4, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    np.testing.assert_allclose(progress, expected, atol=1e-12)
    np.testing.assert_allclose(reward_targets(progress), np.diff(expected, prepend=0.0),
                               atol=1e-12)


def test_catastrophe_reaches_the_final_progress_there_then_zero():
    progress = progress_targets(label(final_progress=0.5, catastrophic_time=5.0), TIMES)
    np.testing.assert_allclose(progress, [0.0, 0.1, 0.2, 0.3, 0.4, 0, 0, 0, 0, 0, 0],
                               atol=1e-12)


def test_progress_is_clipped_into_unit_interval():
    # mistake 0-1 (-s), fast 1-10 (2s): 17 s-units; final 1 -> s = 1/17; the first second
    # goes below zero and is clipped (the curve itself is integrated unclipped, as the anchor).
    segments = (Segment(0.0, 1.0, 'mistake'), Segment(1.0, 10.0, 'progress_fast'))
    progress = progress_targets(label(final_progress=1.0, segments=segments), TIMES)
    assert progress[1] == 0.0
    assert progress[2] == pytest.approx(1 / 17)
    assert progress[-1] == pytest.approx(1.0)
    assert np.all((progress >= 0) & (progress <= 1))


def test_only_flat_segments_still_end_at_the_final_progress():
    progress = progress_targets(label(segments=(Segment(0.0, 10.0, 'adjust'),)), TIMES)
    assert progress[-1] == pytest.approx(0.5) and progress[0] == 0.0


@pytest.mark.parametrize('overrides, field', [
    ({'final_progress': 1.5}, 'final_progress'),
    ({'final_progress': -0.1}, 'final_progress'),
    ({'final_progress': float('nan')}, 'final_progress'),
    ({'segments': (Segment(0, 3, 'progress_fast'), Segment(2, 4, 'adjust'))}, 'segments[1]'),
    ({'segments': (Segment(0, 3, 'sideways'),)}, 'segments[0].kind'),
    ({'segments': (Segment(3, 3, 'adjust'),)}, 'segments[0]'),
    ({'segments': (Segment(8, 12, 'adjust'),)}, 'segments[0]'),
    ({'catastrophic_time': 11.0}, 'catastrophic_time'),
    ({'catastrophic_time': 3.0, 'success': True}, 'catastrophic_time'),
    ({'episode_id': ''}, 'episode_id'),
    ({'success': 'yes'}, 'success'),
    ({'labeller_kind': 'oracle'}, 'labeller.kind'),
    ({'segments': (Segment(0, 6, 'mistake'),)}, 'segments'),
])
def test_bad_labels_name_the_field(overrides, field):
    with pytest.raises(LabelError) as error:
        label(**overrides)
    assert error.value.field == field


def test_sidecar_round_trip_beside_the_bag(tmp_path):
    bag = tmp_path / 'rollouts' / 'abc123'
    bag.mkdir(parents=True)
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}\n')
    original = label(segments=(Segment(1.0, 2.5, 'mistake'),), task='push-v3',
                     labeller='alice')
    path = save_label(bag, original)
    assert path == label_path(bag) == tmp_path / 'rollouts' / 'abc123.label.json'
    assert sorted(p.name for p in bag.iterdir()) == ['metadata.yaml']   # bag untouched
    assert load_label(bag) == original
    assert json.loads(path.read_text())['format'] == 'sarm2_rollout_label'


def test_stale_and_foreign_labels_are_told_apart(tmp_path):
    bag = tmp_path / 'ep'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('one\n')
    assert check_label(bag).status == 'unlabelled'
    from sarm2_common.rollout_labels import bag_digest

    save_label(bag, label(bag_digest=bag_digest(bag)))
    assert check_label(bag, 'ep1').status == 'labelled'
    assert check_label(bag, 'other').status == 'invalid'
    (bag / 'metadata.yaml').write_text('two\n')
    assert check_label(bag, 'ep1').status == 'stale'
    label_path(bag).write_text('{"episode_id": ')
    result = check_label(bag)
    assert result.status == 'invalid' and 'ep.label.json' in result.problem


def test_unknown_fields_and_huge_files_are_refused(tmp_path):
    path = tmp_path / 'x.label.json'
    path.write_text(json.dumps(dict(label().to_json(), surprise=1)))
    with pytest.raises(LabelError, match='surprise'):
        read_label_file(path)
    path.write_text(' ' * 2_000_000)
    with pytest.raises(LabelError, match='at most'):
        read_label_file(path)


def test_concurrent_saves_never_leave_a_corrupt_file(tmp_path):
    bag = tmp_path / 'ep'
    bag.mkdir()
    labels = [label(final_progress=i / 20, segments=tuple(
        Segment(j * 0.1, j * 0.1 + 0.05, 'adjust') for j in range(50))) for i in range(20)]

    def writer(item):
        for _ in range(10):
            save_label(bag, item)

    threads = [threading.Thread(target=writer, args=(item,)) for item in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert load_label(bag) in labels
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []
