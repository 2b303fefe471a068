"""The data flywheel: fine-tune a reward model on labelled rollouts of the policy (RM1 -> RM2).

A reward model trained on demonstrations only has never seen the policy fail the way it does
(DESIGN "Learning from rollouts"). Rollouts labelled once (``sarm2_common.rollout_labels``
sidecars, written by a person or by ``label_rollouts_from_sim``) are mixed with the original
demonstrations, so the model learns the policy's failures without forgetting the demonstrations:

- every labelled rollout gets value targets from its label's progress curve, success or not
  (``training_data.ROLLOUT_LABEL``); its outcome is the label's, not the recorder's verdict;
- ``RolloutMix.primitives='ignore'`` (default) drops any primitive labels a rollout bag carries,
  as on a robot where a person labels progress but not primitives: those frames train the value
  and success heads, gated by the stage estimator's predicted primitive, and no stage loss;
  ``'keep'`` uses recorded labels (simulator ground truth) where present;
- ``RolloutMix.share`` of the sampled frames come from rollouts, the rest from demonstrations;
- fine-tuning keeps the checkpoint's joint-state normalization;
- the new checkpoint's ``config.json`` metadata names what it learned from: the checkpoint it
  started from (path and model id), the demonstrations, and every rollout bag with its episode
  id, label file SHA-256, labeller and bag digest; plus the success head's operating point
  calibrated on the labelled rollouts (``calibrate_success``).

``finetune_on_rollouts`` is the one call the SPIRAL loop needs; ``train_reward_model
--init-checkpoint ... --rollouts ...`` is the same on the command line.
"""

from dataclasses import asdict, dataclass, field
import hashlib
import logging
from pathlib import Path

import numpy as np

from .checkpoint import (CheckpointError, CONFIG_FILE, load_checkpoint, read_config,
                         save_checkpoint, state_fingerprint)
from .metrics import debounced_peak
from sarm2_common.episode import Episode, UNLABELLED
from sarm2_common.rollout_labels import check_label, label_path, LabelError
from .training import TrainConfig, train_model
from .training_data import ROLLOUT_LABEL, TargetConfig

LOG = logging.getLogger('sarm2_reward.flywheel')
PRIMITIVE_MODES = ('ignore', 'keep')
# Frames in a row the success probability must stay above the threshold to count as "success
# detected" (a single-frame spike is not a success).
DEFAULT_CONSECUTIVE = 3


@dataclass
class RolloutMix:
    """How labelled rollouts join the demonstrations."""

    share: float = 0.5
    primitives: str = 'ignore'

    def __post_init__(self):
        if not 0.0 < self.share < 1.0:
            raise ValueError(f'rollout share must be in (0, 1), got {self.share}')
        if self.primitives not in PRIMITIVE_MODES:
            raise ValueError(f'rollout primitives must be one of {PRIMITIVE_MODES}, got '
                             f'{self.primitives!r}')


@dataclass
class LabelledRollouts:
    """Rollout episodes with their labels attached, and what was left out and why."""

    episodes: list[Episode]
    provenance: list[dict]
    skipped: dict[str, list[str]] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_labelled_rollouts(bags, primitives: str = 'ignore') -> LabelledRollouts:
    """Read rollout bags (directories of bags or bags) that carry a valid label.

    Unlabelled bags and stale labels (the bag changed since) are skipped and listed in
    ``skipped``; an invalid label (unreadable, or naming another episode) raises ``LabelError``
    naming the file: training must not quietly drop what a person labelled.
    """
    from sarm2_common.bag_dataset import find_bags, read_episode

    if primitives not in PRIMITIVE_MODES:
        raise ValueError(f'primitives must be one of {PRIMITIVE_MODES}, got {primitives!r}')
    roots = [bags] if isinstance(bags, (str, Path)) else list(bags)
    found = [bag for root in roots for bag in find_bags(root)]
    result = LabelledRollouts([], [], {'unlabelled': [], 'stale': []})
    for bag in found:
        if not label_path(bag).is_file():
            result.skipped['unlabelled'].append(str(bag))
            continue
        episode = read_episode(bag)
        check = check_label(bag, episode.episode_id)
        if check.status == 'invalid':
            raise LabelError('', check.problem)
        if check.status == 'stale':
            LOG.warning('%s: label is stale (%s); skipped', bag, check.problem)
            result.skipped['stale'].append(str(bag))
            continue
        label = check.label
        episode.success = label.success
        episode.metadata[ROLLOUT_LABEL] = label
        if primitives == 'ignore':
            episode.primitive_ids = np.full(len(episode), UNLABELLED, dtype=np.int64)
        result.episodes.append(episode)
        result.provenance.append({
            'bag': str(bag), 'episode_id': episode.episode_id, 'task': episode.task,
            'label_sha256': _sha256(label_path(bag)), 'labeller': label.labeller,
            'labeller_kind': label.labeller_kind, 'success': label.success,
            'final_progress': label.final_progress, 'bag_digest': label.bag_digest})
    return result


def mix_weights(demonstrations: list[Episode], rollouts: list[Episode],
                share: float) -> np.ndarray:
    """Per-episode sampling weights giving rollouts ``share`` of the sampled frames."""
    demo_frames = sum(len(e) for e in demonstrations)
    rollout_frames = sum(len(e) for e in rollouts)
    if not demo_frames or not rollout_frames:
        return np.ones(len(demonstrations) + len(rollouts))
    return np.concatenate([np.full(len(demonstrations), (1.0 - share) / demo_frames),
                           np.full(len(rollouts), share / rollout_frames)]) * \
        (demo_frames + rollout_frames)


def calibrate_success(success_probabilities: list[np.ndarray], outcomes: list[bool],
                      consecutive: int = DEFAULT_CONSECUTIVE,
                      max_false_positive_rate: float = 0.0) -> dict:
    """Pick the success head's threshold on labelled rollouts.

    A rollout "detects success" when its success probability stays at or above the threshold
    for ``consecutive`` frames. The threshold is the lowest that keeps the false-positive rate
    (failed rollouts that detect success) at or below ``max_false_positive_rate``, i.e. it
    catches as many successes as that allows. Returns the threshold and the rates it gives on
    these rollouts.
    """
    peaks = np.array([debounced_peak(p, consecutive) for p in success_probabilities])
    outcomes = np.asarray(outcomes, dtype=bool)
    failures = np.sort(peaks[~outcomes])[::-1]
    allowed = int(np.floor(max_false_positive_rate * len(failures)))
    if len(failures) > allowed:
        # Just above the (allowed + 1)-th highest failure peak.
        threshold = float(np.nextafter(failures[allowed], np.inf))
    else:
        threshold = float(peaks[outcomes].min()) if outcomes.any() else 0.5
    threshold = min(max(threshold, 1e-6), 1.0)
    detected = peaks >= threshold
    return {
        'threshold': threshold, 'consecutive_frames': int(consecutive),
        'false_positive_rate': float(detected[~outcomes].mean()) if (~outcomes).any() else None,
        'true_positive_rate': float(detected[outcomes].mean()) if outcomes.any() else None,
        'rollouts': int(len(outcomes)), 'successes': int(outcomes.sum()),
    }


@dataclass(frozen=True)
class CalibratedSuccess:
    """A checkpoint's calibrated success rule for one task.

    The threshold, the frames it must hold for (the false-positive rate was measured for that
    many), and where both came from.
    """

    threshold: float
    frames: int
    origin: str


def calibrated_success_rule(checkpoint, task: str) -> CalibratedSuccess | None:
    """Return the success rule ``checkpoint``'s calibration sets for ``task``.

    The task's own threshold (``success_calibration.per_task``) when the checkpoint has one,
    else the one calibrated over all its rollouts, with the consecutive frames it was
    calibrated for; ``None`` for a checkpoint that was never calibrated (trained on
    demonstrations only). The origin names the checkpoint and the key, for logs and bag
    metadata. Raises ``CheckpointError`` naming the file and the field when the directory is
    not a checkpoint or its calibration is malformed.
    """
    calibration = read_config(checkpoint).get('metadata', {}).get('success_calibration')
    if calibration is None:
        return None
    path = Path(checkpoint) / CONFIG_FILE
    per_task = calibration.get('per_task') if isinstance(calibration, dict) else None
    if isinstance(per_task, dict) and task in per_task:
        entry, key = per_task[task], f'success_calibration.per_task.{task}'
    else:
        entry, key = calibration, 'success_calibration'
    threshold = entry.get('threshold') if isinstance(entry, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 < threshold <= 1.0:
        raise CheckpointError(f'{path}: {key}.threshold is {threshold!r}, not a probability in '
                              '(0, 1]')
    frames = entry.get('consecutive_frames')
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise CheckpointError(f'{path}: {key}.consecutive_frames is {frames!r}, not a whole '
                              'number of frames >= 1')
    return CalibratedSuccess(float(threshold), frames, f'{path} {key}.threshold')


def finetune_train_config(**overrides) -> TrainConfig:
    """Defaults for fine-tuning a trained model: fewer steps, a lower rate, short warmup."""
    values = {'steps': 400, 'lr': 2e-4, 'warmup_steps': 20, 'eval_every': 0, 'save_every': 0}
    values.update(overrides)
    return TrainConfig(**values)


def train_with_rollouts(model, demonstrations: list[Episode], rollouts: LabelledRollouts,
                        out_dir, train: TrainConfig, mix: RolloutMix | None = None,
                        targets: TargetConfig | None = None, progress: bool = True,
                        metadata: dict | None = None, fit_normalization: bool = True,
                        val_episodes: list[Episode] | None = None) -> dict:
    """Train ``model`` on demonstrations + labelled rollouts; record provenance and calibration.

    Returns ``train_model``'s result plus ``calibration`` (see ``calibrate_success``; computed on
    these same rollouts after training, for SARM2 models: an in-sample operating point, so its
    rates are optimistic; measure them on held-out rollouts; ``per_task`` holds each task's own)
    and the counts used.
    """
    from .evaluation import predict_any
    from .model import Sarm2Model

    mix = mix or RolloutMix()
    if not rollouts.episodes and not demonstrations:
        raise ValueError('nothing to train on: no demonstrations and no labelled rollouts')
    episodes = list(demonstrations) + list(rollouts.episodes)
    weights = mix_weights(demonstrations, rollouts.episodes, mix.share)
    document = {**(metadata or {}),
                'data': [str(e.metadata.get('bag_path', e.episode_id)) for e in demonstrations],
                'rollouts': rollouts.provenance, 'rollout_mix': asdict(mix),
                'tasks': sorted({e.task for e in episodes})}
    result = train_model(model, episodes, train, targets, out_dir, val_episodes,
                         progress=progress, metadata=document,
                         fit_normalization=fit_normalization, episode_weights=weights)
    calibration = None
    if rollouts.episodes and isinstance(model, Sarm2Model):
        predictions = [predict_any(model, e) for e in rollouts.episodes]
        probabilities = [p['success_probability'] for p in predictions]
        outcomes = [e.success for e in rollouts.episodes]
        calibration = calibrate_success(probabilities, outcomes)
        # The policy node runs one task at a time, and one task's failures can look like
        # another's success to the head: a threshold per task keeps one from setting another's.
        tasks = [e.task for e in rollouts.episodes]
        calibration['per_task'] = {
            task: calibrate_success([p for p, t in zip(probabilities, tasks) if t == task],
                                    [o for o, t in zip(outcomes, tasks) if t == task])
            for task in sorted(set(tasks))}
        if out_dir is not None:
            # Rewrite config.json with the calibration (weights unchanged, optimizer kept).
            save_checkpoint(model, out_dir, metadata={
                **document, 'step': train.steps, 'targets': asdict(targets or TargetConfig()),
                'success_calibration': calibration})
    return {**result, 'calibration': calibration, 'demonstrations': len(demonstrations),
            'rollouts': len(rollouts.episodes), 'skipped': rollouts.skipped}


def finetune_on_rollouts(checkpoint, demonstrations, rollout_bags, out_dir,
                         train: TrainConfig | None = None, mix: RolloutMix | None = None,
                         targets: TargetConfig | None = None, progress: bool = True) -> dict:
    """RM1 -> RM2: fine-tune ``checkpoint`` on demonstrations plus labelled rollout bags.

    ``demonstrations``: episodes, or paths of bags / LeRobot datasets; ``rollout_bags``: rollout
    bag directories (or directories of them), only those with a valid label are used. The new
    checkpoint goes to ``out_dir`` (must not hold one). Returns ``model_id``, ``out_dir``,
    ``calibration``, counts and the training logs. Raises ``LabelError`` for an invalid label,
    ``CheckpointError`` for a bad checkpoint, ``ValueError`` when nothing is labelled.
    """
    from .datasets import load_episodes

    out_dir = Path(out_dir)
    if (out_dir / 'config.json').is_file():
        raise ValueError(f'{out_dir} already holds a checkpoint; choose another directory')
    model = load_checkpoint(checkpoint)
    demos = list(demonstrations) if all(isinstance(d, Episode) for d in demonstrations) \
        else load_episodes(demonstrations)
    mix = mix or RolloutMix()
    rollouts = load_labelled_rollouts(rollout_bags, mix.primitives)
    if not rollouts.episodes:
        raise ValueError(f'no labelled rollouts in {rollout_bags} (unlabelled: '
                         f'{len(rollouts.skipped["unlabelled"])}, stale: '
                         f'{len(rollouts.skipped["stale"])}); label them first '
                         '(label_rollouts_from_sim)')
    source = {'path': str(checkpoint),
              'model_id': f'{model.model_type}-{state_fingerprint(model)}'}
    train = train or finetune_train_config()
    result = train_with_rollouts(model, demos, rollouts, out_dir, train, mix, targets, progress,
                                 metadata={'init_checkpoint': source},
                                 fit_normalization=False)
    return {**result, 'out_dir': str(out_dir), 'init_checkpoint': source,
            'model_id': f'{model.model_type}-{state_fingerprint(model)}',
            'train_config': asdict(train)}
