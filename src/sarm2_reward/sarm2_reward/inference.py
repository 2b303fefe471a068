"""Reward-model inference: the live per-step predictor and whole-episode offline prediction.

Both build windows with ``windows.py`` from per-frame embeddings, so a live episode and offline
relabeling of the same frames give the same numbers (a test checks this). The live predictor keeps
one embedding per frame and camera: each ``step`` encodes only the new images.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, state_fingerprint
from sarm2_common.episode import Episode
from .model import Sarm2Model
from .text_embedding import make_text_embedder
from .windows import stage_window, value_window


@dataclass
class StagePrediction:
    """What the reward model says about the newest frame.

    ``success_probability`` comes from a dedicated head trained on "is the task complete at this
    frame" (the last frames of successful episodes are positives; every frame of a failed
    episode is a negative). It is separate from progress because a failed episode can get close
    to the goal (high progress) without completing it, and success detection is exactly about
    telling those apart.
    """

    primitive_probs: np.ndarray
    group_probs: np.ndarray
    value: float
    progress: float
    success_probability: float

    @property
    def primitive_id(self) -> int:
        return int(np.argmax(self.primitive_probs))

    @property
    def group_id(self) -> int:
        return int(np.argmax(self.group_probs))


def _predict_at(model: Sarm2Model, frame_emb: torch.Tensor, states: torch.Tensor,
                times: np.ndarray, instruction_emb: torch.Tensor) -> dict:
    """Run the model at frames ``times`` given embeddings [T, C, E] and states [T, S]."""
    config = model.config
    stage_index = torch.as_tensor(np.stack(
        [stage_window(int(t), config.stage_past_frames, config.stage_gap) for t in times]))
    value_index = torch.as_tensor(np.stack(
        [value_window(int(t), config.value_past_frames, config.value_gap) for t in times]))
    instruction = instruction_emb.expand(len(times), -1)
    return model.predict(frame_emb[stage_index], states[stage_index], frame_emb[value_index],
                         states[value_index], instruction)


def _check_images(images: dict, cameras: list[str]) -> None:
    missing = [c for c in cameras if c not in images]
    if missing:
        raise ValueError(f'missing camera images {missing}; the model expects {cameras}')
    for camera in cameras:
        image = images[camera]
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[-1] != 3:
            raise ValueError(f'camera {camera!r}: expected uint8 HxWx3 RGB, got '
                             f'{getattr(image, "dtype", type(image))} '
                             f'{getattr(image, "shape", "")}')


class Sarm2Predictor:
    """Holds the causal window and per-frame embedding cache of ONE live episode."""

    def __init__(self, model: Sarm2Model, device: str = 'cpu', model_id: str | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        config = model.config
        self.model_id = model_id or f'{model.model_type}-{state_fingerprint(model)}'
        self.cameras = list(config.cameras)
        self.image_size = config.image_size
        self._text = make_text_embedder(config.text_model_path)
        self._instruction_cache: dict[str, torch.Tensor] = {}
        self._instruction: torch.Tensor | None = None
        self._embeddings: list[torch.Tensor] = []
        self._states: list[torch.Tensor] = []

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = 'cpu') -> 'Sarm2Predictor':
        """Load a checkpoint directory; raises CheckpointError naming the file and mismatch."""
        model = load_checkpoint(path, device)
        if not isinstance(model, Sarm2Model):
            raise ValueError(f'{path}: holds a {model.model_type} model, not a SARM2 model')
        return cls(model, device)

    @classmethod
    def from_model(cls, model: Sarm2Model, device: str = 'cpu') -> 'Sarm2Predictor':
        """Wrap an in-memory model (e.g. a tiny random one in tests)."""
        return cls(model, device)

    @property
    def num_steps(self) -> int:
        """Frames seen since the last reset."""
        return len(self._embeddings)

    def instruction_embedding(self, instruction: str) -> torch.Tensor:
        """Return the (cached) text embedding of an instruction, [1, D]."""
        if instruction not in self._instruction_cache:
            embedding = self._text.embed([instruction])
            self._instruction_cache[instruction] = torch.as_tensor(embedding, device=self.device)
        return self._instruction_cache[instruction]

    def reset(self, instruction: str) -> None:
        """Start a new episode with this instruction; forgets all frames."""
        self._instruction = self.instruction_embedding(instruction)
        self._embeddings = []
        self._states = []

    @torch.no_grad()
    def step(self, images: dict[str, np.ndarray], joint_positions: np.ndarray) -> StagePrediction:
        """Add the newest frame (all cameras) and joint state; predict for it."""
        if self._instruction is None:
            raise RuntimeError('call reset(instruction) before step()')
        _check_images(images, self.cameras)
        state = np.asarray(joint_positions, dtype=np.float32).reshape(-1)
        if state.shape != (self.model.config.state_dim,) or not np.all(np.isfinite(state)):
            raise ValueError(f'joint_positions must be {self.model.config.state_dim} finite '
                             f'values, got shape {state.shape}')
        frames = [torch.from_numpy(np.ascontiguousarray(images[c])) for c in self.cameras]
        if len({f.shape for f in frames}) == 1:
            embedding = self.model.encode_images(torch.stack(frames).to(self.device))
        else:
            embedding = torch.cat([self.model.encode_images(f[None].to(self.device))
                                   for f in frames])
        self._embeddings.append(embedding)
        self._states.append(torch.from_numpy(state).to(self.device))
        t = len(self._embeddings) - 1
        config = self.model.config
        needed = np.union1d(stage_window(t, config.stage_past_frames, config.stage_gap),
                            value_window(t, config.value_past_frames, config.value_gap))
        # Gather only the frames the windows use, renumbered 0..len(needed)-1.
        remap = {int(frame): i for i, frame in enumerate(needed)}
        frame_emb = torch.stack([self._embeddings[int(i)] for i in needed])
        states = torch.stack([self._states[int(i)] for i in needed])
        out = self._predict_windows(frame_emb, states, t, remap)
        return StagePrediction(
            primitive_probs=out['primitive_probs'][0].cpu().numpy(),
            group_probs=out['group_probs'][0].cpu().numpy(),
            value=float(out['value'][0]), progress=float(out['progress'][0]),
            success_probability=float(out['success_probability'][0]))

    def _predict_windows(self, frame_emb, states, t, remap) -> dict:
        config = self.model.config
        stage_index = torch.tensor([[remap[int(i)] for i in stage_window(
            t, config.stage_past_frames, config.stage_gap)]])
        value_index = torch.tensor([[remap[int(i)] for i in value_window(
            t, config.value_past_frames, config.value_gap)]])
        return self.model.predict(frame_emb[stage_index], states[stage_index],
                                  frame_emb[value_index], states[value_index], self._instruction)


@torch.no_grad()
def predict_episode(model: Sarm2Model, episode: Episode, text_embedder=None,
                    batch_size: int = 256) -> dict[str, np.ndarray]:
    """Offline per-frame predictions for a whole episode, as if it were played live.

    Returns float arrays: ``primitive_probs`` [T, P], ``group_probs`` [T, G], ``progress``,
    ``value``, ``success_probability`` [T].
    """
    model.eval()
    device = next(model.parameters()).device
    text_embedder = text_embedder or make_text_embedder(model.config.text_model_path)
    instruction = torch.as_tensor(text_embedder.embed([episode.instruction]), device=device)
    frame_emb = model.encode_episode(episode, batch_size)
    states = torch.as_tensor(episode.joint_positions, dtype=torch.float32, device=device)
    length = len(episode)
    keys = ('primitive_probs', 'group_probs', 'progress', 'value', 'success_probability')
    parts: dict[str, list] = {k: [] for k in keys}
    for start in range(0, length, batch_size):
        times = np.arange(start, min(start + batch_size, length))
        out = _predict_at(model, frame_emb, states, times, instruction)
        for key in keys:
            parts[key].append(out[key].cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}
