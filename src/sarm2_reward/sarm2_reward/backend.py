"""Reward backends: what the live reward node calls for every paired frame (ROS-free).

A backend turns one time step (camera images + joint positions) of a live episode into a
``RewardEstimate``. The node only knows this interface, so other reward models (the LRM backend,
a baseline) plug in by subclassing ``RewardBackend``:

- ``reset(task, instruction)`` starts a new episode (clears windows and reward smoothing);
- ``step(images, joint_positions, stamp)`` consumes the next frame, causally, and returns the
  estimate for it. Bad inputs raise ``ValueError`` with a message saying what is wrong and leave
  the episode state untouched, so the caller can count the frame and carry on.

``Sarm2Backend`` wraps ``inference.Sarm2Predictor`` (causal windows + per-frame embedding cache)
and ``labeling.OnlineRewardLabeler`` (the same smoothing as offline relabeling).

The node picks a backend by name (its ``backend`` parameter) from ``BACKENDS``: each entry is
the import path of a factory ``f(config: RewardNodeConfig) -> RewardBackend``, imported only
when chosen, so a backend's dependencies load only where it is used.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
import importlib
from pathlib import Path
import time

import numpy as np

from .labeling import DEFAULT_SMOOTHING, OnlineRewardLabeler
from sarm2_common.vocabulary import GROUPS, PRIMITIVES


@dataclass
class RewardEstimate:
    """A backend's output for one frame.

    Probabilities are float32 in vocabulary order; ``value`` is -(normalized steps to go) in
    -1..0, ``progress`` = 1 + value in 0..1, ``reward`` the dense reward of this frame.
    """

    primitive_probs: np.ndarray
    group_probs: np.ndarray
    progress: float
    value: float
    reward: float
    success_probability: float
    model_id: str
    inference_time: float = 0.0

    @property
    def primitive_id(self) -> int:
        return int(np.argmax(self.primitive_probs)) if self.primitive_probs.size else -1

    @property
    def primitive_name(self) -> str:
        pid = self.primitive_id
        return PRIMITIVES[pid] if 0 <= pid < len(PRIMITIVES) else ''

    @property
    def primitive_confidence(self) -> float:
        return float(self.primitive_probs[self.primitive_id]) if self.primitive_probs.size else 0.0

    @property
    def group_id(self) -> int:
        return int(np.argmax(self.group_probs)) if self.group_probs.size else -1

    @property
    def group_name(self) -> str:
        gid = self.group_id
        return GROUPS[gid] if 0 <= gid < len(GROUPS) else ''


class RewardBackend(ABC):
    """A per-episode, causal reward model for live use."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Backend name and checkpoint hash, copied into every StageReward."""

    @property
    @abstractmethod
    def cameras(self) -> list[str]:
        """Camera names ``step`` expects as keys of ``images``."""

    @property
    @abstractmethod
    def state_dim(self) -> int | None:
        """Length of the joint-position vector ``step`` expects; None: any length."""

    @abstractmethod
    def reset(self, task: str, instruction: str) -> None:
        """Start a new episode of ``task`` described by ``instruction``."""

    @abstractmethod
    def step(self, images: dict[str, np.ndarray], joint_positions: np.ndarray,
             stamp: float) -> RewardEstimate:
        """Consume the next frame (uint8 RGB [H, W, 3] per camera; stamp in s) and rate it."""

    def warm_up(self) -> None:
        """Run the model once on blank input so the first real frame is not slow (optional)."""

    def close(self) -> None:
        """Free the model (the node calls it on cleanup)."""

    def diagnostics(self) -> dict[str, str]:
        """Backend-specific key/values for the node's DiagnosticArray."""
        return {}

    @property
    def fault(self) -> str:
        """Return a current problem to report as a warning (e.g. VLM unreachable); '' if none."""
        return ''


class Sarm2Backend(RewardBackend):
    """The SARM2 reward model: stage probabilities, progress, value and smoothed dense reward."""

    def __init__(self, predictor, smoothing: float = DEFAULT_SMOOTHING):
        self._predictor = predictor
        self._labeler = OnlineRewardLabeler(smoothing)
        self._last_stamp: float | None = None
        self._task = ''

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = 'cpu',
                        smoothing: float = DEFAULT_SMOOTHING,
                        stage_gap: int = 0, value_gap: int = 0) -> 'Sarm2Backend':
        """Load a checkpoint directory; raise ValueError naming the file and the problem.

        ``stage_gap`` / ``value_gap`` > 0 replace the checkpoint's window gaps (in frames). The
        window lengths are fixed by the model; the gaps are not, so a camera running at k times
        the training frame rate keeps the trained time span with k times the gaps.
        """
        from .checkpoint import load_checkpoint
        from .inference import Sarm2Predictor
        from .model import Sarm2Model

        model = load_checkpoint(path, device)
        if not isinstance(model, Sarm2Model):
            raise ValueError(f'{path}: holds a {model.model_type} model, not a SARM2 model')
        model.config = replace(model.config, stage_gap=stage_gap or model.config.stage_gap,
                               value_gap=value_gap or model.config.value_gap)
        return cls(Sarm2Predictor.from_model(model, device=device), smoothing)

    @property
    def window_config(self) -> dict[str, int]:
        """Window lengths and gaps in use (for diagnostics)."""
        config = self._predictor.model.config
        return {'stage_past_frames': config.stage_past_frames, 'stage_gap': config.stage_gap,
                'value_past_frames': config.value_past_frames, 'value_gap': config.value_gap}

    def diagnostics(self) -> dict[str, str]:
        return {key: str(value) for key, value in self.window_config.items()}

    @property
    def model_id(self) -> str:
        return self._predictor.model_id

    @property
    def cameras(self) -> list[str]:
        return list(self._predictor.cameras)

    @property
    def state_dim(self) -> int:
        return int(self._predictor.model.config.state_dim)

    @property
    def task(self) -> str:
        return self._task

    def warm_up(self) -> None:
        # The first forward pass allocates and picks kernels: pay for it before frames arrive.
        size = self._predictor.image_size
        blank = {c: np.zeros((size, size, 3), np.uint8) for c in self.cameras}
        self._predictor.reset('')
        for _ in range(2):
            self._predictor.step(blank, np.zeros(self.state_dim, np.float32))
        self._predictor.reset('')
        self._labeler.reset()
        self._last_stamp = None

    def reset(self, task: str, instruction: str) -> None:
        self._predictor.reset(instruction)
        self._labeler.reset()
        self._last_stamp = None
        self._task = task

    def step(self, images: dict[str, np.ndarray], joint_positions: np.ndarray,
             stamp: float) -> RewardEstimate:
        self._check_inputs(images, joint_positions, stamp)
        start = time.perf_counter()
        prediction = self._predictor.step(
            {camera: images[camera] for camera in self.cameras},
            np.asarray(joint_positions, dtype=np.float32))
        elapsed = time.perf_counter() - start
        self._last_stamp = stamp
        reward = self._labeler.update(prediction.value)
        return RewardEstimate(
            primitive_probs=np.asarray(prediction.primitive_probs, np.float32),
            group_probs=np.asarray(prediction.group_probs, np.float32),
            progress=float(prediction.progress), value=float(prediction.value),
            reward=float(reward), success_probability=float(prediction.success_probability),
            model_id=self.model_id, inference_time=elapsed)

    def _check_inputs(self, images, joint_positions, stamp) -> None:
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ValueError(f'missing camera image(s) {missing}; the model needs {self.cameras}')
        for camera in self.cameras:
            image = images[camera]
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
                    or image.shape[0] == 0 or image.shape[1] == 0:
                raise ValueError(f'camera {camera!r}: expected uint8 RGB [H, W, 3], got '
                                 f'{image.dtype} {image.shape}')
        joints = np.asarray(joint_positions, dtype=np.float64)
        if joints.shape != (self.state_dim,):
            raise ValueError(f'joint positions have shape {joints.shape}, the model expects '
                             f'({self.state_dim},)')
        if not np.all(np.isfinite(joints)):
            raise ValueError('joint positions contain NaN or infinity')
        if self._last_stamp is not None and stamp < self._last_stamp:
            raise ValueError(f'stamp {stamp:.6f} s is before the previous frame '
                             f'({self._last_stamp:.6f} s) of this episode')



def sarm2_backend_from_config(config) -> Sarm2Backend:
    """Build the SARM2 backend from the reward node's configuration (``RewardNodeConfig``)."""
    if not config.checkpoint:
        raise ValueError('the checkpoint parameter is empty: set it to a checkpoint directory')
    import torch

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if config.device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'device {config.device} requested but CUDA is not available; '
                         'use device:=cpu')
    return Sarm2Backend.from_checkpoint(config.checkpoint, config.device, config.smoothing,
                                        config.stage_gap, config.value_gap)


BACKENDS: dict[str, str] = {
    'sarm2': 'sarm2_reward.backend:sarm2_backend_from_config',
    'lrm': 'sarm2_reward.lrm.lrm_backend:lrm_backend_from_config',
}


def backend_from_config(config) -> RewardBackend:
    """Build the backend named by ``config.backend``; errors say what to fix."""
    if config.backend not in BACKENDS:
        raise ValueError(f'unknown reward backend {config.backend!r}; choose one of '
                         f'{", ".join(BACKENDS)}')
    module_name, factory_name = BACKENDS[config.backend].split(':')
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(config)
