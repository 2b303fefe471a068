"""Where the LRM's vision-language model lives: one set of rules for every entry point.

The reward node's ``lrm_*`` parameters, ``spiral_update --reward lrm``, ``spiral_loop`` and
``bench/reward_quality.py`` all describe the VLM with a ``VlmSource``: either a served model
(OpenAI-compatible endpoint, one for all questions or one per question, and the served model
name, one or one per question) or a local model directory (with no adapter, one adapter for all
questions, or one per question). Per-question values are always in the order contrastive,
progress, completion.
"""

from dataclasses import asdict, dataclass
import hashlib
import json
from pathlib import Path

from .questions import QUESTIONS
from .vlm_clients import OpenAiChatClient, TransformersVlmClient, VlmClient

# The prompt and answer protocol of questions.py (recorded in relabelling provenance).
PROTOCOL = ('physical-superintelligence-lab/Large-Reward-Models vlm_reward_server.py: '
            'contrastive (image A earlier, image B current), progress (initial + current), '
            'completion (current)')
PER_QUESTION = ', '.join(QUESTIONS)


def _per_question_values(name: str, values: tuple[str, ...]) -> None:
    if values and (len(values) != len(QUESTIONS) or not all(values)):
        raise ValueError(f'{name} needs {len(QUESTIONS)} non-empty values ({PER_QUESTION}), got '
                         f'{list(values)}')


@dataclass
class VlmSource:
    """A served VLM (``endpoint(s)`` + ``model(s)``) or a local one (``model_dir``)."""

    endpoint: str = ''                   # OpenAI-compatible base URL, e.g. http://gpu:8000/v1
    endpoints: tuple[str, ...] = ()      # or one URL per question
    model: str = ''                      # served model name
    models: tuple[str, ...] = ()         # or one served name per question (LoRA adapters)
    model_dir: str = ''                  # local transformers model directory
    adapter_dir: str = ''                # one LoRA adapter for every question
    adapter_dirs: tuple[str, ...] = ()   # or one adapter per question
    timeout: float = 30.0                # s per request to a served model
    device: str = 'cpu'                  # torch device of a local model

    def __post_init__(self):
        for name in ('endpoints', 'models', 'adapter_dirs'):
            setattr(self, name, tuple(getattr(self, name)))
            _per_question_values(f'lrm_{name}', getattr(self, name))
        for single, several in (('endpoint', 'endpoints'), ('model', 'models'),
                                ('adapter_dir', 'adapter_dirs')):
            if getattr(self, single) and getattr(self, several):
                raise ValueError(f'give lrm_{single} or lrm_{several}, not both')
        if self.served == bool(self.model_dir):
            raise ValueError('the LRM needs exactly one VLM: lrm_endpoint / lrm_endpoints (a '
                             'served model) or lrm_model_dir (a local model directory)')
        if self.served and not (self.model or self.models):
            raise ValueError('a served LRM needs lrm_model or lrm_models (the served names)')
        if self.served and (self.adapter_dir or self.adapter_dirs):
            raise ValueError('lrm_adapter_dir(s) are for a local model; a server serves its '
                             'adapters under their own names: use lrm_models')
        if not self.served and (self.model or self.models):
            raise ValueError('lrm_model(s) name served models; with lrm_model_dir use '
                             'lrm_adapter_dir(s)')
        if self.timeout <= 0:
            raise ValueError(f'lrm_timeout must be > 0 s, got {self.timeout}')

    @property
    def served(self) -> bool:
        """True for an HTTP endpoint, False for a local model directory."""
        return bool(self.endpoint or self.endpoints)

    def _route(self, single: str, several: tuple[str, ...]) -> str | dict[str, str]:
        return dict(zip(QUESTIONS, several)) if several else single

    def make_client(self, max_tokens: int | None = None) -> VlmClient:
        """Connect to (or load) the VLM; ``max_tokens`` overrides the per-question budgets."""
        if self.served:
            return OpenAiChatClient(self._route(self.endpoint, self.endpoints),
                                    self._route(self.model, self.models), self.timeout,
                                    max_tokens=max_tokens)
        return TransformersVlmClient(self.model_dir,
                                     self._route(self.adapter_dir, self.adapter_dirs),
                                     self.device, max_new_tokens=max_tokens)

    def provenance(self) -> dict:
        """Describe what labels: the protocol, the served names or the local files' SHA-256."""
        # Timeout and device change how fast, not what, the model answers.
        record = {'protocol': PROTOCOL,
                  'source': {k: v for k, v in asdict(self).items()
                             if v and k not in ('timeout', 'device')}}
        if not self.served:
            record['model_sha256'] = directory_sha256(self.model_dir)
            adapters = self.adapter_dirs or ((self.adapter_dir,) * 3 if self.adapter_dir else ())
            record['adapter_sha256'] = {q: directory_sha256(d)
                                        for q, d in zip(QUESTIONS, adapters)}
        return record


def directory_sha256(directory: str) -> str:
    """SHA-256 over the names and contents of a model directory's JSON and safetensors files."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(directory).iterdir()
                   if p.is_file() and p.suffix in ('.json', '.safetensors'))
    for path in files:
        digest.update(path.name.encode())
        with path.open('rb') as stream:
            for block in iter(lambda: stream.read(1 << 24), b''):
                digest.update(block)
    return digest.hexdigest()


def provenance_id(record: dict) -> str:
    """Return a short hash of a provenance record: equal records give equal ids."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
