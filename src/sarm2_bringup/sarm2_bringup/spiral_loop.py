"""`spiral_loop`: SPIRAL rounds on the simulated arm, through the real ROS 2 nodes.

Round 0 runs the base VLA: sim_node + reward_node + policy_node, RunEpisode goals with
record=true, one rosbag2 bag per episode scored live by SARM2. Every round r >= 1 then

  update    relabels the bags of rounds 0..r-1 with the reward checkpoint and trains the residual
            (``spiral_update``, one residual per task, continuing from round r-1's);
  rollouts  deploys base + residual (policy_node ``residual_checkpoint``) on fresh initial
            states: these episodes are round r's success rate and the next round's data.

After each round the terminal shows the table so far and ``<run>/rounds.png`` is redrawn; the
run ends with ``<run>/report/index.html``. Interrupted runs resume: finished steps are kept,
finished episodes of an interrupted rollout step too (``--run`` names the run; by default the
newest unfinished run with the same configuration continues).

The reward and base checkpoints default to those of the latest ``make demo`` run. With
``--reward lrm`` the updates relabel with zero-shot LRM rewards from a VLM (the ``--lrm-*``
options, passed on to ``spiral_update``); the live reward node of the rollouts still runs the
SARM2 checkpoint (its rewards are only shown and recorded).
"""

import argparse
from dataclasses import asdict, dataclass, fields
import html
import json
import logging
from pathlib import Path
import subprocess
import sys

from sarm2_reward.lrm.options import add_lrm_arguments, lrm_arguments, lrm_requested

from .report_tables import HTML_STYLE, html_table, rate_cell, text_table
from .run_steps import (CONFIG_FILE, execute, is_done, read_jsonl, read_step, RunContext,
                        RunError, Step, write_json_atomic)
from .sim_graph import (console_script, node_summary, open_run, resume_episode_log,
                        run_node_episodes, SimGraph)

# Under the working directory, like make demo's runs.
RUNS = Path('runs') / 'loops'
DEMO_RUN = Path('runs') / 'latest'
# Initial-state seeds of round r's rollouts start at LOOP_SEED + 1000 r: fresh in every round
# and apart from the demo's demonstration, rollout and evaluation seeds.
LOOP_SEED = 30_000
METHODS = ('spiral', 'rabc')
REWARDS = ('sarm2', 'lrm', 'time_linear', 'sparse')
# Both checkpoint kinds (SARM2 and compact VLA) are a directory with these two files.
CHECKPOINT_FILES = ('config.json', 'model.safetensors')


@dataclass
class LoopConfig:
    """What a loop run does; saved as ``config.json`` in the run directory."""

    reward_checkpoint: str
    base_checkpoint: str
    tasks: tuple[str, ...] = ('button-press-topdown-v3', 'drawer-open-v3')
    rounds: int = 3
    episodes_per_round: int = 10    # per task
    max_steps: int = 150
    control_rate: float = 20.0
    updates: int = 500              # gradient steps per round and task
    method: str = 'spiral'
    reward: str = 'sarm2'
    seed: int = 0
    lrm_options: tuple[str, ...] = ()   # spiral_update's --lrm-* options (reward lrm)

    def __post_init__(self):
        from sarm2_common.catalogue import check_tasks
        from sarm2_reward.lrm.options import check_lrm_arguments

        self.tasks = check_tasks(self.tasks)
        for name in ('rounds', 'episodes_per_round', 'max_steps', 'updates'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.control_rate <= 0:
            raise ValueError(f'control_rate must be > 0, got {self.control_rate}')
        if self.method not in METHODS:
            raise ValueError(f'method must be one of {METHODS}, got {self.method!r}')
        if self.reward not in REWARDS:
            raise ValueError(f'reward must be one of {REWARDS}, got {self.reward!r}')
        self.lrm_options = tuple(self.lrm_options)
        if (self.reward == 'lrm') != bool(self.lrm_options):
            raise ValueError('--lrm-* options go with --reward lrm, and --reward lrm needs them '
                             f'(reward {self.reward!r}, options {list(self.lrm_options)})')
        if self.lrm_options:
            check_lrm_arguments(self.lrm_options)
        for name in ('reward_checkpoint', 'base_checkpoint'):
            path = Path(getattr(self, name))
            missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
            if missing:
                raise ValueError(f'{name} {path} is not a checkpoint directory: '
                                 f'{", ".join(missing)} missing')
            setattr(self, name, str(path.resolve()))

    def to_dict(self) -> dict:
        """Plain JSON-able values (tasks as a list)."""
        values = asdict(self)
        values['tasks'] = list(self.tasks)
        values['lrm_options'] = list(self.lrm_options)
        return values


def spiral_config_for(vla_checkpoint: Path, updates: int) -> dict:
    """SpiralConfig (as JSON values) sized for a compact VLA checkpoint and a CPU.

    The residual acts on the VLA's action chunks, cameras and joint state; the network sizes
    and coefficients are the ones ``bench/spiral.py`` measures.
    """
    from spiral_policy.compact_vla import CompactVlaConfig
    from spiral_policy.spiral.config import SpiralConfig

    vla = CompactVlaConfig.from_json(json.loads((Path(vla_checkpoint) / 'config.json')
                                                .read_text()))
    config = SpiralConfig(action_dim=vla.action_dim, chunk_size=vla.chunk_size,
                          joint_dim=vla.state_dim, cameras=vla.cameras, feature_image_size=16,
                          hidden_dim=128, batch_size=128, updates=updates, mc_alpha=0.5,
                          reward_source='dense', residual_scale=0.2, beta=2.0, best_of_k=8,
                          candidate_noise=0.1)
    return json.loads(config.to_json())


def run_spiral_update(bags: list[Path], out: Path, *, reward_checkpoint: Path,
                      base_checkpoint: Path, task: str, config_file: Path, updates: int,
                      seed: int, round_number: int, method: str = 'spiral',
                      reward: str = 'sarm2', init: Path | None = None, env=None,
                      lrm_options: tuple[str, ...] = ()) -> dict:
    """Run the ``spiral_update`` CLI for one task; return its round report."""
    args = [str(console_script('spiral_policy', 'spiral_update')), *map(str, bags),
            '--out', str(out), '--reward-checkpoint', str(reward_checkpoint),
            '--reward', reward, '--method', method, '--config', str(config_file),
            '--base-checkpoint', str(base_checkpoint), '--task', task,
            '--updates', str(updates), '--seed', str(seed), '--round', str(round_number),
            '--threads', '1', *lrm_options]
    if init is not None:
        args += ['--init', str(init)]
    print(f'  spiral_update for {task} (round {round_number})', flush=True)
    completed = subprocess.run(args, env=env)
    if completed.returncode != 0:
        raise RunError(f'spiral_update exited with {completed.returncode}: {" ".join(args)}')
    return json.loads((out / 'round_report.json').read_text())


# --------------------------------------------------------------------------------------------
# Steps


def rollouts_name(round_number: int) -> str:
    """Step name of a round's rollouts."""
    return f'round{round_number}-rollouts'


def update_name(round_number: int) -> str:
    """Step name of a round's residual update."""
    return f'round{round_number}-update'


def vla_image_size(config: LoopConfig) -> tuple[int, tuple[str, ...]]:
    """Image size and cameras the base VLA was trained with (the sim node must match)."""
    values = json.loads((Path(config.base_checkpoint) / 'config.json').read_text())
    return int(values.get('image_size', 64)), tuple(values.get('cameras', ('corner',)))


def rollouts_step(round_number: int):
    """Step function running round ``round_number``'s episodes through the nodes."""

    def run(ctx: RunContext, out: Path) -> dict:
        config = ctx.config
        bags, logs, episodes_file, done = resume_episode_log(out)
        seen = {(r['task'], r['seed']) for r in done}
        image_size, cameras = vla_image_size(config)
        residuals = {}
        if round_number > 0:
            update = update_name(round_number)
            residuals = {task: ctx.step_dir(update) / name
                         for task, name in ctx.results[update]['residuals'].items()}
        # Round 0 runs every task on one set of nodes; later rounds need one set per task,
        # because each task has its own residual.
        groups = [config.tasks] if round_number == 0 else [(t,) for t in config.tasks]
        for group in groups:
            todo = [(task, LOOP_SEED + 1000 * round_number + 100 * config.tasks.index(task) + i)
                    for task in group for i in range(config.episodes_per_round)]
            todo = [item for item in todo if item not in seen]
            if not todo:
                continue
            params = {'residual_checkpoint': residuals[group[0]]} if residuals else {}
            graph = SimGraph(reward_checkpoint=Path(config.reward_checkpoint),
                             vla_checkpoint=Path(config.base_checkpoint), task=group[0],
                             image_size=image_size, cameras=cameras,
                             max_steps=config.max_steps, control_rate=config.control_rate,
                             seed=config.seed, env=ctx.env, policy_params=params)
            label = f'round {round_number} ' + ('base' if not residuals else group[0])
            run_node_episodes(graph, todo, bags, logs, episodes_file, label)
        records = read_jsonl(episodes_file)
        return {'round': round_number, 'per_task': node_summary(records, config.tasks),
                'episodes': records, 'bags': 'bags',
                'policy': 'base' if round_number == 0 else f'base + residual round '
                                                          f'{round_number}'}

    return run


def update_step(round_number: int):
    """Step function training round ``round_number``'s residuals on all earlier rollouts."""

    def run(ctx: RunContext, out: Path) -> dict:
        config = ctx.config
        config_file = out / 'spiral_config.json'
        config_file.write_text(json.dumps(spiral_config_for(Path(config.base_checkpoint),
                                                            config.updates), indent=1))
        bags = [ctx.step_dir(rollouts_name(r)) / 'bags' for r in range(round_number)]
        residuals, per_task = {}, {}
        for task in config.tasks:
            init = None
            if round_number > 1:
                previous = update_name(round_number - 1)
                init = ctx.step_dir(previous) / ctx.results[previous]['residuals'][task]
            residual = out / f'residual-{task}'
            report = run_spiral_update(
                bags, residual, reward_checkpoint=Path(config.reward_checkpoint),
                base_checkpoint=Path(config.base_checkpoint), task=task,
                config_file=config_file, updates=config.updates,
                seed=config.seed + round_number, round_number=round_number,
                method=config.method, reward=config.reward, init=init, env=ctx.env,
                lrm_options=config.lrm_options)
            residuals[task] = residual.name
            # Episodes of the other tasks are skipped by design; only real problems count.
            problems = [s for s in report['skipped']
                        if not s['reason'].startswith('episode is from task')]
            per_task[task] = {
                'episodes': len(report['episodes']), 'skipped': len(problems),
                'skipped_reasons': sorted({s['reason'] for s in problems}),
                'input_success_rate': report['input_success_rate'],
                'reward_model_ids': report['reward_model_ids'],
                'train_seconds': report.get('training', {}).get('train_seconds')}
        return {'round': round_number, 'residuals': residuals, 'per_task': per_task}

    return run


def loop_steps(config: LoopConfig) -> list[Step]:
    """List the steps: round 0 rollouts, (update, rollouts) per round, then the report."""
    steps = [Step(rollouts_name(0), 'base VLA episodes through sim_node + reward_node + '
                  'policy_node', rollouts_step(0), keeps_partial=True)]
    for r in range(1, config.rounds + 1):
        steps.append(Step(update_name(r), f'relabel rounds 0..{r - 1} and train the residuals '
                          f'({config.method}, {config.reward} rewards)', update_step(r)))
        steps.append(Step(rollouts_name(r), f'base + residual round {r} through the nodes',
                          rollouts_step(r), keeps_partial=True))
    steps.append(Step('report', 'writing the report', report_step))
    return steps


# --------------------------------------------------------------------------------------------
# Tables, plot, report


def round_results(ctx: RunContext) -> list[dict]:
    """Finished rounds in order: {'round', 'policy', 'per_task', 'update' (None for 0)}."""
    rounds = []
    for r in range(ctx.config.rounds + 1):
        if rollouts_name(r) not in ctx.results:
            break
        rollouts = ctx.results[rollouts_name(r)]
        rounds.append({'round': r, 'policy': rollouts['policy'],
                       'per_task': rollouts['per_task'],
                       'update': ctx.results.get(update_name(r))})
    return rounds


def rounds_table(rounds: list[dict], tasks) -> list[list[str]]:
    """Rows (header first): per round and task, success [Wilson 95%] and mean live return."""
    rows = [['round', 'policy'] + [f'{t} success' for t in tasks]
            + [f'{t} return' for t in tasks]]
    for entry in rounds:
        per_task = entry['per_task']
        rows.append([str(entry['round']), entry['policy']]
                    + [rate_cell(per_task[t]) for t in tasks]
                    + [f'{per_task[t]["mean_return"]:.2f}' for t in tasks])
    return rows


def plot_rounds(path: Path, rounds: list[dict], tasks) -> None:
    """Success rate (95% Wilson) and mean live SARM2 return per round, one line per task."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 3.6))
    x = [e['round'] for e in rounds]
    for i, task in enumerate(tasks):
        rows = [e['per_task'][task] for e in rounds]
        rates = [r['rate'] for r in rows]
        errors = [[r['rate'] - r['wilson95'][0] for r in rows],
                  [r['wilson95'][1] - r['rate'] for r in rows]]
        # A small sideways shift per task keeps overlapping intervals readable.
        shift = 0.06 * (i - (len(tasks) - 1) / 2)
        left.errorbar([r + shift for r in x], rates, yerr=errors, marker='o', capsize=3,
                      label=task)
        right.plot(x, [r['mean_return'] for r in rows], marker='o', label=task)
    left.set_ylim(-0.02, 1.05)
    left.set_ylabel('success rate (95% Wilson)')
    right.set_ylabel('mean live SARM2 episode return')
    for axis in (left, right):
        axis.set_xlabel('round (0 = base VLA)')
        axis.set_xticks(x)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def show_progress(ctx: RunContext) -> str:
    """Print the table so far and redraw ``<run>/rounds.png``; return the table text."""
    rounds = round_results(ctx)
    if not rounds:
        return ''
    text = text_table(rounds_table(rounds, ctx.config.tasks))
    plot_rounds(ctx.run_dir / 'rounds.png', rounds, ctx.config.tasks)
    print('\nsuccess per round, successes/episodes [95% Wilson interval]:\n' + text
          + f'\n(plot: {ctx.run_dir / "rounds.png"})\n', flush=True)
    return text


def report_step(ctx: RunContext, out: Path) -> dict:
    config = ctx.config
    rounds = round_results(ctx)
    rows = rounds_table(rounds, config.tasks)
    plot_rounds(out / 'rounds.png', rounds, config.tasks)
    update_rows = [['round', 'task', 'episodes used', 'unusable', 'input success',
                    'relabelled by', 'train s']]
    for entry in rounds[1:]:
        for task, row in entry['update']['per_task'].items():
            update_rows.append([str(entry['round']), task, str(row['episodes']),
                                str(row['skipped']), f'{row["input_success_rate"]:.0%}',
                                ', '.join(row['reward_model_ids']),
                                f'{row["train_seconds"] or 0:.0f}'])
    timings = {name: read_step(ctx.run_dir, name)['seconds']
               for name in (s.name for s in loop_steps(config)) if is_done(ctx.run_dir, name)}
    timing_rows = [['step', 'wall time']] + [[k, f'{v:.0f} s'] for k, v in timings.items()]
    config_rows = [['setting', 'value']] + [[f.name, str(getattr(config, f.name))]
                                            for f in fields(config)]
    first, last = rounds[0]['per_task'], rounds[-1]['per_task']
    finals = ', '.join(f'{t}: {first[t]["rate"]:.0%} -> {last[t]["rate"]:.0%}'
                       for t in config.tasks)
    note = ("Each round's success rate is measured on its own rollouts (fresh initial states "
            "every round); those episodes are also the next update's data. Cells with "
            f'{config.episodes_per_round} episodes have wide 95% intervals: only differences '
            'whose intervals do not overlap are significant.')
    summary = '\n'.join([f'SPIRAL loop ({config.method}, {config.reward} rewards), run '
                         f'{ctx.run_dir.name}', '', 'Success per round:', text_table(rows), '',
                         'Updates:', text_table(update_rows), '', f'Base -> final: {finals}.',
                         note])
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SPIRAL loop {html.escape(ctx.run_dir.name)}</title>
<style>{HTML_STYLE}</style></head><body>
<h1>SPIRAL loop: run {html.escape(ctx.run_dir.name)}</h1>
<p>Every number on this page was produced by this run.</p>
<h2>Success per round</h2>{html_table(rows)}<p>{html.escape(note)}</p>
<p><img src="rounds.png" alt="success and return per round"></p>
<h2>Updates</h2>{html_table(update_rows)}
<h2>Steps</h2>{html_table(timing_rows)}
<h2>Configuration</h2>{html_table(config_rows)}
</body></html>
"""
    (out / 'index.html').write_text(page)
    (out / 'summary.txt').write_text(summary + '\n')
    write_json_atomic(out / 'rounds.json', rounds)
    return {'summary': summary, 'html': 'index.html',
            'final_success': {t: last[t]['rate'] for t in config.tasks},
            'base_success': {t: first[t]['rate'] for t in config.tasks}}


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; every LoopConfig field is an option."""
    parser = argparse.ArgumentParser(
        prog='spiral_loop', description=__doc__.split('\n')[0],
        epilog=__doc__.split('\n', 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--reward-checkpoint', type=Path,
                        help="SARM2 checkpoint directory (default: the latest make demo run's "
                             'reward/checkpoint)')
    parser.add_argument('--base-checkpoint', type=Path,
                        help='compact VLA checkpoint directory of the frozen base policy '
                             "(default: the latest make demo run's vla/checkpoint)")
    parser.add_argument('--demo-run', type=Path, default=DEMO_RUN,
                        help='make demo run whose checkpoints are the defaults')
    parser.add_argument('--fresh', action='store_true',
                        help='start a new run instead of resuming the newest unfinished one')
    parser.add_argument('--run', type=Path, help='continue (or create) this run directory')
    parser.add_argument('--runs-dir', type=Path, default=RUNS, help='where loop runs are kept')
    add_lrm_arguments(parser)
    for f in fields(LoopConfig):
        if f.name in ('reward_checkpoint', 'base_checkpoint', 'lrm_options'):
            continue
        flag = '--' + f.name.replace('_', '-')
        if f.name == 'tasks':
            parser.add_argument(flag, nargs='+', help=f'tasks (default {" ".join(f.default)})')
        elif f.name in ('method', 'reward'):
            parser.add_argument(flag, choices=METHODS if f.name == 'method' else REWARDS,
                                help=f'default {f.default}')
        else:
            kind = float if f.type in (float, 'float') else int
            parser.add_argument(flag, type=kind, help=f'default {f.default}')
    return parser


def config_from_args(args) -> LoopConfig:
    """LoopConfig from parsed options; checkpoints default to the demo run's."""
    values = {f.name: getattr(args, f.name) for f in fields(LoopConfig)
              if getattr(args, f.name, None) is not None}
    defaults = {'reward_checkpoint': args.demo_run / 'reward' / 'checkpoint',
                'base_checkpoint': args.demo_run / 'vla' / 'checkpoint'}
    for name, default in defaults.items():
        if values.get(name) is None:
            if not default.is_dir():
                raise ValueError(f'no --{name.replace("_", "-")} given and {default} does not '
                                 'exist: run `make demo` first or pass --reward-checkpoint and '
                                 '--base-checkpoint')
            values[name] = default
    if lrm_requested(args):
        values['lrm_options'] = tuple(lrm_arguments(args))
    return LoopConfig(**values)


def main(argv=None) -> int:
    """Run (or resume) a loop; 0 on success, 2 on bad input, 1 on failure, 130 interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    try:
        if args.run is not None and (args.run / CONFIG_FILE).is_file():
            config = LoopConfig(**json.loads((args.run / CONFIG_FILE).read_text()))
        else:
            config = config_from_args(args)
    except (ValueError, TypeError) as error:
        print(f'spiral_loop: {error}', file=sys.stderr)
        return 2
    steps = loop_steps(config)
    ctx = open_run(args.runs_dir, config, steps, fresh=args.fresh, run=args.run)
    print(f'spiral_loop run: {ctx.run_dir} (config {json.dumps(config.to_dict())})', flush=True)

    def log(message: str) -> None:
        print(message, flush=True)
        if message.startswith('[round') and '-rollouts] finished' in message:
            show_progress(ctx)

    return execute(ctx, steps, 'spiral_loop', f'spiral_loop --run {ctx.run_dir}', log=log)


if __name__ == '__main__':
    sys.exit(main())
