"""Dense per-step rewards from reward-model values, shared by the live node and offline relabeling.

SARM2 turns its value predictions (``v_t`` in -1..0, normalized time-to-go) into a dense reward by
smoothing consecutive values and differencing them: ``reward_t = s_t - s_{t-1}``. The smoother is
a causal exponential moving average ``s_t = a * s_{t-1} + (1 - a) * v_t`` (``s_0 = v_0``), so the
live node (``OnlineRewardLabeler``, one value at a time) and offline relabeling (``dense_rewards``,
a whole episode) produce the same numbers for the same sequence. A causal smoother is chosen over
a centred one because the node cannot see the future; the price is a lag of ``a / (1 - a)`` steps.

When values are only computed at some frames (e.g. every k-th frame to save compute),
``interpolate_values`` fills every frame linearly before labeling. Rewards telescope: their sum
over an episode is ``s_T - s_0``.

``DEFAULT_SMOOTHING`` is the one smoothing factor of the project: the reward node's
``smoothing`` parameter, ``Sarm2Backend``, offline relabelling (``Sarm2Labeler``,
``spiral_update``) and evaluation plots all default to it, so a bag relabelled offline gets the
rewards the live node published for it.
"""

import math

import numpy as np

DEFAULT_SMOOTHING = 0.5


def _check_smoothing(smoothing: float) -> float:
    smoothing = float(smoothing)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f'smoothing must be in [0, 1), got {smoothing}')
    return smoothing


def smooth_values(values: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Causal exponential moving average of ``values`` (float64 [T])."""
    smoothing = _check_smoothing(smoothing)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f'values must be one-dimensional, got shape {values.shape}')
    if not np.all(np.isfinite(values)):
        raise ValueError('values contain NaN or infinity')
    smoothed = np.empty_like(values)
    state = None
    for i, value in enumerate(values):
        state = value if state is None else smoothing * state + (1.0 - smoothing) * value
        smoothed[i] = state
    return smoothed


def dense_rewards(values: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Per-frame rewards ``s_t - s_{t-1}`` of the smoothed values; the first frame gets 0."""
    smoothed = smooth_values(values, smoothing)
    rewards = np.zeros_like(smoothed)
    rewards[1:] = np.diff(smoothed)
    return rewards


def interpolate_values(frame_indices: np.ndarray, values: np.ndarray,
                       num_frames: int) -> np.ndarray:
    """Values at every frame 0..num_frames-1, linear between the frames that have one.

    Frames before the first (after the last) labelled frame hold its value.
    """
    frame_indices = np.asarray(frame_indices, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if frame_indices.shape != values.shape or frame_indices.ndim != 1 or len(values) == 0:
        raise ValueError('frame_indices and values must be non-empty 1-D arrays of equal length, '
                         f'got {frame_indices.shape} and {values.shape}')
    if np.any(np.diff(frame_indices) <= 0):
        raise ValueError('frame_indices must be strictly increasing')
    return np.interp(np.arange(num_frames, dtype=np.float64), frame_indices, values)


class OnlineRewardLabeler:
    """The causal twin of ``dense_rewards`` for a live episode: one value in, one reward out."""

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING):
        self.smoothing = _check_smoothing(smoothing)
        self._smoothed: float | None = None

    def reset(self) -> None:
        """Start a new episode."""
        self._smoothed = None

    @property
    def smoothed_value(self) -> float | None:
        """The current smoothed value, or None before the first update."""
        return self._smoothed

    def update(self, value: float) -> float:
        """Take the newest value; return this step's reward (0 on the first step)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f'value must be finite, got {value}')
        if self._smoothed is None:
            self._smoothed = value
            return 0.0
        previous = self._smoothed
        self._smoothed = self.smoothing * previous + (1.0 - self.smoothing) * value
        return self._smoothed - previous
