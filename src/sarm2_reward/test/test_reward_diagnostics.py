"""Reward-node bookkeeping (ROS-free): parameter validation and the diagnostics report."""

import pytest

from sarm2_common.node_parameters import parameter_fields, spec
from sarm2_reward.reward_diagnostics import ERROR, OK, RewardNodeMonitor, STALE, WARN
from sarm2_reward.reward_node_config import RewardNodeConfig
from sarm2_reward.stamp_pairing import PairingStats


class FakeClock:
    """Monotonic time the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_every_field_is_a_documented_parameter():
    names = RewardNodeConfig.names()
    assert len(parameter_fields(RewardNodeConfig)) == len(names) > 30
    assert all(spec(RewardNodeConfig, name).description for name in names)
    assert spec(RewardNodeConfig, 'autostart').read_only


@pytest.mark.parametrize('overrides,message', [
    ({'device': 'gpu'}, 'device'),
    ({'device': 'cuda:x'}, 'device'),
    ({'smoothing': 1.0}, 'smoothing'),
    ({'cameras': ('a', 'a')}, 'unique'),
    ({'cameras': ('a', 'b'), 'camera_topics': ('/x',)}, 'one topic per camera'),
    ({'joint_names': ('j', 'j')}, 'joint_names'),
    ({'stage_gap': -1}, 'stage_gap'),
    ({'output_rate': -1.0}, 'output_rate'),
    ({'max_pairing_delay': 0.0}, 'max_pairing_delay'),
    ({'queue_size': 0}, 'queue_size'),
    ({'overlay_width': 10}, 'overlay_width'),
    ({'sensor_qos_reliability': 'sometimes'}, 'sensor_qos_reliability'),
    ({'output_rate': float('nan')}, 'output_rate'),
    ({'stale_timeout': float('nan')}, 'stale_timeout'),
    ({'pairing_slop': float('inf')}, 'pairing_slop'),
    ({'max_pairing_delay': float('nan')}, 'max_pairing_delay'),
    ({'backend': 'lrm', 'lrm_endpoint': 'http://gpu:8000/v1', 'lrm_model': 'm',
      'cameras': ('a', 'b')}, 'one camera'),
    ({'backend': 'lrm', 'lrm_endpoint': 'http://gpu:8000/v1', 'lrm_models': ('c', 'p'),
      'cameras': ('a',)}, 'lrm_models needs 3'),
    ({'backend': 'lrm', 'lrm_model_dir': '/m', 'lrm_adapter_dir': '/a',
      'lrm_adapter_dirs': ('/c', '/p', '/q'), 'cameras': ('a',)}, 'not both'),
])
def test_invalid_parameters_are_rejected_with_a_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        RewardNodeConfig(**overrides)


def test_camera_topics_default_and_override():
    assert RewardNodeConfig().topic_of('corner', ['corner']) == '/camera/corner/image_raw'
    config = RewardNodeConfig(cameras=('a', 'b'), camera_topics=('/x/img', '/y/img'))
    assert config.topic_of('b', ['a', 'b']) == '/y/img'
    assert RewardNodeConfig(device='cuda:1').device == 'cuda:1'


def test_report_before_configure_and_after_a_failed_load():
    monitor = RewardNodeMonitor([])
    assert monitor.report().level == OK and 'unconfigured' in monitor.report().message
    monitor.error = 'checkpoint x failed to load: missing'
    report = monitor.report()
    assert report.level == ERROR and 'failed to load' in report.message
    assert report.values['last_error'] == monitor.error


def test_rates_latencies_drops_and_stale_streams():
    clock = FakeClock()
    monitor = RewardNodeMonitor(['cam', 'joints'], stale_after=1.0, clock=clock)
    monitor.state = 'active'
    for i in range(31):
        clock.now += 1 / 30
        monitor.heard('cam')
        monitor.heard('joints')
        monitor.frame_done(latency=0.010 + 0.001 * (i == 30) * 90, inference_time=0.005)
    report = monitor.report(PairingStats(paired=31, unpaired=2, backwards=1))
    assert report.level == OK
    assert float(report.values['rate_hz']) == pytest.approx(30.0, rel=1e-6)
    assert float(report.values['latency_p50_ms']) == pytest.approx(10.0, abs=0.01)
    assert float(report.values['latency_p99_ms']) > 10.0
    assert report.values['unpaired_frames'] == '2' and report.values['backwards_stamps'] == '1'
    assert report.values['received.cam'] == '31'

    monitor.dropped += 3
    assert 'dropped' in monitor.report().message and monitor.report().level == OK

    assert monitor.bad_input('image_size') is True   # first one: the node logs it
    assert monitor.bad_input('image_size') is False  # later ones: only counted
    report = monitor.report()
    assert report.level == WARN and report.values['bad_input.image_size'] == '2'

    clock.now += 0.5
    monitor.heard('joints')
    clock.now += 0.7  # camera silent for 1.2 s, joints for 0.7 s
    report = monitor.report()
    assert report.level == WARN and report.values['stale_streams'] == 'cam'
    assert 'no data from cam' in report.message and report.values['rate_hz'] == '0.00'
    clock.now += 1.0
    assert monitor.report().level == STALE  # everything silent
