"""The model chooser: every shipped model with its accuracy and precision, plus an entry to open a weights file."""

from __future__ import annotations

import os

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QSizePolicy, QWidget

OPEN_FILE_TEXT = "Open weights file…"
NO_MODEL_TEXT = "no model loaded"


def _percent(fraction: float) -> str:
    return f"{fraction:.2%}".replace("%", " %")


def describe(name: str, metadata: dict, precision: str) -> str:
    """A model's entry text: its name, its MNIST test accuracy when recorded, and the precision it runs in,
    e.g. "cnn_int8 — 99.64 % on MNIST test · int8".

    A quantized file that records only the accuracy of the float model it was made from says so, rather
    than passing that figure off as its own.
    """
    accuracy = metadata.get("test_accuracy")
    quantization = metadata.get("quantization")
    source_accuracy = quantization.get("source_test_accuracy") if isinstance(quantization, dict) else None
    if isinstance(accuracy, (int, float)):
        return f"{name} — {_percent(accuracy)} on MNIST test · {precision}"
    if isinstance(source_accuracy, (int, float)):
        return f"{name} — {_percent(source_accuracy)} on MNIST test before quantization · {precision}"
    return f"{name} · {precision}"


class ModelSelector(QComboBox):
    """A combo box of models; the last entry asks for a weights file instead of naming a model.

    Each model entry carries its source (a shipped model's name or a file path) as item data.

    Signals:
        sourceChosen(str): the user picked a model entry; the source to load.
        openFileRequested(): the user picked the "Open weights file…" entry.
    """

    sourceChosen = Signal(str)
    openFileRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelSelector")
        self.setToolTip("The model that classifies the drawing")
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setPlaceholderText(NO_MODEL_TEXT)
        self.addItem(OPEN_FILE_TEXT)
        # Until a model is active no entry is current (the placeholder shows), so that picking
        # "Open weights file…" is a change of index, like picking anything else.
        self._active = -1
        self.setCurrentIndex(self._active)
        self.currentIndexChanged.connect(self._picked)

    def add_model(self, source: str, text: str) -> int:
        """Add a model entry (above "Open weights file…") unless its source is listed; its index."""
        existing = self.findData(source)
        if existing >= 0:
            return existing
        index = self.count() - 1
        self.blockSignals(True)
        self.insertItem(index, text, source)
        if self._active >= index:
            self._active += 1
        self.blockSignals(False)
        return index

    def add_failed(self, source: str, error: str) -> None:
        """List a model that cannot be loaded, disabled, with the reason as its tooltip."""
        index = self.add_model(source, f"{os.path.basename(source)} (cannot be loaded)")
        item = self.model().item(index)
        item.setEnabled(False)
        item.setToolTip(error)

    def set_active(self, source: str) -> None:
        """Show `source` as the current model without emitting anything."""
        index = self.findData(source)
        if index < 0:
            raise ValueError(f"model '{source}' is not in the selector")
        self._active = index
        self.blockSignals(True)
        self.setCurrentIndex(index)
        self.blockSignals(False)

    def revert(self) -> None:
        """Show the active model again, e.g. after a failed load or a cancelled file dialog."""
        self.blockSignals(True)
        self.setCurrentIndex(self._active)
        self.blockSignals(False)

    def sources(self) -> list[str]:
        """The source of every model entry, in order."""
        return [self.itemData(index) for index in range(self.count() - 1)]

    def _picked(self, index: int) -> None:
        if index == self.count() - 1:
            self.openFileRequested.emit()
        elif index >= 0:
            self.sourceChosen.emit(self.itemData(index))
