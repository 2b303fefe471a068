"""Per-episode plots and an HTML index for an offline reward-model evaluation (ROS-free).

For every episode: predicted vs true progress, the dense reward the live node would publish
(the same ``labeling.dense_rewards``), the success probability, and bands of the true and the
predicted primitives. One success-detection plot (final success probability of successful vs
failed episodes), and ``index.html`` tying metrics, plots and read problems together.
"""

import html
import json
import re
from pathlib import Path

import numpy as np

from sarm2_common.episode import Episode, UNLABELLED
from .labeling import DEFAULT_SMOOTHING, dense_rewards
from sarm2_common.vocabulary import PRIMITIVES

_BAND_COLORS = ('#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1',
                '#ff9da7', '#9c755f', '#bab0ac')


def primitive_segments(ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Split ids into runs (start, end exclusive, id), skipping unlabelled runs."""
    segments, start = [], 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or ids[t] != ids[start]:
            if ids[start] != UNLABELLED:
                segments.append((start, t, int(ids[start])))
            start = t
    return segments


def _file_stem(episode: Episode) -> str:
    # Episode ids of LeRobot datasets contain '/', task names may contain spaces.
    return re.sub(r'[^A-Za-z0-9._-]+', '_', f'{episode.task}__{episode.episode_id}')


def _color(primitive: int) -> str:
    return _BAND_COLORS[primitive % len(_BAND_COLORS)]


def plot_episode(episode: Episode, prediction: dict, path: Path,
                 smoothing: float = DEFAULT_SMOOTHING) -> None:
    """One figure: progress, reward and success probability over frames, primitive bands above."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    from matplotlib.patches import Patch

    frames = np.arange(len(episode))
    figure, (bands, curves, rewards) = pyplot.subplots(
        3, 1, figsize=(8, 5.2), sharex=True, gridspec_kw={'height_ratios': [0.7, 2.2, 1.2]})
    predicted_ids = np.argmax(prediction['primitive_probs'], axis=1) \
        if 'primitive_probs' in prediction else np.full(len(episode), UNLABELLED)
    shown = set()
    for row, ids in ((1, episode.primitive_ids), (0, predicted_ids)):
        for start, end, primitive in primitive_segments(np.asarray(ids)):
            bands.broken_barh([(start, end - start)], (row, 0.8), color=_color(primitive))
            shown.add(primitive)
    bands.set_yticks([0.4, 1.4], ['predicted', 'true'], fontsize=8)
    bands.set_ylim(0, 1.9)
    bands.legend(handles=[Patch(color=_color(p), label=PRIMITIVES[p]) for p in sorted(shown)],
                 fontsize=7, ncol=min(6, max(1, len(shown))), loc='upper left',
                 bbox_to_anchor=(0, 1.55), frameon=False)
    if episode.success:
        curves.plot(frames, frames / max(len(episode) - 1, 1), 'k--', lw=1, label='true (t/T)')
    curves.plot(frames, prediction['progress'], label='predicted progress')
    if 'success_probability' in prediction:
        curves.plot(frames, prediction['success_probability'], ':', label='P(success)')
    curves.set_ylim(-0.05, 1.05)
    curves.legend(fontsize=7, loc='upper left')
    curves.set_ylabel('progress')
    rewards.plot(frames, dense_rewards(np.asarray(prediction['value']), smoothing), lw=1)
    rewards.axhline(0, color='gray', lw=0.5)
    rewards.set_ylabel('reward')
    rewards.set_xlabel('frame')
    outcome = 'success' if episode.success else 'FAILED'
    partial = '' if episode.metadata.get('complete', True) else ' (partial bag)'
    figure.suptitle(f'{episode.task} · {episode.episode_id} · {outcome}{partial}', fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def plot_success_detection(episodes: list[Episode], predictions: list[dict], path: Path) -> bool:
    """Plot final P(success) of successful vs failed episodes; False if nothing to plot."""
    finals = [(float(p['success_probability'][-1]), e.success)
              for e, p in zip(episodes, predictions) if 'success_probability' in p]
    if not finals:
        return False
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, ax = pyplot.subplots(figsize=(5, 3))
    bins = np.linspace(0, 1, 21)
    ax.hist([f for f, ok in finals if ok], bins, alpha=0.6, label='successful episodes')
    ax.hist([f for f, ok in finals if not ok], bins, alpha=0.6, label='failed episodes')
    ax.set_xlabel('P(success) at the last frame')
    ax.set_ylabel('episodes')
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return True


def _metrics_table(metrics: dict) -> str:
    rows = []
    for name, values in [('overall', metrics.get('overall'))] + sorted(
            (metrics.get('per_task') or {}).items()):
        if not values:
            continue
        cells = ''.join(f'<td>{values[k]:.4g}</td>' if isinstance(values.get(k), (int, float))
                        else '<td>-</td>' for k in _METRIC_KEYS)
        rows.append(f'<tr><th>{html.escape(name)}</th>{cells}</tr>')
    header = ''.join(f'<th>{k}</th>' for k in _METRIC_KEYS)
    return f'<table><tr><th></th>{header}</tr>{"".join(rows)}</table>'


_METRIC_KEYS = ('episodes', 'successes', 'value_mse_macro', 'value_mse_micro', 'voc',
                'primitive_acc', 'group_acc', 'auroc', 'pairwise_acc')


def write_report(out: Path, metrics: dict, episodes: list[Episode], predictions: list[dict],
                 problems: list[str], smoothing: float = DEFAULT_SMOOTHING) -> Path:
    """Write per-episode plots, success.png and index.html into ``out``; return the index."""
    out = Path(out)
    (out / 'episodes').mkdir(parents=True, exist_ok=True)
    items = []
    for episode, prediction in zip(episodes, predictions):
        name = f'episodes/{_file_stem(episode)}.png'
        plot_episode(episode, prediction, out / name, smoothing)
        items.append(f'<figure><img src="{html.escape(name)}" loading="lazy"><figcaption>'
                     f'{html.escape(episode.task)} / {html.escape(episode.episode_id)}: '
                     f'{"success" if episode.success else "failed"}, final progress '
                     f'{float(prediction["progress"][-1]):.2f}</figcaption></figure>')
    success = plot_success_detection(episodes, predictions, out / 'success.png')
    extra = [name for name in ('progress.png', 'confusion.png') if (out / name).exists()]
    problem_list = ''.join(f'<li>{html.escape(p)}</li>' for p in problems) or '<li>none</li>'
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Reward model evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} img{{max-width:100%}}
figure{{display:inline-block;width:48%;margin:0.5%}}</style></head><body>
<h1>Reward model evaluation</h1>
<p>{len(episodes)} episodes evaluated; {metrics.get('skipped_episodes', 0)} skipped.</p>
<h2>Metrics</h2>{_metrics_table(metrics)}
<h2>Unreadable or partial data</h2><ul>{problem_list}</ul>
<h2>Success detection</h2>{'<img src="success.png">' if success else '<p>no success head</p>'}
{''.join(f'<h2>{n[:-4]}</h2><img src="{n}">' for n in extra)}
<h2>Episodes</h2>{''.join(items)}
<details><summary>metrics.json</summary><pre>{html.escape(json.dumps(metrics, indent=2))}</pre>
</details></body></html>
"""
    index = out / 'index.html'
    index.write_text(page)
    return index
