"""Write small LeRobot v2.1 datasets for reader tests.

The v3.0 layout is written by the real exporter (``sarm2_reward.lerobot_export``); v2.1, which
the reader still supports, has no writer of ours besides this one.
"""

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FPS = 10
SUBTASK_NAMES = {'reach': 'approach the square', 'pick_grab': 'grasp it',
                 'place': 'put it on the goal'}


def _encode(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('libx264', rate=FPS)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = 'yuv420p'
        stream.options = {'crf': '12'}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _annotation(episode, names) -> dict:
    from sarm2_reward.training_data import segments
    from sarm2_common.vocabulary import PRIMITIVES
    runs = segments(episode.primitive_ids)
    return {'sparse_subtask_names': [names[PRIMITIVES[p]] for p, _, _ in runs],
            'sparse_subtask_start_frames': [s for _, s, _ in runs],
            'sparse_subtask_end_frames': [e for _, _, e in runs]}


def _frame_rows(episode, index: int, first_row: int) -> dict:
    length = len(episode)
    return {'observation.state': [list(map(float, r)) for r in episode.joint_positions],
            'action': [list(map(float, r)) for r in episode.actions],
            'timestamp': [t / FPS for t in range(length)], 'frame_index': list(range(length)),
            'episode_index': [index] * length, 'index': list(range(first_row, first_row + length)),
            'task_index': [0] * length}


def _info(episodes, camera: str) -> dict:
    size = episodes[0].images[camera].shape[1]
    return {'codebase_version': 'v2.1', 'fps': FPS, 'chunks_size': 1000,
            'data_path': 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
            'video_path': 'videos/chunk-{episode_chunk:03d}/{video_key}/'
                          'episode_{episode_index:06d}.mp4',
            'features': {f'observation.images.{camera}': {'dtype': 'video',
                                                          'shape': [size, size, 3]},
                         'observation.state': {'dtype': 'float32', 'shape': [9]},
                         'action': {'dtype': 'float32', 'shape': [4]}}}


def write_lerobot(root: Path, episodes, names=None) -> Path:
    """Write ``episodes`` (one task, camera 'corner') as a LeRobot v2.1 dataset at ``root``."""
    names = names or SUBTASK_NAMES
    camera = 'corner'
    key = f'observation.images.{camera}'
    (root / 'meta').mkdir(parents=True)
    (root / 'meta' / 'info.json').write_text(json.dumps(_info(episodes, camera)))
    instruction = episodes[0].instruction
    (root / 'meta' / 'tasks.jsonl').write_text(
        json.dumps({'task_index': 0, 'task': instruction}) + '\n')
    lines = []
    first = 0
    for i, episode in enumerate(episodes):
        rows = _frame_rows(episode, i, first)
        first += len(episode)
        path = root / f'data/chunk-000/episode_{i:06d}.parquet'
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(rows), path)
        _encode(root / f'videos/chunk-000/{key}/episode_{i:06d}.mp4', episode.images[camera])
        lines.append(json.dumps({'episode_index': i, 'tasks': [instruction],
                                 'length': len(episode), 'success': episode.success,
                                 **_annotation(episode, names)}))
    (root / 'meta' / 'episodes.jsonl').write_text('\n'.join(lines) + '\n')
    return root
