"""Policy node control loop through the real nodes: does it step at its control rate.

``make demo`` and ``spiral_loop`` record rollouts with sim_node + reward_node (the demo's model
size) + policy_node as processes (``sarm2_bringup.sim_graph``). The compact VLA is cloned with one
action per simulator step, so a policy node that steps slower than the simulator executes each
action for several simulator steps: rollouts the policy was never trained for. This bench runs
RunEpisode goals through that graph (a tiny random VLA: the loop's overhead, not the model, is
measured) and reports, from the same run:

- the policy's achieved control rate (steps / episode duration) and the simulator's achieved
  rate (its diagnostics): ``policy_vs_sim`` is their ratio, 1.0 when every simulator step has
  its own action;
- the policy node's tick jitter (|tick interval - period|, p50 and p99, its diagnostics);
- the episode duration against the ideal (steps / control rate).

The last stdout line is one JSON object with those keys.

    make bench NAME=node_control_loop ARGS='--quick'
"""

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import threading

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='3 episodes of 100 steps (about 1.5 minutes on 2 cores)')
    parser.add_argument('--episodes', type=int, default=8, help='episodes (--quick: 3)')
    parser.add_argument('--max-steps', type=int, default=150, help='steps per episode '
                        '(--quick: 100)')
    parser.add_argument('--control-rate', type=float, default=20.0,
                        help='Hz, the policy and simulator rate (the demo uses 20)')
    parser.add_argument('--image-size', type=int, default=64, help='camera pixels (square)')
    parser.add_argument('--task', default='reach-v3', help='Meta-World task')
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.max_steps = 3, 100
    if args.episodes < 1 or args.max_steps < 10 or not args.control_rate > 0:
        parser.error('--episodes >= 1, --max-steps >= 10 and --control-rate > 0 are needed')
    return args


class DiagnosticsListener:
    """Keep the latest diagnostics values of every node (a spinning rclpy node in a thread)."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        rclpy.init()
        self._rclpy = rclpy
        self.node = rclpy.create_node('control_loop_bench')
        self.latest: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.latest[status.name.split(':')[0]] = {kv.key: kv.value for kv in status.values}

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._rclpy.spin_once(self.node, timeout_sec=0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.node.destroy_node()
        self._rclpy.try_shutdown()


def tiny_checkpoints(root: Path) -> tuple[Path, Path]:
    """Save the demo-size reward model and a tiny random compact VLA; return their paths."""
    import torch
    from sarm2_reward.checkpoint import save_checkpoint
    from sarm2_reward.model import Sarm2Config, Sarm2Model
    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig
    from spiral_policy.compact_vla import save_checkpoint as save_vla

    torch.manual_seed(0)
    reward = save_checkpoint(Sarm2Model(Sarm2Config()).eval(), root / 'reward')
    vla = save_vla(CompactVla(CompactVlaConfig(
        image_size=16, chunk_size=4, d_model=16, num_heads=2, num_layers=1,
        conv_channels=(8, 8), text_buckets=16)).eval(), root / 'vla')
    return reward, vla


def main(argv=None) -> int:
    args = parse_args(argv)
    from sarm2_bringup.sim_graph import join_ros_environment, ros_environment, \
        run_node_episodes, SimGraph

    env = ros_environment()
    join_ros_environment(env)
    listener = DiagnosticsListener()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            reward, vla = tiny_checkpoints(root)
            graph = SimGraph(reward_checkpoint=reward, vla_checkpoint=vla, task=args.task,
                             image_size=args.image_size, max_steps=args.max_steps,
                             control_rate=args.control_rate, env=env)
            for name in ('bags', 'logs'):
                (root / name).mkdir()
            episodes = root / 'episodes.jsonl'
            sim_rates = []

            def on_result(result):
                rate = listener.latest.get('sim_node', {}).get('achieved_sim_rate_hz')
                if rate is not None:
                    sim_rates.append(float(rate))

            run_node_episodes(graph, [(args.task, 1000 + i) for i in range(args.episodes)],
                              root / 'bags', root / 'logs', episodes, 'episodes',
                              on_result=on_result)
            results = [json.loads(line) for line in episodes.read_text().splitlines()]
            policy = dict(listener.latest.get('policy_node', {}))
    finally:
        listener.close()
    steps = np.array([r['steps'] for r in results], dtype=float)
    durations = np.array([r['duration'] for r in results], dtype=float)
    rates = steps / durations
    sim_rate = float(np.median(sim_rates)) if sim_rates else float('nan')
    summary = {
        'episodes': len(results), 'control_rate_hz': args.control_rate,
        'policy_rate_hz': round(float(np.median(rates)), 2),
        'policy_rate_min_hz': round(float(rates.min()), 2),
        'sim_rate_hz': round(sim_rate, 2),
        'policy_vs_sim': round(float(np.median(rates)) / sim_rate, 3),
        'duration_vs_ideal': round(float(np.median(durations * args.control_rate / steps)), 3),
        'jitter_p50_ms': float(policy.get('jitter_p50_ms', 'nan')),
        'jitter_p99_ms': float(policy.get('jitter_p99_ms', 'nan')),
        'inference_p50_ms': float(policy.get('inference_p50_ms', 'nan')),
        'cpus': os.cpu_count(),
    }
    print(f'policy {summary["policy_rate_hz"]} Hz (slowest episode '
          f'{summary["policy_rate_min_hz"]} Hz) vs simulator {summary["sim_rate_hz"]} Hz at a '
          f'{args.control_rate:g} Hz control rate; tick jitter p50 {summary["jitter_p50_ms"]} ms,'
          f' p99 {summary["jitter_p99_ms"]} ms', file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
