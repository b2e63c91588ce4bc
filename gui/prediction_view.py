"""Shows one prediction: the digit, how sure the model is, every class's probability, the network's
input and how long the model took."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QFont, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from .tiles import TileGrid

EMPTY_TEXT = "draw a digit"


def percent(probability: float) -> str:
    """A probability as a percentage with one decimal, e.g. "97.3 %"."""
    return f"{probability:.1%}".replace("%", " %")


class ProbabilityBars(QWidget):
    """One horizontal bar per class, the most likely class highlighted."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("probabilities")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._classes: list[str] = [str(digit) for digit in range(10)]
        self._values: np.ndarray | None = None

    def set_classes(self, classes: list[str]) -> None:
        """Name the bars (one per class, in output order) and clear them."""
        self._classes = list(classes)
        self._values = None
        self.update()

    def set_probabilities(self, values: np.ndarray | None) -> None:
        """Show `values`, a (classes,) array of probabilities, or empty bars for None."""
        if values is not None and values.shape != (len(self._classes),):
            raise ValueError(
                f"expected {len(self._classes)} probabilities, got an array of shape {values.shape}"
            )
        self._values = None if values is None else np.asarray(values, np.float32).copy()
        self.setToolTip(
            ""
            if values is None
            else "\n".join(f"{name}: {percent(value)}" for name, value in zip(self._classes, values))
        )
        self.update()

    def probabilities(self) -> np.ndarray | None:
        """The probabilities shown, (classes,) float32, or None when the bars are empty."""
        return None if self._values is None else self._values.copy()

    def minimumSizeHint(self) -> QSize:
        return QSize(160, len(self._classes) * (self.fontMetrics().height() + 2))

    def sizeHint(self) -> QSize:
        return QSize(280, len(self._classes) * (self.fontMetrics().height() + 10))

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        metrics = self.fontMetrics()
        right_aligned = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        label_width = max(metrics.horizontalAdvance(name) for name in self._classes) + 10
        value_width = metrics.horizontalAdvance("100.0 %") + 8
        track_width = max(1.0, self.width() - label_width - value_width)
        row_height = self.height() / len(self._classes)
        bar_height = min(row_height * 0.7, 2.2 * metrics.height())
        best = None if self._values is None else int(np.argmax(self._values))
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for index, name in enumerate(self._classes):
            top = index * row_height
            track = QRectF(label_width, top + (row_height - bar_height) / 2, track_width, bar_height)
            painter.setPen(palette.color(QPalette.ColorRole.WindowText))
            painter.drawText(QRectF(0, top, label_width - 6, row_height), right_aligned, name)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(QPalette.ColorRole.AlternateBase))
            painter.drawRoundedRect(track, 3, 3)
            if self._values is None:
                continue
            value = float(self._values[index])
            role = QPalette.ColorRole.Highlight if index == best else QPalette.ColorRole.Mid
            painter.setBrush(palette.color(role))
            if value * track_width >= 1.0:
                painter.drawRoundedRect(QRectF(track.topLeft(), QSizeF(value * track_width, bar_height)), 3, 3)
            painter.setPen(palette.color(QPalette.ColorRole.WindowText))
            painter.drawText(QRectF(track.right() + 6, top, value_width - 6, row_height), right_aligned, percent(value))
        painter.end()


class PredictionView(QWidget):
    """The result panel: predicted digit, confidence, per-class bars, network input, timing."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._classes: list[str] = [str(digit) for digit in range(10)]
        self._digit = QLabel(objectName="prediction", alignment=Qt.AlignmentFlag.AlignCenter)
        digit_font = QFont(self.font())
        digit_font.setPointSizeF(digit_font.pointSizeF() * 5)
        digit_font.setBold(True)
        self._digit.setFont(digit_font)
        self._digit.setMinimumWidth(self._digit.fontMetrics().horizontalAdvance("00"))
        self._confidence = QLabel(alignment=Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self._confidence.setWordWrap(True)
        self._bars = ProbabilityBars()
        self._network_input = TileGrid(minimum_tile=56)
        self._network_input.setToolTip(
            "The 28x28 image the network is given: the drawing cropped, scaled to 20x20 and centred"
        )
        self._timing = QLabel(alignment=Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self._timing.setWordWrap(True)
        self._timing.setToolTip("Wall-clock time of the model's predict_proba call for this one image")

        top = QGridLayout()
        top.addWidget(self._digit, 0, 0)
        top.addWidget(self._confidence, 0, 1)
        top.setHorizontalSpacing(16)
        top.setColumnStretch(1, 1)
        bottom = QGridLayout()
        bottom.addWidget(_caption("What the network sees"), 0, 0)
        bottom.addWidget(self._network_input, 1, 0)
        bottom.addWidget(self._timing, 1, 1)
        bottom.setColumnStretch(0, 1)
        bottom.setColumnStretch(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(_caption("Probability of each class"))
        layout.addWidget(self._bars, 3)
        layout.addLayout(bottom, 2)
        self.show_empty()

    def set_classes(self, classes: list[str]) -> None:
        """Prepare for a model with these output classes."""
        self._classes = list(classes)
        self._bars.set_classes(classes)
        self.show_empty()

    def show_empty(self) -> None:
        """Show that there is nothing to classify yet."""
        self._digit.setText("")
        self._confidence.setText(f"<span style='font-size:x-large'>{EMPTY_TEXT}</span>")
        self._bars.set_probabilities(None)
        self._network_input.set_tiles([])
        self._timing.setText("")

    def show_prediction(self, network_input: np.ndarray, probabilities: np.ndarray, seconds: float) -> None:
        """Show the model's answer for one image.

        Args:
            network_input: (28, 28) float32 in [0, 1], the image the model was given.
            probabilities: (classes,) float32, the model's output.
            seconds: how long the model took.
        """
        best = int(np.argmax(probabilities))
        self._digit.setText(self._classes[best])
        self._confidence.setText(f"{_emphasised(percent(probabilities[best]), 'x-large')}<br>confidence")
        self._bars.set_probabilities(probabilities)
        self._network_input.set_tiles([network_input])
        self._timing.setText(f"Inference time<br>{_emphasised(f'{seconds * 1e3:.2f} ms', 'large')}")


def _emphasised(text: str, size: str) -> str:
    """Rich text showing `text` bold at a CSS font size ("large", "x-large")."""
    return f"<span style='font-size:{size}; font-weight:600'>{text}</span>"


def _caption(text: str) -> QLabel:
    """A small bold heading over a part of the view."""
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label
