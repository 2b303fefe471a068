"""LRM backend: strict parsing, the tri reward, and a real local OpenAI-compatible HTTP server."""

import time

import numpy as np
import pytest

from sarm2_common.episode import Episode
from sarm2_reward.lrm.lrm_backend import LrmBackend, LrmConfig, relabel_episode
from sarm2_reward.lrm.questions import (interpret, LrmAnswers, parse_completion,
                                        parse_contrastive, parse_progress,
                                        UnparseableAnswerError)
from sarm2_reward.lrm.vlm_clients import OpenAiChatClient, VlmError

from fake_vlm_server import FakeVlmServer
from ros_harness import wait_until


# --- parsing ----------------------------------------------------------------------------------

def test_strict_parsing_accepts_exact_json_and_one_fence():
    assert parse_contrastive('{"more_complete": "second"}') == 1
    assert parse_contrastive(' {"more_complete": "first"} ') == -1
    assert parse_progress('```json\n{"progress": 0.3}\n```') == 0.3
    assert parse_progress('{"progress": 1}') == 1.0
    assert parse_completion('{"complete": "yes"}') is True


@pytest.mark.parametrize('answer', [
    'second', '{"more_complete": "both"}', '{"more_complete": "second", "why": "x"}',
    '[1]', 'Sure! {"more_complete": "second"}'])
def test_contrastive_garbage_is_rejected(answer):
    with pytest.raises(UnparseableAnswerError):
        parse_contrastive(answer)


@pytest.mark.parametrize('answer', [
    '{"progress": 0.35}', '{"progress": 1.1}', '{"progress": -0.1}', '{"progress": "0.3"}',
    '{"progress": true}', '{"progress": NaN}', 'about half'])
def test_progress_off_grid_or_out_of_range_is_rejected(answer):
    with pytest.raises(UnparseableAnswerError):
        parse_progress(answer)


def test_tri_reward_hand_computed():
    answers = LrmAnswers(contrastive=1, progress=0.4, complete=False)
    assert answers.tri == pytest.approx((1.0 + 0.4 + 0.0) / 3)
    assert answers.reward('contrastive') == 1.0
    assert answers.reward('completion') == 0.0
    with pytest.raises(ValueError, match='unknown LRM reward mode'):
        answers.reward('median')


def test_unparseable_answers_get_documented_neutral_values():
    raw = {'contrastive': 'maybe', 'progress': 'lots', 'completion': 'probably'}
    answers = interpret(raw, previous_progress=0.7)
    assert (answers.contrastive, answers.progress, answers.complete) == (0, 0.7, False)
    assert set(answers.unparseable) == {'contrastive', 'progress', 'completion'}
    # The first frame has no earlier frame: contrastive is neutral but not a parse failure.
    first = interpret({'contrastive': None, 'progress': '{"progress": 0.0}',
                       'completion': '{"complete": "no"}'}, 0.0)
    assert first.unparseable == ()


# --- against a real chat-completions server ---------------------------------------------------

@pytest.fixture
def vlm_server():
    server = FakeVlmServer()
    yield server
    server.close()


def frame(value: int) -> np.ndarray:
    return np.full((16, 16, 3), value, np.uint8)


def test_client_sends_images_and_prompt_and_reads_the_answer(vlm_server):
    client = OpenAiChatClient(vlm_server.url, 'qwen-vl-test', timeout=5, api_key='k')
    answer = client.ask([frame(1), frame(2)], 'Which is closer to completion? JSON please')
    assert answer == '{"more_complete": "second"}'
    path, body = vlm_server.requests[-1]
    assert path == '/v1/chat/completions' and body['model'] == 'qwen-vl-test'
    content = body['messages'][0]['content']
    assert [c['type'] for c in content] == ['image_url', 'image_url', 'text']
    assert content[0]['image_url']['url'].startswith('data:image/png;base64,')


@pytest.mark.parametrize('behaviour, kind', [
    ('slow', 'timeout'), ('error', 'http'), ('not_chat', 'protocol')])
def test_client_failures_have_a_kind(vlm_server, behaviour, kind):
    vlm_server.behaviour, vlm_server.delay = behaviour, 1.0
    client = OpenAiChatClient(vlm_server.url, 'm', timeout=0.3)
    with pytest.raises(VlmError) as error:
        client.ask([frame(0)], 'How much of the task is done?')
    assert error.value.kind == kind


def test_unreachable_server_is_an_http_error():
    client = OpenAiChatClient('http://127.0.0.1:9/v1', 'm', timeout=1)
    with pytest.raises(VlmError) as error:
        client.ask([frame(0)], 'anything')
    assert error.value.kind == 'http'


def test_backend_queries_every_n_frames_and_holds_the_tri_reward(vlm_server):
    backend = LrmBackend(OpenAiChatClient(vlm_server.url, 'm', timeout=5),
                         LrmConfig(cameras=('corner',), query_every=5))
    backend.reset('reach-v3', 'reach the goal')
    first = backend.step({'corner': frame(0)}, np.zeros(9), 0.0)
    assert first.reward == 0.0 and first.success_probability == 0.0    # nothing answered yet
    assert wait_until(lambda: backend.stats['answers'] == 1, 10.0)
    held = backend.step({'corner': frame(1)}, np.zeros(9), 0.1)
    # First round: no earlier frame -> contrastive neutral (0.5), progress 0.4, not complete.
    assert held.reward == pytest.approx((0.5 + 0.4 + 0.0) / 3)
    assert held.progress == pytest.approx(0.4) and held.value == pytest.approx(-0.6)
    for t in range(2, 6):
        backend.step({'corner': frame(t)}, np.zeros(9), t / 10)
    assert wait_until(lambda: backend.stats['answers'] == 2, 10.0)
    second = backend.step({'corner': frame(6)}, np.zeros(9), 0.6)
    assert second.reward == pytest.approx((1.0 + 0.4 + 0.0) / 3)   # later frame more complete
    assert backend.stats['queries'] == 2 and backend.staleness_frames == 1
    assert len(vlm_server.requests) == 5          # 2 questions, then 3 with the contrastive one
    backend.close()


def test_slow_vlm_never_slows_step_and_staleness_shows(vlm_server):
    vlm_server.behaviour, vlm_server.delay = 'slow', 0.5
    backend = LrmBackend(OpenAiChatClient(vlm_server.url, 'm', timeout=5),
                         LrmConfig(query_every=2))
    backend.reset('reach-v3', 'reach the goal')
    durations = []
    for t in range(40):
        start = time.perf_counter()
        backend.step({'corner': frame(t)}, np.zeros(9), t * 0.01)
        durations.append(time.perf_counter() - start)
        time.sleep(0.01)
    assert max(durations) < 0.05          # each round of 3 questions takes >= 1 s
    assert backend.stats['replaced_requests'] > 0
    assert wait_until(lambda: backend.stats['answers'] >= 1, 10.0)
    assert backend.staleness_frames > 0
    backend.close()


def test_errors_and_garbage_are_counted_and_the_backend_keeps_answering(vlm_server):
    backend = LrmBackend(OpenAiChatClient(vlm_server.url, 'm', timeout=0.3),
                         LrmConfig(query_every=1))
    backend.reset('reach-v3', 'reach the goal')
    vlm_server.behaviour = 'garbage'
    backend.step({'corner': frame(0)}, np.zeros(9), 0.0)
    assert wait_until(lambda: backend.stats['answers'] == 1, 10.0)
    vlm_server.behaviour = 'error'
    backend.step({'corner': frame(1)}, np.zeros(9), 0.1)
    assert wait_until(lambda: backend.stats['http'] == 1, 10.0)
    estimate = backend.step({'corner': frame(2)}, np.zeros(9), 0.2)
    assert estimate.success_probability == 0.0 and np.isfinite(estimate.reward)
    assert 'HTTP 500' in backend.fault
    diagnostics = backend.diagnostics()
    assert diagnostics['vlm_unparseable_progress'] == '1' and diagnostics['vlm_http'] == '1'
    with pytest.raises(ValueError, match='corner'):
        backend.step({'wrist': frame(3)}, np.zeros(9), 0.3)
    backend.close()


def test_offline_relabel_holds_rewards_between_queries(vlm_server):
    length = 7
    episode = Episode(
        episode_id='e0', task='reach-v3', instruction='reach the goal',
        images={'corner': np.stack([frame(t) for t in range(length)])},
        joint_positions=np.zeros((length, 9), np.float32), actions=np.zeros((length, 4)),
        primitive_ids=np.zeros(length, np.int64), timestamps=np.arange(length) * 0.1,
        success=True)
    rewards = relabel_episode(OpenAiChatClient(vlm_server.url, 'm', timeout=5), episode,
                              LrmConfig(query_every=3, mode='progress'))
    assert rewards.tolist() == pytest.approx([0.4] * length)
    assert len(vlm_server.requests) == 2 + 3 + 3     # frames 0, 3, 6


def test_lrm_as_an_offline_reward_model_in_the_evaluator(vlm_server):
    from sarm2_reward.evaluation import evaluate
    from sarm2_reward.lrm.lrm_backend import LrmEpisodePredictor

    length = 6
    episode = Episode(
        episode_id='e1', task='reach-v3', instruction='reach the goal',
        images={'corner': np.stack([frame(t) for t in range(length)])},
        joint_positions=np.zeros((length, 9), np.float32), actions=np.zeros((length, 4)),
        primitive_ids=np.zeros(length, np.int64), timestamps=np.arange(length) * 0.1,
        success=True)
    predictor = LrmEpisodePredictor(OpenAiChatClient(vlm_server.url, 'm', timeout=5),
                                    LrmConfig(query_every=2))
    prediction = predictor.predict_episode(episode)
    assert prediction['progress'].tolist() == pytest.approx([0.4] * length)
    assert prediction['success_probability'].tolist() == [0.0] * length
    metrics, kept, _ = evaluate(predictor, [episode])
    assert kept == [episode] and metrics['overall']['episodes'] == 1
    assert metrics['overall']['value_mse_macro'] > 0
