"""ControlCore: the order policy -> chunk -> safety, and episode end reasons."""

import numpy as np
import pytest

from spiral_policy.episode_runner import (CommandMapping, ControlCore, end_reason,
                                          EpisodeLimits)
from spiral_policy.safety import COMMAND, HOLD, SafetyConfig, SafetyFilter, STOP
from spiral_policy.vla import ChunkExecutorConfig, PolicyObservation
from test_safety import adversarial_values

OBS = PolicyObservation({'corner': np.zeros((8, 8, 3), np.uint8)}, np.zeros(9), 'reach')
POSITION = np.array([0.0, 0.6, 0.2])


class ScriptedPolicy:
    """Replays a list of chunks and counts queries (a real VlaPolicy, no model)."""

    policy_id = 'scripted'
    action_dim = 4
    chunk_size = 2

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.queries = 0
        self.resets = 0

    def reset(self):
        self.resets += 1

    def select_action(self, obs):
        self.queries += 1
        return self.chunks.pop(0)


def make_core(chunks, **safety):
    policy = ScriptedPolicy(chunks)
    config = SafetyConfig(max_cartesian_speed=0.5, **safety)
    core = ControlCore(policy, SafetyFilter(config, ('camera',)),
                       CommandMapping('twist', velocity_scale=0.4), ChunkExecutorConfig())
    core.safety.observe('camera', 0.0)
    core.begin_episode()
    return core, policy


def test_chunk_then_scaled_velocity_and_executed_action():
    core, policy = make_core([np.array([[0.5, 0, 0, 1], [1, 1, 1, -1]], np.float32)])
    out = core.step(OBS, POSITION, 0.0, 0.1)
    assert out.safety.kind == COMMAND and policy.queries == 1
    np.testing.assert_allclose(out.safety.values, [0.2, 0, 0])
    np.testing.assert_allclose(out.executed_action, [0.5, 0, 0, 1])
    out = core.step(OBS, POSITION, 0.05, 0.1)
    assert policy.queries == 1            # second action of the same chunk
    assert np.linalg.norm(out.safety.values) <= 0.5 and 'speed' in out.safety.reasons
    np.testing.assert_allclose(out.executed_action[:3], out.safety.values / 0.4)
    assert out.executed_action[3] == -1
    assert policy.resets == 1


def test_nan_chunk_holds_and_requeries():
    core, policy = make_core([np.full((2, 4), np.nan, np.float32),
                              np.zeros((2, 4), np.float32)])
    out = core.step(OBS, POSITION, 0.0, 0.1)
    assert out.safety.kind == HOLD and not out.safety.values.any()
    core.step(OBS, POSITION, 0.01, 0.1)
    assert policy.queries == 2


def test_estop_and_stale_do_not_query_the_policy():
    core, policy = make_core([np.zeros((2, 4), np.float32)] * 3)
    core.safety.trigger_estop()
    out = core.step(OBS, POSITION, 0.0, 0.1)
    assert out.safety.kind == STOP and out.executed_action is None and policy.queries == 0
    core.safety.reset_estop()
    out = core.step(OBS, POSITION, 10.0, 0.1)       # camera last seen at t=0: stale
    assert out.safety.kind == HOLD and policy.queries == 0
    assert out.safety.reasons == ['stale:camera']
    out = core.step(None, POSITION, 0.1, 0.1)
    assert out.safety.kind == HOLD and out.safety.reasons == ['no_observation']


def test_joint_interface_maps_targets_and_gripper():
    policy = ScriptedPolicy([np.array([[0.5] * 3 + [0.7]] * 2, np.float32)])
    config = SafetyConfig(joint_lower=(-1,) * 3, joint_upper=(1,) * 3, max_joint_step=0.1,
                          max_joint_velocity=(10.0,))
    core = ControlCore(policy, SafetyFilter(config),
                       CommandMapping('joint_array', num_joints=3), ChunkExecutorConfig())
    core.begin_episode(np.zeros(3))
    obs = PolicyObservation(OBS.images, np.zeros(9), 'x')
    out = core.step(obs, None, 0.0, 0.1)
    np.testing.assert_allclose(out.safety.values, [0.1] * 3)     # step limited
    np.testing.assert_allclose(out.executed_action, [0.1, 0.1, 0.1, 0.7])


def test_mismatched_action_dim_is_refused():
    with pytest.raises(ValueError, match='4-d'):
        ControlCore(ScriptedPolicy([]), SafetyFilter(SafetyConfig()),
                    CommandMapping('joint_array', num_joints=7), ChunkExecutorConfig())
    with pytest.raises(ValueError):
        CommandMapping('joint_array')


def test_end_reasons():
    limits = EpisodeLimits(max_steps=10, time_limit=2.0)
    assert end_reason(limits, 3, 0.5, False) is None
    assert end_reason(limits, 10, 0.5, True) == 'success'
    assert end_reason(limits, 10, 0.5, False) == 'step_limit'
    assert end_reason(limits, 3, 2.5, False) == 'time_limit'


class AdversarialPolicy:
    """Chunks of random, huge, NaN, inf and jumping values (a real VlaPolicy)."""

    policy_id = 'adversarial'
    chunk_size = 3

    def __init__(self, action_dim, seed):
        self.action_dim = action_dim
        self.rng = np.random.default_rng(seed)

    def reset(self):
        """Keep no state."""

    def select_action(self, obs):
        with np.errstate(over='ignore'):     # 1e308 becomes inf in float32, as intended
            return np.stack([adversarial_values(self.rng, self.action_dim)
                             for _ in range(self.chunk_size)]).astype(np.float32)


@pytest.mark.parametrize('mode', ['chunk', 'ensemble'])
def test_no_published_value_leaves_the_limits_whatever_the_policy(mode):
    rng = np.random.default_rng(5)
    execution = ChunkExecutorConfig(mode=mode)
    # twist
    config = SafetyConfig(max_cartesian_speed=0.3, workspace_min=(-0.5, 0.3, 0.05),
                          workspace_max=(0.5, 0.9, 0.4), gripper_min=-0.5, gripper_max=0.5)
    core = ControlCore(AdversarialPolicy(4, 1), SafetyFilter(config),
                       CommandMapping('twist', velocity_scale=0.8), execution)
    core.begin_episode()
    position = np.array([0.0, 0.6, 0.2])
    for step in range(3000):
        out = core.step(OBS, position, step * 0.05, 0.05)
        velocity = out.safety.values
        assert np.all(np.isfinite(velocity)) and np.linalg.norm(velocity) <= 0.3 + 1e-9
        position = position + velocity * 0.05
        assert np.all(position >= np.array(config.workspace_min) - 1e-9)
        assert np.all(position <= np.array(config.workspace_max) + 1e-9)
        assert out.safety.gripper is None or -0.5 <= out.safety.gripper <= 0.5
        if out.executed_action is not None:
            assert np.all(np.isfinite(out.executed_action))
    # joints
    config = SafetyConfig(joint_lower=(-1.0,) * 3, joint_upper=(1.0,) * 3, max_joint_step=0.02,
                          max_joint_velocity=(0.2,))
    core = ControlCore(AdversarialPolicy(4, 2), SafetyFilter(config),
                       CommandMapping('joint_trajectory', num_joints=3), execution)
    measured = rng.uniform(-2, 2, 9)
    core.begin_episode(measured[:3])
    previous = np.clip(measured[:3], -1, 1)
    for step in range(3000):
        obs = PolicyObservation(OBS.images, measured, 'x')
        out = core.step(obs, None, step * 0.05, 0.05)
        values = out.safety.values
        assert np.all(np.isfinite(values)) and np.all(np.abs(values) <= 1.0 + 1e-9)
        assert np.all(np.abs(values - previous) <= 0.01 + 1e-9)   # min(0.02, 0.2 * 0.05)
        previous = values
        measured[:3] = values


def test_a_slow_query_never_turns_stale_observations_into_motion():
    """Freshness is checked again after the policy query, at the time read then (late commands)."""
    core, policy = make_core([np.array([[1, 0, 0, 1], [1, 0, 0, 1]], np.float32)] * 3,
                             watchdog_timeout=0.5)
    clock = {'now': 0.3}                     # camera last seen at 0.0: fresh when the step starts

    def slow_query(obs):
        clock['now'] += 0.4                  # the query takes 0.4 s
        return ScriptedPolicy.select_action(policy, obs)

    policy.select_action = slow_query
    out = core.step(OBS, POSITION, clock['now'], 0.05, clock=lambda: clock['now'])
    assert out.safety.kind == HOLD and not out.safety.values.any()
    assert out.checked_at == 0.7             # the node stamps the hold with the check's time
    assert 'stale:camera' in out.safety.reasons and out.executed_action is None
    # Fresh again: the query result is used and the command carries the later check's time.
    core.safety.observe('camera', 0.7)
    clock['now'] = 0.75
    out = core.step(OBS, POSITION, clock['now'], 0.05, clock=lambda: clock['now'])
    assert out.safety.kind == COMMAND and out.checked_at == pytest.approx(1.15)


def test_observation_time_trusts_old_stamps_and_never_future_ones():
    from spiral_policy.episode_runner import observation_time

    assert observation_time(100.0 - 15.0, 100.0, 'header') == 85.0     # stale: the watchdog holds
    assert observation_time(100.0 + 3600.0, 100.0, 'header') == 100.0  # future: dated on arrival
    assert observation_time(85.0, 100.0, 'receive') == 100.0           # explicitly configured
    assert observation_time(None, 100.0, 'header') == 100.0            # no header


def test_success_needs_consecutive_frames():
    from spiral_policy.episode_runner import SuccessDetector

    detector = SuccessDetector(0.9, 3)
    assert [detector.update(p) for p in (0.95, 0.2, 0.95, 0.95, float('nan'), 0.95, 0.95,
                                         0.91)] == [False] * 7 + [True]
