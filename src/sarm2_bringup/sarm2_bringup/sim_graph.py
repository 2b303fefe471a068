"""The simulated ROS 2 graph as processes: sim_node + reward_node + policy_node, driven by goals.

Used by ``make demo`` and ``spiral_loop``. This module is ROS-free at import time: the nodes run
in their own processes (colcon-installed console scripts, each in its own process group, log
to a file) and the RunEpisode client (``sarm2_bringup.ros.demo_client``) is imported only when
episodes run.
"""

from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import random
import shutil
import signal
import subprocess

from .run_steps import (append_jsonl, link_latest, read_jsonl, RunContext, RunError,
                        select_run, stop_on_sigterm)



def console_script(package: str, name: str) -> Path:
    """Path of an installed console script (``<prefix>/lib/<package>/<name>``).

    Found through the ament index, so it works from a colcon install space (symlinked or not)
    and from a system ROS install alike; a clear error when the workspace is not built/sourced.
    """
    from ament_index_python.packages import get_package_prefix, PackageNotFoundError

    try:
        path = Path(get_package_prefix(package)) / 'lib' / package / name
    except (PackageNotFoundError, KeyError):
        path = None
    if path is None or not path.exists():
        raise RunError(f'console script {name} of {package} not found: build and source the '
                       'workspace (`make bootstrap`, then `source scripts/env.sh`)')
    return path


def config_file(name: str) -> Path:
    """Return a node parameter file installed with sarm2_bringup (its share/config)."""
    from ament_index_python.packages import get_package_share_directory, PackageNotFoundError

    try:
        path = Path(get_package_share_directory('sarm2_bringup')) / 'config' / name
    except (PackageNotFoundError, KeyError):
        raise RunError('sarm2_bringup is not installed: build and source the workspace '
                       '(`make bootstrap`, then `source scripts/env.sh`)') from None
    if not path.is_file():
        raise RunError(f'{path} not found: rebuild the workspace (`make bootstrap`)')
    return path


class NodeProcess:
    """A node in its own process group, output to a log file; stopped with SIGINT, then killed."""

    def __init__(self, executable: Path, name: str, params_file: Path | None, params: dict,
                 log_dir: Path, env: dict):
        self.name = name
        args = [str(executable), '--ros-args', '-r', f'__node:={name}']
        if params_file is not None:
            args += ['--params-file', str(params_file)]
        for key, value in params.items():
            args += ['-p', f'{key}:={value}']
        self.args = args
        self.log_path = log_dir / f'{name}.log'
        self._log = open(self.log_path, 'a')
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(env, PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0'))

    def alive(self) -> bool:
        """Say whether the process is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the node to shut down (SIGINT); kill its process group if it does not."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        """Last lines of the node's log, for error messages."""
        self._log.flush()
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


def ros_environment() -> dict:
    """Environment of the node processes (and this one): private DDS domain on localhost."""
    env = dict(os.environ)
    # A random private domain keeps the nodes from meeting other ROS graphs (or a second run)
    # on this machine; the user's choice wins when set.
    env.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(30, 99)))
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    return env


def join_ros_environment(env: dict) -> None:
    """Make this process talk on the nodes' DDS domain (call before rclpy starts)."""
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})


def resume_episode_log(out: Path) -> tuple[Path, Path, Path, list[dict]]:
    """Prepare ``out`` for node episodes; return (bags, logs, episodes file, finished records).

    Episodes finished by an interrupted attempt are kept; a bag without a result line was cut
    mid-episode and is deleted, so that episode runs again.
    """
    bags, logs = out / 'bags', out / 'logs'
    bags.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    episodes_file = out / 'episodes.jsonl'
    done = read_jsonl(episodes_file)
    # Rewrite without a torn last line (killed mid-write), atomically.
    tmp = episodes_file.with_suffix('.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in done))
    os.replace(tmp, episodes_file)
    finished = {Path(r['bag_path']).name for r in done if r['bag_path']}
    for bag in bags.iterdir():
        if bag.name not in finished:
            shutil.rmtree(bag, ignore_errors=True)
    return bags, logs, episodes_file, done


def success_row(rows: list[dict]) -> dict:
    """Successes, rate and 95% Wilson interval of episode records (or outcomes)."""
    from spiral_policy.sim_evaluation import wilson_interval

    successes = sum(bool(r['success']) for r in rows)
    low, high = wilson_interval(successes, len(rows))
    return {'successes': successes, 'episodes': len(rows),
            'rate': successes / max(1, len(rows)), 'wilson95': [low, high]}


def node_summary(records: list[dict], tasks) -> dict:
    """Per-task success row, mean live return and reward-message count of episode records.

    Also rewrites each record's ``bag_path`` relative to the step directory.
    """
    per_task = {}
    for task in tasks:
        rows = [r for r in records if r['task'] == task]
        per_task[task] = dict(success_row(rows),
                              mean_return=sum(r['episode_return'] for r in rows)
                              / max(1, len(rows)),
                              reward_messages=sum(r['reward_messages'] for r in rows))
    for record in records:
        record['bag_path'] = str(Path('bags') / Path(record['bag_path']).name)
    return per_task


SIM_GRAPH_NODES = (('sim_node', 'sarm2_sim'), ('reward_node', 'sarm2_reward'),
                   ('policy_node', 'spiral_policy'))


def sim_graph_parameters(task: str, reward_checkpoint, policy_checkpoint, bag_directory,
                         cameras=('corner',), image_size: int = 64, seed: int = 0,
                         control_rate: float = 20.0, use_sim_time: bool = False
                         ) -> dict[str, dict]:
    """Per-node parameters of the simulated graph, on top of each node's config/*.yaml.

    The one definition of the sim graph: ``sim.launch.py`` and ``SimGraph`` (make demo,
    spiral_loop) both start the three nodes with the shipped YAML files plus these values.
    The simulator steps, and the camera publishes, once per control step: the compact VLA is
    cloned from demonstrations with one action per simulator step.
    """
    cameras = list(cameras)
    rate = float(control_rate)
    sim_time = bool(use_sim_time)
    return {
        'sim_node': {'task': task, 'cameras': cameras, 'image_size': int(image_size),
                     'seed': int(seed), 'sim_rate': rate, 'camera_rate': rate,
                     'joint_state_rate': 2 * rate, 'publish_clock': sim_time,
                     'use_sim_time': sim_time},
        'reward_node': {'checkpoint': str(reward_checkpoint), 'cameras': cameras,
                        'task': task, 'autostart': True, 'torch_threads': 1,
                        'use_sim_time': sim_time},
        'policy_node': {'checkpoint': str(policy_checkpoint), 'cameras': cameras,
                        'bag_directory': str(bag_directory), 'success_source': 'sim',
                        'control_rate': rate, 'autostart': True, 'use_sim_time': sim_time},
    }


def ros_argument(value) -> str:
    """Format a parameter value for ``--ros-args -p name:=value`` (YAML syntax)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(ros_argument(v) for v in value) + ']'
    return str(value)


@dataclass
class SimGraph:
    """How to start the three nodes for a run (``sim_graph_parameters`` plus run sizes)."""

    reward_checkpoint: Path
    vla_checkpoint: Path
    task: str
    image_size: int
    max_steps: int
    control_rate: float = 20.0
    seed: int = 0
    cameras: tuple[str, ...] = ('corner',)
    env: dict = field(default_factory=dict)
    policy_params: dict = field(default_factory=dict)

    def start(self, logs: Path, bags: Path) -> list[NodeProcess]:
        """Start sim_node, reward_node and policy_node (logs in ``logs``, bags into ``bags``)."""
        parameters = sim_graph_parameters(self.task, self.reward_checkpoint,
                                          self.vla_checkpoint, bags, self.cameras,
                                          self.image_size, self.seed, self.control_rate)
        parameters['policy_node'].update(
            max_steps=self.max_steps,
            time_limit=4.0 * self.max_steps / self.control_rate + 10.0,
            start_timeout=30.0, **self.policy_params)
        nodes = []
        try:
            for name, package in SIM_GRAPH_NODES:
                nodes.append(NodeProcess(console_script(package, name), name,
                                         config_file(f'{name}.yaml'),
                                         {k: ros_argument(v)
                                          for k, v in parameters[name].items()},
                                         logs, self.env))
        except BaseException:
            for node in reversed(nodes):
                node.stop()
            raise
        return nodes


def run_node_episodes(graph: SimGraph, todo: list[tuple[str, int]], bags: Path, logs: Path,
                      episodes_file: Path, label: str, on_result=None) -> None:
    """Start the three nodes, run (task, seed) episodes as RunEpisode goals, stop the nodes.

    Each result is appended durably to ``episodes_file`` as soon as its episode ends, so an
    interruption keeps every finished episode. ``on_result(result)`` is called after each.
    """
    from tqdm import tqdm

    rate = graph.control_rate
    nodes = []
    client = None
    try:
        nodes = graph.start(logs, bags)
        from .ros.demo_client import EpisodeClient

        def alive():
            return all(node.alive() for node in nodes)

        client = EpisodeClient('/policy_node/run_episode', alive=alive)
        print(f'  nodes started (ROS_DOMAIN_ID={graph.env.get("ROS_DOMAIN_ID")}, logs in '
              f'{logs}); waiting for them to come up', flush=True)
        client.wait_ready(timeout=180.0)
        bar = tqdm(todo, desc=label, unit='episode')
        for task, seed in bar:
            result = client.run_episode(task, seed, record=True, max_steps=graph.max_steps,
                                        timeout=8.0 * graph.max_steps / rate + 60.0)
            if not result['bag_path']:
                raise RunError(f'the policy node recorded no bag for {task} seed {seed} '
                               f'(reason {result["reason"]!r})')
            append_jsonl(episodes_file, result)
            bar.set_postfix(task=task[:12], success=result['success'],
                            rewards=result['reward_messages'])
            if on_result is not None:
                on_result(result)
    except (RuntimeError, TimeoutError) as error:
        tails = '\n'.join(f'--- {n.log_path}\n{n.tail()}' for n in nodes)
        raise RunError(f'episodes failed: {error}\n{tails}') from error
    finally:
        if client is not None:
            client.close()
        for node in reversed(nodes):
            node.stop()


def open_run(runs_dir: Path, config, steps: list, fresh: bool = False,
             run: Path | None = None) -> RunContext:
    """Select (or create) the run directory and prepare this process to drive the nodes.

    ``runs_dir/latest`` points at the run unless ``run`` names it; SIGTERM stops the run like
    Ctrl-C; this process joins the nodes' private DDS domain before rclpy starts.
    """
    run_dir = select_run(runs_dir, config, steps, fresh=fresh, run=run)
    stop_on_sigterm()
    if run is None:
        link_latest(runs_dir, run_dir)
    env = ros_environment()
    join_ros_environment(env)
    return RunContext(run_dir, config, env=env)
