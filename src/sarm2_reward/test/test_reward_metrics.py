"""Metric functions on hand-computed cases."""

import numpy as np
import pytest
from sarm2_reward.metrics import auroc, confusion_matrix, pairwise_accuracy, spearman, summarize
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
