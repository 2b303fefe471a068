"""SPIRAL core: critic targets, zero-initialised residual, best-of-k, learning on a tiny buffer."""

import json

import numpy as np
import pytest
import torch

from spiral_policy.spiral.config import compact_vla_config, COMPACT_VLA_SETTINGS, SpiralConfig
from spiral_policy.spiral.critic import CriticEnsemble
from spiral_policy.spiral.learner import SpiralLearner
from spiral_policy.spiral.rabc import rabc_weights
from spiral_policy.spiral.residual import ResidualActor
from spiral_policy.spiral.residual_policy import best_of_k, observation_batch_from, \
    ResidualPolicy
from spiral_policy.spiral.targets import blended_targets, chunk_starts, discounted_returns, \
    td_targets, terminal_returns, window_rewards
from spiral_policy.spiral.transitions import build_transitions, observation_batch, Rollout, \
    step_rewards
from spiral_policy.vla import PolicyObservation


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny networks run ~10x faster on one thread when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> SpiralConfig:
    values = {'action_dim': 2, 'chunk_size': 2, 'joint_dim': 3, 'cameras': ('corner',),
              'feature_image_size': 8, 'hidden_dim': 32, 'num_critics': 3, 'batch_size': 32,
              'updates': 200, 'best_of_k': 4}
    values.update(overrides)
    return SpiralConfig(**values)


class TinyBasePolicy:
    """A deterministic base: a fixed linear map of the joints, repeated over the chunk."""

    policy_id = 'tiny_base'
    action_dim = 2
    chunk_size = 2

    def __init__(self):
        self.weights = np.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], np.float32)
        self.resets = 0

    def reset(self):
        self.resets += 1

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        action = np.tanh(obs.joint_positions @ self.weights)
        return np.repeat(action[None], self.chunk_size, axis=0).astype(np.float32)


def random_observation(rng: np.random.Generator) -> PolicyObservation:
    return PolicyObservation(images={'corner': rng.integers(0, 256, (16, 16, 3), np.uint8)},
                             joint_positions=rng.normal(size=3).astype(np.float32),
                             instruction='push the block')


def test_chunked_returns_and_blended_target_match_hand_computation():
    # rewards r0..r4 = .1 .2 .3 .4 .5, chunks of 2, gamma .5: chunks start at frames 0, 2, 4.
    rewards = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    totals, discounts = window_rewards(rewards, chunk_starts(5, 2), 2, gamma=0.5)
    np.testing.assert_allclose(totals, [0.1 + 0.5 * 0.2, 0.3 + 0.5 * 0.4, 0.5])
    np.testing.assert_allclose(discounts, [0.25, 0.25, 0.5])
    # G4 = .5; G3 = .4 + .5 * .5 = .65; G2 = .3 + .5 * .65 = .625; G1 = .5125; G0 = .35625
    np.testing.assert_allclose(discounted_returns(rewards, 0.5),
                               [0.35625, 0.5125, 0.625, 0.65, 0.5])
    # The anchor's terminal value p * gamma^(steps remaining).
    np.testing.assert_allclose(terminal_returns(3, 0.5, 1.0), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(terminal_returns(3, 0.5, 0.0), [0.0, 0.0, 0.0])
    # TD with next-state values 2.0 and 4.0 (the second transition is terminal).
    td = td_targets(torch.tensor([0.2, 0.5]), torch.tensor([0.25, 0.25]),
                    torch.tensor([0.0, 1.0]), torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(td, torch.tensor([0.7, 0.5]))
    blended = blended_targets(torch.tensor([0.35625, 0.625]), td, mc_alpha=0.5)
    torch.testing.assert_close(blended, torch.tensor([0.528125, 0.5625]))


def test_learner_target_is_blend_of_mc_and_td_over_min_of_target_ensemble():
    config = tiny_config(target_noise=0.0, mc_alpha=0.5, gamma=0.9)
    learner = SpiralLearner(config, seed=1)
    buffer = build_transitions([synthetic_rollout(np.random.default_rng(0), 'e0', 6, True)],
                               config)
    tensors = buffer.tensors()
    index = torch.arange(len(buffer))
    target = learner.critic_targets(tensors, index)
    next_batch = observation_batch(tensors, tensors['next_index'])
    with torch.no_grad():
        next_action = learner.actor_target.act(next_batch)
        next_q = learner.critic_target(next_batch, next_action).min(dim=0).values
    expected = 0.5 * tensors['mc_return'] + 0.5 * (
        tensors['chunk_reward'] + tensors['discount'] * (1 - tensors['done']) * next_q)
    torch.testing.assert_close(target, expected)
    # Last chunk of the episode is terminal: its target is exactly its reward.
    assert tensors['done'][-1] == 1.0
    torch.testing.assert_close(target[-1], tensors['chunk_reward'][-1])


def synthetic_rollout(rng: np.random.Generator, name: str, length: int, success: bool,
                      action_value: float = 0.0) -> Rollout:
    config = tiny_config()
    return Rollout(
        episode_id=name, task='push',
        images={'corner': rng.integers(0, 256, (length, 16, 16, 3), np.uint8)},
        joint_positions=rng.normal(size=(length, 3)).astype(np.float32),
        actions=np.full((length, 2), action_value, np.float32),
        base_chunks=np.zeros((length, config.chunk_size, 2), np.float32),
        frame_rewards=np.linspace(0, 0.1, length), success=success)


def test_step_rewards_shift_dense_and_pay_the_outcome_on_the_last_action():
    rollout = synthetic_rollout(np.random.default_rng(0), 'e', 4, True)
    rollout.frame_rewards = np.array([0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(step_rewards(rollout, 'dense', 0.0), [0.1, 0.2, 0.3, 0.0])
    np.testing.assert_allclose(step_rewards(rollout, 'dense', 1.0), [0.1, 0.2, 0.3, 1.0])
    np.testing.assert_allclose(step_rewards(rollout, 'sparse', 1.0), [0, 0, 0, 1.0])
    rollout.success = False
    np.testing.assert_allclose(step_rewards(rollout, 'dense', 1.0), [0.1, 0.2, 0.3, 0.0])
    np.testing.assert_allclose(step_rewards(rollout, 'sparse', 1.0), [0, 0, 0, 0])


def test_residual_is_zero_initialised_so_round_zero_is_the_base_policy():
    config = tiny_config()
    base = TinyBasePolicy()
    policy = ResidualPolicy(base, ResidualActor(config))
    rng = np.random.default_rng(3)
    policy.reset()
    assert base.resets == 1
    for _ in range(5):
        obs = random_observation(rng)
        chunk = policy.select_action(obs)
        assert chunk.dtype == np.float32 and chunk.shape == (2, 2)
        np.testing.assert_array_equal(chunk, base.select_action(obs))
        np.testing.assert_array_equal(policy.last_base_chunk, chunk)


def test_best_of_k_picks_the_candidate_with_the_highest_min_q():
    config = tiny_config(num_critics=3)
    torch.manual_seed(0)
    critic = CriticEnsemble(config).eval()
    rng = np.random.default_rng(0)
    obs = random_observation(rng)
    batch = observation_batch_from(obs, np.zeros((2, 2), np.float32), config)
    candidates = torch.rand(16, 2, 2) * 2 - 1
    index, scores = best_of_k(critic, batch, candidates)
    with torch.no_grad():
        one_by_one = torch.stack([critic(batch, c[None]).min(dim=0).values[0]
                                  for c in candidates])
    torch.testing.assert_close(scores, one_by_one)
    assert index == int(torch.argmax(one_by_one))
    assert scores[index] == scores.max()


def test_policy_with_best_of_k_returns_the_best_scored_candidate():
    config = tiny_config()
    learner = SpiralLearner(config, seed=0)
    policy = ResidualPolicy(TinyBasePolicy(), learner.actor, learner.critic, best_of_k=8)
    obs = random_observation(np.random.default_rng(1))
    chunk = policy.select_action(obs)
    batch = observation_batch_from(obs, policy.last_base_chunk, config)
    with torch.no_grad():
        q = learner.critic.min_q(batch, torch.from_numpy(chunk)[None])
        q_base = learner.critic.min_q(batch, torch.from_numpy(policy.last_base_chunk)[None])
    assert float(q) == pytest.approx(policy.last_q, abs=1e-5)
    assert float(q) >= float(q_base) - 1e-6  # the noise-free candidate is one of the k


def good_bad_buffer(config: SpiralConfig, episodes: int = 40):
    """One-chunk episodes from identical-looking states; action +0.5 succeeds, -0.5 fails."""
    rng = np.random.default_rng(0)
    rollouts = []
    for i in range(episodes):
        good = i % 2 == 0
        rollout = synthetic_rollout(rng, f'e{i}', config.chunk_size, good,
                                    action_value=0.5 if good else -0.5)
        rollout.frame_rewards = np.array([0.0, 1.0 if good else 0.0])
        rollouts.append(rollout)
    return build_transitions(rollouts, config)


def test_update_on_tiny_buffer_raises_q_of_the_better_action_and_moves_the_residual():
    config = tiny_config(updates=150, residual_scale=0.5, beta=0.01, critic_lr=1e-3,
                         actor_lr=1e-3)
    buffer = good_bad_buffer(config)
    learner = SpiralLearner(config, seed=0)
    tensors = buffer.tensors()
    batch = observation_batch(tensors, torch.arange(len(buffer)))
    good = torch.full((len(buffer), 2, 2), 0.5)
    bad = -good

    def q_gap():
        with torch.no_grad():
            return float((learner.critic.min_q(batch, good) - learner.critic.min_q(batch, bad))
                         .mean())

    gap_before = q_gap()
    logs = learner.train(buffer, method='spiral')
    assert logs['updates'] == 150 and logs['final_critic_loss'] < 0.05
    assert q_gap() > max(gap_before, 0.0) + 0.5
    with torch.no_grad():
        residual = learner.actor(batch)
    # base is 0, so the residual is the action: it must move towards +0.5.
    assert float(residual.mean()) > 0.1


def test_rabc_clones_progress_making_chunks_only():
    config = tiny_config(updates=150, residual_scale=0.8, actor_lr=1e-3)
    buffer = good_bad_buffer(config)
    np.testing.assert_allclose(rabc_weights(np.array([-0.1, 0.0, 0.005, 0.5]), 0.01),
                               [0.0, 0.0, 0.5, 1.0])
    learner = SpiralLearner(config, seed=0)
    logs = learner.train(buffer, method='rabc')
    assert logs['final_critic_loss'] is None and not learner.critic_trained
    with torch.no_grad():
        residual = learner.actor(observation_batch(buffer.tensors(), torch.arange(len(buffer))))
    assert float(residual.mean()) == pytest.approx(0.5, abs=0.1)


def test_checkpoint_round_trip_and_mismatch_errors(tmp_path):
    config = tiny_config(updates=20)
    learner = SpiralLearner(config, seed=0)
    learner.train(good_bad_buffer(config, episodes=4))
    learner.save(tmp_path / 'ckpt', {'base_policy_id': 'tiny_base', 'round': 1})
    policy = ResidualPolicy.from_checkpoint(tmp_path / 'ckpt', TinyBasePolicy())
    assert policy.best_of_k == config.best_of_k and policy.critic is not None
    assert policy.policy_id.startswith('tiny_base+spiral:')
    obs = random_observation(np.random.default_rng(0))
    reloaded = SpiralLearner.load(tmp_path / 'ckpt')
    batch = observation_batch_from(obs, np.zeros((2, 2), np.float32), config)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.actor(batch), learner.actor(batch))
    other = TinyBasePolicy()
    other.policy_id = 'another_base'
    with pytest.raises(ValueError, match='trained on base policy'):
        ResidualPolicy.from_checkpoint(tmp_path / 'ckpt', other)
    bigger = SpiralLearner(tiny_config(hidden_dim=64), seed=0)
    bigger.save(tmp_path / 'big')
    (tmp_path / 'big' / 'config.json').write_text(config.to_json())
    with pytest.raises(ValueError, match='does not match the config'):
        SpiralLearner.load(tmp_path / 'big')
    with pytest.raises(FileNotFoundError, match='not a SPIRAL residual checkpoint'):
        SpiralLearner.load(tmp_path / 'nothing')


def test_config_validation_names_the_bad_field():
    with pytest.raises(ValueError, match='mc_alpha'):
        SpiralConfig(mc_alpha=1.5)
    with pytest.raises(ValueError, match='reward_source'):
        SpiralConfig(reward_source='oracle')
    with pytest.raises(ValueError, match='unknown SpiralConfig keys'):
        SpiralConfig.from_dict({'gama': 0.9})
    assert SpiralConfig.from_dict(json_round_trip(SpiralConfig())) == SpiralConfig()


def test_compact_vla_settings_take_overrides_and_reject_unknown_keys():
    config = compact_vla_config(chunk_size=4, beta=3.0)
    assert (config.chunk_size, config.beta) == (4, 3.0)
    assert config.residual_scale == COMPACT_VLA_SETTINGS['residual_scale'] == 0.1
    with pytest.raises(ValueError, match='unknown SpiralConfig keys'):
        compact_vla_config(residual=0.2)
    with pytest.raises(ValueError, match='residual_scale'):
        compact_vla_config(residual_scale=-1.0)


def json_round_trip(config: SpiralConfig) -> dict:
    return json.loads(config.to_json())


def test_base_with_wrong_chunk_shape_is_rejected():
    with pytest.raises(ValueError, match='emits chunks of 2 x 2'):
        ResidualPolicy(TinyBasePolicy(), ResidualActor(tiny_config(chunk_size=4)))


def test_per_frame_transitions_match_hand_computation():
    # 5 frames, windows of 2, gamma .5; frame rewards 0 .1 .2 .3 .4 -> action rewards
    # .1 .2 .3 .4 and the outcome 1.0 on the last action (a success).
    config = tiny_config(gamma=0.5, success_reward=1.0, transitions='frame')
    rollout = synthetic_rollout(np.random.default_rng(0), 'e', 5, True)
    rollout.frame_rewards = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    rollout.actions = np.arange(10, dtype=np.float32).reshape(5, 2)
    rollout.base_chunks = np.arange(20, dtype=np.float32).reshape(5, 2, 2)
    buffer = build_transitions([rollout], config)
    assert len(buffer) == 5
    np.testing.assert_allclose(buffer.chunk_reward, [0.2, 0.35, 0.5, 0.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(buffer.discount, [0.25, 0.25, 0.25, 0.25, 0.5])
    np.testing.assert_array_equal(buffer.done, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(buffer.next_index, [2, 3, 4, 3, 4])
    # G4 = 1; G3 = .4 + .5; G2 = .3 + .45; G1 = .2 + .375; G0 = .1 + .2875
    np.testing.assert_allclose(buffer.mc_return, [0.3875, 0.575, 0.75, 0.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(buffer.progress_gain, [0.3, 0.5, 0.7, 0.4, 0.0], rtol=1e-6)
    # Executed actions from each frame on, the last one repeated; the base chunk of each frame.
    np.testing.assert_array_equal(buffer.actions[3], [[6, 7], [8, 9]])
    np.testing.assert_array_equal(buffer.actions[4], [[8, 9], [8, 9]])
    np.testing.assert_array_equal(buffer.base, rollout.base_chunks)
    np.testing.assert_array_equal(buffer.joints, rollout.joint_positions)
    # The anchor's Monte-Carlo term: p gamma^(steps remaining), p = 1 even for a failure.
    rollout.success = False
    anchor = build_transitions([rollout], tiny_config(gamma=0.5, mc_target='terminal'))
    np.testing.assert_allclose(anchor.mc_return, [0.0625, 0.125, 0.25, 0.5, 1.0])
    outcome = build_transitions([rollout], tiny_config(gamma=0.5, mc_target='terminal_success'))
    np.testing.assert_allclose(outcome.mc_return, np.zeros(5))


def test_chunk_transitions_take_the_chunk_starts_of_per_frame_base_chunks():
    config = tiny_config(gamma=0.5, transitions='chunk')
    rollout = synthetic_rollout(np.random.default_rng(0), 'e', 5, True)
    rollout.base_chunks = np.arange(20, dtype=np.float32).reshape(5, 2, 2)
    buffer = build_transitions([rollout], config)
    np.testing.assert_array_equal(buffer.base, rollout.base_chunks[[0, 2, 4]])
    np.testing.assert_array_equal(buffer.next_index, [1, 2, 2])
    np.testing.assert_array_equal(buffer.done, [0, 0, 1])
    rollout.base_chunks = rollout.base_chunks[[0, 2]]
    with pytest.raises(ValueError, match='base_chunks has 2 chunks'):
        build_transitions([rollout], config)
    with pytest.raises(ValueError, match='per-frame transitions need'):
        build_transitions([rollout], tiny_config(transitions='frame'))


class FeatureBase(TinyBasePolicy):
    """A base that also reports observation features (as the compact VLA does)."""

    feature_dim = 3

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        self.last_features = np.asarray(obs.joint_positions, np.float32) * 2.0
        return super().select_action(obs)


def test_residual_on_the_base_features_reads_them_and_not_the_pixels():
    config = tiny_config(observation='base_features', base_feature_dim=3, updates=20)
    rng = np.random.default_rng(0)
    rollouts = [synthetic_rollout(rng, f'e{i}', 4, i % 2 == 0) for i in range(4)]
    for rollout in rollouts:
        rollout.base_features = rng.normal(size=(4, 3)).astype(np.float32)
    buffer = build_transitions(rollouts, config)
    np.testing.assert_array_equal(buffer.features[:4], rollouts[0].base_features)
    learner = SpiralLearner(config, seed=0)
    learner.train(buffer)
    with torch.no_grad():
        learner.actor.head.weight.normal_()  # a non-zero residual, to see what it reads
    base = FeatureBase()
    policy = ResidualPolicy(base, learner.actor)
    obs = random_observation(rng)
    chunk = policy.select_action(obs)
    other_pixels = PolicyObservation({'corner': 255 - obs.images['corner']}, obs.joint_positions,
                                     obs.instruction)
    np.testing.assert_allclose(policy.select_action(other_pixels), chunk)
    batch = observation_batch_from(obs, policy.last_base_chunk, config, base.last_features)
    torch.testing.assert_close(batch['features'][0], torch.from_numpy(base.last_features))
    rollouts[0].base_features = None
    with pytest.raises(ValueError, match='base_features has shape'):
        build_transitions(rollouts, config)
    with pytest.raises(ValueError, match='provides none'):
        ResidualPolicy(TinyBasePolicy(), learner.actor)
