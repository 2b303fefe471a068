"""SPIRAL policy-improvement benchmark on the simulated arm (ROS-free core, same code as the CLI).

The base policy is the compact VLA (the headline; ``--base biased_expert`` is the secondary
table: the scripted expert plus a constant velocity bias). For every seed:

1. round 0: the base runs ``--episodes`` episodes per task on fresh initial states (its success
   rate), plus ``--explore-episodes`` with a random action offset per chunk; these are round 0's
   data;
2. the flywheel: round 0's rollouts of all tasks are labelled from the simulator's truth
   (``label_rollouts_from_sim``) and the SARM2 model trained on demonstrations is fine-tuned on
   them (``sarm2_reward.flywheel``); ``--flywheel-reward sim_labels`` rewards with the labels'
   progress curves directly instead, which separates SPIRAL from the reward model's quality;
3. every method runs ``--rounds`` rounds of relabel -> offline update -> deploy (best of k by Q)
   on fresh initial states; the deployed policy's rollouts join the next round's data.

Methods (all share the frozen base, round 0's data and the evaluation initial states):

- ``spiral``: residual actor-critic on the flywheel reward (+ the outcome on a success's last
  action), critic target 0.5 MC + 0.5 TD
- ``mc_only``: the critic regresses Monte-Carlo returns of the sparse success reward
- ``td_only``: SPIRAL's rewards, TD target only (alpha = 0)
- ``rabc``: reward-aligned behaviour cloning with the flywheel reward's progress gains
- ``spiral_time_linear``: SPIRAL with the time-linear baseline reward
- ``spiral_demo_reward``: SPIRAL with SARM2 trained on demonstrations only (no flywheel)

Episodes run through the policy node's control core (chunk execution + safety filter) on the
simulated arm's ROS-free core. With the VLA base every episode is recorded as a bag in the
policy node's layout (``sarm2_bringup.rollout_bags``) and read back like a node rollout, and the
update is ``spiral_update``'s (``prepare_round`` + ``train_round``): the base's chunk at every
frame is recomputed from the recorded images. The biased expert reads the simulator, so its
episodes stay in memory with the base's chunk recorded live. The deployed ``ResidualPolicy`` is
the ``VlaPolicy`` the policy node runs.

The last stdout line is one JSON object: base_success, final_success (SPIRAL, per task),
ablations (method -> per-task final success), demo_only_reward (per task), per-round tables.
"""

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from sarm2_common.bag_dataset import read_episodes
from sarm2_common.episode import Episode
from sarm2_common.rollout_labels import load_label, progress_targets, reward_targets, save_label
from sarm2_reward.flywheel import calibrated_success_rule, DEFAULT_CONSECUTIVE, \
    finetune_on_rollouts, finetune_train_config
from sarm2_reward.metrics import debounced_peak
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.text_embedding import make_text_embedder
from sarm2_reward.training import train_model, TrainConfig
from sarm2_sim.demonstrations import record_demonstrations
from sarm2_sim.sim_arm import SimArm, SimArmConfig
from sarm2_sim.sim_labels import demonstration_scales, label_from_truth, read_rollout_truth
from spiral_policy.bc_training import BcTrainingConfig, train as train_vla
from spiral_policy.compact_vla import CompactVlaConfig, CompactVlaPolicy
from spiral_policy.episode_runner import EpisodeLimits
from sarm2_bringup.rollout_bags import record_sim_rollouts
from spiral_policy.sim_evaluation import (run_sim_episode, sim_control_core, SimEpisodeRecorder,
                                          wilson_interval)
from spiral_policy.spiral.config import compact_vla_config, MC_TARGETS, OBSERVATIONS, \
    SpiralConfig, TRANSITIONS
from spiral_policy.spiral.learner import SpiralLearner
from spiral_policy.spiral.offline_update import FRAME_BASE_CHUNKS_KEY, \
    FRAME_BASE_FEATURES_KEY, prepare_round, train_round
from spiral_policy.spiral.relabel import Sarm2Labeler, TimeLinearLabeler
from spiral_policy.spiral.residual import ResidualActor
from spiral_policy.spiral.residual_policy import ResidualPolicy
from spiral_policy.vla import PolicyObservation

ROOT = Path(__file__).resolve().parents[1]
CAMERA = 'corner'
# The defaults of the SPIRAL options: what spiral_loop and make demo run on the VLA.
COMPACT = compact_vla_config()
IMAGE_SIZE = 64
# Tasks where the compact VLA succeeds 30-60% (docs/benchmarks.md, section policy).
DEFAULT_TASKS = ('button-press-topdown-v3', 'drawer-open-v3')
BASES = ('vla', 'biased_expert')
FLYWHEEL_REWARDS = ('finetuned', 'sim_labels', 'demo')
OUTCOME_SOURCES = ('sim', 'reward')
# method -> (trainer, reward, reward source, Monte-Carlo weight alpha); reward 'flywheel' is the
# one --flywheel-reward selects.
METHODS = {
    'spiral': ('spiral', 'flywheel', 'dense', 0.5),
    'mc_only': ('spiral', None, 'sparse', 1.0),
    'td_only': ('spiral', 'flywheel', 'dense', 0.0),
    'rabc': ('rabc', 'flywheel', 'dense', 0.5),
    'spiral_time_linear': ('spiral', 'time_linear', 'dense', 0.5),
    'spiral_demo_reward': ('spiral', 'demo', 'dense', 0.5),
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


class BaseChunkRecorder(SimEpisodeRecorder):
    """Also records the base policy's chunk (and features) at every frame.

    Queried live because the biased expert reads the simulator, which a recorded frame cannot
    replay; for the compact VLA it equals what ``prepare_round`` would recompute.
    """

    def __init__(self, arm, episode_id: str, base, metadata: dict):
        super().__init__(arm, episode_id, metadata)
        self.base = base
        self.base_chunks: list[np.ndarray] = []
        self.base_features: list[np.ndarray] = []

    def add(self, obs, action, info) -> None:
        self._base_chunk(obs)
        super().add(obs, action, info)

    def finish(self, obs, success: bool) -> Episode:
        self._base_chunk(obs)
        episode = super().finish(obs, success)
        episode.metadata[FRAME_BASE_CHUNKS_KEY] = np.stack(self.base_chunks)
        if self.base_features:
            episode.metadata[FRAME_BASE_FEATURES_KEY] = np.stack(self.base_features)
        return episode

    def _base_chunk(self, obs) -> None:
        self.base_chunks.append(np.asarray(self.base.select_action(PolicyObservation(
            obs.images, obs.joint_positions, self.arm.instruction)), np.float32))
        features = getattr(self.base, 'last_features', None)
        if features is not None:
            self.base_features.append(np.asarray(features, np.float32))


def memory_rollouts(arm: SimArm, policy, base, seeds, max_steps: int, prefix: str,
                    desc: str) -> list[Episode]:
    """Run ``policy`` from each initial-state seed through the control core; keep the episodes."""
    core = sim_control_core(policy, arm, (CAMERA,))
    episodes = []
    for i, seed in enumerate(tqdm(seeds, desc=desc, leave=False, unit='ep')):
        recorder = BaseChunkRecorder(arm, f'{prefix}-{i}', base,
                                     {'seed': int(seed), 'policy_id': policy.policy_id})
        run_sim_episode(arm, core, int(seed), max_steps, recorder)
        episodes.append(recorder.episode)
    return episodes


def bag_rollouts(args, policy, task: str, seeds, directory: Path, scales: dict) -> list[Episode]:
    """Record ``policy``'s rollouts as bags, label them from the simulator's truth, read them.

    Labels are written beside every bag (the flywheel learns from round 0's; the label reward
    reads any round's); failures are placed on the demonstrations' progress scale.
    """
    results = record_sim_rollouts(policy, task, [int(s) for s in seeds], directory,
                                  max_steps=args.max_steps, cameras=(CAMERA,),
                                  image_size=IMAGE_SIZE, progress=False)
    for result in results:
        if load_label(result.bag) is None:
            truth = read_rollout_truth(result.bag)
            save_label(result.bag, label_from_truth(truth, scale=scales.get(task)))
    return read_episodes([r.bag for r in results])


class LabelCurveLabeler:
    """Rewards from the rollout label beside each bag: its progress curve's per-frame increase.

    With labels written from the simulator's truth this is privileged: it separates SPIRAL from
    the reward model's quality and is never a policy input.
    """

    labeler_id = 'sim_labels'

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        """Return the increase of the labelled progress at every frame (0 on the first)."""
        label = load_label(episode.metadata['bag_path'])
        if label is None:
            raise ValueError(f'episode {episode.episode_id} has no label beside its bag')
        return reward_targets(progress_targets(label, episode.timestamps))


def episode_key(episode: Episode) -> str:
    """Return the episode's bag path (methods record their rounds apart, under repeating ids)."""
    return str(episode.metadata.get('bag_path', episode.episode_id))


class CachedLabeler:
    """Labels each episode once per reward model (keyed by its bag, else its id)."""

    def __init__(self, labeler):
        self.labeler = labeler
        self.labeler_id = labeler.labeler_id
        self.cache: dict[str, np.ndarray] = {}
        self.peaks: dict[str, float] = {}

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        key = episode_key(episode)
        if key not in self.cache:
            self.cache[key] = self.labeler.frame_rewards(episode)
        return self.cache[key]

    def success_peak(self, episode: Episode) -> float:
        """Return the highest success probability held for the policy node's run of frames."""
        key = episode_key(episode)
        if key not in self.peaks:
            self.peaks[key] = debounced_peak(self.labeler.success_probabilities(episode),
                                             DEFAULT_CONSECUTIVE)
        return self.peaks[key]

    def auroc(self, episodes: list[Episode]) -> float | None:
        """Return the AUROC of this reward's episode return by outcome (None: one class)."""
        returns = [float(np.sum(self.frame_rewards(e))) for e in episodes]
        return ranking_auroc(returns, [e.success for e in episodes])


class RewardOutcomes:
    """Training outcomes as a reward model's success head calls them (``--outcome-source reward``).

    On a robot without an operator, the policy node ends an episode when the reward model holds
    its success threshold for a few frames (``success_source: reward``), and that is the outcome
    the bag records. The learner then sees that call, right or wrong; the simulator's truth only
    scores the evaluation. Rollouts a person labelled (the flywheel's round 0) keep their label.
    """

    def __init__(self, labeler: CachedLabeler, thresholds: dict[str, float], default: float,
                 labelled=()):
        self.labeler = labeler
        self.thresholds = thresholds
        self.default = default
        self.labelled = {episode_key(e) for e in labelled}

    def outcome(self, episode: Episode) -> bool:
        """Return the label's outcome for a labelled rollout, else the success head's call."""
        if episode_key(episode) in self.labelled:
            return bool(episode.success)
        threshold = self.thresholds.get(episode.task, self.default)
        return self.labeler.success_peak(episode) >= threshold

    def apply(self, episodes: list[Episode]) -> list[Episode]:
        """Return copies of ``episodes`` carrying these outcomes (frames and metadata shared)."""
        return [dataclasses.replace(e, success=self.outcome(e)) for e in episodes]

    def detection(self, episodes: list[Episode]) -> dict:
        """How the calls on unlabelled ``episodes`` compare with the simulator's outcomes."""
        calls = [(self.outcome(e), bool(e.success)) for e in episodes
                 if episode_key(e) not in self.labelled]
        hits = sum(1 for call, truth in calls if call and truth)
        false_alarms = sum(1 for call, truth in calls if call and not truth)
        successes = sum(1 for _, truth in calls if truth)
        return {'episodes': len(calls), 'successes': successes, 'detected': hits,
                'false_positives': false_alarms}


def flywheel_outcomes(args, run: 'SeedRun', flywheel: CachedLabeler, labelers: dict,
                      round0: dict) -> dict:
    """Per reward name, where its methods' training outcomes come from (empty: the simulator).

    Every method on the flywheel (and the time-linear and sparse ones, which have no success
    head of their own) takes the flywheel's: round 0's labels, then the fine-tuned model's
    calls at each task's threshold calibrated on those labels. The demonstration-only reward
    has no labelled rollouts, so its own success head decides every outcome at the policy
    node's default threshold.
    """
    if args.outcome_source == 'sim':
        return {}
    default = EpisodeLimits().success_threshold
    if args.flywheel_reward == 'finetuned':
        # The rule the policy node would read from this checkpoint (success_calibration).
        checkpoint = flywheel_checkpoint(args, run)
        thresholds = {task: calibrated_success_rule(checkpoint, task).threshold
                      for task in args.tasks}
        labelled = [e for task in round0.values() for e in task['evaluated'] + task['explored']]
        shared = RewardOutcomes(flywheel, thresholds, default, labelled)
    else:
        shared = RewardOutcomes(flywheel, {}, default)
    return {'flywheel': shared, 'demo': RewardOutcomes(labelers['demo'], {}, default)}


def ranking_auroc(scores, outcomes) -> float | None:
    """Probability that a random success scores above a random failure (ties count half)."""
    wins = np.array([s for s, ok in zip(scores, outcomes) if ok])
    losses = np.array([s for s, ok in zip(scores, outcomes) if not ok])
    if not len(wins) or not len(losses):
        return None
    pairs = wins[:, None] - losses[None, :]
    return float(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))


# --------------------------------------------------------------------------------------------
# Prepared once per work dir: demonstrations, the demonstration-only SARM2, the base VLA


def record_demos(args) -> list[Path]:
    """Scripted demonstrations (30% failures) of every reward task; cached on disk."""
    return record_demonstrations(args.work_dir / 'demos', args.reward_tasks,
                                 args.demos_per_task, seed=123, noise=0.1,
                                 failure_fraction=0.3, image_size=IMAGE_SIZE, cameras=(CAMERA,),
                                 progress=True, max_steps=args.max_steps)


def demo_reward_model(args) -> Path:
    """SARM2 trained on the demonstrations only; cached on disk."""
    tasks = '+'.join(sorted(args.reward_tasks))
    checkpoint = args.work_dir / f'reward-{tasks}' / 'sarm2_checkpoint'
    if (checkpoint / 'config.json').is_file():
        return checkpoint
    episodes = read_episodes(record_demos(args))
    config = Sarm2Config(cameras=(CAMERA,), image_size=IMAGE_SIZE, state_dim=9,
                         text_dim=make_text_embedder('').dim)
    torch.manual_seed(0)
    train_model(Sarm2Model(config), episodes,
                TrainConfig(steps=args.reward_steps, batch_size=16, eval_every=0, save_every=0,
                            num_threads=1, device='cpu',
                            warmup_steps=min(100, args.reward_steps // 10)),
                out_dir=checkpoint, progress=True, metadata={'tasks': list(args.reward_tasks)})
    return checkpoint


def base_vla(args) -> Path:
    """Return the compact VLA trained by behaviour cloning on the demonstrations (cached)."""
    if args.base_checkpoint is not None:
        return args.base_checkpoint
    tasks = '+'.join(sorted(args.reward_tasks))
    checkpoint = args.work_dir / f'vla-{tasks}' / 'compact_vla'
    if (checkpoint / 'config.json').is_file():
        return checkpoint
    episodes = read_episodes(record_demos(args))
    config = CompactVlaConfig(cameras=(CAMERA,), image_size=IMAGE_SIZE, state_dim=9,
                              action_dim=4, chunk_size=8)
    train_vla(episodes, config, BcTrainingConfig(steps=args.vla_steps, batch_size=32, seed=0,
                                                  threads=1), out_dir=checkpoint)
    return checkpoint


# --------------------------------------------------------------------------------------------
# One seed: round 0 of every task, the flywheel, then every method's rounds


def spiral_config(args, method: str) -> SpiralConfig:
    _, _, reward_source, alpha = METHODS[method]
    # --mc-alpha moves the blend of the methods that blend; MC-only and TD-only stay pure.
    if 0.0 < alpha < 1.0:
        alpha = args.mc_alpha
    # The sparse reward is the outcome alone: its success reward stays at 1.
    success_reward = args.success_reward if reward_source == 'dense' else 1.0
    return compact_vla_config(chunk_size=args.chunk_size, updates=args.updates, mc_alpha=alpha,
                              success_reward=success_reward,
                              mc_target=args.mc_target, transitions=args.transitions,
                              reward_source=reward_source, residual_scale=args.residual_scale,
                              beta=args.beta, gamma=args.gamma, best_of_k=args.best_of_k,
                              observation=args.observation,
                              base_feature_dim=args.base_feature_dim)


def make_base(args, arm: SimArm | None):
    if args.base == 'vla':
        return CompactVlaPolicy.from_checkpoint(args.base_checkpoint)
    return BiasedExpertPolicy(arm, [args.base_bias, 0.0, 0.0, 0.0], args.chunk_size)


def eval_seeds(args, seed: int, task_index: int, round_index: int) -> np.ndarray:
    """Fresh initial states for every seed, task and round, shared by all methods."""
    return (1_000_000 * (seed + 1) + 10_000 * task_index + 100 * round_index
            + np.arange(args.episodes))


class SeedRun:
    """Where one seed's rollouts happen: bags under ``directory`` (VLA) or arms in memory."""

    def __init__(self, args, seed: int, scales: dict):
        self.args, self.seed, self.scales = args, seed, scales
        self.directory = args.work_dir / 'rollouts' / f'seed{seed}'
        # Bags of an earlier run may come from other settings: every seed starts afresh.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.arms = {} if args.base == 'vla' else {
            task: SimArm(SimArmConfig(task=task, cameras=(CAMERA,), image_size=IMAGE_SIZE,
                                      seed=seed, max_steps=args.max_steps))
            for task in args.tasks}

    def base(self, task: str):
        return make_base(self.args, self.arms.get(task))

    def collect(self, policy, base, task: str, seeds, name: str) -> list[Episode]:
        """Run ``policy`` from ``seeds`` (for the VLA recorded as ``<task>/<name>`` bags)."""
        if self.args.base == 'vla':
            return bag_rollouts(self.args, policy, task, seeds, self.directory / task / name,
                                self.scales)
        return memory_rollouts(self.arms[task], policy, base, seeds, self.args.max_steps,
                               f'{task}-s{self.seed}-{name}', f'{name} {task}')

    def close(self) -> None:
        for arm in self.arms.values():
            arm.close()


def round_zero(args, run: SeedRun) -> dict:
    """Run the base's episodes of every task (its success rate) and the exploration ones."""
    data = {}
    for t, task in enumerate(args.tasks):
        base = run.base(task)
        zero = ResidualPolicy(base, ResidualActor(spiral_config(args, 'spiral')))
        explore = ResidualPolicy(base, ResidualActor(spiral_config(args, 'spiral')),
                                 exploration_noise=args.exploration_noise, seed=run.seed)
        seeds = eval_seeds(args, run.seed, t, 0)
        evaluated = run.collect(zero, base, task, seeds, 'round0-base')
        explored = run.collect(explore, base, task, 500_000 + seeds[:args.explore_episodes],
                               'round0-explore') if args.explore_episodes else []
        data[task] = {'evaluated': evaluated, 'explored': explored,
                      'rate': float(np.mean([e.success for e in evaluated]))}
    return data


def flywheel_checkpoint(args, run: SeedRun) -> Path:
    """Return where this seed's fine-tuned flywheel SARM2 is written."""
    return args.work_dir / f'flywheel-s{run.seed}' / 'checkpoint'


def flywheel_labeler(args, run: SeedRun, demo_reward: Path, demo_bags: list[Path]):
    """Return the flywheel's reward for this seed (see --flywheel-reward)."""
    if args.flywheel_reward == 'sim_labels':
        return LabelCurveLabeler()
    if args.flywheel_reward == 'demo':
        return Sarm2Labeler.from_checkpoint(demo_reward)
    out = flywheel_checkpoint(args, run)
    shutil.rmtree(out.parent, ignore_errors=True)
    round0 = [run.directory / task / name for task in args.tasks
              for name in ('round0-base', 'round0-explore')
              if (run.directory / task / name).is_dir()]
    finetune_on_rollouts(demo_reward, demo_bags, round0, out, progress=False,
                         train=finetune_train_config(steps=args.finetune_steps, seed=run.seed,
                                                     batch_size=16, num_threads=1,
                                                     device='cpu'))
    return Sarm2Labeler.from_checkpoint(out)


def run_method(args, run: SeedRun, task: str, task_index: int, method: str,
               shared: list[Episode], base_rate: float, labelers: dict, outcomes: dict,
               progress) -> dict:
    """R rounds of one method; return its success rate and reward AUROCs per round."""
    trainer, reward_name, _, _ = METHODS[method]
    config = spiral_config(args, method)
    base = run.base(task)
    learner = SpiralLearner(config, seed=run.seed)
    labeler = labelers.get(reward_name)
    outcome = outcomes.get('demo' if reward_name == 'demo' else 'flywheel')
    episodes = list(shared)
    rates, aurocs = [base_rate], [labeler.auroc(shared) if labeler else None]
    detections = [outcome.detection(shared)] if outcome else []
    for round_index in range(1, args.rounds + 1):
        seen = outcome.apply(episodes) if outcome else episodes
        data = prepare_round(seen, labeler, config, task, base)
        train_round(data, learner, trainer)
        critic = learner.critic if trainer == 'spiral' else None
        k = config.best_of_k if critic is not None else 1
        deployed = ResidualPolicy(base, learner.actor, critic, best_of_k=k, seed=run.seed)
        evaluated = run.collect(deployed, base, task,
                                eval_seeds(args, run.seed, task_index, round_index),
                                f'{method}-r{round_index}')
        rates.append(float(np.mean([e.success for e in evaluated])))
        aurocs.append(labeler.auroc(evaluated) if labeler else None)
        if outcome:
            detections.append(outcome.detection(evaluated))
        progress.set_postfix(task=task[:12], seed=run.seed, method=method, round=round_index,
                             success=f'{rates[-1]:.0%}')
        progress.update(1)
        episodes += evaluated
        learner.actor.train()
        learner.critic.train()
    return {'rates': rates, 'reward_auroc': aurocs,
            **({'outcome_detection': detections} if outcome else {})}


def run_seed(args, seed: int, labelers: dict, demo_reward: Path, demo_bags: list[Path],
             scales: dict, progress) -> dict:
    """Everything for one seed; returns task -> method -> {'rates', 'reward_auroc'}."""
    run = SeedRun(args, seed, scales)
    try:
        round0 = round_zero(args, run)
        flywheel = CachedLabeler(flywheel_labeler(args, run, demo_reward, demo_bags))
        seed_labelers = dict(labelers, flywheel=flywheel)
        outcomes = flywheel_outcomes(args, run, flywheel, labelers, round0)
        results = {}
        for t, task in enumerate(args.tasks):
            shared = round0[task]['evaluated'] + round0[task]['explored']
            results[task] = {method: run_method(args, run, task, t, method, shared,
                                                round0[task]['rate'], seed_labelers, outcomes,
                                                progress)
                             for method in args.methods}
        return results
    finally:
        run.close()


# --------------------------------------------------------------------------------------------
# Tables, verdict, docs


def summarize(args, per_seed: dict) -> dict:
    """Pool seeds: success per round with Wilson intervals, and mean/std across seeds."""
    table = {}
    for task, by_seed in per_seed.items():
        table[task] = {}
        for method in args.methods:
            rows = np.array([by_seed[s][method]['rates'] for s in sorted(by_seed)])
            trials = args.episodes * len(rows)
            rounds = []
            for r in range(rows.shape[1]):
                successes = int(round(float(rows[:, r].sum()) * args.episodes))
                low, high = wilson_interval(successes, trials)
                aurocs = [by_seed[s][method]['reward_auroc'][r] for s in sorted(by_seed)]
                aurocs = [a for a in aurocs if a is not None]
                rounds.append({'round': r, 'success': successes / trials, 'wilson_low': low,
                               'wilson_high': high, 'seed_mean': float(rows[:, r].mean()),
                               'seed_std': float(rows[:, r].std()),
                               'reward_auroc': float(np.mean(aurocs)) if aurocs else None})
            table[task][method] = rounds
    return table


# The target compares methods on the mean over rounds 1-3; longer runs report both means.
TARGET_ROUNDS = 3


def mean_over_rounds(rounds: list[dict], last: int | None = None) -> float:
    """Mean success over the improvement rounds 1..last (all when None; steadier than one)."""
    return float(np.mean([r['success'] for r in rounds[1:None if last is None else last + 1]]))


def verdict(table: dict) -> list[str]:
    """Per task: the target (>= 80%, final interval clear of round 0's, best mean r1-3)."""
    lines = []
    for task, methods in table.items():
        if 'spiral' not in methods:
            continue
        rounds = methods['spiral']
        final, base = rounds[-1], rounds[0]
        clear = final['wilson_low'] > base['wilson_high']
        last = min(TARGET_ROUNDS, len(rounds) - 1)
        curve = {m: mean_over_rounds(r, last) for m, r in methods.items()}
        behind = [m for m in curve if m != 'spiral' and curve[m] >= curve['spiral']]
        met = final['success'] >= 0.8 and clear and not behind
        lines.append(
            f'- {task}: SPIRAL {base["success"]:.0%} -> {final["success"]:.0%} '
            f'(final interval {"clear of" if clear else "overlaps"} round 0\'s); mean over '
            f'rounds 1-{last}: ' + ', '.join(f'{m} {v:.0%}' for m, v in curve.items())
            + (f'; not above {", ".join(behind)}' if behind else '; above every ablation')
            + f'. Target {"met" if met else "NOT met"}.')
    return lines


def section_name(args) -> str:
    """Docs section (and plot) name: one per kind of base policy."""
    return 'spiral' if args.base == 'vla' else 'spiral_biased_expert'


def reward_description(args, settings: dict) -> str:
    if args.flywheel_reward == 'sim_labels':
        flywheel = ("the progress curves of the rollouts' labels from the simulator's truth "
                    '(privileged, to separate SPIRAL from reward quality)')
    elif args.flywheel_reward == 'demo':
        flywheel = 'the demonstration-only SARM2 (no flywheel)'
    else:
        flywheel = (f'SARM2 fine-tuned on the labelled round-0 rollouts of each seed (from '
                    f'`{settings.get("demo_reward_model_id")}`)')
    return (f'Flywheel reward (spiral, td_only, rabc): {flywheel}. Demonstration-only reward '
            f'(spiral_demo_reward): SARM2 `{settings.get("demo_reward_model_id")}` trained by '
            f'this bench on {args.demos_per_task} scripted demonstrations per task (30% '
            f'failures) for {args.reward_steps} steps.' + (
                " Training outcomes from the reward models' success heads "
                "(`--outcome-source reward`): round 0's labels, then the flywheel model's calls "
                "at each task's calibrated threshold, for every method but spiral_demo_reward, "
                'whose own head decides every outcome at 0.9; evaluation by the simulator.'
                if args.outcome_source == 'reward' else ''))


def markdown(args, table: dict, command: str, seconds: float, settings: dict) -> str:
    if args.base == 'vla':
        base = (f'Base policy: compact VLA `{settings.get("base_policy_id")}` (behaviour cloning '
                f'on the same demonstrations, {args.vla_steps} steps; chunks of '
                f'{args.chunk_size}).')
    else:
        base = (f'Base policy: scripted expert + constant x-velocity bias {args.base_bias} '
                f'(chunks of {args.chunk_size}, open loop), a stand-in for an imperfect VLA.')
    lines = [f'## {section_name(args)}', '',
             f'Command: `{command}` ({seconds / 60:.1f} min '
             + ('of run time summed over the per-seed runs merged here' if args.merge
                else 'wall time') + ' on the shared 2-core machine).', '', base, '',
             reward_description(args, settings), '',
             f"Episodes through the policy node's control core on the simulated arm's ROS-free "
             f'core. Round 0: {args.episodes} base episodes per seed and task (the base rate) + '
             f'{args.explore_episodes} exploration episodes. Every round: {args.updates} '
             f'gradient steps, then {args.episodes} evaluation episodes per seed on fresh '
             f'initial states; {len(args.seeds)} seeds pooled; 95% Wilson intervals. SPIRAL: '
             f'{args.transitions} transitions, Monte-Carlo term `{args.mc_target}`, gamma '
             f'{args.gamma}, residual scale {args.residual_scale}, beta {args.beta}, best of '
             f'{args.best_of_k}, residual inputs: {args.observation} + joints + base chunk.', '']
    header = '| task | method | ' + ' | '.join(f'round {r}' for r in range(args.rounds + 1))
    both_means = args.rounds > TARGET_ROUNDS
    lines += [header + (f' | mean r1-{TARGET_ROUNDS}' if both_means else '') + ' | mean r1-R |',
              '|' + '---|' * (args.rounds + 4 + both_means)]
    for task, methods in table.items():
        for method, rounds in methods.items():
            cells = [f'{r["success"]:.0%} [{r["wilson_low"]:.0%}, {r["wilson_high"]:.0%}] '
                     f'(±{r["seed_std"]:.0%})' for r in rounds]
            if both_means:
                cells.append(f'{mean_over_rounds(rounds, TARGET_ROUNDS):.0%}')
            lines.append(f'| {task} | {method} | ' + ' | '.join(cells)
                         + f' | {mean_over_rounds(rounds):.0%} |')
    lines += ['', 'Cells: pooled success [Wilson 95%] (± std across seeds). Round 0 is the base '
              'policy (the residual is zero-initialised), identical for all methods.', '']
    lines += verdict(table) + ['']
    lines += ["Reward ranking: AUROC of the episode return by outcome on each round's "
              "rollouts (mean over seeds; round 0 = the base's rollouts):", '',
              '| task | reward (method) | ' + ' | '.join(f'round {r}' for r in
                                                         range(args.rounds + 1)) + ' |',
              '|' + '---|' * (args.rounds + 3)]
    for task, methods in table.items():
        for method in ('spiral', 'spiral_demo_reward', 'spiral_time_linear'):
            if method in methods:
                cells = ['n/a' if r['reward_auroc'] is None else f'{r["reward_auroc"]:.2f}'
                         for r in methods[method]]
                lines.append(f'| {task} | {METHODS[method][1]} ({method}) | '
                             + ' | '.join(cells) + ' |')
    lines += ['', f'Reading: a cell pools {args.episodes * len(args.seeds)} episodes, so its 95% '
              'interval spans roughly ±15-20 points; differences smaller than that are not '
              'significant. `--quick` (1 seed, 2 rounds, few episodes, short training) is a '
              'smoke test of the whole pipeline; its success rates are not the result.', '',
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
                        help='1 seed, 2 rounds, 4 episodes, short training (a smoke test)')
    parser.add_argument('--base', choices=BASES, default='vla')
    parser.add_argument('--tasks', nargs='+', default=list(DEFAULT_TASKS))
    parser.add_argument('--reward-tasks', nargs='+', default=list(DEFAULT_TASKS),
                        help='tasks of the demonstrations (SARM2 and the VLA are trained on all '
                             'of them, cached per task set); must include every --tasks entry')
    parser.add_argument('--prepare', action='store_true',
                        help='only record the demonstrations and train (or find) the cached '
                             'demonstration-only SARM2 and base VLA, then exit')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--episodes', type=int, default=15,
                        help='evaluation episodes per seed, task and round')
    parser.add_argument('--explore-episodes', type=int, default=15,
                        help='round-0 episodes with a random action offset per chunk, per task')
    parser.add_argument('--updates', type=int, default=1000, help='gradient steps per round')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--flywheel-reward', choices=FLYWHEEL_REWARDS,
                        help="finetuned (VLA default): SARM2 fine-tuned on round 0's labelled "
                             "rollouts; sim_labels: the labels' progress curves themselves "
                             '(privileged); demo (biased-expert default): the demonstration-only '
                             'SARM2')
    parser.add_argument('--finetune-steps', type=int, default=400,
                        help='steps of the SARM2 fine-tuning on the labelled rollouts')
    parser.add_argument('--transitions', choices=TRANSITIONS, default=COMPACT.transitions)
    parser.add_argument('--mc-target', choices=MC_TARGETS, default=COMPACT.mc_target)
    parser.add_argument('--observation', choices=OBSERVATIONS, default=COMPACT.observation,
                        help="the residual's view: pooled pixels or the base VLA's features")
    parser.add_argument('--gamma', type=float, default=COMPACT.gamma)
    parser.add_argument('--chunk-size', type=int, default=4,
                        help='chunk of the biased expert (the VLA has its own)')
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--base-bias', type=float, default=0.15,
                        help='x-velocity bias of the biased expert (Meta-World units)')
    parser.add_argument('--exploration-noise', type=float, default=0.15,
                        help='std of the per-chunk action offset of round-0 exploration')
    parser.add_argument('--best-of-k', type=int, default=COMPACT.best_of_k)
    parser.add_argument('--residual-scale', type=float,
                        help='largest residual per action dimension (default: '
                             f"{COMPACT.residual_scale} on the VLA base, the anchor's, as "
                             'spiral_loop and make demo use; 0.2 on the biased expert, whose 0.15 '
                             'bias a 0.1 residual cannot undo)')
    parser.add_argument('--success-reward', type=float, default=COMPACT.success_reward,
                        help="paid on a successful rollout's last action on top of the dense "
                             'reward (methods on a dense reward; the anchor pays none)')
    parser.add_argument('--outcome-source', choices=OUTCOME_SOURCES, default='sim',
                        help="the outcome a rollout is trained with: sim, the simulator's "
                             "success flag; reward, the reward model's success head as the "
                             'policy node calls it on a robot without an operator (after the '
                             "flywheel's labelled round 0, at each task's calibrated threshold; "
                             "the demonstration-only model's own head at 0.9). Evaluation "
                             "always uses the simulator's flag")
    parser.add_argument('--mc-alpha', type=float, default=COMPACT.mc_alpha,
                        help='weight of the Monte-Carlo return in the critic target of the '
                             'methods that blend it with TD (MC-only stays 1, TD-only 0)')
    parser.add_argument('--beta', type=float, default=COMPACT.beta,
                        help='weight of the residual penalty in the actor loss')
    parser.add_argument('--base-checkpoint', type=Path,
                        help='compact VLA checkpoint of the base (default: trained here, cached)')
    parser.add_argument('--demos-per-task', type=int, default=20)
    parser.add_argument('--reward-steps', type=int, default=800)
    parser.add_argument('--vla-steps', type=int, default=1000)
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'runs' / 'bench_spiral')
    parser.add_argument('--docs', type=Path,
                        help='markdown file whose "## spiral" (VLA base) or "## '
                             'spiral_biased_expert" section is (re)written (default: '
                             'docs/benchmarks.md, except with --quick, which writes no docs)')
    parser.add_argument('--merge', action='store_true',
                        help='do not run; merge the per-seed results already saved in '
                             '--work-dir/results-<base> (e.g. from one run per seed)')
    parser.add_argument('--no-docs', action='store_true',
                        help='do not touch the docs (tuning runs)')
    return parser


SETTINGS_KEYS = ('episodes', 'rounds', 'updates', 'base', 'base_bias', 'chunk_size', 'max_steps',
                 'demos_per_task', 'reward_steps', 'vla_steps', 'residual_scale', 'beta',
                 'gamma', 'mc_target', 'transitions', 'explore_episodes', 'flywheel_reward',
                 'best_of_k', 'observation', 'finetune_steps', 'success_reward',
                 'outcome_source', 'mc_alpha')


def load_results(results_dir: Path, tasks, methods) -> tuple[dict, dict]:
    """Per-seed results saved by earlier runs, and the settings they used (must agree)."""
    per_seed: dict = {}
    settings: dict = {}
    summed = 0.0
    for path in sorted(results_dir.glob('seed*.json')):
        saved = json.loads(path.read_text())
        if not all(t in saved['results'] and all(m in saved['results'][t] for m in methods)
                   for t in tasks):
            continue
        mine = {k: saved['settings'].get(k) for k in SETTINGS_KEYS + ('demo_reward_model_id',
                                                                       'base_policy_id')}
        if settings and mine != settings:
            raise ValueError(f'{path} was run with other settings than the results before it: '
                             f'{ {k: v for k, v in mine.items() if settings.get(k) != v} }')
        settings = mine
        for task in tasks:
            per_seed.setdefault(task, {})[saved['seed']] = saved['results'][task]
        summed += saved.get('seconds', 0.0)
    settings['seconds'] = summed
    return per_seed, settings


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.episodes = args.seeds[:1], min(args.rounds, 2), 4
        args.updates, args.demos_per_task = min(args.updates, 100), min(args.demos_per_task, 8)
        args.reward_steps, args.vla_steps = min(args.reward_steps, 200), min(args.vla_steps, 300)
        args.explore_episodes = min(args.explore_episodes, 2)
        args.finetune_steps = min(args.finetune_steps, 100)
        args.work_dir = args.work_dir / 'quick'
    torch.set_num_threads(1)
    args.base_feature_dim = 0
    if args.flywheel_reward is None:
        args.flywheel_reward = 'finetuned' if args.base == 'vla' else 'demo'
    if args.residual_scale is None:
        args.residual_scale = COMPACT.residual_scale if args.base == 'vla' else 0.2
    if args.base != 'vla' and (args.observation == 'base_features'
                               or args.flywheel_reward != 'demo'):
        print('spiral bench: the biased expert runs with --flywheel-reward demo and pixel '
              'observations (its rollouts are not bags with labels, and it has no features)',
              file=sys.stderr)
        return 2
    if args.outcome_source == 'reward' and (args.base != 'vla'
                                            or args.flywheel_reward == 'sim_labels'):
        print('spiral bench: --outcome-source reward needs the VLA base and a SARM2 flywheel '
              'reward (--flywheel-reward finetuned or demo): the outcome comes from its success '
              'head', file=sys.stderr)
        return 2
    unknown = sorted(set(args.tasks) - set(args.reward_tasks))
    if unknown:
        print(f'spiral bench: --reward-tasks must include every --tasks entry; add {unknown}',
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    demo_reward = demo_reward_model(args)
    sarm2 = Sarm2Labeler.from_checkpoint(demo_reward)
    settings = {'demo_reward_model_id': sarm2.labeler_id}
    if args.base == 'vla':
        args.base_checkpoint = base_vla(args)
        policy = CompactVlaPolicy.from_checkpoint(args.base_checkpoint)
        args.chunk_size = policy.chunk_size
        args.base_feature_dim = policy.feature_dim
        settings['base_policy_id'] = policy.policy_id
    if args.prepare:
        print(json.dumps({'demo_reward_checkpoint': str(demo_reward), **settings}))
        return 0
    results_dir = args.work_dir / f'results-{args.base}'
    results_dir.mkdir(parents=True, exist_ok=True)
    settings.update({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    if not args.merge:
        labelers = {'demo': CachedLabeler(sarm2),
                    'time_linear': CachedLabeler(TimeLinearLabeler())}
        demo_bags = record_demos(args)
        scales = demonstration_scales(demo_bags) if args.base == 'vla' else {}
        total = len(args.tasks) * len(args.seeds) * len(args.methods) * args.rounds
        with tqdm(total=total, desc='method-rounds', unit='round') as progress:
            for seed in args.seeds:
                seed_started = time.perf_counter()
                results = run_seed(args, seed, labelers, demo_reward, demo_bags, scales,
                                   progress)
                # One file per seed, so seeds run in separate invocations can be merged.
                (results_dir / f'seed{seed}.json').write_text(json.dumps({
                    'seed': seed, 'results': results, 'settings': settings,
                    'seconds': time.perf_counter() - seed_started}))
    try:
        per_seed, saved = load_results(results_dir, args.tasks, args.methods)
    except ValueError as error:
        print(f'spiral bench: {error}', file=sys.stderr)
        return 2
    missing = [t for t in args.tasks if t not in per_seed]
    if missing:
        print(f'spiral bench: no results for tasks {missing} in {results_dir}', file=sys.stderr)
        return 2
    if args.merge:
        for key in SETTINGS_KEYS:
            setattr(args, key, saved.get(key, getattr(args, key)))
    args.seeds = sorted({s for by_seed in per_seed.values() for s in by_seed})
    table = summarize(args, per_seed)
    seconds = saved['seconds'] if args.merge else time.perf_counter() - started
    options = ' '.join(a for a in (argv if argv is not None else sys.argv[1:])
                       if a != '--merge')
    command = 'make bench NAME=spiral' + (f" ARGS='{options}'" if options else '')
    if args.docs is None and not args.quick:
        args.docs = ROOT / 'docs' / 'benchmarks.md'
    if args.docs is not None and not args.no_docs:
        plot(table, args.docs.parent / f'{section_name(args)}_bench.png')
        write_section(markdown(args, table, command, seconds, saved), args.docs,
                      section_name(args))
    final = {task: {m: rounds[-1]['success'] for m, rounds in methods.items()}
             for task, methods in table.items()}
    result = {
        'base_success': {task: methods[args.methods[0]][0]['success']
                         for task, methods in table.items()},
        'final_success': {task: final[task].get('spiral', math.nan) for task in final},
        'ablations': {m: {task: final[task][m] for task in final}
                      for m in args.methods if m not in ('spiral', 'spiral_demo_reward')},
        'demo_only_reward': {task: final[task].get('spiral_demo_reward', math.nan)
                             for task in final},
        'mean_over_rounds': {task: {m: mean_over_rounds(r) for m, r in methods.items()}
                             for task, methods in table.items()},
        'mean_over_rounds_1_3': {task: {m: mean_over_rounds(r, TARGET_ROUNDS)
                                        for m, r in methods.items()}
                                 for task, methods in table.items()},
        'per_round': {task: {m: [r['success'] for r in rounds] for m, rounds in methods.items()}
                      for task, methods in table.items()},
        'reward_auroc': {task: {m: [r['reward_auroc'] for r in rounds]
                                for m, rounds in methods.items()}
                         for task, methods in table.items()},
        'seeds': args.seeds, 'rounds': args.rounds, 'episodes_per_round': args.episodes,
        'base': args.base, 'demo_reward_model_id': sarm2.labeler_id,
        'seconds': round(seconds, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
