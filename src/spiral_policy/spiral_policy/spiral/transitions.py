"""Transitions built from scored rollouts, and the replay buffer they live in.

Frame convention (as in ``sarm2_common.episode``): ``actions[t]`` is issued after observing frame
t, and the labelled per-frame reward ``frame_rewards[t]`` is the value change that arrives with
frame t. The reward of action t is therefore ``frame_rewards[t + 1]``; the last action's outcome
is never observed, so its dense reward is 0; the outcome (``success_reward``) is paid on it.

A transition starts at a frame s: the observation of frame s, the base policy's chunk for it,
the H actions executed from s on (edge-padded past the end) and the window's reward; its next
state is frame s + H. With ``SpiralConfig.transitions == 'frame'`` every frame starts one (the
anchor: H times more transitions, overlapping windows); with 'chunk' only the frames where the
policy actually emitted a chunk do. Formulas in ``targets``.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.residual import BASE, FEATURES, IMAGES, JOINTS, pool_images
from spiral_policy.spiral.targets import chunk_starts, discounted_returns, terminal_returns, \
    window_rewards


@dataclass
class Rollout:
    """One scored rollout: what the policy saw, what the base proposed and what was executed.

    ``base_chunks`` holds the frozen base policy's chunk (float [N, H, A]) either for every frame
    (N = T: what per-frame transitions need) or only at the chunk starts (N = ceil(T / H));
    ``base_features`` (float [N, F], same frames) the base's observation features when the
    residual reads them (``SpiralConfig.observation`` 'base_features').
    """

    episode_id: str
    task: str
    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    actions: np.ndarray
    base_chunks: np.ndarray
    frame_rewards: np.ndarray
    success: bool
    reward_model_id: str = ''
    metadata: dict = field(default_factory=dict)
    base_features: np.ndarray | None = None

    def __post_init__(self):
        length = len(self.joint_positions)
        if length == 0:
            raise ValueError(f'rollout {self.episode_id}: no frames')
        for name in ('actions', 'frame_rewards'):
            if len(getattr(self, name)) != length:
                raise ValueError(f'rollout {self.episode_id}: {name} has '
                                 f'{len(getattr(self, name))} rows, expected {length}')
        for camera, frames in self.images.items():
            if len(frames) != length:
                raise ValueError(f'rollout {self.episode_id}: camera {camera!r} has '
                                 f'{len(frames)} frames, expected {length}')

    def __len__(self) -> int:
        return len(self.joint_positions)


def step_rewards(rollout: Rollout, reward_source: str, success_reward: float) -> np.ndarray:
    """Per-action rewards, float64 [T], with the outcome paid on the last action.

    'dense' shifts the per-frame rewards onto the actions that caused them; 'sparse' pays nothing
    else. A successful rollout adds ``success_reward`` to its last action.
    """
    rewards = np.zeros(len(rollout))
    if reward_source == 'dense':
        rewards[:-1] = np.asarray(rollout.frame_rewards, dtype=np.float64)[1:]
    elif reward_source != 'sparse':
        raise ValueError(f'unknown reward source {reward_source!r}; use dense or sparse')
    if rollout.success:
        rewards[-1] += success_reward
    return rewards


def transition_starts(rollout: Rollout,
                      config: SpiralConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames that start a transition, with the base chunk and base features of each.

    Returns int [N], float32 [N, H, A] and float32 [N, F] (F = 0 unless the residual reads the
    base's features). Raises ValueError naming the rollout when the base's outputs do not cover
    those frames.
    """
    length, horizon = len(rollout), config.chunk_size
    base = np.asarray(rollout.base_chunks, np.float32)
    if base.ndim != 3 or base.shape[1:] != (horizon, config.action_dim):
        raise ValueError(f'rollout {rollout.episode_id}: base_chunks has shape {base.shape}, '
                         f'expected [N, {horizon}, {config.action_dim}]')
    features = np.zeros((len(base), 0), np.float32)
    if config.observation == 'base_features':
        features = np.asarray(rollout.base_features if rollout.base_features is not None
                              else [], np.float32)
        if features.shape != (len(base), config.base_feature_dim):
            raise ValueError(f'rollout {rollout.episode_id}: base_features has shape '
                             f'{features.shape}, expected {(len(base), config.base_feature_dim)}'
                             ' (one row per base chunk)')
    if config.transitions == 'frame':
        if len(base) != length:
            raise ValueError(
                f'rollout {rollout.episode_id}: per-frame transitions need the base chunk of '
                f'every frame ({length}), got {len(base)} (recompute them with the base policy, '
                "or use transitions 'chunk')")
        return np.arange(length), base, features
    starts = chunk_starts(length, horizon)
    if len(base) == length:
        return starts, base[starts], features[starts]
    if len(base) != len(starts):
        raise ValueError(f'rollout {rollout.episode_id}: base_chunks has {len(base)} chunks, '
                         f'expected one per frame ({length}) or per chunk start ({len(starts)})')
    return starts, base, features


def monte_carlo_targets(rollout: Rollout, rewards: np.ndarray, config: SpiralConfig) -> np.ndarray:
    """Monte-Carlo return of every frame, float64 [T], as ``config.mc_target`` defines it."""
    if config.mc_target == 'rewards':
        return discounted_returns(rewards, config.gamma)
    terminal = 1.0 if config.mc_target == 'terminal' else float(rollout.success)
    return terminal_returns(len(rollout), config.gamma, terminal)


@dataclass
class TransitionBuffer:
    """Flat arrays of transitions (N rows); ``next_index`` points at the row of frame s + H."""

    images: np.ndarray        # uint8 [N, C, S, S, 3]
    features: np.ndarray      # float32 [N, F], the base's observation features (F may be 0)
    joints: np.ndarray        # float32 [N, J]
    base: np.ndarray          # float32 [N, H, A]
    actions: np.ndarray       # float32 [N, H, A], executed
    chunk_reward: np.ndarray  # float32 [N], discounted reward of the H-step window
    discount: np.ndarray      # float32 [N], gamma ** steps in the window
    mc_return: np.ndarray     # float32 [N]
    done: np.ndarray          # float32 [N], 1 when the window reaches the episode's end
    next_index: np.ndarray    # int64 [N], self on terminal rows
    progress_gain: np.ndarray  # float32 [N], undiscounted dense reward over the window (RA-BC)
    episode_index: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.joints)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All arrays as torch tensors (shared memory, no copy where possible)."""
        return {name: torch.from_numpy(np.ascontiguousarray(value))
                for name, value in self.__dict__.items()}


def observation_batch(tensors: dict[str, torch.Tensor],
                      index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gather the encoder inputs of rows ``index``."""
    return {IMAGES: tensors['images'][index], FEATURES: tensors['features'][index],
            JOINTS: tensors['joints'][index], BASE: tensors['base'][index]}


def build_transitions(rollouts: list[Rollout], config: SpiralConfig) -> TransitionBuffer:
    """Turn scored rollouts into transitions using ``config.reward_source`` rewards."""
    if not rollouts:
        raise ValueError('no rollouts to build transitions from')
    horizon = config.chunk_size
    columns: dict[str, list[np.ndarray]] = {name: [] for name in TransitionBuffer.__annotations__}
    offset = 0
    for episode_index, rollout in enumerate(rollouts):
        length = len(rollout)
        starts, base, features = transition_starts(rollout, config)
        rewards = step_rewards(rollout, config.reward_source, config.success_reward)
        totals, discounts = window_rewards(rewards, starts, horizon, config.gamma)
        dense = step_rewards(rollout, 'dense', success_reward=0.0)
        gains, _ = window_rewards(dense, starts, horizon, 1.0)
        frames = {c: rollout.images[c][starts] for c in config.cameras}
        columns['images'].append(pool_images(frames, config.cameras, config.feature_image_size))
        columns['features'].append(features)
        columns['joints'].append(np.asarray(rollout.joint_positions, np.float32)[starts])
        columns['base'].append(base)
        actions = np.asarray(rollout.actions, np.float32)
        # Executed actions from each start on, the last one repeated past the end.
        window = np.minimum(starts[:, None] + np.arange(horizon)[None, :], length - 1)
        columns['actions'].append(actions[window])
        columns['chunk_reward'].append(totals.astype(np.float32))
        columns['discount'].append(discounts.astype(np.float32))
        columns['mc_return'].append(
            monte_carlo_targets(rollout, rewards, config)[starts].astype(np.float32))
        done = starts + horizon >= length
        columns['done'].append(done.astype(np.float32))
        # Row of frame s + H: starts are sorted and evenly spaced, so it is H / spacing rows on.
        spacing = int(starts[1] - starts[0]) if len(starts) > 1 else horizon
        rows = np.arange(len(starts))
        columns['next_index'].append(
            (offset + np.where(done, rows, rows + horizon // spacing)).astype(np.int64))
        columns['progress_gain'].append(gains.astype(np.float32))
        columns['episode_index'].append(np.full(len(starts), episode_index, np.int64))
        offset += len(starts)
    return TransitionBuffer(**{name: np.concatenate(parts) for name, parts in columns.items()})
