"""A widget that shows small images (network inputs, feature maps) as crisp, enlarged pixels."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget


def _colour_map(anchors: list[tuple[int, int, int]]) -> np.ndarray:
    """A (256, 3) uint8 lookup table interpolated linearly between evenly spaced anchor colours."""
    anchors_array = np.array(anchors, np.float32)
    positions = np.linspace(0.0, 255.0, len(anchors))
    levels = np.arange(256)
    return np.stack(
        [np.interp(levels, positions, anchors_array[:, c]) for c in range(3)], axis=1
    ).round().astype(np.uint8)


GREY = _colour_map([(0, 0, 0), (255, 255, 255)])
# Close to matplotlib's "inferno": perceptually ordered, so brighter always means a stronger response.
HEAT = _colour_map(
    [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
     (250, 193, 39), (252, 255, 164)]
)

GAP = 3  # logical pixels between tiles


def to_qimage(values: np.ndarray, colours: np.ndarray = GREY) -> QImage:
    """Colour a (h, w) float array in [0, 1] with a (256, 3) lookup table into an RGB QImage."""
    if values.ndim != 2:
        raise ValueError(f"a tile must be a 2-D array, got shape {values.shape}")
    indices = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.ascontiguousarray(colours[indices])
    height, width = values.shape
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class TileGrid(QWidget):
    """Equal square tiles laid out to fill the widget, each an image enlarged without smoothing.

    The column count is chosen so that the tiles are as large as the widget allows, so the grid
    needs no scrolling at any window size. Each tile can carry a short caption.
    """

    def __init__(self, parent: QWidget | None = None, minimum_tile: int = 24) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._minimum_tile = minimum_tile
        self._images: list[QImage] = []
        self._captions: list[str] = []

    def set_tiles(
        self, tiles: list[np.ndarray], captions: list[str] | None = None, colours: np.ndarray = GREY
    ) -> None:
        """Show `tiles`, each a (h, w) float array in [0, 1], coloured through `colours`."""
        if captions is not None and len(captions) != len(tiles):
            raise ValueError(f"got {len(captions)} captions for {len(tiles)} tiles")
        self._images = [to_qimage(tile, colours) for tile in tiles]
        self._captions = captions or []
        self.updateGeometry()
        self.update()

    def tile_count(self) -> int:
        """How many tiles are shown."""
        return len(self._images)

    def minimumSizeHint(self) -> QSize:
        count = max(1, len(self._images))
        # Allow any shape down to one that can hold every tile at the minimum size in a square-ish grid.
        columns = math.ceil(math.sqrt(count))
        side = columns * (self._minimum_tile + GAP)
        return QSize(min(side, 4 * self._minimum_tile), self._minimum_tile)

    def sizeHint(self) -> QSize:
        return QSize(240, 120)

    def _layout(self) -> tuple[int, float]:
        """(columns, tile side in logical pixels) that make the tiles largest in this widget."""
        count = len(self._images)
        best = (1, 0.0)
        for columns in range(1, count + 1):
            rows = math.ceil(count / columns)
            side = min(
                (self.width() - GAP * (columns - 1)) / columns,
                (self.height() - GAP * (rows - 1)) / rows,
            )
            if side > best[1]:
                best = (columns, side)
        return best

    def _crisp(self, side: float, image: QImage) -> float:
        """`side` shrunk so each image pixel covers a whole number of device pixels, when that costs
        little; otherwise `side` (nearest-neighbour scaling then makes some pixels one device pixel
        wider than others, which is invisible at large sizes)."""
        ratio = self.devicePixelRatioF()
        pixels = max(image.width(), image.height())
        snapped = math.floor(side * ratio / pixels) * pixels / ratio
        return snapped if snapped >= 0.8 * side else side

    def paintEvent(self, event: QPaintEvent) -> None:
        if not self._images:
            return
        columns, side = self._layout()
        if side <= 0:
            return
        side = self._crisp(side, self._images[0])
        rows = math.ceil(len(self._images) / columns)
        used_width = columns * side + GAP * (columns - 1)
        used_height = rows * side + GAP * (rows - 1)
        left = (self.width() - used_width) / 2
        top = (self.height() - used_height) / 2
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        for index, image in enumerate(self._images):
            row, column = divmod(index, columns)
            target = QRectF(left + column * (side + GAP), top + row * (side + GAP), side, side)
            fitted = QRectF(0, 0, *_fit(image.width(), image.height(), side))
            fitted.moveCenter(target.center())
            painter.drawImage(fitted, image)
            if index < len(self._captions):
                self._draw_caption(painter, fitted.topLeft(), self._captions[index])
        painter.end()

    def _draw_caption(self, painter: QPainter, corner: QPointF, caption: str) -> None:
        """Write `caption` in a small dark box at a tile's top-left corner: legible on any image."""
        metrics = painter.fontMetrics()
        box = QRectF(corner, QSizeF(metrics.horizontalAdvance(caption) + 8, metrics.height() + 2))
        painter.fillRect(box, QColor(0, 0, 0, 170))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, caption)


def _fit(width: int, height: int, side: float) -> tuple[float, float]:
    """The size of a width x height image scaled to fit a side x side square, aspect kept."""
    scale = side / max(width, height)
    return width * scale, height * scale
