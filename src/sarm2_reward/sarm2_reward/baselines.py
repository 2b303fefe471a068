"""Baselines trained on the same data as SARM2.

- ``SarmV1Model``: SARM v1 style (LeRobot ``rewards/sarm``), one model per task. A causal
  transformer over the same value window (no language) classifies the task's stage and regresses
  the within-stage progress ``tau``; progress = sum of the priors of earlier stages +
  ``prior_k * tau``, with the stage priors measured on the task's successful demonstrations.
- the multi-task single-head model is ``Sarm2Model`` with ``value_head='single'`` (no MoE).
- ``TimeLinearBaseline``: progress grows linearly with time over the task's mean successful
  episode length; it sees no images at all, so it is the floor every learned model must beat.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from . import model as keys
from sarm2_common.episode import Episode
from .model import (CausalTransformer, config_from_dict, FramePreprocessing, Sarm2Config,
                    WindowTokenizer)
from .training_data import STAGE_TAU, StagePriors
from sarm2_common.vocabulary import NUM_PRIMITIVES
from .windows import value_window


@dataclass
class SarmV1Config:
    """One task's stages (primitive ids in order) and priors, plus the backbone sizes."""

    task: str
    stages: tuple[int, ...]
    priors: tuple[float, ...]
    backbone: Sarm2Config

    def __post_init__(self):
        self.stages = tuple(int(s) for s in self.stages)
        self.priors = tuple(float(p) for p in self.priors)
        if isinstance(self.backbone, dict):
            self.backbone = Sarm2Config.from_dict(self.backbone)
        if not self.stages or len(self.stages) != len(self.priors):
            raise ValueError(f'task {self.task}: need one prior per stage, got {self.stages} and '
                             f'{self.priors}')
        if any(not 0 <= s < NUM_PRIMITIVES for s in self.stages):
            raise ValueError(f'task {self.task}: stage ids {self.stages} outside the vocabulary')
        if abs(sum(self.priors) - 1.0) > 1e-4:
            raise ValueError(f'task {self.task}: priors must sum to 1, got {sum(self.priors)}')

    @classmethod
    def from_priors(cls, task: str, priors: StagePriors, backbone: Sarm2Config) -> 'SarmV1Config':
        return cls(task, priors.stages, priors.priors, backbone)

    def to_dict(self) -> dict:
        return {'task': self.task, 'stages': list(self.stages), 'priors': list(self.priors),
                'backbone': self.backbone.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> 'SarmV1Config':
        return config_from_dict(cls, data)


class SarmV1Model(FramePreprocessing):
    """Stage classifier + within-stage progress for one task."""

    model_type = 'sarm_v1'
    config_class = SarmV1Config

    def __init__(self, config: SarmV1Config, primitive_embeddings: np.ndarray | None = None):
        super().__init__()
        del primitive_embeddings  # v1 has no language input
        self.config = config
        self.window_config = backbone = config.backbone
        self._build_preprocessing()
        self.tokenizer = WindowTokenizer(self.encoder.out_dim, backbone.state_dim,
                                         len(backbone.cameras), backbone.value_window_length,
                                         backbone.d_model)
        self.transformer = CausalTransformer(backbone.d_model, backbone.n_heads,
                                             backbone.value_layers, backbone.ff_mult,
                                             backbone.dropout)
        self.stage_head = nn.Linear(backbone.d_model, len(config.stages))
        self.tau_head = nn.Linear(backbone.d_model, 1)
        to_stage = torch.full((NUM_PRIMITIVES,), -1, dtype=torch.long)
        to_stage[list(config.stages)] = torch.arange(len(config.stages))
        self.register_buffer('primitive_to_stage', to_stage)
        self.register_buffer('stage_primitives', torch.tensor(config.stages))
        priors = torch.tensor(config.priors)
        self.register_buffer('priors', priors)
        self.register_buffer('cumulative_priors', torch.cumsum(priors, 0) - priors)
        self.tokens_per_slot = len(backbone.cameras) + 1

    def _heads(self, frame_emb: torch.Tensor, state: torch.Tensor):
        tokens, slots = self.tokenizer(frame_emb, self.normalize_state(state))
        hidden = self.transformer(tokens, slots)[:, -self.tokens_per_slot:].mean(dim=1)
        return self.stage_head(hidden), self.tau_head(hidden).squeeze(-1)

    def forward(self, batch: dict):
        """Stage cross-entropy + within-stage progress MSE on frames of the task's stages."""
        index = batch[keys.VALUE_INDEX]
        stage_logits, tau_logit = self._heads(self.encode_images(batch[keys.FRAMES])[index],
                                              batch[keys.STATES][index])
        primitive = batch[keys.PRIMITIVE]
        stage = torch.where(primitive >= 0, self.primitive_to_stage[primitive.clamp(min=0)], -1)
        labelled = stage >= 0
        if not labelled.any():
            loss = stage_logits.sum() * 0.0
            return loss, {'loss': loss.detach()}
        stage_ce = functional.cross_entropy(stage_logits, stage, ignore_index=-1)
        tau_mse = ((torch.sigmoid(tau_logit) - batch[STAGE_TAU]) ** 2)[labelled].mean()
        loss = stage_ce + tau_mse
        return loss, {'loss': loss.detach(), 'stage_ce': stage_ce.detach(),
                      'tau_mse': tau_mse.detach()}

    @torch.no_grad()
    def predict_frames(self, frame_emb: torch.Tensor, states: torch.Tensor,
                       times: np.ndarray) -> dict:
        """Progress and primitive probabilities at ``times`` from per-frame embeddings."""
        backbone = self.window_config
        index = torch.as_tensor(np.stack([value_window(int(t), backbone.value_past_frames,
                                                       backbone.value_gap) for t in times]))
        stage_logits, tau_logit = self._heads(frame_emb[index], states[index])
        stage_probs = stage_logits.softmax(-1)
        stage = stage_probs.argmax(-1)
        progress = self.cumulative_priors[stage] + self.priors[stage] * torch.sigmoid(tau_logit)
        primitive_probs = torch.zeros(len(times), NUM_PRIMITIVES)
        primitive_probs[:, self.stage_primitives] = stage_probs
        return {'progress': progress, 'primitive_probs': primitive_probs}

    @torch.no_grad()
    def predict_episode(self, episode: Episode, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Per-frame ``progress`` [T] and ``primitive_probs`` [T, P] of a whole episode."""
        self.eval()
        frame_emb = self.encode_episode(episode, batch_size)
        states = torch.as_tensor(episode.joint_positions, dtype=torch.float32)
        parts = [self.predict_frames(frame_emb, states, np.arange(s, min(s + batch_size,
                                                                         len(episode))))
                 for s in range(0, len(episode), batch_size)]
        return {key: torch.cat([p[key] for p in parts]).numpy() for key in parts[0]}


class TimeLinearBaseline:
    """progress = t / (mean successful length of the task - 1), clipped to 1; no images."""

    name = 'time_linear'

    def __init__(self):
        self.lengths: dict[str, float] = {}
        self.default_length = 1.0

    def fit(self, episodes: list[Episode]) -> 'TimeLinearBaseline':
        """Measure mean successful episode length per task (and overall, for unseen tasks)."""
        per_task: dict[str, list[int]] = {}
        for episode in episodes:
            if episode.success:
                per_task.setdefault(episode.task, []).append(len(episode))
        if not per_task:
            raise ValueError('time-linear baseline needs at least one successful episode')
        self.lengths = {task: float(np.mean(v)) for task, v in per_task.items()}
        self.default_length = float(np.mean([n for v in per_task.values() for n in v]))
        return self

    def predict_episode(self, episode: Episode) -> dict[str, np.ndarray]:
        """Per-frame ``progress`` [T]."""
        length = self.lengths.get(episode.task, self.default_length)
        return {'progress': np.minimum(1.0, np.arange(len(episode)) / max(length - 1.0, 1.0))}
