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
"""

from pathlib import Path
from typing import Protocol

import numpy as np

from sarm2_common.episode import Episode
from sarm2_reward.inference import predict_episode, Sarm2Predictor
from sarm2_reward.labeling import DEFAULT_SMOOTHING, dense_rewards
from sarm2_reward.text_embedding import make_text_embedder


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

    def values(self, episode: Episode) -> np.ndarray:
        """Return the model's per-frame values (-1..0), float64 [T]."""
        missing = [c for c in self.model.config.cameras if c not in episode.images]
        if missing:
            raise ValueError(f'episode {episode.episode_id} has no camera {missing}; the reward '
                             f'model {self.labeler_id} needs {list(self.model.config.cameras)}')
        return np.asarray(predict_episode(self.model, episode, self._text)['value'], np.float64)

    def frame_rewards(self, episode: Episode) -> np.ndarray:
        """Return smoothed-and-differenced SARM2 values, float64 [T]."""
        return dense_rewards(self.values(episode), self.smoothing)
