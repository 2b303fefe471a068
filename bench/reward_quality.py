"""Reward-model quality: SARM2 against its baselines on simulated demos and on policy rollouts.

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
held-out tasks. ``best_baseline`` / ``mse_ratio`` compare SARM2 with the baselines that are not
ablations of itself (SARM v1, time-linear, LRM when given); ``single_head_ratio`` is SARM2's MSE
over its single-head ablation's.

Rollout section (what SPIRAL consumes): the compact VLA is trained by behaviour cloning on
demonstrations of ``--rollout-tasks`` (``bench/policy.py``'s recipe, cached), its rollouts are
run in-process through the policy node's control core and recorded as policy-node bags
(``sarm2_bringup.rollout_bags``, cached), and labelled from the simulator's truth
(``label_rollouts_from_sim``, on the progress scale of the training demonstrations). Per task
the rollouts are split (fixed seed, per outcome) into a
fine-tuning part (at most ``--finetune-rollouts`` in all) and a held-out part. ``sarm2_finetuned``
is each seed's SARM2 fine-tuned on the training demos plus the labelled fine-tuning rollouts
(``sarm2_reward.flywheel``); its success threshold is calibrated on those rollouts. On the
held-out rollouts, per task: AUROC and pairwise accuracy of the final progress, of the episode
return and of the success head, VOC on successful rollouts, and the success head's false-positive
rate (3 frames in a row at the threshold; 0.9 for models without a calibration). The last stdout
line is one JSON object.
"""

import argparse
import copy
import json
import logging
import os
from pathlib import Path
import sys
import time

import numpy as np
from sarm2_common.bag_dataset import read_episodes
from sarm2_common.catalogue import load_catalogue
from sarm2_reward.baselines import SarmV1Config, SarmV1Model, TimeLinearBaseline
from sarm2_reward.datasets import split_by_task
from sarm2_reward.evaluation import evaluate, PerTaskModels, predict_any
from sarm2_reward.flywheel import (LabelledRollouts, load_labelled_rollouts, RolloutMix,
                                   train_with_rollouts)
from sarm2_reward.inference import Sarm2Predictor
from sarm2_reward.lrm.options import add_lrm_arguments, lrm_from_args, lrm_requested
from sarm2_reward.metrics import summarize_rollouts
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.training import TrainConfig, train_model
from sarm2_reward.training_data import estimate_stage_priors, TargetConfig
from sarm2_sim.demonstrations import record_demonstrations, TIMINGS
from sarm2_sim.sim_labels import main as label_rollouts_from_sim, SEGMENT_MODES
from spiral_policy.compact_vla import CompactVlaPolicy
from sarm2_bringup.rollout_bags import record_sim_rollouts
import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ('sarm2', 'single_head', 'sarm_v1', 'time_linear')
# SARM2 itself with another head: reported as an ablation, never as "the best baseline".
ABLATIONS = ('single_head',)
METRICS = ('value_mse_macro', 'value_mse_micro', 'voc', 'primitive_acc', 'group_acc', 'auroc',
           'pairwise_acc')
ROLLOUT_MODELS = ('sarm2', 'sarm2_finetuned', 'single_head', 'sarm_v1', 'time_linear')
ROLLOUT_METRICS = ('final_auroc', 'final_pairwise', 'return_auroc', 'return_pairwise',
                   'success_auroc', 'success_pairwise', 'voc', 'false_positive_rate',
                   'true_positive_rate')
ROLLOUT_TASKS = ('button-press-topdown-v3', 'window-close-v3', 'drawer-open-v3')
ROLLOUT_SEED_OFFSET = 300_000        # rollout seeds never overlap demonstration seeds
DEFAULT_SUCCESS_THRESHOLD = 0.9      # the policy node's success_threshold default
CONSECUTIVE = 3


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
    parser.add_argument('--cache-dir', type=Path, default=ROOT / 'runs' / 'bench' /
                        'reward_quality', help='where demos, the VLA and rollouts are cached')
    parser.add_argument('--data-dir', type=Path,
                        help='demo cache (default <cache-dir>/demos-<mode>[-varied])')
    parser.add_argument('--out', type=Path, help='write the full results JSON here')
    # Given a VLM (--lrm-endpoint(s)/--lrm-model-dir), the zero-shot LRM is one more row.
    add_lrm_arguments(parser, query_every=5)
    parser.add_argument('--demo-timing', choices=TIMINGS, default='varied',
                        help='demonstration pace: varied (speed changes, pauses, re-grasps; '
                             "time alone does not tell progress) or fixed (the expert's pace)")
    parser.add_argument('--sarm2-config', default='{}',
                        help='JSON of Sarm2Config fields for sarm2 and single_head (e.g. the '
                             'anchor switches: {"value_loss_positions": "all"})')
    parser.add_argument('--targets', default='{}',
                        help='JSON of TargetConfig fields (e.g. {"rewind_prob": 0.8})')
    parser.add_argument('--stage-pretrain-steps', type=int, default=0,
                        help='SARM2 stage estimator trained alone for the first N steps')
    parser.add_argument('--skip-baselines', action='store_true',
                        help='train only SARM2 (and time-linear): for comparing SARM2 settings')
    rollouts = parser.add_argument_group('rollout section')
    rollouts.add_argument('--rollout-tasks', nargs='+', default=list(ROLLOUT_TASKS),
                          help='tasks the compact VLA is trained on and rolled out in')
    rollouts.add_argument('--rollouts-per-task', type=int, help='rollouts recorded per task')
    rollouts.add_argument('--finetune-rollouts', type=int, default=99,
                          help='labelled rollouts used for fine-tuning, in all tasks together')
    rollouts.add_argument('--finetune-steps', type=int, help='fine-tuning steps')
    rollouts.add_argument('--finetune-lr', type=float, default=3e-4)
    rollouts.add_argument('--rollout-share', type=float, default=0.5,
                          help='share of fine-tuning frames drawn from labelled rollouts')
    rollouts.add_argument('--label-segments', choices=SEGMENT_MODES, default='failures',
                          help='segments of the simulator labels (label_rollouts_from_sim)')
    rollouts.add_argument('--vla-demos-per-task', type=int, help='demos the VLA is cloned from')
    rollouts.add_argument('--vla-steps', type=int, help='behaviour-cloning steps of the VLA')
    rollouts.add_argument('--rollout-max-steps', type=int, default=150,
                          help='control steps per rollout (bench/policy.py uses 150)')
    args = parser.parse_args(argv)
    quick = {'seeds': 1, 'episodes_per_task': 10, 'heldout_episodes': 6, 'steps': 600,
             'v1_steps': 200, 'rollouts_per_task': 16, 'finetune_steps': 200,
             'vla_demos_per_task': 10, 'vla_steps': 400}
    full = {'seeds': 3, 'episodes_per_task': 20, 'heldout_episodes': 10, 'steps': 2000,
            'v1_steps': 500, 'rollouts_per_task': 66, 'finetune_steps': 1200,
            'vla_demos_per_task': 20, 'vla_steps': 1000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for name in ('sarm2_config', 'targets'):
        try:
            setattr(args, name, json.loads(getattr(args, name)))
        except json.JSONDecodeError as error:
            parser.error(f'--{name.replace("_", "-")}: not JSON ({error})')
    mode = 'quick' if args.quick else 'full'
    timing = '' if args.demo_timing == 'fixed' else f'-{args.demo_timing}'
    args.data_dir = args.data_dir or args.cache_dir / f'demos-{mode}{timing}'
    args.vla_dir = args.cache_dir / f'vla-{mode}'
    args.rollout_dir = args.cache_dir / f'rollouts-{mode}'
    return args


def load_demos(args, catalogue) -> tuple[list, list]:
    """Record (or reuse) demos; return (training-task episodes, held-out-task episodes)."""
    train_tasks = [name for name, spec in catalogue.items() if spec.split == 'train']
    heldout_tasks = [name for name, spec in catalogue.items() if spec.split == 'heldout']
    started = time.perf_counter()
    paths = record_demonstrations(args.data_dir / 'train', train_tasks, args.episodes_per_task,
                                  seed=0, failure_fraction=0.3, progress=True,
                                  timing=args.demo_timing)
    paths += record_demonstrations(args.data_dir / 'heldout', heldout_tasks,
                                   args.heldout_episodes, seed=1, failure_fraction=0.3,
                                   progress=True, timing=args.demo_timing)
    episodes = read_episodes(paths)
    print(f'demos: {len(episodes)} episodes ready in {time.perf_counter() - started:.0f} s',
          file=sys.stderr)
    heldout = set(heldout_tasks)
    return ([e for e in episodes if e.task not in heldout],
            [e for e in episodes if e.task in heldout])


def model_config(episodes, **overrides) -> Sarm2Config:
    first = episodes[0]
    return Sarm2Config(cameras=tuple(first.cameras),
                       image_size=first.images[first.cameras[0]].shape[1],
                       state_dim=first.joint_positions.shape[1], **overrides)


def prepare_rollouts(args, demos) -> dict[str, list[Path]]:
    """Train (or reuse) the compact VLA, record (or reuse) its rollouts, label them all.

    The labels' progress scale is calibrated on ``demos`` (the training demonstrations).
    """
    from argparse import Namespace

    sys.path.insert(0, str(ROOT / 'bench'))
    from policy import train_base_policy     # the base-VLA recipe of bench/policy.py

    checkpoint = args.vla_dir / 'compact_vla'
    if not (checkpoint / 'training.json').is_file():
        print(f'training the compact VLA in {args.vla_dir}', file=sys.stderr)
        train_base_policy(Namespace(tasks=args.rollout_tasks,
                                    demos_per_task=args.vla_demos_per_task, seed=0,
                                    train_steps=args.vla_steps, batch_size=32,
                                    threads=args.threads), args.vla_dir)
    policy = CompactVlaPolicy.from_checkpoint(checkpoint)
    bags = {}
    for task in args.rollout_tasks:
        seeds = [ROLLOUT_SEED_OFFSET + i for i in range(args.rollouts_per_task)]
        results = record_sim_rollouts(policy, task, seeds, args.rollout_dir / task,
                                      max_steps=args.rollout_max_steps,
                                      metadata={'vla_checkpoint': str(checkpoint)})
        bags[task] = [Path(r.bag) for r in results]
        print(f'rollouts {task}: {sum(r.success for r in results)}/{len(results)} successes '
              f'({policy.policy_id})', file=sys.stderr)
    scale = [str(e.metadata['bag_path']) for e in demos if e.task in args.rollout_tasks]
    status = label_rollouts_from_sim(['--segments', args.label_segments, '--demos', *scale, '--']
                                     + [str(args.rollout_dir / t) for t in args.rollout_tasks])
    if status != 0:
        raise RuntimeError(f'labelling the rollouts failed (exit {status})')
    return bags


def split_rollouts(rollouts: LabelledRollouts, finetune_total: int,
                   seed: int = 12345) -> tuple[LabelledRollouts, LabelledRollouts]:
    """Per task, a fixed random share of successes and failures to fine-tune on, the rest held out.

    At most ``finetune_total`` fine-tuning rollouts in all (equal per task, at most half of a
    task's rollouts), split across outcomes in proportion.
    """
    rng = np.random.default_rng(seed)
    tasks = sorted({e.task for e in rollouts.episodes})
    chosen = set()
    for task in tasks:
        indices = [i for i, e in enumerate(rollouts.episodes) if e.task == task]
        count = min(finetune_total // len(tasks), len(indices) // 2)
        successes = [i for i in indices if rollouts.episodes[i].success]
        failures = [i for i in indices if not rollouts.episodes[i].success]
        take = min(len(successes), int(round(count * len(successes) / len(indices))))
        take = max(take, count - len(failures))
        chosen.update(rng.permutation(successes)[:take].tolist())
        chosen.update(rng.permutation(failures)[:count - take].tolist())

    def subset(keep) -> LabelledRollouts:
        index = [i for i in range(len(rollouts.episodes)) if keep(i)]
        return LabelledRollouts([rollouts.episodes[i] for i in index],
                                [rollouts.provenance[i] for i in index])
    return subset(lambda i: i in chosen), subset(lambda i: i not in chosen)


def train_all(train, seed: int, args) -> dict:
    """Train every model of the comparison on ``train``; return {name: model} and timings."""
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=seed,
                         eval_every=0, num_threads=args.threads,
                         stage_pretrain_steps=args.stage_pretrain_steps)
    targets = TargetConfig(**args.targets)
    models, seconds = {}, {}
    heads = (('sarm2', 'moe'),) if args.skip_baselines else \
        (('sarm2', 'moe'), ('single_head', 'single'))
    for name, head in heads:
        started = time.perf_counter()
        torch.manual_seed(seed)
        model = Sarm2Model(model_config(train, **{**args.sarm2_config, 'value_head': head}))
        print(f'[seed {seed}] training {name}', file=sys.stderr)
        train_model(model, train, config, targets)
        models[name], seconds[name] = model, time.perf_counter() - started
    models['time_linear'] = TimeLinearBaseline().fit(train)
    seconds['time_linear'] = 0.0
    if args.skip_baselines:
        return models, seconds
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
    return models, seconds


def finetune(model, train, finetune_rollouts: LabelledRollouts, seed: int, args):
    """Fine-tune a copy of the demo-only SARM2 on demos + labelled rollouts; return it."""
    tuned = copy.deepcopy(model)
    config = TrainConfig(steps=args.finetune_steps, batch_size=args.batch_size,
                         lr=args.finetune_lr, warmup_steps=20, seed=seed, eval_every=0,
                         num_threads=args.threads)
    print(f'[seed {seed}] fine-tuning sarm2 on {len(finetune_rollouts.episodes)} labelled '
          'rollouts', file=sys.stderr)
    result = train_with_rollouts(tuned, train, finetune_rollouts, None, config,
                                 RolloutMix(share=args.rollout_share),
                                 TargetConfig(**args.targets), progress=True,
                                 fit_normalization=False)
    return tuned, result['calibration']


def rollout_metrics(model, episodes, threshold: float,
                    task_thresholds: dict[str, float] | None = None) -> dict:
    """Rollout metrics per task (and pooled) of one model on held-out rollouts.

    ``task_thresholds`` (task -> success threshold) overrides ``threshold`` for its tasks.
    """
    task_thresholds = task_thresholds or {}
    predictions = [predict_any(model, e) for e in episodes]
    tasks = sorted({e.task for e in episodes})
    per_task = {}
    for task in tasks:
        chosen = [i for i, e in enumerate(episodes) if e.task == task]
        per_task[task] = summarize_rollouts([episodes[i] for i in chosen],
                                            [predictions[i] for i in chosen],
                                            task_thresholds.get(task, threshold), CONSECUTIVE)
    thresholds = np.array([task_thresholds.get(e.task, threshold) for e in episodes])
    return {'per_task': per_task,
            'pooled': summarize_rollouts(episodes, predictions, thresholds, CONSECUTIVE)}


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


def aggregate(runs: list[dict], metrics=METRICS) -> dict:
    """Mean and std over seeds of every metric in a list of metric dicts (None stays None)."""
    out = {}
    for key in metrics:
        values = [r[key] for r in runs if r and r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
        out[key + '_std'] = float(np.std(values)) if len(values) > 1 else None
    return out


def fmt(value) -> str:
    return '   n/a' if value is None else f'{value:6.3f}'


def _mean_metric(runs: list[dict], key: str):
    values = [run[key] for run in runs if run and run.get(key) is not None]
    return float(np.mean(values)) if values else None


def print_table(title: str, rows: dict, metrics, width: int = 16) -> None:
    print(f'\n{title}', file=sys.stderr)
    print(f'{"model":{width}s} ' + ' '.join(f'{m[:12]:>12s}' for m in metrics), file=sys.stderr)
    for name, row in rows.items():
        print(f'{name:{width}s} ' + ' '.join(f'{fmt(row.get(m)):>12s}' for m in metrics),
              file=sys.stderr)


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
    rollout_bags = prepare_rollouts(args, train)
    rollouts = load_labelled_rollouts([b for bags in rollout_bags.values() for b in bags])
    finetune_part, heldout_rollouts = split_rollouts(rollouts, args.finetune_rollouts)
    print(f'rollouts: {len(finetune_part.episodes)} labelled for fine-tuning, '
          f'{len(heldout_rollouts.episodes)} held out '
          f'({sum(e.success for e in heldout_rollouts.episodes)} successes)', file=sys.stderr)
    lrm = lrm_baseline(args, train)
    names = tuple(n for n in MODELS if not (args.skip_baselines and n in ('single_head',
                                                                            'sarm_v1')))
    names += ('sarm2_finetuned',) + (('lrm',) if lrm is not None else ())
    results = {name: {'test': [], 'heldout_tasks': [], 'per_task': [], 'train_seconds': [],
                      'rollouts': []} for name in names}
    # The fine-tuned model's success head again at each task's own calibrated threshold.
    task_calibrated = []
    rates, calibrations = [], []
    for seed in range(args.seeds):
        models, seconds = train_all(train, seed, args)
        started = time.perf_counter()
        models['sarm2_finetuned'], calibration = finetune(models['sarm2'], train, finetune_part,
                                                          seed, args)
        seconds['sarm2_finetuned'] = time.perf_counter() - started
        calibrations.append(calibration)
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
            threshold = calibration['threshold'] if name == 'sarm2_finetuned' \
                else DEFAULT_SUCCESS_THRESHOLD
            results[name]['rollouts'].append(
                rollout_metrics(model, heldout_rollouts.episodes, threshold))
            if name == 'sarm2_finetuned':
                task_calibrated.append(rollout_metrics(
                    model, heldout_rollouts.episodes, threshold,
                    {t: c['threshold'] for t, c in calibration['per_task'].items()}))
    summary = {}
    for name in names:
        tasks = sorted(results[name]['per_task'][0]) if results[name]['per_task'] else []
        rollout_runs = results[name]['rollouts']
        summary[name] = {
            'test': aggregate(results[name]['test']),
            'heldout_tasks': aggregate(results[name]['heldout_tasks']),
            'per_task': {t: aggregate([run.get(t) for run in results[name]['per_task']])
                         for t in tasks},
            'train_seconds': float(np.mean(results[name]['train_seconds'])),
            'rollouts': {
                'pooled': aggregate([r['pooled'] for r in rollout_runs], ROLLOUT_METRICS),
                'per_task': {t: aggregate([r['per_task'][t] for r in rollout_runs],
                                          ROLLOUT_METRICS) for t in args.rollout_tasks}},
        }
    print_table('held-out episodes of training tasks (mean over seeds)',
                {n: summary[n]['test'] for n in names}, METRICS)
    print_table('held-out tasks', {n: summary[n]['heldout_tasks'] for n in names}, METRICS)
    for task in args.rollout_tasks:
        print_table(f'held-out rollouts of {task}',
                    {n: summary[n]['rollouts']['per_task'][task] for n in names},
                    ROLLOUT_METRICS)
    sarm2 = summary['sarm2']
    baselines = {n: summary[n]['test']['value_mse_macro'] for n in names
                 if n not in ('sarm2', 'sarm2_finetuned') and n not in ABLATIONS}
    best = min(baselines, key=lambda n: baselines[n])

    def worst_task(name: str, key: str = 'final_auroc'):
        values = [summary[name]['rollouts']['per_task'][t][key] for t in args.rollout_tasks]
        values = [v for v in values if v is not None]
        return min(values) if values else None

    tuned = summary['sarm2_finetuned']
    task_pooled = aggregate([r['pooled'] for r in task_calibrated], ROLLOUT_METRICS)
    task_rates = {t: aggregate([r['per_task'][t] for r in task_calibrated], ROLLOUT_METRICS)
                  for t in args.rollout_tasks}
    report = {
        'sarm2_mse': sarm2['test']['value_mse_macro'],
        'sarm2_mse_micro': sarm2['test']['value_mse_micro'],
        'best_baseline': best,
        'best_baseline_mse': baselines[best],
        'mse_ratio': sarm2['test']['value_mse_macro'] / baselines[best],
        'baseline_mse': baselines,
        'single_head_ratio': (sarm2['test']['value_mse_macro']
                              / summary['single_head']['test']['value_mse_macro'])
        if 'single_head' in summary else None,
        'voc': sarm2['test']['voc'],
        'primitive_acc': sarm2['test']['primitive_acc'],
        'group_acc': sarm2['test']['group_acc'],
        'auroc': sarm2['test']['auroc'],
        'pairwise_acc': sarm2['test']['pairwise_acc'],
        'heldout_task_voc': sarm2['heldout_tasks']['voc'],
        'heldout_task_mse': sarm2['heldout_tasks']['value_mse_macro'],
        'finetuned_mse': tuned['test']['value_mse_macro'],
        'finetuned_voc': tuned['test']['voc'],
        'finetuned_auroc': tuned['test']['auroc'],
        'rollout_auroc_demo_only': worst_task('sarm2'),
        'rollout_auroc_finetuned': worst_task('sarm2_finetuned'),
        'rollout_return_auroc_finetuned': worst_task('sarm2_finetuned', 'return_auroc'),
        'rollout_success_auroc_finetuned': worst_task('sarm2_finetuned', 'success_auroc'),
        'rollout_auroc_per_task': {
            name: {t: summary[name]['rollouts']['per_task'][t]['final_auroc']
                   for t in args.rollout_tasks} for name in names},
        'rollout_success_false_positive_rate': tuned['rollouts']['pooled']['false_positive_rate'],
        'rollout_success_true_positive_rate': tuned['rollouts']['pooled']['true_positive_rate'],
        'rollout_success_false_positive_rate_demo_only':
            sarm2['rollouts']['pooled']['false_positive_rate'],
        'success_threshold': _mean_metric(calibrations, 'threshold'),
        'rollout_success_false_positive_rate_task_thresholds':
            task_pooled['false_positive_rate'],
        'rollout_success_true_positive_rate_task_thresholds': task_pooled['true_positive_rate'],
        'rollout_success_rates_task_thresholds': {
            t: {k: task_rates[t][k] for k in ('false_positive_rate', 'true_positive_rate')}
            for t in args.rollout_tasks},
        'success_threshold_per_task': {
            t: float(np.mean([c['per_task'][t]['threshold'] for c in calibrations]))
            for t in args.rollout_tasks},
        'predictor_steps_per_s': float(np.mean(rates)),
        'seeds': args.seeds,
        'demo_timing': args.demo_timing,
        'train_episodes': len(train),
        'test_episodes': len(test),
        'heldout_task_episodes': len(heldout_task_episodes),
        'finetune_rollouts': len(finetune_part.episodes),
        'heldout_rollouts': len(heldout_rollouts.episodes),
        'rollout_base_success': {
            t: float(np.mean([e.success for e in rollouts.episodes if e.task == t]))
            for t in args.rollout_tasks},
        'quick': args.quick,
    }
    out = args.out or args.cache_dir / f'results-{"quick" if args.quick else "full"}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'report': report, 'summary': summary, 'calibrations': calibrations,
                               'args': {k: str(v) for k, v in vars(args).items()}}, indent=1))
    print(f'full results: {out}', file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == '__main__':
    os.environ.setdefault('MUJOCO_GL', 'egl')
    sys.exit(main())
