"""One control step of a policy episode, ROS-free: policy -> chunk execution -> safety.

The policy node and ``bench/policy.py`` share this, so the benchmark measures the code that
drives the arm. The order inside ``ControlCore.step`` is the safety contract:

1. e-stop / watchdog gate first: a stopped or stale arm never even queries the policy;
2. the policy is queried when the chunk executor needs a chunk; the chunk's shape is checked;
3. after a query the gate is checked again at the time read *then* from the caller's clock: a
   slow query must not turn observations that went stale meanwhile into a motion command. The
   output carries the time of its last check (``StepOutput.checked_at``) and the node stamps
   the command with it, so no command is ever stamped later than its observations allow;
4. the per-step action is mapped to command units (``CommandMapping``) and filtered by the
   ``SafetyFilter``; only the filter's output leaves this module;
5. a hold caused by bad policy output drops the pending chunk, so the next step re-queries.

Actions and commands:

- ``twist``: action = (vx, vy, vz, gripper) in -1..1; linear velocity (m/s) =
  ``velocity_scale`` * action[:3] (the one place this scale is applied); gripper -1 open..1 close.
- ``joint_trajectory`` / ``joint_array``: action = joint position targets (rad), optionally
  followed by one gripper command.

``executed_action`` is the filtered command mapped back to action units, i.e. what the arm was
told to do, in the policy's own action space (what rollout learning must use).
"""

from collections.abc import Callable
from dataclasses import dataclass
import math
import time

import numpy as np

from spiral_policy.safety import COMMAND, HOLD, SafetyFilter, SafetyOutput, STOP
from spiral_policy.vla import (check_chunk, ChunkExecutor, ChunkExecutorConfig,
                               PolicyObservation, VlaPolicy)

COMMAND_INTERFACES = ('twist', 'joint_trajectory', 'joint_array')
END_SUCCESS = 'success'
END_STEP_LIMIT = 'step_limit'
END_TIME_LIMIT = 'time_limit'
END_CANCELED = 'canceled'
END_ESTOP = 'estop'
END_FAULT = 'fault'
END_SHUTDOWN = 'shutdown'          # the node was stopped (Ctrl-C, SIGTERM) mid-episode


@dataclass
class CommandMapping:
    """How policy actions become commands."""

    interface: str = 'twist'
    velocity_scale: float = 0.8     # m/s per unit action (sim: SimArm.max_linear_speed)
    num_joints: int = 0             # joint interfaces: joints commanded
    gripper: bool = True            # last action entry is a gripper command

    def __post_init__(self):
        if self.interface not in COMMAND_INTERFACES:
            raise ValueError(f'command interface {self.interface!r}; choose one of '
                             f'{COMMAND_INTERFACES}')
        if not self.velocity_scale > 0:
            raise ValueError('velocity_scale must be > 0 (m/s per unit action)')
        if self.interface != 'twist' and self.num_joints < 1:
            raise ValueError(f'{self.interface} needs num_joints >= 1 (joint_names)')

    @property
    def action_dim(self) -> int:
        base = 3 if self.interface == 'twist' else self.num_joints
        return base + int(self.gripper)


@dataclass
class StepOutput:
    """What one control step decided (the node publishes ``safety``, records the rest)."""

    safety: SafetyOutput
    base_action: np.ndarray | None      # policy action for this step (None: not queried)
    executed_action: np.ndarray | None  # filtered command in action units (None: nothing sent)
    inference_time: float | None        # s spent in select_action this step (None: no query)
    checked_at: float = 0.0             # s, caller's clock: when the gate last passed/closed


class ControlCore:
    """Per-episode control state: chunk execution, safety, action mapping."""

    def __init__(self, policy: VlaPolicy, safety: SafetyFilter, mapping: CommandMapping,
                 execution: ChunkExecutorConfig):
        if policy.action_dim != mapping.action_dim:
            raise ValueError(f'policy {policy.policy_id} outputs {policy.action_dim}-d actions; '
                             f'the {mapping.interface} interface with gripper={mapping.gripper} '
                             f'needs {mapping.action_dim}')
        self.policy = policy
        self.safety = safety
        self.mapping = mapping
        self.executor = ChunkExecutor(execution)
        self._gripper = 0.0

    def begin_episode(self, measured_joints: np.ndarray | None = None) -> None:
        """Reset policy, chunk queue and the safety filter's joint reference."""
        self.policy.reset()
        self.executor.reset()
        self.safety.begin_episode(measured_joints)
        self._gripper = 0.0

    def step(self, obs: PolicyObservation | None, ee_position: np.ndarray | None, now: float,
             dt: float, clock: Callable[[], float] | None = None) -> StepOutput:
        """Run one control period; ``obs`` None means no complete observation yet.

        ``clock`` (same time base as ``now``) is read again after a policy query to re-check
        the gate; without it ``now`` is used throughout (simulated time, tests).
        Raises whatever the policy raises (the caller ends the episode with a fault).
        """
        gate = self._gate(obs, now, ee_position, dt)
        if gate is not None:
            self.executor.reset()
            return StepOutput(gate, None, None, None, now)
        inference_time = None
        if self.executor.needs_chunk():
            started = time.perf_counter()
            chunk = self.policy.select_action(obs)
            inference_time = time.perf_counter() - started
            self.executor.add_chunk(check_chunk(chunk, self.policy.chunk_size,
                                                self.policy.action_dim))
            if clock is not None:
                now = clock()
                gate = self._gate(obs, now, ee_position, dt)
                if gate is not None:
                    self.executor.reset()
                    return StepOutput(gate, None, None, inference_time, now)
        action = self.executor.next_action()
        output = self._filter(action, obs, ee_position, now, dt)
        if output.kind != COMMAND:
            self.executor.reset()
        return StepOutput(output, action, self._executed(output), inference_time, now)

    def _gate(self, obs, now, ee_position, dt) -> SafetyOutput | None:
        if not (self.safety.estopped or self.safety.stale_streams(now)):
            if obs is None:
                return SafetyOutput(HOLD, np.zeros(0), None, ['no_observation'])
            return None
        # Gate closed: a zero request makes the filter answer with its STOP / HOLD output.
        measured = None if obs is None else obs.joint_positions
        if self.mapping.interface == 'twist':
            return self.safety.filter_cartesian(np.zeros(3), None, ee_position, now, dt)
        target = np.zeros(self.mapping.num_joints)
        return self.safety.filter_joint_positions(target, None, self._joints(measured), now, dt)

    def _joints(self, measured):
        if measured is None or len(measured) < self.mapping.num_joints:
            return None
        return measured[:self.mapping.num_joints]

    def _filter(self, action: np.ndarray, obs: PolicyObservation, ee_position, now,
                dt) -> SafetyOutput:
        gripper = action[-1] if self.mapping.gripper else None
        if self.mapping.interface == 'twist':
            velocity = action[:3].astype(np.float64) * self.mapping.velocity_scale
            return self.safety.filter_cartesian(velocity, gripper, ee_position, now, dt)
        return self.safety.filter_joint_positions(action[:self.mapping.num_joints], gripper,
                                                  self._joints(obs.joint_positions), now, dt)

    def _executed(self, output: SafetyOutput) -> np.ndarray | None:
        if output.kind == STOP or output.values.size == 0:
            return None
        if output.gripper is not None:
            self._gripper = output.gripper
        values = output.values
        if self.mapping.interface == 'twist':
            values = values / self.mapping.velocity_scale
        tail = [self._gripper] if self.mapping.gripper else []
        return np.concatenate([values, tail]).astype(np.float32)


@dataclass
class EpisodeLimits:
    """When an episode ends on its own."""

    max_steps: int = 200
    time_limit: float = 60.0            # s
    success_threshold: float = 0.9      # reward model success probability
    success_frames: int = 3             # consecutive frames at or above the threshold

    def __post_init__(self):
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f'max_steps must be an integer >= 1, got {self.max_steps!r}')
        if not (math.isfinite(self.time_limit) and self.time_limit > 0):
            raise ValueError(f'time_limit must be a finite number of seconds > 0, got '
                             f'{self.time_limit!r}')
        if not 0.0 < self.success_threshold <= 1.0:
            raise ValueError('success_threshold must be in (0, 1]')
        if self.success_frames < 1:
            raise ValueError('success_frames must be >= 1')


class SuccessDetector:
    """Reward-based success: ``frames`` consecutive rewards at or above ``threshold``.

    A single frame's spike of the success head (a glimpse that looks like the goal) is not a
    success; a run of them is. One instance per episode; feed it every reward of the episode.
    """

    def __init__(self, threshold: float, frames: int):
        self.threshold = threshold
        self.frames = frames
        self._run = 0

    def update(self, success_probability: float) -> bool:
        """Take the next frame's success probability; return True once the run is long enough."""
        if math.isfinite(success_probability) and success_probability >= self.threshold:
            self._run += 1
        else:
            self._run = 0
        return self._run >= self.frames


def observation_time(stamp: float | None, received: float, mode: str) -> float:
    """When an observation was taken, for the watchdog (seconds on the node's clock).

    ``header`` mode: the capture stamp, so a frame handled late (a busy executor) or stamped
    long ago (a stalled driver replaying old frames) is as old as it really is; a stamp ahead of
    the receive time (another clock, or a bogus stamp) cannot make a frame look fresher than
    its arrival, so it counts from arrival. ``receive`` mode (configured explicitly, for drivers
    stamping on another clock): the arrival time. A message without a header counts from arrival.
    """
    if mode == 'receive' or stamp is None:
        return received
    return min(stamp, received)


def end_reason(limits: EpisodeLimits, steps: int, elapsed: float, success: bool) -> str | None:
    """Return why the episode ends now (success first), or None to continue."""
    if success:
        return END_SUCCESS
    if steps >= limits.max_steps:
        return END_STEP_LIMIT
    if elapsed >= limits.time_limit:
        return END_TIME_LIMIT
    return None
