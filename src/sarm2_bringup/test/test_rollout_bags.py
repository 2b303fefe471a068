"""In-process rollouts recorded as policy-node bags: readable, truthful, resumable."""

import json
from pathlib import Path

import numpy as np
import pytest

from sarm2_common import bag_io
from sarm2_common.bag_dataset import read_episode
from sarm2_reward.backend import Sarm2Backend
from sarm2_reward.inference import Sarm2Predictor
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_sim.sim_arm import SimArm, SimArmConfig
from sarm2_bringup.rollout_bags import (MANIFEST_FILE, read_manifest, record_sim_rollout,
                                        record_sim_rollouts, REWARD_TOPIC)
from spiral_policy.sim_evaluation import run_sim_episode, sim_control_core
from spiral_policy.spiral.relabel import Sarm2Labeler
from ros_harness import SimExpertPolicy

TINY = {'image_size': 16, 'cnn_channels': (4, 8), 'frame_embed_dim': 16, 'd_model': 16,
        'n_heads': 2, 'stage_layers': 1, 'value_layers': 1, 'num_experts': 4, 'top_k': 2,
        'expert_hidden': 8}


@pytest.fixture(scope='module')
def arm():
    arm = SimArm(SimArmConfig(task='reach-v3', image_size=16))
    yield arm
    arm.close()


def test_a_recorded_rollout_reads_back_as_the_episode_that_ran(arm, tmp_path):
    import torch

    torch.manual_seed(0)
    model = Sarm2Model(Sarm2Config(**TINY)).eval()
    backend = Sarm2Backend(Sarm2Predictor.from_model(model))
    core = sim_control_core(SimExpertPolicy(arm), arm, ('corner',))
    result = record_sim_rollout(arm, core, seed=2, max_steps=60, directory=tmp_path,
                                episode_id='reach-r0', reward_backend=backend)
    # Recording changes nothing about the episode: same outcome as the plain evaluation.
    plain = run_sim_episode(arm, core, seed=2, max_steps=60)
    assert (result.success, result.steps) == (plain.success, plain.steps)
    assert result.success and result.reason == 'success'

    episode = read_episode(result.bag)
    assert episode.episode_id == 'reach-r0' and episode.task == 'reach-v3'
    assert episode.success and episode.metadata['complete']
    # Every observation including the final one; an action for every step taken.
    assert len(episode) == result.steps + 1
    assert episode.metadata['base_actions'].shape == (len(episode), 4)
    assert np.all(episode.primitive_ids == episode.primitive_ids[0])  # reach: one primitive
    truth = [m for _, _, m in bag_io.read_messages(result.bag, (bag_io.GROUND_TRUTH_TOPIC,))]
    assert [m.step for m in truth] == list(range(len(episode)))
    assert truth[-1].success and not any(m.success for m in truth[:-1])
    assert {m.episode_id for m in truth} == {'reach-r0'}

    # The recorded live rewards are what offline relabelling of the same bag computes.
    live = [m for _, _, m in bag_io.read_messages(result.bag, (REWARD_TOPIC,))]
    assert [m.frame_index for m in live] == list(range(len(episode)))
    offline = Sarm2Labeler(model, backend.model_id).frame_rewards(episode)
    np.testing.assert_allclose([m.reward for m in live], offline, atol=1e-5)
    end = json.loads(next(m for _, _, m in bag_io.read_messages(
        result.bag, (bag_io.METADATA_TOPIC,)) if m.kind == 'end').metadata_json)
    assert end['reward_model_id'] == backend.model_id
    assert end['episode_return'] == pytest.approx(offline.sum(), abs=1e-4)


class StillPolicy:
    """A VlaPolicy that holds the arm still (needs no simulator access)."""

    policy_id = 'still'
    action_dim = 4
    chunk_size = 2

    def reset(self):
        """Keep no state."""

    def select_action(self, obs):
        return np.zeros((self.chunk_size, self.action_dim), np.float32)


def test_rollouts_resume_and_redo_a_bag_cut_short(tmp_path):
    first = record_sim_rollouts(StillPolicy(), 'reach-v3', [1, 2], tmp_path, max_steps=5,
                                image_size=16, progress=False)
    assert [r.episode_id for r in first] == ['reach-v3-r0000-s1', 'reach-v3-r0001-s2']
    assert [(r.success, r.steps, r.reason) for r in first] == [(False, 5, 'step_limit')] * 2
    assert read_manifest(tmp_path) == first
    # A bag without a manifest line was cut short: it is recorded again, the rest is kept.
    lines = (tmp_path / MANIFEST_FILE).read_text().splitlines()
    (tmp_path / MANIFEST_FILE).write_text(lines[0] + '\n')
    kept, redone = (tmp_path / r.episode_id / 'metadata.yaml' for r in first)
    stamps = kept.stat().st_mtime_ns, redone.stat().st_mtime_ns
    again = record_sim_rollouts(StillPolicy(), 'reach-v3', [1, 2], tmp_path, max_steps=5,
                                image_size=16, progress=False)
    assert again == first and read_manifest(tmp_path) == first
    assert kept.stat().st_mtime_ns == stamps[0] and redone.stat().st_mtime_ns != stamps[1]
    assert len(read_episode(again[1].bag)) == 6


def test_a_rollout_cache_read_from_another_directory_is_kept(tmp_path, monkeypatch):
    # The manifest stores bag paths as the recorder saw them (here relative to its working
    # directory); read from elsewhere, the finished rollouts must still be found, not redone.
    monkeypatch.chdir(tmp_path)
    first = record_sim_rollouts(StillPolicy(), 'reach-v3', [1], Path('cache'), max_steps=3,
                                image_size=16, progress=False)
    bag = tmp_path / 'cache' / first[0].episode_id
    stamp = (bag / 'metadata.yaml').stat().st_mtime_ns
    monkeypatch.chdir(tmp_path.parent)
    again = record_sim_rollouts(StillPolicy(), 'reach-v3', [1], tmp_path / 'cache', max_steps=3,
                                image_size=16, progress=False)
    assert [Path(r.bag) for r in again] == [bag]
    assert (bag / 'metadata.yaml').stat().st_mtime_ns == stamp
