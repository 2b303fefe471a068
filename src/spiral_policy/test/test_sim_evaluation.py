"""The control core on the real simulated arm.

The expert, replayed through the safety filter and the twist mapping, still solves the task
(units and scaling are consistent).
"""

import numpy as np
import pytest

from sarm2_sim.sim_arm import SimArm, SimArmConfig
from ros_harness import SimExpertPolicy
from spiral_policy.sim_evaluation import run_sim_episode, sim_control_core, wilson_interval


def test_expert_through_the_control_core_succeeds():
    arm = SimArm(SimArmConfig(task='reach-v3', image_size=16))
    try:
        core = sim_control_core(SimExpertPolicy(arm), arm, ('corner',))
        outcome = run_sim_episode(arm, core, seed=3, max_steps=150)
        assert outcome.success and outcome.steps < 150
        # the same policy with the arm frozen by the e-stop never succeeds
        core.safety.trigger_estop()
        frozen = run_sim_episode(arm, core, seed=3, max_steps=30)
        assert not frozen.success and frozen.interventions == 30
        assert np.isfinite(arm.end_effector_position()).all()
    finally:
        arm.close()


def test_wilson_interval():
    low, high = wilson_interval(25, 50)
    assert low == pytest.approx(0.366, abs=1e-3) and high == pytest.approx(0.634, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
