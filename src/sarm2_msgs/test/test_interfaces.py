"""The workspace plumbing is real: generated interfaces import and cross OS processes over DDS."""

import pathlib
import sys
import time

import pytest

from ros_harness import PeerProcess, spin_until

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def peer_script(script: str, log_dir: pathlib.Path) -> PeerProcess:
    """Start one of the peer scripts beside this file as its own process."""
    return PeerProcess([sys.executable, str(HERE / script)], script, log_dir)


def test_generated_interfaces_import_with_documented_fields():
    from sarm2_msgs.action import RunEpisode
    from sarm2_msgs.msg import EpisodeMetadata, EpisodeStatus, SimGroundTruth, StageReward
    from sarm2_msgs.srv import ResetEpisode, SetTask

    fields = StageReward.get_fields_and_field_types()
    for name in ('header', 'task', 'instruction', 'primitive_id', 'primitive_name',
                 'primitive_confidence', 'group_id', 'group_name', 'primitive_probabilities',
                 'progress', 'value', 'reward', 'success_probability', 'model_id'):
        assert name in fields, name
    assert fields['primitive_probabilities'] == 'sequence<float>'
    assert EpisodeStatus.SUCCEEDED == 2 and EpisodeStatus.ABORTED == 4
    assert EpisodeMetadata.KIND_END == 'end'
    assert 'expert_primitive_name' in SimGroundTruth.get_fields_and_field_types()
    assert set(SetTask.Request.get_fields_and_field_types()) == {'task', 'instruction'}
    assert 'episode_id' in ResetEpisode.Response.get_fields_and_field_types()
    goal = RunEpisode.Goal.get_fields_and_field_types()
    assert {'task', 'instruction', 'max_steps', 'time_limit'} <= set(goal)
    assert {'step', 'primitive_name', 'progress'} <= set(
        RunEpisode.Feedback.get_fields_and_field_types())
    assert {'success', 'episode_return', 'bag_path', 'reason'} <= set(
        RunEpisode.Result.get_fields_and_field_types())


def test_field_types_are_checked():
    """ROS_PYTHON_CHECK_FIELDS=1 (set by conftest) makes bad field values fail loudly."""
    from sarm2_msgs.msg import StageReward

    with pytest.raises((AssertionError, TypeError)):
        StageReward(progress='high')


@pytest.mark.ros
def test_stage_reward_and_status_cross_processes_intact(ros_context, tmp_path):
    import rclpy
    from sarm2_msgs.msg import EpisodeStatus, StageReward

    from plumbing_messages import episode_status, LATCHED, RELIABLE, stage_reward

    received = {}
    node = rclpy.create_node('plumbing_listener')
    node.create_subscription(StageReward, '/plumbing/stage_reward',
                             lambda m: received.setdefault('reward', m), RELIABLE)
    node.create_subscription(EpisodeStatus, '/plumbing/episode_status',
                             lambda m: received.setdefault('status', m), LATCHED)
    with peer_script('plumbing_publisher.py', tmp_path) as peer:
        ok = spin_until(node, lambda: len(received) == 2, timeout=30)
        assert ok, f'nothing received; publisher said:\n{peer.output()}'
    node.destroy_node()
    # Message equality compares every field, arrays included.
    assert received['reward'] == stage_reward()
    assert received['status'] == episode_status()


@pytest.mark.ros
def test_run_episode_goal_round_trips(ros_context, tmp_path):
    import rclpy
    from rclpy.action import ActionClient
    from sarm2_msgs.action import RunEpisode

    node = rclpy.create_node('plumbing_action_client')
    client = ActionClient(node, RunEpisode, '/plumbing/run_episode')
    feedback = []
    with peer_script('run_episode_server.py', tmp_path) as peer:
        assert client.wait_for_server(timeout_sec=30), peer.output()
        # wait_for_server proves only the request side is matched; a goal sent at once can lose
        # its response while DDS still matches the reply side (seen on a busy host).
        time.sleep(1.0)
        goal = RunEpisode.Goal(task='pick-place-v3', instruction='place the puck', max_steps=321,
                               time_limit=12.5, seed=7, record=True)
        sent = client.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f))
        assert spin_until(node, sent.done, timeout=15)
        handle = sent.result()
        assert handle.accepted
        result_future = handle.get_result_async()
        assert spin_until(node, result_future.done, timeout=15), peer.output()
    result = result_future.result().result
    node.destroy_node()
    assert result == RunEpisode.Result(
        success=True, episode_return=3.5, steps=321, duration=12.5,
        episode_id='pick-place-v3-7', bag_path='/bags/pick-place-v3',
        reason='echo: place the puck')
    # Feedback is best effort in time, but whatever arrived must be intact and ordered.
    steps = [f.feedback.step for f in feedback]
    assert steps == sorted(steps) and set(steps) <= {0, 1, 2}
