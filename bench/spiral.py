"""SPIRAL policy-improvement benchmark on the simulated arm (ROS-free core, same code as the CLI).

For every task and seed: evaluate the base policy (round 0) and collect exploratory rollouts
(a random action offset per chunk); then for every method run R rounds of relabel -> offline
update -> deploy and evaluate, the deployed policy's rollouts joining the data of the next
round (best-of-k candidates by Q are its exploration). All methods share the frozen base, the
round-0 rollouts and the evaluation initial states (fresh ones every round):

- ``spiral``: residual actor-critic, dense SARM2 rewards plus the outcome (``success_reward``
  on a successful rollout's last action), critic target 0.5 MC + 0.5 TD
- ``mc_only``: the critic regresses Monte-Carlo returns of the sparse success reward
- ``td_only``: SPIRAL's rewards, TD target only (alpha = 0)
- ``rabc``: reward-aligned behaviour cloning with SARM2 progress-gain weights
- ``spiral_time_linear``: SPIRAL with the time-linear baseline reward instead of SARM2

The simulated arm is driven through its ROS-free core (``sarm2_sim.sim_arm.SimArm``) for speed;
the deployed ``ResidualPolicy`` is the ``VlaPolicy`` the policy node would run. The base policy
is the task's scripted expert with a systematic velocity bias (a miscalibrated controller that
fails part of the time), executed in open-loop chunks like a VLA; ``--base-checkpoint`` uses a
trained compact VLA instead. The SARM2 reward model is trained here on scripted demonstrations
of the same tasks (30% failures), unless ``--reward-checkpoint`` names one.

The last stdout line is one JSON object: base_success, final_success (SPIRAL, per task),
ablations (method -> per-task final success) and per-round tables.
"""

import argparse
import json
import math
import os
from pathlib import Path
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from sarm2_common.bag_dataset import read_episodes
from sarm2_common.episode import Episode, UNLABELLED
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.text_embedding import make_text_embedder
from sarm2_reward.train import train_model, TrainConfig
from sarm2_sim.demonstrations import record_demonstrations
from sarm2_sim.sim_arm import SimArm, SimArmConfig
from spiral_policy.compact_vla import CompactVlaPolicy
from spiral_policy.sim_evaluation import wilson_interval
from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.learner import SpiralLearner
from spiral_policy.spiral.offline_update import BASE_CHUNKS_KEY, prepare_round, train_round
from spiral_policy.spiral.relabel import Sarm2Labeler, TimeLinearLabeler
from spiral_policy.spiral.residual import ResidualActor
from spiral_policy.spiral.residual_policy import ResidualPolicy
from spiral_policy.spiral.targets import chunk_starts
from spiral_policy.vla import PolicyObservation

ROOT = Path(__file__).resolve().parents[1]
CAMERA = 'corner'
IMAGE_SIZE = 64
DEFAULT_TASKS = ('push-v3', 'pick-place-v3', 'drawer-open-v3')
# method -> (trainer, reward labeler, reward source, Monte-Carlo weight alpha)
METHODS = {
    'spiral': ('spiral', 'sarm2', 'dense', 0.5),
    'mc_only': ('spiral', None, 'sparse', 1.0),
    'td_only': ('spiral', 'sarm2', 'dense', 0.0),
    'rabc': ('rabc', 'sarm2', 'dense', 0.5),
    'spiral_time_linear': ('spiral', 'time_linear', 'dense', 0.5),
}


class BiasedExpertPolicy:
    """Stand-in for an imperfect VLA: the scripted expert plus a constant velocity bias.

    It reads the simulator's state through ``arm.expert_action()`` (privileged), repeats the
    expert's action over the chunk (open-loop chunk execution, like a VLA) and adds ``bias``:
    a miscalibration that the residual has to learn to cancel from observations.
    """

    def __init__(self, arm: SimArm, bias: np.ndarray, chunk_size: int):
        self.arm = arm
        self.bias = np.asarray(bias, np.float32)
        self.chunk_size = chunk_size
        self.action_dim = 4
        self.policy_id = f'biased_expert[{",".join(f"{b:g}" for b in self.bias)}]'

    def reset(self) -> None:
        """Do nothing: the expert's phase lives in the simulator."""

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        """Return the biased expert action repeated over the chunk."""
        action, _ = self.arm.expert_action()
        action = np.clip(action + self.bias, -1.0, 1.0).astype(np.float32)
        return np.repeat(action[None], self.chunk_size, axis=0)


def run_episode(arm: SimArm, policy: ResidualPolicy, seed: int, max_steps: int,
                episode_id: str) -> Episode:
    """One rollout with chunked execution; the final observation is kept as a last frame."""
    policy.reset()
    obs = arm.reset(seed=seed)
    frames, joints, actions, base_chunks = [], [], [], []
    success, steps = False, 0
    while steps < max_steps and not success:
        chunk = policy.select_action(PolicyObservation(obs.images, obs.joint_positions,
                                                       arm.instruction))
        base_chunks.append(policy.last_base_chunk)
        for action in chunk:
            frames.append(obs.images[CAMERA])
            joints.append(obs.joint_positions)
            actions.append(action)
            obs, info = arm.step(action)
            steps += 1
            success = info.success
            if success or steps >= max_steps:
                break
    frames.append(obs.images[CAMERA])
    joints.append(obs.joint_positions)
    actions.append(np.zeros(4, np.float32))
    # The terminal frame opens a new chunk when the episode ended on a chunk boundary.
    if len(chunk_starts(len(frames), policy.chunk_size)) > len(base_chunks):
        base_chunks.append(policy.base.select_action(PolicyObservation(
            obs.images, obs.joint_positions, arm.instruction)))
    length = len(frames)
    return Episode(
        episode_id=episode_id, task=arm.config.task, instruction=arm.instruction,
        images={CAMERA: np.stack(frames)}, joint_positions=np.stack(joints).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        primitive_ids=np.full(length, UNLABELLED, np.int64),
        timestamps=np.arange(length) * arm.control_period, success=bool(success),
        metadata={BASE_CHUNKS_KEY: np.stack(base_chunks), 'seed': seed})


def rollouts(arm, policy, seeds, max_steps, prefix, desc) -> list[Episode]:
    return [run_episode(arm, policy, int(s), max_steps, f'{prefix}-{i}')
            for i, s in enumerate(tqdm(seeds, desc=desc, leave=False, unit='ep'))]


class CachedLabeler:
    """Labels each episode once per reward model (episode ids are unique within a run)."""

    def __init__(self, labeler):
        self.labeler = labeler
        self.labeler_id = labeler.labeler_id
        self.cache: dict[str, np.ndarray] = {}
        self.outcomes: dict[str, bool] = {}

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        if episode.episode_id not in self.cache:
            self.cache[episode.episode_id] = self.labeler.frame_rewards(episode)
            self.outcomes[episode.episode_id] = episode.success
        return self.cache[episode.episode_id]

    def separation(self) -> dict:
        """Mean episode return on successes vs failures, and their pairwise ranking accuracy."""
        returns = {k: float(np.sum(v)) for k, v in self.cache.items()}
        wins = [returns[k] for k, ok in self.outcomes.items() if ok]
        losses = [returns[k] for k, ok in self.outcomes.items() if not ok]
        if not wins or not losses:
            return {}
        pairs = np.array(wins)[:, None] - np.array(losses)[None, :]
        return {'success_return': float(np.mean(wins)), 'failure_return': float(np.mean(losses)),
                'pairwise_accuracy': float(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0)),
                'episodes': len(returns)}


def train_reward_model(tasks, out_dir: Path, demos_per_task: int, steps: int,
                       max_steps: int) -> Path:
    """Record demonstrations (30% failures) and train a small SARM2 model; cached on disk."""
    checkpoint = out_dir / 'sarm2_checkpoint'
    if (checkpoint / 'config.json').is_file():
        return checkpoint
    paths = record_demonstrations(out_dir / 'demos', tasks, demos_per_task, seed=123,
                                  failure_fraction=0.3, image_size=IMAGE_SIZE,
                                  cameras=(CAMERA,), progress=True, max_steps=max_steps)
    episodes = read_episodes(paths)
    config = Sarm2Config(cameras=(CAMERA,), image_size=IMAGE_SIZE, state_dim=9,
                         text_dim=make_text_embedder('').dim)
    model = Sarm2Model(config)
    train_model(model, episodes, TrainConfig(steps=steps, batch_size=16, eval_every=0,
                                             save_every=0, num_threads=1, device='cpu',
                                             warmup_steps=min(100, steps // 10)),
                out_dir=checkpoint, progress=True, metadata={'tasks': list(tasks)})
    return checkpoint


def spiral_config(args, method: str) -> SpiralConfig:
    _, _, reward_source, alpha = METHODS[method]
    return SpiralConfig(chunk_size=args.chunk_size, feature_image_size=16, hidden_dim=128,
                        batch_size=128, updates=args.updates, mc_alpha=alpha,
                        reward_source=reward_source, residual_scale=args.residual_scale,
                        beta=args.beta,
                        best_of_k=args.best_of_k, candidate_noise=0.1)


def run_task_seed(args, task: str, seed: int, labelers: dict, progress) -> dict:
    """All methods on one task and seed; returns method -> success rate per round."""
    arm = SimArm(SimArmConfig(task=task, cameras=(CAMERA,), image_size=IMAGE_SIZE, seed=seed,
                              max_steps=args.max_steps))
    try:
        if args.base_checkpoint is not None:
            base = CompactVlaPolicy.from_checkpoint(args.base_checkpoint)
        else:
            base = BiasedExpertPolicy(arm, [args.base_bias, 0.0, 0.0, 0.0], args.chunk_size)
        zero = ResidualPolicy(base, ResidualActor(spiral_config(args, 'spiral')))
        explore = ResidualPolicy(base, ResidualActor(spiral_config(args, 'spiral')),
                                 exploration_noise=args.exploration_noise, seed=seed)

        def eval_seeds(round_index):
            return 10_000 * (seed + 1) + 100 * round_index + np.arange(args.episodes)

        tag = f'{task}-s{seed}'
        base_eval = rollouts(arm, zero, eval_seeds(0), args.max_steps, f'{tag}-eval0', 'base')
        base_rate = float(np.mean([e.success for e in base_eval]))
        # Round-0 data: the base policy's rollouts plus exploratory ones (per-chunk action
        # offsets), shared by every method. Later rounds add the deployed policy's rollouts.
        collect_seeds = 500_000 + 10_000 * (seed + 1) + np.arange(args.episodes)
        shared = base_eval + rollouts(arm, explore, collect_seeds, args.max_steps,
                                      f'{tag}-collect0', 'collect')
        results = {}
        for method in args.methods:
            trainer, labeler_name, _, _ = METHODS[method]
            config = spiral_config(args, method)
            learner = SpiralLearner(config, seed=seed)
            episodes = list(shared)
            rates = [base_rate]
            for round_index in range(1, args.rounds + 1):
                data = prepare_round(episodes, labelers.get(labeler_name), config, task)
                train_round(data, learner, trainer)
                critic = learner.critic if trainer == 'spiral' else None
                k = config.best_of_k if critic is not None else 1
                deployed = ResidualPolicy(base, learner.actor, critic, best_of_k=k, seed=seed)
                prefix = f'{tag}-{method}-r{round_index}'
                evaluated = rollouts(arm, deployed, eval_seeds(round_index), args.max_steps,
                                     f'{prefix}-eval', f'{method} r{round_index}')
                rates.append(float(np.mean([e.success for e in evaluated])))
                progress.set_postfix(task=task, seed=seed, method=method, round=round_index,
                                     success=f'{rates[-1]:.0%}')
                progress.update(1)
                episodes += evaluated
                learner.actor.train()
                learner.critic.train()
            results[method] = rates
        return results
    finally:
        arm.close()


def summarize(args, per_seed: dict) -> dict:
    """Pool seeds: success per round with Wilson intervals, and mean/std across seeds."""
    table = {}
    for task, by_seed in per_seed.items():
        table[task] = {}
        for method in args.methods:
            rows = np.array([by_seed[s][method] for s in sorted(by_seed)])
            trials = args.episodes * len(rows)
            rounds = []
            for r in range(rows.shape[1]):
                successes = int(round(float(rows[:, r].sum()) * args.episodes))
                low, high = wilson_interval(successes, trials)
                rounds.append({'round': r, 'success': successes / trials, 'wilson_low': low,
                               'wilson_high': high, 'seed_mean': float(rows[:, r].mean()),
                               'seed_std': float(rows[:, r].std())})
            table[task][method] = rounds
    return table


def verdict(table: dict) -> list[str]:
    """Say per task whether SPIRAL reaches 90% and beats every ablation in the final round.

    The mean success over rounds 1..R is listed too, a steadier comparison near 100%.
    """
    lines = []
    for task, methods in table.items():
        if 'spiral' not in methods:
            continue
        final = {m: rounds[-1]['success'] for m, rounds in methods.items()}
        beaten = [m for m in final if m != 'spiral' and final['spiral'] > final[m]]
        not_beaten = [m for m in final if m != 'spiral' and m not in beaten]
        # Mean over the improvement rounds: less noisy than one round near the ceiling.
        curve = {m: float(np.mean([r['success'] for r in rounds[1:]]))
                 for m, rounds in methods.items()}
        lines.append(f'- {task}: SPIRAL final {final["spiral"]:.0%} (target >= 90%: '
                     f'{"met" if final["spiral"] >= 0.9 else "NOT met"}); beats '
                     f'{", ".join(beaten) or "no ablation"}'
                     + (f'; does not beat {", ".join(not_beaten)}' if not_beaten else '')
                     + '. Mean over rounds 1-R: '
                     + ', '.join(f'{m} {v:.0%}' for m, v in curve.items()) + '.')
    return lines


def section_name(args) -> str:
    """Docs section (and plot) name: one per kind of base policy."""
    return 'spiral_vla' if args.base_checkpoint else 'spiral'


def markdown(args, table: dict, command: str, seconds: float, reward_source: str,
             separation: dict) -> str:
    if args.base_checkpoint:
        base = f'Base policy: compact VLA `{args.base_checkpoint}` (chunks of {args.chunk_size}). '
    else:
        base = (f'Base policy: scripted expert + constant x-velocity bias {args.base_bias} '
                f'(chunks of {args.chunk_size}, open loop), a stand-in for an imperfect VLA. ')
    lines = [f'## {section_name(args)}', '',
             f'Command: `{command}` ({seconds / 60:.1f} min wall time on the shared 2-core '
             'machine).', '',
             base +
             f'Reward model: {reward_source}, trained by this bench on {args.demos_per_task} '
             f'scripted demonstrations per task (30% failures) for {args.reward_steps} steps. '
             'Simulated arm driven through its ROS-free core. '
             f'{args.episodes} evaluation episodes per seed and round (fresh initial states every'
             f' round), {len(args.seeds)} seeds pooled; 95% Wilson intervals; '
             f'{args.updates} gradient steps per round, residual scale {args.residual_scale}, '
             f'beta {args.beta}.', '']
    header = '| task | method | ' + ' | '.join(f'round {r}' for r in range(args.rounds + 1))
    lines += [header + ' |', '|' + '---|' * (args.rounds + 3)]
    for task, methods in table.items():
        for method, rounds in methods.items():
            cells = [f'{r["success"]:.0%} [{r["wilson_low"]:.0%}, {r["wilson_high"]:.0%}] '
                     f'(±{r["seed_std"]:.0%})' for r in rounds]
            lines.append(f'| {task} | {method} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'Cells: pooled success [Wilson 95%] (± std across seeds). Round 0 is the base '
              'policy (the residual is zero-initialised), identical for all methods.', '']
    lines += verdict(table) + ['']
    for task, stats in separation.items():
        if stats:
            lines.append(f'- SARM2 rewards on {task} rollouts: mean episode return '
                         f'{stats["success_return"]:.2f} on successes vs '
                         f'{stats["failure_return"]:.2f} on failures, success-vs-failure '
                         f'pairwise accuracy {stats["pairwise_accuracy"]:.2f} '
                         f'({stats["episodes"]} episodes).')
    lines += ['', f'Reading: a cell pools {args.episodes * len(args.seeds)} episodes, so its 95% '
              'interval spans roughly ±15-20 points; differences smaller than that are not '
              'significant. The time-linear reward is not free of signal here: rollouts stop at '
              'success, so a successful (shorter) episode spreads the same total reward over '
              'fewer steps. The sparse-success critic (mc_only) sees only the episode outcome; '
              "SPIRAL's critic sees the outcome too (success_reward on a success's last action) "
              'and the dense reward in between. '
              'The simulated arm runs in-process (ROS-free core) for speed; the deployed '
              "`ResidualPolicy` implements the policy node's `VlaPolicy` interface and "
              '`spiral_update` runs the same offline round on rollout bags. `--quick` (1 seed, '
              '2 rounds, 6 episodes, 150 steps, a reward model trained for 300 steps on 10 demos '
              'per task) '
              'is a smoke test of the whole pipeline (~5 min for three tasks); its success '
              'rates are far noisier and are not the result.', '',
              f'![SPIRAL success per round]({section_name(args)}_bench.png)', '']
    return '\n'.join(lines)


def plot(table: dict, path: Path):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(table), figsize=(5 * len(table), 3.6), squeeze=False)
    for axis, (task, methods) in zip(axes[0], table.items()):
        for method, rounds in methods.items():
            x = [r['round'] for r in rounds]
            axis.errorbar(x, [r['success'] for r in rounds], capsize=3, marker='o', label=method,
                          yerr=[[r['success'] - r['wilson_low'] for r in rounds],
                                [r['wilson_high'] - r['success'] for r in rounds]])
        axis.set_title(task)
        axis.set_xlabel('round')
        axis.set_ylabel('success rate')
        axis.set_ylim(-0.02, 1.02)
        axis.set_xticks(x)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_section(text: str, path: Path, name: str):
    """Replace (or append) the ``## <name>`` section of docs/benchmarks.md."""
    existing = path.read_text() if path.is_file() else '# Benchmarks\n'
    start = existing.find(f'\n## {name}\n')
    if start < 0:
        updated = existing.rstrip('\n') + '\n\n' + text
    else:
        end = existing.find('\n## ', start + 1)
        updated = existing[:start + 1] + text + ('\n' + existing[end + 1:] if end >= 0 else '')
    path.write_text(updated)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('--quick', action='store_true',
                        help='1 seed, 2 rounds, 6 episodes, fewer updates (a few minutes)')
    parser.add_argument('--tasks', nargs='+', default=list(DEFAULT_TASKS))
    parser.add_argument('--reward-tasks', nargs='+', default=list(DEFAULT_TASKS),
                        help='tasks the SARM2 reward model is trained on (one multi-task model, '
                             'cached per task set); must include every --tasks entry')
    parser.add_argument('--prepare', action='store_true',
                        help='only train (or find) the cached reward model, then exit: run it '
                             'once before per-task runs in parallel, which then share it')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--episodes', type=int, default=12,
                        help='evaluation episodes per round (and round-0 exploration episodes)')
    parser.add_argument('--updates', type=int, default=250, help='gradient steps per round')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--chunk-size', type=int, default=4)
    parser.add_argument('--max-steps', type=int, default=120)
    parser.add_argument('--base-bias', type=float, default=0.15,
                        help='x-velocity bias of the base policy (Meta-World units)')
    parser.add_argument('--exploration-noise', type=float, default=0.15,
                        help='std of the per-chunk action offset of round-0 exploration')
    parser.add_argument('--best-of-k', type=int, default=8)
    parser.add_argument('--residual-scale', type=float, default=0.2,
                        help='largest residual per action dimension (SpiralConfig default 0.3)')
    parser.add_argument('--beta', type=float, default=2.0,
                        help='weight of the residual penalty in the actor loss (SpiralConfig '
                             'default 1.0)')
    parser.add_argument('--base-checkpoint', type=Path,
                        help='compact VLA checkpoint to use as the base policy instead of the '
                             'biased expert (its chunk size replaces --chunk-size)')
    parser.add_argument('--reward-checkpoint', type=Path,
                        help='SARM2 checkpoint (default: train one on recorded demos, cached)')
    parser.add_argument('--demos-per-task', type=int, default=20)
    parser.add_argument('--reward-steps', type=int, default=500)
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'runs' / 'bench_spiral')
    parser.add_argument('--docs', type=Path,
                        help='markdown file whose "## spiral" (or "## spiral_vla" with '
                             '--base-checkpoint) section is (re)written (default: '
                             'docs/benchmarks.md, except with --quick, which writes no docs)')
    parser.add_argument('--merge', action='store_true',
                        help='do not run; merge the per-task/seed results already saved in '
                             '--work-dir/results (e.g. from one run per task in parallel)')
    parser.add_argument('--no-docs', action='store_true',
                        help='do not touch the docs (tuning runs)')
    return parser


def load_results(results_dir: Path, tasks, methods) -> tuple[dict, dict]:
    """Per-seed results saved by earlier runs (``--merge``), and the settings they used."""
    per_seed: dict = {}
    settings: dict = {}
    separation: dict = {}
    reward_models: set = set()
    longest = 0.0
    for path in sorted(results_dir.glob('*.json')):
        saved = json.loads(path.read_text())
        if saved['task'] in tasks and all(m in saved['rates'] for m in methods):
            per_seed.setdefault(saved['task'], {})[saved['seed']] = saved['rates']
            settings = saved['settings']
            reward_models.add(settings.get('reward_model_id'))
            longest = max(longest, saved.get('seconds', 0.0))
            # Labelers accumulate over a run, so the largest count covers the most episodes.
            stats = saved.get('reward_separation', {}).get('sarm2', {})
            if stats.get('episodes', 0) > separation.get(saved['task'], {}).get('episodes', 0):
                separation[saved['task']] = stats
    settings.update(separation=separation, seconds=longest,
                    reward_model_ids=sorted(m for m in reward_models if m))
    return per_seed, settings


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.episodes = args.seeds[:1], min(args.rounds, 2), 6
        args.updates, args.demos_per_task = min(args.updates, 150), min(args.demos_per_task, 10)
        args.reward_steps = min(args.reward_steps, 300)
        args.work_dir = args.work_dir / 'quick'
    torch.set_num_threads(1)
    if args.base_checkpoint is not None:
        args.chunk_size = CompactVlaPolicy.from_checkpoint(args.base_checkpoint).chunk_size
    started = time.perf_counter()
    # Results of different base policies never mix in one table.
    results_dir = args.work_dir / ('results-vla' if args.base_checkpoint else 'results')
    results_dir.mkdir(parents=True, exist_ok=True)
    # One cached reward model per task set: a model never labels tasks it was not trained on.
    unknown = sorted(set(args.tasks) - set(args.reward_tasks))
    if args.reward_checkpoint is None and unknown:
        print(f'spiral bench: --reward-tasks must include every --tasks entry; add {unknown}',
              file=sys.stderr)
        return 2
    reward_dir = args.reward_checkpoint or train_reward_model(
        args.reward_tasks, args.work_dir / f'reward-{"+".join(sorted(args.reward_tasks))}',
        args.demos_per_task, args.reward_steps, args.max_steps)
    sarm2 = Sarm2Labeler.from_checkpoint(reward_dir)
    if args.prepare:
        print(json.dumps({'reward_checkpoint': str(reward_dir),
                          'reward_model_id': sarm2.labeler_id}))
        return 0
    labelers = {'sarm2': CachedLabeler(sarm2), 'time_linear': CachedLabeler(TimeLinearLabeler())}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings['reward_model_id'] = sarm2.labeler_id
    if not args.merge:
        total = len(args.tasks) * len(args.seeds) * len(args.methods) * args.rounds
        with tqdm(total=total, desc='method-rounds', unit='round') as progress:
            for task in args.tasks:
                for seed in args.seeds:
                    rates = run_task_seed(args, task, seed, labelers, progress)
                    # Saved per task and seed, so parallel runs can be merged (--merge).
                    (results_dir / f'{task}-s{seed}.json').write_text(json.dumps({
                        'task': task, 'seed': seed, 'rates': rates, 'settings': settings,
                        'seconds': time.perf_counter() - started,
                        'reward_separation': {n: lab.separation()
                                              for n, lab in labelers.items()}}))
    per_seed, saved_settings = load_results(results_dir, args.tasks, args.methods)
    if args.merge:
        if saved_settings['reward_model_ids'] != [sarm2.labeler_id]:
            print(f'spiral bench: the saved results were scored by reward model(s) '
                  f'{saved_settings["reward_model_ids"]}, not {sarm2.labeler_id}: rerun the '
                  'tasks with the same --reward-tasks / --reward-checkpoint', file=sys.stderr)
            return 2
        for key in ('episodes', 'rounds', 'updates', 'base_bias', 'chunk_size', 'max_steps',
                    'demos_per_task', 'reward_steps', 'residual_scale', 'beta'):
            setattr(args, key, saved_settings.get(key, getattr(args, key)))
    missing = [t for t in args.tasks if t not in per_seed]
    if missing:
        print(f'spiral bench: no results for tasks {missing} in {results_dir}', file=sys.stderr)
        return 2
    args.seeds = sorted({s for by_seed in per_seed.values() for s in by_seed})
    table = summarize(args, per_seed)
    seconds = time.perf_counter() - started
    extra = f' --base-checkpoint {args.base_checkpoint}' if args.base_checkpoint else ''
    options = ('--quick' if args.quick else '') + extra
    command = 'make bench NAME=spiral' + (f" ARGS='{options.strip()}'" if options else '')
    if args.merge:
        # Results produced by one process per task (in parallel when several), then merged.
        runs = [f"make bench NAME=spiral ARGS='--tasks {t}{extra}'" for t in args.tasks]
        command = ' & '.join(runs) + ' & wait' if len(runs) > 1 else runs[0]
        command = (f"make bench NAME=spiral ARGS='--prepare{extra}'; {command}; "
                   f"make bench NAME=spiral ARGS='--merge{extra}'")
        seconds = saved_settings['seconds']
    if args.docs is None and not args.quick:
        args.docs = ROOT / 'docs' / 'benchmarks.md'
    if args.docs is not None and not args.no_docs:
        plot(table, args.docs.parent / f'{section_name(args)}_bench.png')
        write_section(markdown(args, table, command, seconds,
                               f'SARM2 `{sarm2.labeler_id}` '
                               f'({os.path.relpath(reward_dir, ROOT)})',
                               saved_settings.get('separation', {})), args.docs,
                      section_name(args))
    final = {task: {m: rounds[-1]['success'] for m, rounds in methods.items()}
             for task, methods in table.items()}
    result = {
        'base_success': {task: methods[args.methods[0]][0]['success']
                         for task, methods in table.items()},
        'final_success': {task: final[task].get('spiral', math.nan) for task in final},
        'ablations': {m: {task: final[task][m] for task in final}
                      for m in args.methods if m != 'spiral'},
        'per_round': {task: {m: [r['success'] for r in rounds] for m, rounds in methods.items()}
                      for task, methods in table.items()},
        'seeds': args.seeds, 'rounds': args.rounds, 'episodes_per_round': args.episodes,
        'reward_model_id': sarm2.labeler_id, 'seconds': round(seconds, 1),
        'reward_separation': (saved_settings.get('separation', {}) if args.merge else
                              {name: lab.separation() for name, lab in labelers.items()}),
    }
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
