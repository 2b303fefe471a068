"""Chunked returns and the blended Monte-Carlo / TD critic target.

A transition is one action chunk: the policy observes frame k, emits H actions, and the next
decision happens at frame k + H. With per-step rewards r_t and per-step discount gamma:

- chunk reward      R_k  = sum_{i<H} gamma^i r_{k+i}
- chunk discount    D_k  = gamma^(number of steps in the chunk)
- Monte-Carlo return G_k = R_k + D_k G_{k+H}    (G = 0 after the last chunk)
- TD target         Y_k  = R_k + D_k (1 - done_k) min_j Q'_j(s_{k+H}, a'_{k+H})
- critic target     y_k  = alpha G_k + (1 - alpha) Y_k
"""

import numpy as np
import torch


def chunk_starts(num_steps: int, chunk_size: int) -> np.ndarray:
    """Frame indices where the policy emits a new chunk: 0, H, 2H, ... < num_steps."""
    if num_steps < 1 or chunk_size < 1:
        raise ValueError(f'need num_steps >= 1 and chunk_size >= 1, got {num_steps}, {chunk_size}')
    return np.arange(0, num_steps, chunk_size)


def chunk_rewards(step_rewards: np.ndarray, chunk_size: int,
                  gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Discounted reward and discount of every chunk, float64 [N] each (N = ceil(T / H))."""
    rewards = np.asarray(step_rewards, dtype=np.float64)
    starts = chunk_starts(len(rewards), chunk_size)
    totals = np.empty(len(starts))
    discounts = np.empty(len(starts))
    for i, start in enumerate(starts):
        segment = rewards[start:start + chunk_size]
        totals[i] = float(np.sum(segment * gamma ** np.arange(len(segment))))
        discounts[i] = gamma ** len(segment)
    return totals, discounts


def monte_carlo_returns(step_rewards: np.ndarray, chunk_size: int, gamma: float) -> np.ndarray:
    """Discounted return from every chunk start to the end of the episode, float64 [N]."""
    totals, discounts = chunk_rewards(step_rewards, chunk_size, gamma)
    returns = np.zeros(len(totals))
    following = 0.0
    for i in range(len(totals) - 1, -1, -1):
        following = totals[i] + discounts[i] * following
        returns[i] = following
    return returns


def td_targets(chunk_reward: torch.Tensor, discount: torch.Tensor, done: torch.Tensor,
               next_q: torch.Tensor) -> torch.Tensor:
    """One-chunk TD target ``R + D (1 - done) Q'(s', a')``."""
    return chunk_reward + discount * (1.0 - done) * next_q


def blended_targets(mc_return: torch.Tensor, td_target: torch.Tensor,
                    mc_alpha: float) -> torch.Tensor:
    """Blend ``alpha * G + (1 - alpha) * Y``: MC anchors the critic, TD lowers the variance."""
    return mc_alpha * mc_return + (1.0 - mc_alpha) * td_target
