"""The VLA interface every policy implements, and action-chunk execution.

A vision-language-action policy maps one observation (camera images, joint state, language
instruction) to an *action chunk*: ``float32 [chunk_size, action_dim]``, the actions for the
next ``chunk_size`` control steps. The policy node does not care which policy it drives (the
built-in compact VLA, a LeRobot checkpoint, a remote pi0 server); it only calls
``select_action`` and turns chunks into one action per control step with ``ChunkExecutor``.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

EXECUTION_MODES = ('chunk', 'ensemble')


@dataclass
class PolicyObservation:
    """One policy input: images per camera (uint8 HxWx3 RGB), joint state, instruction."""

    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    instruction: str

    def __post_init__(self):
        for camera, image in self.images.items():
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f'camera {camera!r}: expected uint8 HxWx3 RGB, '
                                 f'got {image.dtype} {image.shape}')
        self.joint_positions = np.asarray(self.joint_positions, dtype=np.float32).reshape(-1)


@runtime_checkable
class VlaPolicy(Protocol):
    """What the policy node needs from a policy."""

    policy_id: str
    action_dim: int
    chunk_size: int

    def reset(self) -> None:
        """Forget any per-episode state (call at the start of every episode)."""

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        """Return the next action chunk, float32 [chunk_size, action_dim]."""


def check_chunk(chunk, chunk_size: int, action_dim: int) -> np.ndarray:
    """Coerce a policy's output to float32 [chunk_size, action_dim] or raise ValueError.

    Values are not checked here (NaN and inf pass through): that is the safety filter's job,
    and it must see exactly what the policy produced.
    """
    array = np.asarray(chunk, dtype=np.float32)
    if array.ndim == 1 and array.shape[0] == action_dim:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != action_dim or not 1 <= array.shape[0]:
        raise ValueError(f'policy returned an action chunk of shape {array.shape}, expected '
                         f'[<= {chunk_size}, {action_dim}]')
    return array


@dataclass
class ChunkExecutorConfig:
    """How chunks become per-step actions.

    ``chunk``: execute the first ``execute_steps`` actions of each chunk, then query again
    (ACT/pi0 open-loop chunk execution). ``ensemble``: query every step and average all
    predictions made for the current step with weights ``exp(-ensemble_decay * age)``, oldest
    prediction weighted most (ACT temporal ensembling), which smooths chunk boundaries.
    """

    mode: str = 'chunk'
    execute_steps: int = 0          # 0: the whole chunk
    ensemble_decay: float = 0.01

    def __post_init__(self):
        if self.mode not in EXECUTION_MODES:
            raise ValueError(f'execution mode {self.mode!r}; choose one of {EXECUTION_MODES}')
        if self.execute_steps < 0:
            raise ValueError('execute_steps must be >= 0 (0 = whole chunk)')
        if not self.ensemble_decay >= 0.0:
            raise ValueError('ensemble_decay must be >= 0')


class ChunkExecutor:
    """Turns action chunks into one action per control step."""

    def __init__(self, config: ChunkExecutorConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Drop every pending action (new episode, fault, e-stop)."""
        self._queue: list[np.ndarray] = []
        # ensemble mode: list of (chunk, step at which it was predicted)
        self._predictions: list[tuple[np.ndarray, int]] = []
        self._step = 0

    def needs_chunk(self) -> bool:
        """Whether the policy must be queried before the next ``next_action``."""
        if self.config.mode == 'ensemble':
            return True
        return not self._queue

    def add_chunk(self, chunk: np.ndarray) -> None:
        """Accept a chunk predicted from the observation of the current step."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.config.mode == 'ensemble':
            self._predictions.append((chunk, self._step))
            return
        steps = self.config.execute_steps or len(chunk)
        self._queue = list(chunk[:steps])

    def next_action(self) -> np.ndarray:
        """Return the action for this control step and advance one step."""
        if self.config.mode == 'ensemble':
            action = self._ensembled()
        else:
            if not self._queue:
                raise RuntimeError('no action pending: add a chunk first')
            action = self._queue.pop(0)
        self._step += 1
        return action

    def _ensembled(self) -> np.ndarray:
        live = [(chunk, start) for chunk, start in self._predictions
                if self._step - start < len(chunk)]
        self._predictions = live
        if not live:
            raise RuntimeError('no action pending: add a chunk first')
        # Oldest first: ACT weights w_i = exp(-m * i) with i = 0 for the oldest prediction.
        actions = np.stack([chunk[self._step - start] for chunk, start in live])
        weights = np.exp(-self.config.ensemble_decay * np.arange(len(live)))
        # A NaN or inf in one chunk must stay visible to the safety filter (inf - inf = NaN is
        # fine: it is rejected there), so no nan-aware mean and no warnings about it here.
        with np.errstate(invalid='ignore', over='ignore'):
            return (weights[:, None] * actions).sum(0).astype(np.float32) / weights.sum()
