"""Observation encoder and the residual actor.

Batch keys (B = batch, C = cameras, S = feature image size, J = joints, H = chunk, A = action):

- ``images``: uint8 [B, C, S, S, 3] (already pooled to ``feature_image_size``)
- ``features``: float32 [B, F], the base policy's observation features (``observation`` =
  'base_features'; F = ``base_feature_dim``, 0 otherwise)
- ``joints``: float32 [B, J]
- ``base``: float32 [B, H, A], the frozen base policy's chunk for this observation

The base chunk is part of the state: the base is a deterministic function of the observation,
and its chunk carries what the base policy perceived, which a small residual network cannot
re-learn from a few hundred rollouts.
"""

import cv2
import numpy as np
import torch
from torch import nn

from spiral_policy.spiral.config import SpiralConfig

IMAGES = 'images'
FEATURES = 'features'
JOINTS = 'joints'
BASE = 'base'


def pool_images(images: dict[str, np.ndarray], cameras: tuple[str, ...], size: int) -> np.ndarray:
    """Stack ``cameras`` from ``images`` (HxWx3 or TxHxWx3 uint8) as uint8 [(T,) C, size, size, 3].

    Raises KeyError naming the missing camera and the available ones.
    """
    stacked = []
    for camera in cameras:
        if camera not in images:
            raise KeyError(f'camera {camera!r} missing from observation; have {sorted(images)}')
        frames = np.asarray(images[camera])
        single = frames.ndim == 3
        frames = frames[None] if single else frames
        if frames.shape[1:3] != (size, size):
            # INTER_AREA averages pixels, so small objects survive the downscale.
            frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
                               for f in frames])
        stacked.append(frames[0] if single else frames)
    return np.stack(stacked, axis=-4).astype(np.uint8)


class ObservationEncoder(nn.Module):
    """Images (small CNN) or the base's features, concatenated with joints and the base chunk."""

    def __init__(self, config: SpiralConfig):
        super().__init__()
        self.uses_base_features = config.observation == 'base_features'
        if self.uses_base_features:
            self.image_proj = nn.Sequential(nn.Linear(config.base_feature_dim, 128),
                                            nn.LayerNorm(128), nn.Tanh())
            self.output_dim = 128 + config.joint_dim + config.chunk_flat_dim
            return
        channels = 3 * len(config.cameras)
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            cnn_dim = self.cnn(torch.zeros(1, channels, config.feature_image_size,
                                           config.feature_image_size)).shape[-1]
        self.image_proj = nn.Sequential(nn.Linear(cnn_dim, 128), nn.LayerNorm(128), nn.Tanh())
        self.output_dim = 128 + config.joint_dim + config.chunk_flat_dim

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        b = batch[JOINTS].shape[0]
        if self.uses_base_features:
            image_features = self.image_proj(batch[FEATURES].float())
        else:
            images = batch[IMAGES]
            _, c, s, _, _ = images.shape
            pixels = images.permute(0, 1, 4, 2, 3).reshape(b, c * 3, s, s).float() / 255.0
            image_features = self.image_proj(self.cnn(pixels))
        return torch.cat([image_features, batch[JOINTS].float(),
                          batch[BASE].reshape(b, -1).float()], dim=-1)


class ResidualActor(nn.Module):
    """Deterministic residual: ``residual_scale * tanh(MLP(encoder(obs)))``, zero at init.

    The last layer starts at exactly zero, so an untrained residual leaves the base policy's
    actions bit-for-bit unchanged (round 0 of SPIRAL is the base policy).
    """

    def __init__(self, config: SpiralConfig):
        super().__init__()
        self.config = config
        self.encoder = ObservationEncoder(config)
        self.mlp = nn.Sequential(
            nn.Linear(self.encoder.output_dim, config.hidden_dim), nn.ReLU(),
            nn.Linear(config.hidden_dim, config.hidden_dim), nn.ReLU())
        self.head = nn.Linear(config.hidden_dim, config.chunk_flat_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the residual chunk, float32 [B, H, A]."""
        hidden = self.mlp(self.encoder(batch))
        residual = self.config.residual_scale * torch.tanh(self.head(hidden))
        return residual.reshape(-1, self.config.chunk_size, self.config.action_dim)

    def act(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return base + residual, clipped to the action bounds, float32 [B, H, A]."""
        return compose(batch[BASE].float(), self(batch), self.config)


def compose(base: torch.Tensor, residual: torch.Tensor, config: SpiralConfig) -> torch.Tensor:
    """Add a residual to the base chunk and clip to the arm's action bounds."""
    return torch.clamp(base + residual, config.action_low, config.action_high)
