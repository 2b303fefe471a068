"""A VlaPolicy that runs a frozen base policy plus a SPIRAL residual (contract 4).

The policy node builds it exactly like any other policy::

    base = CompactVlaPolicy.from_checkpoint(base_checkpoint)
    policy = ResidualPolicy.from_checkpoint(residual_checkpoint, base) if residual_checkpoint \
        else base

and then only calls ``reset()`` and ``select_action(obs)``. After each call, ``last_base_chunk``
holds the base policy's own chunk, so a recorder can store it next to the executed actions.
A residual that reads the base's observation features (``SpiralConfig.observation``
'base_features') takes them from the base's ``last_features`` after its ``select_action``.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch

from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.critic import CriticEnsemble
from spiral_policy.spiral.learner import ACTOR_FILE, read_metadata, SpiralLearner
from spiral_policy.spiral.residual import BASE, compose, FEATURES, IMAGES, JOINTS, \
    pool_images, ResidualActor
from spiral_policy.vla import check_chunk, PolicyObservation, VlaPolicy


def observation_batch_from(obs: PolicyObservation, base_chunk: np.ndarray, config: SpiralConfig,
                           base_features: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Build a batch of one observation for the residual actor and critic."""
    images = pool_images(obs.images, config.cameras, config.feature_image_size)
    joints = np.asarray(obs.joint_positions, np.float32).reshape(-1)
    if joints.shape[0] != config.joint_dim:
        raise ValueError(f'observation has {joints.shape[0]} joint positions, the residual '
                         f'was trained with {config.joint_dim}')
    features = np.zeros(0, np.float32)
    if config.observation == 'base_features':
        features = np.asarray(base_features if base_features is not None else [],
                              np.float32).reshape(-1)
        if features.shape[0] != config.base_feature_dim:
            raise ValueError(f'the residual reads {config.base_feature_dim} base features, the '
                             f'base policy gave {features.shape[0]}')
    return {IMAGES: torch.from_numpy(images[None]), FEATURES: torch.from_numpy(features[None]),
            JOINTS: torch.from_numpy(joints[None]),
            BASE: torch.from_numpy(np.asarray(base_chunk, np.float32)[None])}


def best_of_k(critic: CriticEnsemble, batch: dict[str, torch.Tensor],
              candidates: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Index of the candidate chunk (float [K, H, A]) with the highest min-Q, and all K scores."""
    k = candidates.shape[0]
    repeated = {name: value.expand(k, *value.shape[1:]) for name, value in batch.items()}
    with torch.no_grad():
        scores = critic.min_q(repeated, candidates)
    return int(torch.argmax(scores)), scores


class ResidualPolicy:
    """Base VLA + residual actor; optional best-of-k by the critic and exploration noise."""

    def __init__(self, base: VlaPolicy, actor: ResidualActor, critic: CriticEnsemble | None = None,
                 best_of_k: int = 1, exploration_noise: float = 0.0, seed: int = 0,
                 residual_id: str = 'untrained'):
        config = actor.config
        if base.chunk_size != config.chunk_size or base.action_dim != config.action_dim:
            raise ValueError(
                f'base policy {base.policy_id!r} emits chunks of {base.chunk_size} x '
                f'{base.action_dim}, the residual expects {config.chunk_size} x '
                f'{config.action_dim}')
        if best_of_k < 1:
            raise ValueError(f'best_of_k must be >= 1, got {best_of_k}')
        if best_of_k > 1 and critic is None:
            raise ValueError('best_of_k > 1 needs a trained critic to score candidates')
        if exploration_noise < 0:
            raise ValueError(f'exploration_noise must be >= 0, got {exploration_noise}')
        if config.observation == 'base_features' and \
                getattr(base, 'feature_dim', None) != config.base_feature_dim:
            raise ValueError(f'the residual reads {config.base_feature_dim} observation features '
                             f'of its base; base policy {base.policy_id!r} provides '
                             f'{getattr(base, "feature_dim", "none")}')
        self.base = base
        self.actor = actor.eval()
        self.critic = critic.eval() if critic is not None else None
        self.config = config
        self.best_of_k = best_of_k
        self.exploration_noise = exploration_noise
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.policy_id = f'{base.policy_id}+spiral:{residual_id}'
        self.action_dim = base.action_dim
        self.chunk_size = base.chunk_size
        self.last_base_chunk: np.ndarray | None = None
        self.last_q: float | None = None

    @classmethod
    def from_checkpoint(cls, residual_dir: str | Path, base_policy: VlaPolicy,
                        best_of_k: int | None = None, exploration_noise: float = 0.0,
                        seed: int = 0) -> 'ResidualPolicy':
        """Load a residual checkpoint directory on top of ``base_policy``.

        ``best_of_k`` defaults to the checkpoint config's value when its critic was trained
        (RA-BC checkpoints have no trained critic and deploy with k = 1).
        """
        learner = SpiralLearner.load(residual_dir, seed=seed)
        meta = read_metadata(residual_dir)
        base_id = meta.get('base_policy_id')
        if base_id and base_id != base_policy.policy_id:
            raise ValueError(f'residual {residual_dir} was trained on base policy {base_id!r}, '
                             f'got {base_policy.policy_id!r}')
        critic = learner.critic if learner.critic_trained else None
        if best_of_k is None:
            best_of_k = learner.config.best_of_k if critic is not None else 1
        digest = hashlib.sha256(Path(residual_dir, ACTOR_FILE).read_bytes()).hexdigest()[:12]
        return cls(base_policy, learner.actor, critic, best_of_k=best_of_k,
                   exploration_noise=exploration_noise, seed=seed, residual_id=digest)

    def reset(self) -> None:
        """Start a new episode (resets the base policy)."""
        self.base.reset()
        self.last_base_chunk = None
        self.last_q = None

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        """Return base chunk + residual (best of k by Q if enabled, + exploration noise)."""
        config = self.config
        base_chunk = check_chunk(self.base.select_action(obs), self.chunk_size, self.action_dim)
        if base_chunk.shape[0] != config.chunk_size:
            raise ValueError(f'base policy returned {base_chunk.shape[0]} actions, the residual '
                             f'needs full chunks of {config.chunk_size}')
        self.last_base_chunk = base_chunk
        batch = observation_batch_from(obs, base_chunk, config,
                                       getattr(self.base, 'last_features', None))
        with torch.no_grad():
            chunk = compose(batch[BASE], self.actor(batch), config)
            if self.best_of_k > 1:
                noise = torch.randn((self.best_of_k - 1, *chunk.shape[1:]),
                                    generator=self.generator) * config.candidate_noise
                candidates = torch.cat(
                    [chunk, torch.clamp(chunk + noise, config.action_low, config.action_high)])
                index, scores = best_of_k(self.critic, batch, candidates)
                chunk = candidates[index:index + 1]
                self.last_q = float(scores[index])
        action = chunk[0].numpy().astype(np.float32)
        if self.exploration_noise > 0:
            # One offset per chunk: correlated exploration moves the arm measurably further
            # than independent per-step noise, which the arm's dynamics average away.
            offset = self.rng.normal(0.0, self.exploration_noise, (1, self.action_dim))
            action = np.clip(action + offset, config.action_low,
                             config.action_high).astype(np.float32)
        return action
