"""Behaviour cloning of the compact VLA from demonstration episodes, and its training CLI.

Each training sample is one frame t of one episode: the images and joint state at t, the
episode's instruction, and the demonstrated actions t .. t+chunk_size-1 (masked past the end of
the episode). Images get a random shift (pad and crop, as in DrQ) so a few dozen demos do not
make the policy memorise pixels. Failed demonstrations are left out unless asked for: cloning
them teaches failure.

CLI: ``train_vla --data DEMO_DIR --out CHECKPOINT_DIR [--steps N]``.
"""

import argparse
from dataclasses import asdict, dataclass
import logging
from pathlib import Path
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from sarm2_common.episode import Episode
from spiral_policy.compact_vla import (ACTION_MASK, ACTIONS, CompactVla, CompactVlaConfig,
                                       IMAGES, save_checkpoint, STATE, TEXT)
from spiral_policy.preprocessing import (images_to_array, instruction_features,
                                         normalization_stats)

LOG = logging.getLogger(__name__)


@dataclass
class BcTrainingConfig:
    """Optimisation settings; saved in training.json beside the checkpoint."""

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    shift_pixels: int = 4
    include_failures: bool = False
    seed: int = 0
    threads: int = 0                # torch threads; 0 keeps torch's default

    def __post_init__(self):
        for name in ('steps', 'batch_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1')
        if not self.learning_rate > 0:
            raise ValueError('learning_rate must be > 0')
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.shift_pixels < 0:
            raise ValueError('weight_decay, warmup_steps and shift_pixels must be >= 0')
        if self.threads < 0:
            raise ValueError('threads must be >= 0')


class ChunkDataset:
    """Frames of episodes, preprocessed once, sampled as action-chunk training batches."""

    def __init__(self, episodes: list[Episode], config: CompactVlaConfig):
        if not episodes:
            raise ValueError('no episodes to train on')
        self.config = config
        images, states, texts, actions, index = [], [], [], [], []
        self._episode_start = []
        offset = 0
        for number, episode in enumerate(episodes):
            if episode.actions.ndim != 2 or episode.actions.shape[1] != config.action_dim:
                raise ValueError(f'episode {episode.episode_id}: actions have shape '
                                 f'{episode.actions.shape}, the model has action_dim '
                                 f'{config.action_dim}')
            if episode.joint_positions.shape[1] != config.state_dim:
                raise ValueError(f'episode {episode.episode_id}: joint state has '
                                 f'{episode.joint_positions.shape[1]} values, the model has '
                                 f'state_dim {config.state_dim}')
            frames = np.stack([images_to_array({c: episode.images[c][t] for c in config.cameras
                                                if c in episode.images},
                                               config.cameras, config.image_size)
                               for t in range(len(episode))])
            images.append(frames)
            states.append(episode.joint_positions.astype(np.float32))
            actions.append(episode.actions.astype(np.float32))
            texts.append(instruction_features(episode.instruction, config.text_buckets))
            index.extend((number, offset + t, offset + len(episode)) for t in range(len(episode)))
            offset += len(episode)
        self.images = np.concatenate(images)
        self.states = np.concatenate(states)
        self.actions = np.concatenate(actions)
        self.texts = np.stack(texts)
        # rows of (episode number, global frame, global end of that episode)
        self.index = np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def normalization(self) -> tuple[np.ndarray, ...]:
        """State mean/std and action mean/std over all frames."""
        return (*normalization_stats(self.states), *normalization_stats(self.actions))

    def batch(self, rows: np.ndarray, rng: np.random.Generator, shift: int) -> dict:
        """Build one training batch from sample rows (see ``compact_vla`` for the keys)."""
        episode, frame, end = self.index[rows].T
        offsets = np.arange(self.config.chunk_size)
        chunk_frames = frame[:, None] + offsets[None]
        mask = chunk_frames < end[:, None]
        # Past the end of an episode repeat its last action; the mask removes it from the loss.
        chunk_frames = np.minimum(chunk_frames, end[:, None] - 1)
        images = self.images[frame]
        if shift:
            images = random_shift(images, shift, rng)
        return {IMAGES: torch.from_numpy(images), STATE: torch.from_numpy(self.states[frame]),
                TEXT: torch.from_numpy(self.texts[episode]),
                ACTIONS: torch.from_numpy(self.actions[chunk_frames]),
                ACTION_MASK: torch.from_numpy(mask)}


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Shift every sample by up to ``pad`` pixels (edge padding, then crop) [B, C, H, W, 3]."""
    batch, _, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode='edge')
    out = np.empty_like(images)
    dy = rng.integers(0, 2 * pad + 1, batch)
    dx = rng.integers(0, 2 * pad + 1, batch)
    for i in range(batch):
        out[i] = padded[i, :, dy[i]:dy[i] + height, dx[i]:dx[i] + width]
    return out


def train(episodes: list[Episode], model_config: CompactVlaConfig,
          train_config: BcTrainingConfig, out_dir: str | Path | None = None,
          progress: bool = True) -> tuple[CompactVla, dict]:
    """Train a compact VLA by behaviour cloning; save it to ``out_dir`` if given.

    Returns the model (eval mode) and a summary dict (also written as training.json).
    """
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    used = [e for e in episodes if e.success or train_config.include_failures]
    if not used:
        raise ValueError(f'none of the {len(episodes)} episodes is a success; pass '
                         'include_failures to clone failed ones too')
    torch.manual_seed(train_config.seed)
    rng = np.random.default_rng(train_config.seed)
    dataset = ChunkDataset(used, model_config)
    model = CompactVla(model_config)
    model.set_normalization(*dataset.normalization())
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate,
                                  weight_decay=train_config.weight_decay)
    warmup = max(1, train_config.warmup_steps)
    total = train_config.steps

    def schedule(step):
        # linear warmup then cosine decay to 10% of the peak rate
        if step < warmup:
            return (step + 1) / warmup
        fraction = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * min(1.0, fraction)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    started = time.monotonic()
    losses = []
    bar = tqdm(range(total), desc='bc', disable=not progress, unit='step')
    for step in bar:
        rows = rng.integers(0, len(dataset), train_config.batch_size)
        loss, logs = model(dataset.batch(rows, rng, train_config.shift_pixels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(logs['l1'])
        if step % 20 == 0:
            bar.set_postfix(l1=f'{np.mean(losses[-20:]):.4f}')
    model.eval()
    elapsed = time.monotonic() - started
    summary = {
        'train': asdict(train_config),
        'episodes': len(used), 'frames': len(dataset),
        'tasks': sorted({e.task for e in used}),
        'episode_ids': [e.episode_id for e in used],
        'final_l1': float(np.mean(losses[-50:])),
        'seconds': elapsed,
        'samples_per_second': total * train_config.batch_size / max(elapsed, 1e-9),
    }
    if out_dir is not None:
        save_checkpoint(model, out_dir, training=summary)
    return model, summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='train_vla',
        description='Train the built-in compact VLA by behaviour cloning from demonstration '
                    'bags (one rosbag2 directory per episode, as written by the demo recorder '
                    'or the policy node). Writes config.json + model.safetensors + '
                    'training.json into --out.')
    parser.add_argument('--data', type=Path, action='append', required=True,
                        help='directory of episode bags (repeatable)')
    parser.add_argument('--out', type=Path, required=True, help='checkpoint directory to write')
    parser.add_argument('--tasks', nargs='*', default=None,
                        help='train only on these task names (default: all in the data)')
    parser.add_argument('--cameras', nargs='+', default=None,
                        help='cameras to use (default: all cameras of the first episode)')
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--chunk-size', type=int, default=CompactVlaConfig.chunk_size)
    parser.add_argument('--d-model', type=int, default=CompactVlaConfig.d_model)
    parser.add_argument('--layers', type=int, default=CompactVlaConfig.num_layers)
    parser.add_argument('--steps', type=int, default=BcTrainingConfig.steps)
    parser.add_argument('--batch-size', type=int, default=BcTrainingConfig.batch_size)
    parser.add_argument('--lr', type=float, default=BcTrainingConfig.learning_rate)
    parser.add_argument('--include-failures', action='store_true',
                        help='also clone failed demonstrations')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    return parser


def main(argv=None) -> int:
    """Console entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    missing = [str(path) for path in args.data if not path.exists()]
    if missing:
        print(f'error: --data {missing} does not exist', file=sys.stderr)
        return 2
    # imported here so --help and argument errors do not pay for the bag reader's imports
    from sarm2_common.bag_dataset import read_episodes

    episodes = read_episodes(list(args.data))
    if args.tasks:
        episodes = [e for e in episodes if e.task in set(args.tasks)]
    if not episodes:
        print('error: no readable episodes in --data (check the paths and --tasks)',
              file=sys.stderr)
        return 2
    try:
        cameras = tuple(args.cameras or episodes[0].cameras)
        model_config = CompactVlaConfig(
            cameras=cameras, image_size=args.image_size,
            state_dim=episodes[0].joint_positions.shape[1],
            action_dim=episodes[0].actions.shape[1], chunk_size=args.chunk_size,
            d_model=args.d_model, num_layers=args.layers)
        train_config = BcTrainingConfig(steps=args.steps, batch_size=args.batch_size,
                                        learning_rate=args.lr,
                                        include_failures=args.include_failures,
                                        seed=args.seed, threads=args.threads)
        _, summary = train(episodes, model_config, train_config, args.out)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'saved {args.out} ({summary["episodes"]} episodes, {summary["frames"]} frames, '
          f'final L1 {summary["final_l1"]:.4f}, {summary["seconds"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
