"""Ensemble of Q networks over (observation, action chunk), evaluated in one batched pass."""

import math

import torch
from torch import nn
from torch.nn import functional

from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.residual import ObservationEncoder


class EnsembleLinear(nn.Module):
    """``num_members`` independent linear layers applied to [E, B, in] in one einsum."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum('ebi,eio->ebo', x, self.weight) + self.bias


class CriticEnsemble(nn.Module):
    """``num_critics`` Q heads on a shared observation encoder; ``forward`` -> Q [E, B].

    Layer norm in every head keeps offline Q estimates from drifting far outside the data.
    """

    def __init__(self, config: SpiralConfig):
        super().__init__()
        self.config = config
        self.encoder = ObservationEncoder(config)
        members = config.num_critics
        in_dim = self.encoder.output_dim + config.chunk_flat_dim
        self.layer1 = EnsembleLinear(members, in_dim, config.hidden_dim)
        self.layer2 = EnsembleLinear(members, config.hidden_dim, config.hidden_dim)
        self.out = EnsembleLinear(members, config.hidden_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """Q of ``actions`` (float [B, H, A]) in the batch's observations, float [E, B]."""
        features = self.encoder(batch)
        x = torch.cat([features, actions.reshape(actions.shape[0], -1).float()], dim=-1)
        x = x.unsqueeze(0).expand(self.config.num_critics, -1, -1)
        x = functional.relu(functional.layer_norm(self.layer1(x), (self.config.hidden_dim,)))
        x = functional.relu(functional.layer_norm(self.layer2(x), (self.config.hidden_dim,)))
        return self.out(x).squeeze(-1)

    def min_q(self, batch: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """Pessimistic value: the minimum over the ensemble, float [B]."""
        return self(batch, actions).min(dim=0).values
