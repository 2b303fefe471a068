"""Training targets and batches built from episodes.

Targets per frame ``t`` of an episode with ``T`` frames:

- successful episode: progress ``t / (T - 1)``, i.e. value ``-(T - 1 - t) / (T - 1)``: normalized
  time-to-go, 1 on the last frame (the task is complete there).
- failed episode: time-to-go is undefined (the goal is never reached), so we do not invent one.
  Instead the frame gets the *stage progress* of the primitive the expert was executing, with the
  SARM v1 formula and the task's stage priors measured on its successful episodes:
  ``sum(priors of earlier stages) + prior_k * min(1, frames into the stage / expected length)``,
  capped at ``failure_progress_cap`` (< 1). Why: a failed rollout did achieve its earlier stages
  (the reward model should say so, which keeps dense rewards informative on failures), falls back
  when the expert has to redo a stage (e.g. re-grasp after a slip), and never gets the value of
  a finished task, so success and failure separate at the end. A failed episode without primitive
  labels, or of a task without successful episodes, gets no value target (weight 0).
- labelled rollout (``episode.metadata[ROLLOUT_LABEL]`` holds its ``RolloutLabel``, see
  ``flywheel.load_labelled_rollouts``): the label's piecewise-linear progress curve
  (``sarm2_common.rollout_labels.progress_targets``), weight 1, whatever the outcome and
  whether or not its frames carry primitive labels. This is how the policy's own failures teach
  the reward model (the data flywheel); unlabelled primitives are gated by the predicted one.
- success label (for the success head): 1 on the last ``success_window`` fraction of a
  successful episode, 0 everywhere else, including every frame of a failed episode.
- every slot of a value window also gets its own frame's target (``SLOT_PROGRESS``), used when
  the model applies the value loss at every window position.
- within-stage fraction ``tau`` and stage labels for the SARM v1 baseline.
"""

from dataclasses import dataclass

import numpy as np
import torch

from . import model as keys
from sarm2_common.episode import Episode, UNLABELLED
from sarm2_common.rollout_labels import progress_targets as label_progress
from sarm2_common.vocabulary import PRIMITIVE_TO_GROUP
from .windows import rewind_value_window, stage_window, value_window

STAGE_TAU = 'stage_tau'          # float [B], fraction of the current primitive segment done
EPISODE_LENGTH = 'episode_length'  # float [B]
ROLLOUT_LABEL = 'rollout_label'    # Episode.metadata key of a labelled rollout's RolloutLabel


def segments(primitive_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Run-length segments ``(primitive, start, end_exclusive)`` of a label sequence."""
    change = np.flatnonzero(np.diff(primitive_ids)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(primitive_ids)]])
    return [(int(primitive_ids[s]), int(s), int(e)) for s, e in zip(starts, ends)]


@dataclass
class StagePriors:
    """A task's stages in execution order, their mean share of an episode and mean length."""

    stages: tuple[int, ...]
    priors: tuple[float, ...]
    mean_lengths: tuple[float, ...]
    mean_episode_length: float

    def progress(self, primitive_ids: np.ndarray) -> np.ndarray:
        """SARM v1 stage progress per frame; labels outside ``stages`` hold the last value."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.priors)])
        out = np.zeros(len(primitive_ids))
        last = 0.0
        for primitive, start, end in segments(primitive_ids):
            if primitive not in self.stages:
                out[start:end] = last
                continue
            k = self.stages.index(primitive)
            done = np.minimum(1.0, (np.arange(end - start) + 1) / self.mean_lengths[k])
            out[start:end] = cumulative[k] + self.priors[k] * done
            last = out[end - 1]
        return out


def estimate_stage_priors(episodes: list[Episode]) -> dict[str, StagePriors]:
    """Per task: stage order (by first appearance), share of frames and mean segment length.

    Only successful, labelled episodes count; tasks without any are absent.
    """
    per_task: dict[str, list[Episode]] = {}
    for episode in episodes:
        if episode.success and np.all(episode.primitive_ids != UNLABELLED):
            per_task.setdefault(episode.task, []).append(episode)
    priors = {}
    for task, task_episodes in per_task.items():
        first_seen: dict[int, list[float]] = {}
        shares: dict[int, list[float]] = {}
        for episode in task_episodes:
            ids = episode.primitive_ids
            for primitive in np.unique(ids):
                first_seen.setdefault(int(primitive), []).append(
                    np.argmax(ids == primitive) / len(ids))
        order = sorted(first_seen, key=lambda p: np.mean(first_seen[p]))
        for episode in task_episodes:
            for primitive in order:
                shares.setdefault(primitive, []).append(
                    float(np.mean(episode.primitive_ids == primitive)))
        share = np.array([np.mean(shares[p]) for p in order])
        mean_length = float(np.mean([len(e) for e in task_episodes]))
        priors[task] = StagePriors(stages=tuple(order), priors=tuple(share / share.sum()),
                                   mean_lengths=tuple(np.maximum(share * mean_length, 1.0)),
                                   mean_episode_length=mean_length)
    return priors


def success_progress(length: int) -> np.ndarray:
    """Progress target ``t / (T - 1)`` of a successful episode (all ones for one frame)."""
    if length == 1:
        return np.ones(1)
    return np.arange(length) / (length - 1)


def progress_targets(episode: Episode, priors: dict[str, StagePriors],
                     failure_progress_cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Progress target and loss weight (0 or 1) per frame, as described in the module doc."""
    length = len(episode)
    label = episode.metadata.get(ROLLOUT_LABEL)
    if label is not None:
        return label_progress(label, episode.timestamps), np.ones(length)
    if episode.success:
        return success_progress(length), np.ones(length)
    labelled = np.all(episode.primitive_ids != UNLABELLED)
    if not labelled or episode.task not in priors:
        return np.zeros(length), np.zeros(length)
    progress = priors[episode.task].progress(episode.primitive_ids)
    return np.minimum(progress, failure_progress_cap), np.ones(length)


def success_labels(episode: Episode, success_window: float) -> np.ndarray:
    """1.0 on the last ``success_window`` fraction of a successful episode, else 0.0."""
    labels = np.zeros(len(episode))
    if episode.success:
        labels[-max(1, round(success_window * len(episode))):] = 1.0
    return labels


def stage_tau(primitive_ids: np.ndarray) -> np.ndarray:
    """Fraction of its primitive segment completed at each frame (1 at the segment's end)."""
    tau = np.zeros(len(primitive_ids))
    for _, start, end in segments(primitive_ids):
        tau[start:end] = (np.arange(end - start) + 1) / (end - start)
    return tau


@dataclass
class TargetConfig:
    """How episodes become training samples."""

    rewind_prob: float = 0.3
    predicted_primitive_prob: float = 0.3
    success_window: float = 0.1
    failure_progress_cap: float = 0.9

    def __post_init__(self):
        for name in ('rewind_prob', 'predicted_primitive_prob'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
        if not 0.0 < self.success_window <= 1.0:
            raise ValueError(f'success_window must be in (0, 1], got {self.success_window}')
        if not 0.0 < self.failure_progress_cap < 1.0:
            raise ValueError('failure_progress_cap must be in (0, 1), got '
                             f'{self.failure_progress_cap}')


class EpisodeSampler:
    """Draws random training batches (frame windows + targets) from a list of episodes.

    Each process of a distributed run owns one sampler with its own seed, so batches differ
    across ranks without a DistributedSampler (training is step-based, not epoch-based).
    Every frame is equally likely, times its episode's ``episode_weights`` entry (default 1).
    """

    def __init__(self, episodes: list[Episode], cameras: tuple[str, ...], window_sizes: dict,
                 instruction_embeddings: dict[str, np.ndarray], priors: dict[str, StagePriors],
                 targets: TargetConfig, seed: int = 0, samples_per_episode: int = 4,
                 episode_weights: np.ndarray | None = None):
        if not episodes:
            raise ValueError('no training episodes')
        for episode in episodes:
            missing = [c for c in cameras if c not in episode.images]
            if missing:
                raise ValueError(f'episode {episode.episode_id} lacks cameras {missing}; the '
                                 f'model is configured for {list(cameras)}')
        self.episodes = episodes
        self.cameras = cameras
        self.windows = window_sizes
        self.instructions = instruction_embeddings
        self.targets = targets
        self.samples_per_episode = max(1, samples_per_episode)
        self.rng = np.random.default_rng(seed)
        self.progress, self.weight, self.success, self.tau = [], [], [], []
        for episode in episodes:
            progress, weight = progress_targets(episode, priors, targets.failure_progress_cap)
            self.progress.append(progress)
            self.weight.append(weight)
            self.success.append(success_labels(episode, targets.success_window))
            self.tau.append(stage_tau(episode.primitive_ids))
        lengths = np.array([len(e) for e in episodes], dtype=np.float64)
        if episode_weights is not None:
            episode_weights = np.asarray(episode_weights, dtype=np.float64)
            if episode_weights.shape != lengths.shape or np.any(episode_weights < 0) \
                    or not episode_weights.sum() > 0:
                raise ValueError('episode_weights needs one non-negative weight per episode, '
                                 'not all zero')
            lengths = lengths * episode_weights
        # Every frame equally likely, whatever its episode's length.
        self.episode_prob = lengths / lengths.sum()

    def _windows(self, episode: Episode, t: int) -> tuple[np.ndarray, np.ndarray]:
        stage_index = stage_window(t, self.windows['stage_past_frames'], self.windows['stage_gap'])
        if t < len(episode) - 1 and self.rng.random() < self.targets.rewind_prob:
            peak = int(self.rng.integers(t + 1, len(episode)))
            value_index = rewind_value_window(peak, t, self.windows['value_past_frames'],
                                              self.windows['value_gap'])
        else:
            value_index = value_window(t, self.windows['value_past_frames'],
                                       self.windows['value_gap'])
        return stage_index, value_index

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        """One batch: the keys of ``model`` plus ``STAGE_TAU`` and ``EPISODE_LENGTH``.

        Samples come in groups of ``samples_per_episode`` from one episode, so their windows
        share frames (always the start frame, often more) and each frame is encoded once.
        """
        rows: dict[str, list] = {}
        frames, states = [], []
        episodes = self.rng.choice(len(self.episodes), p=self.episode_prob,
                                   size=-(-batch_size // self.samples_per_episode))
        for e in episodes:
            episode = self.episodes[e]
            count = min(self.samples_per_episode, batch_size - len(rows.get(keys.PROGRESS, [])))
            times = self.rng.integers(len(episode), size=count)
            windows = [self._windows(episode, int(t)) for t in times]
            used = np.unique(np.concatenate([np.concatenate(w) for w in windows]))
            offset = len(frames)
            position = {int(frame): offset + i for i, frame in enumerate(used)}
            frames.extend(np.stack([episode.images[c][used] for c in self.cameras], axis=1))
            states.extend(episode.joint_positions[used])
            for t, (stage_index, value_index) in zip(times, windows):
                primitive = int(episode.primitive_ids[t])
                row = {
                    keys.STAGE_INDEX: [position[int(i)] for i in stage_index],
                    keys.VALUE_INDEX: [position[int(i)] for i in value_index],
                    keys.INSTRUCTION: self.instructions[episode.instruction],
                    keys.PRIMITIVE: primitive,
                    keys.GROUP: PRIMITIVE_TO_GROUP[primitive] if primitive >= 0 else -1,
                    keys.PROGRESS: self.progress[e][t],
                    keys.PROGRESS_WEIGHT: self.weight[e][t],
                    keys.SLOT_PROGRESS: self.progress[e][value_index],
                    keys.SLOT_WEIGHT: self.weight[e][value_index],
                    keys.SUCCESS: self.success[e][t],
                    keys.USE_PREDICTED_PRIMITIVE:
                        self.rng.random() < self.targets.predicted_primitive_prob,
                    STAGE_TAU: self.tau[e][t],
                    EPISODE_LENGTH: float(len(episode)),
                }
                for key, value in row.items():
                    rows.setdefault(key, []).append(value)
        batch = {key: torch.as_tensor(np.stack(values)) for key, values in rows.items()}
        batch[keys.FRAMES] = torch.as_tensor(np.stack(frames))
        batch[keys.STATES] = torch.as_tensor(np.stack(states))
        for key in (keys.STATES, keys.INSTRUCTION, keys.PROGRESS, keys.PROGRESS_WEIGHT,
                    keys.SLOT_PROGRESS, keys.SLOT_WEIGHT, keys.SUCCESS, STAGE_TAU,
                    EPISODE_LENGTH):
            batch[key] = batch[key].float()
        return batch
