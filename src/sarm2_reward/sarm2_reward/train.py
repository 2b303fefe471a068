"""Train a reward model (SARM2 or a baseline): library function + ``train_reward_model`` CLI.

Scales with plain PyTorch DistributedDataParallel: run the same command under ``torchrun``
(``torchrun --nproc_per_node 4 -m sarm2_reward.train ...``, or several nodes with
``--nnodes/--rdzv-endpoint``). Each process draws its own random batches; gradients are averaged
by DDP; rank 0 evaluates, logs and saves. The backend is NCCL on GPUs and gloo on CPUs.

The output directory is the checkpoint (see ``checkpoint``) plus ``optimizer.safetensors``,
``training_state.json`` (step, sampler RNG, options) and ``train_log.jsonl``; ``--resume``
continues from it.
"""

import argparse
from dataclasses import asdict, dataclass
import json
import logging
import math
import os
from pathlib import Path
import sys
import time

import numpy as np
import torch
from torch import distributed
from tqdm import tqdm

from .checkpoint import (CheckpointError, load_checkpoint, load_optimizer_state, save_checkpoint,
                         state_fingerprint)
from .datasets import add_data_arguments, episodes_from_arguments
from sarm2_common.episode import Episode
from .evaluation import predict_any
from .metrics import summarize
from .model import Sarm2Config, Sarm2Model
from .text_embedding import make_text_embedder
from .training_data import EpisodeSampler, estimate_stage_priors, TargetConfig

LOG = logging.getLogger('sarm2_reward.train')
TRAIN_LOG_FILE = 'train_log.jsonl'


@dataclass
class TrainConfig:
    """Optimization settings (the model's sizes live in its own config)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    eval_every: int = 500
    save_every: int = 500
    seed: int = 0
    num_threads: int = 0
    device: str = 'auto'
    stage_pretrain_steps: int = 0

    def __post_init__(self):
        for name in ('steps', 'batch_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.stage_pretrain_steps >= self.steps:
            raise ValueError(f'stage_pretrain_steps ({self.stage_pretrain_steps}) must be fewer '
                             f'than steps ({self.steps})')
        for name in ('warmup_steps', 'eval_every', 'save_every', 'num_threads',
                     'stage_pretrain_steps'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.lr <= 0:
            raise ValueError(f'lr must be > 0, got {self.lr}')
        if self.device not in ('auto', 'cpu', 'cuda'):
            raise ValueError(f'device must be auto, cpu or cuda, got {self.device!r}')


def _distributed_setup(device_choice: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    use_cuda = torch.cuda.is_available() and device_choice != 'cpu'
    if device_choice == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('device=cuda but no CUDA device is available')
    if world > 1 and not distributed.is_initialized():
        distributed.init_process_group(backend='nccl' if use_cuda else 'gloo')
    rank = distributed.get_rank() if distributed.is_initialized() else 0
    if use_cuda:
        local = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local)
        return rank, world, torch.device('cuda', local)
    return rank, world, torch.device('cpu')


def state_statistics(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of joint states over every frame of ``episodes``."""
    states = np.concatenate([e.joint_positions for e in episodes]).astype(np.float64)
    return states.mean(axis=0), states.std(axis=0)


def window_sizes(config: Sarm2Config) -> dict:
    """Return the window settings an ``EpisodeSampler`` needs from a model config."""
    return {k: getattr(config, k) for k in ('stage_past_frames', 'stage_gap',
                                             'value_past_frames', 'value_gap')}


def _learning_rate_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps)
                                                         / span)))


def quick_validation(model, episodes: list[Episode]) -> dict:
    """Compute the validation metrics logged during training."""
    if not episodes:
        return {}
    was_training = model.training
    predictions = [predict_any(model, e) for e in episodes]
    model.train(was_training)
    metrics = summarize(episodes, predictions)
    return {f'val_{k}': v for k, v in metrics.items()
            if k in ('value_mse_macro', 'voc', 'primitive_acc', 'auroc') and v is not None}


def train_model(model: torch.nn.Module, episodes: list[Episode], config: TrainConfig,
                targets: TargetConfig | None = None, out_dir: str | Path | None = None,
                val_episodes: list[Episode] | None = None, resume: bool = False,
                progress: bool = True, metadata: dict | None = None,
                fit_normalization: bool = True,
                episode_weights: np.ndarray | None = None) -> dict:
    """Train ``model`` in place on ``episodes``; return the final logs and history.

    Works single-process or under torchrun (WORLD_SIZE > 1). With ``out_dir`` the checkpoint is
    written there every ``save_every`` steps and at the end (rank 0 only). A model fine-tuned
    from a checkpoint passes ``fit_normalization=False`` to keep the joint-state statistics its
    weights were trained with; ``episode_weights`` scale each episode's sampling probability.
    The first ``config.stage_pretrain_steps`` steps train a SARM2 stage estimator alone.
    """
    targets = targets or TargetConfig()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    rank, world, device = _distributed_setup(config.device)
    torch.manual_seed(config.seed)
    out_dir = Path(out_dir) if out_dir else None
    window_config = model.window_config
    if fit_normalization:
        model.set_state_normalization(*state_statistics(episodes))
    text = make_text_embedder(window_config.text_model_path)
    instructions = sorted({e.instruction for e in episodes})
    instruction_embeddings = dict(zip(instructions, text.embed(instructions)))
    sampler = EpisodeSampler(episodes, window_config.cameras, window_sizes(window_config),
                             instruction_embeddings, estimate_stage_priors(episodes), targets,
                             seed=config.seed * 1000 + rank, episode_weights=episode_weights)
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    start_step = 0
    if resume and out_dir and (out_dir / 'training_state.json').is_file():
        saved = load_checkpoint(out_dir, str(device))
        model.load_state_dict(saved.state_dict(), strict=False)
        state = load_optimizer_state(out_dir, optimizer)
        start_step = int(state['step'])
        rng_state = state.get('sampler_rng', {}).get(str(rank))
        if rng_state:
            sampler.rng.bit_generator.state = rng_state
        LOG.info('resuming from %s at step %d', out_dir, start_step)
    # Stage pre-training leaves the value decoder without gradients for a while.
    trained = torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=config.stage_pretrain_steps > 0) if world > 1 else model
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step + start_step, config))
    history: list[dict] = []
    logs: dict = {}
    bar = tqdm(range(start_step, config.steps), desc='train', disable=not progress or rank != 0,
               initial=start_step, total=config.steps, dynamic_ncols=True)
    started = time.perf_counter()
    model.train()
    for step in bar:
        batch = {k: v.to(device) for k, v in sampler.sample(config.batch_size).items()}
        if step < config.stage_pretrain_steps:
            loss, step_logs = trained(batch, stage_only=True)
        else:
            loss, step_logs = trained(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        scheduler.step()
        logs = {k: float(v) for k, v in step_logs.items()}
        bar.set_postfix({k: f'{v:.4f}' for k, v in logs.items() if k in ('loss', 'mse')})
        done = step + 1
        if rank == 0 and config.eval_every and (done % config.eval_every == 0
                                                or done == config.steps):
            entry = {'step': done, 'seconds': round(time.perf_counter() - started, 2), **logs,
                     **quick_validation(model, val_episodes or [])}
            history.append(entry)
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                with open(out_dir / TRAIN_LOG_FILE, 'a') as log_file:
                    log_file.write(json.dumps(entry) + '\n')
        if out_dir and rank == 0 and (done == config.steps
                                      or (config.save_every and done % config.save_every == 0)):
            _save(model, optimizer, out_dir, done, config, targets, sampler, world, metadata)
    if world > 1:
        distributed.barrier()
    model.eval()
    return {'final': logs, 'history': history, 'world_size': world}


def _save(model, optimizer, out_dir: Path, step: int, config: TrainConfig,
          targets: TargetConfig, sampler: EpisodeSampler, world: int, metadata: dict | None):
    # Only rank 0's sampler RNG is kept: on resume other ranks draw fresh streams, which is
    # harmless (batches are random anyway) and keeps the file independent of the world size.
    training_state = {'step': step, 'train_config': asdict(config), 'targets': asdict(targets),
                      'world_size': world, 'sampler_rng': {'0': sampler.rng.bit_generator.state}}
    save_checkpoint(model, out_dir, metadata={**(metadata or {}), 'step': step,
                                              'targets': asdict(targets)},
                    optimizer=optimizer, training_state=training_state)


# ---- command line ------------------------------------------------------------------------------

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
    from .flywheel import (LabelledRollouts, load_labelled_rollouts, RolloutMix,
                           train_with_rollouts)
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
