"""`make demo`: the simulated self-improvement loop, end to end, through the real ROS 2 nodes.

Steps (each writes ``runs/<run>/<step>/`` and is marked complete only once its outputs are in
place: a step works in ``<step>.partial/`` and renames it when done):

 1. demos     record scripted demonstrations (30% failures) of the demo tasks
 2. reward    train SARM2 and the baselines (SARM v1 per task, time-linear) on the same split;
              metrics on held-out demonstrations
 3. vla       train the base compact VLA by behaviour cloning
 4. loop      the flywheel through the real nodes (``spiral_loop``'s steps, in ``loop/``):
              round-0 rollouts of the base VLA (sim_node + reward_node + policy_node, one
              rosbag2 bag per episode, plus cheaper in-process rollouts recorded as bags),
              labels from the simulator's truth, SARM2 fine-tuned on them, then ``rounds``
              rounds of relabel -> SPIRAL update -> redeploy through the policy node
 5. evaluate  base vs the final base + residual on the same fresh initial states, in-process
              (the simulated arm through the policy node's control core)
 6. report    summary table, plots and index.html under ``runs/<run>/report/``

Running it again resumes the newest unfinished run with the same configuration: finished steps
are skipped, an interrupted step is redone (demos and rollouts keep their finished episodes).
``--fresh`` starts a new run, ``--run DIR`` continues a given one.
"""

import argparse
from dataclasses import asdict, dataclass, fields
import html
import json
import logging
import os
from pathlib import Path
import sys
import time

from .report_tables import HTML_STYLE, html_table, rate_cell, text_table, verdict
from .run_steps import (CONFIG_FILE, execute, is_done, read_step, RunContext, RunError, Step,
                        write_json_atomic)
from .sim_graph import open_run, success_row

# Runs are kept under the working directory (the repository root for `make demo`).
RUNS = Path('runs')
CAMERA = 'corner'
IMAGE_SIZE = 64
# Initial-state seeds: demos, node rollouts and the evaluation never share one.
EVAL_SEED = 20_000


@dataclass
class DemoConfig:
    """Sizes of one demo run; the default fits in 30 minutes on 2 CPU cores."""

    tasks: tuple[str, ...] = ('button-press-topdown-v3', 'drawer-open-v3')
    demos_per_task: int = 20
    reward_steps: int = 800
    v1_steps: int = 200
    single_head: bool = False       # also train the single-head ablation (the bench's 2nd model)
    heldout_fraction: float = 0.3
    vla_steps: int = 1000
    vla_batch_size: int = 32
    rollouts_per_task: int = 8      # node episodes per task and round
    inprocess_per_task: int = 24    # in-process episodes per task and round (bags too)
    explore_per_task: int = 16      # round 0: in-process base episodes with exploration noise
    rounds: int = 2
    finetune_steps: int = 400
    max_steps: int = 150
    control_rate: float = 20.0
    spiral_updates: int = 1000
    eval_episodes: int = 50         # base and final base + residual in-process, per task
    seed: int = 0

    def __post_init__(self):
        from sarm2_common.catalogue import check_tasks

        self.tasks = check_tasks(self.tasks)
        for name in ('demos_per_task', 'reward_steps', 'v1_steps', 'vla_steps', 'vla_batch_size',
                     'rollouts_per_task', 'rounds', 'max_steps', 'spiral_updates',
                     'eval_episodes'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('inprocess_per_task', 'explore_per_task', 'finetune_steps'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.demos_per_task < 4:
            raise ValueError('demos_per_task must be >= 4 (training and held-out episodes)')
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f'heldout_fraction must be in (0, 1), got {self.heldout_fraction}')
        if self.control_rate <= 0:
            raise ValueError(f'control_rate must be > 0, got {self.control_rate}')

    def to_dict(self) -> dict:
        values = asdict(self)
        values['tasks'] = list(self.tasks)
        return values


FULL = {'tasks': ('button-press-topdown-v3', 'drawer-open-v3', 'window-close-v3'),
        'demos_per_task': 30, 'reward_steps': 2000, 'v1_steps': 500, 'single_head': True,
        'vla_steps': 2000, 'rollouts_per_task': 15, 'inprocess_per_task': 40, 'rounds': 3,
        'spiral_updates': 2000, 'eval_episodes': 100}


# --------------------------------------------------------------------------------------------
# Steps


def step_demos(ctx: RunContext, out: Path) -> dict:
    from sarm2_sim.demonstrations import record_demonstrations

    config = ctx.config
    # record_demonstrations skips episodes already complete in out/bags: a rerun after Ctrl-C
    # continues where it stopped.
    paths = record_demonstrations(out / 'bags', list(config.tasks), config.demos_per_task,
                                  seed=config.seed, noise=0.1, failure_fraction=0.3,
                                  image_size=IMAGE_SIZE, cameras=(CAMERA,), progress=True,
                                  max_steps=config.max_steps)
    return {'bags': sorted(str(Path(p).relative_to(out)) for p in paths),
            'episodes': len(paths)}


def load_demo_episodes(ctx: RunContext):
    from sarm2_common.bag_dataset import read_episodes

    demos = ctx.step_dir('demos')
    return read_episodes([demos / p for p in ctx.results['demos']['bags']])


REWARD_METRICS = ('value_mse_macro', 'voc', 'primitive_acc', 'auroc', 'pairwise_acc')


def step_reward(ctx: RunContext, out: Path) -> dict:
    import torch

    from sarm2_reward.baselines import SarmV1Config, SarmV1Model, TimeLinearBaseline
    from sarm2_reward.datasets import split_by_task
    from sarm2_reward.evaluation import evaluate, PerTaskModels
    from sarm2_reward.model import Sarm2Config, Sarm2Model
    from sarm2_reward.training import TrainConfig, train_model
    from sarm2_reward.training_data import estimate_stage_priors

    config = ctx.config
    train, test = split_by_task(load_demo_episodes(ctx), config.heldout_fraction)
    if not any(e.success for e in train):
        raise RunError(f'none of the {len(train)} training demonstrations succeeded: raise '
                       f'--max-steps (now {config.max_steps}; the scripted experts need about '
                       f'100-150 steps) or --demos-per-task (now {config.demos_per_task})')
    base_config = Sarm2Config(cameras=(CAMERA,), image_size=IMAGE_SIZE,
                              state_dim=train[0].joint_positions.shape[1])
    train_config = TrainConfig(steps=config.reward_steps, batch_size=32, seed=config.seed,
                               eval_every=0, save_every=0, num_threads=1, device='cpu',
                               warmup_steps=min(100, config.reward_steps // 10))
    models, seconds = {}, {}
    heads = [('sarm2', 'moe')] + ([('single_head', 'single')] if config.single_head else [])
    for name, head in heads:
        started = time.monotonic()
        torch.manual_seed(config.seed)
        model = Sarm2Model(Sarm2Config(**{**base_config.to_dict(), 'value_head': head}))
        print(f'  training {name} ({config.reward_steps} steps)', flush=True)
        train_model(model, train, train_config,
                    out_dir=out / 'checkpoint' if name == 'sarm2' else None,
                    progress=True, metadata={'tasks': list(config.tasks), 'demo': True})
        models[name], seconds[name] = model, time.monotonic() - started
    started = time.monotonic()
    per_task = {}
    priors = estimate_stage_priors(train)
    v1_config = TrainConfig(steps=config.v1_steps, batch_size=32, seed=config.seed,
                            eval_every=0, save_every=0, num_threads=1, device='cpu',
                            warmup_steps=min(100, config.v1_steps // 10))
    for task in sorted(priors):
        torch.manual_seed(config.seed)
        print(f'  training sarm_v1 for {task} ({config.v1_steps} steps)', flush=True)
        model = SarmV1Model(SarmV1Config.from_priors(task, priors[task], base_config))
        train_model(model, [e for e in train if e.task == task], v1_config, progress=True)
        per_task[task] = model
    models['sarm_v1'], seconds['sarm_v1'] = PerTaskModels(per_task), time.monotonic() - started
    models['time_linear'], seconds['time_linear'] = TimeLinearBaseline().fit(train), 0.0
    metrics = {}
    for name, model in models.items():
        result, _, _ = evaluate(model, test)
        overall = result['overall']
        metrics[name] = {key: _number(overall.get(key)) for key in REWARD_METRICS}
        metrics[name]['train_seconds'] = round(seconds[name], 1)
    return {'checkpoint': 'checkpoint', 'metrics': metrics, 'train_episodes': len(train),
            'test_episodes': len(test),
            'test_successes': int(sum(e.success for e in test))}


def _number(value):
    return None if value is None else float(value)


def step_vla(ctx: RunContext, out: Path) -> dict:
    from spiral_policy.bc_training import BcTrainingConfig, train
    from spiral_policy.compact_vla import CompactVlaConfig, CompactVlaPolicy

    config = ctx.config
    episodes = load_demo_episodes(ctx)
    model_config = CompactVlaConfig(cameras=(CAMERA,), image_size=IMAGE_SIZE, state_dim=9,
                                    action_dim=4, chunk_size=8)
    _, summary = train(episodes, model_config,
                       BcTrainingConfig(steps=config.vla_steps, batch_size=config.vla_batch_size,
                                        seed=config.seed, threads=1),
                       out_dir=out / 'checkpoint')
    policy = CompactVlaPolicy.from_checkpoint(out / 'checkpoint')
    return {'checkpoint': 'checkpoint', 'policy_id': policy.policy_id,
            'episodes': summary['episodes'], 'frames': summary['frames'],
            'final_l1': summary['final_l1'], 'train_seconds': round(summary['seconds'], 1)}


def loop_config(ctx: RunContext):
    """Return the flywheel's ``LoopConfig``: this run's checkpoints, demonstrations, sizes."""
    from .spiral_loop import LoopConfig

    config = ctx.config
    return LoopConfig(
        reward_checkpoint=str(ctx.step_dir('reward') / ctx.results['reward']['checkpoint']),
        base_checkpoint=str(ctx.step_dir('vla') / ctx.results['vla']['checkpoint']),
        tasks=config.tasks, rounds=config.rounds, episodes_per_round=config.rollouts_per_task,
        inprocess_per_round=config.inprocess_per_task,
        explore_per_task=config.explore_per_task, max_steps=config.max_steps,
        control_rate=config.control_rate, updates=config.spiral_updates,
        finetune_steps=config.finetune_steps,
        demo_bags=str(ctx.step_dir('demos') / 'bags'), seed=config.seed)


def step_loop(ctx: RunContext, out: Path) -> dict:
    """Run ``spiral_loop``'s steps inside ``out`` (resumable: its steps keep their outputs)."""
    from .run_steps import run_steps
    from .spiral_loop import loop_steps, rollouts_name

    config = loop_config(ctx)
    write_json_atomic(out / CONFIG_FILE, config.to_dict())
    inner = RunContext(out, config, env=ctx.env)
    records = run_steps(inner, loop_steps(config),
                        log=lambda message: print(f'  loop {message}', flush=True))
    rounds = json.loads((out / 'report' / 'rounds.json').read_text())
    node_episodes = [e for entry in rounds
                     for e in inner.results[rollouts_name(entry['round'])]['episodes']]
    return {'rounds': rounds, 'report': 'report/index.html', 'node_episodes': node_episodes,
            'deployed': final_residuals(out, rounds, config.tasks),
            'finetune': records.get('reward-finetune', {}).get('result'),
            'labels': records['round0-labels']['result']}


def final_residuals(loop_dir: Path, rounds: list[dict], tasks) -> dict:
    """Per task, the residual the loop deployed last (relative to the loop directory)."""
    from .spiral_loop import rollouts_name

    rollouts = read_step(loop_dir, rollouts_name(rounds[-1]['round']))['result']
    return {task: rollouts['deployed'].get(task) for task in tasks}


def step_evaluate(ctx: RunContext, out: Path) -> dict:
    """Compare base and final base + residual on the same fresh initial states, in-process."""
    from .inprocess_evaluation import EvaluationJob, run_jobs

    config = ctx.config
    loop = ctx.step_dir('loop')
    vla = ctx.step_dir('vla') / ctx.results['vla']['checkpoint']
    jobs = []
    for t, task in enumerate(config.tasks):
        residual = ctx.results['loop']['deployed'][task]
        seeds = tuple(EVAL_SEED + 100 * t + i for i in range(config.eval_episodes))
        for label, checkpoint in (('base', None), ('improved', loop / residual if residual
                                                    else None)):
            jobs.append(EvaluationJob(label, task, vla, checkpoint, seeds, config.max_steps,
                                      CAMERA, IMAGE_SIZE, config.seed))
    results, policy_ids = {}, {}
    for result in run_jobs(jobs):
        job = result.job
        results.setdefault(job.task, {})[job.label] = dict(
            success_row([{'success': s} for s in result.successes]),
            mean_steps=sum(result.steps) / len(result.steps))
        if job.label == 'improved':
            policy_ids[job.task] = result.policy_id
    return {'per_task': results, 'policy_ids': policy_ids,
            'method': 'the ROS-free simulated arm driven through the policy '
                      "node's control core (ControlCore + SafetyFilter), same initial states "
                      'for base and base + residual'}


def step_report(ctx: RunContext, out: Path) -> dict:
    timings = {}
    for name in STEP_NAMES[:-1]:
        if is_done(ctx.run_dir, name):
            timings[name] = read_step(ctx.run_dir, name)['seconds']
    text = write_report(out, ctx.results, ctx.config, timings, ctx.run_dir.name)
    return {'summary': text, 'html': 'index.html'}


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value, digits: int = 4) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def summary_tables(results: dict) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """Rows (header first) of the reward-model, success-rate and reward-ranking tables."""
    reward = [['model', 'value MSE', 'VOC', 'primitive acc', 'success AUROC', 'pairwise acc',
               'train s']]
    for name, row in results['reward']['metrics'].items():
        reward.append([name, _fmt(row['value_mse_macro']), _fmt(row['voc'], 3),
                       _fmt(row['primitive_acc'], 3), _fmt(row['auroc'], 3),
                       _fmt(row['pairwise_acc'], 3), f'{row["train_seconds"]:.0f}'])
    rounds = results['loop']['rounds']
    success = [['task', 'base, nodes', f'round {rounds[-1]["round"]}, nodes',
                'base, in-process', 'final, in-process', 'in-process verdict']]
    for task, evaluated in results['evaluate']['per_task'].items():
        success.append([task, rate_cell(rounds[0]['per_task'][task]),
                        rate_cell(rounds[-1]['per_task'][task]),
                        rate_cell(evaluated['base']), rate_cell(evaluated['improved']),
                        verdict(evaluated['base'], evaluated['improved'])])
    ranking = [['round', 'task', 'success (nodes + in-process)', 'live AUROC',
                'relabelled AUROC', 'note']]
    for entry in rounds:
        for task in results['evaluate']['per_task']:
            pooled = [entry['per_task'][task]] + ([entry['inprocess_per_task'][task]]
                                                  if task in entry['inprocess_per_task'] else [])
            successes = sum(r['successes'] for r in pooled)
            episodes = sum(r['episodes'] for r in pooled)
            unchanged = ((entry.get('update') or {}).get('per_task', {}).get(task, {})
                         .get('note'))
            ranking.append([str(entry['round']), task, f'{successes}/{episodes}',
                            _fmt(entry['live_auroc'][task], 2),
                            _fmt(entry['relabelled_auroc'][task], 2),
                            '; '.join(n for n in (unchanged, entry['guard'].get(task)) if n)])
    return reward, success, ranking


def plot_report(out: Path, results: dict) -> list[str]:
    """Write the PNG plots; return their file names."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    from .spiral_loop import plot_live_progress, plot_rounds

    names = []
    rounds = results['loop']['rounds']
    evaluated = results['evaluate']['per_task']
    tasks = list(evaluated)
    figure, axis = pyplot.subplots(figsize=(2.8 + 2.2 * len(tasks), 3.6))
    series = [('base, nodes', lambda t: rounds[0]['per_task'][t]),
              (f'round {rounds[-1]["round"]}, nodes', lambda t: rounds[-1]['per_task'][t]),
              ('base, in-process', lambda t: evaluated[t]['base']),
              ('final, in-process', lambda t: evaluated[t]['improved'])]
    width = 0.8 / len(series)
    for i, (label, get) in enumerate(series):
        rows = [get(t) for t in tasks]
        x = [j + (i - (len(series) - 1) / 2) * width for j in range(len(tasks))]
        rates = [r['rate'] for r in rows]
        errors = [[r['rate'] - r['wilson95'][0] for r in rows],
                  [r['wilson95'][1] - r['rate'] for r in rows]]
        axis.bar(x, rates, width, yerr=errors, capsize=3, label=label)
    axis.set_xticks(range(len(tasks)), [t.replace('-v3', '') for t in tasks], fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel('success rate (95% Wilson)')
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / 'success.png', dpi=100)
    pyplot.close(figure)
    names.append('success.png')

    plot_rounds(out / 'rounds.png', rounds, tasks)
    names.append('rounds.png')

    metrics = results['reward']['metrics']
    figure, axes = pyplot.subplots(1, 3, figsize=(10, 3.2))
    for axis, (key, title) in zip(axes, (('value_mse_macro', 'value MSE (lower is better)'),
                                         ('voc', 'VOC'), ('auroc', 'success AUROC'))):
        models = [m for m in metrics if metrics[m][key] is not None]
        axis.bar(models, [metrics[m][key] for m in models], color='tab:blue')
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis='x', labelsize=7, rotation=20)
    figure.tight_layout()
    figure.savefig(out / 'reward_metrics.png', dpi=100)
    pyplot.close(figure)
    names.append('reward_metrics.png')

    plot_live_progress(out / 'live_progress.png', results['loop']['node_episodes'], tasks)
    names.append('live_progress.png')
    return names


def write_report(out: Path, results: dict, config: DemoConfig, timings: dict,
                 run_name: str) -> str:
    """Write index.html and the plots into ``out``; return the terminal summary text."""
    out.mkdir(parents=True, exist_ok=True)
    reward_rows, success_rows, ranking_rows = summary_tables(results)
    reward = results['reward']
    loop = results['loop']
    timing_rows = [['step', 'wall time']] + [[k, f'{v:.0f} s'] for k, v in timings.items()]
    vla = results.get('vla', {})
    finetune = loop.get('finetune')
    notes = [
        f'Demonstrations: {results.get("demos", {}).get("episodes", "n/a")} scripted episodes '
        f'(noise 0.1, 30% deliberate failures) of {", ".join(config.tasks)}.',
        f'Base compact VLA {vla.get("policy_id", "n/a")}: behaviour cloning on '
        f'{vla.get("episodes", "n/a")} successful demonstrations ({vla.get("frames", "n/a")} '
        f'frames), final L1 {_fmt(vla.get("final_l1"), 3)}.',
        f'Reward models trained on {reward["train_episodes"]} demonstrations, metrics on '
        f'{reward["test_episodes"]} held-out demonstrations ({reward["test_successes"]} '
        'successes) of the same tasks; value MSE and VOC on successful episodes against '
        't/(T-1).',
        f'Round 0: {config.rollouts_per_task} episodes per task through sim_node + '
        f'reward_node + policy_node (RunEpisode goals, one rosbag2 bag each) and '
        f'{config.inprocess_per_task} in-process (bags in the same layout), plus '
        f'{config.explore_per_task} in-process with a random action offset per chunk '
        f'(exploration); {loop["labels"]["labels"]} of them labelled by '
        f'{", ".join(loop["labels"]["labeller"])}.',
        (f'SARM2 fine-tuned on {finetune["rollouts"]} labelled rollouts and '
         f'{finetune["demonstrations"]} demonstrations: {finetune["init_model_id"]} -> '
         f'{finetune["model_id"]}, which relabels every bag and runs in the reward node from '
         'round 1 on.') if finetune else 'No reward fine-tuning (finetune_steps 0).',
        f'{config.rounds} SPIRAL rounds (one residual per task, {config.spiral_updates} updates '
        'each, continuing the previous round) deployed through the policy node '
        '(residual_checkpoint); the loop report is loop/report/index.html. Reward ranking: '
        "AUROC of each round's episode returns by outcome, live (the reward node) and as "
        'relabelled for the next update.',
        'In-process: ' + results['evaluate']['method'] + f', {config.eval_episodes} episodes '
        'per task. Verdict: the in-process 95% Wilson intervals separate or not.',
    ]
    summary = '\n'.join([
        f'SARM2 + SPIRAL demo, run {run_name}', '',
        'Reward model vs baselines (held-out demonstrations):', text_table(reward_rows), '',
        'Success rate, successes/episodes [95% Wilson interval]:', text_table(success_rows), '',
        'Per round: success and how well the reward ranked the rollouts by outcome:',
        text_table(ranking_rows), '',
        *notes, '', 'Step wall times: ' + ', '.join(f'{k} {v:.0f} s' for k, v in
                                                  timings.items())])
    plots = plot_report(out, results)
    config_rows = [['setting', 'value']] + [[f.name, str(getattr(config, f.name))]
                                            for f in fields(config)]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SARM2 + SPIRAL demo {html.escape(run_name)}</title>
<style>{HTML_STYLE}</style></head><body>
<h1>SARM2 + SPIRAL demo: run {html.escape(run_name)}</h1>
<p>Every number on this page was produced by this run.</p>
<h2>Reward model vs baselines</h2>{html_table(reward_rows)}
<h2>Base vs improved success rate</h2>{html_table(success_rows)}
<h2>Rounds: success and reward ranking</h2>{html_table(ranking_rows)}
<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>
{''.join(f'<p><img src="{p}" alt="{p}"></p>' for p in plots)}
<h2>Steps</h2>{html_table(timing_rows)}
<h2>Configuration</h2>{html_table(config_rows)}
</body></html>
"""
    (out / 'index.html').write_text(page)
    (out / 'summary.txt').write_text(summary + '\n')
    return summary


# --------------------------------------------------------------------------------------------
# Command line


STEPS = [
    Step('demos', 'recording scripted demonstrations (30% failures)', step_demos,
         keeps_partial=True),
    Step('reward', 'training SARM2 and the baselines on the same split', step_reward),
    Step('vla', 'training the base compact VLA by behaviour cloning', step_vla),
    Step('loop', 'the flywheel through the nodes: round-0 rollouts, labels, reward '
         'fine-tuning, SPIRAL rounds', step_loop, keeps_partial=True),
    Step('evaluate', 'evaluating base vs the final base + residual in-process',
         step_evaluate),
    Step('report', 'writing the report', step_report),
]
STEP_NAMES = [s.name for s in STEPS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='make demo ARGS=...', description=__doc__.split('\n')[0],
        epilog=__doc__.split('\n', 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--fresh', action='store_true',
                        help='start a new run instead of resuming the newest unfinished one')
    parser.add_argument('--run', type=Path, help='continue (or create) this run directory')
    parser.add_argument('--full', action='store_true',
                        help='larger configuration for a real evaluation: 3 tasks, 30 demos '
                             'and 30 rollouts per task, longer training, 50 evaluation '
                             'episodes per task (hours on 2 cores)')
    parser.add_argument('--runs-dir', type=Path, default=RUNS, help='where runs are kept')
    parser.add_argument('--until', choices=STEP_NAMES, metavar='STEP',
                        help=f'stop after this step (one of {", ".join(STEP_NAMES)}); a later '
                        '`make demo` continues from there')
    for f in fields(DemoConfig):
        flag = '--' + f.name.replace('_', '-')
        if f.name == 'tasks':
            parser.add_argument(flag, nargs='+', help=f'tasks (default {" ".join(f.default)})')
        elif f.type in (bool, 'bool'):
            parser.add_argument(flag, action='store_true', default=None,
                                help=f'{f.name} (default {f.default})')
        else:
            kind = float if f.type in (float, 'float') else int
            parser.add_argument(flag, type=kind, help=f'default {f.default} '
                                f'({FULL.get(f.name, f.default)} with --full)')
    return parser


def config_from_args(args) -> DemoConfig:
    values = dict(FULL) if args.full else {}
    for f in fields(DemoConfig):
        value = getattr(args, f.name)
        if value is not None:
            values[f.name] = value
    return DemoConfig(**values)


def main(argv=None) -> int:
    """Run (or resume) the demo; 0 on success, 2 on bad input, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    try:
        config = config_from_args(args)
        if args.run is not None and (args.run / CONFIG_FILE).is_file():
            config = DemoConfig(**json.loads((args.run / CONFIG_FILE).read_text()))
    except (ValueError, TypeError) as error:
        print(f'demo: {error}', file=sys.stderr)
        return 2
    ctx = open_run(args.runs_dir, config, STEPS, fresh=args.fresh, run=args.run)
    # One thread: these small networks run faster single-threaded on a shared 2-core machine.
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    print(f'demo run: {ctx.run_dir} (config {json.dumps(config.to_dict())})', flush=True)
    again = 'make demo' + (f" ARGS='--run {args.run}'" if args.run else '')
    steps = STEPS[:STEP_NAMES.index(args.until) + 1] if args.until else STEPS
    return execute(ctx, steps, 'demo', again)


if __name__ == '__main__':
    sys.exit(main())
