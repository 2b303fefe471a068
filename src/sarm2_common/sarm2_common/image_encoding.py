"""sensor_msgs/Image fields <-> numpy arrays, with cv_bridge's encoding semantics, without ROS.

The functions take the message fields (height, width, encoding, is_bigendian, step, data), so
they work on rclpy messages, rosbags messages and plain test data alike. The ROS adapter uses
the real ``cv_bridge`` when it is importable and falls back to these functions otherwise; the
semantics follow cv_bridge:

- ``decode_image`` is ``imgmsg_to_cv2(msg, 'passthrough')``: an array of the encoding's dtype in
  native byte order, shape (H, W) for one channel and (H, W, C) otherwise. Row padding
  (``step`` larger than ``width * channels * itemsize``) is cut off; big-endian data is swapped.
- ``to_rgb8`` is ``imgmsg_to_cv2(msg, 'rgb8')``: colour and mono encodings convert (16-bit values
  scale by 255/65535 like OpenCV's depth conversion); encodings that are not colour formats
  (``16UC1`` depth, ``32FC1``, generic ``8UC3``...) raise, as cv_bridge does.
- ``encode_image`` is ``cv2_to_imgmsg(array, encoding)``: tightly packed rows, little-endian.

Every malformed input raises ``ImageDecodeError`` (a ValueError) whose message says what is
wrong, so a node can count it and carry on.
"""

from dataclasses import dataclass
import re
import sys

import numpy as np


class ImageDecodeError(ValueError):
    """An image message cannot be turned into an array; the message says why.

    ``kind`` sorts the problem for diagnostics: ``encoding`` (unsupported or not a colour
    format), ``size`` (step/width/height do not match the data), ``empty`` (no pixels).
    """

    def __init__(self, message: str, kind: str = 'encoding'):
        super().__init__(message)
        self.kind = kind


# Named encodings of sensor_msgs/image_encodings.hpp: (numpy dtype, channels, channel order).
# The channel order is None for encodings that are not colour formats.
_NAMED: dict[str, tuple[str, int, str | None]] = {
    'rgb8': ('u1', 3, 'rgb'), 'bgr8': ('u1', 3, 'bgr'),
    'rgba8': ('u1', 4, 'rgba'), 'bgra8': ('u1', 4, 'bgra'),
    'rgb16': ('u2', 3, 'rgb'), 'bgr16': ('u2', 3, 'bgr'),
    'rgba16': ('u2', 4, 'rgba'), 'bgra16': ('u2', 4, 'bgra'),
    'mono8': ('u1', 1, 'mono'), 'mono16': ('u2', 1, 'mono'),
}
# Generic OpenCV-style encodings: <bits><U|S|F>C<channels>, e.g. 8UC3, 16UC1, 32FC1.
_GENERIC = re.compile(r'^(8|16|32|64)(U|S|F)C([1-4])$')
_GENERIC_DTYPES = {('8', 'U'): 'u1', ('8', 'S'): 'i1', ('16', 'U'): 'u2', ('16', 'S'): 'i2',
                   ('32', 'S'): 'i4', ('32', 'F'): 'f4', ('64', 'F'): 'f8'}
_HOST_BIG_ENDIAN = sys.byteorder == 'big'


@dataclass(frozen=True)
class EncodingInfo:
    """What one encoding string means: element dtype, channel count, colour order (or None)."""

    dtype: np.dtype
    channels: int
    color_order: str | None


@dataclass(frozen=True)
class ImageFields:
    """The data-carrying fields of a sensor_msgs/Image."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


def encoding_info(encoding: str) -> EncodingInfo:
    """Describe ``encoding``; raise ImageDecodeError for encodings this module does not handle."""
    if encoding in _NAMED:
        dtype, channels, order = _NAMED[encoding]
        return EncodingInfo(np.dtype(dtype), channels, order)
    match = _GENERIC.match(encoding or '')
    if match and (match.group(1), match.group(2)) in _GENERIC_DTYPES:
        return EncodingInfo(np.dtype(_GENERIC_DTYPES[(match.group(1), match.group(2))]),
                            int(match.group(3)), None)
    raise ImageDecodeError(
        f'unsupported image encoding {encoding!r}; supported: {", ".join(_NAMED)} and '
        'generic <8|16|32|64><U|S|F>C<1-4> such as 16UC1 or 32FC1')


def decode_image(height: int, width: int, encoding: str, is_bigendian: bool, step: int,
                 data) -> np.ndarray:
    """Return the image as an array in the message's own encoding (cv_bridge 'passthrough').

    ``data`` may be bytes, bytearray, memoryview, an array.array or a numpy array of uint8.
    The result owns its memory (no view into ``data``) and is in native byte order.
    """
    info = encoding_info(encoding)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'empty image: height={height}, width={width}', 'empty')
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f'step {step} is smaller than one row of {width} x {info.channels} channel(s) '
            f'x {info.dtype.itemsize} byte(s) = {row_bytes} bytes ({encoding})', 'size')
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else data.reshape(-1).view(np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError('empty image data', 'empty')
    if buffer.size != step * height:
        raise ImageDecodeError(
            f'data has {buffer.size} bytes, expected step x height = {step} x {height} = '
            f'{step * height}', 'size')
    rows = buffer.reshape(height, step)[:, :row_bytes]
    wire_dtype = info.dtype.newbyteorder('>' if is_bigendian else '<')
    # Copy first so the view below sits on a contiguous buffer whatever the row padding was.
    pixels = np.ascontiguousarray(rows).view(wire_dtype)
    pixels = pixels.astype(info.dtype.newbyteorder('='), copy=True)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return pixels.reshape(shape)


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image to contiguous uint8 RGB [H, W, 3] (cv_bridge desired 'rgb8')."""
    info = encoding_info(encoding)
    if info.color_order is None:
        raise ImageDecodeError(
            f'[{encoding}] is not a color format; a camera stream for the reward model must be '
            f'one of {", ".join(_NAMED)}')
    if info.dtype.itemsize == 2:
        # OpenCV's 16->8 bit conversion: scale by 255/65535 with rounding and saturation.
        array = np.clip(np.rint(array.astype(np.float32) * (255.0 / 65535.0)), 0, 255)
        array = array.astype(np.uint8)
    if info.color_order == 'mono':
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2))
    channels = {'rgb': [0, 1, 2], 'rgba': [0, 1, 2], 'bgr': [2, 1, 0], 'bgra': [2, 1, 0]}
    return np.ascontiguousarray(array[:, :, channels[info.color_order]])


def decode_rgb8(fields: ImageFields) -> np.ndarray:
    """Decode message fields straight to uint8 RGB [H, W, 3]."""
    array = decode_image(fields.height, fields.width, fields.encoding, fields.is_bigendian,
                         fields.step, fields.data)
    return to_rgb8(array, fields.encoding)


def encode_image(array: np.ndarray, encoding: str) -> ImageFields:
    """Pack an array as Image fields (cv_bridge ``cv2_to_imgmsg``): no padding, host byte order.

    The array's dtype and channel count must match ``encoding``.
    """
    info = encoding_info(encoding)
    array = np.asarray(array)
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else -1)
    if channels != info.channels or array.dtype.kind != info.dtype.kind \
            or array.dtype.itemsize != info.dtype.itemsize:
        raise ImageDecodeError(
            f'array {array.dtype} {array.shape} does not match encoding {encoding} '
            f'({info.dtype} x {info.channels} channel(s))')
    if array.size == 0:
        raise ImageDecodeError(f'empty array {array.shape}')
    height, width = array.shape[:2]
    native = np.ascontiguousarray(array, dtype=info.dtype.newbyteorder('='))
    return ImageFields(height=height, width=width, encoding=encoding,
                       is_bigendian=_HOST_BIG_ENDIAN,
                       step=width * info.channels * info.dtype.itemsize, data=native.tobytes())
