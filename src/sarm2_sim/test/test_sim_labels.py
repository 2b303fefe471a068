"""label_rollouts_from_sim: labels from recorded simulator truth; bad input writes nothing."""

import json

import numpy as np
import pytest
from sarm2_common import bag_io, topics
from sarm2_common.rollout_labels import label_path, load_label, progress_targets
from sarm2_sim.sim_labels import FAILURE_PROGRESS_CAP, main

PERIOD_NS = 50_000_000                 # 20 Hz, as the simulated arm
TASK = 'button-press-topdown-v3'


def write_rollout(path, shaped_reward, success_at=None, truth_id=None, truth=True,
                  truth_lead_ns=0):
    """Write a rollout bag: a 16 px frame per shaped-reward value, ground truth on each.

    ``truth_lead_ns``: the truth is stamped that much before its frame.
    """
    with bag_io.BagWriter(path) as bag:
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            0, bag_io.METADATA_START, path.name, TASK, 'press the button', 3), 0)
        for k, reward in enumerate(shaped_reward):
            stamp = k * PERIOD_NS
            bag.write(topics.image_topic('corner'), bag_io.image_message(
                np.full((16, 16, 3), k, np.uint8), stamp, 'corner'), stamp)
            if truth:
                bag.write(bag_io.GROUND_TRUTH_TOPIC, bag_io.ground_truth_message(
                    stamp - truth_lead_ns, TASK, truth_id or path.name, k,
                    success_at is not None and k >= success_at, 0, 'reach', reward), stamp)
        end = (len(shaped_reward) - 1) * PERIOD_NS
        # The recorder's own verdict says success: the label must follow the simulator instead.
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            end, bag_io.METADATA_END, path.name, TASK, 'press the button', 3, success=True,
            reason='success', steps=len(shaped_reward) - 1), end)
    return path


# 4 s of a failed rollout: 2 s rising to 6/10, 1 s hovering there, 1 s backing off to 3/10.
HOVER = np.concatenate([[0.0], np.linspace(0.5, 6.0, 40), np.full(20, 6.0),
                        np.linspace(6.0, 3.0, 20)])


def test_failed_rollout_progress_and_segments_come_from_the_shaped_reward(tmp_path, capsys):
    failed = write_rollout(tmp_path / 'failed', HOVER)
    # A success whose shaped reward stalls in its last block: that block still leads to the goal.
    solved = write_rollout(tmp_path / 'solved', np.r_[np.linspace(0.0, 9.0, 21), np.full(10, 9.0)],
                           success_at=30)
    assert main([str(tmp_path)]) == 0
    assert '2 rollouts labelled (1 successes)' in capsys.readouterr().out
    label = load_label(failed)
    # The recorder said success; the simulator never did.
    assert not label.success and label.episode_id == 'failed' and label.task == TASK
    assert label.final_progress == pytest.approx(0.3)
    assert label.duration == pytest.approx(80 * PERIOD_NS / 1e9)
    assert label.labeller_kind == 'simulator' and label.labeller == 'label_rollouts_from_sim'
    assert [(s.start, s.end, s.kind) for s in label.segments] == [
        (2.0, 3.0, 'adjust'), (3.0, 4.0, 'mistake')]
    # Up for 2 s, flat while hovering, down 1 s: 2s - 1s = 0.3, so s = 0.3 per second.
    curve = progress_targets(label, np.arange(81) * PERIOD_NS / 1e9)
    np.testing.assert_allclose(curve[[20, 40, 60, 80]], [0.3, 0.6, 0.6, 0.3], atol=1e-9)
    good = load_label(solved)
    assert good.success and good.final_progress == 1.0 and good.segments == ()


def test_a_success_gets_segments_only_when_asked(tmp_path):
    # Window-close-like: the shaped reward stalls during the whole approach, then rises to the
    # goal. By default a success is a straight line (the stall is the reward's, not the arm's).
    stalled = np.r_[np.full(41, 1.0), np.linspace(1.0, 10.0, 21)]
    solved = write_rollout(tmp_path / 'solved', stalled, success_at=61)
    assert main([str(solved)]) == 0
    assert load_label(solved).segments == ()
    assert main([str(solved), '--segments', 'reward']) == 0
    assert [s.kind for s in load_label(solved).segments] == ['adjust']
    # A failure with the same stall keeps its segments by default.
    failed = write_rollout(tmp_path / 'failed',
                           np.r_[np.linspace(0.0, 5.0, 21), np.full(40, 5.0)])
    assert main([str(failed)]) == 0
    assert [s.kind for s in load_label(failed).segments] == ['adjust']


def test_truth_stamped_before_the_first_frame_gives_segments_inside_the_bag(tmp_path):
    # The simulator steps (and stamps its truth) just before the policy's first observation.
    # It backs off from the start: the first segment begins at the first frame.
    bag = write_rollout(tmp_path / 'early', np.linspace(6.0, 2.0, 41), truth_lead_ns=400_000)
    assert main([str(tmp_path)]) == 0
    label = load_label(bag)
    assert label.segments[0].start == 0.0
    assert all(0.0 <= s.start < s.end <= label.duration for s in label.segments)


def test_a_failure_near_the_goal_is_capped_below_success(tmp_path):
    bag = write_rollout(tmp_path / 'close', np.linspace(0.0, 9.9, 21))
    assert main([str(bag), '--segments', 'none']) == 0
    assert load_label(bag).final_progress == FAILURE_PROGRESS_CAP
    assert load_label(bag).segments == ()


def test_failures_are_put_on_the_demonstrations_progress_scale(tmp_path, capsys):
    # Demonstrations whose shaped reward sits at 1/10 for 3/4 of the time, then rises to 10/10:
    # reward 1/10 is reached anywhere in the first 3/4 of a demonstration (mean progress ~0.37).
    for i in range(3):
        write_rollout(tmp_path / 'demos' / f'demo{i}',
                      np.r_[np.full(60, 1.0), np.linspace(1.0, 10.0, 21)], success_at=80)
    failed = write_rollout(tmp_path / 'rollouts' / 'failed', np.r_[0.0, np.full(40, 1.0)])
    assert main([str(tmp_path / 'rollouts'), '--demos', str(tmp_path / 'demos')]) == 0
    assert f'demonstration scale for {TASK}' in capsys.readouterr().out
    label = load_label(failed)
    assert 0.3 < label.final_progress < 0.45, label.final_progress
    assert label.labeller == 'label_rollouts_from_sim (demo scale)'
    assert main([str(failed)]) == 0             # without demonstrations: reward / 10
    assert load_label(failed).final_progress == pytest.approx(0.1)


def test_real_demonstrations_are_labelled_by_their_outcome(tmp_path):
    from sarm2_common.bag_dataset import read_episodes
    from sarm2_sim.demonstrations import record_demonstrations

    bags = record_demonstrations(tmp_path / 'demos', ['reach-v3'], 3, failure_fraction=0.5,
                                 image_size=16, progress=False, max_steps=60)
    assert main([str(tmp_path / 'demos')]) == 0
    episodes = read_episodes(bags)
    assert {e.success for e in episodes} == {True, False}     # this seed gives both
    for episode in episodes:
        label = load_label(episode.metadata['bag_path'])
        assert label.success == episode.success
        assert (label.final_progress == 1.0) == episode.success
        assert label.episode_id == episode.episode_id


@pytest.mark.parametrize('make_input, field', [
    (lambda d: [str(d / 'missing')], 'bag'),
    (lambda d: [str(write_rollout(d / 'foreign', HOVER, truth_id='other'))],
     '/sim/ground_truth.episode_id'),
    (lambda d: [str(write_rollout(d / 'blind', HOVER, truth=False))], '/sim/ground_truth'),
    (lambda d: ['--labels', _labels(d, bag=str(d / 'gone'))], 'bag'),
    (lambda d: ['--labels', _labels(d, episode_id='someone-else')], 'episode_id'),
    (lambda d: ['--labels', _labels(d, final_progress=1.5)], 'final_progress'),
    (lambda d: ['--labels', _labels(d, segments=[
        {'start': 0.0, 'end': 1.0, 'kind': 'adjust'},
        {'start': 0.5, 'end': 1.5, 'kind': 'mistake'}])], 'segments[1]'),
    (lambda d: ['--labels', _labels(d, segments=[
        {'start': 1.0, 'end': 2.5, 'kind': 'adjust'}])], 'segments[0]'),
    (lambda d: ['--labels', _labels(d, catastrophic_time=2.5)], 'catastrophic_time'),
    (lambda d: ['--labels', _labels(d, duration=9.0)], 'duration'),
])
def test_bad_input_names_file_and_field_and_writes_nothing(tmp_path, capsys, make_input, field):
    good = write_rollout(tmp_path / 'good', HOVER)
    arguments = make_input(tmp_path)
    assert main([str(good)] + arguments) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1] == 'label_rollouts_from_sim: no label written'
    problem = errors[0]
    named = arguments[-1] if arguments[0] == '--labels' else arguments[0]
    assert problem.startswith(f'label_rollouts_from_sim: error: {named}')
    assert f': {field}: ' in problem, problem
    assert not label_path(good).exists()
    assert not list(tmp_path.rglob('*.label.json'))


def _labels(directory, bag=None, **fields):
    """Write a labels file: one line for the 2 s rollout 'person' (or ``bag``), ``fields``."""
    person = directory / 'person'
    if not person.exists():
        write_rollout(person, HOVER[:41])        # 2 s long
    values = {'bag': str(bag or person), 'episode_id': 'person', 'success': False,
              'final_progress': 0.4, 'duration': 2.0, **fields}
    path = directory / 'labels.jsonl'
    path.write_text(json.dumps(values) + '\n')
    return str(path)


def test_imported_labels_are_checked_then_written(tmp_path):
    path = _labels(tmp_path, segments=[{'start': 0.5, 'end': 1.0, 'kind': 'progress_fast'}])
    assert main(['--labels', path]) == 0
    label = load_label(tmp_path / 'person')
    assert label.final_progress == 0.4 and label.segments[0].kind == 'progress_fast'
    assert label.bag_digest       # tied to the recording it was checked against
