"""One entry point for training data on disk: rosbag2 bags or LeRobot datasets."""

import argparse
from pathlib import Path

from sarm2_common.episode import Episode
from .lerobot_dataset import is_lerobot_dataset, load_primitive_map, read_lerobot_dataset

FORMATS = ('auto', 'bags', 'lerobot')


def load_episodes(paths: list[str | Path] | str | Path, fmt: str = 'auto',
                  image_size: int | None = None,
                  primitive_map: dict[str, str] | None = None) -> list[Episode]:
    """Read every episode under ``paths``.

    ``fmt='auto'`` treats a path holding ``meta/info.json`` as a LeRobot dataset and anything
    else as bags (one bag directory or a directory of bags). ``image_size`` and
    ``primitive_map`` apply to LeRobot datasets (bags keep their recorded size; the model resizes).
    """
    if fmt not in FORMATS:
        raise ValueError(f'unknown data format {fmt!r}; choose one of {FORMATS}')
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    episodes: list[Episode] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f'data path {path} does not exist')
        if fmt == 'lerobot' or (fmt == 'auto' and is_lerobot_dataset(path)):
            episodes.extend(read_lerobot_dataset(path, image_size, primitive_map))
        else:
            from sarm2_common.bag_dataset import read_episodes
            episodes.extend(read_episodes(path))
    return episodes


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data options shared by the training and evaluation CLIs."""
    parser.add_argument('data', nargs='+', help='bag directories / LeRobot dataset directories')
    parser.add_argument('--format', choices=FORMATS, default='auto',
                        help='dataset format (auto: LeRobot if meta/info.json exists)')
    parser.add_argument('--tasks', nargs='*', help='only use episodes of these tasks')
    parser.add_argument('--image-size', type=int, default=64,
                        help='resize LeRobot frames to this square size when reading (0: keep)')
    parser.add_argument('--primitive-map',
                        help='JSON {subtask name: vocabulary primitive} for LeRobot annotations')


def episodes_from_arguments(args: argparse.Namespace) -> list[Episode]:
    """Load the episodes the data options name; ValueError when there are none."""
    mapping = load_primitive_map(args.primitive_map) if args.primitive_map else None
    episodes = load_episodes(args.data, args.format, args.image_size or None, mapping)
    if args.tasks:
        episodes = [e for e in episodes if e.task in set(args.tasks)]
    if not episodes:
        raise ValueError(f'no episodes found in {args.data}'
                         + (f' for tasks {args.tasks}' if args.tasks else ''))
    return episodes


def split_by_task(episodes: list[Episode], fraction: float, seed: int = 12345
                  ) -> tuple[list[Episode], list[Episode]]:
    """Per task and outcome, hold out ``fraction`` of the episodes: (train, test).

    Splitting successes and failures separately keeps failures on both sides, so success
    detection can be measured on the held-out part. The same seed gives the same split.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    train, test = [], []
    for task in sorted({e.task for e in episodes}):
        for outcome in (True, False):
            group = [e for e in episodes if e.task == task and e.success == outcome]
            order = rng.permutation(len(group))
            count = int(round(fraction * len(group)))
            test += [group[i] for i in order[:count]]
            train += [group[i] for i in order[count:]]
    return train, test
