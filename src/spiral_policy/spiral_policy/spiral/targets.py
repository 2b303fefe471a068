"""Windowed returns and the blended Monte-Carlo / TD critic target.

A transition starts at a frame s where the policy could emit a chunk: it observes frame s,
executes the H actions that follow, and the next decision point is frame s + H. With per-step
rewards r_t, per-step discount gamma and an episode of T steps:

- window reward     R_s  = sum_{i < min(H, T - s)} gamma^i r_{s+i}
- window discount   D_s  = gamma^(number of steps in the window)
- Monte-Carlo return, two definitions (``SpiralConfig.mc_target``):
    'rewards'   G_s = sum_{t >= s} gamma^(t - s) r_t, the observed discounted return (dense
                rewards and the outcome paid on the last action);
    'terminal'  G_s = p gamma^(T - 1 - s), the anchor's sparse terminal value (openspiral
                ``rl_data_loader``: p = 1 for every episode unless a flag uses a progress label);
                'terminal_success' sets p = 1 on success and 0 on failure.
- TD target         Y_s  = R_s + D_s (1 - done_s) min_j Q'_j(s + H, a'_{s+H})
- critic target     y_s  = alpha G_s + (1 - alpha) Y_s

Transitions start at every frame (the anchor) or only at the chunk starts 0, H, 2H, ... .
"""

import numpy as np
import torch


def chunk_starts(num_steps: int, chunk_size: int) -> np.ndarray:
    """Frame indices where the policy emits a new chunk: 0, H, 2H, ... < num_steps."""
    if num_steps < 1 or chunk_size < 1:
        raise ValueError(f'need num_steps >= 1 and chunk_size >= 1, got {num_steps}, {chunk_size}')
    return np.arange(0, num_steps, chunk_size)


def window_rewards(step_rewards: np.ndarray, starts: np.ndarray, horizon: int,
                   gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Discounted reward and discount of the ``horizon``-step window at every start, float64 [N].

    A window that runs past the end of the episode is cut there (its discount counts only the
    steps it has).
    """
    rewards = np.asarray(step_rewards, dtype=np.float64)
    weights = gamma ** np.arange(horizon)
    padded = np.concatenate([rewards, np.zeros(horizon)])
    starts = np.asarray(starts, dtype=np.int64)
    windows = padded[starts[:, None] + np.arange(horizon)[None, :]]
    lengths = np.minimum(horizon, len(rewards) - starts)
    return windows @ weights, gamma ** lengths.astype(np.float64)


def discounted_returns(step_rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Observed discounted return from every step to the end of the episode, float64 [T]."""
    rewards = np.asarray(step_rewards, dtype=np.float64)
    returns = np.zeros(len(rewards))
    following = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        following = rewards[t] + gamma * following
        returns[t] = following
    return returns


def terminal_returns(num_steps: int, gamma: float, terminal_value: float) -> np.ndarray:
    """Return the anchor's Monte-Carlo term ``p * gamma^(steps remaining)``, float64 [T]."""
    remaining = np.arange(num_steps - 1, -1, -1, dtype=np.float64)
    return terminal_value * gamma ** remaining


def td_targets(chunk_reward: torch.Tensor, discount: torch.Tensor, done: torch.Tensor,
               next_q: torch.Tensor) -> torch.Tensor:
    """One-window TD target ``R + D (1 - done) Q'(s', a')``."""
    return chunk_reward + discount * (1.0 - done) * next_q


def blended_targets(mc_return: torch.Tensor, td_target: torch.Tensor,
                    mc_alpha: float) -> torch.Tensor:
    """Blend ``alpha * G + (1 - alpha) * Y``: MC anchors the critic, TD lowers the variance."""
    return mc_alpha * mc_return + (1.0 - mc_alpha) * td_target
