"""`spiral_loop` end to end: rollouts through the three node processes, the flywheel, redeploy.

A tiny run (one task, one round, two node and two in-process episodes per round) of the real
CLI: sim_node, reward_node and policy_node over DDS, rosbag2 bags, labels from the simulator's
truth beside every round-0 bag, SARM2 fine-tuned on them (its checkpoint names the rollouts it
learned from), the ``spiral_update`` CLI relabelling every bag with the fine-tuned model, the
residual deployed through the policy node's ``residual_checkpoint``, the report. A second
invocation resumes the finished run without redoing anything.
"""

import json
import subprocess

import pytest

from ros_harness import console_script, tiny_sim_checkpoints

pytestmark = [pytest.mark.ros, pytest.mark.slow]
TASK = 'reach-v3'


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Tiny random SARM2 and compact VLA checkpoints that fit the simulated arm."""
    return tiny_sim_checkpoints(tmp_path_factory.mktemp('loop_checkpoints'), vla_image_size=32)


def run_loop(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([console_script('sarm2_bringup', 'spiral_loop'), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_loop_runs_a_round_through_the_nodes_and_resumes(checkpoints, tmp_path):
    from sarm2_common.bag_dataset import find_bags, read_episode
    from sarm2_common.rollout_labels import load_label
    from sarm2_reward.checkpoint import read_config
    from sarm2_reward.inference import Sarm2Predictor

    reward, policy = checkpoints
    run = tmp_path / 'run'
    args = ['--reward-checkpoint', str(reward), '--base-checkpoint', str(policy),
            '--tasks', TASK, '--rounds', '1', '--episodes-per-round', '2', '--max-steps', '16',
            '--inprocess-per-round', '2', '--finetune-steps', '4', '--control-rate', '10',
            '--updates', '3', '--run', str(run)]
    first = run_loop(args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    steps = ['round0-rollouts', 'round0-labels', 'reward-finetune', 'round1-update',
             'round1-rollouts', 'report']
    assert all((run / s / 'step.json').is_file() for s in steps)
    assert not list(run.glob('*.partial'))

    records = {}
    for r in (0, 1):
        result = json.loads((run / f'round{r}-rollouts' / 'step.json').read_text())['result']
        records[r] = result['episodes']
        assert len(records[r]) == 2 and result['per_task'][TASK]['episodes'] == 2
        assert all(e['reward_messages'] > 0 for e in records[r]), 'no live SARM2 rewards'
    # fresh initial states every round
    assert not {e['seed'] for e in records[0]} & {e['seed'] for e in records[1]}

    # every round-0 bag (node and in-process) has a label beside it, from the simulator
    round0 = find_bags(run / 'round0-rollouts')
    assert len(round0) == 4
    assert all(load_label(bag).labeller_kind == 'simulator' for bag in round0)
    # the fine-tuned reward checkpoint names the rollouts (and labels) it learned from
    finetuned = run / 'reward-finetune' / 'checkpoint'
    provenance = read_config(finetuned)['metadata']
    assert sorted(r['bag'] for r in provenance['rollouts']) == sorted(map(str, round0))
    assert all(r['label_sha256'] for r in provenance['rollouts'])
    assert provenance['init_checkpoint']['path'] == str(reward.resolve())
    finetuned_id = Sarm2Predictor.from_checkpoint(finetuned).model_id
    assert finetuned_id != Sarm2Predictor.from_checkpoint(reward).model_id

    # the update relabelled every round-0 bag with the fine-tuned reward model
    update = run / 'round1-update' / f'residual-{TASK}'
    report = json.loads((update / 'round_report.json').read_text())
    assert len(report['episodes']) == 4 and report['reward_model_ids'] == [finetuned_id]
    assert all(e['reward_model_id'] == finetuned_id for e in report['episodes'])
    assert report['reward_checkpoint'] == str(finetuned.resolve())
    assert (update / 'actor.safetensors').is_file() and (update / 'critic.safetensors').is_file()

    # round 1 ran base + residual: its bags say so
    for episode in records[1]:
        recorded = read_episode(run / 'round1-rollouts' / episode['bag_path'])
        assert '+spiral:' in recorded.metadata['policy_id']
        assert recorded.task == TASK
    for episode in records[0]:
        recorded = read_episode(run / 'round0-rollouts' / episode['bag_path'])
        assert '+spiral:' not in recorded.metadata['policy_id']

    summary = (run / 'report' / 'summary.txt').read_text()
    assert 'live AUROC' in summary and finetuned_id in summary
    # the success threshold the fine-tuning calibrated for the task, for a robot's policy node
    calibrated = provenance['success_calibration']['per_task'][TASK]['threshold']
    assert f'{TASK} {calibrated:.3f}' in summary
    # the tiny random VLA fails every episode: the round says what that means for the update
    assert 'rollouts so far failed' in summary
    assert (run / 'report' / 'live_progress.png').stat().st_size > 1000
    assert (run / 'report' / 'rounds.png').stat().st_size > 1000
    assert (run / 'rounds.png').is_file() and (run / 'report' / 'index.html').is_file()

    again = run_loop(args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('done in an earlier run') == len(steps)


def test_loop_rejects_a_missing_checkpoint_with_a_clear_message(checkpoints, tmp_path):
    _, policy = checkpoints
    result = run_loop(['--reward-checkpoint', str(tmp_path / 'nothing'), '--base-checkpoint',
                       str(policy), '--runs-dir', str(tmp_path / 'runs')], timeout=120)
    assert result.returncode == 2
    assert 'reward_checkpoint' in result.stderr and 'nothing' in result.stderr
    assert 'model.safetensors' in result.stderr
    assert not (tmp_path / 'runs').exists()
