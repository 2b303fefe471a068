"""Sim node settings and command checking (pure, no ROS)."""

import numpy as np
import pytest
from sarm2_sim.sim_node_config import (camera_info_topic, check_command, SimNodeConfig,
                                       twist_to_action)


def test_config_maps_onto_the_arm_config():
    config = SimNodeConfig(task='push-v3', cameras=('corner', 'topview'), image_size=96)
    assert config.arm.task == 'push-v3' and config.arm.cameras == ('corner', 'topview')
    assert config.arm.image_size == 96


@pytest.mark.parametrize('kwargs, message', [
    ({'task': 'nope-v3'}, 'unknown task'),
    ({'image_size': 2}, 'image_size'),
    ({'sim_rate': 0.0}, 'sim_rate'),
    ({'camera_rate': float('nan')}, 'camera_rate'),
    ({'command_timeout': -1.0}, 'command_timeout'),
    ({'max_linear_speed': float('inf')}, 'max_linear_speed'),
])
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimNodeConfig(**kwargs)


def test_commands_are_checked():
    ok = check_command([0.1, -0.2, 0.0], 0.5, 3)
    assert ok.values is not None and not ok.clamped and ok.problem == ''
    nan = check_command([np.nan, 0.0, 0.0], 0.5, 3)
    assert nan.values is None and 'non-finite' in nan.problem
    short = check_command([0.1], 0.5, 3)
    assert short.values is None and 'expected 3' in short.problem
    big = check_command([10.0, -5.0, 0.0], 0.5, 3)
    assert big.clamped and 'clamped' in big.problem
    np.testing.assert_allclose(big.values, [0.5, -0.25, 0.0])  # direction kept


def test_twist_units_and_topics():
    np.testing.assert_allclose(twist_to_action(np.array([0.4, 0.0, -0.8]), 0.8), [0.5, 0, -1])
    assert camera_info_topic('corner') == '/camera/corner/camera_info'
