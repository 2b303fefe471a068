"""``train_reward_model``: train a reward model (SARM2 or a baseline) from the command line.

Scales with plain PyTorch DistributedDataParallel: run the same command under ``torchrun``
(``torchrun --nproc_per_node 4 -m sarm2_reward.train ...``, or several nodes with
``--nnodes/--rdzv-endpoint``); see ``training`` for what each process does. With
``--init-checkpoint`` and ``--rollouts`` it fine-tunes on labelled rollouts (``flywheel``).
"""

import argparse
from dataclasses import asdict
import json
import logging
from pathlib import Path
import sys

import numpy as np
from torch import distributed

from .checkpoint import CheckpointError, load_checkpoint, state_fingerprint
from .datasets import add_data_arguments, episodes_from_arguments
from sarm2_common.episode import Episode
from .flywheel import LabelledRollouts, load_labelled_rollouts, RolloutMix, train_with_rollouts
from .model import Sarm2Config, Sarm2Model
from .text_embedding import make_text_embedder
from .training import TrainConfig, train_model
from .training_data import TargetConfig

LOG = logging.getLogger('sarm2_reward.train')


OPTION_HELP = {
    'steps': 'optimizer steps in total (a resumed run continues up to this count)',
    'batch_size': 'samples per step and process',
    'lr': 'peak AdamW learning rate (linear warmup, cosine decay to 10%%)',
    'weight_decay': 'AdamW weight decay',
    'warmup_steps': 'linear learning-rate warmup steps',
    'grad_clip': 'gradient-norm clip (0: off)',
    'eval_every': 'validate and log every N steps (0: never)',
    'save_every': 'write the checkpoint every N steps (and at the end)',
    'seed': 'seed of initialization, sampling and the train/val split',
    'num_threads': 'torch CPU threads (0: torch default; 1 is fastest for small models on a '
                   'busy machine)',
    'device': 'auto (CUDA when available), cpu or cuda',
    'stage_pretrain_steps': 'first N steps train the stage estimator alone (SARM2; the anchor '
                            'recipe, with --model-config {"stage_loss_weight": 0.25})',
    'rewind_prob': 'share of samples whose value window is played forward then rewound',
    'predicted_primitive_prob': 'share of samples whose value decoder is conditioned on the '
                                'predicted rather than the labelled primitive',
    'success_window': 'last fraction of a successful episode labelled "task complete"',
    'failure_progress_cap': 'highest progress target of a frame of a failed episode',
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='train_reward_model', description=(
            'Train the SARM2 reward model (or a baseline) on demonstrations. Data: rosbag2 bags '
            '(a directory of bags, or bag directories) or LeRobot-format datasets (directories '
            'with meta/info.json). The output directory becomes a checkpoint (safetensors + '
            'config.json + normalization stats); --resume continues it. For several GPUs or '
            'nodes run under torchrun: torchrun --nproc_per_node N -m sarm2_reward.train ...'),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument('--out', required=True, help='checkpoint directory to write')
    parser.add_argument('--model', choices=('sarm2', 'single_head'), default='sarm2',
                        help='sarm2 = MoE value head; single_head = the no-MoE ablation')
    parser.add_argument('--resume', action='store_true', help='continue training in --out')
    parser.add_argument('--val-fraction', type=float, default=0.1,
                        help='fraction of episodes held out for periodic evaluation')
    parser.add_argument('--model-config', help='JSON file with Sarm2Config fields to override')
    parser.add_argument('--cameras', nargs='*', help='cameras to use (default: all in the data)')
    parser.add_argument('--encoder', choices=('cnn', 'pretrained'), default='cnn')
    parser.add_argument('--encoder-path', default='', help='local SigLIP/CLIP directory')
    parser.add_argument('--text-model-path', default='',
                        help='local sentence-embedding model (default: hashed fallback)')
    for field, default in asdict(TrainConfig()).items():
        parser.add_argument('--' + field.replace('_', '-'), type=type(default), default=default,
                            help=OPTION_HELP[field])
    for field in ('rewind_prob', 'predicted_primitive_prob', 'success_window',
                  'failure_progress_cap'):
        parser.add_argument('--' + field.replace('_', '-'), type=float,
                            default=getattr(TargetConfig(), field), help=OPTION_HELP[field])
    flywheel = parser.add_argument_group(
        'learning from labelled rollouts (the data flywheel)',
        'Rollout bags with label sidecars (<bag>.label.json, e.g. from label_rollouts_from_sim) '
        'join the demonstrations; each gets value targets from its label. The checkpoint '
        'records every bag and label it learned from.')
    flywheel.add_argument('--init-checkpoint', type=Path,
                          help='start from this checkpoint (fine-tuning: its model config and '
                               'joint-state normalization are kept)')
    flywheel.add_argument('--rollouts', nargs='+', type=Path, default=[],
                          help='rollout bags or directories of them; unlabelled ones are '
                               'skipped')
    flywheel.add_argument('--rollout-share', type=float, default=0.5,
                          help='fraction of sampled frames drawn from labelled rollouts')
    flywheel.add_argument('--rollout-primitives', choices=('ignore', 'keep'), default='ignore',
                          help='ignore primitive labels recorded in rollout bags (gate by the '
                               'predicted primitive, as with human labels) or keep them')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def _model_config(args, episodes: list[Episode]) -> Sarm2Config:
    cameras = tuple(args.cameras) if args.cameras else tuple(episodes[0].cameras)
    first = episodes[0]
    overrides = {}
    if args.model_config:
        try:
            overrides = json.loads(Path(args.model_config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f'--model-config {args.model_config}: {exc}') from None
    text_dim = make_text_embedder(args.text_model_path).dim
    values = {'cameras': cameras, 'state_dim': first.joint_positions.shape[1],
              'image_size': first.images[cameras[0]].shape[1], 'encoder': args.encoder,
              'encoder_path': args.encoder_path, 'text_model_path': args.text_model_path,
              'text_dim': text_dim, 'value_head': 'moe' if args.model == 'sarm2' else 'single',
              **overrides}
    return Sarm2Config.from_dict(values)


def split_episodes(episodes: list[Episode], fraction: float, seed: int):
    """Hold out ``fraction`` of the episodes (at least one when there are two or more)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f'val fraction must be in [0, 1), got {fraction}')
    order = np.random.default_rng(seed).permutation(len(episodes))
    count = int(round(fraction * len(episodes)))
    if fraction > 0 and len(episodes) > 1:
        count = max(1, count)
    val = [episodes[i] for i in sorted(order[:count])]
    train = [episodes[i] for i in sorted(order[count:])]
    return train, val


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``train_reward_model``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        train_config = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
        targets = TargetConfig(**{f: getattr(args, f) for f in asdict(TargetConfig())})
        episodes = episodes_from_arguments(args)
        train_eps, val_eps = split_episodes(episodes, args.val_fraction, train_config.seed)
        out_dir = Path(args.out)
        flywheel = bool(args.rollouts or args.init_checkpoint)
        if flywheel and args.resume:
            raise ValueError('--resume continues a plain run; fine-tune into a new --out')
        mix = RolloutMix(args.rollout_share, args.rollout_primitives)
        rollouts = load_labelled_rollouts(args.rollouts, mix.primitives) if args.rollouts \
            else None
        if args.rollouts and not rollouts.episodes:
            raise ValueError(f'no labelled rollouts in {[str(r) for r in args.rollouts]}; '
                             'label them first (label_rollouts_from_sim)')
        if args.resume and (out_dir / 'config.json').is_file():
            model = load_checkpoint(out_dir)
        else:
            if (out_dir / 'config.json').is_file() and not args.resume:
                raise ValueError(f'{out_dir} already holds a checkpoint; pass --resume to '
                                 'continue it or choose another --out')
            model = load_checkpoint(args.init_checkpoint) if args.init_checkpoint \
                else Sarm2Model(_model_config(args, episodes))
    except (ValueError, CheckpointError, FileNotFoundError, RuntimeError) as exc:
        print(f'train_reward_model: error: {exc}', file=sys.stderr)
        return 2
    LOG.info('%d training and %d validation episodes, tasks: %s', len(train_eps), len(val_eps),
             ', '.join(sorted({e.task for e in episodes})))
    metadata = {'data': [str(d) for d in args.data],
                'tasks': sorted({e.task for e in episodes})}
    if flywheel:
        if args.init_checkpoint:
            metadata['init_checkpoint'] = {
                'path': str(args.init_checkpoint),
                'model_id': f'{model.model_type}-{state_fingerprint(model)}'}
        result = train_with_rollouts(
            model, train_eps, rollouts or LabelledRollouts([], []), out_dir, train_config, mix,
            targets, progress=not args.no_progress, metadata=metadata,
            fit_normalization=args.init_checkpoint is None, val_episodes=val_eps)
        LOG.info('learned from %d labelled rollouts (calibration: %s)', result['rollouts'],
                 result['calibration'])
    else:
        result = train_model(model, train_eps, train_config, targets, out_dir, val_eps,
                             resume=args.resume, progress=not args.no_progress,
                             metadata=metadata)
    rank = 0
    if distributed.is_initialized():
        rank = distributed.get_rank()
        distributed.destroy_process_group()
    if rank == 0:
        print(json.dumps({'out': str(out_dir), **result['final'],
                          **(result['history'][-1] if result['history'] else {})}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
