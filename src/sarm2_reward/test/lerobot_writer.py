"""Write small LeRobot-format datasets (v2.1 and v3.0 layouts) for reader tests."""

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


def _info(version: str, episodes, camera: str) -> dict:
    size = episodes[0].images[camera].shape[1]
    if version == 'v2.1':
        paths = {'data_path': 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
                 'video_path': 'videos/chunk-{episode_chunk:03d}/{video_key}/'
                               'episode_{episode_index:06d}.mp4'}
    else:
        paths = {'data_path': 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
                 'video_path': 'videos/{video_key}/chunk-{chunk_index:03d}/'
                               'file-{file_index:03d}.mp4'}
    return {'codebase_version': version, 'fps': FPS, 'chunks_size': 1000, **paths,
            'features': {f'observation.images.{camera}': {'dtype': 'video',
                                                          'shape': [size, size, 3]},
                         'observation.state': {'dtype': 'float32', 'shape': [9]},
                         'action': {'dtype': 'float32', 'shape': [4]}}}


def write_lerobot(root: Path, episodes, version: str = 'v2.1', names=None) -> Path:
    """Write ``episodes`` (one task, camera 'corner') as a LeRobot dataset at ``root``."""
    names = names or SUBTASK_NAMES
    camera = 'corner'
    key = f'observation.images.{camera}'
    (root / 'meta').mkdir(parents=True)
    (root / 'meta' / 'info.json').write_text(json.dumps(_info(version, episodes, camera)))
    instruction = episodes[0].instruction
    if version == 'v2.1':
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
    pq.write_table(pa.table({'task_index': [0], 'task': [instruction]}),
                   root / 'meta' / 'tasks.parquet')
    columns: dict[str, list] = {}
    meta_rows = []
    first = 0
    for i, episode in enumerate(episodes):
        for name, values in _frame_rows(episode, i, first).items():
            columns.setdefault(name, []).extend(values)
        meta_rows.append({'episode_index': i, 'tasks': [instruction], 'length': len(episode),
                          'data/chunk_index': 0, 'data/file_index': 0,
                          'dataset_from_index': first, 'dataset_to_index': first + len(episode),
                          f'videos/{key}/chunk_index': 0, f'videos/{key}/file_index': 0,
                          f'videos/{key}/from_timestamp': first / FPS,
                          f'videos/{key}/to_timestamp': (first + len(episode)) / FPS,
                          'success': episode.success, **_annotation(episode, names)})
        first += len(episode)
    (root / 'data' / 'chunk-000').mkdir(parents=True)
    pq.write_table(pa.table(columns), root / 'data/chunk-000/file-000.parquet')
    (root / 'meta' / 'episodes' / 'chunk-000').mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(meta_rows),
                   root / 'meta/episodes/chunk-000/file-000.parquet')
    _encode(root / f'videos/{key}/chunk-000/file-000.mp4',
            np.concatenate([e.images[camera] for e in episodes]))
    return root
