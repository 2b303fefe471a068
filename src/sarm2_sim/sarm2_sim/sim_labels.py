"""Label recorded rollouts from the simulator's privileged truth: ``label_rollouts_from_sim``.

In the data flywheel a person labels a first batch of rollouts once (final progress, segments,
an optional catastrophic frame; ``sarm2_common.rollout_labels``). In simulation the simulator's
truth stands in for that person. This module reads only what a rollout bag recorded on
``/sim/ground_truth`` (the evaluation-only topic ``sim_node`` publishes; the policy node records
it with ``success_source: sim``, ``sarm2_bringup.rollout_bags`` always) plus the frame stamps and
the metadata record. Nothing here is an input of the reward model or the policy at run time:
the labels exist only as sidecar files beside the bags, read by training.

How the truth becomes a label (frame times are seconds since the first camera frame):

- ``success``: the simulator's success flag was set on any ground-truth message of the episode
  (never the policy node's own verdict, which may come from the reward model);
- ``final_progress``: 1 for a success; for a failure, Meta-World's shaped reward of the last
  ground-truth message (the task's own measure of its state: 0..10 with ~10 at the goal, e.g.
  reach + press depth for button-press, reach + drawer travel for drawer-open), put on the
  demonstrations' progress scale and capped at ``FAILURE_PROGRESS_CAP`` (0.9, the cap the
  trainer also puts on failed demonstrations), so a failure never gets the label of a finished
  task. The scale: with ``--demos``, the task's successful demonstrations (their own recorded
  ground truth) give a monotone map from shaped reward to progress ``t / (T - 1)``, the target
  the reward model learns on demonstrations (bin means over the demonstrations' frames sorted by
  shaped reward, made non-decreasing); a failure is labelled with the progress at which a
  demonstration reaches the shaped reward the failure ended with. Without demonstrations of the
  task, the shaped reward divided by 10. Why: the shaped reward and demonstration time disagree
  (window-close's reward stays near 1/10 for the first ~65% of a demonstration), and labels on
  another scale than the demonstrations' teach the model two answers for the same states;
- ``segments`` of a failed rollout (``--segments failures``, the default): the same shaped
  reward, divided by 10 and
  averaged over ``SMOOTHING_STEPS`` simulator steps (centred), is read in blocks of
  ``BLOCK_STEPS`` steps (1 s at the sim node's 20 Hz; steps, not seconds, because in-process
  rollouts are stamped in simulated time, node rollouts in wall time). A block where it rose by
  at least ``FLAT_PER_BLOCK`` is ordinary progress (left unmarked, i.e. progress_slow), one
  where it fell by more is a ``mistake``, the rest ``adjust`` (no progress, e.g. hovering next
  to the button). Neighbouring blocks of one kind form one segment, its ends converted to
  seconds through the ground truth's stamps. A shorter last block is judged by its rate; in a
  successful rollout the last block is always progress (it ends at the goal). If mistakes would
  outweigh progress (no positive base slope exists), they are marked ``adjust`` instead.
  A successful rollout gets no segments by default (a straight line from 0 to 1): the shaped
  reward is a poor witness of *how* a success went. Window-close's stays near 1/10 for the whole
  approach to the window, so its blocks read as ``adjust`` for ~75% of every successful rollout,
  a curve flat at 0 where the demonstrations rise to ~0.65; fine-tuning on such labels tripled
  the reward model's error on window-close demonstrations (docs/benchmarks.md, reward_quality,
  the labelling rule table). ``--segments reward`` marks successes the same way as failures;
  ``--segments none`` writes no segments at all;
- ``catastrophic_time``: never set (Meta-World has no notion of an unrecoverable state);
- ``labeller``: kind ``simulator``, name ``label_rollouts_from_sim`` (``... demo scale`` when
  calibrated on demonstrations); ``bag_digest`` ties the label to the recording.

``--labels FILE`` instead imports labels made elsewhere (e.g. by a person in a web tool): one
JSON object per line, a label (``rollout_labels`` format) plus ``"bag": <bag directory>``.

Bad input (a missing or unfinished bag, a bag without ground truth, ground truth of another
episode, a label naming another episode or lasting longer than its bag, progress outside
[0, 1], overlapping or out-of-range segments, a catastrophic time past the end): one line per
problem naming the file and the field, exit code 2, and no label written for any bag.
"""

import argparse
from dataclasses import dataclass, replace
import json
from pathlib import Path
import sys

import numpy as np

from sarm2_common import bag_io, topics
from sarm2_common.catalogue import load_catalogue
from sarm2_common.rollout_labels import (bag_digest, LabelError, now_iso, RolloutLabel,
                                         save_label, Segment, SLOPE_MULTIPLIERS,
                                         UNMARKED_KIND)

LABELLER_NAME = 'label_rollouts_from_sim'
CALIBRATED_NAME = f'{LABELLER_NAME} (demo scale)'
MIN_BIN_FRAMES = 40                 # frames per bin of the demonstration scale
FAILURE_PROGRESS_CAP = 0.9
SHAPED_REWARD_SCALE = 10.0          # Meta-World's shaped rewards lie in 0..10
SMOOTHING_STEPS = 10
BLOCK_STEPS = 20
FLAT_PER_BLOCK = 0.05               # normalized shaped-reward change per block that counts
SEGMENT_MODES = ('failures', 'reward', 'none')


@dataclass
class RolloutTruth:
    """What a rollout bag recorded that labelling needs (times in s since the first frame)."""

    bag: Path
    episode_id: str
    task: str
    frame_times: np.ndarray
    truth_times: np.ndarray
    truth_steps: np.ndarray
    truth_success: np.ndarray
    shaped_reward: np.ndarray

    @property
    def duration(self) -> float:
        return float(self.frame_times[-1])


def read_rollout_truth(bag: str | Path) -> RolloutTruth:
    """Read frame times, metadata and ground truth of one finished bag (``LabelError``)."""
    bag = Path(bag)
    if not bag_io.is_bag_dir(bag):
        raise LabelError('bag', 'no rosbag2 bag there')
    if not bag_io.is_finished_bag(bag):
        raise LabelError('bag', 'unfinished (no metadata.yaml): an episode cut short has no '
                                'outcome to label')
    frames: dict[str, list[int]] = {}
    truths, records = [], []
    try:
        for topic, _, message in bag_io.read_messages(bag):
            camera = topics.camera_of_topic(topic)
            if camera is not None:
                frames.setdefault(camera, []).append(bag_io.stamp_to_ns(message.header.stamp))
            elif topic == bag_io.GROUND_TRUTH_TOPIC:
                truths.append(message)
            elif topic == bag_io.METADATA_TOPIC:
                records.append(message)
    except Exception as error:  # noqa: BLE001 - any unreadable bag is reported, not raised
        raise LabelError('bag', f'cannot read ({error})') from None
    if not records:
        raise LabelError(bag_io.METADATA_TOPIC, 'no metadata record (episode id)')
    episode_id, task = records[0].episode_id, records[0].task
    if not frames:
        raise LabelError('images', 'no camera frames')
    stamps = np.array(sorted(frames[sorted(frames)[0]]), dtype=np.int64)
    truths.sort(key=lambda m: bag_io.stamp_to_ns(m.header.stamp))
    foreign = sorted({m.episode_id for m in truths if m.episode_id and m.episode_id != episode_id})
    if foreign:
        raise LabelError(f'{bag_io.GROUND_TRUTH_TOPIC}.episode_id',
                         f'ground truth of episode(s) {foreign} in the bag of '
                         f'{episode_id!r}')
    return RolloutTruth(
        bag=bag, episode_id=episode_id, task=task,
        frame_times=(stamps - stamps[0]) / 1e9,
        truth_times=np.array([(bag_io.stamp_to_ns(m.header.stamp) - stamps[0]) / 1e9
                              for m in truths]),
        truth_steps=np.array([int(m.step) for m in truths]),
        truth_success=np.array([bool(m.success) for m in truths], dtype=bool),
        shaped_reward=np.array([float(m.sim_reward) for m in truths]))


def derive_segments(steps: np.ndarray, times: np.ndarray, progress: np.ndarray,
                    duration: float, success: bool = False) -> tuple:
    """Segments from a progress measure at simulator ``steps`` stamped ``times`` (see above)."""
    window = SMOOTHING_STEPS
    # Centred: labelling is offline and sees the whole episode, as a person does.
    smooth = np.convolve(np.pad(progress, (window // 2, window - 1 - window // 2), mode='edge'),
                         np.ones(window) / window, mode='valid')
    step_edges = np.append(np.arange(steps[0], steps[-1], BLOCK_STEPS), steps[-1])
    level = np.interp(step_edges, steps, smooth)
    # Ground truth stamped just before the first recorded frame (the simulator steps before the
    # policy's first observation) would give a segment that starts before the bag does.
    edges = np.clip(np.interp(step_edges, steps, times), 0.0, duration)
    edges[-1] = duration
    kinds = []
    for change, length in zip(np.diff(level), np.diff(step_edges)):
        rate = change * BLOCK_STEPS / max(length, 1)
        kinds.append(UNMARKED_KIND if rate >= FLAT_PER_BLOCK
                     else 'mistake' if rate < -FLAT_PER_BLOCK else 'adjust')
    if success and kinds:
        kinds[-1] = UNMARKED_KIND
    if sum(SLOPE_MULTIPLIERS[k] * (b - a) for k, a, b in zip(kinds, edges, edges[1:])) <= 0:
        kinds = ['adjust' if k == 'mistake' else k for k in kinds]
    segments, start = [], 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            if kinds[start] != UNMARKED_KIND and edges[i] > edges[start]:
                segments.append(Segment(float(edges[start]), float(edges[i]), kinds[start]))
            start = i
    return tuple(segments)


class ProgressScale:
    """Monotone map from normalized shaped reward to demonstration progress, for one task."""

    def __init__(self, rewards: np.ndarray, progress: np.ndarray):
        order = np.argsort(rewards, kind='stable')
        rewards, progress = rewards[order], progress[order]
        # Frames of one reward value share one bin (a plateau is one point of the map).
        _, first = np.unique(rewards, return_index=True)
        edges = [0]
        for start in first[1:]:
            if start - edges[-1] >= MIN_BIN_FRAMES:
                edges.append(int(start))
        bins = np.split(np.arange(len(rewards)), edges[1:])
        self.rewards = np.array([rewards[b].mean() for b in bins])
        self.progress = np.maximum.accumulate([progress[b].mean() for b in bins])

    def __call__(self, reward: float) -> float:
        """Return the demonstrations' progress at this normalized shaped reward."""
        return float(np.interp(reward, self.rewards, self.progress))


def _normalized_reward(truth: RolloutTruth) -> np.ndarray:
    progress = np.clip(truth.shaped_reward / SHAPED_REWARD_SCALE, 0.0, 1.0)
    if len(progress) > 1:
        progress[0] = progress[1]       # the first message precedes any step: it has no reward
    return progress


def demonstration_scales(demo_bags) -> dict[str, ProgressScale]:
    """Per task, the progress scale of its successful demonstrations (``LabelError``)."""
    pairs: dict[str, tuple[list, list]] = {}
    for bag in demo_bags:
        try:
            truth = read_rollout_truth(bag)
        except LabelError as error:
            reason = str(error).removeprefix(f'{error.field}: ')
            raise LabelError(error.field, f'{bag}: {reason}') from None
        if not truth.truth_success.any() or len(truth.truth_times) < 2:
            continue
        rewards, progress = pairs.setdefault(truth.task, ([], []))
        rewards.append(_normalized_reward(truth))
        progress.append(np.arange(len(truth.truth_times)) / (len(truth.truth_times) - 1))
    return {task: ProgressScale(np.concatenate(r), np.concatenate(p))
            for task, (r, p) in pairs.items()}


def label_from_truth(truth: RolloutTruth, segments: str = 'failures', labelled_at: str = '',
                     scale: ProgressScale | None = None) -> RolloutLabel:
    """Turn one rollout's ground truth into its label (``LabelError`` naming the field)."""
    if len(truth.truth_times) == 0:
        raise LabelError(bag_io.GROUND_TRUTH_TOPIC,
                         "no messages: record rollouts with the simulator's ground truth "
                         '(policy node success_source: sim)')
    if truth.task not in load_catalogue():
        raise LabelError('task', f'{truth.task!r} is not a catalogue task')
    if not np.all(np.isfinite(truth.shaped_reward)):
        raise LabelError(f'{bag_io.GROUND_TRUTH_TOPIC}.sim_reward', 'not finite')
    if len(truth.frame_times) < 2 or truth.duration <= 0:
        raise LabelError('images', 'needs at least two frames to have a duration')
    progress = _normalized_reward(truth)
    success = bool(truth.truth_success.any())
    reached = scale(progress[-1]) if scale is not None else float(progress[-1])
    final = 1.0 if success else min(reached, FAILURE_PROGRESS_CAP)
    if segments not in SEGMENT_MODES:
        raise ValueError(f'segments must be one of {SEGMENT_MODES}, got {segments!r}')
    marked = ()
    wanted = segments == 'reward' or (segments == 'failures' and not success)
    if wanted and len(truth.truth_times) > 1:
        marked = derive_segments(truth.truth_steps, truth.truth_times, progress,
                                 truth.duration, success)
    return RolloutLabel(episode_id=truth.episode_id, success=success, final_progress=final,
                        duration=truth.duration, segments=marked, task=truth.task,
                        labeller_kind='simulator',
                        labeller=LABELLER_NAME if scale is None else CALIBRATED_NAME,
                        labelled_at=labelled_at or now_iso(), bag_digest=bag_digest(truth.bag))


def check_label_fits_bag(label: RolloutLabel, truth: RolloutTruth) -> RolloutLabel:
    """Check an imported label against its bag; return it tied to the bag's digest."""
    if label.episode_id != truth.episode_id:
        raise LabelError('episode_id', f'label is for {label.episode_id!r}, the bag '
                                       f'{truth.bag} holds {truth.episode_id!r}')
    frame = float(np.median(np.diff(truth.frame_times))) if len(truth.frame_times) > 1 else 0.0
    if label.duration > truth.duration + frame:
        raise LabelError('duration', f'{label.duration} s, but the bag {truth.bag} lasts '
                                     f'{truth.duration:.3f} s')
    return replace(label, bag_digest=label.bag_digest or bag_digest(truth.bag))


def imported_labels(path: Path) -> list[tuple[Path, RolloutLabel]]:
    """Read ``--labels``: one JSON object per line, a label plus ``"bag"`` (``LabelError``)."""
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError('', f'{path}: cannot read ({error})') from None
    pairs, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f'{path} line {number}: '
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or not isinstance(data.get('bag'), str):
                raise LabelError('bag', 'each line needs "bag": the bag directory')
            bag = Path(data.pop('bag'))
            if not bag.is_absolute():
                bag = path.parent / bag
            label = RolloutLabel.from_json(data)
            try:
                truth = read_rollout_truth(bag)
            except LabelError as error:
                reason = str(error).removeprefix(f'{error.field}: ')
                raise LabelError(error.field, f'{bag}: {reason}') from None
            pairs.append((bag, check_label_fits_bag(label, truth)))
        except json.JSONDecodeError as error:
            problems.append(f'{where}not JSON ({error})')
        except LabelError as error:
            problems.append(f'{where}{error}')
    if problems:
        raise LabelError('', '\n'.join(problems))
    return pairs


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``label_rollouts_from_sim``."""
    parser = argparse.ArgumentParser(
        prog=LABELLER_NAME, formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Write a rollout label (<bag>.label.json, beside the bag) for every '
                    "rollout bag from the simulator's recorded ground truth: success, final "
                    "progress from Meta-World's shaped reward, segments where that reward "
                    'stalls or falls in a failed rollout. With --labels, import labels made '
                    'elsewhere instead. '
                    'Every label is checked before any is written; a problem stops the run '
                    'with exit code 2 and writes nothing.',
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('bags', nargs='*', type=Path,
                        help='rollout bag directories, or directories holding bags')
    parser.add_argument('--labels', type=Path,
                        help='JSON-lines file of labels to import (each with "bag")')
    parser.add_argument('--demos', nargs='+', type=Path, default=[],
                        help='demonstration bags of the same tasks (with ground truth): put '
                             'failures on their progress scale (recommended)')
    parser.add_argument('--segments', choices=SEGMENT_MODES, default='failures',
                        help='derive segments from the shaped reward for failed rollouts '
                             '(failures), for every rollout (reward), or write none')
    parser.add_argument('--skip-labelled', action='store_true',
                        help='leave bags that already have a label alone')
    args = parser.parse_args(argv)
    if not args.bags and args.labels is None:
        parser.error('name rollout bags and/or --labels FILE')
    from sarm2_common.bag_dataset import find_bags
    from sarm2_common.rollout_labels import label_path

    pairs, problems, scales = [], [], {}
    try:
        scales = demonstration_scales([bag for root in args.demos for bag in find_bags(root)])
    except LabelError as error:
        problems.append(str(error))
    if args.demos and not scales:
        problems.append(f'{args.demos[0]}: /sim/ground_truth: no successful demonstration')
    for root in args.bags:
        found = find_bags(root)
        if not found:
            problems.append(f'{root}: bag: no rosbag2 bag there')
        for bag in found:
            if args.skip_labelled and label_path(bag).is_file():
                continue
            try:
                truth = read_rollout_truth(bag)
                pairs.append((bag, label_from_truth(truth, args.segments,
                                                    scale=scales.get(truth.task))))
            except LabelError as error:
                problems.append(f'{bag}: {error}')
    if args.labels is not None:
        try:
            pairs += imported_labels(args.labels)
        except LabelError as error:
            problems.append(str(error))
    if problems:
        for problem in problems:
            print(f'{LABELLER_NAME}: error: {problem}', file=sys.stderr)
        print(f'{LABELLER_NAME}: no label written', file=sys.stderr)
        return 2
    for bag, label in pairs:
        save_label(bag, label)
    successes = sum(label.success for _, label in pairs)
    scaled = f'; demonstration scale for {", ".join(sorted(scales))}' if scales else ''
    print(f'{len(pairs)} rollouts labelled ({successes} successes{scaled})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
