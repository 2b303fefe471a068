"""`spiral_loop`: the self-improvement flywheel on the simulated arm, through the real ROS 2 nodes.

Round 0 runs the base VLA: sim_node + reward_node + policy_node, RunEpisode goals with
record=true, one rosbag2 bag per episode scored live by SARM2 (plus, with
``--inprocess-per-round``, rollouts of the same policy on the in-process simulated arm, recorded
as bags in the same layout: cheap extra data; and with ``--explore-per-task``, in-process
rollouts of the base with a random action offset per chunk, so the critic sees what other
actions do). Then

  labels    every round-0 bag gets a rollout label beside it: from the simulator's truth
            (``--labels sim``, ``label_rollouts_from_sim``), or written by a person with the
            labelling page (``--labels person``: ``label_rollouts <round0 bags>``; the loop stops
            until every bag has one);
  finetune  SARM2 is fine-tuned on the labelled rollouts mixed with the demonstrations
            (``sarm2_reward.flywheel``); the new checkpoint names every rollout it learned from;

and every round r >= 1

  update    relabels the bags of rounds 0..r-1 with the fine-tuned checkpoint and trains one
            residual per task (``spiral_update``, continuing the previous round's); a task whose
            rollouts so far all succeeded or all failed keeps its residual and says why;
  rollouts  deploys base + residual on fresh initial states: in-process first (on the sim the
            loop keeps the previous residual when the new one is significantly worse there),
            then through the policy node (``residual_checkpoint``), with the fine-tuned model in
            the reward node. These episodes are round r's success rate and the next round's data.

After each round the terminal shows the table so far and ``<run>/rounds.png`` is redrawn; the
run ends with ``<run>/report/index.html``. Interrupted runs resume: finished steps are kept,
finished episodes of an interrupted rollout step too (``--run`` names the run; by default the
newest unfinished run with the same configuration continues).

The reward and base checkpoints and the demonstrations default to those of the latest
``make demo`` run. With ``--reward lrm`` the updates relabel with zero-shot LRM rewards from a
VLM (the ``--lrm-*`` options, passed on to ``spiral_update``); the live reward node of the
rollouts still runs the SARM2 checkpoint (its rewards are only shown and recorded).
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

from .report_tables import HTML_STYLE, html_table, rate_cell, text_table, verdict
from .run_steps import (CONFIG_FILE, execute, is_done, read_jsonl, read_step, RunContext,
                        RunError, Step, write_json_atomic)
from .sim_graph import (console_script, node_summary, open_run, resume_episode_log,
                        run_node_episodes, SimGraph, success_row)

# Under the working directory, like make demo's runs.
RUNS = Path('runs') / 'loops'
DEMO_RUN = Path('runs') / 'latest'
# Initial-state seeds of round r's rollouts of task k start at LOOP_SEED + 10000 r + 1000 k
# (+ an offset per kind of rollout): fresh in every round and apart from the demo's
# demonstration and evaluation seeds.
LOOP_SEED = 30_000
SEED_OFFSETS = {'nodes': 0, 'inprocess': 300, 'explore': 600}
METHODS = ('spiral', 'rabc')
REWARDS = ('sarm2', 'lrm', 'time_linear', 'sparse')
LABELS = ('sim', 'person')
# Both checkpoint kinds (SARM2 and compact VLA) are a directory with these two files.
CHECKPOINT_FILES = ('config.json', 'model.safetensors')
NODE_BAGS, INPROCESS_BAGS = 'bags', 'inprocess'


@dataclass
class LoopConfig:
    """What a loop run does; saved as ``config.json`` in the run directory."""

    reward_checkpoint: str
    base_checkpoint: str
    tasks: tuple[str, ...] = ('button-press-topdown-v3', 'drawer-open-v3')
    rounds: int = 3
    episodes_per_round: int = 10    # per task, through the nodes
    inprocess_per_round: int = 0    # per task, on the in-process simulated arm (bags too)
    explore_per_task: int = 0       # round 0: in-process base rollouts with exploration noise
    explore_noise: float = 0.3      # std of their per-chunk action offset
    max_steps: int = 150
    control_rate: float = 20.0
    updates: int = 1000             # gradient steps per round and task
    method: str = 'spiral'
    reward: str = 'sarm2'
    labels: str = 'sim'             # who labels the round-0 rollouts: the simulator or a person
    finetune_steps: int = 400       # SARM2 fine-tuning on the labelled rollouts (0: none)
    demo_bags: str = ''             # demonstrations mixed into the fine-tuning ('': none)
    seed: int = 0
    lrm_options: tuple[str, ...] = ()   # spiral_update's --lrm-* options (reward lrm)

    def __post_init__(self):
        from sarm2_common.catalogue import check_tasks
        from sarm2_reward.lrm.options import check_lrm_arguments

        self.tasks = check_tasks(self.tasks)
        for name in ('rounds', 'episodes_per_round', 'max_steps', 'updates'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if max(self.episodes_per_round, self.inprocess_per_round, self.explore_per_task) > 300:
            raise ValueError('at most 300 episodes per task, round and kind (their initial '
                             'states would overlap)')
        for name in ('inprocess_per_round', 'explore_per_task', 'finetune_steps',
                     'explore_noise'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.control_rate <= 0:
            raise ValueError(f'control_rate must be > 0, got {self.control_rate}')
        for name, allowed in (('method', METHODS), ('reward', REWARDS), ('labels', LABELS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f'{name} must be one of {allowed}, got {getattr(self, name)!r}')
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
        if self.demo_bags:
            if not Path(self.demo_bags).is_dir():
                raise ValueError(f'demo_bags {self.demo_bags} is not a directory of bags')
            self.demo_bags = str(Path(self.demo_bags).resolve())

    def to_dict(self) -> dict:
        """Plain JSON-able values (tasks as a list)."""
        values = asdict(self)
        values['tasks'] = list(self.tasks)
        values['lrm_options'] = list(self.lrm_options)
        return values


def spiral_config_for(vla_checkpoint: Path, updates: int) -> dict:
    """SpiralConfig (as JSON values) sized for a compact VLA checkpoint and a CPU.

    The residual acts on the VLA's action chunks, cameras and joint state; the network sizes
    and coefficients are ``COMPACT_VLA_SETTINGS``, the ones ``bench/spiral.py`` measures.
    """
    from spiral_policy.compact_vla import CompactVlaConfig
    from spiral_policy.spiral.config import compact_vla_config

    vla = CompactVlaConfig.from_json(json.loads((Path(vla_checkpoint) / 'config.json')
                                                .read_text()))
    config = compact_vla_config(action_dim=vla.action_dim, chunk_size=vla.chunk_size,
                                joint_dim=vla.state_dim, cameras=vla.cameras, updates=updates)
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


LABELS_STEP, FINETUNE_STEP = 'round0-labels', 'reward-finetune'


def vla_image_size(config: LoopConfig) -> tuple[int, tuple[str, ...]]:
    """Image size and cameras the base VLA was trained with (the sim node must match)."""
    values = json.loads((Path(config.base_checkpoint) / 'config.json').read_text())
    return int(values.get('image_size', 64)), tuple(values.get('cameras', ('corner',)))


def round_reward_checkpoint(ctx: RunContext, round_number: int) -> Path:
    """Return round r's SARM2 checkpoint: the fine-tuned one after round 0 (if any)."""
    if round_number > 0 and FINETUNE_STEP in ctx.results:
        return ctx.step_dir(FINETUNE_STEP) / ctx.results[FINETUNE_STEP]['checkpoint']
    return Path(ctx.config.reward_checkpoint)


def round_bag_dirs(ctx: RunContext, round_number: int) -> list[Path]:
    """Directories holding round r's bags (node episodes, in-process episodes)."""
    out = ctx.step_dir(rollouts_name(round_number))
    return [d for d in (out / NODE_BAGS, out / INPROCESS_BAGS) if d.is_dir()]


def deployed_residuals(ctx: RunContext, round_number: int) -> dict[str, Path | None]:
    """Per task, the residual deployed in round r (None: the base alone)."""
    if round_number == 0:
        return dict.fromkeys(ctx.config.tasks)
    kept = ctx.results[rollouts_name(round_number)]['deployed']
    return {task: (ctx.run_dir / path if path else None) for task, path in kept.items()}


def round_seeds(config: LoopConfig, round_number: int, task: str, kind: str) -> list[int]:
    """Fresh initial states of round r's ``kind`` episodes of ``task`` (see SEED_OFFSETS)."""
    start = (LOOP_SEED + 10_000 * round_number + 1000 * config.tasks.index(task)
             + SEED_OFFSETS[kind])
    count = {'nodes': config.episodes_per_round, 'inprocess': config.inprocess_per_round,
             'explore': config.explore_per_task}[kind]
    return list(range(start, start + count))


def load_policy(config: LoopConfig, residual: Path | None, explore: bool = False):
    """Load the base VLA, plus a residual when given (what the policy node would run).

    ``explore``: the base with a random action offset per chunk (round 0's exploration).
    """
    from spiral_policy.compact_vla import CompactVlaPolicy
    from spiral_policy.spiral.config import SpiralConfig
    from spiral_policy.spiral.residual import ResidualActor
    from spiral_policy.spiral.residual_policy import ResidualPolicy

    base = CompactVlaPolicy.from_checkpoint(config.base_checkpoint)
    if explore:
        untrained = ResidualActor(SpiralConfig(**spiral_config_for(
            Path(config.base_checkpoint), config.updates)))
        return ResidualPolicy(base, untrained, exploration_noise=config.explore_noise,
                              seed=config.seed)
    return base if residual is None else ResidualPolicy.from_checkpoint(residual, base,
                                                                         seed=config.seed)


@dataclass(frozen=True)
class InprocessJob:
    """One task's in-process rollouts of one kind in one round (run in a worker process)."""

    config: LoopConfig
    round_number: int
    task: str
    kind: str                     # 'inprocess', or 'explore' (round 0)
    residual: Path | None
    reward_checkpoint: Path
    directory: Path


def inprocess_job(ctx: RunContext, round_number: int, task: str, residual: Path | None,
                  out: Path, kind: str = 'inprocess') -> InprocessJob:
    """Round r's in-process rollouts of ``task`` (recorded as bags, live SARM2 rewards).

    ``kind`` 'explore': the base with exploration noise instead (round 0).
    """
    return InprocessJob(ctx.config, round_number, task, kind, residual,
                        round_reward_checkpoint(ctx, round_number),
                        out / INPROCESS_BAGS / (task if kind == 'inprocess'
                                                else f'{task}-{kind}'))


def record_inprocess(job: InprocessJob, progress) -> list[dict]:
    """Record ``job``'s rollouts; return their episode records. ``progress.put(1)`` each."""
    import torch

    from sarm2_reward.backend import Sarm2Backend
    from .rollout_bags import record_sim_rollouts

    # One thread per job: jobs run side by side, one per core (process_pool).
    torch.set_num_threads(1)
    config = job.config
    image_size, cameras = vla_image_size(config)
    backend = Sarm2Backend.from_checkpoint(job.reward_checkpoint)
    results = record_sim_rollouts(
        load_policy(config, job.residual, explore=job.kind == 'explore'), job.task,
        round_seeds(config, job.round_number, job.task, job.kind), job.directory,
        max_steps=config.max_steps, cameras=cameras, image_size=image_size,
        reward_backend=backend, progress=False, on_episode=lambda: progress.put(1))
    return [inprocess_record(r) for r in results]


def run_inprocess_jobs(jobs: list[InprocessJob], round_number: int) -> dict:
    """Run ``jobs`` side by side; return {(task, kind): episode records}."""
    from .process_pool import run_in_processes

    if not jobs:
        return {}
    episodes = sum(len(round_seeds(j.config, j.round_number, j.task, j.kind)) for j in jobs)
    records = run_in_processes(record_inprocess, jobs, episodes,
                               f'round {round_number} in-process')
    return {(job.task, job.kind): rows for job, rows in zip(jobs, records)}


def inprocess_record(result) -> dict:
    """Return an in-process rollout as an episode record like the node client's.

    The live return is read back from the bag's end record.
    """
    from sarm2_common.bag_dataset import read_episode

    bag = Path(result.bag)
    episode = read_episode(bag)
    return {'task': result.task, 'seed': result.seed, 'success': result.success,
            'episode_id': result.episode_id, 'bag_path': str(bag),
            'episode_return': float(episode.metadata.get('episode_return', 0.0)),
            'steps': result.steps}


def keep_or_revert(previous: dict | None, new: dict) -> tuple[bool, str]:
    """Keep the new residual unless its success rate is significantly below the previous one.

    ``previous``/``new``: success rows (``success_row``) of the previous round's deployed policy
    and of the new residual, on fresh initial states. Returns (keep, reason).
    """
    if previous is None or not previous['episodes'] or not new['episodes']:
        return True, ''
    if verdict(previous, new) == 'worse (intervals apart)':
        return False, (f'the new residual succeeded {rate_cell(new)} in-process, significantly '
                       f'below the previous policy ({rate_cell(previous)}): kept the previous '
                       'one')
    return True, ''


def rollouts_step(round_number: int):
    """Step function running round ``round_number``'s episodes (in-process, then the nodes)."""

    def run(ctx: RunContext, out: Path) -> dict:
        config = ctx.config
        bags, logs, episodes_file, done = resume_episode_log(out)
        image_size, cameras = vla_image_size(config)
        candidates = dict.fromkeys(config.tasks)
        previous = dict(candidates)
        if round_number > 0:
            update = ctx.results[update_name(round_number)]
            candidates = {task: ctx.run_dir / path if path else None
                          for task, path in update['residuals'].items()}
            previous = deployed_residuals(ctx, round_number - 1)
        deployed, guard, inprocess, reference, explore = {}, {}, {}, {}, {}
        jobs = []
        for task in config.tasks:
            if round_number == 0 and config.explore_per_task:
                jobs.append(inprocess_job(ctx, 0, task, None, out, kind='explore'))
            if config.inprocess_per_round:
                jobs.append(inprocess_job(ctx, round_number, task, candidates[task], out))
        recorded = run_inprocess_jobs(jobs, round_number)
        for task in config.tasks:
            residual = candidates[task]
            if (task, 'explore') in recorded:
                explore[task] = recorded[task, 'explore']
            if config.inprocess_per_round:
                inprocess[task] = recorded[task, 'inprocess']
                reference[task] = success_row(inprocess[task])
            keep = True
            if round_number > 0 and config.inprocess_per_round and residual != previous[task]:
                # The previous round's deployed policy, as measured in-process.
                before = ctx.results[rollouts_name(round_number - 1)]['deployed_inprocess']
                keep, guard[task] = keep_or_revert(before.get(task), reference[task])
                if not keep:
                    reference[task] = before[task]
            deployed[task] = residual if keep else previous[task]
        seen = {(r['task'], r['seed']) for r in done}
        # Round 0 runs every task on one set of nodes; later rounds need one set per task,
        # because each task has its own residual.
        groups = [config.tasks] if round_number == 0 else [(t,) for t in config.tasks]
        for group in groups:
            todo = [(task, seed) for task in group
                    for seed in round_seeds(config, round_number, task, 'nodes')
                    if (task, seed) not in seen]
            if not todo:
                continue
            residual = deployed[group[0]]
            params = {'residual_checkpoint': residual} if residual else {}
            graph = SimGraph(reward_checkpoint=round_reward_checkpoint(ctx, round_number),
                             vla_checkpoint=Path(config.base_checkpoint), task=group[0],
                             image_size=image_size, cameras=cameras,
                             max_steps=config.max_steps, control_rate=config.control_rate,
                             seed=config.seed, env=ctx.env, policy_params=params)
            label = f'round {round_number} ' + ('base' if not residual else group[0])
            run_node_episodes(graph, todo, bags, logs, episodes_file, label)
        records = read_jsonl(episodes_file)
        return {'round': round_number, 'per_task': node_summary(records, config.tasks),
                'episodes': records, 'bags': NODE_BAGS, 'inprocess': inprocess,
                'explore': explore,
                'inprocess_per_task': {t: success_row(rows) for t, rows in inprocess.items()},
                'deployed_inprocess': reference,
                'deployed': {t: str(p.relative_to(ctx.run_dir)) if p else None
                             for t, p in deployed.items()},
                'guard': guard,
                'reward_checkpoint': str(round_reward_checkpoint(ctx, round_number)),
                'policy': 'base' if round_number == 0 else f'base + residual round '
                                                          f'{round_number}'}

    return run


def round_records(ctx: RunContext, round_number: int) -> list[dict]:
    """Every episode record of round r: node episodes, in-process and exploration ones."""
    result = ctx.results[rollouts_name(round_number)]
    return result['episodes'] + [r for kind in ('inprocess', 'explore')
                                 for rows in result.get(kind, {}).values() for r in rows]


def labels_step(ctx: RunContext, out: Path) -> dict:
    """Label every round-0 bag (the simulator's truth), or check a person labelled them all."""
    from sarm2_common.bag_dataset import find_bags
    from sarm2_common.rollout_labels import check_label

    bags = [bag for root in round_bag_dirs(ctx, 0) for bag in find_bags(root)]
    if ctx.config.labels == 'sim':
        command = [str(console_script('sarm2_sim', 'label_rollouts_from_sim')),
                   *map(str, round_bag_dirs(ctx, 0))]
        if ctx.config.demo_bags:
            # Failures get progress on the demonstrations' scale (what the model learned).
            command += ['--demos', ctx.config.demo_bags]
        completed = subprocess.run(command, env=ctx.env)
        if completed.returncode != 0:
            raise RunError(f'label_rollouts_from_sim exited with {completed.returncode}: '
                           f'{" ".join(command)}')
    checks = {str(bag): check_label(bag) for bag in bags}
    missing = sorted(b for b, c in checks.items() if c.status != 'labelled')
    if missing:
        raise RunError(f'{len(missing)} of {len(bags)} round-0 rollouts have no valid label '
                       f'(e.g. {missing[0]}: {checks[missing[0]].problem or "unlabelled"}). '
                       'Label them in the browser: `label_rollouts '
                       f'{" ".join(map(str, round_bag_dirs(ctx, 0)))}`, then rerun this '
                       'command to continue.')
    labelled = [c.label for c in checks.values()]
    return {'labels': len(labelled), 'labeller': sorted({c.label.labeller for c in
                                                         checks.values()}),
            'successes': sum(label.success for label in labelled)}


def finetune_step(ctx: RunContext, out: Path) -> dict:
    """Fine-tune the reward model on the labelled round-0 rollouts (+ the demonstrations)."""
    from sarm2_reward.flywheel import finetune_on_rollouts, finetune_train_config

    config = ctx.config
    demos = [Path(config.demo_bags)] if config.demo_bags else []
    print(f'  fine-tuning {config.reward_checkpoint} on the labelled round-0 rollouts '
          f'({config.finetune_steps} steps)', flush=True)
    result = finetune_on_rollouts(
        config.reward_checkpoint, demos, round_bag_dirs(ctx, 0), out / 'checkpoint',
        train=finetune_train_config(steps=config.finetune_steps, seed=config.seed,
                                    num_threads=1, device='cpu'))
    from sarm2_reward.inference import Sarm2Predictor

    model_id = Sarm2Predictor.from_checkpoint(out / 'checkpoint').model_id
    return {'checkpoint': 'checkpoint', 'model_id': model_id,
            'init_model_id': result['init_checkpoint']['model_id'],
            'rollouts': result['rollouts'], 'demonstrations': result['demonstrations'],
            'calibration': result['calibration']}


def outcomes_so_far(ctx: RunContext, round_number: int, task: str) -> list[bool]:
    """Outcomes of ``task``'s episodes of rounds 0..r-1 (the update's data)."""
    return [bool(r['success']) for k in range(round_number)
            for r in round_records(ctx, k) if r['task'] == task]


def update_step(round_number: int):
    """Step function training round ``round_number``'s residuals on all earlier rollouts."""

    def run(ctx: RunContext, out: Path) -> dict:
        config = ctx.config
        config_file = out / 'spiral_config.json'
        config_file.write_text(json.dumps(spiral_config_for(Path(config.base_checkpoint),
                                                            config.updates), indent=1))
        bags = [d for k in range(round_number) for d in round_bag_dirs(ctx, k)]
        reward = round_reward_checkpoint(ctx, round_number)
        previous = deployed_residuals(ctx, round_number - 1)
        residuals, per_task = {}, {}
        for task in config.tasks:
            outcomes = outcomes_so_far(ctx, round_number, task)
            note = single_outcome_note(outcomes)
            if note:
                print(f'  {task}: {note}', flush=True)
            if outcomes and all(outcomes):
                kept = previous[task]
                residuals[task] = str(kept.relative_to(ctx.run_dir)) if kept else None
                per_task[task] = {'episodes': len(outcomes), 'skipped': 0, 'note': note,
                                  'input_success_rate': 1.0, 'reward_model_ids': [],
                                  'train_seconds': 0.0, 'relabelled_auroc': None}
                continue
            residual = out / f'residual-{task}'
            report = run_spiral_update(
                bags, residual, reward_checkpoint=reward,
                base_checkpoint=Path(config.base_checkpoint), task=task,
                config_file=config_file, updates=config.updates,
                seed=config.seed + round_number, round_number=round_number,
                method=config.method, reward=config.reward, init=previous[task], env=ctx.env,
                lrm_options=config.lrm_options)
            residuals[task] = f'{update_name(round_number)}/{residual.name}'
            # Episodes of the other tasks are skipped by design; only real problems count.
            problems = [s for s in report['skipped']
                        if not s['reason'].startswith('episode is from task')]
            newest = {r['episode_id'] for r in round_records(ctx, round_number - 1)}
            fresh = [e for e in report['episodes'] if e['episode_id'] in newest]
            per_task[task] = {
                'episodes': len(report['episodes']), 'skipped': len(problems),
                'skipped_reasons': sorted({s['reason'] for s in problems}),
                'input_success_rate': report['input_success_rate'],
                'reward_model_ids': report['reward_model_ids'],
                'train_seconds': report.get('training', {}).get('train_seconds'),
                'relabelled_auroc': return_auroc([e['dense_return'] for e in fresh],
                                                 [e['success'] for e in fresh]),
                'note': note}
        # Residual paths relative to the run directory (a kept one lives in an earlier step).
        return {'round': round_number, 'residuals': residuals, 'per_task': per_task,
                'reward_checkpoint': str(reward)}

    return run


def single_outcome_note(outcomes: list[bool]) -> str:
    """Say what an update can learn when every rollout so far had the same outcome ('' if not)."""
    if not outcomes or len(set(outcomes)) > 1:
        return ''
    if outcomes[0]:
        return (f'all {len(outcomes)} rollouts so far succeeded: nothing to improve on, so the '
                'residual stays as it was')
    return (f'all {len(outcomes)} rollouts so far failed: the critic sees no success to aim for, '
            'only the dense reward; expect little change')


def return_auroc(returns: list[float], outcomes: list[bool]) -> float | None:
    """How often a success's return beats a failure's (ties count half); None: one outcome."""
    wins = [r for r, ok in zip(returns, outcomes) if ok]
    losses = [r for r, ok in zip(returns, outcomes) if not ok]
    if not wins or not losses:
        return None
    better = sum((w > v) + 0.5 * (w == v) for w in wins for v in losses)
    return better / (len(wins) * len(losses))


def loop_steps(config: LoopConfig) -> list[Step]:
    """List the steps: round 0, labels, fine-tuning, (update, rollouts) per round, report."""
    steps = [Step(rollouts_name(0), 'base VLA episodes through sim_node + reward_node + '
                  'policy_node', rollouts_step(0), keeps_partial=True),
             Step(LABELS_STEP, f'labelling the round-0 rollouts ({config.labels})', labels_step)]
    if config.finetune_steps:
        steps.append(Step(FINETUNE_STEP, 'fine-tuning SARM2 on the labelled rollouts',
                          finetune_step))
    for r in range(1, config.rounds + 1):
        steps.append(Step(update_name(r), f'relabel rounds 0..{r - 1} and train the residuals '
                          f'({config.method}, {config.reward} rewards)', update_step(r)))
        steps.append(Step(rollouts_name(r), f'base + residual round {r} (in-process, then '
                          'through the nodes)', rollouts_step(r), keeps_partial=True))
    steps.append(Step('report', 'writing the report', report_step))
    return steps


# --------------------------------------------------------------------------------------------
# Tables, plot, report


def round_results(ctx: RunContext) -> list[dict]:
    """Finished rounds in order, with their success rows and reward rankings per task."""
    rounds = []
    for r in range(ctx.config.rounds + 1):
        if rollouts_name(r) not in ctx.results:
            break
        result = ctx.results[rollouts_name(r)]
        records = round_records(ctx, r)
        following = ctx.results.get(update_name(r + 1), {}).get('per_task', {})
        live = {t: return_auroc([e['episode_return'] for e in records if e['task'] == t],
                                [e['success'] for e in records if e['task'] == t])
                for t in ctx.config.tasks}
        rounds.append({'round': r, 'policy': result['policy'], 'per_task': result['per_task'],
                       'inprocess_per_task': result.get('inprocess_per_task', {}),
                       'guard': result.get('guard', {}), 'live_auroc': live,
                       'relabelled_auroc': {t: following.get(t, {}).get('relabelled_auroc')
                                            for t in ctx.config.tasks},
                       'update': ctx.results.get(update_name(r))})
    return rounds


def _auroc(value) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


def rounds_table(rounds: list[dict], tasks) -> list[list[str]]:
    """Rows (header first): per round and task, success [Wilson 95%] and reward rankings."""
    rows = [['round', 'task', 'nodes', 'in-process', 'live AUROC', 'relabelled AUROC', 'note']]
    for entry in rounds:
        for task in tasks:
            inprocess = entry['inprocess_per_task'].get(task)
            note = entry['guard'].get(task) or ''
            unchanged = ((entry['update'] or {}).get('per_task', {}).get(task, {})
                         .get('note'))
            rows.append([str(entry['round']), task, rate_cell(entry['per_task'][task]),
                         rate_cell(inprocess) if inprocess else '-',
                         _auroc(entry['live_auroc'][task]),
                         _auroc(entry['relabelled_auroc'][task]),
                         '; '.join(n for n in (unchanged, note) if n)])
    return rows


def plot_rounds(path: Path, rounds: list[dict], tasks) -> None:
    """Success rate per round (95% Wilson; nodes and in-process), one line per task."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6.5, 3.6))
    x = [e['round'] for e in rounds]
    for i, task in enumerate(tasks):
        for kind, key, style in (('nodes', 'per_task', '-o'),
                                 ('in-process', 'inprocess_per_task', '--s')):
            rows = [e[key].get(task) for e in rounds]
            if not all(rows):
                continue
            # A small sideways shift per series keeps overlapping intervals readable.
            shift = 0.05 * (2 * i + (kind != 'nodes') - len(tasks) + 0.5)
            axis.errorbar([r + shift for r in x], [r['rate'] for r in rows], fmt=style,
                          capsize=3, label=f'{task} ({kind})',
                          yerr=[[r['rate'] - r['wilson95'][0] for r in rows],
                                [r['wilson95'][1] - r['rate'] for r in rows]])
    axis.set_ylim(-0.02, 1.05)
    axis.set_ylabel('success rate (95% Wilson)')
    axis.set_xlabel('round (0 = base VLA)')
    axis.set_xticks(x)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def plot_live_progress(path: Path, records: list[dict], tasks) -> None:
    """Live SARM2 progress of node episodes, one panel per task (green success, red failure)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4),
                                   squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for record in records:
            trace = record.get('progress_trace') or []
            if record['task'] == task and trace:
                axis.plot([i / max(1, len(trace) - 1) for i in range(len(trace))], trace,
                          color='tab:green' if record['success'] else 'tab:red', alpha=0.5,
                          lw=1)
        axis.set_title(task, fontsize=9)
        axis.set_xlabel('episode time (normalised)')
        axis.set_ylim(-0.02, 1.05)
    axes[0][0].set_ylabel('live SARM2 progress')
    figure.suptitle('live rewards from the reward node (green: success, red: failure)',
                    fontsize=9)
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


def flywheel_notes(ctx: RunContext) -> list[str]:
    """Say what the labels and the fine-tuning did, in sentences for the report."""
    notes = []
    labels = ctx.results.get(LABELS_STEP)
    if labels:
        notes.append(f'Round-0 rollouts labelled: {labels["labels"]} ({labels["successes"]} '
                     f'successes) by {", ".join(labels["labeller"])}.')
    finetune = ctx.results.get(FINETUNE_STEP)
    if finetune:
        notes.append(f'Reward model fine-tuned on {finetune["rollouts"]} labelled rollouts and '
                     f'{finetune["demonstrations"]} demonstrations: {finetune["init_model_id"]} '
                     f'-> {finetune["model_id"]} (its config.json lists every rollout bag and '
                     'label it learned from); rounds >= 1 relabel every bag and run the reward '
                     'node with it.')
        calibration = finetune.get('calibration') or {}
        per_task = calibration.get('per_task') or {}
        if per_task:
            cells = '; '.join(
                f'{task} {c["threshold"]:.3f} ({c["true_positive_rate"] or 0:.0%} of '
                f'{c["successes"]} successes)' for task, c in sorted(per_task.items()))
            frames = calibration['consecutive_frames']
            notes.append(f'Its success head, calibrated on those rollouts (held {frames} frames, '
                         f'no false positive among them; in-sample rates): {cells}. On a robot '
                         "the policy node's success_calibration (this checkpoint) ends "
                         'episodes at these thresholds.')
    return notes


def report_step(ctx: RunContext, out: Path) -> dict:
    config = ctx.config
    rounds = round_results(ctx)
    rows = rounds_table(rounds, config.tasks)
    plot_rounds(out / 'rounds.png', rounds, config.tasks)
    records = [e for k in range(len(rounds)) for e in ctx.results[rollouts_name(k)]['episodes']]
    plot_live_progress(out / 'live_progress.png', records, config.tasks)
    update_rows = [['round', 'task', 'episodes used', 'unusable', 'input success',
                    'relabelled by', 'train s']]
    for entry in rounds[1:]:
        for task, row in entry['update']['per_task'].items():
            update_rows.append([str(entry['round']), task, str(row['episodes']),
                                str(row['skipped']), f'{row["input_success_rate"]:.0%}',
                                ', '.join(row['reward_model_ids']) or '-',
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
            "every round); those episodes are also the next update's data. Live AUROC: how "
            "well the reward node's episode return ranked the round's rollouts by outcome; "
            'relabelled AUROC: the same for the return the next update relabelled them with. '
            'Only differences whose 95% intervals do not overlap are significant.')
    summary = '\n'.join([f'SPIRAL loop ({config.method}, {config.reward} rewards), run '
                         f'{ctx.run_dir.name}', '', 'Success per round:', text_table(rows), '',
                         'Updates:', text_table(update_rows), '', *flywheel_notes(ctx), '',
                         f'Base -> final (nodes): {finals}.', note])
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SPIRAL loop {html.escape(ctx.run_dir.name)}</title>
<style>{HTML_STYLE}</style></head><body>
<h1>SPIRAL loop: run {html.escape(ctx.run_dir.name)}</h1>
<p>Every number on this page was produced by this run.</p>
<h2>Success per round</h2>{html_table(rows)}<p>{html.escape(note)}</p>
<p><img src="rounds.png" alt="success per round"></p>
<p><img src="live_progress.png" alt="live progress per task"></p>
<h2>Flywheel</h2><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in flywheel_notes(ctx))}</ul>
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
    parser.add_argument('--demo-bags', type=Path,
                        help='demonstration bags mixed into the reward fine-tuning (default: '
                             "the latest make demo run's demos/bags when it exists)")
    parser.add_argument('--demo-run', type=Path, default=DEMO_RUN,
                        help='make demo run whose checkpoints are the defaults')
    parser.add_argument('--fresh', action='store_true',
                        help='start a new run instead of resuming the newest unfinished one')
    parser.add_argument('--run', type=Path, help='continue (or create) this run directory')
    parser.add_argument('--runs-dir', type=Path, default=RUNS, help='where loop runs are kept')
    add_lrm_arguments(parser)
    for f in fields(LoopConfig):
        if f.name in ('reward_checkpoint', 'base_checkpoint', 'demo_bags', 'lrm_options'):
            continue
        flag = '--' + f.name.replace('_', '-')
        if f.name == 'tasks':
            parser.add_argument(flag, nargs='+', help=f'tasks (default {" ".join(f.default)})')
        elif f.name in ('method', 'reward', 'labels'):
            choices = {'method': METHODS, 'reward': REWARDS, 'labels': LABELS}[f.name]
            parser.add_argument(flag, choices=choices, help=f'default {f.default}')
        else:
            kind = float if f.type in (float, 'float') else int
            parser.add_argument(flag, type=kind, help=f'default {f.default}')
    return parser


def config_from_args(args) -> LoopConfig:
    """LoopConfig from parsed options; checkpoints and demos default to the demo run's."""
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
    demos = args.demo_run / 'demos' / 'bags'
    if values.get('demo_bags') is None and demos.is_dir():
        values['demo_bags'] = demos
    if lrm_requested(args):
        values['lrm_options'] = tuple(lrm_arguments(args))
    return LoopConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()})


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
