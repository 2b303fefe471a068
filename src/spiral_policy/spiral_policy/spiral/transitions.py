"""Chunk-level transitions built from scored rollouts, and the replay buffer they live in.

Frame convention (as in ``sarm2_common.episode``): ``actions[t]`` is issued after observing frame
t, and the labelled per-frame reward ``frame_rewards[t]`` is the value change that arrives with
frame t. The reward of action t is therefore ``frame_rewards[t + 1]``; the last action's outcome
is never observed, so its dense reward is 0; the outcome (``success_reward``) is paid on it.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.residual import BASE, IMAGES, JOINTS, pool_images
from spiral_policy.spiral.targets import chunk_rewards, chunk_starts, monte_carlo_returns


@dataclass
class Rollout:
    """One scored rollout: what the policy saw, what the base proposed and what was executed."""

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


def _pad_chunk(actions: np.ndarray, start: int, chunk_size: int) -> np.ndarray:
    """Slice the executed chunk at ``start``, edge-padded when the episode ended mid-chunk."""
    chunk = actions[start:start + chunk_size]
    if len(chunk) < chunk_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], chunk_size - len(chunk), axis=0)])
    return chunk


@dataclass
class TransitionBuffer:
    """Flat arrays of chunk transitions (N rows); ``next_index`` points at the next chunk's row."""

    images: np.ndarray        # uint8 [N, C, S, S, 3]
    joints: np.ndarray        # float32 [N, J]
    base: np.ndarray          # float32 [N, H, A]
    actions: np.ndarray       # float32 [N, H, A], executed
    chunk_reward: np.ndarray  # float32 [N]
    discount: np.ndarray      # float32 [N], gamma ** steps in the chunk
    mc_return: np.ndarray     # float32 [N]
    done: np.ndarray          # float32 [N], 1 on the last chunk of an episode
    next_index: np.ndarray    # int64 [N], self on terminal rows
    progress_gain: np.ndarray  # float32 [N], undiscounted dense reward over the chunk (RA-BC)
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
    return {IMAGES: tensors['images'][index], JOINTS: tensors['joints'][index],
            BASE: tensors['base'][index]}


def build_transitions(rollouts: list[Rollout], config: SpiralConfig) -> TransitionBuffer:
    """Turn scored rollouts into chunk transitions using ``config.reward_source`` rewards."""
    if not rollouts:
        raise ValueError('no rollouts to build transitions from')
    columns: dict[str, list[np.ndarray]] = {name: [] for name in TransitionBuffer.__annotations__}
    offset = 0
    for episode_index, rollout in enumerate(rollouts):
        starts = chunk_starts(len(rollout), config.chunk_size)
        if rollout.base_chunks.shape != (len(starts), config.chunk_size, config.action_dim):
            raise ValueError(
                f'rollout {rollout.episode_id}: base_chunks has shape {rollout.base_chunks.shape},'
                f' expected {(len(starts), config.chunk_size, config.action_dim)} (one chunk per '
                f'chunk start)')
        rewards = step_rewards(rollout, config.reward_source, config.success_reward)
        totals, discounts = chunk_rewards(rewards, config.chunk_size, config.gamma)
        dense = step_rewards(rollout, 'dense', success_reward=0.0)
        gains, _ = chunk_rewards(dense, config.chunk_size, 1.0)
        count = len(starts)
        images = pool_images({c: rollout.images[c][starts] for c in config.cameras},
                             config.cameras, config.feature_image_size)
        columns['images'].append(images)
        columns['joints'].append(np.asarray(rollout.joint_positions, np.float32)[starts])
        columns['base'].append(np.asarray(rollout.base_chunks, np.float32))
        actions = np.asarray(rollout.actions, np.float32)
        columns['actions'].append(np.stack([_pad_chunk(actions, s, config.chunk_size)
                                            for s in starts]))
        columns['chunk_reward'].append(totals.astype(np.float32))
        columns['discount'].append(discounts.astype(np.float32))
        columns['mc_return'].append(
            monte_carlo_returns(rewards, config.chunk_size, config.gamma).astype(np.float32))
        done = np.zeros(count, np.float32)
        done[-1] = 1.0
        columns['done'].append(done)
        next_index = offset + np.minimum(np.arange(count) + 1, count - 1)
        columns['next_index'].append(next_index.astype(np.int64))
        columns['progress_gain'].append(gains.astype(np.float32))
        columns['episode_index'].append(np.full(count, episode_index, np.int64))
        offset += count
    return TransitionBuffer(**{name: np.concatenate(parts) for name, parts in columns.items()})
