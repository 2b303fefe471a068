"""Which frames a window holds: the one definition shared by training, offline and live inference.

All windows are oldest-first and end at the current frame; indices before the episode start are
clamped to frame 0, so early windows repeat the first frame instead of needing padding.
"""

import numpy as np


def stage_window(t: int, past_frames: int, gap: int) -> np.ndarray:
    """Stage estimator window: ``past_frames`` frames at ``gap`` before ``t``, then ``t``."""
    offsets = np.arange(past_frames, -1, -1) * gap
    return np.maximum(t - offsets, 0)


def value_window(t: int, past_frames: int, gap: int) -> np.ndarray:
    """Value decoder window: episode-start frame, ``past_frames`` past frames at ``gap``, ``t``."""
    return np.concatenate([[0], stage_window(t, past_frames, gap)])


def rewind_value_window(peak: int, t: int, past_frames: int, gap: int) -> np.ndarray:
    """Return a value window over a clip played forward to ``peak`` and then backwards to ``t``.

    Rewind augmentation: the window looks like an episode that got to ``peak`` and then undid
    its progress, and its target is the progress of ``t``. It stops the model from inferring
    progress from how much motion the window contains, and teaches it that progress can fall.
    """
    if not 0 <= t <= peak:
        raise ValueError(f'rewind needs 0 <= t <= peak, got t={t}, peak={peak}')
    timeline = np.concatenate([np.arange(peak + 1), np.arange(peak - 1, t - 1, -1)])
    positions = value_window(len(timeline) - 1, past_frames, gap)
    return timeline[positions]


def all_stage_windows(length: int, past_frames: int, gap: int) -> np.ndarray:
    """Stage windows of every frame of an episode: int64 [T, past_frames + 1]."""
    return np.stack([stage_window(t, past_frames, gap) for t in range(length)])


def all_value_windows(length: int, past_frames: int, gap: int) -> np.ndarray:
    """Value windows of every frame of an episode: int64 [T, past_frames + 2]."""
    return np.stack([value_window(t, past_frames, gap) for t in range(length)])
