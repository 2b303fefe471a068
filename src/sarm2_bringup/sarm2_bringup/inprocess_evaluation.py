"""Evaluate policies in-process on the simulated arm, one process per (task, policy) pair.

Each evaluation is a long CPU-bound run (MuJoCo rendering + the VLA's forward pass, one torch
thread); they are independent, so they run side by side on the machine's cores instead of one
after the other. Every job builds its own arm and loads its own policy from checkpoints, and an
episode's outcome depends only on its initial-state seed, so the numbers are the same whatever
the number of workers.
"""

from dataclasses import dataclass
from pathlib import Path

from .process_pool import run_in_processes


@dataclass(frozen=True)
class EvaluationJob:
    """One policy on one task: the base VLA, plus a residual when ``residual`` is set."""

    label: str                    # e.g. 'base' or 'improved'
    task: str
    vla_checkpoint: Path
    residual_checkpoint: Path | None
    seeds: tuple[int, ...]        # initial-state seeds, one episode each
    max_steps: int
    camera: str
    image_size: int
    policy_seed: int


@dataclass(frozen=True)
class EvaluationResult:
    job: EvaluationJob
    successes: tuple[bool, ...]
    steps: tuple[int, ...]
    policy_id: str


def run_job(job: EvaluationJob, progress) -> EvaluationResult:
    """Run ``job``'s episodes in this process; put 1 on ``progress`` after each episode."""
    import torch

    from sarm2_sim.sim_arm import SimArm, SimArmConfig
    from spiral_policy.compact_vla import CompactVlaPolicy
    from spiral_policy.sim_evaluation import run_sim_episode, sim_control_core
    from spiral_policy.spiral.residual_policy import ResidualPolicy

    # One thread per job: the jobs themselves fill the cores.
    torch.set_num_threads(1)
    policy = CompactVlaPolicy.from_checkpoint(job.vla_checkpoint)
    if job.residual_checkpoint is not None:
        policy = ResidualPolicy.from_checkpoint(job.residual_checkpoint, policy,
                                                seed=job.policy_seed)
    arm = SimArm(SimArmConfig(task=job.task, cameras=(job.camera,), image_size=job.image_size,
                              seed=job.policy_seed, max_steps=job.max_steps))
    successes, steps = [], []
    try:
        core = sim_control_core(policy, arm, (job.camera,))
        for seed in job.seeds:
            outcome = run_sim_episode(arm, core, seed, job.max_steps)
            successes.append(bool(outcome.success))
            steps.append(int(outcome.steps))
            progress.put(1)
    finally:
        arm.close()
    return EvaluationResult(job, tuple(successes), tuple(steps), policy.policy_id)


def run_jobs(jobs: list[EvaluationJob], workers: int | None = None,
             desc: str = 'in-process evaluation') -> list[EvaluationResult]:
    """Run ``jobs`` on up to ``workers`` processes (default: one per core); results in order.

    A job that fails raises its error here, after the jobs not yet started are cancelled.
    """
    return run_in_processes(run_job, jobs, sum(len(j.seeds) for j in jobs), desc, workers)
