"""Text embeddings for task instructions and primitive names.

Two embedders share one interface (``name``, ``dim``, ``embed(texts) -> float32 [N, dim]``):

- ``TransformersTextEmbedder``: a local sentence-embedding model (any ``transformers`` encoder
  directory, e.g. a copy of all-MiniLM-L6-v2), mean-pooled over tokens and L2-normalized. It is
  used when a model directory is configured; nothing is downloaded, so the directory must exist.
- ``HashedTextEmbedder``, the documented fallback when no model is configured: signed feature
  hashing of lower-cased words and character trigrams into 256 buckets, L2-normalized. It needs no
  weights and is identical on every machine (crc32, not Python's salted ``hash``), so a checkpoint
  trained with it embeds instructions the same way at inference. It captures lexical overlap
  ("open the drawer" ~ "close the drawer"), not meaning, which limits transfer to held-out tasks
  phrased with new words; the model's learned projection does the rest.
"""

from pathlib import Path
import re
import zlib

import numpy as np

HASHED_DIM = 256
HASHED_NAME = f'hashed-ngram-{HASHED_DIM}'


class HashedTextEmbedder:
    """Deterministic bag of hashed words and character trigrams."""

    name = HASHED_NAME
    dim = HASHED_DIM

    def _features(self, text: str) -> list[str]:
        words = re.findall(r'[a-z0-9]+', text.lower().replace('_', ' '))
        features = [f'w:{w}' for w in words]
        for word in words:
            padded = f'<{word}>'
            features.extend(f'c:{padded[i:i + 3]}' for i in range(len(padded) - 2))
        return features

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed each text as a unit vector (all zeros for text without letters or digits)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                code = zlib.crc32(feature.encode('utf-8'))
                out[row, code % self.dim] += 1.0 if (code >> 16) & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


class TransformersTextEmbedder:
    """Mean-pooled sentence embeddings from a local ``transformers`` model directory."""

    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        if not (model_dir / 'config.json').is_file():
            raise FileNotFoundError(
                f'text model directory {model_dir} has no config.json; point text_model_path at '
                'a local sentence-embedding model (nothing is downloaded) or leave it empty to '
                'use the hashed fallback')
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise RuntimeError(f'text model {model_dir} needs the transformers package '
                               f'({exc}); install requirements/python.txt') from exc
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)
        self.name = f'transformers:{model_dir.name}'

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed each text as a unit vector."""
        torch = self._torch
        with torch.no_grad():
            tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                    return_tensors='pt')
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens['attention_mask'].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy().astype(np.float32)


def make_text_embedder(model_path: str = '') -> HashedTextEmbedder | TransformersTextEmbedder:
    """Return the embedder for ``model_path`` (empty: the hashed fallback)."""
    if model_path:
        return TransformersTextEmbedder(model_path)
    return HashedTextEmbedder()


def primitive_text(name: str) -> str:
    """Return the phrase embedded for a vocabulary primitive, e.g. 'pick_grab' -> 'pick grab'."""
    return name.replace('_', ' ')
