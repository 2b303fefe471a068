"""Safety filter: no command outside the limits, whatever the policy outputs."""

import numpy as np
import pytest

from spiral_policy.safety import COMMAND, HOLD, SafetyConfig, SafetyFilter, STOP

JOINTS = 7
CONFIG = SafetyConfig(joint_lower=(-2.0,) * JOINTS, joint_upper=(2.0,) * JOINTS,
                      max_joint_velocity=(0.5,) * 6 + (1.0,), max_joint_step=0.04,
                      max_cartesian_speed=0.2, workspace_min=(-0.5, 0.3, 0.05),
                      workspace_max=(0.5, 0.9, 0.4), gripper_min=-1.0, gripper_max=1.0,
                      watchdog_timeout=0.3)
DT = 0.05
EPS = 1e-9


def adversarial_values(rng, size):
    """Random normal, huge, NaN, inf and sign-flipping jumps, mixed per element."""
    choice = rng.integers(0, 6)
    if choice == 0:
        return rng.normal(0, 1, size)
    if choice == 1:
        return rng.normal(0, 1e6, size)
    if choice == 2:
        values = rng.normal(0, 1, size)
        values[rng.integers(0, size)] = rng.choice([np.nan, np.inf, -np.inf])
        return values
    if choice == 3:
        return rng.choice([-1e308, 1e308, 0.0, -0.0, 1e-320], size)
    if choice == 4:
        return np.full(size, rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(0, 30))
    return rng.uniform(-3, 3, size)


def test_joint_commands_never_leave_limits():
    rng = np.random.default_rng(0)
    safety = SafetyFilter(CONFIG, required_streams=('joint_states',))
    step_limit = np.minimum(0.04, np.asarray(CONFIG.max_joint_velocity) * DT)
    published = []
    measured = rng.uniform(-3, 3, JOINTS)      # may start outside the limits
    safety.begin_episode(measured)
    previous = np.clip(measured, -2, 2)
    for step in range(5000):
        now = step * DT
        safety.observe('joint_states', now)
        out = safety.filter_joint_positions(adversarial_values(rng, JOINTS),
                                            adversarial_values(rng, 1)[0], measured, now, DT)
        assert out.kind in (COMMAND, HOLD)
        assert np.all(np.isfinite(out.values))
        assert np.all(out.values >= -2.0 - EPS) and np.all(out.values <= 2.0 + EPS)
        assert np.all(np.abs(out.values - previous) <= step_limit + EPS)
        if out.gripper is not None:
            assert np.isfinite(out.gripper) and -1.0 <= out.gripper <= 1.0
        previous = out.values
        published.append(out.kind)
        measured = out.values + rng.normal(0, 0.01, JOINTS)
    # the adversarial mix exercised both paths
    assert published.count(HOLD) > 100 and published.count(COMMAND) > 1000
    assert safety.counts['non_finite'] > 100 and safety.counts['joint_step'] > 100


def test_cartesian_commands_never_leave_speed_or_workspace():
    rng = np.random.default_rng(1)
    safety = SafetyFilter(CONFIG, required_streams=('camera',))
    lo, hi = np.asarray(CONFIG.workspace_min), np.asarray(CONFIG.workspace_max)
    position = np.array([0.0, 0.6, 0.2])
    moves = 0
    for step in range(5000):
        now = step * DT
        safety.observe('camera', now)
        if rng.random() < 0.05:     # occasionally the arm is found outside the box
            position = rng.uniform(lo - 0.2, hi + 0.2)
        inside = bool(np.all(position >= lo) and np.all(position <= hi))
        out = safety.filter_cartesian(adversarial_values(rng, 3), adversarial_values(rng, 1)[0],
                                      position, now, DT)
        velocity = out.values
        assert velocity.shape == (3,) and np.all(np.isfinite(velocity))
        assert np.linalg.norm(velocity) <= CONFIG.max_cartesian_speed + EPS
        nxt = position + velocity * DT
        if inside:
            assert np.all(nxt >= lo - EPS) and np.all(nxt <= hi + EPS)
        else:       # outside: never further out on any axis
            assert np.all((nxt >= position - EPS) | (position >= lo))
            assert np.all((nxt <= position + EPS) | (position <= hi))
        if out.kind == HOLD:
            assert not velocity.any() and out.gripper is None
        if out.gripper is not None:
            assert -1.0 <= out.gripper <= 1.0
        moves += out.kind == COMMAND
        position = nxt
    assert moves > 1000 and safety.counts['workspace'] > 100 and safety.counts['speed'] > 100


def test_estop_stops_at_once_and_latches():
    safety = SafetyFilter(CONFIG)
    position = np.array([0.0, 0.6, 0.2])
    assert safety.filter_cartesian([0.1, 0, 0], 0.5, position, 0.0, DT).kind == COMMAND
    safety.trigger_estop('estop topic')
    for step in range(1, 50):
        out = safety.filter_cartesian([0.1, 0, 0], 0.5, position, step * DT, DT)
        assert out.kind == STOP and not out.values.any() and out.gripper is None
        assert out.reasons == ['estop topic']
    joint = safety.filter_joint_positions(np.ones(JOINTS), 0.0, np.zeros(JOINTS), 3.0, DT)
    assert joint.kind == STOP and not joint.moves
    safety.reset_estop()
    assert safety.filter_cartesian([0.1, 0, 0], 0.5, position, 4.0, DT).kind == COMMAND


def test_estop_holds_joints_at_last_command():
    safety = SafetyFilter(CONFIG)
    out = safety.filter_joint_positions(np.ones(JOINTS), None, np.zeros(JOINTS), 0.0, DT)
    safety.trigger_estop()
    stopped = safety.filter_joint_positions(-np.ones(JOINTS), None, np.full(JOINTS, 0.5),
                                            DT, DT)
    np.testing.assert_array_equal(stopped.values, out.values)


def test_watchdog_holds_on_stale_or_missing_stream():
    safety = SafetyFilter(CONFIG, required_streams=('camera/corner', 'joint_states'))
    position = np.array([0.0, 0.6, 0.2])
    # nothing seen yet -> hold
    out = safety.filter_cartesian([0.1, 0, 0], 1.0, position, 0.0, DT)
    assert out.kind == HOLD and set(out.reasons) == {'stale:camera/corner', 'stale:joint_states'}
    safety.observe('camera/corner', 0.0)
    safety.observe('joint_states', 0.0)
    assert safety.filter_cartesian([0.1, 0, 0], 1.0, position, 0.1, DT).kind == COMMAND
    safety.observe('joint_states', 0.35)
    # camera stalls: within the timeout still fine, past it a hold, at once
    assert safety.filter_cartesian([0.1, 0, 0], 1.0, position, 0.3, DT).kind == COMMAND
    out = safety.filter_cartesian([0.1, 0, 0], 1.0, position, 0.301, DT)
    assert out.kind == HOLD and out.reasons == ['stale:camera/corner'] and not out.values.any()
    safety.observe('camera/corner', 0.4)
    assert safety.filter_cartesian([0.1, 0, 0], 1.0, position, 0.41, DT).kind == COMMAND


def test_no_joint_state_means_nothing_to_publish():
    safety = SafetyFilter(CONFIG)
    out = safety.filter_joint_positions(np.zeros(JOINTS), 0.0, None, 0.0, DT)
    assert out.kind == HOLD and out.values.size == 0


def test_workspace_needs_a_position():
    safety = SafetyFilter(CONFIG)
    assert safety.filter_cartesian([0.1, 0, 0], 0.0, None, 0.0, DT).reasons == ['no_ee_position']
    free = SafetyFilter(SafetyConfig(enforce_workspace=False))
    assert free.filter_cartesian([0.1, 0, 0], 0.0, None, 0.0, DT).kind == COMMAND


@pytest.mark.parametrize('bad', [
    {'joint_lower': (0.0,), 'joint_upper': ()},
    {'joint_lower': (1.0,), 'joint_upper': (0.0,)},
    {'max_cartesian_speed': 0.0},
    {'workspace_min': (0, 0, 1), 'workspace_max': (1, 1, 1)},
    {'watchdog_timeout': float('nan')},
    {'joint_lower': (0.0, 0.0), 'joint_upper': (1.0, 1.0),
     'max_joint_velocity': (1.0, 1.0, 1.0)},
])
def test_config_rejects_bad_limits(bad):
    with pytest.raises(ValueError):
        SafetyConfig(**bad)
