"""Ways to ask a vision-language model one of the LRM questions.

``VlmClient.ask(query) -> str`` is all the LRM backend needs; the query says which question it is,
so a client can answer each question with its own model:

- ``OpenAiChatClient`` talks to OpenAI-compatible chat-completions servers (vLLM, SGLang, ...),
  so the VLM can live on a GPU box. Those servers serve each LoRA adapter under its own model
  name, so every question can name its own served model, and its own server (see docs for why
  the published progress adapter needs one). Standard library only.
- ``TransformersVlmClient`` runs a local image-text-to-text model, with one LoRA adapter per
  question loaded once and switched per query (as the source server's tri mode does), or one
  adapter for all questions.

Failures raise ``VlmError`` with a ``kind`` the backend counts in diagnostics: ``timeout``,
``http`` (error status or unreachable) or ``protocol`` (a reply that is not a chat completion).
"""

from abc import ABC, abstractmethod
import base64
from collections.abc import Mapping
import json
import pathlib
import socket
import threading
import urllib.error
import urllib.request

import cv2
import numpy as np

from .questions import Query, QUESTIONS


class VlmError(RuntimeError):
    """A VLM query failed; ``kind`` is timeout, http or protocol."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class VlmClient(ABC):
    """Answers one LRM question (text and images interleaved) with the question's model."""

    name: str = 'vlm'

    @abstractmethod
    def ask(self, query: Query) -> str:
        """Return the model's raw text answer; raise VlmError on failure."""

    def close(self) -> None:
        """Release the model or connection."""


def per_question(value: str | Mapping[str, str], what: str) -> dict[str, str]:
    """Map every question to ``value``, or check a mapping names each question exactly once."""
    if isinstance(value, str):
        return dict.fromkeys(QUESTIONS, value)
    if set(value) != set(QUESTIONS):
        raise ValueError(f'{what} must name each of {", ".join(QUESTIONS)} once, got '
                         f'{sorted(value)}')
    return {q: value[q] for q in QUESTIONS}


def joined_name(values: dict[str, str]) -> str:
    """Return ``a`` when every question uses ``a``, else ``a+b+c`` in question order."""
    unique = list(dict.fromkeys(values[q] for q in QUESTIONS))
    return unique[0] if len(unique) == 1 else '+'.join(values[q] for q in QUESTIONS)


def png_data_url(image: np.ndarray) -> str:
    """Encode a uint8 RGB image as a base64 PNG data URL (what chat servers accept)."""
    ok, encoded = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'could not PNG-encode an image of shape {image.shape}')
    return 'data:image/png;base64,' + base64.b64encode(encoded.tobytes()).decode('ascii')


class OpenAiChatClient(VlmClient):
    """``POST <base_url>/chat/completions`` (OpenAI format), per question its URL and model."""

    def __init__(self, base_url: str | Mapping[str, str], model: str | Mapping[str, str],
                 timeout: float = 30.0, api_key: str = '', max_tokens: int | None = None):
        urls = per_question(base_url, 'endpoints')
        for url in urls.values():
            if not url.startswith(('http://', 'https://')):
                raise ValueError(f'VLM endpoint must be an http(s) URL, got {url!r}')
        if timeout <= 0:
            raise ValueError(f'timeout must be > 0 s, got {timeout}')
        self.urls = {q: url.rstrip('/') + '/chat/completions' for q, url in urls.items()}
        self.models = per_question(model, 'models')
        if not all(self.models.values()):
            raise ValueError(f'every question needs a served model name, got {self.models}')
        self.timeout = timeout
        self.api_key = api_key
        self.max_tokens = max_tokens     # None: each question's own budget
        self.name = f'openai:{joined_name(self.models)}'

    def request_body(self, query: Query) -> dict:
        """Build the chat-completions request: the query's text and images in order, greedy."""
        content = [{'type': 'text', 'text': part} if isinstance(part, str) else
                   {'type': 'image_url', 'image_url': {'url': png_data_url(part)}}
                   for part in query.parts]
        return {'model': self.models[query.question],
                'messages': [{'role': 'user', 'content': content}],
                'max_tokens': self.max_tokens or query.max_tokens, 'temperature': 0.0}

    def ask(self, query: Query) -> str:
        url = self.urls[query.question]
        headers = {'Content-Type': 'application/json'}
        if self.api_key:
            headers['Authorization'] = f'Bearer {self.api_key}'
        request = urllib.request.Request(
            url, data=json.dumps(self.request_body(query)).encode(), headers=headers,
            method='POST')
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise VlmError('http', f'{url}: HTTP {error.code} {error.reason}') from None
        except (socket.timeout, TimeoutError):
            raise VlmError('timeout', f'{url}: no answer within {self.timeout} s') from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (socket.timeout, TimeoutError)):
                raise VlmError('timeout', f'{url}: no answer within {self.timeout} s') from None
            raise VlmError('http', f'{url}: {error.reason}') from None
        try:
            return json.loads(body)['choices'][0]['message']['content']
        except (ValueError, KeyError, IndexError, TypeError):
            raise VlmError('protocol', f'{url}: not a chat completion: {body[:80]!r}') from None


def check_directory(label: str, directory: str, marker: str) -> None:
    """Raise ValueError unless ``directory`` holds ``marker`` (a save_pretrained file)."""
    if not (pathlib.Path(directory) / marker).is_file():
        raise ValueError(f'VLM {label} directory {directory!r} has no {marker} '
                         '(expected a save_pretrained directory)')


def outermost_modules(model, names: list[str] | None) -> list[str] | None:
    """Drop ``modules_to_save`` entries that only name modules inside another entry's modules.

    peft matches each entry against module-path suffixes and cannot wrap a module inside one it
    already wraps (the source server hit this with the published progress adapter, which lists
    the vision tower and its merger). Wrapping the outer module saves the inner one's weights too.
    """
    if not names:
        return names
    paths = [path for path, _ in model.named_modules()]

    def matches(name):
        return [p for p in paths if p == name or p.endswith('.' + name)]

    def inside_another(path, name):
        return any(path.startswith(outer + '.') for other in names if other != name
                   for outer in matches(other))

    def redundant(name):
        found = matches(name)
        return bool(found) and all(inside_another(path, name) for path in found)

    return [name for name in names if not redundant(name)]


def load_adapters(model, adapters: Mapping[str, str]):
    """Load each distinct adapter directory of ``adapters`` (question -> directory) onto ``model``.

    Return the peft model and the adapter name of each question. Adapters with
    ``modules_to_save`` are loaded first (peft builds those wrappers with the first adapter), and
    nested ``modules_to_save`` entries are dropped (``outermost_modules``). Raise ValueError when
    an adapter's tensors do not all land in the model, or its LoRA B matrices are all zero (the
    source server's check: such an adapter silently acts as the base model).
    """
    from peft import PeftConfig, PeftModel

    by_directory = {}
    for question, directory in adapters.items():
        by_directory.setdefault(directory, []).append(question)
    configs = {d: PeftConfig.from_pretrained(d) for d in by_directory}
    ordered = sorted(by_directory, key=lambda d: not configs[d].modules_to_save)
    peft_model, adapter_of = None, {}
    for directory in ordered:
        name = '_'.join(by_directory[directory])
        config = configs[directory]
        config.inference_mode = True
        config.modules_to_save = outermost_modules(model, config.modules_to_save)
        if peft_model is None:
            peft_model = PeftModel(model, config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
        result = peft_model.load_adapter(directory, adapter_name=name, is_trainable=False)
        if result.unexpected_keys or result.missing_keys:
            raise ValueError(
                f'adapter {directory!r} does not fit the model: '
                f'{len(result.unexpected_keys)} saved tensors found no module (e.g. '
                f'{result.unexpected_keys[:2]}), {len(result.missing_keys)} adapter tensors '
                f'were not in the file (e.g. {result.missing_keys[:2]})')
        lora_b = [p for n, p in peft_model.named_parameters() if f'lora_B.{name}.' in n]
        if lora_b and not any(bool(p.abs().sum() > 0) for p in lora_b):
            raise ValueError(f'adapter {directory!r} has all-zero LoRA B weights: it would '
                             'act as the base model (an untrained or failed export)')
        adapter_of.update(dict.fromkeys(by_directory[directory], name))
    return peft_model, adapter_of


class TransformersVlmClient(VlmClient):
    """A local image-text-to-text model (Qwen-VL, LLaVA, ...) with optional LoRA adapters.

    Nothing is downloaded: ``model_dir`` holds the model and its processor (``save_pretrained``
    layout, safetensors weights), each adapter directory a peft adapter. ``adapter_dirs`` is one
    directory for every question or a mapping question -> directory: every adapter is loaded once
    at construction (``load_adapters``, which fails loudly when an adapter did not load) and the
    question's adapter is activated before each query. Decoding is greedy so the same frames
    give the same answer.
    """

    def __init__(self, model_dir: str, adapter_dirs: str | Mapping[str, str] = '',
                 device: str = 'cpu', max_new_tokens: int | None = None):
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as error:
            raise ImportError(f'local VLMs need transformers ({error}); '
                              'or serve the model and use an HTTP endpoint') from None
        check_directory('model', model_dir, 'config.json')
        adapters = per_question(adapter_dirs, 'adapter_dirs')
        for directory in set(adapters.values()) - {''}:
            check_directory('adapter', directory, 'adapter_config.json')
        self._torch = torch
        self._lock = threading.Lock()
        self.device = device
        self.max_new_tokens = max_new_tokens       # None: each question's own budget
        self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True,
                                                            dtype='auto')
        self.adapter_of: dict[str, str] = {}       # question -> peft adapter name
        if any(adapters.values()):
            if not all(adapters.values()):
                raise ValueError(f'give an adapter for every question or none, got {adapters}')
            model, self.adapter_of = load_adapters(model, adapters)
        self.model = model.to(device).eval()
        self.name = f'local:{pathlib.Path(model_dir).name}'
        if self.adapter_of:
            self.name += '+' + joined_name({q: pathlib.Path(d).name for q, d in adapters.items()})

    def ask(self, query: Query) -> str:
        from PIL import Image

        content = [{'type': 'text', 'text': part} if isinstance(part, str) else
                   {'type': 'image'} for part in query.parts]
        text = self.processor.apply_chat_template([{'role': 'user', 'content': content}],
                                                  add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[Image.fromarray(i) for i in query.images],
                                return_tensors='pt').to(self.device)
        with self._lock:      # the active adapter is model state: one query at a time
            if self.adapter_of:
                self.model.set_adapter(self.adapter_of[query.question])
            try:
                with self._torch.inference_mode():
                    output = self.model.generate(
                        **inputs, max_new_tokens=self.max_new_tokens or query.max_tokens,
                        do_sample=False)
            except RuntimeError as error:
                raise VlmError('protocol', f'{self.name}: generation failed: {error}') from None
        new_tokens = output[:, inputs['input_ids'].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]

    def close(self) -> None:
        self.model = None
