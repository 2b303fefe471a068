"""Reward-model quality: SARM2 against its baselines on the same split of simulated demos.

One process, one data split, every model trained on the same training episodes:

- ``sarm2``: stage estimator + multi-gate MoE value decoder (``Sarm2Model``);
- ``single_head``: the same multi-task model with one value MLP instead of the MoE (ablation);
- ``sarm_v1``: SARM v1 style, one stage-classifier + within-stage-progress model per task;
- ``time_linear``: progress = t / mean successful length of the task (no images).

Data: ``sarm2_sim.demonstrations.record_demonstrations`` on every catalogue task (successes,
suboptimal runs and failures, failure_fraction 0.3), cached under ``--data-dir`` so reruns skip
recording. Each training task's episodes are split once (fixed seed) into training and held-out
episodes; the catalogue's held-out tasks are never trained on.

Reported per model (mean and std over ``--seeds`` training seeds), overall and per task: value
MSE (macro over episodes, micro over frames) and VOC on successful held-out episodes, primitive
and group accuracy, success AUROC and success-vs-failure pairwise accuracy; the same on the
held-out tasks. The last stdout line is one JSON object.
"""

import argparse
import json
import logging
import os
from pathlib import Path
import sys
import time

import numpy as np
from sarm2_reward.baselines import SarmV1Config, SarmV1Model, TimeLinearBaseline
from sarm2_reward.datasets import split_by_task
from sarm2_common.bag_dataset import read_episodes
from sarm2_reward.evaluation import evaluate, PerTaskModels
from sarm2_reward.inference import Sarm2Predictor
from sarm2_reward.lrm.options import add_lrm_arguments, lrm_from_args, lrm_requested
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.train import TrainConfig, train_model
from sarm2_reward.training_data import estimate_stage_priors
from sarm2_common.catalogue import load_catalogue
from sarm2_sim.demonstrations import record_demonstrations
import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ('sarm2', 'single_head', 'sarm_v1', 'time_linear')
METRICS = ('value_mse_macro', 'value_mse_micro', 'voc', 'primitive_acc', 'group_acc', 'auroc',
           'pairwise_acc')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='fewer episodes, steps and seeds: minutes on 2 cores')
    parser.add_argument('--seeds', type=int, help='training seeds (default 3, quick 1)')
    parser.add_argument('--episodes-per-task', type=int, help='train-task episodes recorded')
    parser.add_argument('--heldout-episodes', type=int, help='episodes per held-out task')
    parser.add_argument('--steps', type=int, help='training steps of each multi-task model')
    parser.add_argument('--v1-steps', type=int, help='training steps of each per-task model')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--test-fraction', type=float, default=0.3,
                        help="share of each training task's episodes held out")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--data-dir', type=Path,
                        help='demo cache (default runs/bench/reward_quality/demos-<mode>)')
    parser.add_argument('--out', type=Path, help='write the full results JSON here')
    # Given a VLM (--lrm-endpoint(s)/--lrm-model-dir), the zero-shot LRM is one more row.
    add_lrm_arguments(parser, query_every=5)
    args = parser.parse_args(argv)
    quick = {'seeds': 1, 'episodes_per_task': 10, 'heldout_episodes': 6, 'steps': 600,
             'v1_steps': 200}
    full = {'seeds': 3, 'episodes_per_task': 20, 'heldout_episodes': 10, 'steps': 2000,
            'v1_steps': 500}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    mode = 'quick' if args.quick else 'full'
    args.data_dir = args.data_dir or ROOT / 'runs' / 'bench' / 'reward_quality' / f'demos-{mode}'
    return args


def load_demos(args, catalogue) -> tuple[list, list]:
    """Record (or reuse) demos; return (training-task episodes, held-out-task episodes)."""
    train_tasks = [name for name, spec in catalogue.items() if spec.split == 'train']
    heldout_tasks = [name for name, spec in catalogue.items() if spec.split == 'heldout']
    started = time.perf_counter()
    paths = record_demonstrations(args.data_dir / 'train', train_tasks, args.episodes_per_task,
                                  seed=0, failure_fraction=0.3, progress=True)
    paths += record_demonstrations(args.data_dir / 'heldout', heldout_tasks,
                                   args.heldout_episodes, seed=1, failure_fraction=0.3,
                                   progress=True)
    episodes = read_episodes(paths)
    print(f'demos: {len(episodes)} episodes ready in {time.perf_counter() - started:.0f} s',
          file=sys.stderr)
    heldout = set(heldout_tasks)
    return ([e for e in episodes if e.task not in heldout],
            [e for e in episodes if e.task in heldout])


def model_config(episodes) -> Sarm2Config:
    first = episodes[0]
    return Sarm2Config(cameras=tuple(first.cameras),
                       image_size=first.images[first.cameras[0]].shape[1],
                       state_dim=first.joint_positions.shape[1])


def train_all(train, seed: int, args) -> dict:
    """Train every model of the comparison on ``train``; return {name: model} and timings."""
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=seed,
                         eval_every=0, num_threads=args.threads)
    models, seconds = {}, {}
    for name, head in (('sarm2', 'moe'), ('single_head', 'single')):
        started = time.perf_counter()
        torch.manual_seed(seed)
        model = Sarm2Model(Sarm2Config(**{**model_config(train).to_dict(), 'value_head': head}))
        print(f'[seed {seed}] training {name}', file=sys.stderr)
        train_model(model, train, config)
        models[name], seconds[name] = model, time.perf_counter() - started
    started = time.perf_counter()
    per_task = {}
    priors = estimate_stage_priors(train)
    v1_config = TrainConfig(steps=args.v1_steps, batch_size=args.batch_size, seed=seed,
                            eval_every=0, num_threads=args.threads)
    for task in sorted(priors):
        torch.manual_seed(seed)
        model = SarmV1Model(SarmV1Config.from_priors(task, priors[task], model_config(train)))
        print(f'[seed {seed}] training sarm_v1 for {task}', file=sys.stderr)
        train_model(model, [e for e in train if e.task == task], v1_config, progress=False)
        per_task[task] = model
    models['sarm_v1'], seconds['sarm_v1'] = PerTaskModels(per_task), time.perf_counter() - started
    models['time_linear'] = TimeLinearBaseline().fit(train)
    seconds['time_linear'] = 0.0
    return models, seconds


def predictor_rate(model, episodes) -> float:
    """Live predictor steps per second (one new frame per step, all cameras), 1 thread."""
    predictor = Sarm2Predictor.from_model(model)
    steps, seconds = 0, 0.0
    for episode in episodes:
        predictor.reset(episode.instruction)
        started = time.perf_counter()
        for t in range(len(episode)):
            predictor.step({c: episode.images[c][t] for c in episode.cameras},
                           episode.joint_positions[t])
        seconds += time.perf_counter() - started
        steps += len(episode)
    return steps / seconds


def lrm_baseline(args, train):
    """Build the zero-shot LRM reward model when a VLM is given (--lrm-*); else None."""
    if not lrm_requested(args):
        return None
    from sarm2_reward.lrm.lrm_backend import LrmEpisodePredictor

    source, config = lrm_from_args(args, default_camera=train[0].cameras[0])
    return LrmEpisodePredictor(source.make_client(), config)


def aggregate(runs: list[dict]) -> dict:
    """Mean and std over seeds of every metric in a list of metric dicts (None stays None)."""
    out = {}
    for key in METRICS:
        values = [r[key] for r in runs if r and r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
        out[key + '_std'] = float(np.std(values)) if len(values) > 1 else None
    return out


def fmt(value) -> str:
    return '   n/a' if value is None else f'{value:6.3f}'


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    catalogue = load_catalogue()
    train_task_episodes, heldout_task_episodes = load_demos(args, catalogue)
    train, test = split_by_task(train_task_episodes, args.test_fraction)
    print(f'split: {len(train)} training episodes, {len(test)} held-out episodes of '
          f'{len({e.task for e in train})} tasks, {len(heldout_task_episodes)} episodes of '
          f'held-out tasks', file=sys.stderr)
    lrm = lrm_baseline(args, train)
    names = MODELS + (('lrm',) if lrm is not None else ())
    results = {name: {'test': [], 'heldout_tasks': [], 'per_task': [], 'train_seconds': []}
               for name in names}
    rates = []
    for seed in range(args.seeds):
        models, seconds = train_all(train, seed, args)
        if lrm is not None:       # zero-shot: nothing to train, the same answers every seed
            models['lrm'], seconds['lrm'] = lrm, 0.0
        rates.append(predictor_rate(models['sarm2'], test[:3]))
        for name, model in models.items():
            metrics, _, _ = evaluate(model, test)
            heldout, _, _ = evaluate(model, heldout_task_episodes)
            results[name]['test'].append(metrics['overall'])
            results[name]['per_task'].append(metrics['per_task'])
            results[name]['heldout_tasks'].append(heldout['overall'])
            results[name]['train_seconds'].append(seconds[name])
    summary = {}
    for name in names:
        tasks = sorted(results[name]['per_task'][0]) if results[name]['per_task'] else []
        summary[name] = {
            'test': aggregate(results[name]['test']),
            'heldout_tasks': aggregate(results[name]['heldout_tasks']),
            'per_task': {t: aggregate([run.get(t) for run in results[name]['per_task']])
                         for t in tasks},
            'train_seconds': float(np.mean(results[name]['train_seconds'])),
        }
    print('\nheld-out episodes of training tasks (mean over seeds)', file=sys.stderr)
    header = f'{"model":12s} ' + ' '.join(f'{m[:12]:>12s}' for m in METRICS)
    print(header, file=sys.stderr)
    for name in names:
        row = summary[name]['test']
        print(f'{name:12s} ' + ' '.join(f'{fmt(row[m]):>12s}' for m in METRICS),
              file=sys.stderr)
    print('\nheld-out tasks', file=sys.stderr)
    for name in names:
        row = summary[name]['heldout_tasks']
        print(f'{name:12s} ' + ' '.join(f'{fmt(row[m]):>12s}' for m in METRICS),
              file=sys.stderr)
    sarm2 = summary['sarm2']
    baselines = {n: summary[n]['test']['value_mse_macro'] for n in names if n != 'sarm2'}
    best = min(baselines, key=lambda n: baselines[n])
    report = {
        'sarm2_mse': sarm2['test']['value_mse_macro'],
        'sarm2_mse_micro': sarm2['test']['value_mse_micro'],
        'best_baseline': best,
        'best_baseline_mse': baselines[best],
        'mse_ratio': sarm2['test']['value_mse_macro'] / baselines[best],
        'baseline_mse': baselines,
        'voc': sarm2['test']['voc'],
        'primitive_acc': sarm2['test']['primitive_acc'],
        'group_acc': sarm2['test']['group_acc'],
        'auroc': sarm2['test']['auroc'],
        'pairwise_acc': sarm2['test']['pairwise_acc'],
        'heldout_task_voc': sarm2['heldout_tasks']['voc'],
        'heldout_task_mse': sarm2['heldout_tasks']['value_mse_macro'],
        'predictor_steps_per_s': float(np.mean(rates)),
        'seeds': args.seeds,
        'train_episodes': len(train),
        'test_episodes': len(test),
        'heldout_task_episodes': len(heldout_task_episodes),
        'quick': args.quick,
    }
    out = args.out or ROOT / 'runs' / 'bench' / 'reward_quality' / \
        f'results-{"quick" if args.quick else "full"}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'report': report, 'summary': summary,
                               'args': {k: str(v) for k, v in vars(args).items()}}, indent=1))
    print(f'full results: {out}', file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == '__main__':
    os.environ.setdefault('MUJOCO_GL', 'egl')
    sys.exit(main())
