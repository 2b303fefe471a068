"""Labelling page on a long rollout: how fast a 10-minute bag opens and frames arrive.

1. Write one rollout bag of --minutes at --rate Hz with the policy node's own recorder
   (spiral_policy.rollout_recorder: unchunked MCAP, as on the robot): a camera, joint states,
   /sarm2/stage_reward and the /episode/metadata records (reused if already in --work-dir).
2. Serve it with label_rollouts' server (in this process, real HTTP on 127.0.0.1) and time what
   a person waits for: the rollout list (indexes the bag), the rollout page's data (frame
   times, the live SARM2 curves), the first frame, then random uncached and cached frames.
3. Baseline, same run: reading the whole bag into an episode as training does
   (bag_dataset.read_episode), i.e. what a viewer without an index would wait for.

The last stdout line is one JSON object (seconds unless named _ms).

    make bench NAME=label_server ARGS='--quick'
"""

import argparse
import http.client
import json
from pathlib import Path
import sys
import tempfile
import threading
import time
from urllib.parse import quote

import numpy as np
from tqdm import tqdm

from sarm2_common import bag_io
from sarm2_common.bag_dataset import read_episode
from sarm2_common.topics import image_topic, JOINT_STATES_TOPIC, STAGE_REWARD_TOPIC
from sarm2_reward.label_server import make_server
from spiral_policy.rollout_recorder import RolloutRecorder

CAMERA = 'corner'
TASK = 'drawer-open-v3'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='64 px frames (the demo size) instead of --image-size')
    parser.add_argument('--minutes', type=float, default=10.0, help='rollout length')
    parser.add_argument('--rate', type=float, default=20.0, help='frames per second')
    parser.add_argument('--image-size', type=int, default=160, help='square frame size (px)')
    parser.add_argument('--frames', type=int, default=50, help='random frames to fetch')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', type=Path, default=None,
                        help='keep the bag here (default: a temporary directory)')
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size = 64
    return args


def stage_reward_message(stamp_ns: int, index: int, progress: float, reward: float):
    """Build a StageReward as the reward node publishes it (the fields the page plots)."""
    return bag_io.typestore().types[bag_io.STAGE_REWARD_TYPE](
        header=bag_io.header(stamp_ns, CAMERA), task=TASK, instruction='open the drawer',
        episode_id='bench', frame_index=index, primitive_id=-1, primitive_name='',
        primitive_confidence=0.0, group_id=-1, group_name='',
        primitive_probabilities=np.zeros(23, np.float32),
        group_probabilities=np.zeros(4, np.float32), progress=progress, value=progress - 1.0,
        reward=reward, success_probability=progress, model_id='bench', inference_time=0.01)


def write_rollout(directory: Path, minutes: float, rate: float, size: int) -> Path:
    """Record a synthetic rollout through the policy node's recorder; return the bag."""
    store = bag_io.typestore()
    frames = int(round(minutes * 60 * rate))
    camera_topic = image_topic(CAMERA)
    topics = {camera_topic: bag_io.IMAGE_TYPE, JOINT_STATES_TOPIC: bag_io.JOINT_STATE_TYPE,
              STAGE_REWARD_TOPIC: bag_io.STAGE_REWARD_TYPE,
              bag_io.METADATA_TOPIC: bag_io.METADATA_TYPE}
    metadata = {'source': 'bench', 'policy_id': 'bench-policy', 'episode_id': 'bench'}
    recorder = RolloutRecorder(directory, store, flush_period=1.0)
    bag = recorder.start('bench', topics, metadata)
    start_ns = 1_700_000_000 * 1_000_000_000
    period_ns = int(1e9 / rate)

    def record(topic, message, stamp_ns):
        if not recorder.write(topic, bytes(store.serialize_cdr(message, message.__msgtype__)),
                              stamp_ns):
            raise RuntimeError(f'recorder dropped a {topic} message')

    record(bag_io.METADATA_TOPIC, bag_io.metadata_message(
        start_ns, bag_io.METADATA_START, 'bench', TASK, 'open the drawer',
        metadata_json=json.dumps(metadata)), start_ns)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    previous = 0.0
    for k in tqdm(range(frames), desc='recording', unit='frame', file=sys.stderr):
        stamp = start_ns + k * period_ns
        # A moving pattern: every frame differs, so the PNG sizes are realistic.
        shift = (k * 3) % size
        image = np.stack([np.roll(ramp, shift)[None, :].repeat(size, 0),
                          np.roll(ramp, shift)[:, None].repeat(size, 1),
                          np.full((size, size), (k * 7) % 256, np.float32)], axis=2)
        record(camera_topic, bag_io.image_message(image.astype(np.uint8), stamp, CAMERA),
               stamp)
        record(JOINT_STATES_TOPIC, bag_io.joint_state_message(
            [f'joint_{i}' for i in range(9)], np.full(9, k * 1e-3), stamp), stamp + 1)
        progress = k / max(1, frames - 1)
        record(STAGE_REWARD_TOPIC, stage_reward_message(stamp, k, progress,
                                                           progress - previous), stamp + 2)
        previous = progress
        recorder.flush_if_due()
    end_ns = start_ns + frames * period_ns
    record(bag_io.METADATA_TOPIC, bag_io.metadata_message(
        end_ns, bag_io.METADATA_END, 'bench', TASK, 'open the drawer', success=False,
        reason='time_limit', steps=frames, metadata_json=json.dumps(metadata)), end_ns)
    recorder.stop(metadata)
    return bag


def get(port: int, path: str) -> tuple[float, bytes]:
    """GET path on a fresh connection; return (seconds, body)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
    connection.request('GET', path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f'GET {path}: HTTP {response.status}: {body[:300]!r}')
    return time.perf_counter() - start, body


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix='bench_label_'))
    root = work / f'rollouts-{args.minutes:g}min-{args.rate:g}hz-{args.image_size}px'
    bag = root / 'bench'
    if not bag_io.is_finished_bag(bag):
        if bag.exists():
            raise SystemExit(f'{bag} is an unfinished recording: delete it and run again')
        write_rollout(root, args.minutes, args.rate, args.image_size)
    size_mb = sum(f.stat().st_size for f in bag.glob('*.mcap')) / 1e6
    print(f'bag: {bag} ({size_mb:.0f} MB)', flush=True)

    server = make_server(root, '127.0.0.1', 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    name = quote('bench')
    list_s, _ = get(port, '/api/rollouts')
    detail_s, body = get(port, f'/api/rollout?name={name}')
    detail = json.loads(body)
    frames = detail['frames']
    frame_path = f'/api/frame?name={name}&camera={CAMERA}&index='
    first_s, _ = get(port, frame_path + '0')
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(np.arange(1, frames), size=min(args.frames, frames - 1), replace=False)
    uncached = [get(port, frame_path + str(i))[0] for i in picks]
    cached = [get(port, frame_path + str(i))[0] for i in picks]
    server.shutdown()
    server.server_close()
    print(f'list (indexes the bag) {list_s:.2f} s, rollout data {detail_s:.2f} s, first frame '
          f'{first_s * 1e3:.0f} ms, random frame median {np.median(uncached) * 1e3:.1f} ms',
          flush=True)

    start = time.perf_counter()
    episode = read_episode(bag)
    baseline_s = time.perf_counter() - start
    assert len(episode) == frames, (len(episode), frames)
    open_s = list_s + detail_s + first_s
    result = {
        'bench': 'label_server', 'minutes': args.minutes, 'rate_hz': args.rate,
        'image_size': args.image_size, 'frames': frames, 'bag_mb': round(size_mb, 1),
        'list_s': round(list_s, 3), 'rollout_data_s': round(detail_s, 3),
        'first_frame_ms': round(first_s * 1e3, 1),
        'open_to_first_frame_s': round(open_s, 3),
        'frame_uncached_median_ms': round(float(np.median(uncached)) * 1e3, 1),
        'frame_uncached_p95_ms': round(float(np.percentile(uncached, 95)) * 1e3, 1),
        'frame_cached_median_ms': round(float(np.median(cached)) * 1e3, 2),
        'baseline_read_whole_bag_s': round(baseline_s, 2),
        'speedup_open_vs_read_whole_bag': round(baseline_s / open_s, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
