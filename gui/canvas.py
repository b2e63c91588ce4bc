"""The drawing surface: strokes in, a picture of them out. Knows nothing about models or preprocessing."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPalette,
    QPen,
    QTabletEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

# The picture handed to listeners is always this many pixels square, whatever the widget's size, so
# what a listener sees does not change when the window is resized.
PICTURE_SIZE = 280
# Stroke width as a fraction of the drawing square's side: a digit drawn to fill most of the square is
# later scaled to 20 pixels, which makes these strokes about 2 pixels wide, like MNIST's.
PEN_WIDTH = 1 / 14
# How long changes are gathered before the picture is published: short enough to feel live, long
# enough that a fast stroke is not slowed down by whoever listens.
PUBLISH_INTERVAL_MS = 40

# The smallest distance kept between a stroke's points, as a fraction of the square's side (see
# `_extend_stroke`).
MIN_STEP = 0.015

# A loaded picture is kept at most this many pixels on its longer side.
MAX_PICTURE_SIDE = 1024

HINT = "Draw a digit here"
PAPER = QColor(250, 250, 247)
INK = QColor(20, 20, 28)

Stroke = list[QPointF]


class Canvas(QWidget):
    """A square sheet to draw on with a mouse, pen or finger.

    Strokes are kept in coordinates normalised to the drawing square (0..1), so the drawing survives
    resizing and is re-rendered sharply at any size and device pixel ratio. A picture loaded from a
    file (`set_picture`) lies under the strokes.

    Signals:
        pictureChanged(object): the current drawing as a (280, 280) uint8 array, ink high (0 = blank),
            at most every 40 ms while drawing and once after each change.
    """

    pictureChanged = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("canvas")
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._strokes: list[Stroke] = []
        self._drawing = False
        self._picture: QImage | None = None  # ink high, as handed to listeners
        self._shown_picture: QImage | None = None  # the same, dark on light, as shown
        self._publish_timer = QTimer(self, singleShot=True, interval=PUBLISH_INTERVAL_MS)
        self._publish_timer.timeout.connect(self._publish)

    # --- what the rest of the program uses -------------------------------------------------------

    def is_empty(self) -> bool:
        """True when there is neither a stroke nor a loaded picture."""
        return not self._strokes and self._picture is None

    def clear(self) -> None:
        """Remove every stroke and the loaded picture."""
        self._strokes.clear()
        self._picture = self._shown_picture = None
        self._drawing = False
        self._changed()

    def undo(self) -> None:
        """Remove the most recent stroke (the loaded picture stays until `clear`)."""
        if self._strokes:
            self._strokes.pop()
            self._drawing = False
            self._changed()

    def set_picture(self, picture: np.ndarray) -> None:
        """Show `picture` ((H, W) float in [0, 1], ink high) under the strokes, fitted to the square.

        Replaces the current drawing.
        """
        ink = np.ascontiguousarray(np.round(np.clip(picture, 0.0, 1.0) * 255), np.uint8)
        height, width = ink.shape
        image = QImage(ink.data, width, height, ink.strides[0], QImage.Format.Format_Grayscale8)
        # Scaled once here rather than at every repaint: this is ample for any screen, and the model
        # sees 20x20 pixels anyway.
        if max(width, height) > MAX_PICTURE_SIDE:
            image = image.scaled(MAX_PICTURE_SIDE, MAX_PICTURE_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
        self._picture = image.copy()  # detach from the NumPy buffer
        self._shown_picture = self._picture.copy()
        self._shown_picture.invertPixels()
        self._strokes.clear()
        self._changed()

    def picture(self, size: int = PICTURE_SIZE) -> np.ndarray:
        """The drawing rendered at `size` x `size` pixels as a uint8 array, ink high."""
        image = QImage(size, size, QImage.Format.Format_Grayscale8)
        image.fill(0)
        painter = QPainter(image)
        self._render(painter, QRectF(0, 0, size, size), ink=QColor(255, 255, 255), picture=self._picture)
        painter.end()
        rows = np.frombuffer(image.constBits(), np.uint8, count=size * image.bytesPerLine())
        return rows.reshape(size, image.bytesPerLine())[:, :size].copy()

    def save(self, path: str) -> bool:
        """Save the drawing as it looks (dark ink on light paper) to an image file; False on failure."""
        image = QImage(PICTURE_SIZE, PICTURE_SIZE, QImage.Format.Format_Grayscale8)
        image.fill(PAPER)
        painter = QPainter(image)
        square = QRectF(0, 0, PICTURE_SIZE, PICTURE_SIZE)
        self._render(painter, square, ink=INK, picture=self._shown_picture)
        painter.end()
        return image.save(path)

    # --- rendering -------------------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        return QSize(420, 420)

    def _square(self) -> QRectF:
        """The drawing square, centred in the widget."""
        side = min(self.width(), self.height())
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def _render(self, painter: QPainter, square: QRectF, ink: QColor, picture: QImage | None) -> None:
        """Paint the picture and the strokes into `square`."""
        painter.setRenderHints(
            QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform
        )
        if picture is not None:
            fitted = picture.size().scaled(square.size().toSize(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRectF(0, 0, fitted.width(), fitted.height())
            target.moveCenter(square.center())
            painter.drawImage(target, picture)
        pen = QPen(ink, PEN_WIDTH * square.width())
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for stroke in self._strokes:
            points = [square.topLeft() + point * square.width() for point in stroke]
            if len(points) == 1:
                painter.drawPoint(points[0])
            else:
                painter.drawPath(_smooth_path(points))

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Window))
        square = self._square()
        painter.fillRect(square, PAPER)
        if self.is_empty():
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(square, Qt.AlignmentFlag.AlignCenter, HINT)
        self._render(painter, square, ink=INK, picture=self._shown_picture)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), 1))
        painter.drawRect(square.adjusted(0, 0, -1, -1))
        painter.end()

    # --- input -----------------------------------------------------------------------------------

    def _normalised(self, position: QPointF) -> QPointF:
        square = self._square()
        return QPointF(
            (position.x() - square.left()) / square.width(),
            (position.y() - square.top()) / square.height(),
        )

    def _begin_stroke(self, position: QPointF) -> None:
        self._drawing = True
        self._strokes.append([self._normalised(position)])
        self._changed()

    def _extend_stroke(self, position: QPointF) -> None:
        if not self._drawing:
            return
        point = self._normalised(position)
        stroke = self._strokes[-1]
        # Pointer positions come in whole pixels, and a curve through every one of them wobbles. So the
        # last point is a movable tip: it follows the pointer until it is MIN_STEP from the point before
        # it, and only then is kept, with a new tip started after it.
        if len(stroke) >= 2 and _distance(stroke[-2], stroke[-1]) < MIN_STEP:
            stroke[-1] = point
        else:
            stroke.append(point)
        self._changed()

    def _end_stroke(self) -> None:
        if self._drawing:
            self._drawing = False
            self._changed()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._begin_stroke(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._extend_stroke(event.position())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._end_stroke()

    def tabletEvent(self, event: QTabletEvent) -> None:
        # Handled directly (rather than through the mouse events Qt would synthesise) for the pen's
        # sub-pixel positions. Touch arrives as synthesised mouse events.
        kind = event.type()
        if kind == QTabletEvent.Type.TabletPress:
            self._begin_stroke(event.position())
        elif kind == QTabletEvent.Type.TabletMove:
            self._extend_stroke(event.position())
        elif kind == QTabletEvent.Type.TabletRelease:
            self._end_stroke()
        event.accept()

    # --- publishing ------------------------------------------------------------------------------

    def _changed(self) -> None:
        self.update()
        if not self._publish_timer.isActive():
            self._publish_timer.start()

    def _publish(self) -> None:
        self.pictureChanged.emit(self.picture())


def _distance(a: QPointF, b: QPointF) -> float:
    return math.hypot(a.x() - b.x(), a.y() - b.y())


def _smooth_path(points: list[QPointF]) -> QPainterPath:
    """A smooth path through a stroke's points.

    The inner points are first averaged with their neighbours (weights 1/4, 1/2, 1/4), which takes out
    most of the whole-pixel jitter of pointer positions; then each point becomes the control point of a
    quadratic curve joining the midpoints on either side of it, which rounds off the corners that
    straight segments between samples would leave. The ends stay where the pen went down and up.
    """
    if len(points) > 2:
        inner = [(before + 2 * point + after) / 4 for before, point, after in zip(points, points[1:], points[2:])]
        points = [points[0], *inner, points[-1]]
    path = QPainterPath(points[0])
    for current, following in zip(points[1:-1], points[2:]):
        path.quadTo(current, (current + following) / 2)
    path.lineTo(points[-1])
    return path
