"""Turn demonstration and rollout bags (see ``bag_io``) into training episodes.

Frames follow the first camera (sorted by name): every other stream is matched to each of its
image stamps, so demo bags (all streams stamped alike) and live rollout bags (streams arriving at
their own rates) read the same way:

- other cameras, joint states, ground truth: the message with the nearest header stamp
  (ground truth only within half a frame, else the frame is unlabelled);
- actions (no header): the first action logged at or after the frame's image was logged and
  before the next frame's was, else the previous frame's action (a zero vector before the
  first). Log times, not stamps: a rollout recorder logs the image when the policy uses it and
  the action right after, both on its own clock, while the image's stamp is the camera's.

Bad bags never stop a dataset: a bag that cannot be read, or whose checksums show altered bytes,
is logged and skipped; a bag cut short (no metadata.yaml, e.g. the recorder was killed) is read
up to its last complete record and marked ``metadata['complete'] = False``.
"""

import json
import logging
from pathlib import Path

import numpy as np

from sarm2_common.bag_io import (ACTION_TOPIC, BAG_METADATA_FILE, BASE_ACTION_TOPIC,
                                 GROUND_TRUTH_TOPIC, image_from_message, is_bag_dir, METADATA_END,
                                 METADATA_TOPIC, stamp_to_ns, typestore)
from sarm2_common.bag_playback import iter_raw_messages, ReadReport
from sarm2_common.episode import Episode, UNLABELLED
from sarm2_common.topics import camera_of_topic, JOINT_STATES_TOPIC

LOG = logging.getLogger(__name__)


def find_bags(root: str | Path) -> list[Path]:
    """Bag directories at or below ``root``, sorted by path."""
    root = Path(root)
    if is_bag_dir(root):
        return [root]
    if not root.is_dir():
        return []
    found = {path.parent for path in root.rglob(BAG_METADATA_FILE)}
    found |= {path.parent for path in root.rglob('*.mcap')}
    return sorted(found)


def read_episodes(paths: str | Path | list[str | Path]) -> list[Episode]:
    """Read every bag under ``paths`` (a directory of bags, one bag, or a list of bags)."""
    roots = [paths] if isinstance(paths, (str, Path)) else list(paths)
    bags = [bag for root in roots for bag in find_bags(root)]
    for root in roots:
        if not find_bags(root):
            LOG.warning('%s: no rosbag2 bags found', root)
    episodes = []
    for bag in bags:
        try:
            episodes.append(read_episode(bag))
        except Exception as error:  # noqa: BLE001 - any unreadable bag is reported and skipped
            LOG.warning('skipping bag %s: %s', bag, error)
    return episodes


def read_episode(bag: str | Path) -> Episode:
    """Read one bag into an Episode; raise ValueError if it is corrupt or has no usable frames.

    Every bag goes through the tolerant reader of ``bag_playback``, which verifies the MCAP
    checksums: a bag whose recorded bytes were altered is refused (a training set must not
    learn from altered images), while one cut short is read up to its last readable record.
    """
    bag = Path(bag)
    report = ReadReport(bag)
    store = typestore()
    messages = [(m.topic, m.timestamp_ns, store.deserialize_cdr(m.data, m.msgtype))
                for m in iter_raw_messages(bag, report)]
    if report.corrupt:
        raise ValueError('; '.join(report.problems))
    if report.problems:
        LOG.info('%s: %s', bag, '; '.join(report.problems))
    messages.sort(key=lambda item: item[1])
    return _assemble(bag, messages, (bag / BAG_METADATA_FILE).is_file())


def _nearest(stamps: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the nearest stamp for each target (stamps sorted, non-empty)."""
    right = np.clip(np.searchsorted(stamps, targets), 0, len(stamps) - 1)
    left = np.clip(right - 1, 0, len(stamps) - 1)
    choose_left = np.abs(targets - stamps[left]) <= np.abs(stamps[right] - targets)
    return np.where(choose_left, left, right)


def align_by_log_time(stream: list[tuple[int, np.ndarray]],
                       frame_log_times: np.ndarray) -> np.ndarray:
    """One row per frame: the first array logged at or after the frame, before the next frame.

    Commands have no header; they follow the frame they answer in log time. A frame without its
    own command repeats the previous one (zeros before the first).
    """
    length = len(frame_log_times)
    size = len(stream[0][1]) if stream else 0
    rows = np.zeros((length, size), dtype=np.float32)
    if not stream:
        return rows
    stream.sort(key=lambda item: item[0])
    stamps = np.array([stamp for stamp, _ in stream], dtype=np.int64)
    first_at_or_after = np.searchsorted(stamps, frame_log_times, side='left')
    previous = np.zeros(size, dtype=np.float32)
    for k in range(length):
        index = first_at_or_after[k]
        next_frame = frame_log_times[k + 1] if k + 1 < length else np.iinfo(np.int64).max
        if index < len(stream) and stamps[index] < next_frame:
            previous = stream[index][1]
        rows[k] = previous
    return rows


def _assemble(bag: Path, messages: list[tuple[str, int, object]], complete: bool) -> Episode:
    images: dict[str, list[tuple[int, object]]] = {}
    joints, actions, base_actions, truths, records = [], [], [], [], []
    for topic, log_time, message in messages:
        camera = camera_of_topic(topic)
        if camera is not None:
            images.setdefault(camera, []).append(
                (stamp_to_ns(message.header.stamp), message, log_time))
        elif topic == JOINT_STATES_TOPIC:
            joints.append((stamp_to_ns(message.header.stamp),
                           np.asarray(message.position, dtype=np.float32)))
        elif topic == ACTION_TOPIC:
            actions.append((log_time, np.asarray(message.data, dtype=np.float32)))
        elif topic == BASE_ACTION_TOPIC:
            base_actions.append((log_time, np.asarray(message.data, dtype=np.float32)))
        elif topic == GROUND_TRUTH_TOPIC:
            truths.append((stamp_to_ns(message.header.stamp), message))
        elif topic == METADATA_TOPIC:
            records.append(message)
    if not images:
        raise ValueError('no camera images')
    if not joints:
        raise ValueError(f'no {JOINT_STATES_TOPIC} messages')

    for stream in images.values():
        stream.sort(key=lambda item: item[0])
    reference = sorted(images)[0]
    frame_stamps = np.array([item[0] for item in images[reference]], dtype=np.int64)
    frame_log_times = np.array([item[2] for item in images[reference]], dtype=np.int64)
    length = len(frame_stamps)

    frames = {}
    for camera, stream in images.items():
        stamps = np.array([item[0] for item in stream], dtype=np.int64)
        picks = _nearest(stamps, frame_stamps)
        frames[camera] = np.stack([image_from_message(stream[i][1]) for i in picks])

    joints.sort(key=lambda item: item[0])
    joint_stamps = np.array([stamp for stamp, _ in joints], dtype=np.int64)
    joint_positions = np.stack([joints[i][1] for i in _nearest(joint_stamps, frame_stamps)])

    action_rows = align_by_log_time(actions, frame_log_times)

    primitive_ids = np.full(length, UNLABELLED, dtype=np.int64)
    last_truth_success = False
    if truths:
        truths.sort(key=lambda item: item[0])
        truth_stamps = np.array([stamp for stamp, _ in truths], dtype=np.int64)
        gaps = np.diff(frame_stamps)
        tolerance = int(np.median(gaps) // 2) if len(gaps) else 0
        for k, index in enumerate(_nearest(truth_stamps, frame_stamps)):
            if abs(int(truth_stamps[index]) - int(frame_stamps[k])) <= tolerance:
                primitive_ids[k] = truths[index][1].expert_primitive_id
        last_truth_success = bool(truths[-1][1].success)

    start = next((r for r in records if r.kind != METADATA_END), None)
    end = next((r for r in reversed(records) if r.kind == METADATA_END), None)
    described = end or start
    metadata = {}
    if described is not None and described.metadata_json:
        try:
            metadata = dict(json.loads(described.metadata_json))
        except (ValueError, TypeError):
            LOG.warning('%s: metadata_json is not a JSON object; ignored', bag)
    metadata.update(bag_path=str(bag), complete=complete and end is not None)
    if base_actions:
        # Rollouts: the policy's raw output before the safety filter (SPIRAL's base action).
        metadata['base_actions'] = align_by_log_time(base_actions, frame_log_times)
    if described is not None:
        metadata.update(seed=int(described.seed))
    if end is not None:
        metadata.update(reason=end.reason, steps=int(end.steps))

    return Episode(
        episode_id=described.episode_id if described is not None else bag.name,
        task=described.task if described is not None else '',
        instruction=described.instruction if described is not None else '',
        images=frames,
        joint_positions=joint_positions,
        actions=action_rows,
        primitive_ids=primitive_ids,
        timestamps=(frame_stamps - frame_stamps[0]).astype(np.float64) / 1e9,
        success=bool(end.success) if end is not None else last_truth_success,
        metadata=metadata)
