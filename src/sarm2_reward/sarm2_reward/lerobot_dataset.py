"""Read LeRobot-format datasets from disk into training episodes.

Supported layouts (``meta/info.json`` ``codebase_version``):

- v2.x: ``meta/episodes.jsonl`` + ``meta/tasks.jsonl``, one parquet file per episode
  (``info['data_path']``) and one mp4 per episode and camera (``info['video_path']``);
- v3.x: ``meta/episodes/*/*.parquet`` + ``meta/tasks.parquet``, parquet and mp4 files shared by
  several episodes (rows ``dataset_from_index..dataset_to_index``, video clips
  ``from_timestamp..to_timestamp``).

Cameras are the features of dtype ``video`` (mp4, decoded with PyAV) or ``image`` (PNG/JPEG
bytes in the parquet); the camera name is the last part of the key (``observation.images.front`` ->
``front``). The joint state is ``observation.state``, the action ``action``.

Subtask annotations (the SARM columns of the episodes metadata: ``sparse_subtask_names`` /
``_start_frames`` / ``_end_frames``, their ``dense_`` counterparts, or unprefixed
``subtask_*``) become primitive labels through ``subtask_to_primitive``: a vocabulary name as it
is, then the user's mapping (``--primitive-map`` JSON), then a short table of common synonyms by
first word ("grasp the cube" -> pick_grab). Frames of an unmapped subtask, or without annotation,
are unlabelled (-1): they still train the value head, not the stage heads.

An episode is successful unless the data says otherwise (a ``success`` column in the episodes
metadata, or ``next.success`` in the frames: the last frame's flag), because LeRobot datasets
are almost always successful demonstrations.

Datasets written by ``lerobot_export`` also carry the catalogue task name (``task_name`` in the
episodes metadata; otherwise the task is the instruction) and per-frame SARM2 columns
(``progress``, ``reward``, ``primitive_id``, ``success_probability``), returned in
``metadata['rewards']``.
"""

import json
import logging
from pathlib import Path
import re

import cv2
import numpy as np

from sarm2_common.episode import Episode, UNLABELLED
from sarm2_common.vocabulary import PRIMITIVES, primitive_id

LOG = logging.getLogger(__name__)

STATE_KEY = 'observation.state'
ACTION_KEY = 'action'
IMAGE_KEY_PREFIX = 'observation.images.'
# Per-frame reward columns, named as the method's authors store them (see lerobot_export).
PROGRESS_KEY = 'progress'
REWARD_KEY = 'reward'
PRIMITIVE_KEY = 'primitive_id'
SUCCESS_PROBABILITY_KEY = 'success_probability'
REWARD_COLUMNS = (PROGRESS_KEY, REWARD_KEY, PRIMITIVE_KEY, SUCCESS_PROBABILITY_KEY)
# LeRobot's RA-BC reads SARM progress from this file at the dataset root.
RABC_PROGRESS_FILE = 'sarm_progress.parquet'
# Episode metadata columns of an exported dataset kept in Episode.metadata.
EPISODE_FIELDS = ('episode_id', 'source_bag', 'reward_source', 'rollout_label', 'seed',
                  'reason')

# First word of a free-text subtask name -> vocabulary primitive.
SYNONYMS = {
    'approach': 'reach', 'move': 'reach', 'go': 'reach', 'reach': 'reach',
    'grasp': 'pick_grab', 'grab': 'pick_grab', 'pick': 'pick_grab', 'lift': 'pick_grab',
    'place': 'place', 'put': 'place', 'drop': 'place', 'release': 'place', 'set': 'place',
    'pour': 'pour_dump', 'dump': 'pour_dump', 'scoop': 'scoop', 'pull': 'pull', 'open': 'pull',
    'push': 'press', 'press': 'press', 'close': 'press', 'clamp': 'clamp',
    'wipe': 'erase', 'erase': 'erase', 'clean': 'erase', 'sweep': 'sweep', 'slide': 'sweep',
    'insert': 'insert', 'install': 'install', 'hang': 'hang', 'fold': 'fold_flatten',
    'flatten': 'fold_flatten', 'rotate': 'rotate_turn', 'turn': 'rotate_turn',
    'screw': 'screw_unscrew', 'unscrew': 'screw_unscrew', 'tie': 'tie', 'untie': 'untie',
    'wrap': 'wrap', 'roll': 'roll', 'zip': 'zip_unzip', 'unzip': 'zip_unzip', 'pass': 'pass',
    'hand': 'pass', 'idle': 'null', 'wait': 'null', 'done': 'null',
}
ANNOTATION_PREFIXES = ('sparse_', 'dense_', '')


def is_lerobot_dataset(path: str | Path) -> bool:
    """Whether ``path`` looks like a LeRobot dataset root."""
    return (Path(path) / 'meta' / 'info.json').is_file()


def subtask_to_primitive(name: str, mapping: dict[str, str] | None = None) -> int:
    """Vocabulary id of a subtask name, or -1 when it cannot be mapped."""
    normalized = re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')
    if normalized in PRIMITIVES:
        return primitive_id(normalized)
    if mapping and name in mapping:
        return primitive_id(mapping[name])
    if mapping and normalized in mapping:
        return primitive_id(mapping[normalized])
    first = normalized.split('_')[0] if normalized else ''
    return primitive_id(SYNONYMS[first]) if first in SYNONYMS else UNLABELLED


def load_primitive_map(path: str | Path) -> dict[str, str]:
    """Read a JSON object {subtask name: vocabulary primitive}; bad entries raise ValueError."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f'primitive map {path}: {exc}') from None
    if not isinstance(mapping, dict):
        raise ValueError(f'primitive map {path}: expected a JSON object')
    for name, primitive in mapping.items():
        try:
            primitive_id(primitive)
        except ValueError as exc:
            raise ValueError(f'primitive map {path}: entry {name!r}: {exc}') from None
    return mapping


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_parquet_rows(paths: list[Path]) -> list[dict]:
    import pyarrow.parquet as pq
    rows = []
    for path in paths:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _resize(image: np.ndarray, image_size: int | None) -> np.ndarray:
    if image_size is None or image.shape[:2] == (image_size, image_size):
        return image
    return cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)


def _decode_video(path: Path, start: float, timestamps: np.ndarray,
                  image_size: int | None) -> np.ndarray:
    """Frames of ``path`` nearest to ``start + timestamps``, as uint8 [T, H, W, 3]."""
    import av
    if not path.is_file():
        raise FileNotFoundError(f'video {path} is missing')
    wanted = start + timestamps
    times, frames = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if start > 0:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            time = float(frame.pts * stream.time_base)
            if time < wanted[0] - 0.5:
                continue
            if time > wanted[-1] + 0.5:
                break
            times.append(time)
            frames.append(_resize(frame.to_ndarray(format='rgb24'), image_size))
    if not frames:
        raise ValueError(f'video {path}: no frames between {wanted[0]:.3f}s and {wanted[-1]:.3f}s')
    index = np.abs(np.array(times)[None, :] - wanted[:, None]).argmin(axis=1)
    return np.stack([frames[i] for i in index])


def _decode_image_column(values: list, image_size: int | None) -> np.ndarray:
    images = []
    for value in values:
        data = value['bytes'] if isinstance(value, dict) else value
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError('an image cell could not be decoded')
        images.append(_resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), image_size))
    return np.stack(images)


def _labels(meta: dict, length: int, mapping: dict | None, unmapped: set) -> np.ndarray:
    labels = np.full(length, UNLABELLED, dtype=np.int64)
    for prefix in ANNOTATION_PREFIXES:
        names = meta.get(f'{prefix}subtask_names')
        if names is None or len(names) == 0:
            continue
        starts = meta.get(f'{prefix}subtask_start_frames') or []
        ends = meta.get(f'{prefix}subtask_end_frames') or []
        for name, start, end in zip(names, starts, ends):
            primitive = subtask_to_primitive(str(name), mapping)
            if primitive == UNLABELLED:
                unmapped.add(str(name))
            labels[max(0, int(start)):min(length, int(end))] = primitive
        break
    return labels


def _success(meta: dict, frames: dict) -> bool:
    if 'success' in meta:
        return bool(meta['success'])
    if 'next.success' in frames:
        return bool(frames['next.success'][-1])
    return True


class LeRobotReader:
    """One LeRobot dataset root; ``episodes()`` reads them all."""

    def __init__(self, root: str | Path, image_size: int | None = None,
                 primitive_map: dict[str, str] | None = None):
        self.root = Path(root)
        info_path = self.root / 'meta' / 'info.json'
        try:
            self.info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f'{info_path}: cannot read LeRobot info ({exc})') from None
        self.version = str(self.info.get('codebase_version', 'v2.1'))
        self.image_size = image_size
        self.mapping = primitive_map
        features = self.info.get('features', {})
        self.cameras = {key: key.split('.')[-1] for key, spec in features.items()
                        if spec.get('dtype') in ('video', 'image')}
        if not self.cameras:
            raise ValueError(f'{info_path}: no image or video features')
        if STATE_KEY not in features:
            raise ValueError(f'{info_path}: no {STATE_KEY} feature')
        self.fps = float(self.info.get('fps', 30))
        self.unmapped: set[str] = set()

    def _tasks(self) -> dict[int, str]:
        jsonl = self.root / 'meta' / 'tasks.jsonl'
        if jsonl.is_file():
            return {int(r['task_index']): r['task'] for r in _read_jsonl(jsonl)}
        rows = _read_parquet_rows([self.root / 'meta' / 'tasks.parquet'])
        # v3 keeps the task string as the pandas index, stored as column '__index_level_0__'.
        return {int(r['task_index']): r.get('task', r.get('__index_level_0__')) for r in rows}

    def _episode_meta(self) -> list[dict]:
        jsonl = self.root / 'meta' / 'episodes.jsonl'
        if jsonl.is_file():
            return _read_jsonl(jsonl)
        files = sorted((self.root / 'meta' / 'episodes').rglob('*.parquet'))
        if not files:
            raise ValueError(f'{self.root}: no meta/episodes.jsonl or meta/episodes/*.parquet')
        return sorted(_read_parquet_rows(files), key=lambda r: r['episode_index'])

    def episodes(self) -> list[Episode]:
        """Every readable episode; unreadable ones are logged and skipped."""
        tasks = self._tasks()
        episodes = []
        cache: dict[Path, list[dict]] = {}
        for meta in self._episode_meta():
            try:
                episodes.append(self._episode(meta, tasks, cache))
            except (OSError, ValueError, KeyError) as exc:
                LOG.warning('%s: skipping episode %s: %s', self.root, meta.get('episode_index'),
                            exc)
        if self.unmapped:
            LOG.warning('%s: subtasks not mapped onto the primitive vocabulary (left '
                        'unlabelled; map them with a primitive map): %s', self.root,
                        ', '.join(sorted(self.unmapped)))
        return episodes

    def _frames(self, meta: dict, cache: dict) -> dict[str, list]:
        index = int(meta['episode_index'])
        chunk_size = int(self.info.get('chunks_size', 1000))
        if self.version.startswith('v2'):
            path = self.root / self.info['data_path'].format(
                episode_chunk=index // chunk_size, episode_index=index)
        else:
            path = self.root / self.info['data_path'].format(
                chunk_index=meta['data/chunk_index'], file_index=meta['data/file_index'])
        if path not in cache:
            cache.clear()  # one shared file at a time keeps memory bounded
            cache[path] = _read_parquet_rows([path])
        rows = [r for r in cache[path] if int(r['episode_index']) == index]
        if not rows:
            raise ValueError(f'{path}: no rows for episode {index}')
        rows.sort(key=lambda r: r.get('frame_index', 0))
        return {key: [r[key] for r in rows] for key in rows[0]}

    def _video_path(self, key: str, meta: dict) -> tuple[Path, float]:
        index = int(meta['episode_index'])
        chunk_size = int(self.info.get('chunks_size', 1000))
        if self.version.startswith('v2'):
            return self.root / self.info['video_path'].format(
                episode_chunk=index // chunk_size, video_key=key, episode_index=index), 0.0
        return self.root / self.info['video_path'].format(
            video_key=key, chunk_index=meta[f'videos/{key}/chunk_index'],
            file_index=meta[f'videos/{key}/file_index']), \
            float(meta.get(f'videos/{key}/from_timestamp', 0.0))

    def _episode(self, meta: dict, tasks: dict[int, str], cache: dict) -> Episode:
        frames = self._frames(meta, cache)
        length = len(frames[STATE_KEY])
        timestamps = np.asarray(frames.get('timestamp', np.arange(length) / self.fps),
                                dtype=np.float64)
        timestamps = timestamps - timestamps[0]
        images = {}
        for key, camera in self.cameras.items():
            if self.info['features'][key]['dtype'] == 'image':
                images[camera] = _decode_image_column(frames[key], self.image_size)
            else:
                path, start = self._video_path(key, meta)
                images[camera] = _decode_video(path, start, timestamps, self.image_size)
        if 'task_index' in frames:
            instruction = tasks.get(int(frames['task_index'][0]), '')
        else:
            instruction = (meta.get('tasks') or [''])[0]
        state = np.asarray(frames[STATE_KEY], dtype=np.float32).reshape(length, -1)
        actions = np.asarray(frames[ACTION_KEY], dtype=np.float32).reshape(length, -1) \
            if ACTION_KEY in frames else np.zeros((length, 0), np.float32)
        metadata = {'source': 'lerobot', 'dataset': str(self.root), 'fps': self.fps,
                    **{name: meta[name] for name in EPISODE_FIELDS if name in meta}}
        rewards = {name: np.asarray(frames[name], dtype=np.float64) for name in REWARD_COLUMNS
                   if name in frames}
        if rewards:
            metadata['rewards'] = rewards
        return Episode(
            episode_id=f'{self.root.name}/episode_{int(meta["episode_index"]):06d}',
            task=meta.get('task_name') or instruction, instruction=instruction, images=images,
            joint_positions=state, actions=actions,
            primitive_ids=_labels(meta, length, self.mapping, self.unmapped),
            timestamps=timestamps, success=_success(meta, frames), metadata=metadata)


def read_lerobot_dataset(root: str | Path, image_size: int | None = None,
                         primitive_map: dict[str, str] | None = None) -> list[Episode]:
    """All episodes of the LeRobot dataset at ``root`` (see the module doc)."""
    return LeRobotReader(root, image_size, primitive_map).episodes()
