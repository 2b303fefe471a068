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


def test_the_success_threshold_comes_from_the_reward_checkpoints_calibration(tmp_path):
    from sarm2_reward.checkpoint import save_checkpoint
    from sarm2_reward.model import Sarm2Config, Sarm2Model

    model = Sarm2Model(Sarm2Config(image_size=32, cnn_channels=(4, 8), frame_embed_dim=16,
                                   d_model=16, n_heads=2, stage_layers=1, value_layers=1,
                                   num_experts=4, top_k=2, expert_hidden=8))
    calibrated = save_checkpoint(model, tmp_path / 'calibrated', metadata={
        'success_calibration': {'threshold': 0.97, 'consecutive_frames': 3, 'per_task': {
            'reach-v3': {'threshold': 0.6, 'consecutive_frames': 5}}}})
    demo_only = save_checkpoint(model, tmp_path / 'demo_only')
    config = PolicyNodeConfig(success_source='reward', success_threshold=0.9,
                              success_frames=3, success_calibration=str(calibrated))
    # The task's own threshold, held for the 5 frames it was calibrated for (not 3): fewer
    # frames would let through failures the calibration never counted.
    threshold, frames, origin = config.success_rule_for('reach-v3')
    assert (threshold, frames) == (0.6, 5) and 'held 5 frames as calibrated' in origin
    assert config.success_rule_for('drawer-open-v3')[:2] == (0.97, 3)
    # More frames than calibrated only lowers the false-positive rate: kept.
    assert PolicyNodeConfig(success_source='reward', success_frames=8,
                            success_calibration=str(calibrated)).success_rule_for(
        'reach-v3')[:2] == (0.6, 8)
    limits = config.limits(success_threshold=0.6, success_frames=5)
    assert (limits.success_threshold, limits.success_frames) == (0.6, 5)
    # Never calibrated: the parameters, and the origin says why.
    threshold, frames, origin = PolicyNodeConfig(
        success_source='reward', success_calibration=str(demo_only)).success_rule_for('x')
    assert (threshold, frames) == (0.9, 3) and 'has no success calibration' in origin
    # Success from the simulator: the calibration is not read at all.
    gone = str(tmp_path / 'gone')
    assert PolicyNodeConfig(success_source='sim', success_calibration=gone).success_rule_for(
        'x') == (0.9, 3, 'success_threshold')
    with pytest.raises(ValueError, match='does not exist'):
        PolicyNodeConfig(success_source='reward', success_calibration=gone).success_rule_for(
            'x')
