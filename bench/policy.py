"""Base VLA benchmark: success rate per simulated task, and control-loop timing jitter.

1. Record scripted demonstrations (sarm2_sim.demonstrations; reused if already in --work-dir).
2. Train the built-in compact VLA by behaviour cloning on all tasks at once (language-conditioned).
3. Evaluate it on held-out seeds of each task through the policy node's control core
   (chunk execution + safety filter), success = simulator ground truth; Wilson 95% intervals.
4. Control-loop jitter: a real-time loop at --control-rate running the full step (render,
   policy, safety, sim) and, in the same process, an idle loop with the same pacing as the
   baseline. Jitter = |tick interval - period|.

The last stdout line is one JSON object: base_success (task -> rate), jitter_p99_ms, ...

    make bench NAME=policy ARGS='--quick'
"""

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from sarm2_common.bag_dataset import read_episodes
from sarm2_sim.demonstrations import record_demonstrations
from sarm2_sim.sim_arm import SimArm, SimArmConfig
from spiral_policy.bc_training import BcTrainingConfig, train
from spiral_policy.compact_vla import CompactVlaConfig, CompactVlaPolicy
from spiral_policy.sim_evaluation import (run_sim_episode, sim_control_core,
                                          wilson_interval)
from spiral_policy.vla import ChunkExecutorConfig, PolicyObservation

# Tasks where the base policy lands in the 30-70% band, so SPIRAL's improvement is measurable
# (reach-v3 / push-v3: ~0.1 and ~0.0; drawer-close-v3: 1.0 -- see docs/benchmarks.md).
TASKS = ('button-press-topdown-v3', 'window-close-v3', 'drawer-open-v3')
EVAL_SEED_OFFSET = 100_000     # evaluation seeds never overlap demonstration seeds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='few demos, short training, 10 episodes per task (minutes)')
    parser.add_argument('--tasks', nargs='+', default=list(TASKS))
    parser.add_argument('--demos-per-task', type=int, default=20)
    parser.add_argument('--episodes', type=int, default=50, help='evaluation episodes per task')
    parser.add_argument('--train-steps', type=int, default=1000)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--max-steps', type=int, default=150, help='steps per evaluation episode')
    parser.add_argument('--control-rate', type=float, default=20.0, help='Hz, jitter loop')
    parser.add_argument('--jitter-ticks', type=int, default=200)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--work-dir', type=Path, default=None,
                        help='keep demos and the checkpoint here (default: a temp directory)')
    parser.add_argument('--checkpoint', type=Path, default=None,
                        help='evaluate this compact VLA checkpoint instead of training one')
    args = parser.parse_args(argv)
    if args.quick:
        args.demos_per_task = min(args.demos_per_task, 10)
        args.episodes = min(args.episodes, 10)
        args.train_steps = min(args.train_steps, 400)
        args.jitter_ticks = min(args.jitter_ticks, 100)
    return args


def train_base_policy(args, work: Path) -> tuple[Path, dict]:
    demos = record_demonstrations(work / 'demos', args.tasks, args.demos_per_task,
                                  seed=args.seed, noise=0.1, failure_fraction=0.0,
                                  progress=True)
    episodes = read_episodes(demos)
    model_config = CompactVlaConfig(cameras=('corner',), image_size=64, state_dim=9,
                                    action_dim=4, chunk_size=8)
    checkpoint = work / 'compact_vla'
    _, summary = train(episodes, model_config,
                       BcTrainingConfig(steps=args.train_steps, batch_size=args.batch_size,
                                        seed=args.seed, threads=args.threads),
                       out_dir=checkpoint)
    return checkpoint, summary


def evaluate(args, policy) -> dict:
    results = {}
    for task in args.tasks:
        arm = SimArm(SimArmConfig(task=task, cameras=('corner',), image_size=64,
                                  seed=args.seed, max_steps=args.max_steps))
        core = sim_control_core(policy, arm, ('corner',))
        outcomes = [run_sim_episode(arm, core, EVAL_SEED_OFFSET + args.seed * 1000 + i,
                                    args.max_steps)
                    for i in tqdm(range(args.episodes), desc=f'eval {task}', unit='episode')]
        arm.close()
        successes = sum(o.success for o in outcomes)
        low, high = wilson_interval(successes, len(outcomes))
        results[task] = {
            'success_rate': successes / len(outcomes), 'successes': successes,
            'episodes': len(outcomes), 'wilson95': [round(low, 3), round(high, 3)],
            'mean_steps': float(np.mean([o.steps for o in outcomes])),
            'safety_interventions_per_step': float(
                sum(o.interventions for o in outcomes) / sum(o.steps for o in outcomes)),
        }
    return results


def paced_intervals(period: float, ticks: int, work) -> np.ndarray:
    """Run ``work()`` once per period on an absolute schedule; return tick intervals (s)."""
    starts = []
    deadline = time.perf_counter()
    for _ in range(ticks):
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        starts.append(time.perf_counter())
        work()
        deadline += period
    return np.diff(np.asarray(starts))


def measure_jitter(args, policy) -> dict:
    arm = SimArm(SimArmConfig(task=args.tasks[0], cameras=('corner',), image_size=64,
                              seed=args.seed))
    core = sim_control_core(policy, arm, ('corner',), ChunkExecutorConfig())
    state = {'obs': arm.reset(EVAL_SEED_OFFSET), 'step': 0}
    core.begin_episode()
    period = 1.0 / args.control_rate
    step_times = []

    def control_step():
        started = time.perf_counter()
        now = state['step'] * period
        core.safety.observe('camera/corner', now)
        core.safety.observe('joint_states', now)
        obs = state['obs']
        out = core.step(PolicyObservation(obs.images, obs.joint_positions, arm.instruction),
                        arm.end_effector_position(), now, period)
        action = out.executed_action if out.executed_action is not None else np.zeros(4)
        state['obs'], info = arm.step(action)
        state['step'] += 1
        if info.success or info.truncated:
            state['obs'] = arm.reset()
            core.begin_episode()
        step_times.append(time.perf_counter() - started)

    loaded = paced_intervals(period, args.jitter_ticks, control_step)
    idle = paced_intervals(period, args.jitter_ticks, lambda: None)
    arm.close()
    jitter = np.abs(loaded - period) * 1000.0
    idle_jitter = np.abs(idle - period) * 1000.0
    return {
        'control_rate_hz': args.control_rate, 'ticks': args.jitter_ticks,
        'jitter_p50_ms': float(np.percentile(jitter, 50)),
        'jitter_p99_ms': float(np.percentile(jitter, 99)),
        'idle_jitter_p99_ms': float(np.percentile(idle_jitter, 99)),
        'step_time_p50_ms': float(np.percentile(step_times, 50) * 1000.0),
        'step_time_p99_ms': float(np.percentile(step_times, 99) * 1000.0),
        'overruns': int(np.sum(np.asarray(step_times) > period)),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='bench_policy_') as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        summary = {}
        if args.checkpoint is None:
            checkpoint, summary = train_base_policy(args, work)
        else:
            checkpoint = args.checkpoint
        policy = CompactVlaPolicy.from_checkpoint(checkpoint)
        results = evaluate(args, policy)
        timing = measure_jitter(args, policy)
    for task, result in results.items():
        print(f'{task:>18}: {result["successes"]:3d}/{result["episodes"]} = '
              f'{result["success_rate"]:.2f}  Wilson95 {result["wilson95"]}  '
              f'mean steps {result["mean_steps"]:.0f}')
    print(f'control loop at {timing["control_rate_hz"]:.0f} Hz: jitter p50 '
          f'{timing["jitter_p50_ms"]:.2f} ms, p99 {timing["jitter_p99_ms"]:.2f} ms '
          f'(idle loop p99 {timing["idle_jitter_p99_ms"]:.2f} ms); step p99 '
          f'{timing["step_time_p99_ms"]:.1f} ms')
    record = {
        'bench': 'policy', 'quick': args.quick, 'policy_id': policy.policy_id,
        'base_success': {task: r['success_rate'] for task, r in results.items()},
        'wilson95': {task: r['wilson95'] for task, r in results.items()},
        'episodes_per_task': args.episodes,
        'jitter_p99_ms': timing['jitter_p99_ms'],
        'timing': timing, 'tasks': results,
        'training': {k: summary.get(k) for k in ('episodes', 'frames', 'final_l1', 'seconds',
                                                 'samples_per_second')},
        'seconds': time.monotonic() - started,
        # other jobs share the 2 cores: wall-clock timing means little without the load
        'load_average_1min': os.getloadavg()[0], 'cpu_count': os.cpu_count(),
    }
    print(json.dumps(record))
    return 0


if __name__ == '__main__':
    sys.exit(main())
