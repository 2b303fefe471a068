"""The numpy image conversion has cv_bridge's semantics: encodings, row padding, endianness."""

import array

import cv2
import numpy as np
import pytest

from sarm2_common.image_encoding import (decode_image, decode_rgb8, encode_image, encoding_info,
                                         ImageDecodeError, ImageFields, to_rgb8)

RNG = np.random.default_rng(0)


def _padded(rows: np.ndarray, pad: int) -> bytes:
    """Rows of raw bytes [H, row_bytes] with ``pad`` junk bytes appended to every row."""
    junk = np.full((rows.shape[0], pad), 0xAB, dtype=np.uint8)
    return np.concatenate([rows, junk], axis=1).tobytes()


@pytest.mark.parametrize('encoding,dtype,channels', [
    ('rgb8', np.uint8, 3), ('bgr8', np.uint8, 3), ('rgba8', np.uint8, 4), ('mono8', np.uint8, 1),
    ('mono16', np.uint16, 1), ('16UC1', np.uint16, 1), ('32FC1', np.float32, 1),
    ('8UC3', np.uint8, 3), ('16SC1', np.int16, 1), ('64FC1', np.float64, 1),
])
def test_encode_decode_round_trip(encoding, dtype, channels):
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    if np.issubdtype(dtype, np.floating):
        image = RNG.normal(size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        image = RNG.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    fields = encode_image(image, encoding)
    assert fields.step == 7 * channels * np.dtype(dtype).itemsize
    assert len(fields.data) == fields.step * fields.height
    decoded = decode_image(fields.height, fields.width, fields.encoding, fields.is_bigendian,
                           fields.step, fields.data)
    assert decoded.dtype == dtype and decoded.shape == shape
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize('encoding,dtype,channels', [
    ('rgb8', np.uint8, 3), ('mono8', np.uint8, 1), ('16UC1', np.uint16, 1),
    ('32FC1', np.float32, 1), ('bgra8', np.uint8, 4)])
@pytest.mark.parametrize('pad', [1, 3, 16])
def test_row_padding_is_cut_off(encoding, dtype, channels, pad):
    """A step > width*channels*itemsize: the extra bytes per row are ignored, odd pads too."""
    shape = (4, 6) if channels == 1 else (4, 6, channels)
    image = (np.arange(np.prod(shape)) % 251).astype(dtype).reshape(shape)
    rows = np.frombuffer(image.tobytes(), np.uint8).reshape(4, -1)
    step = rows.shape[1] + pad
    decoded = decode_image(4, 6, encoding, False, step, _padded(rows, pad))
    np.testing.assert_array_equal(decoded, image)
    assert decoded.flags['C_CONTIGUOUS']


@pytest.mark.parametrize('encoding,dtype', [('16UC1', '>u2'), ('32FC1', '>f4'), ('mono16', '>u2'),
                                            ('rgb16', '>u2')])
def test_big_endian_data_is_swapped_to_native(encoding, dtype):
    channels = encoding_info(encoding).channels
    shape = (3, 5) if channels == 1 else (3, 5, channels)
    values = (np.arange(np.prod(shape)) * 257 + 3).reshape(shape)
    big = values.astype(dtype)
    rows = np.frombuffer(big.tobytes(), np.uint8).reshape(3, -1)
    decoded = decode_image(3, 5, encoding, True, rows.shape[1] + 2, _padded(rows, 2))
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, values.astype(np.dtype(dtype).newbyteorder('=')))
    # The same bytes read as little-endian are different numbers: the flag matters.
    wrong = decode_image(3, 5, encoding, False, rows.shape[1] + 2, _padded(rows, 2))
    assert not np.array_equal(wrong, decoded)


def test_accepts_the_data_containers_rclpy_and_rosbags_use():
    image = RNG.integers(0, 255, size=(3, 4, 3), dtype=np.uint8)
    fields = encode_image(image, 'rgb8')
    for data in (fields.data, bytearray(fields.data), memoryview(fields.data),
                 array.array('B', fields.data), np.frombuffer(fields.data, np.uint8)):
        np.testing.assert_array_equal(decode_image(3, 4, 'rgb8', False, 12, data), image)


def test_to_rgb8_matches_opencv_colour_conversions():
    rgb = RNG.integers(0, 255, size=(6, 5, 3), dtype=np.uint8)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(to_rgb8(bgr, 'bgr8'), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb, 'rgb8'), rgb)
    np.testing.assert_array_equal(to_rgb8(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), 'bgra8'), rgb)
    np.testing.assert_array_equal(to_rgb8(cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), 'rgba8'), rgb)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(to_rgb8(gray, 'mono8'), cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
    gray16 = RNG.integers(0, 65535, size=(6, 5), dtype=np.uint16)
    expected = cv2.cvtColor(cv2.convertScaleAbs(gray16, alpha=255.0 / 65535.0),
                            cv2.COLOR_GRAY2RGB)
    assert np.abs(to_rgb8(gray16, 'mono16').astype(int) - expected.astype(int)).max() <= 1
    assert to_rgb8(np.full((2, 2), 65535, np.uint16), 'mono16').max() == 255


def test_decode_rgb8_from_bgr_message_fields():
    rgb = RNG.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    fields = encode_image(rgb[:, :, ::-1], 'bgr8')
    np.testing.assert_array_equal(decode_rgb8(fields), rgb)


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1', '8UC3'])
def test_non_colour_encodings_are_not_silently_turned_into_rgb(encoding):
    """cv_bridge refuses depth/generic -> rgb8; so do we (the node counts it as bad input)."""
    info = encoding_info(encoding)
    shape = (2, 2) if info.channels == 1 else (2, 2, info.channels)
    with pytest.raises(ImageDecodeError, match='not a color format'):
        to_rgb8(np.zeros(shape, info.dtype), encoding)


@pytest.mark.parametrize('kwargs,message,kind', [
    ({'encoding': 'yuv422'}, 'unsupported image encoding', 'encoding'),
    ({'encoding': ''}, 'unsupported image encoding', 'encoding'),
    ({'encoding': '8UC9'}, 'unsupported image encoding', 'encoding'),
    ({'height': 0}, 'empty image', 'empty'),
    ({'width': 0}, 'empty image', 'empty'),
    ({'data': b''}, 'empty image data', 'empty'),
    ({'step': 11}, 'step 11 is smaller', 'size'),
    ({'data': bytes(12 * 4 - 1)}, 'expected step x height', 'size'),
    ({'data': bytes(12 * 5)}, 'expected step x height', 'size'),
])
def test_malformed_fields_raise_a_message_that_says_what_is_wrong(kwargs, message, kind):
    fields = {'height': 4, 'width': 4, 'encoding': 'rgb8', 'is_bigendian': False, 'step': 12,
              'data': bytes(48)}
    fields.update(kwargs)
    with pytest.raises(ImageDecodeError, match=message) as error:
        decode_image(**fields)
    assert error.value.kind == kind


def test_encode_rejects_arrays_that_do_not_match_the_encoding():
    with pytest.raises(ImageDecodeError, match='does not match'):
        encode_image(np.zeros((2, 2, 3), np.float32), 'rgb8')
    with pytest.raises(ImageDecodeError, match='does not match'):
        encode_image(np.zeros((2, 2), np.uint8), 'rgb8')


def test_matches_real_cv_bridge_when_installed():
    """Where cv_bridge exists (robot installs), both paths give identical arrays."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        pytest.skip('cv_bridge is not installed here (no ROS 2 cv_bridge wheel on PyPI)')
    bridge = CvBridge()
    for encoding, image in (('bgr8', RNG.integers(0, 255, (5, 6, 3), dtype=np.uint8)),
                            ('16UC1', RNG.integers(0, 65535, (5, 6), dtype=np.uint16)),
                            ('32FC1', RNG.normal(size=(5, 6)).astype(np.float32))):
        msg = bridge.cv2_to_imgmsg(image, encoding)
        ours = decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian),
                            msg.step, bytes(msg.data))
        np.testing.assert_array_equal(ours, bridge.imgmsg_to_cv2(msg, 'passthrough'))


def test_image_fields_is_plain_data():
    fields = ImageFields(1, 1, 'mono8', False, 1, b'\x07')
    assert decode_rgb8(fields).tolist() == [[[7, 7, 7]]]
