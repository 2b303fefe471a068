"""The demo orchestrator's step registry, run selection and report (no full demo run here)."""

import json

import pytest

from sarm2_bringup import demo, report_tables, run_steps, sim_graph
from sarm2_bringup.demo import DemoConfig
from sarm2_bringup.run_steps import RunContext, Step


class Recorder:
    """Step functions that log their calls and write one output file each."""

    def __init__(self):
        self.calls = []
        self.fail_in = None

    def step(self, name):
        def run(ctx, out):
            self.calls.append(name)
            (out / 'output.txt').write_text(f'{name} {len(self.calls)}')
            if self.fail_in == name:
                raise KeyboardInterrupt
            return {'name': name, 'seen': sorted(ctx.results)}
        return run


def make_steps(recorder, keeps_partial=()):
    return [Step(n, f'step {n}', recorder.step(n), keeps_partial=n in keeps_partial)
            for n in ('one', 'two', 'three')]


@pytest.fixture
def config():
    return DemoConfig(demos_per_task=4, eval_episodes=2)


def test_completed_steps_are_skipped_on_the_next_run(tmp_path, config):
    recorder = Recorder()
    steps = make_steps(recorder)
    records = run_steps.run_steps(RunContext(tmp_path, config), steps, log=lambda m: None)
    assert recorder.calls == ['one', 'two', 'three']
    assert records['three']['result'] == {'name': 'three', 'seen': ['one', 'two']}
    assert (tmp_path / 'two' / 'output.txt').read_text() == 'two 2'
    assert not list(tmp_path.glob('*.partial'))

    again = Recorder()
    ctx = RunContext(tmp_path, config)
    run_steps.run_steps(ctx, make_steps(again), log=lambda m: None)
    assert again.calls == []
    # Results of skipped steps are still available to later steps and the report.
    assert ctx.results['one'] == {'name': 'one', 'seen': []}


def test_a_step_interrupted_midway_is_redone_from_scratch(tmp_path, config):
    recorder = Recorder()
    recorder.fail_in = 'two'
    with pytest.raises(KeyboardInterrupt):
        run_steps.run_steps(RunContext(tmp_path, config), make_steps(recorder), log=lambda m: None)
    assert recorder.calls == ['one', 'two']
    assert run_steps.is_done(tmp_path, 'one') and not run_steps.is_done(tmp_path, 'two')
    assert not (tmp_path / 'two').exists() and (tmp_path / 'two.partial' / 'output.txt').exists()

    # A stale leftover from the interrupted attempt must not survive into the redone step.
    (tmp_path / 'two.partial' / 'stale').write_text('half-written')
    resumed = Recorder()
    run_steps.run_steps(RunContext(tmp_path, config), make_steps(resumed), log=lambda m: None)
    assert resumed.calls == ['two', 'three']
    assert not (tmp_path / 'two' / 'stale').exists()
    assert run_steps.read_step(tmp_path, 'two')['result']['seen'] == ['one']


def test_resumable_steps_see_their_interrupted_attempt(tmp_path, config):
    recorder = Recorder()
    recorder.fail_in = 'two'
    with pytest.raises(KeyboardInterrupt):
        run_steps.run_steps(RunContext(tmp_path, config), make_steps(recorder, ('two',)),
                       log=lambda m: None)
    (tmp_path / 'two.partial' / 'episode-0').write_text('finished episode')
    run_steps.run_steps(RunContext(tmp_path, config), make_steps(Recorder(), ('two',)),
                   log=lambda m: None)
    assert (tmp_path / 'two' / 'episode-0').read_text() == 'finished episode'


def test_a_step_directory_without_completion_record_is_not_trusted(tmp_path, config):
    (tmp_path / 'one').mkdir()
    (tmp_path / 'one' / 'output.txt').write_text('unknown origin')
    recorder = Recorder()
    run_steps.run_steps(RunContext(tmp_path, config), make_steps(recorder), log=lambda m: None)
    assert recorder.calls[0] == 'one'
    assert (tmp_path / 'one' / 'output.txt').read_text() == 'one 1'


def test_run_selection_resumes_fresh_and_named(tmp_path, config):
    steps = make_steps(Recorder())
    names = iter(['20260101-000000', '20260101-000001', '20260101-000002', '20260101-000003'])

    def now():
        return next(names)

    first = run_steps.select_run(tmp_path, config, steps, now=now)
    assert first.name == '20260101-000000'
    assert json.loads((first / 'config.json').read_text()) == config.to_dict()
    # unfinished run with the same config: resumed
    assert run_steps.select_run(tmp_path, config, steps, now=now) == first
    # --fresh: a new run even though one is unfinished
    fresh = run_steps.select_run(tmp_path, config, steps, fresh=True, now=now)
    assert fresh.name == '20260101-000001'
    assert run_steps.select_run(tmp_path, config, steps, now=now) == fresh
    # a different configuration never resumes this one
    other = DemoConfig(demos_per_task=5, eval_episodes=2)
    assert run_steps.select_run(tmp_path, other, steps, now=now).name == '20260101-000002'
    # a finished run is not resumed
    run_steps.run_steps(RunContext(fresh, config), steps, log=lambda m: None)
    assert run_steps.select_run(tmp_path, config, steps, now=now) == first
    named = tmp_path / 'mine'
    assert run_steps.select_run(tmp_path, config, steps, run=named) == named
    assert (named / 'config.json').is_file()


def test_latest_link_points_at_the_run(tmp_path):
    for name in ('a', 'b'):
        (tmp_path / name).mkdir()
        run_steps.link_latest(tmp_path, tmp_path / name)
        assert (tmp_path / 'latest').resolve() == (tmp_path / name).resolve()


def test_torn_last_jsonl_line_is_ignored(tmp_path):
    path = tmp_path / 'episodes.jsonl'
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert run_steps.read_jsonl(path) == [{'a': 1}, {'a': 2}]
    assert run_steps.read_jsonl(tmp_path / 'missing.jsonl') == []


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match='unknown task'):
        DemoConfig(tasks=('no-such-task',))
    with pytest.raises(ValueError, match='eval_episodes'):
        DemoConfig(eval_episodes=0)
    assert demo.main(['--tasks', 'no-such-task']) == 2


def test_full_configuration_is_larger(config):
    args = demo.build_parser().parse_args(['--full', '--eval-episodes', '7'])
    full = demo.config_from_args(args)
    assert full.eval_episodes == 7 and len(full.tasks) == 3
    assert full.rollouts_per_task > DemoConfig().rollouts_per_task


def rate(successes, episodes):
    from spiral_policy.sim_evaluation import wilson_interval

    return {'successes': successes, 'episodes': episodes, 'rate': successes / episodes,
            'wilson95': list(wilson_interval(successes, episodes))}


def test_report_holds_tables_plots_and_html(tmp_path, config):
    metrics = {'sarm2': {'value_mse_macro': 0.0123, 'voc': 0.91, 'primitive_acc': 0.8,
                         'auroc': 0.95, 'pairwise_acc': 1.0, 'train_seconds': 30.0},
               'time_linear': {'value_mse_macro': 0.0456, 'voc': 0.99, 'primitive_acc': None,
                               'auroc': 0.6, 'pairwise_acc': 0.6, 'train_seconds': 0.0}}
    tasks = config.tasks
    update = {'per_task': {tasks[0]: {'note': 'all 10 rollouts so far failed'}}}
    rounds = [{'round': r, 'policy': 'base' if r == 0 else f'base + residual round {r}',
               'per_task': {t: dict(rate(3 + 4 * r, 10), reward_messages=900) for t in tasks},
               'inprocess_per_task': {t: rate(10 + r, 24) for t in tasks},
               'live_auroc': dict.fromkeys(tasks, 0.25),
               'relabelled_auroc': dict.fromkeys(tasks, 0.875 if r == 0 else None),
               'guard': {}, 'update': update if r else None} for r in (0, 1)]
    results = {
        'demos': {'episodes': 40},
        'vla': {'policy_id': 'compact_vla@0123', 'episodes': 28, 'frames': 2400,
                'final_l1': 0.21},
        'reward': {'metrics': metrics, 'train_episodes': 20, 'test_episodes': 8,
                   'test_successes': 6},
        'loop': {'rounds': rounds, 'labels': {'labels': 64, 'labeller':
                                              ['label_rollouts_from_sim'], 'successes': 30},
                 'finetune': {'rollouts': 64, 'demonstrations': 40, 'init_model_id': 'sarm2-a',
                              'model_id': 'sarm2-b'},
                 'node_episodes': [{'task': tasks[i % 2], 'success': i % 3 == 0,
                                    'progress_trace': [0.0, 0.5, 0.9]} for i in range(6)]},
        'evaluate': {'per_task': {t: {'base': rate(4, 15), 'improved': rate(7, 15)}
                                  for t in tasks}, 'method': 'in-process'},
    }
    text = demo.write_report(tmp_path, results, config, {'demos': 12.0, 'reward': 90.0}, 'run1')
    assert '0.0123' in text and '0.0456' in text
    assert '7/15 = 47%' in text and '3/10 = 30%' in text and '7/10 = 70%' in text
    assert 'compact_vla@0123' in text and '40 scripted episodes' in text
    assert 'demos 12 s' in text and 'no significant change' in text
    assert 'sarm2-a -> sarm2-b' in text and 'label_rollouts_from_sim' in text
    # per round and task: pooled success, live and relabelled AUROC, why nothing changed
    assert '13/34' in text and '0.25' in text and '0.88' in text
    assert 'all 10 rollouts so far failed' in text
    page = (tmp_path / 'index.html').read_text()
    assert 'time_linear' in page and '4/15 = 27%' in page
    for plot in ('success.png', 'rounds.png', 'reward_metrics.png', 'live_progress.png'):
        assert (tmp_path / plot).read_bytes()[:4] == b'\x89PNG'
        assert f'src="{plot}"' in page


def test_verdict_needs_separated_intervals():
    assert report_tables.verdict(rate(5, 50), rate(45, 50)) == 'better (intervals apart)'
    assert report_tables.verdict(rate(45, 50), rate(5, 50)) == 'worse (intervals apart)'
    assert report_tables.verdict(rate(4, 10), rate(6, 10)) == 'no significant change'


def test_interrupted_episode_bags_are_dropped_and_finished_ones_kept(tmp_path):
    bags = tmp_path / 'bags'
    for name in ('finished', 'cut_midway'):
        (bags / name).mkdir(parents=True)
        (bags / name / 'data.mcap').write_bytes(b'bag')
    record = {'task': 't', 'seed': 1, 'success': True, 'bag_path': str(bags / 'finished')}
    (tmp_path / 'episodes.jsonl').write_text(json.dumps(record) + '\n{"task": "t", "se')
    _, logs, episodes_file, done = sim_graph.resume_episode_log(tmp_path)
    assert done == [record] and logs.is_dir()
    assert sorted(p.name for p in bags.iterdir()) == ['finished']
    assert episodes_file.read_text() == json.dumps(record) + '\n'


def test_node_summary_counts_successes_and_live_rewards():
    records = [{'task': 'a', 'success': s, 'episode_return': 0.5, 'reward_messages': 10,
                'bag_path': f'/x/bags/e{i}'} for i, s in enumerate((True, False, True))]
    summary = sim_graph.node_summary(records, ['a', 'b'])
    assert summary['a']['successes'] == 2 and summary['a']['episodes'] == 3
    assert summary['a']['reward_messages'] == 30
    assert summary['b']['episodes'] == 0
    assert records[0]['bag_path'] == 'bags/e0'
