"""Policy node configuration (ROS-free)."""

import pytest

from sarm2_common.node_parameters import parameter_fields, spec
from spiral_policy.policy_node_config import PolicyNodeConfig


def test_every_field_is_a_documented_parameter():
    assert len(parameter_fields(PolicyNodeConfig)) == len(PolicyNodeConfig.names()) > 40
    assert all(spec(PolicyNodeConfig, name).description for name in PolicyNodeConfig.names())


def test_every_safety_limit_has_a_range():
    for name in PolicyNodeConfig.names():
        if name.startswith('safety_') and name not in ('safety_joint_lower',
                                                       'safety_joint_upper',
                                                       'safety_enforce_workspace'):
            parameter_spec = spec(PolicyNodeConfig, name)
            assert parameter_spec.low is not None and parameter_spec.high is not None, name


def test_parts_built_from_parameters():
    config = PolicyNodeConfig(command_interface='joint_array',
                              command_joint_names=('a', 'b'), safety_joint_lower=(-1, -1),
                              safety_joint_upper=(1, 1), gripper_topic='', ee_pose_topic='')
    assert config.mapping().action_dim == 2
    assert config.safety().num_joints == 2 and not config.safety().enforce_workspace
    assert config.limits(max_steps=5).max_steps == 5
    assert config.limits().time_limit == config.time_limit
    assert config.topic_of('corner') == '/camera/corner/image_raw'


@pytest.mark.parametrize('bad', [
    {'policy_type': 'gpt'},
    {'success_source': 'oracle'},
    {'command_interface': 'joint_array'},                  # no joints
    {'camera_topics': ('/a', '/b')},                       # one camera
    {'control_rate': 0.0},
    {'ee_pose_topic': ''},                                 # workspace box without a pose
    {'safety_max_cartesian_speed': -1.0},
    {'safety_max_cartesian_speed': 50.0},                  # outside the parameter's range
    {'safety_watchdog_timeout': float('nan')},
    {'control_rate': float('inf')},
    {'safety_workspace_max': (1.0, float('nan'), 1.0)},
    {'openpi_image_keys': ('corner',)},
    {'execution_mode': 'later'},
    {'command_interface': 'joint_array', 'command_joint_names': ('a',), 'ee_pose_topic': '',
     'safety_joint_lower': (-1,), 'safety_joint_upper': (1,), 'joint_names': ('b', 'a')},
])
def test_bad_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        PolicyNodeConfig(**bad)

