"""`make demo`: the simulated self-improvement loop, end to end, through the real ROS 2 nodes.

Steps (each writes ``runs/<run>/<step>/`` and is marked complete only once its outputs are in
place: a step works in ``<step>.partial/`` and renames it when done):

 1. demos     record scripted demonstrations (30% failures) of the demo tasks
 2. reward    train SARM2 and the baselines (SARM v1 per task, time-linear) on the same split;
              metrics on held-out demonstrations
 3. vla       train the base compact VLA by behaviour cloning
 4. rollouts  start sim_node + reward_node + policy_node, run RunEpisode goals with record=true
              (live SARM2 rewards, one rosbag2 bag per episode); base success rate
 5. spiral    one SPIRAL round (the ``spiral_update`` CLI) on the rollout bags, relabelled by
              the SARM2 checkpoint -> residual checkpoint
 6. evaluate  base vs base + residual on the same fresh initial states (in-process simulated
              arm through the policy node's control core: the node has no residual parameter)
 7. report    summary table, plots and index.html under ``runs/<run>/report/``

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
from .run_steps import (CONFIG_FILE, execute, is_done, read_jsonl, read_step, RunContext,
                        RunError, Step)
from .sim_graph import (node_summary, open_run, resume_episode_log, run_node_episodes,
                        SimGraph, success_row)

# Runs are kept under the working directory (the repository root for `make demo`).
RUNS = Path('runs')
CAMERA = 'corner'
IMAGE_SIZE = 64
# Initial-state seeds: demos, node rollouts and the evaluation never share one.
ROLLOUT_SEED = 10_000
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
    rollouts_per_task: int = 15
    max_steps: int = 150
    control_rate: float = 20.0
    spiral_updates: int = 500
    node_eval_episodes: int = 10    # base + residual through the nodes, per task
    eval_episodes: int = 25         # base and base + residual in-process, per task
    seed: int = 0

    def __post_init__(self):
        from sarm2_common.catalogue import check_tasks

        self.tasks = check_tasks(self.tasks)
        for name in ('demos_per_task', 'reward_steps', 'v1_steps', 'vla_steps', 'vla_batch_size',
                     'rollouts_per_task', 'max_steps', 'spiral_updates', 'eval_episodes',
                     'node_eval_episodes'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
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
        'vla_steps': 2000, 'rollouts_per_task': 30, 'spiral_updates': 1500,
        'node_eval_episodes': 30, 'eval_episodes': 50}


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
    from sarm2_reward.train import TrainConfig, train_model
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


def step_rollouts(ctx: RunContext, out: Path) -> dict:
    config = ctx.config
    bags, logs, episodes_file, done = resume_episode_log(out)
    todo = [(task, ROLLOUT_SEED + 100 * t + i) for t, task in enumerate(config.tasks)
            for i in range(config.rollouts_per_task)]
    seen = {(r['task'], r['seed']) for r in done}
    todo = [item for item in todo if item not in seen]
    if todo:
        run_node_episodes(sim_graph(ctx), todo, bags, logs, episodes_file, 'rollouts')
    records = read_jsonl(episodes_file)
    print(f'  {len(records)} rollouts recorded', flush=True)
    return {'per_task': node_summary(records, config.tasks), 'episodes': records,
            'bags': 'bags'}


def sim_graph(ctx: RunContext, policy_params: dict | None = None) -> SimGraph:
    """Describe the three nodes with this run's reward model and base VLA."""
    config = ctx.config
    return SimGraph(
        reward_checkpoint=ctx.step_dir('reward') / ctx.results['reward']['checkpoint'],
        vla_checkpoint=ctx.step_dir('vla') / ctx.results['vla']['checkpoint'],
        task=config.tasks[0], image_size=IMAGE_SIZE, max_steps=config.max_steps,
        control_rate=config.control_rate, seed=config.seed, env=ctx.env,
        policy_params=policy_params or {})


def step_spiral(ctx: RunContext, out: Path) -> dict:
    from .spiral_loop import run_spiral_update, spiral_config_for

    vla_checkpoint = ctx.step_dir('vla') / ctx.results['vla']['checkpoint']
    config_path = out / 'spiral_config.json'
    config_path.write_text(json.dumps(spiral_config_for(vla_checkpoint,
                                                        ctx.config.spiral_updates), indent=1))
    residuals, used, skipped, model_ids, seconds = {}, 0, 0, set(), 0.0
    returns = {True: [], False: []}
    # One residual per task, as in bench/spiral.py: each round trains on that task's bags only
    # (spiral_update skips and reports the other task's episodes).
    for task in ctx.config.tasks:
        residual = out / f'residual-{task}'
        report = run_spiral_update(
            [ctx.step_dir('rollouts') / 'bags'], residual,
            reward_checkpoint=ctx.step_dir('reward') / ctx.results['reward']['checkpoint'],
            base_checkpoint=vla_checkpoint, task=task, config_file=config_path,
            updates=ctx.config.spiral_updates, seed=ctx.config.seed, round_number=1,
            env=ctx.env)
        for episode in report['episodes']:
            returns[bool(episode['success'])].append(episode['dense_return'])
        residuals[task] = residual.name
        used += len(report['episodes'])
        skipped += sum(not s['reason'].startswith('episode is from task')
                       for s in report['skipped'])
        model_ids.update(report['reward_model_ids'])
        seconds += report.get('training', {}).get('train_seconds', 0.0)
    return {'residuals': residuals, 'episodes_used': used, 'skipped': skipped,
            'reward_model_ids': sorted(model_ids),
            'dense_return_success': returns[True], 'dense_return_failure': returns[False],
            'train_seconds': round(seconds, 1)}


def step_evaluate(ctx: RunContext, out: Path) -> dict:
    import torch
    from tqdm import tqdm

    from sarm2_sim.sim_arm import SimArm, SimArmConfig
    from spiral_policy.compact_vla import CompactVlaPolicy
    from spiral_policy.sim_evaluation import run_sim_episode, sim_control_core
    from spiral_policy.spiral.residual_policy import ResidualPolicy

    config = ctx.config
    residuals = {task: ctx.step_dir('spiral') / name
                 for task, name in ctx.results['spiral']['residuals'].items()}
    # 1. base + residual through the nodes (policy_node residual_checkpoint), one node set per
    # task since each task has its own residual; finished episodes survive an interruption.
    bags, logs, episodes_file, done = resume_episode_log(out)
    seen = {(r['task'], r['seed']) for r in done}
    for t, task in enumerate(config.tasks):
        todo = [(task, EVAL_SEED + 100 * t + i) for i in range(config.node_eval_episodes)]
        todo = [item for item in todo if item not in seen]
        if todo:
            graph = sim_graph(ctx, {'residual_checkpoint': residuals[task]})
            run_node_episodes(graph, todo, bags, logs, episodes_file, f'base+residual {task}')
    records = read_jsonl(episodes_file)
    nodes = node_summary(records, config.tasks)
    # 2. base vs base + residual on the same initial states, in-process (the simulated arm's
    # ROS-free core through the policy node's control core): cheap, so more episodes.
    torch.set_num_threads(1)
    base = CompactVlaPolicy.from_checkpoint(ctx.step_dir('vla') / ctx.results['vla']['checkpoint'])
    results, policy_ids = {}, {}
    for t, task in enumerate(config.tasks):
        improved = ResidualPolicy.from_checkpoint(residuals[task], base, seed=config.seed)
        policy_ids[task] = improved.policy_id
        results[task] = {'improved_nodes': nodes[task]}
        arm = SimArm(SimArmConfig(task=task, cameras=(CAMERA,), image_size=IMAGE_SIZE,
                                  seed=config.seed, max_steps=config.max_steps))
        try:
            for label, policy in (('base', base), ('improved', improved)):
                core = sim_control_core(policy, arm, (CAMERA,))
                seeds = [EVAL_SEED + 100 * t + i for i in range(config.eval_episodes)]
                outcomes = [run_sim_episode(arm, core, seed, config.max_steps)
                            for seed in tqdm(seeds, desc=f'in-process {label} {task}',
                                             unit='episode')]
                results[task][label] = dict(
                    success_row([{'success': o.success} for o in outcomes]),
                    mean_steps=sum(o.steps for o in outcomes) / len(outcomes))
        finally:
            arm.close()
    return {'per_task': results, 'policy_ids': policy_ids, 'episodes': records,
            'bags': 'bags',
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


def _mean(values) -> str:
    return f'{sum(values) / len(values):.2f}' if values else 'n/a'


def _fmt(value, digits: int = 4) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def summary_tables(results: dict) -> tuple[list[list[str]], list[list[str]]]:
    """Rows (header first) of the reward-model table and of the success-rate table."""
    reward = [['model', 'value MSE', 'VOC', 'primitive acc', 'success AUROC', 'pairwise acc',
               'train s']]
    for name, row in results['reward']['metrics'].items():
        reward.append([name, _fmt(row['value_mse_macro']), _fmt(row['voc'], 3),
                       _fmt(row['primitive_acc'], 3), _fmt(row['auroc'], 3),
                       _fmt(row['pairwise_acc'], 3), f'{row["train_seconds"]:.0f}'])
    success = [['task', 'base, nodes', 'base+residual, nodes', 'base, in-process',
                'base+residual, in-process', 'in-process verdict']]
    for task, nodes in results['rollouts']['per_task'].items():
        evaluated = results['evaluate']['per_task'][task]
        success.append([task, rate_cell(nodes), rate_cell(evaluated['improved_nodes']),
                        rate_cell(evaluated['base']), rate_cell(evaluated['improved']),
                        verdict(evaluated['base'], evaluated['improved'])])
    return reward, success


def plot_report(out: Path, results: dict) -> list[str]:
    """Write the PNG plots; return their file names."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    names = []
    tasks = list(results['rollouts']['per_task'])
    figure, axis = pyplot.subplots(figsize=(2.8 + 2.2 * len(tasks), 3.6))
    evaluated = results['evaluate']['per_task']
    series = [('base, nodes', lambda t: results['rollouts']['per_task'][t]),
              ('base + residual, nodes', lambda t: evaluated[t]['improved_nodes']),
              ('base, in-process', lambda t: evaluated[t]['base']),
              ('base + residual, in-process', lambda t: evaluated[t]['improved'])]
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

    figure, axis = pyplot.subplots(figsize=(6, 3.4))
    for record in results['rollouts']['episodes']:
        trace = record.get('progress_trace') or []
        if trace:
            axis.plot([i / max(1, len(trace) - 1) for i in range(len(trace))], trace,
                      color='tab:green' if record['success'] else 'tab:red', alpha=0.5, lw=1)
    axis.set_xlabel('episode time (normalised)')
    axis.set_ylabel('live SARM2 progress')
    axis.set_title('live rewards from the reward node (green: success, red: failure)',
                   fontsize=9)
    figure.tight_layout()
    figure.savefig(out / 'live_progress.png', dpi=100)
    pyplot.close(figure)
    names.append('live_progress.png')
    return names


def write_report(out: Path, results: dict, config: DemoConfig, timings: dict,
                 run_name: str) -> str:
    """Write index.html and the plots into ``out``; return the terminal summary text."""
    out.mkdir(parents=True, exist_ok=True)
    reward_rows, success_rows = summary_tables(results)
    spiral = results['spiral']
    reward = results['reward']
    timing_rows = [['step', 'wall time']] + [[k, f'{v:.0f} s'] for k, v in timings.items()]
    vla = results.get('vla', {})
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
        f'Rollouts: {sum(r["episodes"] for r in results["rollouts"]["per_task"].values())} '
        'RunEpisode goals through sim_node + reward_node + policy_node, one rosbag2 bag each; '
        f'{sum(r["reward_messages"] for r in results["rollouts"]["per_task"].values())} live '
        'SARM2 StageReward messages received during them.',
        f'SPIRAL round 1 (one residual per task) trained on {spiral["episodes_used"]} rollout '
        f'bags ({spiral["skipped"]} unusable) relabelled by '
        f'{", ".join(spiral["reward_model_ids"])}; mean SARM2 episode return '
        f'{_mean(spiral.get("dense_return_success"))} on successes vs '
        f'{_mean(spiral.get("dense_return_failure"))} on failures.',
        'Nodes: base on the rollout initial states, base + residual (policy_node '
        'residual_checkpoint) on the evaluation initial states. In-process: '
        + results['evaluate']['method'] + '. Verdict: the in-process 95% Wilson intervals '
        'separate or not; with 10-25 episodes per cell only large changes can show, and one '
        'round on a few rollouts per task is a demonstration of the loop, not a measurement '
        '(docs/benchmarks.md, section spiral, runs several rounds).',
    ]
    summary = '\n'.join([
        f'SARM2 + SPIRAL demo, run {run_name}', '',
        'Reward model vs baselines (held-out demonstrations):', text_table(reward_rows), '',
        'Success rate, successes/episodes [95% Wilson interval]:', text_table(success_rows), '',
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
    Step('rollouts', 'running episodes through sim_node + reward_node + policy_node',
         step_rollouts, keeps_partial=True),
    Step('spiral', 'one SPIRAL round on the rollout bags (spiral_update)', step_spiral),
    Step('evaluate', 'evaluating base + SPIRAL residual (through the nodes and in-process)',
         step_evaluate, keeps_partial=True),
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
