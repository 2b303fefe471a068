"""Simulated-arm throughput: expert success per task, demo recording speed, render cost.

Measured in one process:
- expert_success: zero-noise scripted expert (with release) per catalogue task, no rendering;
- recording: ``record_demonstrations`` end to end (simulate, render, write MCAP bags), giving
  frames_per_s (frames written per second, all cameras of a frame counted once) and
  episodes_per_s;
- rendering: one 64 px camera frame with the fast settings vs MuJoCo's default settings
  (shadows, reflections, 4x multisampling), same model, same state: the speedup is a ratio.

The last stdout line is one JSON object.
"""

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time

import mujoco
from sarm2_common.bag_dataset import read_episodes
from sarm2_common.catalogue import load_catalogue, task_names
from sarm2_sim.demonstrations import record_demonstrations
from sarm2_sim.sim_arm import SimArm, SimArmConfig


def expert_success(tasks: list[str], seeds: int, max_steps: int) -> tuple[dict, float]:
    """Success rate of each task's zero-noise expert, and simulation steps per second."""
    rates, steps, seconds = {}, 0, 0.0
    for task in tasks:
        arm = SimArm(SimArmConfig(task=task, cameras=(), max_steps=max_steps))
        successes = 0
        for seed in range(seeds):
            arm.reset(seed)
            started = time.perf_counter()
            for _ in range(max_steps):
                _, info = arm.step(arm.expert_action()[0])
                if info.expert_finished:
                    break
            seconds += time.perf_counter() - started
            steps += arm.step_count
            successes += arm.success and arm.expert_finished
        rates[task] = successes / seeds
        arm.close()
    return rates, steps / seconds


def render_cost(size: int, repeats: int) -> tuple[float, float]:
    """Seconds per frame: the sim's fast renderer vs MuJoCo's defaults, same camera and state."""
    arm = SimArm(SimArmConfig(task='pick-place-v3', cameras=('corner',), image_size=size))
    arm.reset(0)
    arm.render()
    started = time.perf_counter()
    for _ in range(repeats):
        arm.render()
    fast = (time.perf_counter() - started) / repeats
    env = arm._env  # the same model and state, rendered with MuJoCo's default visual options
    env.model.vis.quality.offsamples = 4
    renderer = mujoco.Renderer(env.model, size, size)
    renderer.update_scene(env.data, camera='corner')
    renderer.render()
    started = time.perf_counter()
    for _ in range(repeats):
        renderer.update_scene(env.data, camera='corner')
        renderer.render()
    default = (time.perf_counter() - started) / repeats
    renderer.close()
    arm.close()
    return fast, default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='5 seeds per task, 3 tasks x 3 recorded episodes (~1-2 min)')
    parser.add_argument('--out', type=Path, default=None,
                        help='keep the recorded bags here (default: a temporary directory)')
    args = parser.parse_args()
    seeds = 5 if args.quick else 20
    record_tasks, record_episodes = (3, 3) if args.quick else (10, 5)

    catalogue = load_catalogue()
    tasks = task_names(catalogue)
    rates, steps_per_s = expert_success(tasks, seeds, 200)
    for task, rate in rates.items():
        stated = catalogue[task].expert_success_rate
        print(f'{task:26s} expert success {rate:.2f} (stated {stated:.2f})', file=sys.stderr)

    fast, default = render_cost(64, 50 if args.quick else 200)

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / 'demos'
        chosen = task_names(catalogue, 'train')[:record_tasks]
        started, cpu_started = time.perf_counter(), time.process_time()
        paths = record_demonstrations(out, chosen, record_episodes, seed=0, noise=0.05,
                                      failure_fraction=0.3, progress=True)
        recording = time.perf_counter() - started
        recording_cpu = time.process_time() - cpu_started
        started = time.perf_counter()
        episodes = read_episodes(out)
        reading = time.perf_counter() - started
        frames = sum(len(e) for e in episodes)
        bag_bytes = sum(f.stat().st_size for p in paths for f in p.glob('*.mcap'))

    result = {
        'tasks': len(catalogue),
        'frames_per_s': round(frames / recording, 1),
        'episodes_per_s': round(len(episodes) / recording, 3),
        # frames per second of this process's CPU time (all its threads, incl. the software
        # renderer's): less sensitive to other load on the machine than the wall-clock figure
        'frames_per_cpu_s': round(frames / recording_cpu, 1),
        'load_average_1min': round(os.getloadavg()[0], 2),
        'cpu_count': os.cpu_count(),
        'expert_success': rates,
        'expert_seeds': seeds,
        'sim_steps_per_s': round(steps_per_s, 1),
        'render_ms_fast_64px': round(1000 * fast, 2),
        'render_ms_default_64px': round(1000 * default, 2),
        'render_speedup': round(default / fast, 2),
        'recorded_episodes': len(episodes),
        'recorded_frames': frames,
        'recorded_successes': sum(e.success for e in episodes),
        'bag_kib_per_frame': round(bag_bytes / 1024 / frames, 2),
        'read_frames_per_s': round(frames / reading, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
