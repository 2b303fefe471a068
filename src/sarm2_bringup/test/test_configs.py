"""The node parameter files shipped with sarm2_bringup are valid for their nodes."""

from pathlib import Path

from sarm2_reward.labeling import DEFAULT_SMOOTHING
from sarm2_reward.reward_node_config import RewardNodeConfig
from sarm2_sim.sim_node_config import SimNodeConfig
from spiral_policy.policy_node_config import PolicyNodeConfig
import yaml

CONFIG = Path(__file__).resolve().parents[1] / 'config'


def _parameters(name: str) -> dict:
    document = yaml.safe_load((CONFIG / name).read_text())
    (section,) = document.values()
    return section['ros__parameters']


def test_policy_node_yaml_is_valid_and_known():
    params = _parameters('policy_node.yaml')
    assert not set(params) - set(PolicyNodeConfig.names())
    config = PolicyNodeConfig(**params)
    assert config.command_interface == 'twist' and config.success_source == 'sim'
    assert config.stream_names() == ('camera/corner', 'joint_states')


def test_reward_node_yaml_is_valid_and_known():
    params = _parameters('reward_node.yaml')
    assert not set(params) - set(RewardNodeConfig.names())
    config = RewardNodeConfig(**params)
    # Offline relabelling smooths with DEFAULT_SMOOTHING: the shipped node must do the same.
    assert config.smoothing == DEFAULT_SMOOTHING


def test_sim_node_yaml_is_valid_and_known():
    params = _parameters('sim_node.yaml')
    SimNodeConfig(**params)
