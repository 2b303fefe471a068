"""Evaluate a reward model on episodes: metrics JSON + plots; ``evaluate_reward_model`` CLI.

``predict_any`` gives every model kind (SARM2, SARM v1 per task, time-linear) the same
per-episode prediction dict, so the metrics and the benchmark treat them alike.
"""

import argparse
import json
import logging
from pathlib import Path
import sys

import numpy as np

from .baselines import SarmV1Model, TimeLinearBaseline
from .checkpoint import CheckpointError, load_checkpoint
from sarm2_common.episode import Episode
from .evaluation_report import write_report
from .metrics import primitive_confusion, summarize_by_task
from .model import Sarm2Model
from sarm2_common.vocabulary import PRIMITIVES

LOG = logging.getLogger('sarm2_reward.evaluation')


class PerTaskModels:
    """SARM v1 style: one model per task; episodes of other tasks get no prediction."""

    def __init__(self, models: dict[str, SarmV1Model]):
        self.models = models

    def predict_episode(self, episode: Episode) -> dict | None:
        model = self.models.get(episode.task)
        return None if model is None else model.predict_episode(episode)


def predict_any(model, episode: Episode, text_embedder=None) -> dict | None:
    """Per-frame predictions of any supported model; None if it cannot handle the episode."""
    if isinstance(model, Sarm2Model):
        from .inference import predict_episode
        return predict_episode(model, episode, text_embedder)
    if isinstance(model, (SarmV1Model, TimeLinearBaseline, PerTaskModels)) or hasattr(
            model, 'predict_episode'):
        # Other offline reward models (e.g. lrm.lrm_backend.LrmEpisodePredictor) only need
        # predict_episode(episode) -> per-frame dict.
        return model.predict_episode(episode)
    raise TypeError(f'cannot evaluate a {type(model).__name__}')


def evaluate(model, episodes: list[Episode]) -> tuple[dict, list[Episode], list[dict]]:
    """Metrics over the episodes the model can handle, plus those episodes and predictions."""
    text_embedder = None
    if isinstance(model, Sarm2Model):
        from .text_embedding import make_text_embedder
        text_embedder = make_text_embedder(model.config.text_model_path)
    kept, predictions = [], []
    for episode in episodes:
        prediction = predict_any(model, episode, text_embedder)
        if prediction is not None:
            kept.append(episode)
            predictions.append(prediction)
    metrics = summarize_by_task(kept, predictions) if kept else {'overall': None, 'per_task': {}}
    metrics['skipped_episodes'] = len(episodes) - len(kept)
    return metrics, kept, predictions


def plot_progress(episodes: list[Episode], predictions: list[dict], path: Path,
                  max_episodes: int = 12) -> None:
    """Predicted vs true progress, one panel per episode."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    from .training_data import success_progress
    count = min(len(episodes), max_episodes)
    columns = min(4, count)
    rows = int(np.ceil(count / columns))
    figure, axes = pyplot.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows),
                                   squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis('off')
    for ax, episode, prediction in zip(axes.flat, episodes[:count], predictions[:count]):
        frames = np.arange(len(episode))
        if episode.success:
            ax.plot(frames, success_progress(len(episode)), 'k--', label='true (t/T)')
        ax.plot(frames, prediction['progress'], label='predicted')
        if 'success_probability' in prediction:
            ax.plot(frames, prediction['success_probability'], ':', label='P(success)')
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f'{episode.task} {"ok" if episode.success else "FAILED"}', fontsize=9)
        ax.set_xlabel('frame')
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def plot_confusion(matrix: np.ndarray, path: Path) -> None:
    """Row-normalized confusion matrix of the primitives that occur."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    used = np.flatnonzero(matrix.sum(0) + matrix.sum(1))
    sub = matrix[np.ix_(used, used)].astype(float)
    sub = sub / np.maximum(sub.sum(1, keepdims=True), 1)
    names = [PRIMITIVES[i] for i in used]
    figure, ax = pyplot.subplots(figsize=(1 + 0.6 * len(used), 1 + 0.6 * len(used)))
    ax.imshow(sub, vmin=0, vmax=1, cmap='Blues')
    ax.set_xticks(range(len(used)), names, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(len(used)), names, fontsize=8)
    for i in range(len(used)):
        for j in range(len(used)):
            ax.text(j, i, f'{sub[i, j]:.2f}', ha='center', va='center', fontsize=7)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``evaluate_reward_model``."""
    from .datasets import add_data_arguments, episodes_from_arguments
    parser = argparse.ArgumentParser(
        prog='evaluate_reward_model', description=(
            'Evaluate a reward-model checkpoint on episodes (bags or LeRobot datasets): writes '
            'metrics.json (value MSE, VOC, primitive/group accuracy, success AUROC, pairwise '
            'accuracy; per task and overall), progress.png (predicted vs true progress per '
            'episode), confusion.png (primitive confusion matrix), episodes/*.png (progress, '
            'reward and primitive bands per episode), success.png and index.html to --out. '
            'Truncated bags are evaluated up to their last readable message and listed.'),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument('--checkpoint', required=True, help='checkpoint directory')
    parser.add_argument('--out', required=True, help='directory for metrics.json and plots')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        model = load_checkpoint(args.checkpoint)
        episodes = episodes_from_arguments(args)
    except (ValueError, CheckpointError, FileNotFoundError, RuntimeError) as exc:
        print(f'evaluate_reward_model: error: {exc}', file=sys.stderr)
        return 2
    metrics, kept, predictions = evaluate(model, episodes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'metrics.json').write_text(json.dumps(metrics, indent=2))
    if kept:
        plot_progress(kept, predictions, out / 'progress.png')
        confusion = primitive_confusion(kept, predictions)
        if confusion.sum():
            plot_confusion(confusion, out / 'confusion.png')
    problems = [f'{e.metadata.get("bag_path", e.episode_id)}: partial bag (evaluated up to its '
                'last readable message)' for e in episodes if not e.metadata.get('complete', True)]
    index = write_report(out, metrics, kept, predictions, problems)
    print(json.dumps(metrics['overall']))
    print(f'report: {index}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
