"""The training/evaluation episode: what every dataset reader produces and every model consumes.

Shapes (T = frames in the episode, H x W image size, J = joint-state size, A = action size):

- ``images[camera]``: uint8 [T, H, W, 3], RGB
- ``joint_positions``: float32 [T, J], arm joints in rad then gripper opening in m
- ``actions``: float32 [T, A], the command issued after observing frame t
- ``primitive_ids``: int64 [T], vocabulary ids (see ``vocabulary``); -1 where unlabelled
- ``timestamps``: float64 [T], seconds since the first frame
"""

from dataclasses import dataclass, field

import numpy as np

UNLABELLED = -1


@dataclass
class Episode:
    """One demonstration or rollout, time-aligned across modalities."""

    episode_id: str
    task: str
    instruction: str
    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    actions: np.ndarray
    primitive_ids: np.ndarray
    timestamps: np.ndarray
    success: bool
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        length = len(self.timestamps)
        if length == 0:
            raise ValueError(f'episode {self.episode_id}: no frames')
        if not self.images:
            raise ValueError(f'episode {self.episode_id}: no camera images')
        for camera, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f'episode {self.episode_id}: camera {camera!r} images must be '
                                 f'uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}')
        for name in ('joint_positions', 'actions', 'primitive_ids'):
            value = getattr(self, name)
            if len(value) != length:
                raise ValueError(f'episode {self.episode_id}: {name} has {len(value)} rows, '
                                 f'expected {length} (one per frame)')
        for camera, frames in self.images.items():
            if len(frames) != length:
                raise ValueError(f'episode {self.episode_id}: camera {camera!r} has '
                                 f'{len(frames)} frames, expected {length}')

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def cameras(self) -> list[str]:
        """Camera names in a stable order."""
        return sorted(self.images)
