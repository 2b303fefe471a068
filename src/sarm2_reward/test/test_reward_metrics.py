"""Metric functions on hand-computed cases."""

import numpy as np
import pytest
from sarm2_reward.metrics import (auroc, confusion_matrix, pairwise_accuracy, spearman, summarize,
                                  summarize_rollouts)
from synthetic_episodes import make_episodes


def test_rank_metrics():
    assert spearman(np.arange(5), np.arange(5)) == pytest.approx(1.0)
    assert spearman(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)
    assert spearman(np.ones(5), np.arange(5)) == 0.0
    assert auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert auroc(np.array([0.1, 0.9, 0.5]), np.array([1, 0, 0])) == 0.0
    assert auroc(np.array([0.3]), np.array([1])) is None
    assert pairwise_accuracy(np.array([0.9, 0.4]), np.array([0.5])) == 0.5
    assert pairwise_accuracy(np.array([0.5]), np.array([0.5])) == 0.5
    np.testing.assert_array_equal(confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2),
                                  [[1, 0], [1, 1]])


def test_summary_of_perfect_and_constant_predictions():
    episodes = make_episodes(2, seed=0, failures=1, length=11)
    perfect = [{'progress': np.linspace(0, 1, 11) if e.success else np.full(11, 0.3)}
               for e in episodes]
    metrics = summarize(episodes, perfect)
    assert metrics['value_mse_macro'] == pytest.approx(0.0, abs=1e-12)
    assert metrics['voc'] == pytest.approx(1.0)
    assert metrics['auroc'] == 1.0 and metrics['pairwise_acc'] == 1.0
    constant = [{'progress': np.full(11, 0.5)} for _ in episodes]
    metrics = summarize(episodes, constant)
    assert metrics['value_mse_micro'] == pytest.approx(np.mean((np.linspace(0, 1, 11) - 0.5)
                                                               ** 2))
    assert metrics['voc'] == 0.0 and metrics['auroc'] == 0.5


def test_primitive_segments_for_report_bands():
    from sarm2_reward.evaluation_report import primitive_segments

    ids = np.array([-1, -1, 3, 3, 5, 5, 5, -1, 3])
    assert primitive_segments(ids) == [(2, 4, 3), (4, 7, 5), (8, 9, 3)]
    assert primitive_segments(np.array([], dtype=np.int64)) == []


def test_split_by_task_holds_out_successes_and_failures_of_every_task():
    from types import SimpleNamespace

    from sarm2_reward.datasets import split_by_task

    episodes = [SimpleNamespace(task=task, success=k % 3 != 0, id=f'{task}{k}')
                for task in ('a', 'b') for k in range(10)]
    train, test = split_by_task(episodes, 0.3)
    assert len(train) + len(test) == 20 and not {e.id for e in train} & {e.id for e in test}
    for task in ('a', 'b'):
        for outcome in (True, False):
            assert any(e.task == task and e.success == outcome for e in test)
            assert any(e.task == task and e.success == outcome for e in train)
    again, _ = split_by_task(episodes, 0.3)
    assert [e.id for e in again] == [e.id for e in train]


def test_rollout_summary_ranks_outcomes_three_ways():
    episodes = make_episodes(2, seed=0, failures=2, length=11)
    rising = np.linspace(0.0, 1.0, 11)
    predictions = [
        {'progress': rising, 'success_probability': np.r_[np.zeros(8), 0.9, 0.9, 0.9]},
        {'progress': 0.8 * rising, 'success_probability': np.r_[np.zeros(8), 0.7, 0.7, 0.7]},
        # a failure that ends high: its final progress beats a success, its return does not
        {'progress': np.r_[np.full(10, 0.85), 0.9], 'success_probability': np.zeros(11)},
        # a failure with a single-frame spike of the success head: not a detection
        {'progress': 0.5 * rising, 'success_probability': np.r_[np.zeros(10), 1.0]},
    ]
    metrics = summarize_rollouts(episodes, predictions, threshold=0.6, consecutive=3)
    assert metrics['rollouts'] == 4 and metrics['successes'] == 2
    assert metrics['final_auroc'] == 0.75 and metrics['final_pairwise'] == 0.75
    assert metrics['return_auroc'] == 1.0 and metrics['return_pairwise'] == 1.0
    assert metrics['success_auroc'] == 1.0 and metrics['voc'] == pytest.approx(1.0)
    assert metrics['false_positive_rate'] == 0.0 and metrics['true_positive_rate'] == 1.0
    time_only = summarize_rollouts(episodes, [{'progress': rising}] * 4)
    assert time_only['final_auroc'] == 0.5 and time_only['success_auroc'] is None
