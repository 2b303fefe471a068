"""The demonstration recorder: bag content read back by rosbags and mcap, resume, refusals, CLI."""

import collections
import json

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from sarm2_common import bag_io
from sarm2_common.bag_dataset import read_episodes
from sarm2_common.episode import UNLABELLED
from sarm2_common.vocabulary import primitive_id
from sarm2_sim import demonstrations
from sarm2_common.catalogue import load_catalogue
from sarm2_sim.demonstrations import (episode_path, episode_seed, main,
                                      record_demonstrations, RecordingRefusedError)

pytestmark = pytest.mark.slow  # records ~15 episodes with rendering: ~30-60 s on 2 cores

TASKS = ('pick-place-v3', 'drawer-close-v3')
EPISODES = 3
SETTINGS = {'seed': 3, 'failure_fraction': 0.5, 'image_size': 32, 'cameras': ('corner', 'topview'),
                'progress': False, 'max_steps': 120}


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    out = tmp_path_factory.mktemp('demos')
    paths = record_demonstrations(out, list(TASKS), EPISODES, **SETTINGS)
    return out, paths


def test_one_finished_bag_per_episode(recording):
    out, paths = recording
    assert paths == [episode_path(out, t, i) for t in TASKS for i in range(EPISODES)]
    assert all(bag_io.is_finished_bag(p) for p in paths)
    assert json.loads((out / 'recording.json').read_text())['cameras'] == ['corner', 'topview']


def test_rosbags_and_mcap_agree_on_types_and_counts(recording):
    _, paths = recording
    for path in paths:
        with Reader(path) as reader:
            rosbags_types = {c.topic: c.msgtype for c in reader.connections}
            rosbags_counts = {t: i.msgcount for t, i in reader.topics.items()}
        frames = rosbags_counts['/joint_states']
        assert frames > 5
        assert rosbags_counts == {'/camera/corner/image_raw': frames,
                                  '/camera/topview/image_raw': frames,
                                  '/joint_states': frames, '/sim/action': frames,
                                  '/sim/ground_truth': frames, '/episode/metadata': 2}
        assert rosbags_types['/camera/corner/image_raw'] == 'sensor_msgs/msg/Image'
        assert rosbags_types['/sim/ground_truth'] == 'sarm2_msgs/msg/SimGroundTruth'
        assert rosbags_types['/episode/metadata'] == 'sarm2_msgs/msg/EpisodeMetadata'
        counts, types, metadata = collections.Counter(), {}, []
        with open(next(path.glob('*.mcap')), 'rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            for schema, channel, _, decoded in reader.iter_decoded_messages():
                counts[channel.topic] += 1
                types[channel.topic] = schema.name
                if channel.topic == '/episode/metadata':
                    metadata.append(decoded)
                elif channel.topic == '/camera/corner/image_raw':
                    assert (decoded.height, decoded.width, decoded.encoding) == (32, 32, 'rgb8')
        assert dict(counts) == rosbags_counts and types == rosbags_types
        assert [m.kind for m in metadata] == ['start', 'end']
        assert metadata[1].reason and metadata[1].steps == frames - 1


def test_episodes_are_labelled_and_include_failures(recording):
    out, _ = recording
    catalogue = load_catalogue()
    episodes = read_episodes(out)
    assert len(episodes) == len(TASKS) * EPISODES
    for episode in episodes:
        spec = catalogue[episode.task]
        assert episode.instruction == spec.instruction
        assert episode.images['corner'].shape[1:] == (32, 32, 3)
        assert episode.actions.shape == (len(episode), 4)
        assert episode.joint_positions.shape == (len(episode), 9)
        assert np.all(episode.primitive_ids != UNLABELLED)
        allowed = {primitive_id(p) for p in spec.primitives}
        assert set(episode.primitive_ids.tolist()) <= allowed
        assert episode.metadata['complete']
        if episode.success:
            assert episode.primitive_ids[0] == primitive_id(spec.primitives[0])
            assert episode.primitive_ids[-1] == primitive_id(spec.primitives[-1])
    outcomes = {(e.success, e.metadata['mode']) for e in episodes}
    assert any(success for success, _ in outcomes)
    assert any(not success for success, _ in outcomes)
    assert {mode for _, mode in outcomes} - {'expert'}, 'some failure modes were drawn'


def test_pick_place_success_ends_released(recording):
    out, _ = recording
    for episode in read_episodes(out / 'pick-place-v3'):
        if episode.success:
            # the last command opens the gripper, and the fingers are open
            assert episode.actions[-1, 3] < 0
            assert episode.metadata['reason'] == 'success'


def test_resume_skips_finished_bags_and_is_deterministic(recording, tmp_path):
    out, paths = recording
    stamps = [p.stat().st_mtime_ns for p in paths]
    again = record_demonstrations(out, list(TASKS), EPISODES, **SETTINGS)
    assert again == paths and [p.stat().st_mtime_ns for p in paths] == stamps
    # the same episode recorded elsewhere holds the same data
    other = record_demonstrations(tmp_path / 'other', [TASKS[0]], 1, **SETTINGS)
    first, copy = read_episodes(paths[0])[0], read_episodes(other[0])[0]
    np.testing.assert_array_equal(first.images['corner'], copy.images['corner'])
    np.testing.assert_array_equal(first.actions, copy.actions)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / 'demos'
    record_demonstrations(out, ['reach-v3'], 1, **SETTINGS)
    with pytest.raises(RecordingRefusedError, match='other settings'):
        record_demonstrations(out, ['reach-v3'], 1, **{**SETTINGS, 'seed': 4})
    unfinished = episode_path(out, 'reach-v3', 1)
    unfinished.mkdir(parents=True)
    (unfinished / 'partial.mcap').write_bytes(b'')
    with pytest.raises(RecordingRefusedError, match='not a finished episode'):
        record_demonstrations(out, ['reach-v3'], 2, **SETTINGS)
    paths = record_demonstrations(out, ['reach-v3'], 2, overwrite=True, **SETTINGS)
    assert all(bag_io.is_finished_bag(p) for p in paths)
    # overwriting with other settings re-records finished bags instead of mixing them in
    record_demonstrations(out, ['reach-v3'], 1, overwrite=True, **{**SETTINGS, 'seed': 4})
    assert read_episodes(paths[0])[0].metadata['seed'] == episode_seed(4, 'reach-v3', 0)
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(RecordingRefusedError, match='not a demonstration recording'):
        record_demonstrations(foreign, ['reach-v3'], 1, **SETTINGS)


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(['--out', str(tmp_path / 'a'), '--tasks', 'no-such-task-v3']) == 1
    assert 'unknown task' in capsys.readouterr().err
    assert main(['--out', str(tmp_path / 'a'), '--tasks', 'reach-v3', '--image-size', '3']) == 1
    assert 'impossible' in capsys.readouterr().err
    assert main(['--out', str(tmp_path / 'a'), '--tasks', 'reach-v3', '--cameras', 'x']) == 1
    assert not (tmp_path / 'a').exists()
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0 and 'resumes' in capsys.readouterr().out


def test_cli_records(tmp_path, capsys):
    out = tmp_path / 'cli'
    code = main(['--out', str(out), '--tasks', 'reach-v3', '--episodes', '1',
                 '--image-size', '24', '--no-progress', '--failure-fraction', '0'])
    assert code == 0 and '1 episode bags' in capsys.readouterr().out
    episode = read_episodes(out)[0]
    assert episode.success and episode.metadata['mode'] == 'expert'
    assert demonstrations.MANIFEST_FILE in {p.name for p in out.iterdir()}


def test_varied_timing_spreads_episode_lengths_and_keeps_fixed_recordings(tmp_path):
    settings = {'failure_fraction': 0.0, 'image_size': 16, 'progress': False}
    fixed = read_episodes(record_demonstrations(tmp_path / 'fixed', ['drawer-open-v3'], 4,
                                                **settings))
    varied = read_episodes(record_demonstrations(tmp_path / 'varied', ['drawer-open-v3'], 4,
                                                 timing='varied', **settings))
    assert all(e.success for e in fixed + varied)
    # Same scenes, other paces: the spread of durations grows well beyond the scenes' own.
    assert [e.metadata['seed'] for e in fixed] == [e.metadata['seed'] for e in varied]
    fixed_lengths = np.array([len(e) for e in fixed])
    varied_lengths = np.array([len(e) for e in varied])
    assert np.ptp(varied_lengths) > 2 * np.ptp(fixed_lengths)
    assert all(0.45 <= e.metadata['timing']['speed'] <= 1.0 for e in varied)
    assert 'timing' not in fixed[0].metadata
    # A fixed-timing manifest looks as it did before the option existed (old caches resume).
    assert 'timing' not in json.loads((tmp_path / 'fixed' / 'recording.json').read_text())
    assert json.loads((tmp_path / 'varied' / 'recording.json').read_text())['timing'] == 'varied'
