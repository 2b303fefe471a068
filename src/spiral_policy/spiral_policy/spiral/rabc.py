"""RA-BC: reward-aligned behaviour cloning of executed rollout actions, weighted by progress gain.

Each chunk is cloned with weight ``clip(gain / kappa, 0, 1)``, where ``gain`` is the progress the
reward model saw during the chunk: chunks that moved the task forward are imitated, stalls and
regressions are ignored. It trains the same residual head as SPIRAL, so both methods deploy the
same way and compare on equal terms.
"""

import numpy as np
import torch

from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.residual import compose, ResidualActor
from spiral_policy.spiral.transitions import observation_batch


def rabc_weights(progress_gain: np.ndarray | torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-chunk BC weights in [0, 1] from progress gains."""
    if kappa <= 0:
        raise ValueError(f'kappa must be > 0, got {kappa}')
    gain = torch.as_tensor(progress_gain, dtype=torch.float32)
    return torch.clamp(gain / kappa, 0.0, 1.0)


def rabc_loss(actor: ResidualActor, batch: dict[str, torch.Tensor], executed: torch.Tensor,
              weights: torch.Tensor, config: SpiralConfig) -> torch.Tensor:
    """Weighted mean squared error between base + residual and the executed chunk."""
    predicted = compose(batch['base'].float(), actor(batch), config)
    per_chunk = (predicted - executed).pow(2).mean(dim=(1, 2))
    return (weights * per_chunk).sum() / weights.sum().clamp_min(1e-6)


def rabc_step(actor: ResidualActor, optimizer: torch.optim.Optimizer,
              tensors: dict[str, torch.Tensor], index: torch.Tensor,
              config: SpiralConfig) -> float:
    """One RA-BC gradient step on rows ``index`` of a transition buffer; returns the loss."""
    batch = observation_batch(tensors, index)
    weights = rabc_weights(tensors['progress_gain'][index], config.rabc_kappa)
    loss = rabc_loss(actor, batch, tensors['actions'][index], weights, config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
