"""Run policies on the ROS-free simulated arm through the same control core as the node.

Used by ``bench/policy.py`` (base success rates) and by anything else that evaluates a policy
in simulation: every action goes through ``ControlCore`` (chunk execution + ``SafetyFilter``),
so a success here was achieved with the safety layer in the loop. Success is the simulator's
ground truth, which only evaluation code may read.
"""

from dataclasses import dataclass
import math

import numpy as np

from sarm2_common.episode import Episode, UNLABELLED
from spiral_policy.episode_runner import CommandMapping, ControlCore
from spiral_policy.safety import SafetyConfig, SafetyFilter
from spiral_policy.vla import ChunkExecutorConfig, PolicyObservation, VlaPolicy

# Meta-World's reachable hand box (SawyerXYZEnv hand_low / hand_high), m, world frame.
SIM_WORKSPACE_MIN = (-0.525, 0.348, -0.0525)
SIM_WORKSPACE_MAX = (0.525, 1.025, 0.7)
JOINT_STREAM = 'joint_states'
SIM_REWARDS_KEY = 'sim_rewards'


def sim_safety_config(max_cartesian_speed: float = 0.8,
                      watchdog_timeout: float = 0.5) -> SafetyConfig:
    """Safety limits for the simulated arm (the same values as config/policy_node.yaml)."""
    return SafetyConfig(max_cartesian_speed=max_cartesian_speed,
                        workspace_min=SIM_WORKSPACE_MIN, workspace_max=SIM_WORKSPACE_MAX,
                        enforce_workspace=True, watchdog_timeout=watchdog_timeout)


def sim_control_core(policy: VlaPolicy, arm, cameras: tuple[str, ...],
                     execution: ChunkExecutorConfig | None = None,
                     safety: SafetyConfig | None = None) -> ControlCore:
    """Build a ControlCore driving ``arm`` (a ``sarm2_sim.sim_arm.SimArm``) through twists."""
    streams = tuple(f'camera/{camera}' for camera in cameras) + (JOINT_STREAM,)
    mapping = CommandMapping('twist', velocity_scale=arm.max_linear_speed, gripper=True)
    return ControlCore(policy, SafetyFilter(safety or sim_safety_config(), streams), mapping,
                       execution or ChunkExecutorConfig())


@dataclass
class SimOutcome:
    success: bool
    steps: int
    interventions: int          # steps where the safety filter changed or blocked the action


def run_sim_episode(arm, core: ControlCore, seed: int, max_steps: int,
                    recorder: 'SimEpisodeRecorder | None' = None) -> SimOutcome:
    """Run one episode to sim success or ``max_steps``; time is the simulator's clock.

    A ``recorder`` receives every observation with the action executed after it, the
    simulator's truth of each step and the final observation.
    """
    obs = arm.reset(seed)
    core.begin_episode()
    period = arm.control_period
    interventions = 0
    success = False
    steps = 0
    while steps < max_steps and not success:
        now = steps * period
        for camera in obs.images:
            core.safety.observe(f'camera/{camera}', now)
        core.safety.observe(JOINT_STREAM, now)
        out = core.step(PolicyObservation(obs.images, obs.joint_positions, arm.instruction),
                        arm.end_effector_position(), now, period)
        interventions += bool(out.safety.reasons)
        action = out.executed_action if out.executed_action is not None else np.zeros(4)
        action = np.asarray(action, dtype=np.float32)
        previous = obs
        obs, info = arm.step(action)
        if recorder is not None:
            recorder.add(previous, action, info)
        steps += 1
        success = info.success
    if recorder is not None:
        recorder.finish(obs, success)
    return SimOutcome(success, steps, interventions)


class SimEpisodeRecorder:
    """Keeps one simulated episode in memory as an ``Episode`` (what a rollout bag would hold).

    Frame t is the observation the policy acted on and ``actions[t]`` the command executed after
    it; the final observation is the last frame, with a zero action (nothing was executed
    after it). The simulator's truth stays in ``metadata`` (``SIM_REWARDS_KEY``: Meta-World's
    shaped reward after each frame's action; evaluation and labels only, never a policy input).
    """

    def __init__(self, arm, episode_id: str, metadata: dict | None = None):
        self.arm = arm
        self.episode_id = episode_id
        self.metadata = dict(metadata or {})
        self.frames: dict[str, list[np.ndarray]] = {}
        self.joints: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.sim_rewards: list[float] = []
        self.episode: Episode | None = None

    def add(self, obs, action: np.ndarray, info) -> None:
        """Record one observation, the action executed after it and the step's truth."""
        self._frame(obs, action)
        self.sim_rewards.append(float(info.sim_reward))

    def finish(self, obs, success: bool) -> Episode:
        """Record the final observation and build the episode."""
        self._frame(obs, np.zeros(len(self.actions[0]) if self.actions else 4, np.float32))
        # The final frame has no action after it: it repeats the last step's truth.
        self.sim_rewards.append(self.sim_rewards[-1] if self.sim_rewards else 0.0)
        length = len(self.joints)
        self.episode = Episode(
            episode_id=self.episode_id, task=self.arm.config.task,
            instruction=self.arm.instruction,
            images={c: np.stack(f) for c, f in self.frames.items()},
            joint_positions=np.stack(self.joints).astype(np.float32),
            actions=np.stack(self.actions).astype(np.float32),
            primitive_ids=np.full(length, UNLABELLED, np.int64),
            timestamps=np.arange(length) * self.arm.control_period, success=bool(success),
            metadata={**self.metadata, SIM_REWARDS_KEY: np.asarray(self.sim_rewards)})
        return self.episode

    def _frame(self, obs, action: np.ndarray) -> None:
        for camera, image in obs.images.items():
            self.frames.setdefault(camera, []).append(image)
        self.joints.append(np.asarray(obs.joint_positions, np.float32))
        self.actions.append(np.asarray(action, np.float32))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% for z=1.96)."""
    if trials <= 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
