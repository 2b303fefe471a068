"""Export demonstration and rollout bags to a LeRobot v3.0 dataset, with SARM2 reward columns.

One bag (see ``bag_io``) becomes one episode. The dataset follows LeRobot's v3.0 layout::

    meta/info.json                    fps, features, path templates, totals
    meta/stats.json                   min / max / mean / std / count per feature
    meta/tasks.parquet                task string (pandas index ``task``) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode (see below)
    data/chunk-000/file-000.parquet            one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4   episodes back to back
    sarm_progress.parquet             SARM progress for LeRobot's RA-BC (when any is known)

**Time base.** The first camera (sorted by name) is the clock. LeRobot needs a constant frame
rate (``timestamp = frame_index / fps``, and video frames are looked up by that time), so rows sit
on a regular grid at ``fps`` anchored at the episode's first frame, and every camera frame goes to
the nearest grid slot. A slot without a frame of its own repeats the previous frame (a frame the
policy skipped); when two frames land in one slot the later one is kept. Demonstration bags are
already regular, so there every frame is one row. Each row then takes, causally (never from the
future):

- other cameras and ``observation.state`` (``/joint_states``): the newest message stamped at or
  before the row's time (its camera frame's stamp; a repeated row's time is its grid time).
  Frames before the first joint state have no state and are dropped;
- ``action``: the command logged after the row's frame was logged and before the next row's
  (``bag_dataset.align_by_log_time``: the executed ``/sim/action`` of rollouts, after the
  safety filter, or the demonstrated action); a row without a command of its own repeats the
  previous one;
- SARM2 columns from the bag's live ``StageReward`` messages (stamped with the camera frame they
  describe): ``progress``, ``primitive_id`` and ``success_probability`` of the newest message at
  or before the row, and ``reward`` = the sum of the dense rewards of the messages since the
  previous row, so the episode's return is kept. With ``relabel_checkpoint`` a SARM2 checkpoint
  labels the exported rows instead (``inference.predict_episode`` + ``labeling.dense_rewards``).
  Rows with no reward yet hold NaN (``primitive_id`` -1).

The column names follow the method's authors: opensarm's labeller writes per-frame ``progress``
and ``reward`` (the increase of progress); LeRobot's RA-BC (``rewards/sarm/rabc.py``) reads
``sarm_progress.parquet`` at the dataset root with ``index``, ``episode_index``, ``frame_index``
and ``progress_<head>``. SARM2 has one progress head, written as both ``progress_sparse`` and
``progress_dense``.

**Episodes metadata** holds LeRobot's columns plus ``success``, ``task_name`` (catalogue name),
``episode_id``, ``source_bag``, ``seed``, ``reason``, ``reward_source``, ``rollout_label`` (the
label beside the bag, ``sarm2_common.rollout_labels`` JSON, '' without one), ``repeated_frames`` /
``dropped_frames`` (grid bookkeeping) and the ground-truth primitive labels as SARM subtask
annotations (``sparse_subtask_names`` / ``_start_frames`` / ``_end_frames``, vocabulary names),
which ``lerobot_dataset`` reads back as primitive labels.

**Safety.** Everything is written into a temporary directory beside ``out`` and renamed into
place at the end: an error or Ctrl-C leaves ``out`` as it was. ``append`` adds episodes in new
files (existing data and video files are hard-linked, never rewritten); an existing ``out`` is
never replaced unless ``overwrite``.
"""

import argparse
from dataclasses import dataclass, field
from fractions import Fraction
import json
import logging
import os
from pathlib import Path
import shutil
import sys

import numpy as np

from sarm2_common.bag_dataset import align_by_log_time, find_bags
from sarm2_common.bag_io import (ACTION_TOPIC, GROUND_TRUTH_TOPIC, image_from_message,
                                 METADATA_END, METADATA_TOPIC, STAGE_REWARD_TYPE, stamp_to_ns,
                                 typestore)
from sarm2_common.topics import camera_of_topic, JOINT_STATES_TOPIC
from sarm2_common.bag_playback import read_bag
from sarm2_common.episode import Episode, UNLABELLED
from sarm2_common.rollout_labels import check_label, label_path
from sarm2_common.vocabulary import PRIMITIVES

from .lerobot_dataset import (ACTION_KEY, IMAGE_KEY_PREFIX, PRIMITIVE_KEY, PROGRESS_KEY,
                              RABC_PROGRESS_FILE, REWARD_KEY, STATE_KEY,
                              SUCCESS_PROBABILITY_KEY)
from .training_data import segments

LOG = logging.getLogger(__name__)

CODEBASE_VERSION = 'v3.0'
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
INFO_PATH = 'meta/info.json'
STATS_PATH = 'meta/stats.json'
TASKS_PATH = 'meta/tasks.parquet'
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_CODECS = {'h264': 'libx264', 'libsvtav1': 'libsvtav1'}     # --vcodec -> encoder
CODEC_NAMES = {'h264': 'h264', 'libsvtav1': 'av1'}                # --vcodec -> info.json name
# yuv420p is what every player decodes; yuv444p keeps full colour resolution (small images).
PIXEL_FORMATS = ('yuv420p', 'yuv444p')
# A bag whose camera rate is further than this from the dataset's fps needs an explicit --fps:
# putting it on the grid would repeat or drop many frames.
RATE_TOLERANCE = 0.05
# LeRobot samples at most this many frames per episode for image statistics.
IMAGE_STATS_FRAMES = 100
NS = 1_000_000_000
SCALAR_FEATURES = {'timestamp': 'float32', 'frame_index': 'int64', 'episode_index': 'int64',
                   'index': 'int64', 'task_index': 'int64', PROGRESS_KEY: 'float32',
                   REWARD_KEY: 'float32', PRIMITIVE_KEY: 'int64',
                   SUCCESS_PROBABILITY_KEY: 'float32'}


class ExportError(ValueError):
    """Input that cannot be exported; the message names the bag (or directory) and the problem."""

    def __init__(self, source, problem: str):
        super().__init__(f'{source}: {problem}')
        self.source = source
        self.problem = problem


@dataclass
class ExportConfig:
    """How to export: frame rate, video encoding, file sizes and the reward source."""

    fps: int = 0                        # 0: the first bag's camera rate
    vcodec: str = 'h264'                # h264 (libx264) or libsvtav1 (LeRobot's default)
    crf: int = 18                       # constant rate factor; lower is closer to lossless
    gop: int = 2                        # keyframe interval; LeRobot uses 2 for random access
    pix_fmt: str = 'yuv420p'
    video_file_mb: int = 200            # a camera's mp4 is closed past this size
    relabel_checkpoint: str = ''        # SARM2 checkpoint that labels the rows ('' = live)
    smoothing: float = 0.5              # EMA of values before differencing (as the reward node)
    device: str = 'cpu'

    def __post_init__(self):
        if self.fps < 0:
            raise ValueError(f'fps must be >= 0 (0 = from the bags), got {self.fps}')
        if self.vcodec not in VIDEO_CODECS:
            raise ValueError(f'vcodec must be one of {sorted(VIDEO_CODECS)}, got {self.vcodec!r}')
        if self.pix_fmt not in PIXEL_FORMATS:
            raise ValueError(f'pix_fmt must be one of {PIXEL_FORMATS}, got {self.pix_fmt!r}')
        if self.vcodec == 'libsvtav1' and self.pix_fmt != 'yuv420p':
            raise ValueError('libsvtav1 encodes yuv420p only')
        if not 0 <= self.crf <= 63:
            raise ValueError(f'crf must be within 0..63, got {self.crf}')
        if self.gop < 1:
            raise ValueError(f'gop must be >= 1, got {self.gop}')
        if self.video_file_mb < 1:
            raise ValueError(f'video_file_mb must be >= 1, got {self.video_file_mb}')
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f'smoothing must be in [0, 1), got {self.smoothing}')


@dataclass
class ExportEpisode:
    """One episode on the dataset's grid: row k of every array is frame k."""

    source: Path
    episode_id: str
    task: str
    instruction: str
    success: bool
    images: dict[str, np.ndarray]       # camera -> uint8 [K, H, W, 3]
    state: np.ndarray                   # float32 [K, J]
    actions: np.ndarray                 # float32 [K, A]
    labels: np.ndarray                  # int64 [K], ground-truth primitive ids, -1 unlabelled
    rewards: dict[str, np.ndarray]      # PROGRESS_KEY, REWARD_KEY, ... -> [K]
    reward_source: str
    state_names: list[str]
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.state)

    def as_episode(self, fps: int) -> Episode:
        """Return the rows as a training ``Episode`` (what relabeling works on)."""
        return Episode(episode_id=self.episode_id, task=self.task, instruction=self.instruction,
                       images=self.images, joint_positions=self.state, actions=self.actions,
                       primitive_ids=self.labels, timestamps=np.arange(len(self)) / fps,
                       success=self.success)


# ---- time base -----------------------------------------------------------------------------

def frame_rate(stamps_ns: np.ndarray) -> float:
    """Frames per second from the median interval of sorted stamps (0 for a single frame)."""
    gaps = np.diff(np.asarray(stamps_ns, dtype=np.int64))
    gaps = gaps[gaps > 0]
    return float(NS / np.median(gaps)) if len(gaps) else 0.0


def grid_rows(stamps_ns: np.ndarray, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Put frames (sorted stamps) on a grid at ``fps``: per row, its frame and its time (ns).

    Frame i goes to slot round((stamp_i - stamp_0) * fps); a slot's frame is the newest frame
    in it or before it, so an empty slot repeats the previous frame and of two frames in one
    slot the later wins. A row's time is its frame's stamp, or the slot's grid time for a
    repeated frame.
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    period = NS / fps
    slots = np.round((stamps - stamps[0]) / period).astype(np.int64)
    grid = np.arange(slots[-1] + 1)
    frames = np.searchsorted(slots, grid, side='right') - 1
    own = slots[frames] == grid
    times = np.where(own, stamps[frames], stamps[0] + np.round(grid * period).astype(np.int64))
    return frames, np.maximum(times, stamps[frames])


def latest_at_or_before(stamps: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the newest stamp <= each target (stamps sorted), -1 where there is none."""
    return np.searchsorted(np.asarray(stamps), np.asarray(targets), side='right') - 1


# ---- reading a bag -------------------------------------------------------------------------

@dataclass
class _BagMessages:
    images: dict = field(default_factory=dict)       # camera -> [(stamp, log time, message)]
    joints: list = field(default_factory=list)       # (stamp, positions, names)
    actions: list = field(default_factory=list)      # (log time, vector)
    truths: list = field(default_factory=list)       # (stamp, message)
    rewards: list = field(default_factory=list)      # (stamp, message)
    records: list = field(default_factory=list)      # EpisodeMetadata messages


def _read_messages(bag: Path) -> _BagMessages:
    """Deserialize the topics the export needs; raise ExportError if the bag is cut short."""
    try:
        raw, report = read_bag(bag)
    except (OSError, ValueError) as error:
        raise ExportError(bag, f'not a readable rosbag2 bag ({error})') from None
    if not report.complete:
        raise ExportError(bag, 'truncated: ' + '; '.join(report.problems))
    store = typestore()
    wanted = {JOINT_STATES_TOPIC, ACTION_TOPIC, GROUND_TRUTH_TOPIC, METADATA_TOPIC}
    found = _BagMessages()
    for item in raw:
        camera = camera_of_topic(item.topic)
        if camera is None and item.topic not in wanted and item.msgtype != STAGE_REWARD_TYPE:
            continue
        try:
            message = store.deserialize_cdr(item.data, item.msgtype)
        except Exception as error:  # noqa: BLE001 - any undecodable message means another schema
            raise ExportError(bag, f'{item.topic}: cannot decode {item.msgtype} '
                                   f'({type(error).__name__}: {error})') from None
        if camera is not None:
            found.images.setdefault(camera, []).append(
                (stamp_to_ns(message.header.stamp), item.timestamp_ns, message))
        elif item.topic == JOINT_STATES_TOPIC:
            found.joints.append((stamp_to_ns(message.header.stamp),
                                 np.asarray(message.position, dtype=np.float32),
                                 list(message.name)))
        elif item.topic == ACTION_TOPIC:
            found.actions.append((item.timestamp_ns, np.asarray(message.data, np.float32)))
        elif item.topic == GROUND_TRUTH_TOPIC:
            found.truths.append((stamp_to_ns(message.header.stamp), message))
        elif item.topic == METADATA_TOPIC:
            found.records.append(message)
        else:
            found.rewards.append((stamp_to_ns(message.header.stamp), message))
    return found


def _labels(truths: list, row_times: np.ndarray, fps: int) -> np.ndarray:
    """Ground-truth primitive of each row: the label stamped within half a frame, else -1."""
    labels = np.full(len(row_times), UNLABELLED, dtype=np.int64)
    if not truths:
        return labels
    truths.sort(key=lambda item: item[0])
    stamps = np.array([stamp for stamp, _ in truths], dtype=np.int64)
    picks = latest_at_or_before(stamps, row_times + NS // (2 * fps))
    for k, index in enumerate(picks):
        if index >= 0 and abs(int(stamps[index]) - int(row_times[k])) <= NS // (2 * fps):
            labels[k] = truths[index][1].expert_primitive_id
    return labels


def live_rewards(rewards: list, row_times: np.ndarray) -> dict[str, np.ndarray]:
    """SARM2 columns from live StageReward messages (see the module doc); NaN before the first."""
    length = len(row_times)
    columns = {PROGRESS_KEY: np.full(length, np.nan, np.float32),
               REWARD_KEY: np.full(length, np.nan, np.float32),
               PRIMITIVE_KEY: np.full(length, UNLABELLED, np.int64),
               SUCCESS_PROBABILITY_KEY: np.full(length, np.nan, np.float32)}
    if not rewards:
        return columns
    rewards.sort(key=lambda item: item[0])
    stamps = np.array([stamp for stamp, _ in rewards], dtype=np.int64)
    returns = np.cumsum([float(m.reward) for _, m in rewards])
    picks = latest_at_or_before(stamps, row_times)
    previous_return = 0.0
    for k, index in enumerate(picks):
        if index < 0:
            continue
        message = rewards[index][1]
        columns[PROGRESS_KEY][k] = message.progress
        columns[PRIMITIVE_KEY][k] = message.primitive_id
        columns[SUCCESS_PROBABILITY_KEY][k] = message.success_probability
        columns[REWARD_KEY][k] = returns[index] - previous_return
        previous_return = returns[index]
    return columns


def read_rollout_label(bag: Path, episode_id: str) -> str:
    """Return the rollout label beside ``bag`` (``rollout_labels``) as JSON, '' without one.

    A label that cannot be read, names another episode, or was made before the bag changed
    (stale) is an ExportError: exported data must not carry a label of something else.
    """
    check = check_label(bag, episode_id)
    if check.status == 'unlabelled':
        return ''
    if check.status != 'labelled':
        raise ExportError(label_path(bag), f'rollout label is {check.status}: {check.problem}')
    return json.dumps(check.label.to_json(), sort_keys=True)


def read_bag_episode(bag: str | Path, fps: int = 0,
                     resample: bool = False) -> tuple[ExportEpisode, int]:
    """Read one bag onto a grid at ``fps`` (0: its own camera rate); return it and that fps.

    Raises ExportError for a truncated bag, one without images, joint states, actions or
    metadata, or (unless ``resample``) one whose camera rate is far from ``fps``.
    """
    bag = Path(bag)
    found = _read_messages(bag)
    if not found.images:
        raise ExportError(bag, 'no camera images (/camera/<name>/image_raw)')
    if not found.joints:
        raise ExportError(bag, f'no {JOINT_STATES_TOPIC} messages')
    if not found.actions:
        raise ExportError(bag, f'no {ACTION_TOPIC} messages (executed or demonstrated action)')
    start = next((r for r in found.records if r.kind != METADATA_END), None)
    end = next((r for r in reversed(found.records) if r.kind == METADATA_END), None)
    if start is None:
        raise ExportError(bag, f'no {METADATA_TOPIC} record (task and instruction unknown)')
    if end is None:
        raise ExportError(bag, f'truncated: no final {METADATA_TOPIC} record (episode cut short)')

    for stream in found.images.values():
        stream.sort(key=lambda item: item[0])
    found.joints.sort(key=lambda item: item[0])
    joint_stamps = np.array([item[0] for item in found.joints], dtype=np.int64)
    reference = found.images[sorted(found.images)[0]]
    # Frames before the first joint state have no causal state: they are dropped.
    usable = [item for item in reference if item[0] >= joint_stamps[0]]
    if not usable:
        raise ExportError(bag, 'every camera frame precedes the first joint state')
    stamps = np.array([item[0] for item in usable], dtype=np.int64)
    rate = frame_rate(stamps)
    if fps == 0:
        fps = int(round(rate))
        if fps < 1 or abs(rate - fps) > RATE_TOLERANCE * fps:
            raise ExportError(bag, f'camera rate {rate:.2f} Hz is not a whole number of frames '
                                   'per second; pass --fps')
    elif not resample and len(stamps) > 1 and abs(rate - fps) > RATE_TOLERANCE * fps:
        raise ExportError(bag, f"camera rate {rate:.2f} Hz differs from the dataset's {fps} fps "
                               '(pass --fps to put every bag on one grid)')

    frames, row_times = grid_rows(stamps, fps)
    images = {}
    for camera, stream in found.images.items():
        camera_stamps = np.array([item[0] for item in stream], dtype=np.int64)
        picks = latest_at_or_before(camera_stamps, row_times)
        if picks[0] < 0:
            raise ExportError(bag, f'camera {camera!r} has no frame at or before the first row')
        try:
            images[camera] = np.stack([image_from_message(stream[i][2]) for i in picks])
        except ValueError as error:
            raise ExportError(bag, f'camera {camera!r}: {error}') from None
    state = np.stack([found.joints[i][1] for i in latest_at_or_before(joint_stamps, row_times)])
    # Commands follow the frame they answer in log time; a repeated row is one period later.
    log_times = np.array([item[1] for item in usable], dtype=np.int64)
    anchors = np.maximum.accumulate(log_times[frames] + (row_times - stamps[frames]))
    actions = align_by_log_time(found.actions, anchors)

    own_id = start.episode_id
    rewards = [(s, m) for s, m in found.rewards if not m.episode_id or m.episode_id == own_id]
    model_ids = sorted({m.model_id for _, m in rewards if m.model_id})
    try:
        described = json.loads(end.metadata_json or '{}')
    except ValueError:
        described = {}
    repeated = int(len(frames) - len(np.unique(frames)))
    metadata = {'seed': int(end.seed), 'reason': end.reason,
                'source': str(described.get('source', '')) if isinstance(described, dict) else '',
                'rollout_label': read_rollout_label(bag, end.episode_id),
                'repeated_frames': repeated,
                'dropped_frames': int(len(reference) - len(np.unique(frames)))}
    episode = ExportEpisode(
        source=bag, episode_id=end.episode_id or bag.name, task=end.task,
        instruction=end.instruction, success=bool(end.success), images=images,
        state=state.astype(np.float32), actions=actions,
        labels=_labels(found.truths, row_times, fps),
        rewards=live_rewards(rewards, row_times),
        reward_source=('live:' + ','.join(model_ids)) if rewards else 'none',
        state_names=found.joints[0][2], metadata=metadata)
    return episode, fps


# ---- relabeling ----------------------------------------------------------------------------

class Relabeler:
    """SARM2 columns from a checkpoint, computed on the exported rows."""

    def __init__(self, checkpoint: str | Path, smoothing: float, device: str = 'cpu'):
        from .inference import Sarm2Predictor
        from .text_embedding import make_text_embedder
        predictor = Sarm2Predictor.from_checkpoint(checkpoint, device)
        self.model = predictor.model
        self.source = f'relabel:{predictor.model_id}:{checkpoint}'
        self.smoothing = smoothing
        self.text = make_text_embedder(self.model.config.text_model_path)

    def __call__(self, episode: ExportEpisode, fps: int) -> dict[str, np.ndarray]:
        """Predict every row of ``episode`` as if it were played live."""
        from .inference import predict_episode
        from .labeling import dense_rewards
        try:
            out = predict_episode(self.model, episode.as_episode(fps), self.text)
        except ValueError as error:
            raise ExportError(episode.source, f'relabel: {error}') from None
        return {PROGRESS_KEY: out['progress'].astype(np.float32),
                REWARD_KEY: dense_rewards(out['value'], self.smoothing).astype(np.float32),
                PRIMITIVE_KEY: out['primitive_probs'].argmax(axis=1).astype(np.int64),
                SUCCESS_PROBABILITY_KEY: out['success_probability'].astype(np.float32)}


# ---- statistics ----------------------------------------------------------------------------

def _numeric_stats(values: np.ndarray) -> dict:
    """Min / max / mean / std / count over the rows of [K, D], ignoring non-finite values.

    A dimension without any finite value gets NaN statistics.
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    finite = np.isfinite(values)
    known = finite.any(axis=0)
    counts = np.maximum(finite.sum(axis=0), 1)
    mean = np.where(finite, values, 0.0).sum(axis=0) / counts
    variance = (np.where(finite, values - mean, 0.0) ** 2).sum(axis=0) / counts
    return {'min': np.where(known, np.where(finite, values, np.inf).min(axis=0), np.nan),
            'max': np.where(known, np.where(finite, values, -np.inf).max(axis=0), np.nan),
            'mean': np.where(known, mean, np.nan),
            'std': np.where(known, np.sqrt(variance), np.nan),
            'count': np.array([len(values)])}


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel stats of up to IMAGE_STATS_FRAMES frames on LeRobot's 0..1 scale, [3, 1, 1]."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), IMAGE_STATS_FRAMES))
                      .astype(int))
    pixels = frames[picks].reshape(-1, 3).astype(np.float64) / 255.0
    stats = {k: v.reshape(3, 1, 1) for k, v in _numeric_stats(pixels).items() if k != 'count'}
    stats['count'] = np.array([len(frames)])
    return stats


def aggregate_stats(parts: list[dict]) -> dict:
    """Count-weighted merge of per-episode stats of one feature (episodes without data skipped)."""
    parts = [p for p in parts if np.all(np.isfinite(p['mean']))]
    if not parts:
        return {}
    counts = np.array([float(p['count'][0]) for p in parts])
    weights = counts / counts.sum()
    mean = sum(w * p['mean'] for w, p in zip(weights, parts))
    variance = sum(w * (p['std'] ** 2 + (p['mean'] - mean) ** 2) for w, p in zip(weights, parts))
    return {'min': np.min([p['min'] for p in parts], axis=0),
            'max': np.max([p['max'] for p in parts], axis=0),
            'mean': mean, 'std': np.sqrt(variance), 'count': np.array([int(counts.sum())])}


# ---- writing -------------------------------------------------------------------------------

def _next_file(chunk: int, file: int) -> tuple[int, int]:
    file += 1
    return (chunk + 1, 0) if file >= CHUNKS_SIZE else (chunk, file)


class _VideoFile:
    """One camera's mp4 at a constant frame rate; frames are appended episode after episode."""

    def __init__(self, path: Path, fps: int, shape: tuple[int, int], config: ExportConfig):
        import av
        height, width = shape
        if config.pix_fmt == 'yuv420p' and (height % 2 or width % 2):
            raise ValueError(f'yuv420p video needs even image sizes, got {width}x{height} '
                             '(pass --pix-fmt yuv444p)')
        if config.vcodec == 'libsvtav1':
            # SVT-AV1 prints its configuration banner unless told to log errors only.
            os.environ.setdefault('SVT_LOG', '1')
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), 'w')
        self.stream = self.container.add_stream(VIDEO_CODECS[config.vcodec], rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = config.pix_fmt
        # The muxer changes the stream's time base once the header is written; frames keep
        # counting in 1/fps.
        self.time_base = Fraction(1, fps)
        self.stream.time_base = self.time_base
        self.stream.options = {'crf': str(config.crf), 'g': str(config.gop)}
        self.frames = 0

    def add(self, images: np.ndarray) -> None:
        import av
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
            frame.pts = self.frames
            frame.time_base = self.time_base
            self.container.mux(self.stream.encode(frame))
            self.frames += 1

    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6 if self.path.exists() else 0.0

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()


def _fixed_lists(rows: np.ndarray, value_type):
    import pyarrow as pa
    rows = np.asarray(rows)
    flat = pa.array(rows.reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _tasks_table(tasks: dict[str, int]):
    """meta/tasks.parquet as pandas writes it: the task string is the index named ``task``."""
    import pyarrow as pa
    names = sorted(tasks, key=tasks.get)
    table = pa.table({'task_index': pa.array([tasks[n] for n in names], pa.int64()),
                      'task': pa.array(names, pa.string())})
    pandas_meta = {
        'index_columns': ['task'],
        'column_indexes': [{'name': None, 'field_name': None, 'pandas_type': 'unicode',
                            'numpy_type': 'object', 'metadata': {'encoding': 'UTF-8'}}],
        'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
                     'numpy_type': 'int64', 'metadata': None},
                    {'name': 'task', 'field_name': 'task', 'pandas_type': 'unicode',
                     'numpy_type': 'object', 'metadata': None}],
        'creator': {'library': 'pyarrow', 'version': pa.__version__},
        'pandas_version': '2.2.3'}
    return table.replace_schema_metadata({'pandas': json.dumps(pandas_meta)})


def _annotation(labels: np.ndarray) -> dict:
    runs = [(p, s, e) for p, s, e in segments(labels) if p != UNLABELLED]
    return {'sparse_subtask_names': [PRIMITIVES[p] for p, _, _ in runs],
            'sparse_subtask_start_frames': [s for _, s, _ in runs],
            'sparse_subtask_end_frames': [e for _, _, e in runs]}


def _episodes_table(rows: list[dict]):
    """Episode rows as a table whose list columns are typed even when every list is empty."""
    import pyarrow as pa
    table = pa.Table.from_pylist(rows)
    typed = {'sparse_subtask_names': pa.list_(pa.string()),
             'sparse_subtask_start_frames': pa.list_(pa.int64()),
             'sparse_subtask_end_frames': pa.list_(pa.int64())}
    for name, value_type in typed.items():
        table = table.set_column(table.schema.get_field_index(name), name,
                                 table[name].cast(value_type))
    return table


def _tolist(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


class DatasetWriter:
    """Builds a LeRobot v3.0 dataset in ``root`` (a staging directory), episode by episode.

    ``existing`` is the info.json of a dataset already copied into ``root`` (append).
    """

    def __init__(self, root: Path, config: ExportConfig, existing: dict | None = None):
        self.root = root
        self.config = config
        self.info = existing
        self.fps = int(existing['fps']) if existing else config.fps
        self.tasks: dict[str, int] = {}
        self.stats: dict[str, list[dict]] = {}
        self.episodes: list[dict] = []
        self.columns: dict[str, list] = {}
        self.videos: dict[str, _VideoFile] = {}
        self.episode_index = 0
        self.frame_index = 0
        self.cursor = (0, 0)
        self.meta_file = (0, 0)
        if existing:
            self._resume()

    # -- append --
    def _resume(self) -> None:
        import pyarrow.parquet as pq
        root = self.root
        self.tasks = {str(r.get('task', r.get('__index_level_0__'))): int(r['task_index'])
                      for r in pq.read_table(root / TASKS_PATH).to_pylist()}
        self.episode_index = int(self.info['total_episodes'])
        self.frame_index = int(self.info['total_frames'])
        used = []
        for path in sorted((root / 'meta' / 'episodes').rglob('*.parquet')):
            for row in pq.read_table(path).to_pylist():
                used += [(int(row[k]), int(row[k.replace('chunk_index', 'file_index')]))
                         for k in row if k.endswith('chunk_index')]
        last = max(used) if used else (0, -1)
        self.cursor = _next_file(*last)
        self.meta_file = self.cursor
        stats_path = root / STATS_PATH
        if stats_path.is_file():
            previous = json.loads(stats_path.read_text())
            for key, value in previous.items():
                self.stats[key] = [{k: np.asarray(v, dtype=np.float64) for k, v in value.items()}]

    # -- schema --
    def _features(self, episode: ExportEpisode) -> dict:
        features = {}
        for camera in sorted(episode.images):
            height, width = episode.images[camera].shape[1:3]
            features[IMAGE_KEY_PREFIX + camera] = {
                'dtype': 'video', 'shape': [height, width, 3],
                'names': ['height', 'width', 'channels'],
                'info': {'video.height': height, 'video.width': width,
                         'video.codec': CODEC_NAMES[self.config.vcodec],
                         'video.pix_fmt': self.config.pix_fmt,
                         'video.is_depth_map': False,
                         'video.fps': self.fps, 'video.channels': 3, 'has_audio': False}}
        features[STATE_KEY] = {'dtype': 'float32', 'shape': [episode.state.shape[1]],
                               'names': list(episode.state_names)
                               if len(episode.state_names) == episode.state.shape[1] else None}
        features[ACTION_KEY] = {'dtype': 'float32', 'shape': [episode.actions.shape[1]],
                                'names': None}
        for name, dtype in SCALAR_FEATURES.items():
            features[name] = {'dtype': dtype, 'shape': [1], 'names': None}
        return features

    def _check_schema(self, episode: ExportEpisode) -> None:
        features = self._features(episode)
        if self.info is None:
            self.info = {
                'codebase_version': CODEBASE_VERSION, 'robot_type': None, 'total_episodes': 0,
                'total_frames': 0, 'total_tasks': 0, 'chunks_size': CHUNKS_SIZE,
                'data_files_size_in_mb': DATA_FILE_MB,
                'video_files_size_in_mb': self.config.video_file_mb, 'fps': self.fps,
                'splits': {}, 'data_path': DATA_PATH, 'video_path': VIDEO_PATH,
                'features': features}
            return
        expected = self.info['features']
        cameras = sorted(k[len(IMAGE_KEY_PREFIX):] for k in expected
                         if k.startswith(IMAGE_KEY_PREFIX))
        if sorted(episode.images) != cameras:
            raise ExportError(episode.source, f'cameras {sorted(episode.images)} differ from the '
                                              f"dataset's {cameras}")
        for key, spec in features.items():
            have = expected.get(key)
            if have is None or list(have['shape']) != spec['shape'] \
                    or have['dtype'] != spec['dtype']:
                found = None if have is None else f'{have["dtype"]} {list(have["shape"])}'
                raise ExportError(episode.source, f'{key} is {spec["dtype"]} {spec["shape"]}, '
                                                  f'the dataset has {found}')

    # -- episodes --
    def add(self, episode: ExportEpisode) -> None:
        """Append one episode (its rows, video frames, metadata and stats)."""
        self._check_schema(episode)
        length = len(episode)
        if episode.instruction not in self.tasks:
            self.tasks[episode.instruction] = len(self.tasks)
        task_index = self.tasks[episode.instruction]
        chunk, file = self.cursor
        video_meta = {}
        for camera in sorted(episode.images):
            key = IMAGE_KEY_PREFIX + camera
            video = self.videos.get(key)
            if video is None:
                path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk,
                                                     file_index=file)
                try:
                    video = _VideoFile(path, self.fps, episode.images[camera].shape[1:3],
                                       self.config)
                except ValueError as error:
                    raise ExportError(episode.source, str(error)) from None
                self.videos[key] = video
            start = video.frames / self.fps
            video.add(episode.images[camera])
            video_meta.update({f'videos/{key}/chunk_index': chunk,
                               f'videos/{key}/file_index': file,
                               f'videos/{key}/from_timestamp': start,
                               f'videos/{key}/to_timestamp': start + length / self.fps})
        frame_index = np.arange(length)
        rows = {'timestamp': (frame_index / self.fps).astype(np.float32),
                'frame_index': frame_index,
                'episode_index': np.full(length, self.episode_index),
                'index': self.frame_index + frame_index,
                'task_index': np.full(length, task_index), **episode.rewards}
        for name, values in rows.items():
            self.columns.setdefault(name, []).append(np.asarray(values))
        self.columns.setdefault(STATE_KEY, []).append(episode.state)
        self.columns.setdefault(ACTION_KEY, []).append(episode.actions)

        stats = {STATE_KEY: _numeric_stats(episode.state),
                 ACTION_KEY: _numeric_stats(episode.actions),
                 **{name: _numeric_stats(values) for name, values in rows.items()},
                 **{IMAGE_KEY_PREFIX + c: _image_stats(f) for c, f in episode.images.items()}}
        for key, value in stats.items():
            self.stats.setdefault(key, []).append(value)
        self.episodes.append({
            'episode_index': self.episode_index, 'tasks': [episode.instruction],
            'length': length, 'data/chunk_index': chunk, 'data/file_index': file,
            'dataset_from_index': self.frame_index, 'dataset_to_index': self.frame_index + length,
            **video_meta,
            'meta/episodes/chunk_index': self.meta_file[0],
            'meta/episodes/file_index': self.meta_file[1],
            'success': episode.success, 'task_name': episode.task,
            'episode_id': episode.episode_id, 'source_bag': str(episode.source),
            'reward_source': episode.reward_source, **episode.metadata,
            **_annotation(episode.labels),
            **{f'stats/{key}/{name}': _tolist(v) for key, value in stats.items()
               for name, v in value.items()}})
        self.episode_index += 1
        self.frame_index += length
        if max(v.size_mb() for v in self.videos.values()) >= self.config.video_file_mb:
            self._close_files()
            self.cursor = _next_file(*self.cursor)

    def _close_files(self) -> None:
        import pyarrow as pa
        for video in self.videos.values():
            video.close()
        self.videos = {}
        if not self.columns:
            return
        arrays = {}
        for name, parts in self.columns.items():
            values = np.concatenate(parts)
            if name in (STATE_KEY, ACTION_KEY):
                arrays[name] = _fixed_lists(values.astype(np.float32), pa.float32())
            else:
                arrays[name] = pa.array(values.astype(SCALAR_FEATURES[name]))
        chunk, file = self.cursor
        _write_parquet(pa.table(arrays), self.root / DATA_PATH.format(chunk_index=chunk,
                                                                      file_index=file))
        self.columns = {}

    def close(self) -> dict:
        """Finish the open files and write the metadata; return the info dict."""
        self._close_files()
        if self.episodes:
            chunk, file = self.meta_file
            _write_parquet(_episodes_table(self.episodes),
                           self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file))
        _write_parquet(_tasks_table(self.tasks), self.root / TASKS_PATH)
        self.info.update(total_episodes=self.episode_index, total_frames=self.frame_index,
                         total_tasks=len(self.tasks),
                         splits={'train': f'0:{self.episode_index}'})
        _replace_text(self.root / INFO_PATH, json.dumps(self.info, indent=4))
        merged = {key: aggregate_stats(parts) for key, parts in self.stats.items()}
        _replace_text(self.root / STATS_PATH, json.dumps(
            {key: {name: _tolist(v) for name, v in value.items()}
             for key, value in merged.items() if value}, indent=4))
        write_rabc_progress(self.root, sorted({e['reward_source'] for e in self.episodes}))
        return self.info


def _replace_text(path: Path, text: str) -> None:
    """Write through a new file: a hard-linked original (append) is never modified."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_text(text + '\n', encoding='utf-8')
    os.replace(temporary, path)


def write_rabc_progress(root: Path, sources: list[str]) -> bool:
    """Write ``sarm_progress.parquet`` for LeRobot's RA-BC from every data file's progress.

    Skipped (and a stale one removed) when no frame has a progress value.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    columns = ('index', 'episode_index', 'frame_index', PROGRESS_KEY)
    parts = [pq.read_table(p, columns=list(columns)) for p in sorted((root / 'data').rglob(
        '*.parquet'))]
    target = root / RABC_PROGRESS_FILE
    table = pa.concat_tables(parts).sort_by('index') if parts else None
    if table is None or not np.isfinite(table[PROGRESS_KEY].to_numpy(zero_copy_only=False)).any():
        target.unlink(missing_ok=True)
        return False
    progress = table[PROGRESS_KEY]
    out = pa.table({'index': table['index'], 'episode_index': table['episode_index'],
                    'frame_index': table['frame_index'], 'progress_sparse': progress,
                    'progress_dense': progress})
    previous = {}
    if target.is_file():
        previous = pq.read_schema(target).metadata or {}
    known = set(filter(None, previous.get(b'reward_model_path', b'').decode().split(';')))
    path = ';'.join(sorted(known | {s for s in sources if s != 'none'}))
    target.unlink(missing_ok=True)
    pq.write_table(out.replace_schema_metadata({'reward_model_path': path}), target)
    return True


# ---- the export ----------------------------------------------------------------------------

def _stage(out: Path, append: bool) -> Path:
    """Make a staging directory beside ``out``; to append, a copy of ``out`` (data linked)."""
    staging = out.parent / f'.{out.name}.partial-{os.getpid()}'
    if staging.exists():
        shutil.rmtree(staging)
    if append and out.exists():
        def link_or_copy(source, target):
            relative = Path(source).relative_to(out).parts
            # data and videos are only ever added to, never rewritten: share them.
            if relative[0] in ('data', 'videos') or relative[:2] == ('meta', 'episodes'):
                try:
                    os.link(source, target)
                    return target
                except OSError:
                    pass
            return shutil.copy2(source, target)
        shutil.copytree(out, staging, copy_function=link_or_copy)
    else:
        staging.mkdir(parents=True)
    return staging


def _swap_in(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f'.{out.name}.old-{os.getpid()}'
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old)
    else:
        os.rename(staging, out)


def _existing_info(out: Path, config: ExportConfig) -> dict:
    """Read the info.json to append to; ExportError if the new files would not match it."""
    try:
        info = json.loads((out / INFO_PATH).read_text())
    except (OSError, ValueError) as error:
        raise ExportError(out, f'--append needs a LeRobot dataset here ({error})') from None
    if not str(info.get('codebase_version', '')).startswith('v3'):
        raise ExportError(out, f'is a LeRobot {info.get("codebase_version")} dataset; --append '
                               f'writes {CODEBASE_VERSION} only')
    if config.fps and config.fps != info.get('fps'):
        raise ExportError(out, f'has {info.get("fps")} fps, not --fps {config.fps}')
    for key, feature in info.get('features', {}).items():
        video = feature.get('info') or {}
        if feature.get('dtype') == 'video' and (video.get('video.codec'), video.get(
                'video.pix_fmt')) != (CODEC_NAMES[config.vcodec], config.pix_fmt):
            raise ExportError(out, f'{key} is {video.get("video.codec")} '
                                   f'{video.get("video.pix_fmt")}; append with the same --vcodec '
                                   'and --pix-fmt')
    return info


def collect_bags(paths: list[str | Path]) -> list[Path]:
    """Every bag under ``paths`` in order; ExportError for a path that holds none."""
    bags = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ExportError(path, 'does not exist')
        found = find_bags(path)
        if not found:
            raise ExportError(path, 'no rosbag2 bags (directories with metadata.yaml or .mcap)')
        bags += [bag for bag in found if bag not in bags]
    return bags


def export_lerobot(paths: list[str | Path], out: str | Path, config: ExportConfig | None = None,
                   append: bool = False, overwrite: bool = False, skip_bad: bool = False,
                   progress: bool = True) -> dict:
    """Export the bags under ``paths`` to the LeRobot dataset ``out``; return a summary.

    Raises ExportError (nothing written) for bad input; with ``skip_bad`` a bag that cannot be
    read (truncated, another schema, other cameras) is logged and skipped instead.
    """
    from tqdm import tqdm
    config = config or ExportConfig()
    out = Path(out)
    if append and overwrite:
        raise ExportError(out, 'choose --append or --overwrite, not both')
    if out.exists() and not (append or overwrite):
        raise ExportError(out, 'exists; pass --append to add episodes or --overwrite to '
                               'replace it')
    bags = collect_bags(paths)
    existing = _existing_info(out, config) if append and out.exists() else None
    relabel = Relabeler(config.relabel_checkpoint, config.smoothing, config.device) \
        if config.relabel_checkpoint else None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _stage(out, append)
    skipped: list[str] = []
    try:
        writer = DatasetWriter(staging, config, existing)
        bar = tqdm(bags, desc='export', unit='bag', disable=not progress)
        for bag in bar:
            try:
                episode, writer.fps = read_bag_episode(bag, writer.fps,
                                                       resample=config.fps > 0)
                if relabel is not None:
                    episode.rewards = relabel(episode, writer.fps)
                    episode.reward_source = relabel.source
                writer.add(episode)
            except ExportError as error:
                if not skip_bad:
                    raise
                LOG.warning('skipping %s', error)
                skipped.append(str(error))
            bar.set_postfix(episodes=len(writer.episodes), frames=writer.frame_index)
        bar.close()
        if not writer.episodes:
            raise ExportError(out, 'no bag could be exported')
        info = writer.close()
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {'out': str(out), 'episodes': len(writer.episodes),
            'total_episodes': info['total_episodes'], 'total_frames': info['total_frames'],
            'fps': info['fps'], 'skipped': skipped}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='export_lerobot',
        description='Export demonstration and rollout bags (rosbag2 MCAP, one episode per bag) '
                    'to a LeRobot v3.0 dataset: videos per camera, observation.state, the '
                    'executed or demonstrated action, task and instruction, and per-frame SARM2 '
                    'columns (progress, reward, primitive_id, success_probability) from the '
                    "bags' live rewards or from a relabel with a checkpoint, plus "
                    "sarm_progress.parquet for LeRobot's RA-BC. Frames are on a constant-rate "
                    'grid clocked by the first camera; state and actions never come from the '
                    'future. The dataset is built beside DIR and renamed into place at the end, '
                    'so an error leaves DIR untouched.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = ExportConfig()
    parser.add_argument('bags', nargs='+', metavar='BAGS',
                        help='bag directories, or directories holding bags')
    parser.add_argument('--out', required=True, metavar='DIR', help='dataset directory to write')
    parser.add_argument('--append', action='store_true',
                        help='add the episodes to the existing dataset DIR (same cameras, fps '
                             'and sizes)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DIR')
    parser.add_argument('--fps', type=int, default=defaults.fps,
                        help="dataset frame rate (0: the first bag's camera rate); bags at "
                             'other rates are put on this grid')
    parser.add_argument('--relabel-checkpoint', default='', metavar='DIR',
                        help="SARM2 checkpoint that labels every frame instead of the bags' "
                             'live /sarm2/stage_reward messages')
    parser.add_argument('--smoothing', type=float, default=defaults.smoothing,
                        help='relabel: EMA of values before differencing into rewards, 0..<1')
    parser.add_argument('--device', default=defaults.device, help='relabel: torch device')
    parser.add_argument('--vcodec', choices=sorted(VIDEO_CODECS), default=defaults.vcodec,
                        help="video codec (libsvtav1 is LeRobot's default)")
    parser.add_argument('--crf', type=int, default=defaults.crf,
                        help='video quality, lower is closer to lossless')
    parser.add_argument('--gop', type=int, default=defaults.gop, help='keyframe interval')
    parser.add_argument('--pix-fmt', choices=PIXEL_FORMATS, default=defaults.pix_fmt,
                        help='video pixel format (yuv444p keeps full colour resolution, h264 '
                             'only)')
    parser.add_argument('--video-file-mb', type=int, default=defaults.video_file_mb,
                        help="start a new video file once a camera's passes this size")
    parser.add_argument('--skip-bad', action='store_true',
                        help='skip (and list) bags that are truncated, of another schema or '
                             'with other cameras, instead of stopping with exit code 2')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``export_lerobot``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    try:
        config = ExportConfig(fps=args.fps, vcodec=args.vcodec, crf=args.crf, gop=args.gop,
                              pix_fmt=args.pix_fmt, video_file_mb=args.video_file_mb,
                              relabel_checkpoint=args.relabel_checkpoint,
                              smoothing=args.smoothing, device=args.device)
        summary = export_lerobot(args.bags, args.out, config, append=args.append,
                                 overwrite=args.overwrite, skip_bad=args.skip_bad,
                                 progress=not args.no_progress)
    except ValueError as error:     # ExportError, bad options, unreadable checkpoint config
        print(f'export_lerobot: error: {error}', file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f'export_lerobot: error: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'export_lerobot: interrupted; {args.out} is as it was', file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
