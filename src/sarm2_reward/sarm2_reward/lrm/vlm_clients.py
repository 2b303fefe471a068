"""Ways to ask a vision-language model a question about images.

``VlmClient.ask(images, prompt) -> str`` is all the LRM backend needs. ``OpenAiChatClient`` talks
to any OpenAI-compatible chat-completions server (vLLM, SGLang, ...) so the VLM can live on a GPU
box; it uses only the standard library. Failures raise ``VlmError`` with a ``kind`` the backend
counts in diagnostics: ``timeout``, ``http`` (error status or unreachable) or ``protocol`` (a reply
that is not a chat completion).
"""

from abc import ABC, abstractmethod
import base64
import json
import socket
import urllib.error
import urllib.request

import cv2
import numpy as np


class VlmError(RuntimeError):
    """A VLM query failed; ``kind`` is timeout, http or protocol."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class VlmClient(ABC):
    """Answers a text prompt about a list of RGB images."""

    name: str = 'vlm'

    @abstractmethod
    def ask(self, images: list[np.ndarray], prompt: str) -> str:
        """Return the model's raw text answer; raise VlmError on failure."""

    def close(self) -> None:
        """Release the model or connection."""


def png_data_url(image: np.ndarray) -> str:
    """Encode a uint8 RGB image as a base64 PNG data URL (what chat servers accept)."""
    ok, encoded = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'could not PNG-encode an image of shape {image.shape}')
    return 'data:image/png;base64,' + base64.b64encode(encoded.tobytes()).decode('ascii')


class OpenAiChatClient(VlmClient):
    """A client for ``POST <base_url>/chat/completions`` (OpenAI chat-completions format)."""

    def __init__(self, base_url: str, model: str, timeout: float = 10.0, api_key: str = '',
                 max_tokens: int = 32):
        if not base_url.startswith(('http://', 'https://')):
            raise ValueError(f'VLM endpoint must be an http(s) URL, got {base_url!r}')
        if timeout <= 0:
            raise ValueError(f'timeout must be > 0 s, got {timeout}')
        self.url = base_url.rstrip('/') + '/chat/completions'
        self.model = model
        self.timeout = timeout
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.name = f'openai:{model}'

    def request_body(self, images: list[np.ndarray], prompt: str) -> dict:
        """Build the chat-completions request: images first, then the question."""
        content = [{'type': 'image_url', 'image_url': {'url': png_data_url(image)}}
                   for image in images]
        content.append({'type': 'text', 'text': prompt})
        return {'model': self.model, 'messages': [{'role': 'user', 'content': content}],
                'max_tokens': self.max_tokens, 'temperature': 0.0}

    def ask(self, images: list[np.ndarray], prompt: str) -> str:
        headers = {'Content-Type': 'application/json'}
        if self.api_key:
            headers['Authorization'] = f'Bearer {self.api_key}'
        request = urllib.request.Request(
            self.url, data=json.dumps(self.request_body(images, prompt)).encode(),
            headers=headers, method='POST')
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise VlmError('http', f'{self.url}: HTTP {error.code} {error.reason}') from None
        except (socket.timeout, TimeoutError):
            raise VlmError('timeout', f'{self.url}: no answer within {self.timeout} s') from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (socket.timeout, TimeoutError)):
                raise VlmError('timeout',
                               f'{self.url}: no answer within {self.timeout} s') from None
            raise VlmError('http', f'{self.url}: {error.reason}') from None
        try:
            return json.loads(body)['choices'][0]['message']['content']
        except (ValueError, KeyError, IndexError, TypeError):
            raise VlmError('protocol',
                           f'{self.url}: not a chat completion: {body[:80]!r}') from None


class TransformersVlmClient(VlmClient):
    """A local image-text-to-text model (Qwen-VL, LLaVA, ...) loaded from a directory.

    Nothing is downloaded: the directory must hold the model and its processor
    (``save_pretrained`` layout, safetensors weights). ``adapter_dir`` adds a LoRA adapter with
    ``peft``. Decoding is greedy so the same frames give the same answer.
    """

    def __init__(self, model_dir: str, adapter_dir: str = '', device: str = 'cpu',
                 max_new_tokens: int = 24):
        import pathlib

        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as error:
            raise ImportError(f'local VLMs need transformers ({error}); '
                              'or serve the model and use an HTTP endpoint') from None
        for label, directory in (('model', model_dir), ('adapter', adapter_dir)):
            if directory and not (pathlib.Path(directory) / 'config.json').exists() and not (
                    pathlib.Path(directory) / 'adapter_config.json').exists():
                raise ValueError(f'VLM {label} directory {directory!r} has no config.json '
                                 '(expected a save_pretrained directory)')
        self._torch = torch
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
        if adapter_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
        self.model = model.to(device).eval()
        self.name = f'local:{pathlib.Path(model_dir).name}'

    def ask(self, images: list[np.ndarray], prompt: str) -> str:
        from PIL import Image

        content = [{'type': 'image'} for _ in images] + [{'type': 'text', 'text': prompt}]
        text = self.processor.apply_chat_template([{'role': 'user', 'content': content}],
                                                  add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[Image.fromarray(i) for i in images],
                                return_tensors='pt').to(self.device)
        try:
            with self._torch.inference_mode():
                output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                             do_sample=False)
        except RuntimeError as error:
            raise VlmError('protocol', f'{self.name}: generation failed: {error}') from None
        new_tokens = output[:, inputs['input_ids'].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]

    def close(self) -> None:
        self.model = None
