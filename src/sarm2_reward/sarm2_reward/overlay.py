"""The annotated camera image the reward node publishes for RViz / rqt_image_view (ROS-free).

Camera frames for the reward model are small (64-224 px), so the annotation goes in a panel
under the (upscaled) image instead of over it:

    +------------------------------+
    |        camera image          |
    +------------------------------+
    | pick_grab 0.87     succ 0.12 |  primitive and its confidence, success probability
    | [#########.........]  0.45   |  progress bar
    | ~~~~~~~~~~~~~~~~~~~~~~~~~~~~ |  reward sparkline (recent rewards, zero line dashed)
    +------------------------------+
"""

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

PANEL_HEIGHT = 72
MARGIN = 6
TEXT_ROW_Y = 16               # baseline of the text row, from the panel top
BAR_TOP, BAR_BOTTOM = 24, 38  # progress bar rows, from the panel top
SPARK_TOP, SPARK_BOTTOM = 44, PANEL_HEIGHT - 4

BACKGROUND = (30, 30, 30)
TEXT = (235, 235, 235)
BAR_FILL = (60, 200, 90)
BAR_EMPTY = (80, 80, 80)
SPARK_POSITIVE = (90, 170, 255)
SPARK_NEGATIVE = (255, 110, 90)
ZERO_LINE = (120, 120, 120)


@dataclass(frozen=True)
class OverlayGeometry:
    """Pixel rows/columns of the panel parts in an overlay of ``width`` x image ``height``."""

    image_height: int
    width: int

    @property
    def panel_top(self) -> int:
        return self.image_height

    @property
    def bar_columns(self) -> tuple[int, int]:
        """First and one-past-last column of the progress bar."""
        return MARGIN, self.width - 56

    @property
    def bar_rows(self) -> tuple[int, int]:
        return self.panel_top + BAR_TOP, self.panel_top + BAR_BOTTOM

    @property
    def spark_rows(self) -> tuple[int, int]:
        return self.panel_top + SPARK_TOP, self.panel_top + SPARK_BOTTOM


def overlay_geometry(image_shape: tuple[int, ...], width: int) -> OverlayGeometry:
    """Geometry of the overlay ``draw_overlay`` makes from an image of ``image_shape``."""
    height = max(1, round(image_shape[0] * width / image_shape[1]))
    return OverlayGeometry(height, width)


def draw_overlay(image: np.ndarray, primitive_name: str, confidence: float, progress: float,
                 success_probability: float, rewards: Sequence[float],
                 width: int = 256) -> np.ndarray:
    """Return uint8 RGB [H', width, 3]: the image scaled to ``width`` with the panel below it.

    ``rewards`` are the recent dense rewards, oldest first; the sparkline is scaled to the
    largest magnitude shown so small rewards stay visible.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be uint8 [H, W, 3], got {image.dtype} {image.shape}')
    if width < 96:
        raise ValueError(f'width must be >= 96 pixels to fit the panel, got {width}')
    geometry = overlay_geometry(image.shape, width)
    scaled = cv2.resize(image, (width, geometry.image_height), interpolation=cv2.INTER_NEAREST)
    canvas = np.empty((geometry.image_height + PANEL_HEIGHT, width, 3), np.uint8)
    canvas[:geometry.image_height] = scaled
    canvas[geometry.image_height:] = BACKGROUND
    top = geometry.panel_top
    font = cv2.FONT_HERSHEY_SIMPLEX

    cv2.putText(canvas, f'{primitive_name} {confidence:.2f}', (MARGIN, top + TEXT_ROW_Y), font,
                0.45, TEXT, 1, cv2.LINE_AA)
    success_text = f'succ {success_probability:.2f}'
    (text_width, _), _ = cv2.getTextSize(success_text, font, 0.4, 1)
    cv2.putText(canvas, success_text, (width - MARGIN - text_width, top + TEXT_ROW_Y), font, 0.4,
                TEXT, 1, cv2.LINE_AA)

    left, right = geometry.bar_columns
    bar_top, bar_bottom = geometry.bar_rows
    canvas[bar_top:bar_bottom, left:right] = BAR_EMPTY
    fraction = float(np.clip(np.nan_to_num(progress), 0.0, 1.0))
    filled = left + round(fraction * (right - left))
    canvas[bar_top:bar_bottom, left:filled] = BAR_FILL
    cv2.putText(canvas, f'{fraction:.2f}', (right + 6, bar_bottom - 2), font, 0.4, TEXT, 1,
                cv2.LINE_AA)

    _draw_sparkline(canvas, rewards, geometry)
    return canvas


def _draw_sparkline(canvas: np.ndarray, rewards: Sequence[float],
                    geometry: OverlayGeometry) -> None:
    spark_top, spark_bottom = geometry.spark_rows
    middle = (spark_top + spark_bottom) // 2
    left, right = MARGIN, geometry.width - MARGIN
    for x in range(left, right, 6):
        canvas[middle, x:min(x + 3, right)] = ZERO_LINE
    values = np.nan_to_num(np.asarray(list(rewards)[-(right - left):], dtype=np.float64))
    if values.size == 0:
        return
    scale = float(np.abs(values).max())
    half = (spark_bottom - 1 - spark_top) // 2
    ys = middle - np.round(values / scale * half).astype(int) if scale > 0 else \
        np.full(values.size, middle)
    xs = np.linspace(left, right - 1, values.size).round().astype(int) if values.size > 1 else \
        np.array([right - 1])
    for i, (x, y) in enumerate(zip(xs, ys)):
        color = SPARK_POSITIVE if values[i] >= 0 else SPARK_NEGATIVE
        if i == 0:
            canvas[y, x] = color
        else:
            cv2.line(canvas, (int(xs[i - 1]), int(ys[i - 1])), (int(x), int(y)), color, 1)
