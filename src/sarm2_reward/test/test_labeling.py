"""Dense reward labeling: offline and online agree; smoothing and interpolation behave."""

import numpy as np
import pytest
from sarm2_reward.labeling import (dense_rewards, interpolate_values, OnlineRewardLabeler,
                                   smooth_values)


def test_offline_and_online_agree():
    rng = np.random.default_rng(0)
    values = np.clip(np.linspace(-1, 0, 50) + rng.normal(0, 0.05, 50), -1, 0)
    offline = dense_rewards(values, smoothing=0.6)
    labeler = OnlineRewardLabeler(0.6)
    online = [labeler.update(v) for v in values]
    np.testing.assert_allclose(online, offline, atol=1e-12)
    labeler.reset()
    assert labeler.update(values[0]) == 0.0


def test_rewards_telescope_and_smoothing_reduces_noise():
    rng = np.random.default_rng(1)
    values = np.linspace(-1, 0, 100) + rng.normal(0, 0.05, 100)
    for smoothing in (0.0, 0.5, 0.9):
        rewards = dense_rewards(values, smoothing)
        smoothed = smooth_values(values, smoothing)
        assert rewards[0] == 0.0
        assert rewards.sum() == pytest.approx(smoothed[-1] - smoothed[0])
    np.testing.assert_allclose(dense_rewards(values, 0.0)[1:], np.diff(values))
    assert dense_rewards(values, 0.8).std() < dense_rewards(values, 0.0).std()


def test_interpolation_fills_every_frame():
    filled = interpolate_values(np.array([0, 4, 8]), np.array([-1.0, -0.6, 0.0]), 10)
    np.testing.assert_allclose(filled, [-1, -0.9, -0.8, -0.7, -0.6, -0.45, -0.3, -0.15, 0, 0])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match='smoothing'):
        OnlineRewardLabeler(1.0)
    with pytest.raises(ValueError, match='NaN'):
        dense_rewards(np.array([0.0, np.nan]), 0.5)
    with pytest.raises(ValueError, match='finite'):
        OnlineRewardLabeler(0.5).update(float('inf'))
    with pytest.raises(ValueError, match='increasing'):
        interpolate_values(np.array([2, 1]), np.array([0.0, 1.0]), 4)
