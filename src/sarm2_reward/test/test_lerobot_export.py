"""export_lerobot: bags -> LeRobot v3.0 dataset, read back by our reader and by pyarrow + av."""

import json
import shutil

import av
from episode_bags import frame_error, write_episode_bag, write_episode_bags
import numpy as np
import pyarrow.parquet as pq
import pytest
from sarm2_common import bag_io, topics
from sarm2_common.bag_dataset import read_episodes
from sarm2_common.rollout_labels import RolloutLabel, save_label, Segment
from sarm2_common.vocabulary import primitive_id
from sarm2_reward.checkpoint import save_checkpoint
from sarm2_reward.inference import predict_episode
from sarm2_reward.labeling import dense_rewards
from sarm2_reward.lerobot_dataset import read_lerobot_dataset
from sarm2_reward.lerobot_export import (ExportConfig, export_lerobot, grid_rows,
                                         live_rewards, main, read_bag_episode)
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.training_data import EpisodeSampler, estimate_stage_priors, TargetConfig
from synthetic_episodes import make_episode, make_episodes

MS = 1_000_000
LOSSLESS = ['--crf', '0', '--pix-fmt', 'yuv444p']


def _decode_all(path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of an mp4 and its time in seconds, straight from PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format='rgb24'))
                   for f in container.decode(stream)]
    decoded.sort(key=lambda item: item[0])
    return np.array([t for t, _ in decoded]), np.stack([f for _, f in decoded])


def _episodes_meta(root) -> list[dict]:
    rows = [r for p in sorted((root / 'meta' / 'episodes').rglob('*.parquet'))
            for r in pq.read_table(p).to_pylist()]
    return sorted(rows, key=lambda r: r['episode_index'])


def _data(root) -> dict:
    tables = [pq.read_table(p).to_pydict() for p in sorted((root / 'data').rglob('*.parquet'))]
    return {k: sum((t[k] for t in tables), []) for k in tables[0]}


# ---- the time base -------------------------------------------------------------------------

def test_grid_keeps_regular_frames_and_repeats_a_skipped_one_causally():
    regular = np.arange(5) * 50 * MS
    frames, times = grid_rows(regular, 20)
    assert frames.tolist() == [0, 1, 2, 3, 4] and times.tolist() == regular.tolist()
    # frame at 150 ms missing, jitter on the others, two frames in the slot of 250 ms
    stamps = np.array([0, 52, 98, 205, 240, 262, 301]) * MS
    frames, times = grid_rows(stamps, 20)
    assert frames.tolist() == [0, 1, 2, 2, 3, 5, 6]  # slot 3 repeats frame 2; frame 4 lost
    assert times[3] == 150 * MS                       # a repeated frame's row is at grid time
    assert np.all(times >= stamps[frames])            # a row never shows a later frame


def test_live_rewards_are_causal_and_keep_the_return():
    reward_type = bag_io.typestore().types[bag_io.STAGE_REWARD_TYPE]
    messages = [(stamp * MS, reward_type(
        header=bag_io.header(stamp * MS), task='t', instruction='i', episode_id='e',
        frame_index=k, primitive_id=k, primitive_name='', primitive_confidence=1.0, group_id=0,
        group_name='', primitive_probabilities=np.zeros(0, np.float32),
        group_probabilities=np.zeros(0, np.float32), progress=k / 10, value=0.0,
        reward=0.1 * (k + 1), success_probability=k / 20, model_id='m', inference_time=0.0))
        for k, stamp in enumerate((10, 60, 110, 160))]
    rows = np.array([0, 50, 100, 150, 200]) * MS
    columns = live_rewards(messages, rows)
    assert np.isnan(columns['progress'][0]) and columns['primitive_id'][0] == -1
    # row at 100 ms sees the messages of 10 and 60 ms, not the one of 110 ms
    assert columns['progress'][1:].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert columns['primitive_id'][1:].tolist() == [0, 1, 2, 3]
    assert columns['reward'][1:].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert np.nansum(columns['reward']) == pytest.approx(1.0)


# ---- demonstrations: the round trip ----------------------------------------------------------

@pytest.fixture(scope='module')
def demo_bags(tmp_path_factory):
    demonstrations = pytest.importorskip('sarm2_sim.demonstrations')
    bags = tmp_path_factory.mktemp('demos') / 'bags'
    demonstrations.record_demonstrations(bags, ['reach-v3'], 3, failure_fraction=0.4,
                                         image_size=32, cameras=('corner', 'topview'),
                                         progress=False, max_steps=24)
    return bags


# Codec loss on these 32 px frames: h264 at crf 0 in yuv444p only rounds the colour conversion;
# the default (crf 18, yuv420p) halves the colour resolution, which smears small objects.
@pytest.mark.parametrize('options, worst, mean', [(LOSSLESS, 2, 0.5), ([], 255, 8.0)])
def test_recorded_demos_round_trip(demo_bags, tmp_path, options, worst, mean):
    out = tmp_path / 'ds'
    assert main([str(demo_bags), '--out', str(out), '--no-progress', *options]) == 0
    originals = read_episodes(demo_bags)
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['total_episodes'] == len(originals)
    assert info['total_frames'] == sum(len(e) for e in originals)

    # our reader
    exported = read_lerobot_dataset(out)
    for original, episode in zip(originals, exported):
        assert (episode.task, episode.instruction, episode.success) == \
            (original.task, original.instruction, original.success)
        np.testing.assert_array_equal(episode.joint_positions, original.joint_positions)
        np.testing.assert_array_equal(episode.actions, original.actions)
        np.testing.assert_array_equal(episode.primitive_ids, original.primitive_ids)
        np.testing.assert_allclose(episode.timestamps, original.timestamps, atol=1e-6)
        for camera in original.cameras:
            difference = np.abs(episode.images[camera].astype(int) - original.images[camera])
            assert difference.max() <= worst and difference.mean() < mean
        assert np.all(np.isnan(episode.metadata['rewards']['progress']))  # no live rewards

    # an independent reader: pyarrow and PyAV only
    data, meta = _data(out), _episodes_meta(out)
    assert data['index'] == list(range(info['total_frames']))
    assert [m['dataset_from_index'] for m in meta] == \
        [0] + [m['dataset_to_index'] for m in meta[:-1]]
    for camera in ('corner', 'topview'):
        key = f'observation.images.{camera}'
        times, frames = _decode_all(out / info['video_path'].format(
            video_key=key, chunk_index=0, file_index=0))
        assert len(frames) == info['total_frames']
        np.testing.assert_allclose(times, np.arange(len(frames)) / info['fps'], atol=1e-6)
        for m, original in zip(meta, originals):
            first = round(m[f'videos/{key}/from_timestamp'] * info['fps'])
            clip = frames[first:first + m['length']]
            assert frame_error(clip, original.images[camera]) < mean
    for m, original in zip(meta, originals):
        rows = slice(m['dataset_from_index'], m['dataset_to_index'])
        assert set(data['episode_index'][rows]) == {m['episode_index']}
        np.testing.assert_array_equal(np.array(data['action'][rows]), original.actions)
        np.testing.assert_array_equal(np.array(data['observation.state'][rows]),
                                      original.joint_positions)
        assert m['task_name'] == original.task and m['success'] == original.success
    tasks = pq.read_table(out / 'meta' / 'tasks.parquet').to_pylist()
    assert [t['task'] for t in tasks] == [originals[0].instruction]
    assert not (out / 'sarm_progress.parquet').exists()
    stats = json.loads((out / 'meta' / 'stats.json').read_text())
    assert stats['observation.state']['count'] == [info['total_frames']]
    assert np.array(stats['observation.images.corner']['mean']).shape == (3, 1, 1)


def test_training_sees_the_same_batches_from_bags_and_export(demo_bags, tmp_path):
    """Same targets, states, labels and windows from both; images differ by the codec only."""
    out = tmp_path / 'ds'
    assert main([str(demo_bags), '--out', str(out), '--no-progress', *LOSSLESS]) == 0
    batches = []
    for episodes in (read_episodes(demo_bags), read_lerobot_dataset(out)):
        sampler = EpisodeSampler(
            episodes, ('corner', 'topview'), {'stage_past_frames': 3, 'stage_gap': 2,
                                              'value_past_frames': 3, 'value_gap': 3},
            {e.instruction: np.ones(4, np.float32) for e in episodes},
            estimate_stage_priors(episodes), TargetConfig(), seed=5)
        batches.append(sampler.sample(16))
    bags_batch, export_batch = batches
    for key, value in bags_batch.items():
        if key == 'frames':
            assert frame_error(export_batch[key].numpy(), value.numpy()) < 1.0
        else:
            np.testing.assert_array_equal(export_batch[key].numpy(), value.numpy(), err_msg=key)


# ---- rollouts: jitter, skipped frames, live rewards, labels ---------------------------------

def _rollout_image(k: int) -> np.ndarray:
    image = np.full((32, 32, 3), 40, np.uint8)
    image[:, 3 * k:3 * k + 3] = (250, 200, 20)       # a bar that moves one step per frame
    return image


def write_rollout_bag(path, frames: int = 10, skipped: int = 5):
    """Write a rollout like the policy node's at 10 Hz; frame ``skipped`` never reached it.

    Camera stamps jitter; each control tick k logs the newest frame (if new) at k*100+30 ms and
    its action (value k) 10 ms later; joint states run at 50 Hz (state = its stamp in s); the
    reward node rated every camera frame (progress k/10, reward 0.1).
    """
    jitter = [0, 5, -5, 3, -3, 0, 4, -4, 2, -2]
    stamps = [k * 100 * MS + jitter[k] * MS for k in range(frames)]
    reward_type = bag_io.typestore().types[bag_io.STAGE_REWARD_TYPE]
    with bag_io.BagWriter(path) as bag:
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            0, bag_io.METADATA_START, 'roll-1', 'push-v3', 'push the puck', 3), 0)
        for t in range(0, frames * 100 + 40, 20):
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                ['a', 'b'], np.array([t / 1000, 0.0]), t * MS), t * MS)
        for k in range(frames):
            tick = k * 100 * MS + 30 * MS
            if k != skipped:
                bag.write(topics.image_topic('corner'), bag_io.image_message(
                    _rollout_image(k), stamps[k], 'corner'), tick)
            bag.write(bag_io.ACTION_TOPIC, bag_io.action_message(np.array([k, 0.0, 0.0, 1.0])),
                      tick + 10 * MS)
            name = 'reach' if k < 5 else 'pick_grab'
            bag.write(bag_io.GROUND_TRUTH_TOPIC, bag_io.ground_truth_message(
                stamps[k], 'push-v3', 'roll-1', k, False, primitive_id(name), name, 0.0), tick)
            for episode_id in ('roll-1', 'another-episode'):
                bag.write('/sarm2/stage_reward', reward_type(
                    header=bag_io.header(stamps[k]), task='push-v3', instruction='',
                    episode_id=episode_id, frame_index=k, primitive_id=primitive_id(name),
                    primitive_name=name, primitive_confidence=1.0, group_id=0, group_name='',
                    primitive_probabilities=np.zeros(0, np.float32),
                    group_probabilities=np.zeros(0, np.float32), progress=k / 10,
                    value=k / 10 - 1, reward=0.1 if episode_id == 'roll-1' else 5.0,
                    success_probability=k / 20, model_id='sarm2-test', inference_time=0.01),
                    tick + 20 * MS)
        end = frames * 100 * MS + 40 * MS
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            end, bag_io.METADATA_END, 'roll-1', 'push-v3', 'push the puck', 3, success=True,
            reason='success', steps=frames,
            metadata_json=json.dumps({'source': 'policy_node'})), end)
    return path


def test_rollout_export_is_causal_with_live_rewards_and_label(tmp_path):
    bag = write_rollout_bag(tmp_path / 'rollouts' / 'roll-1')
    label = RolloutLabel(episode_id='roll-1', success=True, final_progress=0.8, duration=0.9,
                         segments=(Segment(0.0, 0.4, 'progress_fast'),), task='push-v3')
    save_label(bag, label)
    out = tmp_path / 'ds'
    assert main([str(tmp_path / 'rollouts'), '--out', str(out), '--no-progress',
                 *LOSSLESS]) == 0
    (episode,) = read_lerobot_dataset(out)
    assert len(episode) == 10 and episode.metadata['fps'] == 10
    # row 5 repeats frame 4 (frame 5 never reached the policy); every other row is its own frame
    for row, frame in enumerate([0, 1, 2, 3, 4, 4, 6, 7, 8, 9]):
        assert frame_error(episode.images['corner'][row:row + 1], _rollout_image(frame)[None]) < 2
    # state: the newest joint state at or before the row's time (never the one 2..18 ms later)
    row_times = np.array([0, 105, 195, 303, 397, 500, 604, 696, 802, 898]) / 1000
    expected = np.floor(row_times * 50) / 50
    np.testing.assert_allclose(episode.joint_positions[:, 0], expected, atol=1e-6)
    assert np.all(episode.joint_positions[:, 0] <= row_times + 1e-9)
    # the repeated row gets the command of its own control tick
    assert episode.actions[:, 0].tolist() == list(range(10))
    rewards = episode.metadata['rewards']
    np.testing.assert_allclose(rewards['progress'], np.arange(10) / 10, atol=1e-6)
    np.testing.assert_allclose(rewards['reward'], np.full(10, 0.1), atol=1e-6)
    np.testing.assert_allclose(rewards['success_probability'], np.arange(10) / 20, atol=1e-6)
    assert episode.primitive_ids.tolist() == [primitive_id('reach')] * 5 + \
        [primitive_id('pick_grab')] * 5
    assert episode.success and episode.task == 'push-v3'
    assert RolloutLabel.from_json(json.loads(episode.metadata['rollout_label'])) == label
    assert episode.metadata['reward_source'] == 'live:sarm2-test'
    (meta,) = _episodes_meta(out)
    assert (meta['repeated_frames'], meta['dropped_frames']) == (1, 0)
    progress = pq.read_table(out / 'sarm_progress.parquet')
    assert progress.column_names == ['index', 'episode_index', 'frame_index', 'progress_sparse',
                                     'progress_dense']
    np.testing.assert_allclose(progress['progress_sparse'].to_numpy(), np.arange(10) / 10,
                               atol=1e-6)
    assert progress.schema.metadata[b'reward_model_path'] == b'live:sarm2-test'


def test_relabel_with_a_checkpoint_labels_the_exported_rows(tmp_path):
    bags = write_episode_bags(tmp_path / 'bags', make_episodes(2, seed=4))
    model = Sarm2Model(Sarm2Config(
        cameras=('corner',), image_size=32, cnn_channels=(4, 8), frame_embed_dim=16,
        d_model=16, n_heads=2, stage_layers=1, value_layers=1, num_experts=4, top_k=2,
        expert_hidden=8))
    checkpoint = save_checkpoint(model, tmp_path / 'reward')
    out = tmp_path / 'ds'
    assert main([*map(str, bags), '--out', str(out), '--relabel-checkpoint', str(checkpoint),
                 '--smoothing', '0.3', '--no-progress']) == 0
    for bag, episode in zip(bags, read_lerobot_dataset(out)):
        rows, fps = read_bag_episode(bag)
        expected = predict_episode(model.eval(), rows.as_episode(fps))
        rewards = episode.metadata['rewards']
        np.testing.assert_allclose(rewards['progress'], expected['progress'], atol=1e-6)
        np.testing.assert_allclose(rewards['reward'], dense_rewards(expected['value'], 0.3),
                                   atol=1e-6)
        assert rewards['primitive_id'].tolist() == \
            expected['primitive_probs'].argmax(axis=1).tolist()
        assert episode.metadata['reward_source'].startswith('relabel:sarm2-')
    assert (out / 'sarm_progress.parquet').is_file()


# ---- bad input, append, overwrite ------------------------------------------------------------

def _bag_without_images(path):
    with bag_io.BagWriter(path) as bag:
        bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
            ['a'], np.zeros(1), 0), 0)
    return path


def _mislabelled(path):
    bag = write_episode_bag(path, make_episode(1, size=16))
    save_label(bag, RolloutLabel(episode_id='some-other-episode', success=False,
                                 final_progress=0.2, duration=1.0))
    return bag


def _truncated(path):
    write_episode_bag(path, make_episode(1, size=16))
    (path / 'metadata.yaml').unlink()
    mcap = next(path.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:-300])
    return path


BAD_INPUTS = {
    'empty directory': (lambda root: (root / 'empty').mkdir() or [root / 'empty'],
                        'empty: no rosbag2 bags'),
    'bag without images': (lambda root: [_bag_without_images(root / 'noimg')],
                           'noimg: no camera images'),
    'mismatched cameras': (lambda root: [
        write_episode_bag(root / 'a', make_episode(1, size=16)),
        write_episode_bag(root / 'b', make_episode(2, size=16, cameras=('wrist',)))],
        "b: cameras ['wrist'] differ from the dataset's ['corner']"),
    'truncated bag': (lambda root: [write_episode_bag(root / 'a', make_episode(1, size=16)),
                                    _truncated(root / 'cut')], 'cut: truncated'),
    'label of another episode': (lambda root: [_mislabelled(root / 'bag')],
                                 'bag.label.json: rollout label is invalid'),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, capsys, case):
    make, message = BAD_INPUTS[case]
    inputs = make(tmp_path)
    out = tmp_path / 'out' / 'ds'
    assert main([*map(str, inputs), '--out', str(out), '--no-progress']) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error, error
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_append_adds_files_refuses_overwrite_and_rolls_back_a_failed_append(tmp_path, capsys):
    first = write_episode_bag(tmp_path / 'b0', make_episode(1, size=16))
    second = write_episode_bag(tmp_path / 'b1', make_episode(
        2, size=16, success=False, instruction='another instruction'))
    out = tmp_path / 'ds'
    assert main([str(first), '--out', str(out), '--no-progress']) == 0
    data_file = out / 'data' / 'chunk-000' / 'file-000.parquet'
    before = data_file.read_bytes()
    assert main([str(second), '--out', str(out), '--no-progress']) == 2
    assert 'exists; pass --append' in capsys.readouterr().err
    assert main([str(second), '--out', str(out), '--append', '--no-progress']) == 0
    assert data_file.read_bytes() == before
    assert (out / 'data' / 'chunk-000' / 'file-001.parquet').is_file()
    episodes = read_lerobot_dataset(out)
    assert [e.success for e in episodes] == [True, False]
    assert [e.instruction for e in episodes] == ['place the square on the goal',
                                                 'another instruction']
    info = (out / 'meta' / 'info.json').read_text()
    assert json.loads(info)['total_tasks'] == 2 and _data(out)['index'] == list(range(sum(
        len(e) for e in episodes)))
    # a failing append changes nothing and leaves no staging directory behind
    wrist = write_episode_bag(tmp_path / 'b2', make_episode(3, size=16, cameras=('wrist',)))
    assert main([str(wrist), '--out', str(out), '--append', '--no-progress']) == 2
    assert main([str(first), '--out', str(out), '--append', '--vcodec', 'libsvtav1',
                 '--no-progress']) == 2
    assert 'same --vcodec' in capsys.readouterr().err
    assert (out / 'meta' / 'info.json').read_text() == info
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []
    # --skip-bad skips the bad bag and exports the rest; --overwrite replaces the dataset
    summary = export_lerobot([first, wrist], out, ExportConfig(), overwrite=True, skip_bad=True,
                             progress=False)
    assert summary['total_episodes'] == 1 and 'b2' in summary['skipped'][0]
    assert len(read_lerobot_dataset(out)) == 1


def test_libsvtav1_is_decoded_by_our_reader(tmp_path):
    bag = write_episode_bag(tmp_path / 'bag', make_episode(3))
    out = tmp_path / 'ds'
    assert main([str(bag), '--out', str(out), '--vcodec', 'libsvtav1', '--crf', '20',
                 '--no-progress']) == 0
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert info['features']['observation.images.corner']['info']['video.codec'] == 'av1'
    (episode,) = read_lerobot_dataset(out)
    assert frame_error(episode.images['corner'], make_episode(3).images['corner']) < 6
    shutil.rmtree(out)
