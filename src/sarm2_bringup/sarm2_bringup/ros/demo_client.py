"""The demo's ROS side: send RunEpisode goals to the policy node and wait for their results.

``sarm2_bringup.demo`` stays ROS-free and imports this module only in the steps that drive the
running nodes. The client also counts the live SARM2 rewards published during each episode, so
the demo can show that the reward node really scored the rollout.
"""

import threading
import time
import uuid

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from sarm2_msgs.action import RunEpisode
from sarm2_msgs.msg import StageReward

from sarm2_common.ros.qos import RELIABLE

# wait_for_server only proves the goal request side is matched; on a busy host the reply side
# can still be matching, and a goal sent at once loses its response.
DISCOVERY_SETTLE = 1.0


def _wait(future, timeout: float, what: str, alive=None):
    deadline = time.monotonic() + timeout
    while not future.done():
        if alive is not None and not alive():
            raise RuntimeError(f'a node process died while waiting for {what}')
        if time.monotonic() > deadline:
            raise TimeoutError(f'no {what} within {timeout:.0f} s')
        time.sleep(0.02)
    return future.result()


class EpisodeClient:
    """Run episodes on a policy node over its ``~/run_episode`` action.

    ``alive`` is an optional callable returning False once a node process has exited, so a
    crashed node turns into an error at once instead of a long timeout.
    """

    def __init__(self, action_name: str = '/policy_node/run_episode',
                 reward_topic: str = '/sarm2/stage_reward', alive=None):
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        self.node = rclpy.create_node(f'demo_client_{uuid.uuid4().hex[:6]}',
                                      context=self._context)
        self.action_name = action_name
        self.reward_topic = reward_topic
        self.alive = alive
        self._client = ActionClient(self.node, RunEpisode, action_name)
        self._lock = threading.Lock()
        self._rewards: list[tuple[str, float, str]] = []
        self.node.create_subscription(StageReward, reward_topic, self._on_reward, RELIABLE)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()

    def _on_reward(self, msg) -> None:
        with self._lock:
            self._rewards.append((msg.episode_id, float(msg.progress), str(msg.primitive_name)))

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for the policy node's action server and a configured reward node."""
        deadline = time.monotonic() + timeout
        while not self._client.server_is_ready():
            if self.alive is not None and not self.alive():
                raise RuntimeError('a node process exited during startup (see its log)')
            if time.monotonic() > deadline:
                raise TimeoutError(f'no action server {self.action_name} after {timeout:.0f} s')
            time.sleep(0.1)
        while self.node.count_publishers(self.reward_topic) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f'nothing publishes {self.reward_topic} after {timeout:.0f} s')
            time.sleep(0.1)
        time.sleep(DISCOVERY_SETTLE)

    def run_episode(self, task: str, seed: int, record: bool = True, max_steps: int = 0,
                    timeout: float = 300.0) -> dict:
        """Run one episode; return the goal result and the live rewards seen during it."""
        with self._lock:
            self._rewards.clear()
        goal = RunEpisode.Goal(task=task, seed=int(seed), record=bool(record),
                               max_steps=int(max_steps))
        handle = _wait(self._client.send_goal_async(goal), 30.0, 'goal response', self.alive)
        if not handle.accepted:
            raise RuntimeError(f'the policy node rejected the goal for task {task!r} '
                               f'(see its log)')
        response = _wait(handle.get_result_async(), timeout, 'episode result', self.alive)
        result = response.result
        with self._lock:
            received = list(self._rewards)
        # Rewards still in flight from the previous episode arrive after the goal is sent; the
        # reward node stamps every message with the episode id it follows.
        own = [r for r in received if r[0] == result.episode_id]
        if own or any(r[0] for r in received):
            received = own
        progress = [r[1] for r in received]
        primitives = [r[2] for r in received]
        return {
            'task': task, 'seed': int(seed), 'success': bool(result.success),
            'episode_return': float(result.episode_return), 'steps': int(result.steps),
            'duration': float(result.duration), 'episode_id': result.episode_id,
            'bag_path': result.bag_path, 'reason': result.reason,
            'goal_status': int(response.status),
            'reward_messages': len(progress),
            'final_progress': progress[-1] if progress else None,
            'primitives_seen': sorted(set(primitives)),
            'progress_trace': progress[::max(1, len(progress) // 100)],
        }

    def close(self) -> None:
        """Stop spinning and shut this client's ROS context down."""
        self._executor.shutdown()
        self.node.destroy_node()
        if self._context.ok():
            rclpy.shutdown(context=self._context)
