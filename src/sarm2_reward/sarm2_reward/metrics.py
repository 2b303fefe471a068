"""Reward-model metrics (see docs/benchmarks.md for how they are reported).

Per episode, a prediction is a dict of per-frame arrays: ``progress`` [T] (always), and when the
model has them ``primitive_probs`` [T, P], ``group_probs`` [T, G], ``success_probability`` [T].

- value MSE on successful episodes against ``t / (T - 1)`` (value = progress - 1, so the error
  is the same): macro = mean of per-episode MSEs, micro = mean over all frames;
- VOC (value-order correlation): Spearman rank correlation of predicted progress with time,
  averaged over successful episodes;
- primitive / group accuracy over labelled frames (group of a primitive-only model = the group of
  its predicted primitive);
- success-detection AUROC of the episode's success score (``success_probability`` of the last
  frame when the model has a success head, else its last progress) against the outcome;
- success-vs-failure pairwise accuracy: over all (successful, failed) episode pairs of the same
  task, how often the successful one scores higher (ties count half).

On policy rollouts (``summarize_rollouts``: what SPIRAL consumes; the outcome is the label's),
three episode scores are ranked against the outcome by AUROC and pairwise accuracy: the final
progress, the episode return (sum of the dense rewards the live node would publish,
``labeling.dense_rewards`` of the values, i.e. smoothed last minus smoothed first value) and the
success head (``debounced_peak``: the highest level its probability holds for ``consecutive``
frames, what a debounced detector would act on). VOC is taken over successful rollouts; the
false-positive rate is the share of failed rollouts whose success head holds ``threshold`` for
``consecutive`` frames somewhere (the episode would be ended as a success).
"""

import numpy as np

from sarm2_common.episode import Episode, UNLABELLED
from .labeling import dense_rewards
from .training_data import success_progress
from sarm2_common.vocabulary import NUM_PRIMITIVES, PRIMITIVE_TO_GROUP

_TO_GROUP = np.array(PRIMITIVE_TO_GROUP)


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind='mergesort')
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation; 0 when either side is constant."""
    rx, ry = rank(x), rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney); None without both classes."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rank(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) /
                 (positives * negatives))


def pairwise_accuracy(success_scores: np.ndarray, failure_scores: np.ndarray) -> float | None:
    """Fraction of (success, failure) pairs where the success scores higher; ties count half."""
    if len(success_scores) == 0 or len(failure_scores) == 0:
        return None
    difference = np.asarray(success_scores)[:, None] - np.asarray(failure_scores)[None, :]
    return float(((difference > 0) + 0.5 * (difference == 0)).mean())


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, size: int) -> np.ndarray:
    """Count frames by [true, predicted] class."""
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def success_score(prediction: dict) -> float:
    """Return the episode's success score: last-frame success probability, else last progress."""
    if 'success_probability' in prediction:
        return float(prediction['success_probability'][-1])
    return float(prediction['progress'][-1])


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(episodes: list[Episode], predictions: list[dict]) -> dict:
    """All metrics over a set of episodes (None where a metric does not apply)."""
    per_episode_mse, squared_errors, vocs = [], [], []
    primitive_hits, group_hits = [], []
    scores: dict[str, tuple[list, list]] = {}
    for episode, prediction in zip(episodes, predictions):
        progress = np.asarray(prediction['progress'], dtype=np.float64)
        if episode.success:
            error = (progress - success_progress(len(episode))) ** 2
            per_episode_mse.append(error.mean())
            squared_errors.append(error)
            if len(episode) > 1:
                vocs.append(spearman(progress, np.arange(len(episode))))
        labelled = episode.primitive_ids != UNLABELLED
        if 'primitive_probs' in prediction and labelled.any():
            true = episode.primitive_ids[labelled]
            predicted = np.argmax(prediction['primitive_probs'], axis=1)[labelled]
            primitive_hits.append(predicted == true)
            if 'group_probs' in prediction:
                predicted_group = np.argmax(prediction['group_probs'], axis=1)[labelled]
            else:
                predicted_group = _TO_GROUP[predicted]
            group_hits.append(predicted_group == _TO_GROUP[true])
        task_scores = scores.setdefault(episode.task, ([], []))
        task_scores[0 if episode.success else 1].append(success_score(prediction))
    all_scores = [s for pos, neg in scores.values() for s in pos + neg]
    all_labels = [label for pos, neg in scores.values()
                  for label in [1] * len(pos) + [0] * len(neg)]
    pairs = [(len(pos) * len(neg), pairwise_accuracy(np.array(pos), np.array(neg)))
             for pos, neg in scores.values()]
    pairs = [(n, acc) for n, acc in pairs if acc is not None]
    return {
        'episodes': len(episodes),
        'successes': int(sum(e.success for e in episodes)),
        'value_mse_macro': _mean(per_episode_mse),
        'value_mse_micro': float(np.concatenate(squared_errors).mean()) if squared_errors
        else None,
        'voc': _mean(vocs),
        'primitive_acc': float(np.concatenate(primitive_hits).mean()) if primitive_hits else None,
        'group_acc': float(np.concatenate(group_hits).mean()) if group_hits else None,
        'auroc': auroc(np.array(all_scores), np.array(all_labels)),
        'pairwise_acc': float(sum(n * acc for n, acc in pairs) / sum(n for n, _ in pairs))
        if pairs else None,
    }


def summarize_by_task(episodes: list[Episode], predictions: list[dict]) -> dict:
    """``{'overall': metrics, 'per_task': {task: metrics}}``."""
    tasks = sorted({e.task for e in episodes})
    per_task = {}
    for task in tasks:
        chosen = [i for i, e in enumerate(episodes) if e.task == task]
        per_task[task] = summarize([episodes[i] for i in chosen], [predictions[i] for i in chosen])
    return {'overall': summarize(episodes, predictions), 'per_task': per_task}


def primitive_confusion(episodes: list[Episode], predictions: list[dict]) -> np.ndarray:
    """Confusion matrix [P, P] of labelled frames over episodes with primitive predictions."""
    matrix = np.zeros((NUM_PRIMITIVES, NUM_PRIMITIVES), dtype=np.int64)
    for episode, prediction in zip(episodes, predictions):
        labelled = episode.primitive_ids != UNLABELLED
        if 'primitive_probs' in prediction and labelled.any():
            matrix += confusion_matrix(episode.primitive_ids[labelled],
                                       np.argmax(prediction['primitive_probs'], 1)[labelled],
                                       NUM_PRIMITIVES)
    return matrix


def first_detection(probabilities: np.ndarray, threshold: float,
                    consecutive: int) -> int | None:
    """Frame at which ``consecutive`` frames in a row reached ``threshold`` (None: never)."""
    run = 0
    for index, probability in enumerate(np.asarray(probabilities, dtype=np.float64)):
        run = run + 1 if probability >= threshold else 0
        if run >= consecutive:
            return index
    return None


def debounced_peak(probabilities: np.ndarray, consecutive: int) -> float:
    """Return the highest level ``consecutive`` frames in a row all reach (episode score)."""
    values = np.asarray(probabilities, dtype=np.float64)
    if len(values) < consecutive:
        return float(values.min()) if len(values) else 0.0
    windows = np.lib.stride_tricks.sliding_window_view(values, consecutive)
    return float(windows.min(axis=1).max())


def _ranking(scores: np.ndarray, outcomes: np.ndarray) -> tuple[float | None, float | None]:
    return (auroc(scores, outcomes),
            pairwise_accuracy(scores[outcomes], scores[~outcomes]))


def summarize_rollouts(episodes: list[Episode], predictions: list[dict],
                       threshold: float | np.ndarray | None = None, consecutive: int = 3) -> dict:
    """Rollout metrics of one set of episodes (see the module docstring); None if n/a.

    ``threshold`` is the success head's, one for all episodes or one per episode.
    """
    outcomes = np.array([e.success for e in episodes], dtype=bool)
    final = np.array([float(p['progress'][-1]) for p in predictions])
    returns = np.array([float(dense_rewards(np.asarray(p['progress'], np.float64) - 1.0).sum())
                        for p in predictions])
    vocs = [spearman(np.asarray(p['progress']), np.arange(len(e)))
            for e, p in zip(episodes, predictions) if e.success and len(e) > 1]
    out = {'rollouts': len(episodes), 'successes': int(outcomes.sum())}
    out['final_auroc'], out['final_pairwise'] = _ranking(final, outcomes)
    out['return_auroc'], out['return_pairwise'] = _ranking(returns, outcomes)
    out['voc'] = _mean(vocs)
    out['success_auroc'] = out['success_pairwise'] = None
    out['false_positive_rate'] = out['true_positive_rate'] = None
    if predictions and all('success_probability' in p for p in predictions):
        peaks = np.array([debounced_peak(p['success_probability'], consecutive)
                          for p in predictions])
        out['success_auroc'], out['success_pairwise'] = _ranking(peaks, outcomes)
        if threshold is not None:
            detected = peaks >= threshold
            out['false_positive_rate'] = float(detected[~outcomes].mean()) \
                if (~outcomes).any() else None
            out['true_positive_rate'] = float(detected[outcomes].mean()) \
                if outcomes.any() else None
    return out
