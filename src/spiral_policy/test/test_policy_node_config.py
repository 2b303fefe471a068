"""Policy node configuration (ROS-free) and the YAML file shipped with it."""

from pathlib import Path

import pytest
import yaml

from spiral_policy.policy_node_config import PARAMETER_DOCS, PolicyNodeConfig
from spiral_policy.sim_evaluation import wilson_interval

YAML = Path(__file__).resolve().parents[3] / 'config' / 'policy_node.yaml'


def test_every_parameter_is_documented():
    assert set(PolicyNodeConfig.names()) == set(PARAMETER_DOCS)


def test_shipped_yaml_is_valid_and_known():
    params = yaml.safe_load(YAML.read_text())['/**']['ros__parameters']
    unknown = set(params) - set(PolicyNodeConfig.names())
    assert not unknown
    config = PolicyNodeConfig(**params)
    assert config.command_interface == 'twist' and config.success_source == 'sim'
    assert config.stream_names() == ('camera/corner', 'joint_states')


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


def test_wilson_interval():
    low, high = wilson_interval(25, 50)
    assert low == pytest.approx(0.366, abs=1e-3) and high == pytest.approx(0.634, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
