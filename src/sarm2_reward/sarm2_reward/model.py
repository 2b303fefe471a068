"""The SARM2 reward model: action-primitive stage estimator + multi-gate MoE value decoder.

Shapes used throughout (B = batch, W = window length, C = cameras, E = frame-embedding size,
S = joint-state size, D = text-embedding size, P = NUM_PRIMITIVES, G = NUM_GROUPS):

- stage estimator input: frame embeddings [B, Ws, C, E] + normalized state [B, Ws, S], window =
  current frame and ``stage_past_frames`` past frames at ``stage_gap`` (oldest first); no language.
  Output: primitive logits [B, P] and group logits [B, G].
- value decoder input: frame embeddings [B, Wv, C, E] + state [B, Wv, S], window = episode-start
  frame + ``value_past_frames`` past frames at ``value_gap`` + current (``windows.value_window``),
  plus two prefix tokens: the instruction embedding and the text embedding of the (predicted)
  primitive, both [B, D]. Output: progress logit [B] (progress = sigmoid, value = progress - 1),
  success logit [B] and the MoE routing; in training with ``value_loss_positions='all'`` also a
  progress logit for every window slot [B, Wv] (slot k predicts the progress of its own frame).

Both are causal transformers: a token sees the prefix tokens and every token of its own or an
earlier time slot, never a later one. Windows only ever hold the current and earlier frames, so
no information flows from the future either way.

MoE head: the predicted primitive's group picks one of 8 gates; the gate's softmax over the shared
experts is cut to its top-k (renormalized) and only those experts' outputs are mixed.

Anchor fidelity switches (DESIGN.md; every default keeps the original, smaller model, so older
checkpoints load unchanged):

- ``head_input='concat'``: the heads read the concatenation of all token states of the time
  step (instruction, primitive, every camera, state) instead of the mean of the slot's tokens;
- ``gate_hidden > 0``: each gate is an MLP with that many hidden units (anchor 256), not linear;
- ``expert_layers`` / ``expert_hidden``: depth and width of each expert MLP (anchor 3 x 256);
- ``value_loss_positions='all'``: the value loss covers every window slot, not only the
  current frame; all slots are routed by the window's primitive (we predict one per window);
- ``aux_loss='anchor'``: 2.5 Var(load) + 0.1 Var(importance) - 0.5 mean per-token gate
  entropy instead of the Switch-style balance + mean-routing entropy;
- ``stage_loss_weight`` (anchor 0.25) with ``TrainConfig.stage_pretrain_steps`` (stage
  estimator trained alone first, group head weight 0).
"""

from dataclasses import asdict, dataclass, fields
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from sarm2_common.episode import Episode
from .encoders import build_encoder
from .text_embedding import make_text_embedder, primitive_text
from sarm2_common.vocabulary import NUM_GROUPS, NUM_PRIMITIVES, PRIMITIVE_TO_GROUP, PRIMITIVES

# Training batch keys (see Sarm2Model.forward). A batch holds each distinct frame once (samples
# of one episode share frames) and index arrays into them per window:
FRAMES = 'frames'                          # uint8 [N, C, H, W, 3]
STATES = 'states'                          # float [N, S]
STAGE_INDEX = 'stage_index'                # int64 [B, Ws], rows of FRAMES, oldest first
VALUE_INDEX = 'value_index'                # int64 [B, Wv]
INSTRUCTION = 'instruction_embedding'      # float [B, D]
PRIMITIVE = 'primitive'                    # int64 [B], -1 = unlabelled
GROUP = 'group'                            # int64 [B], -1 = unlabelled
PROGRESS = 'progress'                      # float [B], target in 0..1
PROGRESS_WEIGHT = 'progress_weight'        # float [B], 0 = no value target for this sample
SUCCESS = 'success'                        # float [B], 1 = task complete at this frame
SLOT_PROGRESS = 'slot_progress'            # float [B, Wv], target of every value-window slot
SLOT_WEIGHT = 'slot_progress_weight'       # float [B, Wv], 0 = no value target for that slot
USE_PREDICTED_PRIMITIVE = 'use_predicted_primitive'  # bool [B]

ENCODERS = ('cnn', 'pretrained')
VALUE_HEADS = ('moe', 'single')
HEAD_INPUTS = ('mean', 'concat')
VALUE_LOSS_POSITIONS = ('current', 'all')
AUX_LOSSES = ('switch', 'anchor')


@dataclass
class Sarm2Config:
    """Every size and loss weight of the model. Validated on construction."""

    cameras: tuple[str, ...] = ('corner',)
    image_size: int = 64
    state_dim: int = 9
    encoder: str = 'cnn'
    encoder_path: str = ''
    cnn_channels: tuple[int, ...] = (16, 32, 64)
    cnn_stem: int = 4
    frame_embed_dim: int = 64
    text_model_path: str = ''
    text_dim: int = 256
    d_model: int = 64
    n_heads: int = 4
    stage_layers: int = 2
    value_layers: int = 2
    ff_mult: int = 2
    dropout: float = 0.1
    stage_past_frames: int = 5
    stage_gap: int = 3
    value_past_frames: int = 6
    value_gap: int = 4
    value_head: str = 'moe'
    num_experts: int = 10
    top_k: int = 2
    expert_hidden: int = 64
    expert_layers: int = 1
    gate_hidden: int = 0
    head_input: str = 'mean'
    value_loss_positions: str = 'current'
    aux_loss: str = 'switch'
    aux_loss_weight: float = 0.2
    stage_loss_weight: float = 1.0
    success_loss_weight: float = 0.5

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f'cameras must be non-empty and unique, got {self.cameras}')
        if self.encoder not in ENCODERS:
            raise ValueError(f'encoder must be one of {ENCODERS}, got {self.encoder!r}')
        if self.encoder == 'pretrained' and not self.encoder_path:
            raise ValueError('encoder=pretrained needs encoder_path (a local model directory)')
        for name, allowed in (('value_head', VALUE_HEADS), ('head_input', HEAD_INPUTS),
                              ('value_loss_positions', VALUE_LOSS_POSITIONS),
                              ('aux_loss', AUX_LOSSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f'{name} must be one of {allowed}, got '
                                 f'{getattr(self, name)!r}')
        for name in ('gate_hidden', 'aux_loss_weight', 'stage_loss_weight',
                     'success_loss_weight'):
            if not getattr(self, name) >= 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        positive = ('image_size', 'state_dim', 'cnn_stem', 'frame_embed_dim', 'text_dim',
                    'd_model', 'n_heads', 'stage_layers', 'value_layers', 'ff_mult',
                    'stage_gap', 'value_gap', 'num_experts', 'top_k', 'expert_hidden',
                    'expert_layers')
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('stage_past_frames', 'value_past_frames'):
            if int(getattr(self, name)) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.d_model % self.n_heads:
            raise ValueError(f'd_model ({self.d_model}) must be divisible by n_heads '
                             f'({self.n_heads})')
        if self.top_k > self.num_experts:
            raise ValueError(f'top_k ({self.top_k}) > num_experts ({self.num_experts})')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout}')
        if self.encoder == 'cnn' and not self.cnn_channels:
            raise ValueError('cnn_channels must not be empty')
        if self.encoder == 'cnn' and self.cnn_stem > self.image_size:
            raise ValueError(f'cnn_stem ({self.cnn_stem}) must not exceed image_size '
                             f'({self.image_size})')

    @property
    def stage_window_length(self) -> int:
        return self.stage_past_frames + 1

    @property
    def value_window_length(self) -> int:
        return self.value_past_frames + 2

    @property
    def head_features(self) -> int:
        """Width of the heads' input: one token state, or all states of a time step."""
        if self.head_input == 'mean':
            return self.d_model
        return self.d_model * (len(self.cameras) + 3)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> 'Sarm2Config':
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        return config_from_dict(cls, data)


def config_from_dict(cls, data: dict):
    """Build dataclass ``cls`` from a dict, naming unknown keys instead of a TypeError."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f'unknown config keys {unknown}')
    return cls(**data)


def _weighted_mse(prediction: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor) -> torch.Tensor:
    return (weight * (prediction - target) ** 2).sum() / weight.sum().clamp_min(1.0)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class WindowTokenizer(nn.Module):
    """Frame embeddings + state of a window -> a token per camera and a state token per slot."""

    def __init__(self, frame_dim: int, state_dim: int, num_cameras: int, window: int,
                 d_model: int):
        super().__init__()
        self.frame_proj = nn.Linear(frame_dim, d_model)
        self.state_proj = nn.Linear(state_dim, d_model)
        self.source_embed = nn.Parameter(torch.randn(num_cameras + 1, d_model) * 0.02)
        self.slot_embed = nn.Parameter(torch.randn(window, d_model) * 0.02)

    def forward(self, frame_emb: torch.Tensor, state: torch.Tensor):
        batch, window, cameras, _ = frame_emb.shape
        frames = self.frame_proj(frame_emb) + self.source_embed[:cameras]
        states = self.state_proj(state).unsqueeze(2) + self.source_embed[cameras]
        tokens = torch.cat([frames, states], dim=2) + self.slot_embed[:window, None]
        slots = torch.arange(window, device=frame_emb.device).repeat_interleave(cameras + 1)
        return tokens.reshape(batch, window * (cameras + 1), -1), slots


class CausalTransformer(nn.Module):
    """Pre-norm transformer encoder whose tokens only attend to their own or earlier slots."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, ff_mult: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_model * ff_mult, dropout,
                                           activation='gelu', batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        # True = masked: the key's slot is later than the query's.
        mask = slots[None, :] > slots[:, None]
        return self.norm(self.layers(tokens, mask=mask))


class StageEstimator(nn.Module):
    """Causal transformer over a short frame window + state -> primitive and group logits."""

    def __init__(self, config: Sarm2Config, frame_dim: int):
        super().__init__()
        self.tokenizer = WindowTokenizer(frame_dim, config.state_dim, len(config.cameras),
                                         config.stage_window_length, config.d_model)
        self.transformer = CausalTransformer(config.d_model, config.n_heads, config.stage_layers,
                                             config.ff_mult, config.dropout)
        self.primitive_head = nn.Linear(config.d_model, NUM_PRIMITIVES)
        self.group_head = nn.Linear(config.d_model, NUM_GROUPS)
        self.tokens_per_slot = len(config.cameras) + 1

    def forward(self, frame_emb: torch.Tensor, state: torch.Tensor):
        tokens, slots = self.tokenizer(frame_emb, state)
        hidden = self.transformer(tokens, slots)
        current = hidden[:, -self.tokens_per_slot:].mean(dim=1)
        return self.primitive_head(current), self.group_head(current)


def _uniform(*shape: int, fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class MultiGateMoE(nn.Module):
    """One gate per group over a shared pool of experts; each sample uses its group's gate, top-k.

    A gate is linear (``gate_hidden`` 0) or an MLP; an expert is an MLP with ``layers`` hidden
    layers of ``hidden`` units. Every expert is evaluated for every sample (a few small MLPs
    cost less than gathering), but the mixing weights are zero outside the top-k, so neither
    the output nor the gradients depend on the other experts or gates.
    """

    def __init__(self, d_model: int, num_gates: int, num_experts: int, top_k: int, hidden: int,
                 layers: int = 1, gate_hidden: int = 0):
        super().__init__()
        self.top_k = top_k
        self.num_experts = num_experts
        gate_in = d_model
        if gate_hidden:
            self.gate_w1 = _uniform(num_gates, d_model, gate_hidden, fan_in=d_model)
            self.gate_b1 = nn.Parameter(torch.zeros(num_gates, gate_hidden))
            gate_in = gate_hidden
        self.gate_weight = nn.Parameter(torch.randn(num_gates, num_experts, gate_in) * 0.02)
        self.gate_bias = nn.Parameter(torch.zeros(num_gates, num_experts))
        self.w1 = _uniform(num_experts, d_model, hidden, fan_in=d_model)
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.hidden_w = nn.ParameterList(_uniform(num_experts, hidden, hidden, fan_in=hidden)
                                         for _ in range(layers - 1))
        self.hidden_b = nn.ParameterList(nn.Parameter(torch.zeros(num_experts, hidden))
                                         for _ in range(layers - 1))
        self.w2 = _uniform(num_experts, hidden, fan_in=hidden)
        self.b2 = nn.Parameter(torch.zeros(num_experts))

    def gate_logits(self, x: torch.Tensor, gate_ids: torch.Tensor) -> torch.Tensor:
        """Each sample's gate logits over the experts [B, E]."""
        if hasattr(self, 'gate_w1'):
            x = functional.gelu(torch.einsum('bd,bdh->bh', x, self.gate_w1[gate_ids])
                                + self.gate_b1[gate_ids])
        return torch.einsum('bd,bed->be', x, self.gate_weight[gate_ids]) + \
            self.gate_bias[gate_ids]

    def forward(self, x: torch.Tensor, gate_ids: torch.Tensor):
        probs = self.gate_logits(x, gate_ids).softmax(dim=-1)
        top_probs, top_index = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(
            1, top_index, top_probs / top_probs.sum(dim=-1, keepdim=True))
        hidden = functional.gelu(torch.einsum('bd,edh->beh', x, self.w1) + self.b1)
        for weight, bias in zip(self.hidden_w, self.hidden_b):
            hidden = functional.gelu(torch.einsum('beh,ehk->bek', hidden, weight) + bias)
        expert_out = torch.einsum('beh,eh->be', hidden, self.w2) + self.b2
        out = (weights * expert_out).sum(dim=-1)
        return out, {'gate_probs': probs, 'weights': weights, 'top_index': top_index}

    def anchor_auxiliary_loss(self, routing: dict) -> torch.Tensor:
        """Return the anchor's 2.5 Var(load) + 0.1 Var(importance) - 0.5 mean gate entropy.

        Load: each expert's share of the renormalized top-k weights; importance: its share of
        the gate probabilities (both averaged over tokens, so the scale does not depend on the
        batch size); the entropy is that of each token's gate softmax.
        """
        probs = routing['gate_probs']
        load = routing['weights'].mean(dim=0)
        importance = probs.mean(dim=0)
        entropy = -(probs * probs.clamp_min(1e-9).log()).sum(dim=-1).mean()
        return 2.5 * load.var() + 0.1 * importance.var() - 0.5 * entropy

    def auxiliary_loss(self, routing: dict) -> torch.Tensor:
        """Load balance (Switch-style, 0 when balanced) + entropy of the mean routing (0 = even).

        Without it a gate collapses onto one or two experts early in training and the rest
        never learn.
        """
        probs = routing['gate_probs']
        assigned = functional.one_hot(routing['top_index'], self.num_experts).sum(dim=1).float()
        fraction = assigned.mean(dim=0) / self.top_k
        balance = self.num_experts * (fraction * probs.mean(dim=0)).sum() - 1.0
        mean_probs = probs.mean(dim=0)
        entropy = -(mean_probs * mean_probs.clamp_min(1e-9).log()).sum()
        return balance + (1.0 - entropy / math.log(self.num_experts))


class SingleValueHead(nn.Module):
    """The no-MoE ablation: one MLP with as many hidden units as the top-k experts together."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, gate_ids: torch.Tensor):
        del gate_ids  # a single head has no gates
        return self.mlp(x).squeeze(-1), {}


class ValueDecoder(nn.Module):
    """Causal transformer over [instruction, primitive, frames + state] -> value, success."""

    def __init__(self, config: Sarm2Config, frame_dim: int):
        super().__init__()
        self.tokenizer = WindowTokenizer(frame_dim, config.state_dim, len(config.cameras),
                                         config.value_window_length, config.d_model)
        self.instruction_proj = nn.Linear(config.text_dim, config.d_model)
        self.primitive_proj = nn.Linear(config.text_dim, config.d_model)
        self.transformer = CausalTransformer(config.d_model, config.n_heads, config.value_layers,
                                             config.ff_mult, config.dropout)
        features = config.head_features
        if config.value_head == 'moe':
            self.head = MultiGateMoE(features, NUM_GROUPS, config.num_experts, config.top_k,
                                     config.expert_hidden, config.expert_layers,
                                     config.gate_hidden)
        else:
            self.head = SingleValueHead(features, config.expert_hidden * config.top_k)
        self.success_head = nn.Linear(features, 1)
        self.tokens_per_slot = len(config.cameras) + 1
        self.head_input = config.head_input

    def slot_features(self, hidden: torch.Tensor, slots: int) -> torch.Tensor:
        """Head input of the last ``slots`` time slots [B, slots, F] from token states."""
        batch, _, width = hidden.shape
        per_slot = hidden[:, 2:].reshape(batch, -1, self.tokens_per_slot, width)[:, -slots:]
        if self.head_input == 'mean':
            return per_slot.mean(dim=2)
        prefix = hidden[:, None, :2].expand(-1, per_slot.shape[1], -1, -1)
        return torch.cat([prefix, per_slot], dim=2).reshape(batch, per_slot.shape[1], -1)

    def forward(self, frame_emb, state, instruction_emb, primitive_emb, gate_ids,
                all_slots: bool = False):
        """Progress logit [B], success logit [B], routing; ``all_slots``: also [B, Wv] logits."""
        tokens, slots = self.tokenizer(frame_emb, state)
        prefix = torch.stack([self.instruction_proj(instruction_emb),
                              self.primitive_proj(primitive_emb)], dim=1)
        tokens = torch.cat([prefix, tokens], dim=1)
        slots = torch.cat([slots.new_full((2,), -1), slots])
        hidden = self.transformer(tokens, slots)
        window = frame_emb.shape[1] if all_slots else 1
        features = self.slot_features(hidden, window)
        batch = features.shape[0]
        flat = features.reshape(batch * window, -1)
        progress_logits, routing = self.head(flat, gate_ids.repeat_interleave(window))
        progress_logits = progress_logits.reshape(batch, window)
        success_logit = self.success_head(features[:, -1]).squeeze(-1)
        if all_slots:
            return progress_logits[:, -1], success_logit, routing, progress_logits
        return progress_logits[:, -1], success_logit, routing


class FramePreprocessing(nn.Module):
    """Frame encoder + joint-state normalization: the preprocessing that travels with a model.

    Subclasses set ``window_config`` (a ``Sarm2Config`` giving cameras, image size, state size
    and the encoder) before calling ``_build_preprocessing``.
    """

    window_config: Sarm2Config

    def _build_preprocessing(self) -> None:
        config = self.window_config
        self.encoder = build_encoder(config.encoder, config.cnn_channels, config.cnn_stem,
                                     config.frame_embed_dim, config.encoder_path)
        self.register_buffer('state_mean', torch.zeros(config.state_dim))
        self.register_buffer('state_std', torch.ones(config.state_dim))

    def set_state_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store joint-state statistics of the training data (std floored to avoid blow-ups)."""
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state.float() - self.state_mean) / self.state_std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode uint8 images [..., H, W, 3] -> embeddings [..., E], resizing if needed."""
        lead = images.shape[:-3]
        pixels = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        size = self.window_config.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = functional.interpolate(pixels, size=(size, size), mode='area')
        return self.encoder(pixels).reshape(*lead, -1)

    @torch.no_grad()
    def encode_episode(self, episode: Episode, batch_size: int = 256) -> torch.Tensor:
        """Embeddings of every frame and camera of an episode: [T, C, E]."""
        self.eval()
        cameras = self.window_config.cameras
        missing = [c for c in cameras if c not in episode.images]
        if missing:
            raise ValueError(f'episode {episode.episode_id} lacks cameras {missing}; the model '
                             f'expects {list(cameras)}')
        device = next(self.parameters()).device
        per_camera = []
        for camera in cameras:
            frames = episode.images[camera]
            chunks = [self.encode_images(torch.from_numpy(frames[i:i + batch_size]).to(device))
                      for i in range(0, len(frames), batch_size)]
            per_camera.append(torch.cat(chunks))
        return torch.stack(per_camera, dim=1)


class Sarm2Model(FramePreprocessing):
    """Frame encoder + stage estimator + value decoder, with preprocessing and normalization."""

    model_type = 'sarm2'
    config_class = Sarm2Config

    def __init__(self, config: Sarm2Config, primitive_embeddings: np.ndarray | None = None):
        super().__init__()
        self.config = config
        self.window_config = config
        self._build_preprocessing()
        frame_dim = self.encoder.out_dim
        if primitive_embeddings is None:
            embedder = make_text_embedder(config.text_model_path)
            primitive_embeddings = embedder.embed([primitive_text(p) for p in PRIMITIVES])
        if primitive_embeddings.shape != (NUM_PRIMITIVES, config.text_dim):
            raise ValueError(f'primitive embeddings have shape {primitive_embeddings.shape}, '
                             f'expected ({NUM_PRIMITIVES}, {config.text_dim}) (text_dim must '
                             'match the text embedder)')
        self.register_buffer('primitive_embeddings',
                             torch.as_tensor(primitive_embeddings, dtype=torch.float32))
        self.register_buffer('primitive_to_group', torch.tensor(PRIMITIVE_TO_GROUP))
        self.stage = StageEstimator(config, frame_dim)
        self.value = ValueDecoder(config, frame_dim)
        self.stage.apply(_init_weights)
        self.value.tokenizer.apply(_init_weights)
        self.value.transformer.apply(_init_weights)

    # ---- the two stages ------------------------------------------------------------------------
    def stage_logits(self, frame_emb: torch.Tensor, state: torch.Tensor):
        """Primitive logits [B, P] and group logits [B, G] from a stage window."""
        return self.stage(frame_emb, self.normalize_state(state))

    def value_outputs(self, frame_emb, state, instruction_emb, primitive_ids,
                      all_slots: bool = False):
        """Progress logit [B], success logit [B] and routing for a value window.

        ``all_slots``: also the progress logits of every window slot [B, Wv].
        """
        primitive_ids = primitive_ids.clamp(0, NUM_PRIMITIVES - 1)
        return self.value(frame_emb, self.normalize_state(state), instruction_emb,
                          self.primitive_embeddings[primitive_ids],
                          self.primitive_to_group[primitive_ids], all_slots)

    @torch.no_grad()
    def predict(self, stage_emb, stage_state, value_emb, value_state, instruction_emb) -> dict:
        """Inference on embedded windows: probabilities, progress, value and success probability.

        The value decoder is conditioned on the stage estimator's most likely primitive.
        """
        primitive_logits, group_logits = self.stage_logits(stage_emb, stage_state)
        predicted = primitive_logits.argmax(dim=-1)
        progress_logit, success_logit, routing = self.value_outputs(
            value_emb, value_state, instruction_emb, predicted)
        progress = torch.sigmoid(progress_logit)
        return {'primitive_probs': primitive_logits.softmax(-1),
                'group_probs': group_logits.softmax(-1), 'progress': progress,
                'value': progress - 1.0, 'success_probability': torch.sigmoid(success_logit),
                'routing': routing}

    # ---- training ------------------------------------------------------------------------------
    def forward(self, batch: dict, stage_only: bool = False):
        """Training loss and logs for a batch (keys at the top of this module).

        ``stage_only``: the anchor's pre-training phase, the stage estimator alone on the
        primitive cross-entropy (group head weight 0); the value decoder is not run.
        """
        config = self.config
        frame_emb = self.encode_images(batch[FRAMES])
        stage_index, value_index = batch[STAGE_INDEX], batch[VALUE_INDEX]
        primitive_logits, group_logits = self.stage_logits(frame_emb[stage_index],
                                                           batch[STATES][stage_index])
        target_primitive = batch[PRIMITIVE]
        predicted = primitive_logits.detach().argmax(dim=-1)
        if stage_only:
            labelled = target_primitive >= 0
            loss = (functional.cross_entropy(primitive_logits, target_primitive, ignore_index=-1)
                    if labelled.any() else primitive_logits.sum() * 0.0)
            accuracy = (predicted[labelled] == target_primitive[labelled]).float().mean()
            return loss, {'loss': loss.detach(), 'primitive_ce': loss.detach(),
                          'primitive_acc': accuracy}
        # Teacher forcing with the labelled primitive, except where asked (or unlabelled) to use
        # the estimator's prediction, so the value decoder also learns from its real inputs.
        use_predicted = batch[USE_PREDICTED_PRIMITIVE] | (target_primitive < 0)
        conditioning = torch.where(use_predicted, predicted, target_primitive)
        all_slots = config.value_loss_positions == 'all'
        progress_logit, success_logit, routing, *slot_logits = self.value_outputs(
            frame_emb[value_index], batch[STATES][value_index], batch[INSTRUCTION], conditioning,
            all_slots)
        mse = _weighted_mse(torch.sigmoid(progress_logit), batch[PROGRESS],
                            batch[PROGRESS_WEIGHT])
        logs = {'mse': mse.detach()}
        if all_slots:
            slots_mse = _weighted_mse(torch.sigmoid(slot_logits[0]), batch[SLOT_PROGRESS],
                                      batch[SLOT_WEIGHT])
            logs['mse_all_slots'] = slots_mse.detach()
            loss = slots_mse
        else:
            loss = mse
        if isinstance(self.value.head, MultiGateMoE):
            aux = (self.value.head.anchor_auxiliary_loss(routing) if config.aux_loss == 'anchor'
                   else self.value.head.auxiliary_loss(routing))
            loss = loss + config.aux_loss_weight * aux
            logs['aux'] = aux.detach()
        if (target_primitive >= 0).any():
            primitive_ce = functional.cross_entropy(primitive_logits, target_primitive,
                                                    ignore_index=-1)
            group_ce = functional.cross_entropy(group_logits, batch[GROUP], ignore_index=-1)
            loss = loss + config.stage_loss_weight * (primitive_ce + group_ce)
            labelled = target_primitive >= 0
            logs['primitive_ce'] = primitive_ce.detach()
            logs['primitive_acc'] = (predicted[labelled] == target_primitive[labelled]).float() \
                .mean()
        success_bce = functional.binary_cross_entropy_with_logits(success_logit, batch[SUCCESS])
        loss = loss + config.success_loss_weight * success_bce
        logs['success_bce'] = success_bce.detach()
        logs['loss'] = loss.detach()
        return loss, logs
