"""Observation preprocessing shared by training, offline evaluation and the policy node.

It travels with the model (its parameters live in ``CompactVlaConfig``), so the node and the
trainer cannot disagree about image size, normalization or how an instruction is tokenized.

Instructions are embedded without a downloaded language model: words and word bigrams are
hashed (CRC32, stable across processes and Python versions) into ``text_buckets`` counts,
which the model maps through a learned linear layer. That is enough to tell the catalogue's
instructions apart and to share words between related ones ("open the drawer" / "close the
drawer"), and it never needs the network.
"""

import re
import zlib

import cv2
import numpy as np

_WORD = re.compile(r'[a-z0-9]+')


def instruction_features(instruction: str, buckets: int) -> np.ndarray:
    """Hash the words and bigrams of ``instruction`` into float32 [buckets], L2-normed."""
    if buckets < 1:
        raise ValueError('buckets must be >= 1')
    words = _WORD.findall(instruction.lower())
    tokens = words + [f'{a} {b}' for a, b in zip(words, words[1:])]
    features = np.zeros(buckets, dtype=np.float32)
    for token in tokens:
        features[zlib.crc32(token.encode()) % buckets] += 1.0
    norm = float(np.linalg.norm(features))
    return features / norm if norm > 0 else features


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 HxWx3 image to size x size (area filter when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrinking = image.shape[0] > size or image.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def images_to_array(images: dict[str, np.ndarray], cameras: tuple[str, ...],
                    size: int) -> np.ndarray:
    """Stack the cameras into uint8 [num_cameras, size, size, 3]; raise if one is missing."""
    missing = [camera for camera in cameras if camera not in images]
    if missing:
        raise ValueError(f'observation lacks camera(s) {missing}; it has {sorted(images)}')
    return np.stack([resize_image(images[camera], size) for camera in cameras])


def normalization_stats(values: np.ndarray,
                        min_std: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of ``values`` [N, D]; std floored so constants stay finite."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(0)
    std = np.maximum(values.std(0), min_std)
    return mean.astype(np.float32), std.astype(np.float32)
