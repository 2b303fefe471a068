"""In-process evaluation in worker processes: the same outcomes as in one process, errors kept."""

import pytest

from sarm2_bringup.inprocess_evaluation import EvaluationJob, run_jobs


@pytest.fixture
def tiny_vla(tmp_path):
    import torch

    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig, save_checkpoint

    torch.manual_seed(0)
    model = CompactVla(CompactVlaConfig(image_size=16, chunk_size=4, d_model=16, num_heads=2,
                                        num_layers=1, conv_channels=(8, 8), text_buckets=16))
    with torch.no_grad():           # big random actions, so episodes differ by initial state
        model.action_head.weight.mul_(50.0)
    return save_checkpoint(model.eval(), tmp_path / 'vla')


def job(vla, task, seeds, residual=None, label='base'):
    return EvaluationJob(label, task, vla, residual, tuple(seeds), max_steps=12,
                         camera='corner', image_size=16, policy_seed=0)


def test_workers_give_the_outcomes_of_one_process_in_job_order(tiny_vla):
    jobs = [job(tiny_vla, 'button-press-topdown-v3', [1, 2, 3]),
            job(tiny_vla, 'drawer-open-v3', [4, 5], label='other')]
    alone = run_jobs(jobs, workers=1)
    side_by_side = run_jobs(jobs, workers=2)
    assert [r.job for r in side_by_side] == jobs
    assert [(r.successes, r.steps) for r in side_by_side] == \
        [(r.successes, r.steps) for r in alone]
    assert [len(r.steps) for r in side_by_side] == [3, 2]
    assert all(0 < s <= 12 for r in side_by_side for s in r.steps)
    assert side_by_side[0].policy_id.startswith('compact_vla@')


def test_a_failing_job_raises_its_error(tiny_vla, tmp_path):
    jobs = [job(tiny_vla, 'button-press-topdown-v3', [1]),
            job(tiny_vla, 'drawer-open-v3', [2], residual=tmp_path / 'missing')]
    with pytest.raises(Exception, match='missing'):
        run_jobs(jobs, workers=2)
