"""The SARM2 reward backend: real tiny model, causal episodes, labeled rewards, bad input."""

import json

import numpy as np
import pytest

from sarm2_reward.backend import RewardBackend, RewardEstimate, Sarm2Backend
from sarm2_reward.checkpoint import save_checkpoint
from sarm2_reward.inference import Sarm2Predictor
from sarm2_reward.labeling import dense_rewards
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_common.vocabulary import GROUPS, NUM_GROUPS, NUM_PRIMITIVES, PRIMITIVES

TINY = {'cameras': ('corner', 'wrist'), 'image_size': 32, 'cnn_channels': (4, 8),
        'frame_embed_dim': 16, 'd_model': 16, 'n_heads': 2, 'stage_layers': 1,
        'value_layers': 1, 'num_experts': 4, 'top_k': 2, 'expert_hidden': 8,
        'stage_past_frames': 2, 'stage_gap': 2, 'value_past_frames': 2, 'value_gap': 2}


@pytest.fixture(scope='module')
def model():
    import torch

    torch.manual_seed(0)
    return Sarm2Model(Sarm2Config(**TINY)).eval()


def _frames(count, seed=0):
    rng = np.random.default_rng(seed)
    return [({'corner': rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
              'wrist': rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)},
             rng.normal(size=9).astype(np.float32)) for _ in range(count)]


def _run(backend, frames, start=0.0):
    return [backend.step(images, joints, start + 0.1 * i)
            for i, (images, joints) in enumerate(frames)]


def test_estimates_have_the_documented_shapes_and_ranges(model):
    backend = Sarm2Backend(Sarm2Predictor.from_model(model), smoothing=0.5)
    assert isinstance(backend, RewardBackend)
    assert backend.cameras == ['corner', 'wrist'] and backend.state_dim == 9
    backend.warm_up()
    backend.reset('square-place', 'place the square')
    for estimate in _run(backend, _frames(6)):
        assert isinstance(estimate, RewardEstimate)
        assert estimate.primitive_probs.shape == (NUM_PRIMITIVES,)
        assert estimate.group_probs.shape == (NUM_GROUPS,)
        assert estimate.primitive_probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= estimate.progress <= 1.0 and -1.0 <= estimate.value <= 0.0
        assert estimate.progress == pytest.approx(1.0 + estimate.value, abs=1e-6)
        assert 0.0 <= estimate.success_probability <= 1.0
        assert estimate.primitive_name == PRIMITIVES[estimate.primitive_id]
        assert estimate.group_name == GROUPS[estimate.group_id]
        assert estimate.model_id == backend.model_id and estimate.model_id.startswith('sarm2-')
        assert estimate.inference_time > 0


def test_rewards_equal_offline_labeling_of_the_same_values(model):
    backend = Sarm2Backend(Sarm2Predictor.from_model(model), smoothing=0.7)
    backend.reset('t', 'i')
    estimates = _run(backend, _frames(10))
    values = np.array([e.value for e in estimates])
    np.testing.assert_allclose([e.reward for e in estimates], dense_rewards(values, 0.7),
                               atol=1e-6)


def test_reset_starts_an_independent_episode(model):
    frames = _frames(8, seed=1)
    fresh = Sarm2Backend(Sarm2Predictor.from_model(model), smoothing=0.5)
    fresh.reset('t', 'put the block in the bin')
    expected = _run(fresh, frames[4:])

    reused = Sarm2Backend(Sarm2Predictor.from_model(model), smoothing=0.5)
    reused.warm_up()  # warming up must leave no trace in the next episode either
    reused.reset('t', 'something else entirely')
    _run(reused, frames[:4], start=50.0)
    reused.reset('t', 'put the block in the bin')  # a reset mid-episode
    got = _run(reused, frames[4:])
    for a, b in zip(expected, got):
        assert a.value == pytest.approx(b.value, abs=1e-6)
        assert a.reward == pytest.approx(b.reward, abs=1e-6)
        np.testing.assert_allclose(a.primitive_probs, b.primitive_probs, atol=1e-6)


@pytest.mark.parametrize('corrupt,message', [
    (lambda imgs, j: ({'corner': imgs['corner']}, j), 'missing camera'),
    (lambda imgs, j: ({**imgs, 'wrist': imgs['wrist'].astype(np.float32)}, j), 'uint8 RGB'),
    (lambda imgs, j: ({**imgs, 'wrist': imgs['wrist'][:, :, 0]}, j), 'uint8 RGB'),
    (lambda imgs, j: (imgs, np.full(9, np.nan, np.float32)), 'NaN'),
    (lambda imgs, j: (imgs, j[:7]), 'shape'),
])
def test_bad_input_raises_and_leaves_the_episode_untouched(model, corrupt, message):
    frames = _frames(5, seed=2)
    clean = Sarm2Backend(Sarm2Predictor.from_model(model))
    clean.reset('t', 'i')
    expected = _run(clean, frames)

    backend = Sarm2Backend(Sarm2Predictor.from_model(model))
    backend.reset('t', 'i')
    got = _run(backend, frames[:2])
    with pytest.raises(ValueError, match=message):
        backend.step(*corrupt(*frames[2]), 0.15)
    got += [backend.step(images, joints, 0.2 + 0.1 * i)
            for i, (images, joints) in enumerate(frames[2:])]
    assert [e.value for e in got] == pytest.approx([e.value for e in expected], abs=1e-6)


def test_stamps_going_backwards_are_rejected(model):
    backend = Sarm2Backend(Sarm2Predictor.from_model(model))
    backend.reset('t', 'i')
    (images, joints), = _frames(1)
    backend.step(images, joints, 10.0)
    with pytest.raises(ValueError, match='before the previous frame'):
        backend.step(images, joints, 9.0)
    backend.reset('t', 'i')
    backend.step(images, joints, 1.0)  # a new episode may start anywhere in time


def test_loads_from_a_checkpoint_and_fails_with_a_reason(model, tmp_path):
    save_checkpoint(model, tmp_path / 'ckpt')
    backend = Sarm2Backend.from_checkpoint(tmp_path / 'ckpt', device='cpu', smoothing=0.3)
    assert backend.model_id == Sarm2Predictor.from_model(model).model_id
    assert backend.window_config['stage_gap'] == TINY['stage_gap']
    regapped = Sarm2Backend.from_checkpoint(tmp_path / 'ckpt', stage_gap=6, value_gap=5)
    assert regapped.window_config == {'stage_past_frames': 2, 'stage_gap': 6,
                                      'value_past_frames': 2, 'value_gap': 5}
    # Wider gaps reach further back, so the same frames give different predictions.
    frames = _frames(12, seed=3)
    backend.reset('t', 'i')
    regapped.reset('t', 'i')
    assert _run(backend, frames)[-1].value != pytest.approx(_run(regapped, frames)[-1].value,
                                                            abs=1e-7)
    with pytest.raises(ValueError, match='does not exist'):
        Sarm2Backend.from_checkpoint(tmp_path / 'nowhere')
    config = json.loads((tmp_path / 'ckpt' / 'config.json').read_text())
    config['config']['d_model'] = 32
    (tmp_path / 'ckpt' / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ValueError, match='model.safetensors'):
        Sarm2Backend.from_checkpoint(tmp_path / 'ckpt')


def test_backends_are_chosen_by_name_from_the_node_configuration(model, tmp_path):
    from sarm2_reward.backend import backend_from_config
    from sarm2_reward.reward_node_config import RewardNodeConfig

    save_checkpoint(model, tmp_path / 'ckpt')
    backend = backend_from_config(RewardNodeConfig(checkpoint=str(tmp_path / 'ckpt'),
                                                   smoothing=0.2, value_gap=3))
    assert isinstance(backend, Sarm2Backend) and backend.window_config['value_gap'] == 3
    with pytest.raises(ValueError, match='checkpoint parameter is empty'):
        backend_from_config(RewardNodeConfig())
    with pytest.raises(ValueError, match='backend.*choose one of'):
        RewardNodeConfig(backend='magic')
