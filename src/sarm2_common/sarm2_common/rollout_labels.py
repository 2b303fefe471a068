"""Rollout labels: a person's (or the simulator's) judgement of one recorded rollout.

The data flywheel (DESIGN "Learning from rollouts"; anchor: opensarm
``label_data/rollout_label``) labels rollouts of the policy once and fine-tunes the reward model
on the progress curves those labels imply. A label is a small JSON sidecar stored *beside* the
rollout bag, ``<bag directory>.label.json``; the bag itself is never modified.

Format (``version`` 1)::

    {"format": "sarm2_rollout_label", "version": 1,
     "episode_id": "3f2a...", "task": "drawer-open-v3",
     "success": false, "final_progress": 0.4, "duration": 9.95,
     "segments": [{"start": 0.0, "end": 3.5, "kind": "progress_fast"},
                  {"start": 3.5, "end": 6.0, "kind": "mistake"}],
     "catastrophic_time": null,
     "labeller": {"kind": "person", "name": "alice"},
     "labelled_at": "2026-11-30T12:00:00+00:00",
     "bag_digest": "sha256 of the bag's metadata.yaml"}

Times are seconds since the bag's first camera frame. ``duration`` is the time of the last
frame. From a label, ``progress_targets`` builds the per-frame progress curve with the anchor's
slope rules: progress_fast +2s, progress_slow +1s, adjust 0, mistake -1s, where the base slope
``s`` is solved so that the curve starts at 0 and ends at ``final_progress``. Two choices of
ours where the anchor's tool never has to decide:

- time outside every marked segment counts as ``progress_slow`` (the ordinary rate), so a label
  with no segments is a straight line from 0 to ``final_progress`` (the anchor's UI always tiles
  the whole timeline, so there this case does not arise);
- with a ``catastrophic_time``, ``final_progress`` is the progress reached just before the
  catastrophe: the curve reaches it there and is 0 from that time on (the anchor stores -100 as
  the final progress and clips).

The curve is clipped to [0, 1]; the reward is its per-step difference.
"""

from dataclasses import asdict, dataclass, field
import datetime
import hashlib
import json
import math
import os
from pathlib import Path
import tempfile

import numpy as np

FORMAT = 'sarm2_rollout_label'
VERSION = 1
LABEL_SUFFIX = '.label.json'
SLOPE_MULTIPLIERS = {'progress_fast': 2.0, 'progress_slow': 1.0, 'adjust': 0.0, 'mistake': -1.0}
SEGMENT_KINDS = tuple(SLOPE_MULTIPLIERS)
LABELLER_KINDS = ('person', 'simulator', 'model')
UNMARKED_KIND = 'progress_slow'
# Label files are small; anything larger is not a label (and must not be read into memory).
MAX_LABEL_BYTES = 1_000_000
MAX_SEGMENTS = 1000
MAX_TEXT = 256
# Rounding of times written by a browser or another tool: a segment ending this close past the
# end of the episode is taken to end at the end.
TIME_TOLERANCE = 1e-6


class LabelError(ValueError):
    """A label that cannot be used; ``field`` names the offending field ('' for the whole)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f'{field_name}: {message}' if field_name else message)
        self.field = field_name


@dataclass(frozen=True)
class Segment:
    """A stretch of the rollout, in seconds since its first frame, and how progress moved."""

    start: float
    end: float
    kind: str


@dataclass(frozen=True)
class RolloutLabel:
    """One rollout's label; validated on construction (raises ``LabelError``)."""

    episode_id: str
    success: bool
    final_progress: float
    duration: float
    segments: tuple[Segment, ...] = ()
    catastrophic_time: float | None = None
    task: str = ''
    labeller_kind: str = 'person'
    labeller: str = ''
    labelled_at: str = ''
    bag_digest: str = ''

    def __post_init__(self):
        _check_text('episode_id', self.episode_id, required=True)
        for name in ('task', 'labeller', 'labelled_at', 'bag_digest'):
            _check_text(name, getattr(self, name))
        if not isinstance(self.success, bool):
            raise LabelError('success', f'must be true or false, got {self.success!r}')
        duration = _finite('duration', self.duration)
        if duration <= 0:
            raise LabelError('duration', f'must be > 0 s, got {duration}')
        progress = _finite('final_progress', self.final_progress)
        if not 0.0 <= progress <= 1.0:
            raise LabelError('final_progress', f'must be in [0, 1], got {progress}')
        if self.labeller_kind not in LABELLER_KINDS:
            raise LabelError('labeller.kind', f'{self.labeller_kind!r}; choose one of '
                                              f'{LABELLER_KINDS}')
        if len(self.segments) > MAX_SEGMENTS:
            raise LabelError('segments', f'{len(self.segments)} segments; at most {MAX_SEGMENTS}')
        previous_end = None
        for i, segment in enumerate(sorted(self.segments, key=lambda s: s.start)):
            where = f'segments[{i}]'
            if segment.kind not in SLOPE_MULTIPLIERS:
                raise LabelError(f'{where}.kind', f'unknown kind {segment.kind!r}; choose one '
                                                  f'of {SEGMENT_KINDS}')
            start = _finite(f'{where}.start', segment.start)
            end = _finite(f'{where}.end', segment.end)
            if not 0.0 <= start < end <= duration + TIME_TOLERANCE:
                raise LabelError(where, f'[{start}, {end}] s must satisfy 0 <= start < end <= '
                                        f'duration ({duration} s)')
            if previous_end is not None and start < previous_end - TIME_TOLERANCE:
                raise LabelError(where, f'starts at {start} s, inside the previous segment '
                                        f'(ends at {previous_end} s): segments must not overlap')
            previous_end = end
        if self.catastrophic_time is not None:
            when = _finite('catastrophic_time', self.catastrophic_time)
            if not 0.0 <= when <= duration + TIME_TOLERANCE:
                raise LabelError('catastrophic_time', f'{when} s is outside the episode '
                                                      f'(0..{duration} s)')
            if self.success:
                raise LabelError('catastrophic_time', 'a successful rollout cannot have a '
                                                      'catastrophic failure')
        if progress > 0 and self._slope_weighted_time() < 0:
            # s = final / weighted would be negative: every progress segment would go down.
            raise LabelError('segments', 'more mistake than progress time: no base slope makes '
                                         f'the curve rise to final_progress {progress}')

    def _slope_weighted_time(self) -> float:
        """Time before the end (or the catastrophe), each second weighted by its slope."""
        horizon = self.duration if self.catastrophic_time is None else self.catastrophic_time
        weighted = horizon * SLOPE_MULTIPLIERS[UNMARKED_KIND]
        for segment in self.segments:
            inside = max(0.0, min(segment.end, horizon) - segment.start)
            weighted += inside * (SLOPE_MULTIPLIERS[segment.kind]
                                  - SLOPE_MULTIPLIERS[UNMARKED_KIND])
        return weighted

    def to_json(self) -> dict:
        """Return the sidecar's JSON object."""
        return {
            'format': FORMAT, 'version': VERSION,
            'episode_id': self.episode_id, 'task': self.task,
            'success': self.success, 'final_progress': float(self.final_progress),
            'duration': float(self.duration),
            'segments': [asdict(s) for s in sorted(self.segments, key=lambda s: s.start)],
            'catastrophic_time': (None if self.catastrophic_time is None
                                  else float(self.catastrophic_time)),
            'labeller': {'kind': self.labeller_kind, 'name': self.labeller},
            'labelled_at': self.labelled_at, 'bag_digest': self.bag_digest,
        }

    @classmethod
    def from_json(cls, data) -> 'RolloutLabel':
        """Parse and validate a sidecar's JSON object (raises ``LabelError``)."""
        if not isinstance(data, dict):
            raise LabelError('', 'a label is a JSON object')
        if data.get('format', FORMAT) != FORMAT:
            raise LabelError('format', f'{data.get("format")!r} is not {FORMAT!r}')
        version = data.get('version', VERSION)
        if version != VERSION:
            raise LabelError('version', f'{version!r}; this code reads version {VERSION}')
        known = {'format', 'version', 'episode_id', 'task', 'success', 'final_progress',
                 'duration', 'segments', 'catastrophic_time', 'labeller', 'labelled_at',
                 'bag_digest'}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabelError(unknown[0], f'unknown field(s) {unknown}')
        for name in ('episode_id', 'success', 'final_progress', 'duration'):
            if name not in data:
                raise LabelError(name, 'missing')
        segments = data.get('segments') or []
        if not isinstance(segments, list):
            raise LabelError('segments', 'must be a list of {start, end, kind} objects')
        parsed = []
        for i, segment in enumerate(segments):
            if not isinstance(segment, dict) or set(segment) != {'start', 'end', 'kind'}:
                raise LabelError(f'segments[{i}]', 'must be an object with exactly start, end '
                                                   'and kind')
            parsed.append(Segment(start=segment['start'], end=segment['end'],
                                  kind=segment['kind']))
        labeller = data.get('labeller') or {}
        if not isinstance(labeller, dict) or not set(labeller) <= {'kind', 'name'}:
            raise LabelError('labeller', 'must be an object {kind, name}')
        return cls(episode_id=data['episode_id'], success=data['success'],
                   final_progress=data['final_progress'], duration=data['duration'],
                   segments=tuple(parsed), catastrophic_time=data.get('catastrophic_time'),
                   task=data.get('task', ''), labeller_kind=labeller.get('kind', 'person'),
                   labeller=labeller.get('name', ''), labelled_at=data.get('labelled_at', ''),
                   bag_digest=data.get('bag_digest', ''))


def _check_text(name: str, value, required: bool = False) -> None:
    if not isinstance(value, str):
        raise LabelError(name, f'must be a string, got {type(value).__name__}')
    if required and not value:
        raise LabelError(name, 'must not be empty')
    if len(value) > MAX_TEXT:
        raise LabelError(name, f'{len(value)} characters; at most {MAX_TEXT}')


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LabelError(name, f'must be a number, got {value!r}')
    value = float(value)
    if not math.isfinite(value):
        raise LabelError(name, f'must be finite, got {value}')
    return value


# ---- progress curve -----------------------------------------------------------------------
def progress_targets(label: RolloutLabel, timestamps) -> np.ndarray:
    """Per-frame progress in [0, 1] implied by ``label`` (float64 [T]).

    ``timestamps``: the frames' times (s), increasing; only differences matter. Frame ``i``
    covers the interval (t[i-1], t[i]]; its slope is that of the segment holding t[i-1] (the
    interval's start), so a segment marked from a to b moves progress between a and b.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError(f'timestamps must be a non-empty 1-D array, got shape {times.shape}')
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise ValueError('timestamps must be finite and non-decreasing')
    t = times - times[0]
    multipliers = np.full(len(t), SLOPE_MULTIPLIERS[UNMARKED_KIND])
    for segment in label.segments:
        inside = (t >= segment.start) & (t < segment.end)
        multipliers[inside] = SLOPE_MULTIPLIERS[segment.kind]
    dt = np.diff(t)                                # interval i: t[i] .. t[i+1]
    slopes = multipliers[:-1]
    end = label.catastrophic_time
    if end is not None:
        # Only the time before the catastrophe counts towards the progress reached there.
        dt = np.clip(np.minimum(t[1:], end) - t[:-1], 0.0, None)
    weighted = float(np.sum(slopes * dt))
    if abs(weighted) < 1e-12:
        # Only flat segments (or no time): jump straight to the final progress over the
        # episode, linearly, rather than divide by zero.
        horizon = t[-1] if end is None else min(end, t[-1])
        progress = (label.final_progress * np.clip(t / horizon, 0.0, 1.0) if horizon > 0
                    else np.full(len(t), label.final_progress))
    else:
        base_slope = label.final_progress / weighted
        progress = np.concatenate([[0.0], np.cumsum(base_slope * slopes * dt)])
    if end is not None:
        progress[t >= end] = 0.0
    return np.clip(progress, 0.0, 1.0)


def reward_targets(progress: np.ndarray) -> np.ndarray:
    """Per-step reward of a progress curve: its difference (the first frame gets 0)."""
    progress = np.asarray(progress, dtype=np.float64)
    return np.diff(progress, prepend=progress[:1])


# ---- files --------------------------------------------------------------------------------
def label_path(bag_dir) -> Path:
    """Return the sidecar path of ``bag_dir``: ``<bag_dir>.label.json`` beside it."""
    bag_dir = Path(bag_dir)
    return bag_dir.parent / f'{bag_dir.name}{LABEL_SUFFIX}'


def bag_digest(bag_dir) -> str:
    """SHA-256 of the bag's ``metadata.yaml`` (names its files, message counts and times).

    A label whose digest differs from its bag's was made for another recording: stale.
    """
    metadata = Path(bag_dir) / 'metadata.yaml'
    return hashlib.sha256(metadata.read_bytes()).hexdigest() if metadata.is_file() else ''


def now_iso() -> str:
    """Return the current UTC time as ISO 8601 (``labelled_at``)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def save_label(bag_dir, label: RolloutLabel) -> Path:
    """Write ``label`` beside ``bag_dir`` atomically; return the file's path.

    The JSON goes to a unique temporary file in the same directory and is renamed over the
    sidecar, so a reader (or a second writer) sees the old label or the new one, never a mix.
    """
    target = label_path(bag_dir)
    text = json.dumps(label.to_json(), indent=2, sort_keys=True) + '\n'
    handle, temporary = tempfile.mkstemp(prefix=f'.{target.name}.', suffix='.tmp',
                                         dir=target.parent)
    try:
        with os.fdopen(handle, 'w', encoding='utf-8') as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load_label(bag_dir) -> RolloutLabel | None:
    """Return the label beside ``bag_dir`` (None if none); ``LabelError`` if it is bad."""
    path = label_path(bag_dir)
    if not path.is_file():
        return None
    return read_label_file(path)


def read_label_file(path) -> RolloutLabel:
    """Read and validate one label file; errors name the file and the field."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_BYTES:
            raise LabelError('', f'{size} bytes; a label file is at most {MAX_LABEL_BYTES}')
        data = json.loads(path.read_text(encoding='utf-8'))
        return RolloutLabel.from_json(data)
    except LabelError as error:
        raise LabelError(error.field, f'{path}: {error}') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabelError('', f'{path}: not a readable JSON label ({error})') from None


@dataclass
class LabelCheck:
    """How a label relates to its bag: ``status`` is unlabelled, labelled, stale or invalid."""

    status: str
    label: RolloutLabel | None = None
    problem: str = ''
    extra: dict = field(default_factory=dict)


def check_label(bag_dir, episode_id: str = '') -> LabelCheck:
    """Read the label of ``bag_dir`` and say whether it still belongs to that bag.

    Stale: the bag was re-recorded since (its digest changed). Invalid: the file cannot be
    read, or names another episode than ``episode_id`` (when given).
    """
    try:
        label = load_label(bag_dir)
    except LabelError as error:
        return LabelCheck('invalid', problem=str(error))
    if label is None:
        return LabelCheck('unlabelled')
    if episode_id and label.episode_id != episode_id:
        return LabelCheck('invalid', label, f'{label_path(bag_dir)}: episode_id: label is for '
                                            f'{label.episode_id!r}, the bag holds {episode_id!r}')
    if label.bag_digest and label.bag_digest != bag_digest(bag_dir):
        return LabelCheck('stale', label, 'the bag changed since it was labelled')
    return LabelCheck('labelled', label)
