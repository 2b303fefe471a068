"""Helpers for multi-process ROS 2 tests: start peers as real OS processes, wait on conditions.

Peers talk over real DDS (Fast DDS on localhost, private domain set by the root conftest.py).
"""

import os
import pathlib
import signal
import subprocess
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parent
# Node parameter files (installed with sarm2_bringup; read from the source tree here).
CONFIG_DIR = REPO / 'src' / 'sarm2_bringup' / 'config'


class PeerProcess:
    """A child process (a node or a peer script) that is stopped and reaped on exit.

    Output goes to a log file so a failing test can show what the peer said.
    """

    def __init__(self, args: list[str], name: str, log_dir: pathlib.Path, env: dict | None = None):
        self.args = args
        self.name = name
        self.log_path = pathlib.Path(log_dir) / f'{name}.log'
        # Unbuffered output: a killed process's log must still show what it did.
        self.env = dict(os.environ, PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0',
                        **(env or {}))
        self.process: subprocess.Popen | None = None

    def start(self) -> 'PeerProcess':
        """Start the process (its own session, so a kill reaches its children too)."""
        self._log = open(self.log_path, 'w')
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True)
        return self

    def __enter__(self) -> 'PeerProcess':
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGINT (like Ctrl-C), escalate to SIGKILL, return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, no cleanup)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def output(self) -> str:
        """Return what the process has printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NodeLauncher:
    """Starts node console scripts for one test; stops them and prints their logs at the end."""

    def __init__(self, log_dir: pathlib.Path, log_tail: int = 20000):
        self.log_dir = pathlib.Path(log_dir)
        self.log_tail = log_tail
        self.started: list[PeerProcess] = []

    def start(self, executable, *, name: str | None = None, params_file=None,
              params=()) -> PeerProcess:
        """Run ``executable --ros-args [-r __node:=name] [--params-file f] [-p p ...]``."""
        executable = pathlib.Path(executable)
        if not executable.exists():
            raise FileNotFoundError(f'{executable} missing: run scripts/bootstrap.sh')
        args = [str(executable), '--ros-args']
        if name:
            args += ['-r', f'__node:={name}']
        if params_file is not None:
            args += ['--params-file', str(params_file)]
        for param in params:
            args += ['-p', param]
        label = f'{name or executable.name}-{len(self.started)}-{time.monotonic_ns() % 10**6}'
        process = PeerProcess(args, label, self.log_dir).start()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every started process (Ctrl-C first) and print its log for failing tests."""
        for process in self.started:
            process.stop()
            print(f'--- {process.log_path.name}\n{process.output()[-self.log_tail:]}')


def console_script(package: str, name: str) -> str:
    """Path of a colcon-installed console script (install/<pkg>/lib/<pkg>/<name>)."""
    path = REPO / 'install' / package / 'lib' / package / name
    if not path.exists():
        raise FileNotFoundError(f'{path} not found: run scripts/bootstrap.sh to build')
    return str(path)


def spin_until(node, condition, timeout: float, executor=None) -> bool:
    """Spin ``node`` until ``condition()`` is true or ``timeout`` seconds pass."""
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if executor is not None:
            executor.spin_once(timeout_sec=0.05)
        else:
            rclpy.spin_once(node, timeout_sec=0.05)
    return condition()


class BackgroundNode:
    """Spin ``node`` in a background executor and run ``loop(stop)`` in a second thread.

    For test peers that publish on their own schedule (``loop`` returns once the
    ``threading.Event`` ``stop`` is set) while their subscriptions keep being served.
    """

    def __init__(self, node, loop):
        import threading

        from rclpy.executors import MultiThreadedExecutor

        self.node = node
        self.stop = threading.Event()
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self._loop = threading.Thread(target=loop, args=(self.stop,), daemon=True)
        self._loop.start()

    def close(self) -> None:
        """Stop the loop and the executor, then destroy the node."""
        self.stop.set()
        self._loop.join(2)
        self.executor.shutdown()
        self.node.destroy_node()


def wait_until(condition, timeout: float) -> bool:
    """Poll ``condition`` (another thread spins the node) until true or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def wait_future(future, timeout: float):
    """Return the result of ``future``, completed by an executor spinning in another thread."""
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, 'timed out waiting for a ROS future'
        time.sleep(0.01)
    return future.result()


def settle_discovery() -> None:
    """Give DDS time to match the other direction of a connection one side already sees.

    wait_for_server only proves the goal service's request side is matched; a goal sent at
    once can lose its response while DDS still matches the reply side (seen on a busy host).
    """
    time.sleep(1.0)


def call_idempotent(node, client, request, timeout: float = 30.0, answer_within: float = 3.0):
    """Call an idempotent service from ``node`` (spun here) until it answers; return the answer.

    Fast DDS drops a response that the server sends before it has discovered the client's reply
    reader (it waits 100 ms, then logs "client will not receive response": ros2/ros2#1253), and
    wait_for_service only proves the request side is matched. Seen on the 2-core machine under
    load; a request whose effect does not depend on how often it arrives can simply be resent.
    """
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        future = client.call_async(request)
        rclpy.spin_until_future_complete(
            node, future, timeout_sec=max(0.0, min(answer_within, deadline - time.monotonic())))
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    raise AssertionError(f'no answer from {client.srv_name} within {timeout} s')


def unique_name(prefix: str = 'policy_node') -> str:
    """Return ``prefix`` with a random suffix, a node name no earlier test has used.

    A SIGKILLed node's DDS endpoints linger until their lease expires; a fresh name keeps a
    later test from sending its goal to that ghost.
    """
    return f'{prefix}_{uuid.uuid4().hex[:8]}'


def tiny_sim_checkpoints(root: pathlib.Path,
                         vla_image_size: int = 16) -> tuple[pathlib.Path, pathlib.Path]:
    """Tiny random SARM2 and compact VLA checkpoints that fit the simulated arm's corner camera.

    Returns (reward checkpoint, policy checkpoint), saved as directories under ``root``.
    """
    import torch

    from sarm2_reward.checkpoint import save_checkpoint as save_reward
    from sarm2_reward.model import Sarm2Config, Sarm2Model
    from spiral_policy.compact_vla import CompactVla, CompactVlaConfig
    from spiral_policy.compact_vla import save_checkpoint as save_policy

    torch.manual_seed(0)
    reward = save_reward(Sarm2Model(Sarm2Config(
        cameras=('corner',), image_size=32, cnn_channels=(4, 8), frame_embed_dim=16, d_model=16,
        n_heads=2, stage_layers=1, value_layers=1, num_experts=4, top_k=2, expert_hidden=8)),
        pathlib.Path(root) / 'sarm2')
    policy = save_policy(CompactVla(CompactVlaConfig(
        image_size=vla_image_size, chunk_size=4, d_model=16, num_heads=2, num_layers=1,
        conv_channels=(8, 8), text_buckets=16)).eval(), pathlib.Path(root) / 'vla')
    return pathlib.Path(reward), pathlib.Path(policy)


class SimExpertPolicy:
    """A VlaPolicy that asks the simulated arm's scripted expert (one-step chunks).

    For tests that need a policy which succeeds, driven through the product's control core.
    """

    policy_id = 'expert'
    action_dim = 4
    chunk_size = 1

    def __init__(self, arm):
        self.arm = arm

    def reset(self):
        """Keep no state."""

    def select_action(self, obs):
        return self.arm.expert_action()[0][None]
