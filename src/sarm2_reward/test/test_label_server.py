"""Labelling server JSON API on a real recorded rollout bag (ROS-free, real HTTP).

Round trip of a label through the API to the sidecar file, rejection of bad input with HTTP 400
and nothing written, concurrent saves, frames equal to what training reads from the same bag.
"""

import json
import threading
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from label_server_harness import BROKEN_NAME, ROLLOUT_NAME, RunningServer
from sarm2_common import bag_io
from sarm2_common.bag_dataset import read_episode
from sarm2_common.rollout_labels import label_path, load_label, progress_targets, RolloutLabel
from sarm2_common.topics import image_topic
from sarm2_reward import label_server as server_module

GOOD = {'success': False, 'final_progress': 0.4,
        'segments': [{'start': 0.0, 'end': 1.0, 'kind': 'progress_fast'},
                     {'start': 1.0, 'end': 1.5, 'kind': 'mistake'}],
        'catastrophic_time': None, 'labeller': 'tester'}


def api(name: str, what: str = 'rollout') -> str:
    return f'/api/{what}?name={quote(name)}'


def bag_dir(server):
    return server.root / ROLLOUT_NAME


def leftovers(server) -> list[str]:
    """Label files and temporary files beside the bags."""
    return sorted(p.name for p in (server.root / 'rollouts').iterdir()
                  if p.name.endswith(('.json', '.tmp')))


def test_list_shows_the_rollout_and_an_error_row_for_a_broken_bag(label_server):
    status, payload, _ = label_server.request('GET', '/api/rollouts')
    assert status == 200
    rows = {row['name']: row for row in payload['rollouts']}
    assert set(rows) == {ROLLOUT_NAME, BROKEN_NAME}
    assert rows[BROKEN_NAME]['status'] == 'error'
    assert 'not an MCAP file' in rows[BROKEN_NAME]['error']
    row = rows[ROLLOUT_NAME]
    episode = read_episode(bag_dir(label_server))
    assert row['error'] == '' and row['status'] == 'unlabelled'
    assert row['task'] == episode.task and row['instruction'] == episode.instruction
    assert row['episode_id'] == episode.episode_id
    assert row['policy_id'] and row['policy_id'] == episode.metadata['policy_id']
    assert row['recorded_success'] == episode.success
    assert row['reason'] == episode.metadata['reason']
    assert row['frames'] == len(episode) and row['cameras'] == sorted(episode.images)
    # The broken bag does not stop the server: the good one still opens and serves frames.
    assert label_server.request('GET', api(ROLLOUT_NAME))[0] == 200
    status, payload, _ = label_server.request('GET', api(BROKEN_NAME))
    assert status == 422 and 'cannot read this bag' in payload['error']


def test_rollout_times_frames_and_rewards_match_what_training_reads(label_server):
    status, detail, _ = label_server.request('GET', api(ROLLOUT_NAME))
    assert status == 200
    episode = read_episode(bag_dir(label_server))
    np.testing.assert_allclose(detail['times'], episode.timestamps, atol=1e-6)
    assert detail['duration'] == pytest.approx(episode.timestamps[-1], abs=1e-6)
    camera = detail['reference_camera']
    for index in (0, len(episode) // 2, len(episode) - 1):
        status, data, headers = label_server.request(
            'GET', f'{api(ROLLOUT_NAME, "frame")}&camera={camera}&index={index}')
        assert status == 200 and headers['Content-Type'] == 'image/png'
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(image, episode.images[camera][index])
    rewards = detail['rewards']
    assert rewards and rewards['model_id']
    assert len(rewards['times']) == len(rewards['progress']) == len(rewards['reward']) > 0
    assert all(0.0 <= p <= 1.0 for p in rewards['progress'])
    status, payload, _ = label_server.request(
        'GET', f'{api(ROLLOUT_NAME, "frame")}&camera={camera}&index={len(episode)}')
    assert status == 404 and payload['field'] == 'index'


def bag_bytes(server) -> dict:
    return {p.name: p.read_bytes() for p in bag_dir(server).iterdir()}


def test_label_round_trip(label_server):
    before_save = bag_bytes(label_server)
    status, saved, _ = label_server.request('PUT', api(ROLLOUT_NAME, 'label'), GOOD)
    assert status == 200, saved
    assert saved['status'] == 'labelled' and saved['revision']
    label = load_label(bag_dir(label_server))
    _, detail, _ = label_server.request('GET', api(ROLLOUT_NAME))
    assert label.episode_id == detail['episode_id'] and label.task == detail['task']
    assert label.duration == detail['duration'] and label.labeller == 'tester'
    assert (label.success, label.final_progress, label.catastrophic_time) == (False, 0.4, None)
    assert [(s.start, s.end, s.kind) for s in label.segments] == [
        (0.0, 1.0, 'progress_fast'), (1.0, 1.5, 'mistake')]
    assert label.labeller_kind == 'person' and label.bag_digest
    # Reopening shows the saved label, and the list says labelled.
    assert detail['label'] == label.to_json() and detail['revision'] == saved['revision']
    _, rows, _ = label_server.request('GET', '/api/rollouts')
    assert {r['name']: r['status'] for r in rows['rollouts']}[ROLLOUT_NAME] == 'labelled'
    # Saving again from the revision just read works; from an older one is a conflict.
    changed = dict(GOOD, final_progress=0.5, base_revision=saved['revision'])
    status, again, _ = label_server.request('PUT', api(ROLLOUT_NAME, 'label'), changed)
    assert status == 200 and load_label(bag_dir(label_server)).final_progress == 0.5
    before = label_path(bag_dir(label_server)).read_bytes()
    status, payload, _ = label_server.request('PUT', api(ROLLOUT_NAME, 'label'), changed)
    assert status == 409 and payload['field'] == 'base_revision'
    assert label_path(bag_dir(label_server)).read_bytes() == before
    assert leftovers(label_server) == [label_path(bag_dir(label_server)).name]
    assert bag_bytes(label_server) == before_save          # the bag is only read
    # A bag re-recorded since it was labelled: the list says stale.
    with open(bag_dir(label_server) / 'metadata.yaml', 'a') as stream:
        stream.write('# re-recorded\n')
    _, rows, _ = label_server.request('GET', '/api/rollouts')
    assert {r['name']: r['status'] for r in rows['rollouts']}[ROLLOUT_NAME] == 'stale'


def test_preview_is_the_curve_training_uses(label_server):
    status, preview, _ = label_server.request('POST', api(ROLLOUT_NAME, 'preview'), GOOD)
    assert status == 200
    _, detail, _ = label_server.request('GET', api(ROLLOUT_NAME))
    label = RolloutLabel.from_json({
        'episode_id': 'x', 'success': False, 'final_progress': 0.4,
        'duration': detail['duration'], 'segments': GOOD['segments']})
    np.testing.assert_allclose(preview['progress'], progress_targets(label, detail['times']),
                               atol=1e-6)
    assert preview['progress'][-1] == pytest.approx(0.4)
    assert leftovers(label_server) == []


TEN_MB = b'{"success": false, "final_progress": 0.5, "labeller": "' + b'x' * 10_000_000 + b'"}'


@pytest.mark.parametrize('path, body, field, message', [
    (api(ROLLOUT_NAME, 'label'), dict(GOOD, final_progress=1.5), 'final_progress', '[0, 1]'),
    (api(ROLLOUT_NAME, 'label'), dict(GOOD, final_progress=-0.1), 'final_progress', '[0, 1]'),
    (api(ROLLOUT_NAME, 'label'),
     dict(GOOD, segments=[{'start': 0.0, 'end': 1.0, 'kind': 'adjust'},
                          {'start': 0.5, 'end': 1.5, 'kind': 'mistake'}]),
     'segments[1]', 'must not overlap'),
    (api(ROLLOUT_NAME, 'label'),
     dict(GOOD, segments=[{'start': 0.0, 'end': 1.0, 'kind': 'teleport'}]),
     'segments[0].kind', 'unknown kind'),
    (api(ROLLOUT_NAME, 'label'), dict(GOOD, catastrophic_time=1e6), 'catastrophic_time',
     'outside the episode'),
    (api(ROLLOUT_NAME, 'label'), dict(GOOD, episode_id='other'), 'episode_id', 'unknown'),
    (api(ROLLOUT_NAME, 'label'), {'final_progress': 0.5}, 'success', 'missing'),
    (api('rollouts/../rollouts/' + ROLLOUT_NAME.split('/')[-1], 'label'), GOOD, 'name', '..'),
    (api('/etc/passwd', 'label'), GOOD, 'name', 'relative'),
    (api('..', 'label'), GOOD, 'name', '..'),
    (api(ROLLOUT_NAME, 'label'), TEN_MB, '', 'at most'),
    (api(ROLLOUT_NAME, 'label'), b'{"success": tru', '', 'not JSON'),
    (api(ROLLOUT_NAME, 'label'), b'{"success": false, "final_progress": NaN}', '', 'not JSON'),
], ids=['progress above 1', 'progress below 0', 'overlapping segments', 'unknown kind',
        'catastrophe past the end', 'field the bag supplies', 'missing success',
        'name with ..', 'absolute name', 'name ..', '10 MB body', 'broken JSON', 'NaN'])
def test_bad_input_is_rejected_and_nothing_is_written(label_server, path, body, field,
                                                      message):
    raw = body if isinstance(body, bytes) else None
    status, payload, _ = label_server.request('PUT', path, None if raw else body, raw=raw)
    assert status == 400, payload
    assert message in payload['error'] and payload['field'] == field
    assert leftovers(label_server) == []
    # The connection the oversized body came on is closed; the server carries on.
    assert label_server.request('GET', api(ROLLOUT_NAME))[0] == 200


def test_writes_need_json_and_this_host(label_server):
    raw = json.dumps(GOOD).encode()
    status, payload, _ = label_server.request('PUT', api(ROLLOUT_NAME, 'label'), raw=raw,
                                              headers={'Content-Type': 'text/plain'})
    assert status == 400 and payload['field'] == 'Content-Type'
    status, payload, _ = label_server.request('GET', '/api/rollouts',
                                              headers={'Host': 'attacker.example:80'})
    assert status == 400 and payload['field'] == 'Host'
    assert leftovers(label_server) == []


def test_page_is_served_with_a_policy_that_keeps_it_offline(label_server):
    status, page, headers = label_server.request('GET', '/')
    assert status == 200 and b'/static/app.js' in page
    assert "default-src 'none'" in headers['Content-Security-Policy']
    assert b'http://' not in page and b'https://' not in page
    for name in ('app.js', 'style.css'):
        status, data, _ = label_server.request('GET', f'/static/{name}')
        assert status == 200 and b'http://' not in data and b'https://' not in data
    assert label_server.request('GET', '/static/../label_server.py')[0] == 404


def test_concurrent_saves_never_leave_a_corrupt_file(label_server):
    """Several clients (tabs) saving the same rollout at once: the file is always one label."""
    errors, written = [], []

    def client(k: int) -> None:
        for i in range(6):
            body = dict(GOOD, final_progress=round(0.01 * (10 * k + i), 2))
            status, payload, _ = label_server.request('PUT', api(ROLLOUT_NAME, 'label'), body)
            if status != 200:
                errors.append(payload)
            written.append(body['final_progress'])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    path = label_path(bag_dir(label_server))
    for thread in threads:
        thread.start()
    reads = 0
    while any(t.is_alive() for t in threads):
        if path.exists():
            json.loads(path.read_text())        # never a partial file
            reads += 1
    for thread in threads:
        thread.join()
    assert not errors and reads > 0
    assert load_label(bag_dir(label_server)).final_progress in written
    assert leftovers(label_server) == [path.name]


def test_cli_rejects_bad_arguments_with_one_line(tmp_path, capsys):
    assert server_module.main([str(tmp_path / 'missing')]) == 2
    assert 'is not a directory' in capsys.readouterr().err
    assert server_module.main([str(tmp_path)]) == 2
    assert 'no rosbag2 bags' in capsys.readouterr().err


def test_cli_reports_a_port_in_use(label_server, capsys):
    assert server_module.main([str(label_server.root), '--port', str(label_server.port)]) == 2
    assert 'is in use' in capsys.readouterr().err


def test_every_camera_is_served_on_the_reference_clock(tmp_path):
    """Two cameras at different rates (a zstd-chunked bag): each has its own frame times."""
    bag = tmp_path / 'bags' / 'two_cameras'
    start = 5_000_000_000
    with bag_io.BagWriter(bag) as writer:
        for k in range(20):                      # wrist at 20 Hz, scene at 10 Hz
            stamp = start + k * 50_000_000
            writer.write(image_topic('wrist'), bag_io.image_message(
                np.full((8, 12, 3), k, np.uint8), stamp, 'wrist'), stamp)
            if k % 2 == 0:
                writer.write(image_topic('scene'), bag_io.image_message(
                    np.full((16, 16, 3), 100 + k, np.uint8), stamp + 1_000_000, 'scene'), stamp)
    server = RunningServer(tmp_path / 'bags')
    try:
        status, detail, _ = server.request('GET', api('two_cameras'))
        assert status == 200
        assert detail['reference_camera'] == 'scene' and detail['frames'] == 10
        np.testing.assert_allclose(detail['cameras']['scene']['times'], np.arange(10) * 0.1)
        np.testing.assert_allclose(detail['cameras']['wrist']['times'],
                                   np.arange(20) * 0.05 - 0.001, atol=1e-9)
        assert detail['episode_id'] == 'two_cameras' and detail['recorded_success'] is None
        assert detail['rewards'] is None
        status, data, _ = server.request('GET', f'{api("two_cameras", "frame")}&camera=wrist'
                                                '&index=7')
        assert status == 200
        assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) == 7).all()
    finally:
        server.stop()
