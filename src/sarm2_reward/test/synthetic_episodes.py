"""Small rendered episodes with known primitives, for reward-model tests (no simulator needed).

A coloured square moves to a target (``reach``), turns green while it is grasped (``pick_grab``)
and carries it to a goal (``place``). Failed episodes stop part-way. The joint state is the
square's position plus noise, padded to 9 values like the simulated arm's.
"""

import numpy as np
import pytest
from sarm2_common.episode import Episode
from sarm2_common.vocabulary import primitive_id
import torch

PHASES = ('reach', 'pick_grab', 'place')


def make_episode(seed: int, size: int = 32, success: bool = True, length: int | None = None,
                 cameras: tuple[str, ...] = ('corner',), task: str = 'square-place',
                 instruction: str = 'place the square on the goal') -> Episode:
    """Render one episode; ``length`` frames (default 24..40 drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    length = length or int(rng.integers(24, 41))
    bounds = np.sort(rng.uniform(0.25, 0.75, size=2))
    progress = np.linspace(0.0, 1.0, length)
    if not success:
        progress = progress * rng.uniform(0.4, 0.8)
    phase = np.searchsorted(bounds, progress, side='right')
    start, target, goal = rng.uniform(0.15, 0.85, size=(3, 2))
    images = {c: np.zeros((length, size, size, 3), np.uint8) for c in cameras}
    joints = np.zeros((length, 9), np.float32)
    for t in range(length):
        if phase[t] == 0:
            position = start + (target - start) * progress[t] / bounds[0]
        elif phase[t] == 1:
            position = target
        else:
            position = target + (goal - target) * (progress[t] - bounds[1]) / (1 - bounds[1])
        colour = (60, 200, 60) if phase[t] >= 1 else (200, 60, 60)
        for k, camera in enumerate(cameras):
            image = images[camera][t]
            image[:] = 20 + 10 * k
            gx, gy = (goal * (size - 6)).astype(int)
            image[gy:gy + 6, gx:gx + 6] = (60, 60, 200)
            x, y = (position * (size - 5)).astype(int)
            image[y:y + 5, x:x + 5] = colour
        joints[t, :2] = position
        joints[t, 2] = float(phase[t] >= 1)
        joints[t, 3:] = rng.normal(0, 0.01, size=6)
    ids = np.array([primitive_id(PHASES[p]) for p in phase], dtype=np.int64)
    return Episode(episode_id=f'{task}-{seed}', task=task, instruction=instruction,
                   images=images, joint_positions=joints,
                   actions=np.zeros((length, 4), np.float32), primitive_ids=ids,
                   timestamps=np.arange(length) * 0.1, success=success)


def make_episodes(count: int, seed: int = 0, failures: int = 0, **kwargs) -> list[Episode]:
    """``count`` successful then ``failures`` failed episodes."""
    return [make_episode(seed + i, success=i < count, **kwargs) for i in range(count + failures)]


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest single-threaded, above all on a CPU shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
