"""Policy node configuration (ROS-free)."""

import pytest

from spiral_policy.policy_node_config import PARAMETER_DOCS, PolicyNodeConfig


def test_every_parameter_is_documented():
    assert set(PolicyNodeConfig.names()) == set(PARAMETER_DOCS)


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
    {'openpi_image_keys': ('corner',)},
    {'execution_mode': 'later'},
    {'command_interface': 'joint_array', 'command_joint_names': ('a',), 'ee_pose_topic': '',
     'safety_joint_lower': (-1,), 'safety_joint_upper': (1,), 'joint_names': ('b', 'a')},
])
def test_bad_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        PolicyNodeConfig(**bad)

