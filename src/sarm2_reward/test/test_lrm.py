"""LRM backend: the published adapters' prompts and answers, the tri reward, a real HTTP server.

Prompts are checked against golden text, answers in the adapters' format with and without the
reasoning before the JSON, and every client call goes to a real local chat-completions server.
"""

import base64
import time

import cv2
import numpy as np
import pytest

from sarm2_common.episode import Episode
from sarm2_reward.lrm.lrm_backend import LrmBackend, LrmConfig, relabel_episode
from sarm2_reward.lrm.questions import (completion_query, contrastive_query, interpret,
                                        LrmAnswers, parse_completion, parse_contrastive,
                                        parse_progress, progress_query, UnparseableAnswerError)
from sarm2_reward.lrm.settings import VlmSource
from sarm2_reward.lrm.vlm_clients import OpenAiChatClient, VlmError

from fake_vlm_server import FakeVlmServer
from ros_harness import wait_until


def frame(value: int) -> np.ndarray:
    return np.full((16, 16, 3), value, np.uint8)


# --- the published prompts, character for character -------------------------------------------

GOLDEN_CONTRASTIVE = (
    'Task: Compare the completion progress.\n\nThe task is: open the drawer.\n\n'
    'You are given:\n- Later observation (Image A): <image>\n'
    '- Later observation (Image B): <image>\n\n'
    'Question: Which of Image A or Image B is closer to completing the task?\n'
    'Select one value from the following list:\n["ImageA", "ImageB"]\n\n'
    'Please provide a step-by-step visual analysis first, and then output your answer in the '
    'following JSON format:\n{ "more_complete_image": "selected_value" }')
GOLDEN_PROGRESS = (
    'Task: Estimate the completion progress.\nThe task is: open the drawer\nYou are given:\n'
    '- Initial observation: <image>\n- Current observation: <image>\n\n'
    'Question: Based on the task description, estimate the completion progress as a value '
    'between 0.0 and 1.0.\nSelect one value from the following list:\n'
    '[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n\nDefinitions:\n'
    '- 0.0: Task has just started.\n'
    '- 0.1 - 0.9: Intermediate progress steps (assess how close to completion).\n'
    '- 1.0: Task is Finished.\nOutput your answer in the following JSON format:\n'
    '{ "completion_progress": selected_value }')
# The source server strips the completion prompt's segments around its image.
GOLDEN_COMPLETION = (
    'Task: Whether the task has been completed.\n\nThe task is: open the drawer\n\n'
    'You are given:\n- Current observation:<image>Has the task been completed?\n'
    'Output your answer in the following JSON format:\n{ "task_completed": "yes" or "no" }')


def test_prompts_are_the_published_adapters_text_with_images_in_place():
    earlier, initial, current = frame(1), frame(2), frame(3)
    contrastive = contrastive_query('open the drawer', earlier, current)
    progress = progress_query('open the drawer', initial, current)
    completion = completion_query('open the drawer', current)
    assert contrastive.text() == GOLDEN_CONTRASTIVE
    assert progress.text() == GOLDEN_PROGRESS
    assert completion.text() == GOLDEN_COMPLETION
    # Image A is the earlier frame, image B the current one; progress shows the initial frame.
    assert [i is e for i, e in zip(contrastive.images, (earlier, current))] == [True, True]
    assert [i is e for i, e in zip(progress.images, (initial, current))] == [True, True]
    assert completion.images[0] is current
    kinds = [[type(p).__name__ for p in q.parts] for q in (contrastive, progress, completion)]
    assert kinds == [['str', 'ndarray', 'str', 'ndarray', 'str'],
                     ['str', 'ndarray', 'str', 'ndarray', 'str'], ['str', 'ndarray', 'str']]
    assert (contrastive.max_tokens, progress.max_tokens, completion.max_tokens) == (512, 128, 128)


# --- answers in the adapters' format -----------------------------------------------------------

REASONED_CONTRASTIVE = (
    'Step 1: In ImageB the drawer is open by a few centimetres.\n'
    'Step 2: In ImageA the handle has moved further out, so ImageA is closer.\n'
    '{ "more_complete_image": "ImageA" }')


@pytest.mark.parametrize('answer, expected', [
    ('{ "more_complete_image": "ImageB" }', 1),
    ('{"more_complete_image":"ImageA"}', -1),
    ('```json\n{ "more_complete_image": "ImageB" }\n```', 1),
    (REASONED_CONTRASTIVE, -1),
    # Reasoning that names both, then a JSON answer that names ImageB: the JSON decides.
    ('ImageB is lower but ImageA shows more.\nFinal: { "more_complete_image": "ImageB" }', 1),
    # No JSON (e.g. the budget ran out): the image mentioned last, as the source server reads it.
    ('Comparing ImageA with ImageB, ImageB', 1),
])
def test_contrastive_answers_with_and_without_reasoning(answer, expected):
    assert parse_contrastive(answer) == expected


@pytest.mark.parametrize('answer, expected', [
    ('{ "completion_progress": 0.3 }', 0.3),
    ('{"completion_progress": 1}', 1.0),
    ('The drawer is a third open.\n```json\n{"completion_progress": 0.3}\n```', 0.3),
    ('{ "completion_progress": "0.7" }', 0.7),
    ('{ "completion_progress": 1.2 }', 1.0),          # clamped, as the source server does
    ('{ "completion_progress": -0.1 }', 0.0),
    ('{ "completion_progress": "NA" }', 0.0),
    ('first {"completion_progress": 0.2} then, on reflection, {"completion_progress": 0.6}', 0.6),
])
def test_progress_answers_with_and_without_reasoning(answer, expected):
    assert parse_progress(answer) == pytest.approx(expected)


@pytest.mark.parametrize('answer, expected', [
    ('{ "task_completed": "yes" }', True),
    ('{"task_completed": "No"}', False),
    ('The drawer is not fully open.\n{ "task_completed": "no" }', False),
    ('It is not finished yet, but the final answer is { "task_completed": "yes" }', True),
    ('Yes.', True),
    ('no', False),
])
def test_completion_answers_with_and_without_reasoning(answer, expected):
    assert parse_completion(answer) is expected


@pytest.mark.parametrize('parse, answer', [
    (parse_contrastive, 'I cannot tell the two apart.'),
    (parse_contrastive, '{ "more_complete_image": "both" }'),
    (parse_contrastive, '{"more_complete": "second"}'),
    (parse_progress, 'about half'),
    (parse_progress, '{ "completion_progress": "high" }'),
    (parse_progress, '{"progress": 0.3}'),
    # No answer key: the source server's bare-number fallback would read this as 1.0.
    (parse_progress, 'In image 1 the drawer is still closed.'),
    (parse_completion, 'The task is complete.'),
    (parse_completion, 'yes and no'),
    (parse_completion, '{"task_completed": true}'),
])
def test_answers_without_a_valid_answer_are_unparseable(parse, answer):
    with pytest.raises(UnparseableAnswerError):
        parse(answer)


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
    # The first query has no earlier frame: contrastive is neutral but not a parse failure.
    first = interpret({'contrastive': None, 'progress': '{"completion_progress": 0.0}',
                       'completion': '{"task_completed": "no"}'}, 0.0)
    assert first.unparseable == ()


# --- against a real chat-completions server ---------------------------------------------------

@pytest.fixture
def vlm_server():
    server = FakeVlmServer()
    yield server
    server.close()


def decoded(part: dict) -> np.ndarray:
    """Decode the RGB image of a chat-completions image_url part (a PNG data URL)."""
    data = base64.b64decode(part['image_url']['url'].split(',', 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def test_client_sends_text_and_images_interleaved_and_reads_the_answer(vlm_server):
    client = OpenAiChatClient(vlm_server.url, 'qwen-vl-test', timeout=5, api_key='k')
    vlm_server.reasoning = True
    answer = client.ask(contrastive_query('open the drawer', frame(1), frame(2)))
    assert parse_contrastive(answer) == 1
    path, body = vlm_server.requests[-1]
    assert path == '/v1/chat/completions' and body['model'] == 'qwen-vl-test'
    assert body['max_tokens'] == 512 and body['temperature'] == 0.0
    content = body['messages'][0]['content']
    assert [c['type'] for c in content] == ['text', 'image_url', 'text', 'image_url', 'text']
    text = ''.join(c['text'] if c['type'] == 'text' else '<image>' for c in content)
    assert text == GOLDEN_CONTRASTIVE
    assert np.array_equal(decoded(content[1]), frame(1))
    assert np.array_equal(decoded(content[3]), frame(2))


def test_each_question_goes_to_its_served_model_and_endpoint(vlm_server):
    progress_server = FakeVlmServer()
    try:
        source = VlmSource(endpoints=(vlm_server.url, progress_server.url, vlm_server.url),
                           models=('lrm-contrastive', 'lrm-progress', 'lrm-completion'),
                           timeout=5)
        client = source.make_client()
        assert client.name == 'openai:lrm-contrastive+lrm-progress+lrm-completion'
        client.ask(contrastive_query('t', frame(0), frame(1)))
        client.ask(progress_query('t', frame(0), frame(1)))
        client.ask(completion_query('t', frame(1)))
        assert [(q, b['model']) for q, (_, b) in zip(vlm_server.questions_asked(),
                                                     vlm_server.requests)] == [
            ('contrastive', 'lrm-contrastive'), ('completion', 'lrm-completion')]
        assert progress_server.questions_asked() == ['progress']
        assert progress_server.requests[0][1]['model'] == 'lrm-progress'
    finally:
        progress_server.close()


@pytest.mark.parametrize('values, message', [
    ({}, 'exactly one VLM'),
    ({'endpoint': 'http://h/v1'}, 'lrm_model or lrm_models'),
    ({'endpoint': 'http://h/v1', 'model': 'm', 'models': ('a', 'b', 'c')}, 'not both'),
    ({'endpoint': 'http://h/v1', 'models': ('a', 'b')}, 'lrm_models needs 3'),
    ({'endpoint': 'http://h/v1', 'model': 'm', 'adapter_dir': '/a'}, 'local model'),
    ({'model_dir': '/m', 'model': 'x'}, 'served models'),
    ({'model_dir': '/m', 'adapter_dirs': ('/a', '', '/c')}, 'non-empty'),
    ({'model_dir': '/m', 'endpoint': 'http://h/v1', 'model': 'x'}, 'exactly one VLM'),
])
def test_vlm_source_rejects_ambiguous_settings(values, message):
    with pytest.raises(ValueError, match=message):
        VlmSource(**values)


@pytest.mark.parametrize('behaviour, kind', [
    ('slow', 'timeout'), ('error', 'http'), ('not_chat', 'protocol')])
def test_client_failures_have_a_kind(vlm_server, behaviour, kind):
    vlm_server.behaviour, vlm_server.delay = behaviour, 1.0
    client = OpenAiChatClient(vlm_server.url, 'm', timeout=0.3)
    with pytest.raises(VlmError) as error:
        client.ask(completion_query('t', frame(0)))
    assert error.value.kind == kind


def test_unreachable_server_is_an_http_error():
    client = OpenAiChatClient('http://127.0.0.1:9/v1', 'm', timeout=1)
    with pytest.raises(VlmError) as error:
        client.ask(completion_query('t', frame(0)))
    assert error.value.kind == 'http'


def test_backend_queries_every_n_frames_with_the_initial_and_previous_frames(vlm_server):
    vlm_server.reasoning = True
    backend = LrmBackend(OpenAiChatClient(vlm_server.url, 'm', timeout=5),
                         LrmConfig(camera='corner', query_every=5))
    backend.reset('drawer-open-v3', 'open the drawer')
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
    assert second.reward == pytest.approx((1.0 + 0.4 + 0.0) / 3)   # ImageB (later) more complete
    assert backend.stats['queries'] == 2 and backend.staleness_frames == 1
    assert sum(backend.stats[f'unparseable_{q}'] for q in
               ('contrastive', 'progress', 'completion')) == 0
    assert vlm_server.questions_asked() == ['progress', 'completion', 'contrastive', 'progress',
                                            'completion']
    images = [[decoded(c)[0, 0, 0] for c in body['messages'][0]['content']
               if c['type'] == 'image_url'] for _, body in vlm_server.requests]
    # Round at frame 0: progress (initial 0, current 0), completion (0); round at frame 5:
    # contrastive (A = frame 0, B = frame 5), progress (initial 0, current 5), completion (5).
    assert images == [[0, 0], [0], [0, 5], [0, 5], [5]]
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


def episode_of(length: int, episode_id: str = 'e0') -> Episode:
    return Episode(
        episode_id=episode_id, task='drawer-open-v3', instruction='open the drawer',
        images={'corner': np.stack([frame(t) for t in range(length)])},
        joint_positions=np.zeros((length, 9), np.float32), actions=np.zeros((length, 4)),
        primitive_ids=np.zeros(length, np.int64), timestamps=np.arange(length) * 0.1,
        success=True)


def test_offline_relabel_holds_rewards_between_queries(vlm_server):
    rewards = relabel_episode(OpenAiChatClient(vlm_server.url, 'm', timeout=5), episode_of(7),
                              LrmConfig(query_every=3, mode='progress'))
    assert rewards.tolist() == pytest.approx([0.4] * 7)
    assert len(vlm_server.requests) == 2 + 3 + 3     # frames 0, 3, 6


def test_lrm_as_an_offline_reward_model_in_the_evaluator(vlm_server):
    from sarm2_reward.evaluation import evaluate
    from sarm2_reward.lrm.lrm_backend import LrmEpisodePredictor

    episode = episode_of(6, 'e1')
    predictor = LrmEpisodePredictor(OpenAiChatClient(vlm_server.url, 'm', timeout=5),
                                    LrmConfig(query_every=2))
    prediction = predictor.predict_episode(episode)
    assert prediction['progress'].tolist() == pytest.approx([0.4] * 6)
    assert prediction['success_probability'].tolist() == [0.0] * 6
    metrics, kept, _ = evaluate(predictor, [episode])
    assert kept == [episode] and metrics['overall']['episodes'] == 1
    assert metrics['overall']['value_mse_macro'] > 0
