"""SARM2 model, live predictor and checkpoints: shapes, causality, MoE routing, save/load."""

import json
from pathlib import Path
import pickle

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sarm2_reward.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sarm2_reward.inference import predict_episode, Sarm2Predictor, StagePrediction
from sarm2_reward.model import CausalTransformer, MultiGateMoE, Sarm2Config, Sarm2Model
from sarm2_common.vocabulary import NUM_GROUPS, NUM_PRIMITIVES, PRIMITIVE_TO_GROUP
from sarm2_reward.windows import rewind_value_window, stage_window, value_window
from synthetic_episodes import make_episode, one_torch_thread  # noqa: F401 - fixture
import torch

GOLDEN_DIR = Path(__file__).parent / 'data' / 'golden_sarm2'


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def tiny_config(**overrides) -> Sarm2Config:
    values = {'image_size': 32, 'd_model': 32, 'frame_embed_dim': 32, 'cnn_channels': (8, 16),
              'expert_hidden': 16, 'n_heads': 2, 'stage_layers': 1, 'value_layers': 1,
              'stage_past_frames': 3, 'stage_gap': 2, 'value_past_frames': 3, 'value_gap': 3}
    values.update(overrides)
    return Sarm2Config(**values)


def tiny_model(seed: int = 0, **overrides) -> Sarm2Model:
    torch.manual_seed(seed)
    return Sarm2Model(tiny_config(**overrides)).eval()


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match='value_head'):
        Sarm2Config(value_head='dense')
    with pytest.raises(ValueError, match='divisible'):
        Sarm2Config(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match='unknown config keys'):
        Sarm2Config.from_dict({'d_model': 32, 'layers': 3})
    assert Sarm2Config.from_dict(tiny_config().to_dict()) == tiny_config()


def test_windows_are_causal_and_clamped():
    assert stage_window(2, 3, 2).tolist() == [0, 0, 0, 2]
    assert value_window(20, 3, 3).tolist() == [0, 11, 14, 17, 20]
    # forward to 10 then back to 6: the window ends on frame 6, never looks past the peak.
    rewind = rewind_value_window(10, 6, 3, 2)
    assert rewind.tolist() == [0, 8, 10, 8, 6]


def test_prediction_shapes_and_ranges():
    episode = make_episode(1, cameras=('corner', 'wrist'))
    model = tiny_model(cameras=('corner', 'wrist'))
    out = predict_episode(model, episode)
    length = len(episode)
    assert out['primitive_probs'].shape == (length, NUM_PRIMITIVES)
    assert out['group_probs'].shape == (length, NUM_GROUPS)
    for key in ('progress', 'value', 'success_probability'):
        assert out[key].shape == (length,)
    assert np.all((out['value'] >= -1) & (out['value'] <= 0))
    np.testing.assert_allclose(out['primitive_probs'].sum(1), 1.0, rtol=1e-5)


def test_future_frames_do_not_change_outputs():
    model = tiny_model()
    episode = make_episode(2)
    before = predict_episode(model, episode)
    cut = len(episode) // 2
    episode.images['corner'][cut + 1:] = 255 - episode.images['corner'][cut + 1:]
    episode.joint_positions[cut + 1:] += 5.0
    after = predict_episode(model, episode)
    for key in before:
        np.testing.assert_array_equal(before[key][:cut + 1], after[key][:cut + 1])
    # ...while the changed frames themselves do change (the test can see a difference).
    assert not np.allclose(before['value'][cut + 1:], after['value'][cut + 1:])


def test_transformer_mask_blocks_later_slots():
    torch.manual_seed(0)
    transformer = CausalTransformer(16, 2, 2, 2, 0.0).eval()
    slots = torch.tensor([-1, 0, 0, 1, 1, 2, 2])
    tokens = torch.randn(1, 7, 16)
    changed = tokens.clone()
    # A random change, not a constant shift: every layer normalises its input first, so adding
    # the same number to all features of a token would leave the output unchanged (up to
    # rounding) and the last assertion would hold only by floating-point accident.
    changed[0, 5:] += 3.0 * torch.randn(2, 16)
    a, b = transformer(tokens, slots), transformer(changed, slots)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 0.1


def test_live_predictor_matches_offline_and_only_encodes_new_frames(monkeypatch):
    model = tiny_model()
    episode = make_episode(3)
    offline = predict_episode(model, episode)
    predictor = Sarm2Predictor.from_model(model)
    assert predictor.cameras == ['corner'] and predictor.image_size == 32
    encoded = []
    original = model.encode_images
    monkeypatch.setattr(model, 'encode_images', lambda x: encoded.append(len(x)) or original(x))
    predictor.reset(episode.instruction)
    for t in range(len(episode)):
        prediction = predictor.step({'corner': episode.images['corner'][t]},
                                    episode.joint_positions[t])
        assert isinstance(prediction, StagePrediction)
        assert prediction.value == pytest.approx(float(offline['value'][t]), abs=1e-5)
        assert prediction.progress == pytest.approx(prediction.value + 1.0, abs=1e-6)
        np.testing.assert_allclose(prediction.primitive_probs, offline['primitive_probs'][t],
                                   atol=1e-5)
    assert encoded == [1] * len(episode)
    with pytest.raises(ValueError, match='missing camera'):
        predictor.step({'wrist': episode.images['corner'][0]}, episode.joint_positions[0])
    with pytest.raises(ValueError, match='joint_positions'):
        predictor.step({'corner': episode.images['corner'][0]}, np.zeros(3))


def test_predictor_resizes_other_image_sizes():
    predictor = Sarm2Predictor.from_model(tiny_model())
    predictor.reset('place the square')
    prediction = predictor.step({'corner': np.zeros((48, 40, 3), np.uint8)}, np.zeros(9))
    assert 0.0 <= prediction.success_probability <= 1.0


def test_moe_uses_only_the_selected_gate_and_top2_experts():
    torch.manual_seed(0)
    moe = MultiGateMoE(d_model=8, num_gates=NUM_GROUPS, num_experts=10, top_k=2, hidden=4)
    x = torch.randn(5, 8)
    gates = torch.tensor([0, 3, 3, 7, 5])
    out, routing = moe(x, gates)
    logits = torch.einsum('bd,bed->be', x, moe.gate_weight[gates]) + moe.gate_bias[gates]
    expected_top = logits.topk(2, dim=-1).indices
    assert torch.equal(routing['top_index'].sort(-1).values, expected_top.sort(-1).values)
    assert torch.equal((routing['weights'] > 0).sum(-1), torch.full((5,), 2))
    torch.testing.assert_close(routing['weights'].sum(-1), torch.ones(5))
    # Changing an unselected gate or an unselected expert leaves every output unchanged.
    with torch.no_grad():
        moe.gate_weight[1] += 10.0
        unused = [e for e in range(10) if e not in expected_top.flatten().tolist()]
        moe.w2[unused] += 10.0
    torch.testing.assert_close(moe(x, gates)[0], out, rtol=0, atol=0)
    # Changing a selected expert of sample 0 changes sample 0's output.
    with torch.no_grad():
        moe.w2[expected_top[0, 0]] += 1.0
    assert moe(x, gates)[0][0] != out[0]


def test_mlp_gates_and_deep_experts_still_route_sparsely():
    torch.manual_seed(0)
    moe = MultiGateMoE(d_model=8, num_gates=NUM_GROUPS, num_experts=6, top_k=2, hidden=4,
                       layers=3, gate_hidden=5)
    x = torch.randn(4, 8)
    gates = torch.tensor([2, 2, 6, 0])
    out, routing = moe(x, gates)
    top = routing['top_index']
    with torch.no_grad():
        moe.gate_w1[1] += 10.0                          # a gate no sample uses
        unused = [e for e in range(6) if e not in top.flatten().tolist()]
        moe.hidden_w[1][unused] += 10.0                 # experts no sample routes to
    torch.testing.assert_close(moe(x, gates)[0], out, rtol=0, atol=0)
    with torch.no_grad():
        moe.gate_w1[2] += 1.0
    assert not torch.equal(moe(x, gates)[0][:2], out[:2])
    aux = moe.anchor_auxiliary_loss(routing)
    assert torch.isfinite(aux) and aux.requires_grad


def test_model_routes_by_the_predicted_primitive_group():
    model = tiny_model()
    episode = make_episode(4)
    seen = {}

    def spy(x, gate_ids):
        seen['gates'] = gate_ids.clone()
        return MultiGateMoE.forward(model.value.head, x, gate_ids)

    model.value.head.forward = spy
    predictor = Sarm2Predictor.from_model(model)
    predictor.reset(episode.instruction)
    prediction = predictor.step({'corner': episode.images['corner'][0]},
                                episode.joint_positions[0])
    assert seen['gates'].tolist() == [PRIMITIVE_TO_GROUP[prediction.primitive_id]]


def test_checkpoint_roundtrip_is_bit_identical(tmp_path):
    model = tiny_model(seed=5)
    model.set_state_normalization(np.arange(9) * 0.1, np.ones(9) * 2)
    episode = make_episode(5)
    before = predict_episode(model, episode)
    save_checkpoint(model, tmp_path / 'ckpt', metadata={'note': 'test'})
    assert sorted(p.name for p in (tmp_path / 'ckpt').iterdir()) == [
        'config.json', 'model.safetensors', 'normalization.safetensors']
    loaded = load_checkpoint(tmp_path / 'ckpt')
    after = predict_episode(loaded, episode)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    predictor = Sarm2Predictor.from_checkpoint(tmp_path / 'ckpt')
    assert predictor.model_id == Sarm2Predictor.from_model(model).model_id


def test_loading_never_unpickles(tmp_path, monkeypatch):
    save_checkpoint(tiny_model(), tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError('checkpoint loading must not unpickle')

    monkeypatch.setattr(pickle, 'load', refuse)
    monkeypatch.setattr(pickle, 'loads', refuse)
    monkeypatch.setattr(torch, 'load', refuse)
    load_checkpoint(tmp_path)


def test_corrupted_and_mismatched_checkpoints_fail_clearly(tmp_path):
    directory = save_checkpoint(tiny_model(), tmp_path / 'ok')
    weights = directory / 'model.safetensors'
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='model.safetensors.*not a readable'):
        load_checkpoint(directory)

    directory = save_checkpoint(tiny_model(), tmp_path / 'shape')
    config = json.loads((directory / 'config.json').read_text())
    config['config']['d_model'] = 64
    (directory / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r'model.safetensors.*shape'):
        load_checkpoint(directory)

    directory = save_checkpoint(tiny_model(), tmp_path / 'missing')
    tensors = load_file(str(directory / 'model.safetensors'))
    tensors.pop('value.success_head.weight')
    save_file(tensors, str(directory / 'model.safetensors'))
    with pytest.raises(CheckpointError, match='missing tensors.*success_head'):
        Sarm2Predictor.from_checkpoint(directory)

    directory = save_checkpoint(tiny_model(), tmp_path / 'keys')
    config = json.loads((directory / 'config.json').read_text())
    config['config']['n_layers'] = 3
    (directory / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r'config.json.*n_layers'):
        load_checkpoint(directory)

    (directory / 'config.json').write_text('{not json')
    with pytest.raises(CheckpointError, match='config.json.*not valid JSON'):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(tmp_path / 'nowhere')


def golden_inputs():
    return make_episode(11, length=20)


def test_golden_outputs_regression():
    """A checked-in tiny checkpoint must keep producing the checked-in outputs.

    Regenerate (after an intended change) with SARM2_REGENERATE_GOLDEN=1.
    """
    import os
    expected_file = GOLDEN_DIR / 'expected_outputs.json'
    if os.environ.get('SARM2_REGENERATE_GOLDEN'):
        model = tiny_model(seed=123)
        model.set_state_normalization(np.full(9, 0.3), np.full(9, 0.5))
        save_checkpoint(model, GOLDEN_DIR / 'checkpoint')
        out = predict_episode(model, golden_inputs())
        expected_file.write_text(json.dumps(
            {k: np.round(v, 7).tolist() for k, v in out.items()}))
    model = load_checkpoint(GOLDEN_DIR / 'checkpoint')
    out = predict_episode(model, golden_inputs())
    expected = json.loads(expected_file.read_text())
    for key, values in expected.items():
        np.testing.assert_allclose(out[key], np.array(values), atol=2e-5, err_msg=key)
