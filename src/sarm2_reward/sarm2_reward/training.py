"""Train a reward model (SARM2 or a baseline): ``train_model`` and its ``TrainConfig``.

Scales with plain PyTorch DistributedDataParallel: under ``torchrun`` each process draws its own
random batches; gradients are averaged by DDP; rank 0 evaluates, logs and saves. The backend is
NCCL on GPUs and gloo on CPUs. The command line around it is ``train`` (``train_reward_model``).

The output directory is the checkpoint (see ``checkpoint``) plus ``optimizer.safetensors``,
``training_state.json`` (step, sampler RNG, options) and ``train_log.jsonl``; ``resume=True``
continues from it.
"""


from dataclasses import asdict, dataclass
import json
import logging
import math
import os
from pathlib import Path
import time

import numpy as np
import torch
from torch import distributed
from tqdm import tqdm

from .checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from sarm2_common.episode import Episode
from .evaluation import predict_any
from .metrics import summarize
from .model import Sarm2Config
from .text_embedding import make_text_embedder
from .training_data import EpisodeSampler, estimate_stage_priors, TargetConfig

LOG = logging.getLogger('sarm2_reward.training')
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
