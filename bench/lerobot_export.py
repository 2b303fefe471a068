"""LeRobot export: codec loss, export speed, and SARM2 trained on the export vs on the bags.

1. Records simulated demonstrations (``sarm2_sim.demonstrations``, failure fraction 0.3; cached
   under ``--data-dir``) and reads them as bags (``bag_dataset``).
2. Exports them with ``export_lerobot`` in three video settings: h264 crf 18 yuv420p (our
   default), libsvtav1 crf 30 yuv420p (LeRobot's default) and h264 crf 0 yuv444p (near lossless),
   and reads each back with ``lerobot_dataset``. Reported per setting: export time, frames/s, video
   size, and the codec loss of every frame against the bag (mean absolute error, PSNR, worst
   pixel).
3. Trains SARM2 with ``--seeds`` seeds on the bags and on each export (the same training
   episodes, the same seeds) and evaluates every model on the same held-out bag episodes. The
   export "gives the same metrics" when, for every metric, the difference of the means is within
   two standard errors of that difference (from the seed-to-seed spread of both).

The last stdout line is one JSON object.
"""

import argparse
import json
import logging
import os
from pathlib import Path
import shutil
import sys
import time

import numpy as np
from sarm2_common.bag_dataset import read_episodes
from sarm2_reward.datasets import split_by_task
from sarm2_reward.evaluation import evaluate
from sarm2_reward.lerobot_dataset import read_lerobot_dataset
from sarm2_reward.lerobot_export import ExportConfig, export_lerobot
from sarm2_reward.model import Sarm2Config, Sarm2Model
from sarm2_reward.training import TrainConfig, train_model
from sarm2_sim.demonstrations import record_demonstrations
import torch

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    'h264_crf18_420': ExportConfig(vcodec='h264', crf=18, pix_fmt='yuv420p'),
    'av1_crf30_420': ExportConfig(vcodec='libsvtav1', crf=30, pix_fmt='yuv420p'),
    'h264_crf0_444': ExportConfig(vcodec='h264', crf=0, pix_fmt='yuv444p'),
}
METRICS = ('value_mse_macro', 'voc', 'primitive_acc', 'auroc', 'pairwise_acc')
SIZES = {'quick': {'tasks': 'reach-v3,drawer-open-v3', 'episodes_per_task': 16, 'steps': 300},
         'full': {'tasks': 'reach-v3,drawer-open-v3,button-press-topdown-v3,window-close-v3',
                  'episodes_per_task': 20, 'steps': 1000}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='2 tasks, fewer episodes and steps')
    parser.add_argument('--tasks', help='comma-separated tasks (default: quick 2, full 4)')
    parser.add_argument('--episodes-per-task', type=int, help='demonstrations per task')
    parser.add_argument('--steps', type=int, help='SARM2 training steps')
    parser.add_argument('--seeds', type=int, default=3, help='training seeds per data source')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--test-fraction', type=float, default=0.3)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--data-dir', type=Path,
                        help='demo cache (default runs/bench/lerobot_export/demos-<mode>)')
    args = parser.parse_args(argv)
    mode = 'quick' if args.quick else 'full'
    sizes = SIZES[mode]
    args.tasks = args.tasks or sizes['tasks']
    args.episodes_per_task = args.episodes_per_task or sizes['episodes_per_task']
    args.steps = args.steps or sizes['steps']
    args.data_dir = args.data_dir or ROOT / 'runs' / 'bench' / 'lerobot_export' / f'demos-{mode}'
    return args


def codec_loss(originals, exported) -> dict:
    """Pixel error of every exported frame against the bag's, over all cameras."""
    total, squared, count, worst = 0.0, 0.0, 0, 0
    for original, episode in zip(originals, exported):
        for camera in original.cameras:
            difference = episode.images[camera].astype(np.int16) - original.images[camera]
            total += float(np.abs(difference).sum())
            squared += float((difference.astype(np.float64) ** 2).sum())
            count += difference.size
            worst = max(worst, int(np.abs(difference).max()))
    mse = squared / count
    return {'mean_abs_error': total / count, 'psnr_db': 10 * np.log10(255.0 ** 2 / mse),
            'worst_pixel_error': worst}


def check_pairing(originals, exported) -> None:
    """Check that the export holds the bags' episodes in order, with the same labels."""
    assert len(originals) == len(exported), (len(originals), len(exported))
    for original, episode in zip(originals, exported):
        assert (original.task, len(original), original.success) == \
            (episode.task, len(episode), episode.success)
        assert np.array_equal(original.primitive_ids, episode.primitive_ids)
        assert np.array_equal(original.actions, episode.actions)
        assert np.array_equal(original.joint_positions, episode.joint_positions)


def train_and_evaluate(train, test, seed: int, args) -> dict:
    first = train[0]
    torch.manual_seed(seed)
    model = Sarm2Model(Sarm2Config(cameras=tuple(first.cameras),
                                   image_size=first.images[first.cameras[0]].shape[1],
                                   state_dim=first.joint_positions.shape[1]))
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=seed, eval_every=0,
                         num_threads=args.threads)
    started = time.perf_counter()
    train_model(model, train, config, progress=False)
    metrics, _, _ = evaluate(model, test)
    overall = metrics['overall']
    return {**{m: overall.get(m) for m in METRICS},
            'train_seconds': time.perf_counter() - started}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    tasks = args.tasks.split(',')
    started = time.perf_counter()
    bags = record_demonstrations(args.data_dir / 'bags', tasks, args.episodes_per_task, seed=0,
                                 failure_fraction=0.3, progress=True)
    originals = read_episodes(bags)
    frames = sum(len(e) for e in originals)
    print(f'demos: {len(originals)} episodes, {frames} frames, '
          f'{time.perf_counter() - started:.0f} s', file=sys.stderr)

    # the first export pays for imports and type registration; time the others fairly
    export_lerobot(bags[:2], args.data_dir / 'warmup', overwrite=True, progress=False)
    exports, datasets = {}, {}
    for name, config in SETTINGS.items():
        out = args.data_dir / f'export-{name}'
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        export_lerobot(bags, out, config, progress=False)
        seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in (out / 'videos').rglob('*.mp4')) / 1e6
        episodes = read_lerobot_dataset(out)
        check_pairing(originals, episodes)
        datasets[name] = episodes
        exports[name] = {'export_seconds': seconds, 'frames_per_second': frames / seconds,
                         'video_mb': size, **codec_loss(originals, episodes)}
        print(f'{name}: {exports[name]}', file=sys.stderr)

    # one split, by position: episode i of an export is episode i of the bags
    train_bags, test_bags = split_by_task(originals, args.test_fraction)
    position = {id(e): i for i, e in enumerate(originals)}
    train_index = [position[id(e)] for e in train_bags]
    sources = {'bags': train_bags,
               **{name: [episodes[i] for i in train_index] for name, episodes in datasets.items()}}
    runs = {name: [train_and_evaluate(train, test_bags, seed, args)
                   for seed in range(args.seeds)] for name, train in sources.items()}
    summary = {name: {m: {'mean': float(np.mean([r[m] for r in seeds])),
                          'std': float(np.std([r[m] for r in seeds], ddof=1))
                          if len(seeds) > 1 else 0.0}
                      for m in METRICS if all(r[m] is not None for r in seeds)}
               for name, seeds in runs.items()}
    print(f'\nSARM2 on {len(train_bags)} training / {len(test_bags)} held-out bag episodes, '
          f'{args.steps} steps, mean +- std over {args.seeds} seeds', file=sys.stderr)
    print(f'{"trained on":16s} ' + ' '.join(f'{m:>18s}' for m in METRICS), file=sys.stderr)
    for name, row in summary.items():
        print(f'{name:16s} ' + ' '.join(
            f'{row[m]["mean"]:9.4f} +-{row[m]["std"]:7.4f}' if m in row else f'{"n/a":>18s}'
            for m in METRICS), file=sys.stderr)
    differences, within = {}, {}
    for name in SETTINGS:
        differences[name] = {}
        for m in summary['bags']:
            if m not in summary[name]:
                continue
            error = np.sqrt((summary['bags'][m]['std'] ** 2 + summary[name][m]['std'] ** 2)
                            / args.seeds)
            differences[name][m] = {
                'difference': summary[name][m]['mean'] - summary['bags'][m]['mean'],
                'standard_error': float(error),
                'paired_mean_abs': float(np.mean([abs(e[m] - b[m]) for e, b in zip(
                    runs[name], runs['bags'])]))}
        within[name] = all(abs(d['difference']) <= 2 * d['standard_error'] + 1e-12
                           for d in differences[name].values())
    report = {'episodes': len(originals), 'frames': frames, 'tasks': tasks,
              'steps': args.steps, 'seeds': args.seeds, 'train_episodes': len(train_bags),
              'test_episodes': len(test_bags), 'exports': exports, 'metrics': summary,
              'export_minus_bags': differences, 'within_two_standard_errors': within,
              'quick': args.quick}
    print(json.dumps(report))
    return 0


if __name__ == '__main__':
    os.environ.setdefault('MUJOCO_GL', 'egl')
    sys.exit(main())
