"""Action-chunk execution and chunk validation."""

import numpy as np
import pytest

from spiral_policy.vla import check_chunk, ChunkExecutor, ChunkExecutorConfig, PolicyObservation


def _chunk(start, length=4, dim=2):
    return np.stack([np.full(dim, start + i, dtype=np.float32) for i in range(length)])


def test_chunk_mode_executes_then_requeries():
    executor = ChunkExecutor(ChunkExecutorConfig(mode='chunk', execute_steps=3))
    assert executor.needs_chunk()
    executor.add_chunk(_chunk(0))
    got = [executor.next_action()[0] for _ in range(3)]
    assert got == [0, 1, 2]
    assert executor.needs_chunk()
    with pytest.raises(RuntimeError):
        executor.next_action()


def test_chunk_mode_whole_chunk_by_default():
    executor = ChunkExecutor(ChunkExecutorConfig())
    executor.add_chunk(_chunk(10))
    assert [executor.next_action()[0] for _ in range(4)] == [10, 11, 12, 13]
    assert executor.needs_chunk()


def test_temporal_ensemble_averages_overlapping_predictions():
    decay = 0.5
    executor = ChunkExecutor(ChunkExecutorConfig(mode='ensemble', ensemble_decay=decay))
    executor.add_chunk(_chunk(0))          # predicts step0=0, step1=1, ...
    assert executor.next_action()[0] == 0
    executor.add_chunk(_chunk(100))        # predicts step1=100, step2=101, ...
    w = np.exp(-decay * np.arange(2))
    expected = (w[0] * 1 + w[1] * 100) / w.sum()
    assert executor.next_action()[0] == pytest.approx(expected)
    executor.reset()
    with pytest.raises(RuntimeError):
        executor.next_action()


def test_ensemble_keeps_nan_visible():
    executor = ChunkExecutor(ChunkExecutorConfig(mode='ensemble'))
    bad = _chunk(0)
    bad[0, 0] = np.nan
    executor.add_chunk(bad)
    assert np.isnan(executor.next_action()[0])


def test_check_chunk_shapes():
    assert check_chunk(np.zeros(3), 8, 3).shape == (1, 3)
    assert check_chunk(np.zeros((8, 3)), 8, 3).shape == (8, 3)
    with pytest.raises(ValueError):
        check_chunk(np.zeros((8, 4)), 8, 3)


def test_config_and_observation_validation():
    with pytest.raises(ValueError):
        ChunkExecutorConfig(mode='sometimes')
    with pytest.raises(ValueError):
        PolicyObservation({'c': np.zeros((4, 4), np.uint8)}, np.zeros(2), 'x')
