"""The built-in compact language-conditioned VLA, small enough to train on a CPU.

Architecture (ACT-like, encoder only):

- per camera, a 4-layer strided conv net turns a ``image_size`` RGB image into an
  ``(image_size/16)^2`` grid of tokens (4 x 4 at 64 px: few tokens keep CPU training fast),
  plus learned camera and position embeddings;
- the instruction becomes one token (hashed words/bigrams -> linear, see ``preprocessing``);
- the normalized joint state becomes one token;
- ``chunk_size`` learned action-query tokens;
- a transformer encoder over all of them; each query token is read out as one action.

Training (behaviour cloning, ``bc_training``) minimises L1 between predicted and demonstrated
normalized action chunks. Batch keys (shapes documented once):

- ``images``: uint8 [B, num_cameras, H, W, 3]
- ``state``: float32 [B, state_dim] (raw joint positions; normalized inside)
- ``text``: float32 [B, text_buckets] (``preprocessing.instruction_features``)
- ``actions``: float32 [B, chunk_size, action_dim] (raw actions)
- ``action_mask``: bool [B, chunk_size] (False past the end of the episode)

Checkpoint directory: ``config.json`` + ``model.safetensors`` (weights and normalization stats)
+ optional ``training.json``; never pickle.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import save_file
from sarm2_common.tensor_files import load_tensors
import torch
from torch import nn
from torch.nn import functional

from spiral_policy.preprocessing import images_to_array, instruction_features
from spiral_policy.vla import PolicyObservation

IMAGES = 'images'
STATE = 'state'
TEXT = 'text'
ACTIONS = 'actions'
ACTION_MASK = 'action_mask'

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
TRAINING_FILE = 'training.json'
MODEL_TYPE = 'spiral_compact_vla'


@dataclass
class CompactVlaConfig:
    """Shape and size of the compact VLA; saved as config.json beside the weights."""

    cameras: tuple[str, ...] = ('corner',)
    image_size: int = 64
    state_dim: int = 9
    action_dim: int = 4
    chunk_size: int = 8
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    conv_channels: tuple[int, int] = (16, 32)
    text_buckets: int = 256
    dropout: float = 0.0

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        self.conv_channels = tuple(self.conv_channels)
        if not self.cameras:
            raise ValueError('cameras: at least one camera is needed')
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f'image_size must be a multiple of 16 (>= 16), '
                             f'got {self.image_size}')
        for name in ('state_dim', 'action_dim', 'chunk_size', 'num_layers', 'text_buckets'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.d_model < 1 or self.d_model % self.num_heads:
            raise ValueError(f'd_model ({self.d_model}) must be a positive multiple of '
                             f'num_heads ({self.num_heads})')
        if len(self.conv_channels) != 2 or min(self.conv_channels) < 1:
            raise ValueError('conv_channels: two positive channel counts')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError('dropout must be in [0, 1)')

    @property
    def tokens_per_camera(self) -> int:
        return (self.image_size // 16) ** 2

    def to_json(self) -> dict:
        return {'type': MODEL_TYPE, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> 'CompactVlaConfig':
        data = dict(data)
        kind = data.pop('type', MODEL_TYPE)
        if kind != MODEL_TYPE:
            raise ValueError(f'config type {kind!r} is not a compact VLA ({MODEL_TYPE!r})')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f'unknown compact VLA config keys {unknown}')
        return cls(**data)


class CompactVla(nn.Module):
    """Images + instruction + joint state -> normalized action chunk."""

    def __init__(self, config: CompactVlaConfig):
        super().__init__()
        self.config = config
        c1, c2 = config.conv_channels
        d = config.d_model
        self.image_encoder = nn.Sequential(
            nn.Conv2d(3, c1, 5, stride=2, padding=2), nn.GroupNorm(8, c1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GroupNorm(8, c2), nn.GELU(),
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), nn.GroupNorm(8, c2), nn.GELU(),
            nn.Conv2d(c2, d, 3, stride=2, padding=1))
        num_cameras = len(config.cameras)
        self.camera_embedding = nn.Parameter(torch.zeros(num_cameras, 1, d))
        self.image_position = nn.Parameter(torch.randn(1, config.tokens_per_camera, d) * 0.02)
        self.text_projection = nn.Linear(config.text_buckets, d)
        self.state_projection = nn.Linear(config.state_dim, d)
        self.action_queries = nn.Parameter(torch.randn(config.chunk_size, d) * 0.02)
        self.type_embedding = nn.Parameter(torch.zeros(3, d))  # text, state, query
        layer = nn.TransformerEncoderLayer(d, config.num_heads, dim_feedforward=4 * d,
                                           dropout=config.dropout, batch_first=True,
                                           norm_first=True, activation='gelu')
        self.encoder = nn.TransformerEncoder(layer, config.num_layers,
                                             enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, config.action_dim)
        self.register_buffer('state_mean', torch.zeros(config.state_dim))
        self.register_buffer('state_std', torch.ones(config.state_dim))
        self.register_buffer('action_mean', torch.zeros(config.action_dim))
        self.register_buffer('action_std', torch.ones(config.action_dim))

    def set_normalization(self, state_mean, state_std, action_mean, action_std) -> None:
        """Install normalization statistics computed from the training data."""
        for name, value in (('state_mean', state_mean), ('state_std', state_std),
                            ('action_mean', action_mean), ('action_std', action_std)):
            getattr(self, name).copy_(torch.as_tensor(np.asarray(value), dtype=torch.float32))

    def _encode(self, images: torch.Tensor, state: torch.Tensor,
                text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the normalized action chunk [B, H, A] and observation features [B, 2 d]."""
        batch, cameras = images.shape[:2]
        pixels = images.reshape(batch * cameras, *images.shape[2:]).permute(0, 3, 1, 2)
        pixels = pixels.float() / 127.5 - 1.0
        grid = self.image_encoder(pixels)                                 # [B*C, d, h, w]
        tokens = grid.flatten(2).transpose(1, 2) + self.image_position    # [B*C, h*w, d]
        tokens = tokens.reshape(batch, cameras, -1, tokens.shape[-1])
        tokens = (tokens + self.camera_embedding).reshape(batch, -1, tokens.shape[-1])
        state = (state - self.state_mean) / self.state_std
        text_token = self.text_projection(text) + self.type_embedding[0]
        state_token = self.state_projection(state) + self.type_embedding[1]
        queries = (self.action_queries + self.type_embedding[2]).expand(batch, -1, -1)
        sequence = torch.cat([text_token[:, None], state_token[:, None], tokens, queries], 1)
        out = self.norm(self.encoder(sequence))
        chunk = self.config.chunk_size
        # What the policy perceived (its image tokens after attention) and what it intends (its
        # action-query tokens), each averaged: a SPIRAL residual's view of the observation.
        features = torch.cat([out[:, 2:-chunk].mean(dim=1), out[:, -chunk:].mean(dim=1)], -1)
        return self.action_head(out[:, -chunk:]), features

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Behaviour-cloning loss (masked L1 on normalized actions) and logs."""
        predicted, _ = self._encode(batch[IMAGES], batch[STATE], batch[TEXT])
        target = (batch[ACTIONS] - self.action_mean) / self.action_std
        mask = batch[ACTION_MASK].float()[..., None]
        error = functional.l1_loss(predicted, target, reduction='none') * mask
        loss = error.sum() / (mask.sum() * self.config.action_dim).clamp(min=1.0)
        return loss, {'l1': float(loss.detach())}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, state: torch.Tensor,
                text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return raw action chunks and observation features.

        Chunks: unnormalized, float32 [B, chunk_size, action_dim]; features: float32
        [B, 2 d_model] (see ``_encode``).
        """
        chunk, features = self._encode(images, state, text)
        return chunk * self.action_std + self.action_mean, features

    @property
    def feature_dim(self) -> int:
        """Size of the observation features ``predict`` returns."""
        return 2 * self.config.d_model


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (checkpoint identity in metadata and policy ids)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: CompactVla, directory: str | Path,
                    training: dict | None = None) -> Path:
    """Write config.json + model.safetensors (+ training.json) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in
             model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_json(), indent=2))
    if training is not None:
        (directory / TRAINING_FILE).write_text(json.dumps(training, indent=2))
    return directory


def load_model(directory: str | Path) -> CompactVla:
    """Load a compact VLA checkpoint; errors name the file and what does not match."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f'{path}: missing; a compact VLA checkpoint directory holds '
                                    f'{CONFIG_FILE} and {WEIGHTS_FILE}')
    try:
        config = CompactVlaConfig.from_json(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f'{config_path}: {error}') from None
    model = CompactVla(config)
    state = load_tensors(weights_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(name for name in set(state) & set(expected)
                   if state[name].shape != expected[name].shape)
    if missing or unexpected or wrong:
        raise ValueError(f'{weights_path} does not match {config_path}: missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]}, wrong shape {wrong[:5]}')
    model.load_state_dict(state)
    return model.eval()


class CompactVlaPolicy:
    """``VlaPolicy`` around a ``CompactVla`` (preprocessing included)."""

    def __init__(self, model: CompactVla, policy_id: str = 'compact_vla'):
        self.model = model.eval()
        self.config = model.config
        self.policy_id = policy_id
        self.action_dim = model.config.action_dim
        self.chunk_size = model.config.chunk_size
        self._text_cache: dict[str, torch.Tensor] = {}
        self.weights_sha256 = ''        # set when loaded from a checkpoint (rollout metadata)
        # Observation features of the latest select_action call (a SPIRAL residual's input).
        self.feature_dim = model.feature_dim
        self.last_features: np.ndarray | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> 'CompactVlaPolicy':
        """Load from a checkpoint directory; the policy id carries the weights' hash."""
        model = load_model(path)
        digest = file_sha256(Path(path) / WEIGHTS_FILE)
        policy = cls(model, policy_id=f'compact_vla@{digest[:12]}')
        policy.weights_sha256 = digest
        return policy

    def reset(self) -> None:
        """Do nothing: the compact VLA is memoryless between steps and episodes."""

    def select_action(self, obs: PolicyObservation) -> np.ndarray:
        """Return the action chunk for ``obs``, float32 [chunk_size, action_dim]."""
        config = self.config
        if obs.joint_positions.shape != (config.state_dim,):
            raise ValueError(f'joint state has {obs.joint_positions.shape[0]} values, the '
                             f'policy expects {config.state_dim}')
        images = images_to_array(obs.images, config.cameras, config.image_size)
        text = self._text_cache.get(obs.instruction)
        if text is None:
            text = torch.from_numpy(instruction_features(obs.instruction, config.text_buckets))
            self._text_cache[obs.instruction] = text
        chunk, features = self.model.predict(torch.from_numpy(images)[None],
                                             torch.from_numpy(obs.joint_positions)[None],
                                             text[None])
        self.last_features = features[0].numpy().astype(np.float32)
        return chunk[0].numpy().astype(np.float32)
