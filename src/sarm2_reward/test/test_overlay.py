"""The overlay shows what it claims: the camera image, the progress fill, the reward curve."""

import numpy as np
import pytest

from sarm2_reward.overlay import (BAR_FILL, draw_overlay, overlay_geometry, PANEL_HEIGHT,
                                  SPARK_NEGATIVE, SPARK_POSITIVE)

IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


def _bar_fill_fraction(canvas, geometry):
    (top, bottom), (left, right) = geometry.bar_rows, geometry.bar_columns
    row = canvas[(top + bottom) // 2, left:right]
    return float(np.all(row == BAR_FILL, axis=1).mean())


def test_image_is_upscaled_on_top_and_panel_is_below():
    canvas = draw_overlay(IMAGE, 'pick_grab', 0.9, 0.5, 0.1, [0.0, 0.01], width=256)
    assert canvas.shape == (256 + PANEL_HEIGHT, 256, 3) and canvas.dtype == np.uint8
    np.testing.assert_array_equal(canvas[:256:4, ::4], IMAGE)  # nearest-neighbour x4


@pytest.mark.parametrize('progress', [0.0, 0.25, 0.6, 1.0])
def test_progress_bar_fill_is_proportional(progress):
    canvas = draw_overlay(IMAGE, 'reach', 0.5, progress, 0.0, [], width=320)
    geometry = overlay_geometry(IMAGE.shape, 320)
    assert _bar_fill_fraction(canvas, geometry) == pytest.approx(progress, abs=0.01)


def test_out_of_range_and_nan_progress_are_clamped():
    geometry = overlay_geometry(IMAGE.shape, 256)
    assert _bar_fill_fraction(draw_overlay(IMAGE, 'x', 0, 1.7, 0, []), geometry) == 1.0
    assert _bar_fill_fraction(draw_overlay(IMAGE, 'x', 0, float('nan'), 0, []), geometry) == 0.0


def test_sparkline_draws_positive_above_and_negative_below_the_zero_line():
    geometry = overlay_geometry(IMAGE.shape, 256)
    top, bottom = geometry.spark_rows
    middle = (top + bottom) // 2
    rising = draw_overlay(IMAGE, 'x', 0, 0, 0, [0.01] * 50)[top:bottom]
    falling = draw_overlay(IMAGE, 'x', 0, 0, 0, [-0.01] * 50)[top:bottom]
    rising_rows = np.nonzero(np.all(rising == SPARK_POSITIVE, axis=2).any(axis=1))[0] + top
    falling_rows = np.nonzero(np.all(falling == SPARK_NEGATIVE, axis=2).any(axis=1))[0] + top
    assert rising_rows.size and rising_rows.max() < middle
    assert falling_rows.size and falling_rows.min() > middle


def test_text_changes_with_the_primitive():
    geometry = overlay_geometry(IMAGE.shape, 256)
    text_rows = slice(geometry.panel_top, geometry.bar_rows[0])
    a = draw_overlay(IMAGE, 'pick_grab', 0.9, 0.5, 0.1, [])[text_rows]
    b = draw_overlay(IMAGE, 'place', 0.9, 0.5, 0.1, [])[text_rows]
    assert not np.array_equal(a, b)


def test_rejects_non_rgb8_images():
    with pytest.raises(ValueError, match='uint8'):
        draw_overlay(IMAGE.astype(np.float32), 'x', 0, 0, 0, [])
