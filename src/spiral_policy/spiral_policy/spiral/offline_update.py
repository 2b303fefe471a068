"""One offline SPIRAL round from rollout bags: read, check, relabel, build transitions, train.

Episodes that cannot be used are reported and skipped, never fatal: another task, missing
cameras, a different joint/action size, fewer than two frames, no base actions and no base
policy to recompute them. Bags that cannot be read at all (truncated, missing topics) are
reported by ``sarm2_common.bag_dataset.read_episodes``, which skips or partially reads them.

The round report (``round_report.json`` beside the checkpoint) lists every episode used with the
id of the reward model that labelled it, every skipped episode with the reason, and the
training logs. LRM relabelling also records its provenance (the VLM, its adapters, the prompt
protocol and settings) in the report and the checkpoint metadata, and the answer counts in the
report.
"""

import argparse
from collections import Counter
from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from sarm2_common.bag_dataset import read_episodes
from sarm2_common.episode import Episode
from sarm2_reward.lrm.options import add_lrm_arguments, lrm_from_args
from sarm2_reward.labeling import DEFAULT_SMOOTHING
from spiral_policy.compact_vla import CompactVlaPolicy
from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.learner import METHODS, SpiralLearner
from spiral_policy.spiral.relabel import (LRM_REWARDS, LrmLabeler, RewardLabeler, Sarm2Labeler,
                                          TimeLinearLabeler)
from spiral_policy.spiral.targets import chunk_starts
from spiral_policy.spiral.transitions import build_transitions, Rollout
from spiral_policy.vla import check_chunk, PolicyObservation, VlaPolicy

LOG = logging.getLogger(__name__)
REPORT_FILE = 'round_report.json'
# Episode.metadata keys a recorder may use for the base policy's own output.
BASE_CHUNKS_KEY = 'base_chunks'     # float [N, H, A], one chunk per chunk start
BASE_ACTIONS_KEY = 'base_actions'   # float [T, A], the base action of every step
# float [T, H, A]: the base chunk at every frame (per-frame transitions); ``prepare_round``
# stores the chunks it recomputes here, so an episode used in several rounds is computed once.
FRAME_BASE_CHUNKS_KEY = 'frame_base_chunks'
# float [T, F]: the base's observation features at every frame (a residual reading them).
FRAME_BASE_FEATURES_KEY = 'frame_base_features'
# Rollouts of a deployed residual record ``<base id>+spiral:<residual id>`` as their policy id;
# their recorded "base" actions are the deployed policy's (base + residual), not the base's.
RESIDUAL_POLICY_MARK = '+spiral:'


@dataclass
class RoundData:
    """Rollouts ready for training, and what was skipped and why."""

    rollouts: list[Rollout] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def skip(self, episode_id: str, reason: str):
        # Logged once per reason (a per-task round skips every other task's episodes for the
        # same reason); the report keeps every skipped episode.
        if all(s['reason'] != reason for s in self.skipped):
            LOG.warning('skipping episode %s: %s', episode_id, reason)
        self.skipped.append({'episode_id': episode_id, 'reason': reason})

    def log_repeated_skips(self):
        counts = Counter(s['reason'] for s in self.skipped)
        for reason, count in counts.items():
            if count > 1:
                LOG.warning('skipped %d more episodes: %s', count - 1, reason)


def episode_problem(episode: Episode, config: SpiralConfig, task: str | None) -> str | None:
    """Say why ``episode`` cannot train this residual, or None if it can."""
    if task and episode.task != task:
        return f'episode is from task {episode.task!r}, this round trains {task!r}'
    missing = [c for c in config.cameras if c not in episode.images]
    if missing:
        return f'missing camera(s) {missing}; have {sorted(episode.images)}'
    if len(episode) < 2:
        return f'only {len(episode)} frame(s)'
    joints = np.asarray(episode.joint_positions)
    if joints.ndim != 2 or joints.shape[1] != config.joint_dim:
        return f'joint positions of shape {joints.shape}, expected [T, {config.joint_dim}]'
    actions = np.asarray(episode.actions)
    if actions.ndim != 2 or actions.shape[1] != config.action_dim:
        return f'actions of shape {actions.shape}, expected [T, {config.action_dim}]'
    if not (np.all(np.isfinite(joints)) and np.all(np.isfinite(actions))):
        return 'non-finite joint positions or actions'
    return None


def recorded_base_outputs(episode: Episode,
                          config: SpiralConfig) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Return the base policy's chunks (and features) recorded with the episode, or None.

    Chunks per frame ([T, H, A]) when recorded so; otherwise one per chunk start. Actions
    recorded by a deployed residual policy are not the base's and are ignored (None), and so is
    everything when the residual needs base features the episode does not hold.
    """
    needs_features = config.observation == 'base_features'
    features = episode.metadata.get(FRAME_BASE_FEATURES_KEY)
    if features is not None:
        features = np.asarray(features, np.float32)
        if features.shape != (len(episode), config.base_feature_dim):
            features = None
    if needs_features and features is None:
        return None
    frame_chunks = episode.metadata.get(FRAME_BASE_CHUNKS_KEY)
    expected = (config.chunk_size, config.action_dim)
    if frame_chunks is not None:
        frame_chunks = np.asarray(frame_chunks, np.float32)
        if frame_chunks.shape == (len(episode), *expected):
            return frame_chunks, features
    if config.transitions == 'frame' or needs_features:
        return None
    starts = chunk_starts(len(episode), config.chunk_size)
    chunks = episode.metadata.get(BASE_CHUNKS_KEY)
    if chunks is not None:
        chunks = np.asarray(chunks, np.float32)
        return (chunks, None) if chunks.shape == (len(starts), *expected) else None
    actions = episode.metadata.get(BASE_ACTIONS_KEY)
    if actions is None or RESIDUAL_POLICY_MARK in str(episode.metadata.get('policy_id', '')):
        return None
    actions = np.asarray(actions, np.float32)
    if actions.shape != (len(episode), config.action_dim):
        return None
    padded = np.concatenate([actions, np.repeat(actions[-1:], config.chunk_size, axis=0)])
    return np.stack([padded[s:s + config.chunk_size] for s in starts]), None


def recompute_base_outputs(episode: Episode, base: VlaPolicy,
                           config: SpiralConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Query the frozen base policy on the recorded observation of every frame.

    Returns its chunks, float32 [T, H, A], and its observation features, float32 [T, F] (None
    when the base has none). Both are kept in the episode's metadata for later rounds.
    """
    base.reset()
    chunks, features = [], []
    for frame in range(len(episode)):
        obs = PolicyObservation(images={c: episode.images[c][frame] for c in episode.images},
                                joint_positions=episode.joint_positions[frame],
                                instruction=episode.instruction)
        chunks.append(check_chunk(base.select_action(obs), config.chunk_size, config.action_dim))
        features.append(getattr(base, 'last_features', None))
    chunks = np.stack(chunks).astype(np.float32)
    episode.metadata[FRAME_BASE_CHUNKS_KEY] = chunks
    if any(f is None for f in features):
        return chunks, None
    features = np.stack(features).astype(np.float32)
    episode.metadata[FRAME_BASE_FEATURES_KEY] = features
    return chunks, features


def prepare_round(episodes: list[Episode], labeler: RewardLabeler | None, config: SpiralConfig,
                  task: str | None = None, base: VlaPolicy | None = None,
                  progress: bool = False) -> RoundData:
    """Check, relabel and convert episodes; ``labeler`` None is allowed for sparse rewards.

    Base chunks come from the episode where it recorded the base's own (``recorded_base_outputs``);
    otherwise ``base`` recomputes them at every frame (exact for a deterministic base such as the
    compact VLA); without either, the episode is skipped.
    """
    data = RoundData()
    for episode in tqdm(episodes, desc='relabel', disable=not progress, unit='episode'):
        problem = episode_problem(episode, config, task)
        if problem:
            data.skip(episode.episode_id, problem)
            continue
        outputs = recorded_base_outputs(episode, config)
        if outputs is None:
            if base is None:
                data.skip(episode.episode_id, 'no base chunks recorded for these transitions '
                          f'({config.transitions}) and no base policy given to recompute them '
                          '(pass --base-checkpoint)')
                continue
            outputs = recompute_base_outputs(episode, base, config)
        base_chunks, base_features = outputs
        if labeler is None:
            if config.reward_source != 'sparse':
                raise ValueError('dense rewards need a reward labeler')
            rewards, labeler_id = np.zeros(len(episode)), 'sparse_success'
        else:
            try:
                rewards, labeler_id = labeler.frame_rewards(episode), labeler.labeler_id
            except ValueError as error:
                data.skip(episode.episode_id, f'reward labeling failed: {error}')
                continue
        data.rollouts.append(Rollout(
            episode_id=episode.episode_id, task=episode.task,
            images={c: episode.images[c] for c in config.cameras},
            joint_positions=np.asarray(episode.joint_positions, np.float32),
            actions=np.asarray(episode.actions, np.float32), base_chunks=base_chunks,
            base_features=base_features,
            frame_rewards=np.asarray(rewards, np.float64), success=bool(episode.success),
            reward_model_id=labeler_id,
            metadata={'policy_id': str(episode.metadata.get('policy_id', ''))}))
    data.log_repeated_skips()
    return data


def train_round(data: RoundData, learner: SpiralLearner, method: str,
                updates: int | None = None, progress: bool = False) -> dict:
    """Train ``learner`` on the prepared rollouts; return the round report (not yet saved)."""
    if not data.rollouts:
        raise ValueError(f'no usable episodes ({len(data.skipped)} skipped: '
                         f'{[s["reason"] for s in data.skipped[:3]]})')
    buffer = build_transitions(data.rollouts, learner.config)
    started = time.perf_counter()
    logs = learner.train(buffer, method=method, updates=updates, progress=progress)
    logs['train_seconds'] = round(time.perf_counter() - started, 2)
    return {
        'episodes': [{'episode_id': r.episode_id, 'task': r.task, 'success': r.success,
                      'frames': len(r), 'reward_model_id': r.reward_model_id,
                      'dense_return': float(np.sum(r.frame_rewards))} for r in data.rollouts],
        'skipped': data.skipped,
        'input_success_rate': float(np.mean([r.success for r in data.rollouts])),
        'reward_model_ids': sorted({r.reward_model_id for r in data.rollouts}),
        'training': logs,
    }


def recorded_base_policy_id(rollouts: list[Rollout]) -> str | None:
    """Return the base policy id the rollouts' metadata agree on, or None.

    Rollouts of a deployed residual policy carry ``<base id>+spiral:<residual id>``.
    """
    ids = {str(r.metadata.get('policy_id', '')).split('+spiral:')[0] for r in rollouts}
    ids.discard('')
    return ids.pop() if len(ids) == 1 else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='spiral_update',
        description='One offline SPIRAL round: read rollout bags, relabel them with a reward '
                    'model, train the residual actor-critic (or RA-BC) and write a new residual '
                    'checkpoint plus round_report.json. Unusable bags/episodes are reported and '
                    'skipped.')
    parser.add_argument('bags', type=Path, nargs='+',
                        help='rollout bag directories, or directories containing bags')
    parser.add_argument('--out', type=Path, required=True,
                        help='directory for the new residual checkpoint and the round report')
    parser.add_argument('--reward-checkpoint', type=Path,
                        help='SARM2 checkpoint directory used to relabel every episode')
    parser.add_argument('--reward', choices=('sarm2', 'lrm', 'time_linear', 'sparse'),
                        default='sarm2',
                        help='reward: SARM2 dense (needs --reward-checkpoint), zero-shot LRM '
                             'rewards from a VLM (needs the --lrm-* options below), the '
                             'time-linear baseline, or sparse success only')
    parser.add_argument('--smoothing', type=float, default=DEFAULT_SMOOTHING,
                        help='EMA smoothing of SARM2 (or LRM) values before differencing (0..1); '
                             "the default is the live reward node's, so rewards match it")
    parser.add_argument('--method', choices=METHODS, default='spiral',
                        help='spiral: residual actor-critic; rabc: reward-aligned BC')
    parser.add_argument('--init', type=Path,
                        help='previous residual checkpoint to continue from (else start at 0)')
    parser.add_argument('--base-checkpoint', type=Path,
                        help='compact VLA checkpoint of the frozen base policy; needed when the '
                             'bags do not record the base actions')
    parser.add_argument('--config', type=Path,
                        help='SpiralConfig JSON (ignored with --init, which carries its own)')
    parser.add_argument('--task', help='only train on episodes of this task; others are skipped')
    parser.add_argument('--updates', type=int, help='gradient steps (default: config.updates)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--round', type=int, default=1, help='round number, for the report')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (1 is fastest for these small networks)')
    add_lrm_arguments(parser)
    parser.add_argument('--lrm-rewards', choices=LRM_REWARDS, default='change',
                        help='change: per-frame reward = change of the held LRM reward (the '
                             'return is last minus first); held: the held reward on every frame, '
                             'as the LRM authors feed PPO')
    return parser


def _labeler(args, config: SpiralConfig) -> RewardLabeler | None:
    if args.reward == 'sarm2':
        if args.reward_checkpoint is None:
            raise ValueError('--reward sarm2 needs --reward-checkpoint <SARM2 checkpoint dir>')
        return Sarm2Labeler.from_checkpoint(args.reward_checkpoint, args.smoothing)
    if args.reward == 'lrm':
        source, lrm_config = lrm_from_args(args, default_camera=config.cameras[0])
        return LrmLabeler.from_source(source, lrm_config, args.lrm_rewards, args.smoothing)
    return TimeLinearLabeler() if args.reward == 'time_linear' else None


def main(argv=None) -> int:
    """Run one offline round; exit code 2 with a message on bad input."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.init is not None:
            learner = SpiralLearner.load(args.init, seed=args.seed)
        else:
            config = SpiralConfig.load(args.config) if args.config else SpiralConfig()
            learner = SpiralLearner(config, seed=args.seed)
        if (args.reward == 'sparse') != (learner.config.reward_source == 'sparse'):
            learner.config.reward_source = 'sparse' if args.reward == 'sparse' else 'dense'
        labeler = _labeler(args, learner.config)
        base = None
        if args.base_checkpoint is not None:
            base = CompactVlaPolicy.from_checkpoint(args.base_checkpoint)
        paths = args.bags if len(args.bags) > 1 else args.bags[0]
        episodes = read_episodes(paths)
        data = prepare_round(episodes, labeler, learner.config, args.task, base, progress=True)
        report = train_round(data, learner, args.method, args.updates, progress=True)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f'spiral_update: {error}', file=sys.stderr)
        return 2
    report.update({'round': args.round, 'method': args.method, 'reward': args.reward,
                   'reward_checkpoint': (str(args.reward_checkpoint.resolve())
                                         if args.reward == 'sarm2' else None),
                   'bags': [str(p) for p in args.bags],
                   'init': str(args.init) if args.init else None})
    metadata = {'round': args.round, 'method': args.method, 'reward': args.reward,
                'reward_model_ids': report['reward_model_ids'],
                'base_policy_id': base.policy_id if base is not None else
                recorded_base_policy_id(data.rollouts)}
    if isinstance(labeler, LrmLabeler):
        # A served model has no weights to hash into its id: the record names what answered.
        report['reward_provenance'] = metadata['reward_provenance'] = labeler.provenance
        report['reward_answers'] = dict(labeler.tally)
    learner.save(args.out, metadata)
    (args.out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    print(f'round {args.round}: trained on {len(report["episodes"])} episodes '
          f'({len(report["skipped"])} skipped), input success '
          f'{report["input_success_rate"]:.0%}; wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
