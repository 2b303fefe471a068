"""Checkpoints: one directory of safetensors + JSON, never pickle.

Layout (lerobot-style)::

    <dir>/config.json               format tag, model type, model config, metadata
    <dir>/model.safetensors         weights and buffers (not the frozen pretrained encoder's)
    <dir>/normalization.safetensors joint-state mean/std of the training data
    <dir>/optimizer.safetensors     optional, for resuming training
    <dir>/training_state.json       optional: step, optimizer hyper-parameters, RNG seeds...

Loading checks everything against the config before touching the model and raises
``CheckpointError`` naming the file and the mismatch (missing/unexpected tensors, shapes, bad
JSON, unknown config keys, truncated safetensors). ``safetensors`` stores raw tensors only, so
loading never executes code from the file.
"""

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import save_file
from sarm2_common.tensor_files import load_tensors
import torch
from torch import nn

FORMAT = 'sarm2_reward.checkpoint'
FORMAT_VERSION = 1
CONFIG_FILE = 'config.json'
MODEL_FILE = 'model.safetensors'
NORMALIZATION_FILE = 'normalization.safetensors'
OPTIMIZER_FILE = 'optimizer.safetensors'
TRAINING_STATE_FILE = 'training_state.json'
NORMALIZATION_KEYS = ('state_mean', 'state_std')


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file and what is wrong."""


def _model_types() -> dict:
    from .baselines import SarmV1Model
    from .model import Sarm2Model
    return {cls.model_type: cls for cls in (Sarm2Model, SarmV1Model)}


def _persisted_state(model: nn.Module) -> dict[str, torch.Tensor]:
    frozen = not getattr(model.encoder, 'trainable', True)
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
            if not (frozen and name.startswith('encoder.'))}


def state_fingerprint(model: nn.Module) -> str:
    """Return a short hash of the persisted weights: equal weights give equal ids."""
    digest = hashlib.sha256()
    for name, tensor in sorted(_persisted_state(model).items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + '.tmp')
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(model: nn.Module, directory: str | Path, metadata: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    training_state: dict | None = None) -> Path:
    """Write ``model`` (and optionally the optimizer and counters) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = _persisted_state(model)
    normalization = {key: state.pop(key) for key in NORMALIZATION_KEYS if key in state}
    _atomic_write(directory / MODEL_FILE, lambda p: save_file(state, str(p)))
    _atomic_write(directory / NORMALIZATION_FILE, lambda p: save_file(normalization, str(p)))
    if optimizer is not None:
        tensors, groups = _flatten_optimizer(optimizer)
        _atomic_write(directory / OPTIMIZER_FILE, lambda p: save_file(tensors, str(p)))
        training_state = dict(training_state or {}, optimizer_param_groups=groups)
    if training_state is not None:
        _atomic_write(directory / TRAINING_STATE_FILE,
                      lambda p: p.write_text(json.dumps(training_state, indent=2)))
    document = {'format': FORMAT, 'format_version': FORMAT_VERSION,
                'model_type': model.model_type, 'config': model.config.to_dict(),
                'metadata': metadata or {}}
    _atomic_write(directory / CONFIG_FILE,
                  lambda p: p.write_text(json.dumps(document, indent=2, sort_keys=True)))
    return directory


def read_config(directory: str | Path) -> dict:
    """Read and check ``config.json`` of a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f'{directory}: not a checkpoint directory (does not exist)')
    if not path.is_file():
        raise CheckpointError(f'{path}: missing; a checkpoint directory holds {CONFIG_FILE} '
                              f'and {MODEL_FILE}')
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f'{path}: not valid JSON ({exc})') from None
    if not isinstance(document, dict) or document.get('format') != FORMAT:
        tag = document.get('format') if isinstance(document, dict) else None
        raise CheckpointError(f'{path}: not a {FORMAT} file (format tag is {tag!r})')
    if document.get('format_version') != FORMAT_VERSION:
        raise CheckpointError(f'{path}: format_version {document.get("format_version")!r}, this '
                              f'code reads version {FORMAT_VERSION}')
    return document


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(directory: str | Path, device: str = 'cpu') -> nn.Module:
    """Build the model described by ``config.json`` and load its weights, in eval mode."""
    directory = Path(directory)
    document = read_config(directory)
    config_path = directory / CONFIG_FILE
    types = _model_types()
    model_type = document.get('model_type')
    if model_type not in types:
        raise CheckpointError(f'{config_path}: model_type {model_type!r} is not one of '
                              f'{sorted(types)}')
    model_class = types[model_type]
    try:
        config = model_class.config_class.from_dict(document.get('config', {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f'{config_path}: invalid model config: {exc}') from None
    state = _load_tensors(directory / MODEL_FILE)
    normalization = _load_tensors(directory / NORMALIZATION_FILE)
    primitive_embeddings = state.get('primitive_embeddings')
    try:
        model = model_class(config, primitive_embeddings=None if primitive_embeddings is None
                            else primitive_embeddings.numpy())
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise CheckpointError(f'{config_path}: cannot build the model: {exc}') from None
    expected = _persisted_state(model)
    _check_tensors(directory / NORMALIZATION_FILE, normalization,
                   {k: expected.pop(k) for k in NORMALIZATION_KEYS if k in expected})
    _check_tensors(directory / MODEL_FILE, state, expected)
    model.load_state_dict({**state, **normalization}, strict=False)
    return model.to(device).eval()


def _check_tensors(path: Path, found: dict, expected: dict) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f'{path}: does not match its config: missing tensors {missing[:8]}'
            f'{" ..." if len(missing) > 8 else ""}, unexpected tensors {unexpected[:8]}'
            f'{" ..." if len(unexpected) > 8 else ""}')
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape:
            raise CheckpointError(f'{path}: tensor {name!r} has shape {tuple(found[name].shape)},'
                                  f' the config expects {tuple(tensor.shape)}')
        if found[name].dtype != tensor.dtype:
            raise CheckpointError(f'{path}: tensor {name!r} has dtype {found[name].dtype}, '
                                  f'expected {tensor.dtype}')


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, list]:
    state_dict = optimizer.state_dict()
    tensors = {}
    for index, values in state_dict['state'].items():
        for key, value in values.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f'{index}.{key}'] = value.detach().cpu().contiguous()
    return tensors, state_dict['param_groups']


def load_optimizer_state(directory: str | Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the optimizer saved beside a checkpoint; return the training-state counters."""
    directory = Path(directory)
    path = directory / TRAINING_STATE_FILE
    try:
        training_state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f'{path}: cannot read training state ({exc})') from None
    tensors = _load_tensors(directory / OPTIMIZER_FILE)
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        index, key = name.split('.', 1)
        state.setdefault(int(index), {})[key] = tensor
    groups = training_state.get('optimizer_param_groups')
    if not groups:
        raise CheckpointError(f'{path}: has no optimizer_param_groups')
    try:
        optimizer.load_state_dict({'state': state, 'param_groups': groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{directory / OPTIMIZER_FILE}: does not match the model's "
                              f'optimizer ({exc})') from None
    return training_state
