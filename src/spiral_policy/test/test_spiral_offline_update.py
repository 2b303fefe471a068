"""Offline SPIRAL round from real rosbag2 files: relabel, skip bad bags, write a checkpoint."""

import json
import logging
from pathlib import Path
import sys

import numpy as np
import pytest
import torch

from sarm2_common.bag_io import (ACTION_TOPIC, action_message, BagWriter, image_message,
                                 joint_state_message, METADATA_END, METADATA_START,
                                 metadata_message, METADATA_TOPIC)
from sarm2_common.topics import image_topic, JOINT_STATES_TOPIC
from sarm2_reward.checkpoint import save_checkpoint
from sarm2_common.episode import Episode, UNLABELLED
from sarm2_reward.labeling import DEFAULT_SMOOTHING, smooth_values
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.text_embedding import make_text_embedder
from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.learner import read_metadata, SpiralLearner
from spiral_policy.spiral.offline_update import main, prepare_round, REPORT_FILE, RoundData
from spiral_policy.spiral.relabel import LrmLabeler, Sarm2Labeler, TimeLinearLabeler
# The autouse fixture also restores the thread count that main() sets for the process.
from test_spiral_core import single_thread  # noqa: F401

# The real local chat-completions server of the LRM tests stands in for a served VLM.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'sarm2_reward' / 'test'))
from fake_vlm_server import FakeVlmServer  # noqa: E402

PERIOD_NS = 50_000_000
JOINT_NAMES = tuple(f'joint{i}' for i in range(9))


def tiny_config(**overrides) -> SpiralConfig:
    # Chunk transitions: these bags record the base's actions, not its chunk at every frame.
    values = {'chunk_size': 2, 'feature_image_size': 8, 'hidden_dim': 16, 'num_critics': 2,
              'batch_size': 16, 'updates': 5, 'best_of_k': 2, 'transitions': 'chunk'}
    return SpiralConfig(**{**values, **overrides})


def write_bag(path: Path, task: str = 'push-v3', frames: int = 7, cameras=('corner',),
              base_actions: bool = True, success: bool = True, finish: bool = True) -> Path:
    """Write a rollout bag as the recorder does: images, joints, actions, metadata records."""
    rng = np.random.default_rng(len(str(path)))
    details = {'policy_id': 'tiny_base'}
    if base_actions:
        details['base_actions'] = rng.uniform(-1, 1, (frames, 4)).round(3).tolist()
    writer = BagWriter(path)
    writer.__enter__()
    writer.write(METADATA_TOPIC, metadata_message(0, METADATA_START, path.name, task,
                                                  'push the puck', 7), 0)
    for k in range(frames):
        stamp = k * PERIOD_NS
        for camera in cameras:
            image = rng.integers(0, 256, (16, 16, 3), np.uint8)
            writer.write(image_topic(camera), image_message(image, stamp, camera), stamp)
        writer.write(JOINT_STATES_TOPIC, joint_state_message(
            JOINT_NAMES, rng.normal(size=9), stamp), stamp)
        writer.write(ACTION_TOPIC, action_message(rng.uniform(-1, 1, 4)), stamp + 1)
    end = frames * PERIOD_NS
    writer.write(METADATA_TOPIC, metadata_message(
        end, METADATA_END, path.name, task, 'push the puck', 7, success=success,
        reason='success' if success else 'step_limit', steps=frames,
        metadata_json=json.dumps(details)), end)
    if finish:
        writer.close()
    return path


def test_round_from_bags_skips_bad_ones_and_writes_checkpoint_and_report(tmp_path, caplog):
    bags = tmp_path / 'bags'
    bags.mkdir()
    for i in range(3):
        write_bag(bags / f'good{i}', success=i != 1)
    write_bag(bags / 'other_task', task='pick-place-v3')
    write_bag(bags / 'no_base', base_actions=False)
    write_bag(bags / 'wrong_camera', cameras=('topview',))
    # Missing topics: metadata and joints only, no camera stream at all.
    with BagWriter(bags / 'no_images') as writer:
        writer.write(JOINT_STATES_TOPIC, joint_state_message(JOINT_NAMES, np.zeros(9), 0), 0)
    # Truncated: the recorder died; the MCAP file is cut in half and metadata.yaml never came.
    truncated = write_bag(bags / 'truncated')
    (truncated / 'metadata.yaml').unlink()
    mcap = next(truncated.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 2])
    config_path = tmp_path / 'spiral.json'
    config_path.write_text(tiny_config().to_json())
    out = tmp_path / 'round1'

    code = main([str(bags), '--out', str(out), '--reward', 'time_linear', '--task', 'push-v3',
                 '--config', str(config_path), '--updates', '4'])

    assert code == 0
    report = json.loads((out / REPORT_FILE).read_text())
    used = sorted(e['episode_id'] for e in report['episodes'])
    assert used == ['good0', 'good1', 'good2']
    assert {e['reward_model_id'] for e in report['episodes']} == {'time_linear'}
    reasons = {s['episode_id']: s['reason'] for s in report['skipped']}
    assert 'pick-place-v3' in reasons['other_task']
    assert 'no base chunks recorded' in reasons['no_base']
    assert "missing camera(s) ['corner']" in reasons['wrong_camera']
    assert report['input_success_rate'] == pytest.approx(2 / 3)
    assert 'no_images' in caplog.text  # reported by the bag reader, not a crash
    learner = SpiralLearner.load(out)
    assert learner.critic_trained and learner.config.chunk_size == 2
    assert read_metadata(out)['base_policy_id'] == 'tiny_base'  # from the bags' metadata

    # A second round continues from the first checkpoint.
    assert main([str(bags / 'good0'), str(bags / 'good1'), '--out', str(tmp_path / 'round2'),
                 '--reward', 'sparse', '--init', str(out), '--round', '2']) == 0
    report2 = json.loads((tmp_path / 'round2' / REPORT_FILE).read_text())
    assert report2['reward_model_ids'] == ['sparse_success'] and report2['round'] == 2


def test_round_with_no_usable_episode_exits_nonzero_with_a_reason(tmp_path, capsys):
    write_bag(tmp_path / 'other', task='drawer-open-v3')
    config_path = tmp_path / 'spiral.json'
    config_path.write_text(tiny_config().to_json())
    code = main([str(tmp_path / 'other'), '--out', str(tmp_path / 'out'), '--reward',
                 'time_linear', '--task', 'push-v3', '--config', str(config_path)])
    assert code == 2
    assert 'no usable episodes' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
    assert main([str(tmp_path / 'other'), '--out', str(tmp_path / 'out')]) == 2
    assert '--reward-checkpoint' in capsys.readouterr().err


@pytest.mark.parametrize('damage', ['truncated', 'pickle', 'missing'])
def test_unreadable_base_checkpoint_is_one_line_and_exit_2(tmp_path, capsys, damage):
    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig, save_checkpoint

    write_bag(tmp_path / 'bag', task='push-v3')
    base = save_checkpoint(CompactVla(CompactVlaConfig(
        image_size=16, chunk_size=4, d_model=16, num_heads=2, num_layers=1,
        conv_channels=(8, 8), text_buckets=16)), tmp_path / 'base')
    weights = Path(base) / 'model.safetensors'
    if damage == 'truncated':
        weights.write_bytes(weights.read_bytes()[:64])
    elif damage == 'pickle':
        weights.write_bytes(b'\x80\x04\x95' + bytes(100))
    else:
        weights.unlink()
    code = main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'out'), '--reward',
                 'time_linear', '--task', 'push-v3', '--base-checkpoint', str(base)])
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith('spiral_update')]
    assert code == 2 and len(err) == 1 and 'model.safetensors' in err[0], err
    assert not (tmp_path / 'out').exists()


def make_episode(name: str, frames: int = 6, success: bool = True) -> Episode:
    rng = np.random.default_rng(0)
    return Episode(episode_id=name, task='push-v3', instruction='push the puck',
                   images={'corner': rng.integers(0, 256, (frames, 16, 16, 3), np.uint8)},
                   joint_positions=rng.normal(size=(frames, 9)).astype(np.float32),
                   actions=rng.uniform(-1, 1, (frames, 4)).astype(np.float32),
                   primitive_ids=np.full(frames, UNLABELLED), timestamps=np.arange(frames) * 0.05,
                   success=success, metadata={'base_chunks': np.zeros((3, 2, 4))})


def test_sarm2_relabeling_records_the_reward_model_id(tmp_path):
    model_config = Sarm2Config(cameras=('corner',), image_size=16, cnn_channels=(8,),
                               frame_embed_dim=16, d_model=16, n_heads=2, stage_layers=1,
                               value_layers=1, text_dim=make_text_embedder('').dim,
                               num_experts=2, top_k=1, expert_hidden=8)
    torch.manual_seed(0)
    save_checkpoint(Sarm2Model(model_config), tmp_path / 'sarm2')
    labeler = Sarm2Labeler.from_checkpoint(tmp_path / 'sarm2')
    episode = make_episode('e0')
    values = labeler.values(episode)
    rewards = labeler.frame_rewards(episode)
    assert rewards.shape == (6,) and rewards[0] == 0.0
    # Rewards telescope to the smoothed values, smoothed as the live reward node smooths them.
    smoothed = smooth_values(values, DEFAULT_SMOOTHING)
    np.testing.assert_allclose(np.cumsum(rewards), smoothed - smoothed[0], atol=1e-9)
    # The success head the bench's --outcome-source reward calls outcomes with, frame by frame.
    probabilities = labeler.success_probabilities(episode)
    assert probabilities.shape == (6,) and np.all((probabilities >= 0) & (probabilities <= 1))
    np.testing.assert_allclose(
        probabilities, labeler.predictions(episode)['success_probability'], atol=1e-9)
    data = prepare_round([episode], labeler, tiny_config())
    assert data.rollouts[0].reward_model_id == labeler.labeler_id
    assert labeler.labeler_id.startswith('sarm2')
    no_camera = make_episode('e1')
    no_camera.images = {'topview': no_camera.images['corner']}
    with pytest.raises(ValueError, match='no camera'):
        labeler.values(no_camera)


def test_time_linear_labeler_gives_equal_reward_to_success_and_failure():
    success, failure = make_episode('s', success=True), make_episode('f', success=False)
    labeler = TimeLinearLabeler()
    np.testing.assert_allclose(labeler.frame_rewards(success), labeler.frame_rewards(failure))
    np.testing.assert_allclose(labeler.frame_rewards(success).sum(), 1.0)


def test_repeated_skip_reasons_are_logged_once_and_counted(caplog):
    data = RoundData()
    with caplog.at_level(logging.WARNING):
        for name in ('a', 'b', 'c'):
            data.skip(name, "episode is from task 'drawer-open-v3', this round trains 'push-v3'")
        data.skip('d', 'no base actions recorded')
        data.log_repeated_skips()
    assert [s['episode_id'] for s in data.skipped] == ['a', 'b', 'c', 'd']
    warnings = [r.getMessage() for r in caplog.records]
    assert sum('drawer-open-v3' in w for w in warnings) == 2, warnings
    assert any(w.startswith('skipped 2 more episodes:') for w in warnings), warnings
    assert sum('no base actions' in w for w in warnings) == 1, warnings


class LinearBase:
    """A deterministic base policy over 9 joints: chunk k = tanh(W joints) + 0.1 k."""

    policy_id = 'linear_base'
    action_dim = 4
    chunk_size = 2

    def __init__(self):
        self.weights = np.linspace(-0.5, 0.5, 36, dtype=np.float32).reshape(9, 4)

    def reset(self):
        pass

    def select_action(self, obs):
        action = np.tanh(np.asarray(obs.joint_positions, np.float32) @ self.weights)
        return np.stack([action, action + 0.1]).astype(np.float32)


def test_per_frame_transitions_from_a_bag_match_a_hand_computed_example(tmp_path):
    from sarm2_common.bag_dataset import read_episodes
    from spiral_policy.spiral.transitions import build_transitions

    bag = write_bag(tmp_path / 'rollout', frames=5, success=True)
    [episode] = read_episodes(bag)
    base = LinearBase()
    config = tiny_config(transitions='frame', gamma=0.5, success_reward=1.0)
    data = prepare_round([episode], TimeLinearLabeler(), config, base=base)
    buffer = build_transitions(data.rollouts, config)
    # Time-linear labels of 5 frames: frame rewards 0 .25 .25 .25 .25, so the action rewards
    # are .25 .25 .25 .25 and the outcome 1.0 on the last action.
    assert len(buffer) == 5
    np.testing.assert_allclose(buffer.chunk_reward, [0.375, 0.375, 0.375, 0.75, 1.0], rtol=1e-6)
    np.testing.assert_allclose(buffer.discount, [0.25, 0.25, 0.25, 0.25, 0.5])
    np.testing.assert_array_equal(buffer.done, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(buffer.next_index, [2, 3, 4, 3, 4])
    # G4 = 1; G3 = .25 + .5; G2 = .25 + .375; G1 = .25 + .3125; G0 = .25 + .28125
    np.testing.assert_allclose(buffer.mc_return, [0.53125, 0.5625, 0.625, 0.75, 1.0], rtol=1e-6)
    # The base chunk of every frame, recomputed from the bag's joint states.
    for frame in range(5):
        obs = type('Obs', (), {'joint_positions': episode.joint_positions[frame]})
        np.testing.assert_allclose(buffer.base[frame], base.select_action(obs), rtol=1e-6)
    # Executed actions from each frame on, as recorded, the last one repeated.
    np.testing.assert_allclose(buffer.actions[3], episode.actions[3:5])
    np.testing.assert_allclose(buffer.actions[4], episode.actions[[4, 4]])


@pytest.fixture
def vlm_server():
    server = FakeVlmServer()
    server.reasoning = True
    yield server
    server.close()


def test_lrm_relabelling_round_records_its_provenance(tmp_path, vlm_server, capsys):
    bags = tmp_path / 'bags'
    bags.mkdir()
    for i in range(2):
        write_bag(bags / f'rollout{i}', frames=7)
    config_path = tmp_path / 'spiral.json'
    config_path.write_text(tiny_config().to_json())
    out = tmp_path / 'round1'
    served = ['lrm-contrastive', 'lrm-progress', 'lrm-completion']

    code = main([str(bags), '--out', str(out), '--reward', 'lrm', '--task', 'push-v3',
                 '--lrm-endpoint', vlm_server.url, '--lrm-models', *served,
                 '--lrm-query-every', '3', '--config', str(config_path), '--updates', '3',
                 '--smoothing', '0'])      # unsmoothed: the return below is hand-computed

    assert code == 0, capsys.readouterr().err
    report = json.loads((out / REPORT_FILE).read_text())
    (labeler_id,) = report['reward_model_ids']
    assert labeler_id.startswith('lrm:openai:lrm-contrastive+lrm-progress+lrm-completion:tri:'
                                 'every3-')
    assert {e['reward_model_id'] for e in report['episodes']} == {labeler_id}
    provenance = report['reward_provenance']
    assert provenance['source'] == {'endpoint': vlm_server.url, 'models': served}
    assert 'vlm_reward_server.py' in provenance['protocol']
    assert (provenance['mode'], provenance['query_every'], provenance['camera'],
            provenance['rewards'], provenance['smoothing']) == ('tri', 3, 'corner', 'change', 0.0)
    assert read_metadata(out)['reward_provenance'] == provenance
    assert read_metadata(out)['reward_model_ids'] == [labeler_id]
    # Queries at frames 0, 3 and 6 of both bags, every answer parsed.
    assert report['reward_answers'] == {'queries': 6, 'answers': 6}
    # Held tri reward: (0.5 + 0.4 + 0) / 3 at frame 0 (no earlier frame), then (1 + 0.4 + 0) / 3
    # (image B, the later frame, is more complete): the return is the change, 1/6.
    assert [e['dense_return'] for e in report['episodes']] == pytest.approx([1 / 6] * 2)
    assert sorted(set(zip(vlm_server.questions_asked(),
                          (body['model'] for _, body in vlm_server.requests)))) == [
        ('completion', 'lrm-completion'), ('contrastive', 'lrm-contrastive'),
        ('progress', 'lrm-progress')]


def test_lrm_labeler_held_rewards_and_unreachable_vlm(tmp_path, vlm_server, capsys):
    from sarm2_reward.lrm.lrm_backend import LrmConfig
    from sarm2_reward.lrm.settings import VlmSource

    episode = make_episode('e0', frames=6)
    source = VlmSource(endpoint=vlm_server.url, model='m', timeout=5)
    held = LrmLabeler.from_source(source, LrmConfig(query_every=4, mode='progress'), 'held')
    assert held.frame_rewards(episode).tolist() == pytest.approx([0.4] * 6)
    assert held.labeler_id != LrmLabeler.from_source(
        source, LrmConfig(query_every=4, mode='progress')).labeler_id
    # A VLM that never answers labels nothing: every episode is skipped, the round exits 2.
    write_bag(tmp_path / 'rollout')
    config_path = tmp_path / 'spiral.json'
    config_path.write_text(tiny_config().to_json())   # chunk transitions: no base policy needed
    code = main([str(tmp_path / 'rollout'), '--out', str(tmp_path / 'out'), '--reward', 'lrm',
                 '--lrm-endpoint', 'http://127.0.0.1:9/v1', '--lrm-model', 'm',
                 '--config', str(config_path)])
    assert code == 2
    assert "no answer from the VLM (1 queries: {'failed_http': 1})" in capsys.readouterr().err
    assert main([str(tmp_path / 'rollout'), '--out', str(tmp_path / 'out'), '--reward',
                 'lrm']) == 2
    assert 'lrm_endpoint' in capsys.readouterr().err
