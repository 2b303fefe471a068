"""The offline learner: critic ensemble + residual actor trained on chunk transitions.

Checkpoint layout (a directory, never pickle):

- ``config.json``: the ``SpiralConfig``
- ``actor.safetensors``: the residual actor (all deployment needs, with the critic for best-of-k)
- ``critic.safetensors``: critic ensemble, target critic and target actor (to continue training)
- ``meta.json``: method, round, base policy id, reward model ids, training logs
"""

import copy
import json
from pathlib import Path

from safetensors.torch import save_file
from sarm2_common.tensor_files import load_tensors
import torch
from tqdm import tqdm

from spiral_policy.spiral.config import SpiralConfig
from spiral_policy.spiral.critic import CriticEnsemble
from spiral_policy.spiral.rabc import rabc_step
from spiral_policy.spiral.residual import compose, ResidualActor
from spiral_policy.spiral.targets import blended_targets, td_targets
from spiral_policy.spiral.transitions import observation_batch, TransitionBuffer

METHODS = ('spiral', 'rabc')
CONFIG_FILE = 'config.json'
ACTOR_FILE = 'actor.safetensors'
CRITIC_FILE = 'critic.safetensors'
META_FILE = 'meta.json'


class SpiralLearner:
    """Holds the residual actor, the critic ensemble, their targets and optimisers."""

    def __init__(self, config: SpiralConfig, seed: int = 0):
        self.config = config
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.actor = ResidualActor(config)
        self.critic = CriticEnsemble(config)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.critic_trained = False

    def critic_targets(self, tensors: dict[str, torch.Tensor],
                       index: torch.Tensor) -> torch.Tensor:
        """Blended MC/TD targets for rows ``index`` with TD3 smoothing of the next action."""
        config = self.config
        with torch.no_grad():
            next_batch = observation_batch(tensors, tensors['next_index'][index])
            residual = self.actor_target(next_batch)
            noise = torch.randn(residual.shape, generator=self.generator) * config.target_noise
            noise = noise.clamp(-config.target_noise_clip, config.target_noise_clip)
            next_action = compose(next_batch['base'], residual + noise, config)
            next_q = self.critic_target.min_q(next_batch, next_action)
            td = td_targets(tensors['chunk_reward'][index], tensors['discount'][index],
                            tensors['done'][index], next_q)
            return blended_targets(tensors['mc_return'][index], td, config.mc_alpha)

    def critic_step(self, tensors: dict[str, torch.Tensor], index: torch.Tensor) -> float:
        """One critic gradient step; every ensemble member regresses onto the same target."""
        target = self.critic_targets(tensors, index)
        q = self.critic(observation_batch(tensors, index), tensors['actions'][index])
        loss = (q - target.unsqueeze(0)).pow(2).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        self.critic_trained = True
        return loss.item()

    def actor_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``-min_j Q_j(s, base + residual) + beta * mean(residual^2)``, and the mean min-Q."""
        residual = self.actor(batch)
        q = self.critic.min_q(batch, compose(batch['base'].float(), residual, self.config))
        loss = -q.mean() + self.config.beta * residual.pow(2).mean()
        return loss, q.mean()

    def actor_step(self, tensors: dict[str, torch.Tensor], index: torch.Tensor) -> float:
        """One actor gradient step (critic weights are not updated by it)."""
        loss, _ = self.actor_loss(observation_batch(tensors, index))
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        return loss.item()

    def _update_targets(self):
        tau = self.config.polyak_tau
        with torch.no_grad():
            for online, target in ((self.actor, self.actor_target),
                                   (self.critic, self.critic_target)):
                for p, p_target in zip(online.parameters(), target.parameters()):
                    p_target.lerp_(p, tau)

    def train(self, buffer: TransitionBuffer, method: str = 'spiral', updates: int | None = None,
              progress: bool = False) -> dict:
        """Run ``updates`` gradient steps of ``method`` on ``buffer``; return summary logs."""
        if method not in METHODS:
            raise ValueError(f'unknown method {method!r}; choose from {METHODS}')
        if len(buffer) == 0:
            raise ValueError('empty transition buffer')
        updates = self.config.updates if updates is None else updates
        tensors = buffer.tensors()
        batch_size = min(self.config.batch_size, len(buffer))
        critic_losses, actor_losses = [], []
        steps = tqdm(range(updates), desc=f'{method} update', disable=not progress, unit='step')
        for step in steps:
            index = torch.randint(len(buffer), (batch_size,), generator=self.generator)
            if method == 'rabc':
                actor_losses.append(rabc_step(self.actor, self.actor_optimizer, tensors, index,
                                              self.config))
                continue
            critic_losses.append(self.critic_step(tensors, index))
            if step % self.config.actor_delay == 0:
                actor_losses.append(self.actor_step(tensors, index))
            self._update_targets()
        return {
            'method': method,
            'updates': updates,
            'transitions': len(buffer),
            'final_critic_loss': _tail_mean(critic_losses),
            'final_actor_loss': _tail_mean(actor_losses),
        }

    def save(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write the checkpoint directory (see module docstring); return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(self.config.to_json())
        save_file(_contiguous(self.actor.state_dict()), str(directory / ACTOR_FILE))
        critic_state = {f'critic.{k}': v for k, v in self.critic.state_dict().items()}
        critic_state.update({f'critic_target.{k}': v
                             for k, v in self.critic_target.state_dict().items()})
        critic_state.update({f'actor_target.{k}': v
                             for k, v in self.actor_target.state_dict().items()})
        save_file(_contiguous(critic_state), str(directory / CRITIC_FILE))
        meta = dict(metadata or {})
        meta['critic_trained'] = self.critic_trained
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, seed: int = 0) -> 'SpiralLearner':
        """Load a checkpoint directory written by ``save``; errors name the file and mismatch."""
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f'{config_path} not found: not a SPIRAL residual checkpoint')
        learner = cls(SpiralConfig.load(config_path), seed=seed)
        _load_into(learner.actor, load_tensors(directory / ACTOR_FILE), directory / ACTOR_FILE)
        critic_path = directory / CRITIC_FILE
        if critic_path.is_file():
            state = load_tensors(critic_path)
            for prefix, module in (('critic.', learner.critic),
                                   ('critic_target.', learner.critic_target),
                                   ('actor_target.', learner.actor_target)):
                part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                _load_into(module, part, critic_path)
        learner.critic_trained = read_metadata(directory).get('critic_trained', False)
        return learner


def read_metadata(directory: str | Path) -> dict:
    """Read the ``meta.json`` of a checkpoint directory ({} when absent)."""
    path = Path(directory) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _load_into(module: torch.nn.Module, state: dict, path: Path):
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f'{path} does not match the config beside it: missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}')
    module.load_state_dict(state)


def _contiguous(state: dict) -> dict:
    return {k: v.detach().contiguous() for k, v in state.items()}


def _tail_mean(values: list[float]) -> float | None:
    tail = values[-50:]
    return float(sum(tail) / len(tail)) if tail else None
