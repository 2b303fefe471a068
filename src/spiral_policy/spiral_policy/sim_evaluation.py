"""Run policies on the ROS-free simulated arm through the same control core as the node.

Used by ``bench/policy.py`` (base success rates) and by anything else that evaluates a policy
in simulation: every action goes through ``ControlCore`` (chunk execution + ``SafetyFilter``),
so a success here was achieved with the safety layer in the loop. Success is the simulator's
ground truth, which only evaluation code may read.
"""

from dataclasses import dataclass
import math

import numpy as np

from spiral_policy.episode_runner import CommandMapping, ControlCore
from spiral_policy.safety import SafetyConfig, SafetyFilter
from spiral_policy.vla import ChunkExecutorConfig, PolicyObservation, VlaPolicy

# Meta-World's reachable hand box (SawyerXYZEnv hand_low / hand_high), m, world frame.
SIM_WORKSPACE_MIN = (-0.525, 0.348, -0.0525)
SIM_WORKSPACE_MAX = (0.525, 1.025, 0.7)
JOINT_STREAM = 'joint_states'


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


def run_sim_episode(arm, core: ControlCore, seed: int, max_steps: int) -> SimOutcome:
    """Run one episode to sim success or ``max_steps``; time is the simulator's clock."""
    obs = arm.reset(seed)
    core.begin_episode()
    period = arm.control_period
    interventions = 0
    for step in range(max_steps):
        now = step * period
        for camera in obs.images:
            core.safety.observe(f'camera/{camera}', now)
        core.safety.observe(JOINT_STREAM, now)
        out = core.step(PolicyObservation(obs.images, obs.joint_positions, arm.instruction),
                        arm.end_effector_position(), now, period)
        interventions += bool(out.safety.reasons)
        action = out.executed_action if out.executed_action is not None else np.zeros(4)
        obs, info = arm.step(np.asarray(action, dtype=np.float32))
        if info.success:
            return SimOutcome(True, step + 1, interventions)
    return SimOutcome(False, max_steps, interventions)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% for z=1.96)."""
    if trials <= 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
