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
from dataclasses import asdict, dataclass, field, fields
import html
import json
import logging
import os
from pathlib import Path
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

ROOT = Path(__file__).resolve().parents[3]
RUNS = ROOT / 'runs'
CAMERA = 'corner'
IMAGE_SIZE = 64
DONE_FILE = 'step.json'
PARTIAL_SUFFIX = '.partial'
CONFIG_FILE = 'config.json'
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
        from sarm2_sim.catalogue import load_catalogue

        self.tasks = tuple(self.tasks)
        known = load_catalogue()
        unknown = [t for t in self.tasks if t not in known]
        if not self.tasks or unknown:
            raise ValueError(f'unknown task(s) {unknown}; choose from {sorted(known)}')
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
# Runs and the step registry


@dataclass
class Step:
    """One stage of the demo: ``run(ctx, out_dir) -> dict`` writes its outputs into out_dir.

    ``keeps_partial``: an interrupted attempt's directory is handed to the next attempt (the step
    skips the work it finds finished there); otherwise it is deleted and the step starts over.
    """

    name: str
    description: str
    run: Callable
    keeps_partial: bool = False


@dataclass
class RunContext:
    """What a step may read: the run directory, the configuration, earlier steps' results."""

    run_dir: Path
    config: DemoConfig
    results: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    def step_dir(self, name: str) -> Path:
        return self.run_dir / name


def is_done(run_dir: Path, name: str) -> bool:
    """Say whether a step is complete: its directory holds its completion record."""
    return (run_dir / name / DONE_FILE).is_file()


def read_step(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name / DONE_FILE).read_text())


def run_steps(ctx: RunContext, steps: list[Step], log=print) -> dict:
    """Run every unfinished step in order; return {step: record} for all of them."""
    for step in steps:
        final = ctx.step_dir(step.name)
        if is_done(ctx.run_dir, step.name):
            record = read_step(ctx.run_dir, step.name)
            ctx.results[step.name] = record['result']
            log(f'[{step.name}] done in an earlier run ({record["seconds"]:.0f} s), skipping')
            continue
        if final.exists():
            # A directory without its completion record was not written by run_steps (a
            # rename is atomic); it cannot be trusted.
            shutil.rmtree(final)
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if partial.exists() and not step.keeps_partial:
            log(f'[{step.name}] discarding the interrupted attempt')
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        log(f'[{step.name}] {step.description}')
        started = time.monotonic()
        result = step.run(ctx, partial)
        seconds = time.monotonic() - started
        record = {'step': step.name, 'seconds': seconds, 'result': result,
                  'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
        write_json_atomic(partial / DONE_FILE, record)
        os.replace(partial, final)
        ctx.results[step.name] = result
        log(f'[{step.name}] finished in {seconds:.0f} s')
    return {s.name: read_step(ctx.run_dir, s.name) for s in steps}


def write_json_atomic(path: Path, data) -> None:
    """Write JSON so that a reader sees the old file or the whole new one, never a torn one."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_complete(run_dir: Path, steps: list[Step]) -> bool:
    return all(is_done(run_dir, s.name) for s in steps)


def select_run(runs_dir: Path, config: DemoConfig, steps: list[Step], fresh: bool = False,
               run: Path | None = None, now: Callable[[], str] | None = None) -> Path:
    """Return the run directory to use, creating it (with its config) when new.

    ``run`` given: that directory (its saved config wins). Otherwise the newest unfinished run
    with the same configuration, unless ``fresh``; else a new ``runs/<timestamp>``.
    """
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        if not (run / CONFIG_FILE).is_file():
            write_json_atomic(run / CONFIG_FILE, config.to_dict())
        return run
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not fresh:
        candidates = sorted((p for p in runs_dir.iterdir()
                             if p.is_dir() and not p.is_symlink() and (p / CONFIG_FILE).is_file()),
                            key=lambda p: p.name, reverse=True)
        for candidate in candidates:
            try:
                saved = json.loads((candidate / CONFIG_FILE).read_text())
            except (OSError, ValueError):
                continue
            if saved == config.to_dict() and not run_complete(candidate, steps):
                return candidate
    name = (now or (lambda: time.strftime('%Y%m%d-%H%M%S')))()
    path = runs_dir / name
    suffix = 1
    while path.exists():
        path = runs_dir / f'{name}-{suffix}'
        suffix += 1
    path.mkdir(parents=True)
    write_json_atomic(path / CONFIG_FILE, config.to_dict())
    return path


def link_latest(runs_dir: Path, run_dir: Path) -> None:
    """Point ``runs/latest`` at ``run_dir`` (replaced atomically)."""
    link = runs_dir / 'latest'
    tmp = runs_dir / '.latest.tmp'
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    target = os.path.relpath(run_dir, runs_dir)
    tmp.symlink_to(target)
    os.replace(tmp, link)


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
    from sarm2_reward.bag_dataset import read_episodes

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


def console_script(package: str, name: str) -> Path:
    """Path of a colcon-installed console script; a clear error when the build is missing."""
    path = ROOT / 'install' / package / 'lib' / package / name
    if not path.exists():
        raise DemoError(f'{path} not found: run `make bootstrap` (or scripts/bootstrap.sh) '
                        'to build the workspace')
    return path


class DemoError(Exception):
    """A problem the user can fix; printed without a traceback."""


class NodeProcess:
    """A node in its own process group, output to a log file; stopped with SIGINT, then killed."""

    def __init__(self, executable: Path, name: str, params_file: Path | None, params: dict,
                 log_dir: Path, env: dict):
        self.name = name
        args = [str(executable), '--ros-args', '-r', f'__node:={name}']
        if params_file is not None:
            args += ['--params-file', str(params_file)]
        for key, value in params.items():
            args += ['-p', f'{key}:={value}']
        self.args = args
        self.log_path = log_dir / f'{name}.log'
        self._log = open(self.log_path, 'a')
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(env, PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0'))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


def ros_environment() -> dict:
    """Environment of the node processes (and this one): private DDS domain on localhost."""
    env = dict(os.environ)
    # A random private domain keeps the demo's nodes from meeting other ROS graphs (or a second
    # demo) on this machine; the user's choice wins when set.
    env.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(30, 99)))
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    return env


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSON-lines file; a torn last line (killed mid-write) is ignored."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
    return records


def resume_episode_log(out: Path) -> tuple[Path, Path, Path, list[dict]]:
    """Prepare ``out`` for node episodes; return (bags, logs, episodes file, finished records).

    Episodes finished by an interrupted attempt are kept; a bag without a result line was cut
    mid-episode and is deleted, so that episode runs again.
    """
    bags, logs = out / 'bags', out / 'logs'
    bags.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    episodes_file = out / 'episodes.jsonl'
    done = read_jsonl(episodes_file)
    # Rewrite without a torn last line (killed mid-write), atomically.
    tmp = episodes_file.with_suffix('.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in done))
    os.replace(tmp, episodes_file)
    finished = {Path(r['bag_path']).name for r in done if r['bag_path']}
    for bag in bags.iterdir():
        if bag.name not in finished:
            shutil.rmtree(bag, ignore_errors=True)
    return bags, logs, episodes_file, done


def success_row(rows: list[dict]) -> dict:
    """Successes, rate and 95% Wilson interval of episode records (or outcomes)."""
    from spiral_policy.sim_evaluation import wilson_interval

    successes = sum(bool(r['success']) for r in rows)
    low, high = wilson_interval(successes, len(rows))
    return {'successes': successes, 'episodes': len(rows),
            'rate': successes / max(1, len(rows)), 'wilson95': [low, high]}


def node_summary(records: list[dict], tasks) -> dict:
    per_task = {}
    for task in tasks:
        rows = [r for r in records if r['task'] == task]
        per_task[task] = dict(success_row(rows),
                              mean_return=sum(r['episode_return'] for r in rows)
                              / max(1, len(rows)),
                              reward_messages=sum(r['reward_messages'] for r in rows))
    for record in records:
        record['bag_path'] = str(Path('bags') / Path(record['bag_path']).name)
    return per_task


def step_rollouts(ctx: RunContext, out: Path) -> dict:
    config = ctx.config
    bags, logs, episodes_file, done = resume_episode_log(out)
    todo = [(task, ROLLOUT_SEED + 100 * t + i) for t, task in enumerate(config.tasks)
            for i in range(config.rollouts_per_task)]
    seen = {(r['task'], r['seed']) for r in done}
    todo = [item for item in todo if item not in seen]
    if todo:
        run_node_episodes(ctx, todo, bags, logs, episodes_file, {}, 'rollouts')
    records = read_jsonl(episodes_file)
    print(f'  {len(records)} rollouts recorded', flush=True)
    return {'per_task': node_summary(records, config.tasks), 'episodes': records,
            'bags': 'bags'}


def run_node_episodes(ctx: RunContext, todo: list, bags: Path, logs: Path,
                      episodes_file: Path, policy_params: dict, label: str) -> None:
    """Start the three nodes, run the episodes as RunEpisode goals, stop the nodes."""
    from tqdm import tqdm

    config = ctx.config
    env = ctx.env
    reward_checkpoint = ctx.step_dir('reward') / ctx.results['reward']['checkpoint']
    vla_checkpoint = ctx.step_dir('vla') / ctx.results['vla']['checkpoint']
    rate = config.control_rate
    nodes = []
    client = None
    try:
        # One sim step per control step (sim_rate = control_rate): the VLA was cloned from
        # demonstrations with one action per simulator step.
        nodes.append(NodeProcess(console_script('sarm2_sim', 'sim_node'), 'sim_node',
                                 ROOT / 'config' / 'sim_node.yaml',
                                 {'task': config.tasks[0], 'image_size': IMAGE_SIZE,
                                  'sim_rate': rate, 'camera_rate': rate,
                                  'joint_state_rate': rate * 2, 'max_linear_speed': 0.8,
                                  'seed': config.seed}, logs, env))
        nodes.append(NodeProcess(console_script('sarm2_reward', 'reward_node'), 'reward_node',
                                 ROOT / 'config' / 'reward_node.yaml',
                                 {'checkpoint': reward_checkpoint, 'autostart': 'true',
                                  'torch_threads': 1, 'task': config.tasks[0]}, logs, env))
        nodes.append(NodeProcess(console_script('spiral_policy', 'policy_node'), 'policy_node',
                                 ROOT / 'config' / 'policy_node.yaml',
                                 {'checkpoint': vla_checkpoint, 'autostart': 'true',
                                  'bag_directory': bags, 'success_source': 'sim',
                                  'max_steps': config.max_steps, 'control_rate': rate,
                                  'time_limit': 4.0 * config.max_steps / rate + 10.0,
                                  'start_timeout': 30.0, **policy_params}, logs, env))
        from spiral_policy.ros.demo_client import EpisodeClient

        def alive():
            return all(node.alive() for node in nodes)

        client = EpisodeClient('/policy_node/run_episode', alive=alive)
        print(f'  nodes started (ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}, logs in {logs}); '
              'waiting for them to come up', flush=True)
        client.wait_ready(timeout=180.0)
        bar = tqdm(todo, desc=label, unit='episode')
        for task, seed in bar:
            result = client.run_episode(task, seed, record=True, max_steps=config.max_steps,
                                        timeout=8.0 * config.max_steps / rate + 60.0)
            if not result['bag_path']:
                raise DemoError(f'the policy node recorded no bag for {task} seed {seed} '
                                f'(reason {result["reason"]!r})')
            with open(episodes_file, 'a') as stream:
                stream.write(json.dumps(result) + '\n')
                stream.flush()
                os.fsync(stream.fileno())
            bar.set_postfix(task=task[:12], success=result['success'],
                            rewards=result['reward_messages'])
    except (RuntimeError, TimeoutError) as error:
        tails = '\n'.join(f'--- {n.log_path}\n{n.tail()}' for n in nodes)
        raise DemoError(f'rollouts failed: {error}\n{tails}') from error
    finally:
        if client is not None:
            client.close()
        for node in reversed(nodes):
            node.stop()


def spiral_config_dict(ctx: RunContext) -> dict:
    from spiral_policy.spiral.config import SpiralConfig

    config = SpiralConfig(chunk_size=8, feature_image_size=16, hidden_dim=128, batch_size=128,
                          updates=ctx.config.spiral_updates, mc_alpha=0.5, reward_source='dense',
                          residual_scale=0.2, beta=2.0, best_of_k=8, candidate_noise=0.1)
    return json.loads(config.to_json())


def step_spiral(ctx: RunContext, out: Path) -> dict:
    config_path = out / 'spiral_config.json'
    config_path.write_text(json.dumps(spiral_config_dict(ctx), indent=1))
    residuals, used, skipped, model_ids, seconds = {}, 0, 0, set(), 0.0
    returns = {True: [], False: []}
    # One residual per task, as in bench/spiral.py: each round trains on that task's bags only
    # (spiral_update skips and reports the other task's episodes).
    for task in ctx.config.tasks:
        residual = out / f'residual-{task}'
        args = [str(console_script('spiral_policy', 'spiral_update')),
                str(ctx.step_dir('rollouts') / 'bags'), '--out', str(residual),
                '--reward-checkpoint',
                str(ctx.step_dir('reward') / ctx.results['reward']['checkpoint']),
                '--reward', 'sarm2', '--method', 'spiral', '--config', str(config_path),
                '--base-checkpoint',
                str(ctx.step_dir('vla') / ctx.results['vla']['checkpoint']),
                '--task', task, '--updates', str(ctx.config.spiral_updates),
                '--seed', str(ctx.config.seed), '--round', '1', '--threads', '1']
        print(f'  spiral_update for {task}', flush=True)
        completed = subprocess.run(args, env=ctx.env)
        if completed.returncode != 0:
            raise DemoError(f'spiral_update exited with {completed.returncode}: '
                            f'{" ".join(args)}')
        report = json.loads((residual / 'round_report.json').read_text())
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
            run_node_episodes(ctx, todo, bags, logs, episodes_file,
                              {'residual_checkpoint': residuals[task]}, f'base+residual {task}')
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


def _rate(row: dict) -> str:
    low, high = row['wilson95']
    return f'{row["successes"]}/{row["episodes"]} = {row["rate"]:.0%} [{low:.2f}, {high:.2f}]'


def verdict(base: dict, improved: dict) -> str:
    """Compare two success rates by their 95% Wilson intervals (overlap: not significant)."""
    if improved['wilson95'][0] > base['wilson95'][1]:
        return 'better (intervals apart)'
    if improved['wilson95'][1] < base['wilson95'][0]:
        return 'worse (intervals apart)'
    return 'no significant change'


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
        success.append([task, _rate(nodes), _rate(evaluated['improved_nodes']),
                        _rate(evaluated['base']), _rate(evaluated['improved']),
                        verdict(evaluated['base'], evaluated['improved'])])
    return reward, success


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def html_table(rows: list[list[str]]) -> str:
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in rows[0])
    body = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in row) + '</tr>'
                   for row in rows[1:])
    return f'<table><tr>{head}</tr>{body}</table>'


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
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
font-size:14px}}th{{background:#eee}}</style></head><body>
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


def _terminate(signum, frame):
    raise KeyboardInterrupt


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
    run_dir = select_run(args.runs_dir, config, STEPS, fresh=args.fresh, run=args.run)
    # `kill` (SIGTERM) stops the demo like Ctrl-C: nodes are shut down, finished steps kept.
    signal.signal(signal.SIGTERM, _terminate)
    if args.run is None:
        link_latest(args.runs_dir, run_dir)
    env = ros_environment()
    # This process talks to the nodes too, so it joins their DDS domain before rclpy starts.
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    # One thread: these small networks run faster single-threaded on a shared 2-core machine.
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    print(f'demo run: {run_dir} (config {json.dumps(config.to_dict())})', flush=True)
    ctx = RunContext(run_dir, config, env=env)
    started = time.monotonic()
    try:
        run_steps(ctx, STEPS, log=lambda m: print(m, flush=True))
    except KeyboardInterrupt:
        again = 'make demo' + (f" ARGS='--run {args.run}'" if args.run else '')
        print(f'\ninterrupted; run `{again}` again to continue {run_dir} '
              '(finished steps are kept)', file=sys.stderr)
        return 130
    except DemoError as error:
        print(f'demo: {error}', file=sys.stderr)
        return 1
    print('\n' + ctx.results['report']['summary'])
    print(f'\nreport: {run_dir / "report" / "index.html"} '
          f'({time.monotonic() - started:.0f} s in this invocation)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
