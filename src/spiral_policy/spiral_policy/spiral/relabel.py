"""Reward relabeling of rollouts, recording which reward model labelled what.

Rewards stored in a bag at collection time came from whichever reward model the live node ran
then; an offline round relabels every episode with one chosen labeler and keeps the labeler id
beside the rewards, so a round report always says which model scored which episode.

Labelers:

- ``Sarm2Labeler``: SARM2 values for every frame (offline, as if played live), smoothed and
  differenced into dense rewards by ``sarm2_reward.labeling.dense_rewards`` with the live
  reward node's smoothing (``DEFAULT_SMOOTHING``), so offline rewards equal the live ones.
- ``TimeLinearLabeler``: the time-linear baseline, progress = t / (T - 1) for every episode,
  successful or not (the reward a model without any task understanding would give).
- ``LrmLabeler``: zero-shot rewards from a vision-language model asked the LRM questions
  (``sarm2_reward.lrm``), for a task with no reward-model training data; its ``provenance``
  record says exactly what labelled (model, adapters, prompt protocol, settings).
"""

from collections import Counter
from pathlib import Path
from typing import Protocol

import numpy as np

from sarm2_common.episode import Episode
from sarm2_reward.inference import predict_episode, Sarm2Predictor
from sarm2_reward.labeling import DEFAULT_SMOOTHING, dense_rewards
from sarm2_reward.lrm.lrm_backend import answers_per_frame, LrmConfig
from sarm2_reward.lrm.settings import provenance_id, VlmSource
from sarm2_reward.lrm.vlm_clients import VlmClient
from sarm2_reward.text_embedding import make_text_embedder

LRM_REWARDS = ('change', 'held')


class RewardLabeler(Protocol):
    """Scores a whole episode with one per-frame reward (``frame_rewards[t]``, see transitions)."""

    labeler_id: str

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        """Return float64 [T] per-frame rewards for ``episode``."""


class TimeLinearLabeler:
    """Time-linear baseline: value rises linearly from -1 to 0 over every episode."""

    labeler_id = 'time_linear'

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        """Return 1 / (T - 1) on every frame but the first (0 for a one-frame episode)."""
        length = len(episode)
        values = np.linspace(-1.0, 0.0, length) if length > 1 else np.zeros(1)
        return dense_rewards(values, 0.0)


class Sarm2Labeler:
    """Dense SARM2 rewards from a reward-model checkpoint."""

    def __init__(self, model, model_id: str, smoothing: float = DEFAULT_SMOOTHING):
        self.model = model.eval()
        self.labeler_id = model_id
        self.smoothing = smoothing
        self._text = make_text_embedder(model.config.text_model_path)

    @classmethod
    def from_checkpoint(cls, path: str | Path,
                        smoothing: float = DEFAULT_SMOOTHING) -> 'Sarm2Labeler':
        """Load a SARM2 checkpoint directory (errors name the file and the mismatch)."""
        predictor = Sarm2Predictor.from_checkpoint(path)
        return cls(predictor.model, predictor.model_id, smoothing)

    def predictions(self, episode: Episode) -> dict[str, np.ndarray]:
        """Return the model's per-frame predictions (``predict_episode``'s dict)."""
        missing = [c for c in self.model.config.cameras if c not in episode.images]
        if missing:
            raise ValueError(f'episode {episode.episode_id} has no camera {missing}; the reward '
                             f'model {self.labeler_id} needs {list(self.model.config.cameras)}')
        return predict_episode(self.model, episode, self._text)

    def values(self, episode: Episode) -> np.ndarray:
        """Return the model's per-frame values (-1..0), float64 [T]."""
        return np.asarray(self.predictions(episode)['value'], np.float64)

    def success_probabilities(self, episode: Episode) -> np.ndarray:
        """Return the success head's per-frame probabilities, float64 [T]."""
        return np.asarray(self.predictions(episode)['success_probability'], np.float64)

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        """Return smoothed-and-differenced SARM2 values, float64 [T]."""
        return dense_rewards(self.values(episode), self.smoothing)


class LrmLabeler:
    """LRM rewards: a VLM's answers every ``query_every`` frames, held in between.

    ``rewards`` says how the held LRM reward (0..1, ``config.mode``) becomes per-frame rewards:

    - ``change`` (default): it is the episode's value estimate, and a frame's reward is its
      change (smoothed and differenced as SARM2 values are), so an episode's return is its last
      minus its first LRM reward, whatever its length. This is what ``frame_rewards`` means in
      this package, and our episodes end at success, so a held level would pay a failure that
      runs to the step limit more than a quick success.
    - ``held``: the held reward itself on every frame, as the LRM authors feed PPO (fixed-length
      episodes); for comparison with their runs.

    Frames before the first answer hold the first answer's value (``change``) or get 0
    (``held``). An episode whose queries all failed is not labelled (ValueError); ``tally``
    counts queries, answers, failures and unparseable answers over all episodes.
    """

    def __init__(self, client: VlmClient, config: LrmConfig, source_provenance: dict,
                 rewards: str = 'change', smoothing: float = 0.0):
        if rewards not in LRM_REWARDS:
            raise ValueError(f'LRM rewards must be one of {LRM_REWARDS}, got {rewards!r}')
        self.client = client
        self.config = config
        self.rewards = rewards
        self.smoothing = smoothing
        self.provenance = {**source_provenance, 'mode': config.mode,
                           'query_every': config.query_every, 'camera': config.camera,
                           'rewards': rewards, 'smoothing': smoothing}
        self.labeler_id = (f'lrm:{client.name}:{config.mode}:every{config.query_every}-'
                           f'{provenance_id(self.provenance)}')
        self.tally = Counter()

    @classmethod
    def from_source(cls, source: VlmSource, config: LrmConfig, rewards: str = 'change',
                    smoothing: float = 0.0) -> 'LrmLabeler':
        """Connect to (or load) the VLM ``source`` describes."""
        return cls(source.make_client(), config, source.provenance(), rewards, smoothing)

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        """Return the per-frame LRM rewards of ``episode``, float64 [T]."""
        tally = Counter()
        answers = answers_per_frame(self.client, episode, self.config, tally)
        self.tally.update(tally)
        if not tally['answers']:
            failures = {k: v for k, v in tally.items() if k.startswith('failed_')}
            raise ValueError(f'no answer from the VLM ({tally["queries"]} queries: '
                             f'{failures})')
        levels = [a.reward(self.config.mode) if a else None for a in answers]
        if self.rewards == 'held':
            return np.array([0.0 if v is None else v for v in levels], np.float64)
        first = next(v for v in levels if v is not None)
        values = np.array([first if v is None else v for v in levels], np.float64)
        return dense_rewards(values, self.smoothing)
