"""The safety layer between any policy and the arm (ROS-free).

Every command the policy node publishes is the output of ``SafetyFilter``; the node has no
code path from a policy action to a command topic that skips it. The filter enforces, in SI
units:

- joint position limits, and a per-command step limit ``min(max_joint_step,
  max_joint_velocity * dt)`` measured from the previous *commanded* position (which is
  always inside the limits, so both bounds hold together);
- Cartesian linear speed (norm) and a workspace box: a velocity that would carry the end
  effector out of the box within one period is cut back to the box edge; outside the box only
  motion back towards it is allowed;
- gripper command range;
- non-finite policy output (NaN, inf) -> hold position, never "clip NaN to something";
- a watchdog: when any required observation stream is older than ``watchdog_timeout`` (or never
  arrived) the arm holds position;
- an e-stop that latches: from the moment it is triggered every call returns ``stop`` until
  ``reset_estop`` is called explicitly.

Holding means: joints -> the last commanded position (the measured one may be stale),
Cartesian -> zero velocity, gripper -> no new gripper command.
"""

from dataclasses import dataclass, field

import numpy as np

COMMAND = 'command'
HOLD = 'hold'
STOP = 'stop'


def _as_tuple(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass
class SafetyConfig:
    """Limits; the node maps its ``safety.*`` parameters onto this (see config/policy_node.yaml).

    Empty joint limits mean the joint interfaces are not configured (Cartesian only).
    ``max_joint_velocity`` has one entry per joint or a single entry for all joints.
    """

    joint_lower: tuple[float, ...] = ()           # rad (or m for prismatic joints)
    joint_upper: tuple[float, ...] = ()
    max_joint_velocity: tuple[float, ...] = (1.0,)  # rad/s
    max_joint_step: float = 0.05                  # rad per command, whatever the period
    max_cartesian_speed: float = 0.25             # m/s, norm of the linear velocity
    workspace_min: tuple[float, float, float] = (-1.0, -1.0, 0.0)   # m, in the command frame
    workspace_max: tuple[float, float, float] = (1.0, 1.0, 1.5)
    enforce_workspace: bool = True                # needs an end-effector position
    gripper_min: float = -1.0
    gripper_max: float = 1.0
    watchdog_timeout: float = 0.5                 # s

    def __post_init__(self):
        self.joint_lower = _as_tuple(self.joint_lower)
        self.joint_upper = _as_tuple(self.joint_upper)
        self.max_joint_velocity = _as_tuple(self.max_joint_velocity)
        self.workspace_min = _as_tuple(self.workspace_min)
        self.workspace_max = _as_tuple(self.workspace_max)
        values = (self.joint_lower + self.joint_upper + self.max_joint_velocity
                  + self.workspace_min + self.workspace_max
                  + (self.max_joint_step, self.max_cartesian_speed, self.gripper_min,
                     self.gripper_max, self.watchdog_timeout))
        if not all(np.isfinite(values)):
            raise ValueError('safety limits must be finite numbers')
        if len(self.joint_lower) != len(self.joint_upper):
            raise ValueError(f'joint_lower has {len(self.joint_lower)} entries, joint_upper '
                             f'{len(self.joint_upper)}; they must match')
        if any(lo > hi for lo, hi in zip(self.joint_lower, self.joint_upper)):
            raise ValueError('every joint_lower entry must be <= the joint_upper entry')
        if len(self.max_joint_velocity) not in (1, max(1, len(self.joint_lower))):
            raise ValueError('max_joint_velocity: one value, or one per joint')
        if min(self.max_joint_velocity) <= 0 or self.max_joint_step <= 0:
            raise ValueError('max_joint_velocity and max_joint_step must be > 0')
        if self.max_cartesian_speed <= 0:
            raise ValueError('max_cartesian_speed must be > 0')
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3:
            raise ValueError('workspace_min and workspace_max are (x, y, z)')
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ValueError('workspace_min must be < workspace_max on every axis')
        if self.gripper_min > self.gripper_max:
            raise ValueError('gripper_min must be <= gripper_max')
        if self.watchdog_timeout <= 0:
            raise ValueError('watchdog_timeout must be > 0')

    @property
    def num_joints(self) -> int:
        return len(self.joint_lower)


@dataclass
class SafetyOutput:
    """What to publish. ``kind``: COMMAND (possibly modified), HOLD or STOP.

    ``values``: joint position targets, or the linear velocity (m/s, 3) for Cartesian; empty
    when there is nothing safe to send (no joint state yet): publish nothing then.
    ``gripper``: gripper command, or None to send no gripper command.
    ``reasons``: why the output differs from the request (empty if it passed unchanged).
    """

    kind: str
    values: np.ndarray
    gripper: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def moves(self) -> bool:
        return self.kind == COMMAND


class SafetyFilter:
    """Stateful filter: one per arm; ``begin_episode`` before the first command of an episode."""

    def __init__(self, config: SafetyConfig, required_streams: tuple[str, ...] = ()):
        self.config = config
        self.required_streams = tuple(required_streams)
        self._last_seen: dict[str, float] = {}
        self._estop_reason = ''
        self._last_joint_command: np.ndarray | None = None
        self.counts: dict[str, int] = {}
        lower = np.asarray(config.joint_lower)
        upper = np.asarray(config.joint_upper)
        self._lower, self._upper = lower, upper
        self._velocity = np.broadcast_to(np.asarray(config.max_joint_velocity),
                                         lower.shape).copy() if lower.size else np.zeros(0)
        self._box_min = np.asarray(config.workspace_min)
        self._box_max = np.asarray(config.workspace_max)

    # --- e-stop and watchdog -------------------------------------------------------------
    def trigger_estop(self, reason: str = 'estop') -> None:
        """Latch the e-stop; every later call returns STOP until ``reset_estop``."""
        if not self._estop_reason:
            self._count('estop')
        self._estop_reason = reason or 'estop'

    def reset_estop(self) -> None:
        """Release the e-stop latch (an explicit operator action)."""
        self._estop_reason = ''
        self._last_joint_command = None

    @property
    def estopped(self) -> bool:
        return bool(self._estop_reason)

    @property
    def estop_reason(self) -> str:
        return self._estop_reason

    def observe(self, stream: str, now: float) -> None:
        """Record that a fresh message of ``stream`` arrived at time ``now`` (s)."""
        self._last_seen[stream] = now

    def stale_streams(self, now: float) -> list[str]:
        """Return the required streams older than the watchdog timeout or never seen."""
        timeout = self.config.watchdog_timeout
        return [s for s in self.required_streams
                if s not in self._last_seen or now - self._last_seen[s] > timeout]

    def begin_episode(self, measured_joints: np.ndarray | None = None) -> None:
        """Start from the measured joint position (clipped into the limits) as reference."""
        self._last_joint_command = None
        if measured_joints is not None and self.config.num_joints:
            measured = np.asarray(measured_joints, dtype=np.float64)
            if measured.shape == self._lower.shape and np.all(np.isfinite(measured)):
                self._last_joint_command = np.clip(measured, self._lower, self._upper)

    # --- filters -------------------------------------------------------------------------
    def filter_joint_positions(self, target, gripper, measured, now: float,
                               dt: float) -> SafetyOutput:
        """Filter joint position targets (rad) and a gripper command for one period ``dt``."""
        n = self.config.num_joints
        if n == 0:
            raise ValueError('joint limits are not configured (safety.joint_lower/upper)')
        target = np.asarray(target, dtype=np.float64).reshape(-1)
        if target.shape != (n,):
            raise ValueError(f'joint target has {target.size} values, limits cover {n} joints')
        reference = self._joint_reference(measured)
        gate = self._gate(now)
        # Without any joint reference there is no safe target at all: an empty hold tells the
        # node to publish nothing.
        hold = np.zeros(0) if reference is None else reference.copy()
        if gate is not None:
            return SafetyOutput(gate[0], hold, None, gate[1])
        if reference is None:
            return self._hold_output(hold, ['no_joint_state'])
        if not np.all(np.isfinite(target)):
            return self._hold_output(hold, ['non_finite'])
        reasons = []
        clipped = np.clip(target, self._lower, self._upper)
        if not np.array_equal(clipped, target):
            reasons.append('joint_limit')
        step = np.minimum(self.config.max_joint_step, self._velocity * max(dt, 0.0))
        limited = np.clip(clipped, reference - step, reference + step)
        if not np.array_equal(limited, clipped):
            reasons.append('joint_step')
        # reference is inside the limits, so the step-limited target is too; clip again only
        # to absorb floating-point rounding at the boundary.
        limited = np.clip(limited, self._lower, self._upper)
        self._last_joint_command = limited
        return self._command(limited, gripper, reasons)

    def filter_cartesian(self, velocity, gripper, ee_position, now: float,
                         dt: float) -> SafetyOutput:
        """Filter a linear end-effector velocity (m/s, xyz) and a gripper command."""
        velocity = np.asarray(velocity, dtype=np.float64).reshape(-1)
        if velocity.shape != (3,):
            raise ValueError(f'Cartesian velocity has {velocity.size} values, expected 3')
        zero = np.zeros(3)
        gate = self._gate(now)
        if gate is not None:
            return SafetyOutput(gate[0], zero, None, gate[1])
        if not np.all(np.isfinite(velocity)):
            return self._hold_output(zero, ['non_finite'])
        reasons = []
        if self.config.enforce_workspace:
            position = None if ee_position is None else np.asarray(ee_position, dtype=np.float64)
            if position is None or position.shape != (3,) or not np.all(np.isfinite(position)):
                return self._hold_output(zero, ['no_ee_position'])
            period = max(dt, 1e-6)
            upper = np.maximum(0.0, (self._box_max - position) / period)
            lower = np.minimum(0.0, (self._box_min - position) / period)
            boxed = np.clip(velocity, lower, upper)
            if not np.array_equal(boxed, velocity):
                reasons.append('workspace')
            velocity = boxed
        speed = float(np.linalg.norm(velocity))
        if speed > self.config.max_cartesian_speed:
            # Scaling towards zero keeps the box constraint (its interval always contains 0).
            velocity = velocity * (self.config.max_cartesian_speed / speed) * (1 - 1e-9)
            reasons.append('speed')
        return self._command(velocity, gripper, reasons)

    # --- helpers -------------------------------------------------------------------------
    def _gate(self, now: float) -> tuple[str, list[str]] | None:
        if self._estop_reason:
            self._count('stopped')
            return STOP, [self._estop_reason]
        stale = self.stale_streams(now)
        if stale:
            self._count('watchdog')
            return HOLD, [f'stale:{s}' for s in stale]
        return None

    def _joint_reference(self, measured) -> np.ndarray | None:
        if self._last_joint_command is None and measured is not None:
            self.begin_episode(measured)
        return self._last_joint_command

    def _hold_output(self, values: np.ndarray, reasons: list[str]) -> SafetyOutput:
        for reason in reasons:
            self._count(reason)
        return SafetyOutput(HOLD, values, None, reasons)

    def _command(self, values: np.ndarray, gripper, reasons: list[str]) -> SafetyOutput:
        gripper_command = None
        if gripper is not None:
            gripper = float(gripper)
            if not np.isfinite(gripper):
                reasons.append('gripper_non_finite')
            else:
                gripper_command = min(max(gripper, self.config.gripper_min),
                                      self.config.gripper_max)
                if gripper_command != gripper:
                    reasons.append('gripper_limit')
        for reason in reasons:
            self._count(reason)
        return SafetyOutput(COMMAND, values, gripper_command, reasons)

    def _count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
