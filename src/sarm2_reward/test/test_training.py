"""Training: the loss falls, checkpoints resume, DDP over 2 gloo processes, baselines, CLIs."""

import json
import os
import socket

from lerobot_writer import write_lerobot
import numpy as np
import pytest
from sarm2_reward.baselines import SarmV1Config, SarmV1Model, TimeLinearBaseline
from sarm2_reward.checkpoint import load_checkpoint, state_fingerprint
from sarm2_reward.evaluation import evaluate, main as evaluate_main
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.train import main as train_main
from sarm2_reward.training import train_model, TrainConfig
from sarm2_reward.training_data import estimate_stage_priors, progress_targets, success_labels
from sarm2_common.vocabulary import primitive_id
from synthetic_episodes import make_episodes, one_torch_thread  # noqa: F401 - fixture
import torch
from torch import multiprocessing

TINY = {'image_size': 32, 'd_model': 32, 'frame_embed_dim': 32, 'cnn_channels': (8, 16),
        'expert_hidden': 16, 'n_heads': 2, 'stage_layers': 1, 'value_layers': 1,
        'stage_past_frames': 3, 'stage_gap': 2, 'value_past_frames': 3, 'value_gap': 3,
        'dropout': 0.0}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Sarm2Model(Sarm2Config(**{**TINY, **overrides}))


def test_targets_for_successful_and_failed_episodes():
    episodes = make_episodes(6, seed=0, failures=2)
    priors = estimate_stage_priors(episodes)['square-place']
    assert priors.stages == tuple(primitive_id(p) for p in ('reach', 'pick_grab', 'place'))
    assert sum(priors.priors) == pytest.approx(1.0)
    progress, weight = progress_targets(episodes[0], {'square-place': priors}, 0.9)
    assert progress[0] == 0.0 and progress[-1] == 1.0 and np.all(np.diff(progress) > 0)
    failed = episodes[-1]
    progress, weight = progress_targets(failed, {'square-place': priors}, 0.9)
    assert np.all(weight == 1) and progress.max() <= 0.9 and np.all(np.diff(progress) >= 0)
    progress, weight = progress_targets(failed, {}, 0.9)
    assert np.all(weight == 0)
    assert success_labels(episodes[0], 0.1)[-1] == 1 and success_labels(failed, 0.1).sum() == 0


def test_training_loss_falls_on_a_tiny_dataset():
    episodes = make_episodes(10, seed=0, failures=3)
    model = tiny_model()
    before, _, _ = evaluate(model, episodes)
    result = train_model(model, episodes, TrainConfig(steps=200, batch_size=16, lr=2e-3,
                                                      warmup_steps=10, eval_every=50),
                         val_episodes=episodes, progress=False)
    after, _, _ = evaluate(model, episodes)
    assert after['overall']['value_mse_macro'] < 0.5 * before['overall']['value_mse_macro']
    assert after['overall']['primitive_acc'] > 0.7
    losses = [entry['loss'] for entry in result['history']]
    assert losses[-1] < losses[0]


def test_checkpoint_resume_continues_the_step_count(tmp_path):
    episodes = make_episodes(4, seed=1)
    config = TrainConfig(steps=6, batch_size=4, eval_every=3, save_every=3)
    train_model(tiny_model(), episodes, config, out_dir=tmp_path, progress=False)
    state = json.loads((tmp_path / 'training_state.json').read_text())
    assert state['step'] == 6
    resumed = load_checkpoint(tmp_path)
    config = TrainConfig(steps=9, batch_size=4, eval_every=3, save_every=3)
    train_model(resumed, episodes, config, out_dir=tmp_path, resume=True, progress=False)
    assert json.loads((tmp_path / 'training_state.json').read_text())['step'] == 9
    log = [json.loads(line) for line in (tmp_path / 'train_log.jsonl').read_text().splitlines()]
    assert [entry['step'] for entry in log] == [3, 6, 9]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update({'WORLD_SIZE': str(world), 'RANK': str(rank), 'LOCAL_RANK': str(rank),
                       'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)})
    torch.set_num_threads(1)
    model = tiny_model(seed=rank)  # different init per rank: DDP must broadcast rank 0's
    result = train_model(model, make_episodes(4, seed=2), TrainConfig(steps=5, batch_size=4,
                                                                      device='cpu'),
                         progress=False)
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump({'fingerprint': state_fingerprint(model), 'world': result['world_size']}, f)
    torch.distributed.destroy_process_group()


def test_distributed_data_parallel_two_cpu_processes(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)]
    assert [r['world'] for r in results] == [2, 2]
    assert results[0]['fingerprint'] == results[1]['fingerprint']


def test_sarm_v1_baseline_trains_and_predicts_stage_progress():
    episodes = make_episodes(8, seed=3)
    priors = estimate_stage_priors(episodes)['square-place']
    torch.manual_seed(0)
    model = SarmV1Model(SarmV1Config.from_priors('square-place', priors,
                                                 Sarm2Config(**TINY)))
    before, _, _ = evaluate(model, episodes)
    train_model(model, episodes, TrainConfig(steps=150, batch_size=16, lr=2e-3,
                                             warmup_steps=10), progress=False)
    after, _, predictions = evaluate(model, episodes)
    assert after['overall']['value_mse_macro'] < before['overall']['value_mse_macro']
    assert after['overall']['primitive_acc'] > 0.7
    assert all(0 <= p['progress'].min() and p['progress'].max() <= 1 for p in predictions)


def test_time_linear_baseline():
    episodes = make_episodes(3, seed=4, length=21)
    baseline = TimeLinearBaseline().fit(episodes)
    metrics, _, _ = evaluate(baseline, episodes)
    assert metrics['overall']['value_mse_macro'] == pytest.approx(0.0)
    assert metrics['overall']['voc'] == pytest.approx(1.0)
    assert metrics['overall']['primitive_acc'] is None


def test_train_and_evaluate_clis_on_a_lerobot_dataset(tmp_path, capsys):
    data = write_lerobot(tmp_path / 'ds', make_episodes(5, seed=6, failures=2))
    model_config = tmp_path / 'model.json'
    model_config.write_text(json.dumps({k: v for k, v in TINY.items()
                                        if k not in ('image_size',)}))
    out = tmp_path / 'ckpt'
    args = [str(data), '--out', str(out), '--steps', '20', '--batch-size', '8',
            '--eval-every', '10', '--image-size', '32', '--model-config', str(model_config),
            '--no-progress']
    assert train_main(args) == 0
    assert {'config.json', 'model.safetensors', 'normalization.safetensors',
            'optimizer.safetensors', 'training_state.json'} <= {p.name for p in out.iterdir()}
    assert train_main(args) == 2  # refuses to overwrite without --resume
    assert 'already holds a checkpoint' in capsys.readouterr().err
    assert train_main(args[:4] + ['30'] + args[5:] + ['--resume']) == 0
    assert json.loads((out / 'training_state.json').read_text())['step'] == 30
    report = tmp_path / 'report'
    assert evaluate_main([str(data), '--checkpoint', str(out), '--out', str(report),
                          '--image-size', '32']) == 0
    metrics = json.loads((report / 'metrics.json').read_text())
    assert metrics['overall']['episodes'] == 7 and 'per_task' in metrics
    assert (report / 'progress.png').stat().st_size > 0
    assert (report / 'confusion.png').stat().st_size > 0
    assert evaluate_main([str(data), '--checkpoint', str(tmp_path / 'nothing'),
                          '--out', str(report)]) == 2
    assert 'nothing' in capsys.readouterr().err


def test_train_cli_on_recorded_demonstration_bags(tmp_path):
    demonstrations = pytest.importorskip('sarm2_sim.demonstrations')
    bags = tmp_path / 'bags'
    demonstrations.record_demonstrations(bags, ['reach-v3'], 2, failure_fraction=0.0,
                                         image_size=32, progress=False, max_steps=40)
    model_config = tmp_path / 'model.json'
    model_config.write_text(json.dumps({k: v for k, v in TINY.items() if k != 'image_size'}))
    out = tmp_path / 'ckpt'
    assert train_main([str(bags), '--out', str(out), '--steps', '4', '--batch-size', '4',
                       '--eval-every', '2', '--model-config', str(model_config),
                       '--no-progress']) == 0
    model = load_checkpoint(out)
    assert model.config.cameras == ('corner',) and model.config.image_size == 32
    # A recorder killed mid-episode leaves no metadata.yaml: evaluated as far as readable,
    # and listed in the report.
    killed = sorted(bags.rglob('metadata.yaml'))[0]
    killed.unlink()
    report = tmp_path / 'report'
    assert evaluate_main([str(bags), '--checkpoint', str(out), '--out', str(report)]) == 0
    index = (report / 'index.html').read_text()
    assert 'partial bag' in index and killed.parent.name in index
    assert len(list((report / 'episodes').glob('*.png'))) == 2
    assert (report / 'success.png').stat().st_size > 0


ANCHOR = {'head_input': 'concat', 'gate_hidden': 16, 'expert_layers': 3,
          'value_loss_positions': 'all', 'aux_loss': 'anchor', 'stage_loss_weight': 0.25}


def test_anchor_value_head_switches_train_and_load(tmp_path):
    """Every fidelity switch at once: the loss falls, all slots get targets, the model loads."""
    episodes = make_episodes(5, seed=0, failures=1)
    model = tiny_model(**ANCHOR)
    batch_keys = {}
    original_forward = model.forward

    def spy(batch, stage_only=False):
        batch_keys.update({k: v.shape for k, v in batch.items()})
        return original_forward(batch, stage_only)

    model.forward = spy
    result = train_model(model, episodes, TrainConfig(steps=40, batch_size=8, lr=3e-3,
                                                      warmup_steps=5, eval_every=10,
                                                      stage_pretrain_steps=10),
                         out_dir=tmp_path / 'ckpt', val_episodes=episodes[:2], progress=False)
    history = result['history']
    # The first 10 steps train the stage estimator alone: no value loss is logged there.
    assert 'mse' not in history[0] and 'mse_all_slots' in history[-1]
    assert history[-1]['mse_all_slots'] < 0.1
    assert batch_keys['slot_progress'] == batch_keys['value_index']
    loaded = load_checkpoint(tmp_path / 'ckpt')
    assert loaded.config.head_input == 'concat' and loaded.config.expert_layers == 3
    assert evaluate(loaded, episodes[:1])[0]['overall']['voc'] > 0


def test_stage_pretraining_leaves_the_value_decoder_untouched():
    model = tiny_model(**ANCHOR)
    from sarm2_reward.text_embedding import make_text_embedder
    from sarm2_reward.training import window_sizes
    from sarm2_reward.training_data import EpisodeSampler, TargetConfig

    episodes = make_episodes(2, seed=3)
    text = make_text_embedder('')
    sampler = EpisodeSampler(episodes, ('corner',), window_sizes(model.config),
                             {e.instruction: text.embed([e.instruction])[0] for e in episodes},
                             estimate_stage_priors(episodes), TargetConfig(), seed=0)
    loss, logs = model(sampler.sample(8), stage_only=True)
    loss.backward()
    assert set(logs) == {'loss', 'primitive_ce', 'primitive_acc'}
    assert all(p.grad is None for p in model.value.parameters())
    assert model.stage.primitive_head.weight.grad.abs().sum() > 0
    assert model.stage.group_head.weight.grad is None or \
        model.stage.group_head.weight.grad.abs().sum() == 0
