"""Per-frame image encoders behind one interface.

Every encoder maps float images ``[N, 3, H, W]`` in 0..1 to embeddings ``[N, out_dim]`` and does
not look at any other frame, which is what lets inference cache one embedding per frame and a
sliding window never re-encode a frame.

- ``SmallCnnEncoder`` (``encoder='cnn'``, the CPU default): four strided convolutions trained from
  scratch with the rest of the model; small enough for > 60 Hz single-camera inference on a CPU.
- ``PretrainedVisionEncoder`` (``encoder='pretrained'``): a frozen SigLIP or CLIP vision tower
  loaded with ``transformers`` from a local directory (nothing is downloaded). Its weights are not
  stored in checkpoints; the checkpoint records the directory instead.
"""

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional


class FrameEncoder(nn.Module):
    """Interface: ``out_dim``, ``trainable``, ``forward(images [N,3,H,W] 0..1) -> [N, E]``."""

    out_dim: int
    trainable: bool


class SmallCnnEncoder(FrameEncoder):
    """Patchify stem + strided 3x3 convs + global average pooling + linear projection.

    The stem (kernel = stride = ``stem``) cuts the resolution first: at 64x64 input it makes the
    encoder ~4x cheaper than a 3x3 stride-2 first layer, which dominates training time on a CPU.
    """

    trainable = True

    def __init__(self, channels: tuple[int, ...], stem: int, out_dim: int):
        super().__init__()
        layers = []
        in_channels = 3
        for i, width in enumerate(channels):
            conv = nn.Conv2d(in_channels, width, stem, stride=stem) if i == 0 else \
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
            layers += [conv, nn.GroupNorm(min(8, width), width), nn.GELU()]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images - 0.5)
        return self.project(features.mean(dim=(2, 3)))


class PretrainedVisionEncoder(FrameEncoder):
    """A frozen SigLIP/CLIP vision model from a local ``transformers`` directory."""

    trainable = False

    def __init__(self, model_dir: str | Path):
        super().__init__()
        model_dir = Path(model_dir)
        config_file = model_dir / 'config.json'
        if not config_file.is_file():
            raise FileNotFoundError(f'pretrained encoder directory {model_dir} has no '
                                    'config.json; it must hold a saved SigLIP or CLIP model')
        try:
            from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel
        except ImportError as exc:
            raise RuntimeError(f'encoder {model_dir} needs the transformers package ({exc})') \
                from exc
        model_type = AutoConfig.from_pretrained(model_dir, local_files_only=True).model_type
        loaders = {'clip': CLIPVisionModel, 'clip_vision_model': CLIPVisionModel,
                   'siglip': SiglipVisionModel, 'siglip_vision_model': SiglipVisionModel}
        if model_type not in loaders:
            raise ValueError(f'{config_file}: model_type {model_type!r} is not a SigLIP or CLIP '
                             f'model (supported: {", ".join(sorted(loaders))})')
        self.model = loaders[model_type].from_pretrained(model_dir, local_files_only=True).eval()
        self.model.requires_grad_(False)
        vision_config = self.model.config
        self.input_size = int(vision_config.image_size)
        self.out_dim = int(vision_config.hidden_size)
        mean, std = _normalization(model_dir, model_type)
        self.register_buffer('pixel_mean', torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('pixel_std', torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        """Keep the frozen tower in eval mode whatever the parent does."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = functional.interpolate(images, size=(self.input_size, self.input_size),
                                   mode='bilinear', align_corners=False)
        pixels = (images - self.pixel_mean) / self.pixel_std
        return self.model(pixel_values=pixels).pooler_output


def _normalization(model_dir: Path, model_type: str) -> tuple[list[float], list[float]]:
    processor_file = model_dir / 'preprocessor_config.json'
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        if 'image_mean' in processor and 'image_std' in processor:
            return list(processor['image_mean']), list(processor['image_std'])
    # The published defaults of each family, used when the directory has no processor config.
    if model_type.startswith('siglip'):
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    return [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def build_encoder(kind: str, channels: tuple[int, ...], stem: int, out_dim: int,
                  model_dir: str) -> FrameEncoder:
    """Build the encoder named by a model config."""
    if kind == 'cnn':
        return SmallCnnEncoder(channels, stem, out_dim)
    if kind == 'pretrained':
        return PretrainedVisionEncoder(model_dir)
    raise ValueError(f'unknown encoder {kind!r}; choose cnn or pretrained')
