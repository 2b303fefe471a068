"""The data flywheel: fine-tuning on labelled rollouts, provenance, success calibration."""

import json

import numpy as np
import pytest
from sarm2_common import bag_io, topics
from sarm2_common.rollout_labels import (bag_digest, progress_targets, RolloutLabel,
                                         save_label, Segment)
from sarm2_reward.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from sarm2_reward.flywheel import (calibrate_success, calibrated_success_rule, CalibratedSuccess,
                                   DEFAULT_CONSECUTIVE, finetune_on_rollouts,
                                   finetune_train_config, load_labelled_rollouts, mix_weights,
                                   RolloutMix)
from sarm2_reward.inference import predict_episode
from sarm2_reward.metrics import debounced_peak, first_detection
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.train import main as train_main
from sarm2_reward.training import train_model, TrainConfig
from synthetic_episodes import make_episode, make_episodes, one_torch_thread  # noqa: F401

TINY = {'image_size': 32, 'cnn_channels': (8, 16), 'frame_embed_dim': 16, 'd_model': 16,
        'n_heads': 2, 'stage_layers': 1, 'value_layers': 1, 'num_experts': 4, 'top_k': 2,
        'expert_hidden': 16, 'stage_past_frames': 2, 'stage_gap': 2, 'value_past_frames': 2,
        'value_gap': 3, 'dropout': 0.0}


def write_rollout_bag(directory, episode) -> str:
    """Record a synthetic episode as a rollout bag (images, joints, metadata; no primitives)."""
    path = directory / episode.episode_id
    period = int(round(float(np.diff(episode.timestamps).mean()) * 1e9))
    with bag_io.BagWriter(path) as bag:
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            0, bag_io.METADATA_START, episode.episode_id, episode.task, episode.instruction), 0)
        for t in range(len(episode)):
            bag.write(topics.image_topic('corner'), bag_io.image_message(
                episode.images['corner'][t], t * period, 'corner'), t * period)
            bag.write(topics.JOINT_STATES_TOPIC, bag_io.joint_state_message(
                [f'j{i}' for i in range(9)], episode.joint_positions[t], t * period),
                t * period)
        end = (len(episode) - 1) * period
        bag.write(bag_io.METADATA_TOPIC, bag_io.metadata_message(
            end, bag_io.METADATA_END, episode.episode_id, episode.task, episode.instruction,
            success=episode.success, steps=len(episode) - 1), end)
    return path


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    """RM1: a tiny model trained on successful synthetic demonstrations only."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    demos = make_episodes(6, seed=0)
    model = Sarm2Model(Sarm2Config(**TINY))
    train_model(model, demos, TrainConfig(steps=150, batch_size=16, lr=3e-3, warmup_steps=10,
                                          eval_every=0), progress=False)
    return save_checkpoint(model, tmp_path_factory.mktemp('rm1') / 'checkpoint'), demos


def labelled_failures(directory, count=4, seed=100):
    """Failed rollouts (the square stops part-way) labelled: up to 0.15, a mistake, down to 0.1."""
    bags = []
    for i in range(count):
        episode = make_episode(seed + i, success=False, length=30)
        bag = write_rollout_bag(directory, episode)
        duration = float(episode.timestamps[-1])
        save_label(bag, RolloutLabel(
            episode_id=episode.episode_id, success=False, final_progress=0.1,
            duration=duration, segments=(Segment(0.75 * duration, duration, 'mistake'),),
            labeller_kind='person', labeller='test', bag_digest=bag_digest(bag)))
        bags.append(bag)
    return bags


def label_error(model, rollouts) -> float:
    errors = [(predict_episode(model, e)['progress']
               - progress_targets(e.metadata['rollout_label'], e.timestamps)) ** 2
              for e in rollouts.episodes]
    return float(np.mean(np.concatenate(errors)))


def test_finetuning_lowers_the_value_error_on_labelled_failed_rollouts(
        demo_checkpoint, tmp_path, one_torch_thread):  # noqa: F811
    checkpoint, demos = demo_checkpoint
    labelled_failures(tmp_path / 'rollouts')
    # an unlabelled rollout is skipped, not used
    write_rollout_bag(tmp_path / 'rollouts', make_episode(200, success=False, length=20))
    rollouts = load_labelled_rollouts(tmp_path / 'rollouts')
    assert len(rollouts.episodes) == 4 and len(rollouts.skipped['unlabelled']) == 1
    before = label_error(load_checkpoint(checkpoint), rollouts)

    out = tmp_path / 'rm2'
    result = finetune_on_rollouts(checkpoint, demos, [tmp_path / 'rollouts'], out,
                                  finetune_train_config(steps=150, batch_size=16, lr=2e-3),
                                  progress=False)
    tuned = load_checkpoint(out)
    after = label_error(tuned, rollouts)
    assert after < 0.5 * before, (before, after)
    # The demonstrations are not forgotten: success episodes still end high.
    assert np.mean([predict_episode(tuned, e)['progress'][-1] for e in demos]) > 0.7

    # Provenance: the start checkpoint, the demonstrations, every bag and label file.
    metadata = read_config(out)['metadata']
    assert metadata['init_checkpoint']['model_id'] == result['init_checkpoint']['model_id']
    assert metadata['init_checkpoint']['path'] == str(checkpoint)
    assert len(metadata['data']) == len(demos)
    assert sorted(r['episode_id'] for r in metadata['rollouts']) == sorted(
        e.episode_id for e in rollouts.episodes)
    assert all(len(r['label_sha256']) == 64 and r['labeller'] == 'test'
               for r in metadata['rollouts'])
    assert metadata['success_calibration']['rollouts'] == 4
    per_task = metadata['success_calibration']['per_task']
    assert sum(c['rollouts'] for c in per_task.values()) == 4
    assert set(per_task) == {e.task for e in rollouts.episodes}
    # What the policy node reads: the task's own threshold, else the pooled one; a
    # checkpoint trained on demonstrations only has none.
    task = rollouts.episodes[0].task
    rule = calibrated_success_rule(out, task)
    assert rule.threshold == per_task[task]['threshold'] and f'per_task.{task}' in rule.origin
    assert rule.frames == per_task[task]['consecutive_frames'] == DEFAULT_CONSECUTIVE
    assert calibrated_success_rule(out, 'another-task-v3') == CalibratedSuccess(
        metadata['success_calibration']['threshold'], DEFAULT_CONSECUTIVE,
        f'{out / "config.json"} success_calibration.threshold')
    assert calibrated_success_rule(checkpoint, task) is None
    assert metadata['rollout_mix'] == {'share': 0.5, 'primitives': 'ignore'}
    # Fine-tuning keeps the normalization its weights were trained with.
    original = load_checkpoint(checkpoint)
    assert np.array_equal(tuned.state_mean.numpy(), original.state_mean.numpy())


def test_train_cli_fine_tunes_from_a_checkpoint_and_refuses_a_foreign_label(
        demo_checkpoint, tmp_path, capsys, one_torch_thread):  # noqa: F811
    checkpoint, _ = demo_checkpoint
    demos = tmp_path / 'demos'
    for episode in make_episodes(2, seed=50):
        write_rollout_bag(demos, episode)
    rollouts = labelled_failures(tmp_path / 'rollouts', count=2)
    out = tmp_path / 'rm2'
    arguments = [str(demos), '--out', str(out), '--init-checkpoint', str(checkpoint),
                 '--rollouts', str(tmp_path / 'rollouts'), '--steps', '3', '--batch-size', '4',
                 '--val-fraction', '0', '--no-progress']
    assert train_main(arguments) == 0
    metadata = read_config(out)['metadata']
    assert len(metadata['rollouts']) == 2 and 'init_checkpoint' in metadata
    # A label naming another episode stops training with the file named, exit 2.
    label = json.loads((rollouts[0].parent / f'{rollouts[0].name}.label.json').read_text())
    label['episode_id'] = 'someone-else'
    (rollouts[0].parent / f'{rollouts[0].name}.label.json').write_text(json.dumps(label))
    capsys.readouterr()
    assert train_main(arguments[:2] + [str(tmp_path / 'other')] + arguments[3:]) == 2
    error = capsys.readouterr().err
    assert f'{rollouts[0].name}.label.json' in error and 'episode_id' in error


def test_mix_weights_give_rollouts_their_share():
    demos, rollouts = make_episodes(3, seed=0), make_episodes(1, seed=9)
    weights = mix_weights(demos, rollouts, 0.25)
    frames = np.array([len(e) for e in demos + rollouts]) * weights
    assert frames[3:].sum() / frames.sum() == pytest.approx(0.25)
    with pytest.raises(ValueError, match='share'):
        RolloutMix(share=1.0)


def test_success_detection_needs_consecutive_frames_and_calibrates_on_failures():
    spike = np.array([0.1, 0.99, 0.1, 0.2])
    held = np.array([0.1, 0.8, 0.85, 0.9, 0.95])
    assert first_detection(spike, 0.5, consecutive=3) is None
    assert first_detection(held, 0.5, consecutive=3) == 3
    assert debounced_peak(held, 3) == pytest.approx(0.85)
    # Failures peak (over 3 frames) at 0.3 and 0.6; successes at 0.85 and 0.5.
    calibration = calibrate_success(
        [np.array([0.3] * 4), np.array([0.6] * 4), held, np.array([0.2, 0.5, 0.5, 0.5])],
        [False, False, True, True], consecutive=3)
    assert 0.6 < calibration['threshold'] <= 0.85
    assert calibration['false_positive_rate'] == 0.0
    assert calibration['true_positive_rate'] == 0.5


@pytest.mark.parametrize('calibration, field', [
    ({'threshold': 1.5, 'consecutive_frames': 3}, 'success_calibration.threshold'),
    ({'threshold': 0.8, 'per_task': {'reach-v3': {'threshold': 'high'}}},
     'success_calibration.per_task.reach-v3.threshold'),
    ({'per_task': {}}, 'success_calibration.threshold'),
    ({'threshold': 0.8}, 'success_calibration.consecutive_frames'),
    ({'threshold': 0.8, 'consecutive_frames': 3, 'per_task': {'reach-v3': {
        'threshold': 0.5, 'consecutive_frames': 0}}},
     'success_calibration.per_task.reach-v3.consecutive_frames'),
])
def test_a_malformed_success_calibration_names_the_file_and_the_field(tmp_path, calibration,
                                                                      field):
    directory = save_checkpoint(Sarm2Model(Sarm2Config(**TINY)), tmp_path / 'rm',
                                metadata={'success_calibration': calibration})
    with pytest.raises(CheckpointError, match=f'config.json: {field} is'):
        calibrated_success_rule(directory, 'reach-v3')
    with pytest.raises(CheckpointError, match='does not exist'):
        calibrated_success_rule(tmp_path / 'missing', 'reach-v3')
