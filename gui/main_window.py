"""The main window: wires canvas -> preprocess -> model -> views, and owns the menus and dialogs."""

from __future__ import annotations

import os
import time

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QToolBar,
    QWidget,
)

import fastmnist
from fastmnist.images import read_image
from fastmnist.preprocess import is_blank, to_mnist
from . import catalog
from .canvas import Canvas
from .inspector import Inspector
from .model_selector import ModelSelector, describe
from .prediction_view import PredictionView

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.pgm *.ppm *.pbm *.gif *.tif *.tiff *.webp);;All files (*)"
WEIGHTS_FILTER = "fastmnist weights (*.npz);;All files (*)"


class MainWindow(QMainWindow):
    """The fastmnist app: draw on the left, see what the model makes of it on the right."""

    def __init__(self, models: dict[str, fastmnist.Model] | None = None,
                 failed: dict[str, str] | None = None) -> None:
        """Args:
            models: the models to offer, {source: model}; a source is a shipped name or a file path.
            failed: models that could not be loaded, {source: error message}, listed as disabled.
        """
        super().__init__()
        self.setWindowTitle("fastmnist")
        self.setAcceptDrops(True)
        self._models: dict[str, fastmnist.Model] = {}
        self._model: fastmnist.Model | None = None
        self._picture: np.ndarray | None = None

        self._canvas = Canvas()
        self._prediction = PredictionView()
        self._inspector = Inspector()
        self._tabs = QTabWidget()
        self._tabs.addTab(self._prediction, "Prediction")
        self._tabs.addTab(self._inspector, "Look inside")
        self._selector = ModelSelector()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._canvas)
        splitter.addWidget(self._tabs)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)
        self._model_status = QLabel(objectName="modelStatus")
        self.statusBar().addPermanentWidget(self._model_status)

        self._make_actions()
        self._canvas.pictureChanged.connect(self._classify)
        self._selector.sourceChosen.connect(self.use_model)
        self._selector.openFileRequested.connect(self._ask_for_weights)
        self._tabs.currentChanged.connect(lambda _: self._refresh())

        for source, model in (models or {}).items():
            self._add_model(source, model)
        for source, error in (failed or {}).items():
            self._selector.add_failed(source, error)
        self._canvas.setFocus()

    # --- actions and menus -----------------------------------------------------------------------

    def _action(self, text: str, slot, shortcuts: list[QKeySequence | str], tip: str) -> QAction:
        """An action whose tooltip names its shortcut, so toolbar buttons teach the keyboard."""
        action = QAction(text, self)
        action.setShortcuts([QKeySequence(shortcut) for shortcut in shortcuts])
        native = QKeySequence.SequenceFormat.NativeText
        keys = ", ".join(shortcut.toString(native) for shortcut in action.shortcuts())
        action.setToolTip(f"{tip} ({keys})" if keys else tip)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _make_actions(self) -> None:
        open_image = self._action("&Open image…", self.open_image_dialog, [QKeySequence.StandardKey.Open],
                                  "Classify a digit from an image file")
        save = self._action("&Save drawing…", self.save_drawing_dialog, [QKeySequence.StandardKey.Save],
                            "Save the drawing as a PNG image")
        open_weights = self._action("Open &weights file…", self._ask_for_weights, ["Ctrl+Shift+O"],
                                    "Load a model from a fastmnist weights file")
        quit_ = self._action("&Quit", self.close, [QKeySequence.StandardKey.Quit], "Quit fastmnist")
        undo = self._action("&Undo stroke", self._canvas.undo, [QKeySequence.StandardKey.Undo],
                            "Remove the last stroke")
        clear = self._action("&Clear", self._canvas.clear, ["Esc", "Delete"], "Clear the drawing")
        show_prediction = self._action("&Prediction", lambda: self._tabs.setCurrentIndex(0), ["Ctrl+1"],
                                       "Show the prediction")
        show_inside = self._action("&Look inside", lambda: self._tabs.setCurrentIndex(1), ["Ctrl+2"],
                                   "Show the hidden layers and each class's ideal input")
        about = self._action("&About fastmnist", self._about, [], "About this program")

        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        file_menu.addActions([open_image, save])
        file_menu.addSeparator()
        file_menu.addAction(open_weights)
        file_menu.addSeparator()
        file_menu.addAction(quit_)
        menus.addMenu("&Edit").addActions([undo, clear])
        menus.addMenu("&View").addActions([show_prediction, show_inside])
        menus.addMenu("&Help").addAction(about)

        toolbar = QToolBar("Drawing", objectName="drawingToolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        toolbar.addActions([clear, undo, open_image, save])
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        toolbar.addWidget(spacer)
        toolbar.addWidget(QLabel("Model: "))
        toolbar.addWidget(self._selector)
        self.addToolBar(toolbar)

    # --- models ----------------------------------------------------------------------------------

    def _add_model(self, source: str, model: fastmnist.Model) -> None:
        self._models[source] = model
        name = source if source in fastmnist.shipped_models() else os.path.basename(source)
        self._selector.add_model(source, describe(name, model.metadata, model.precision))

    def model(self) -> fastmnist.Model | None:
        """The model in use, or None before one is chosen."""
        return self._model

    def use_model(self, source: str) -> bool:
        """Make `source` (a shipped model's name or a weights file) the active model.

        A model that fails to load is reported in a dialog and the previous model stays active.

        Returns:
            Whether the model is now active.
        """
        model = self._models.get(source)
        if model is None:
            try:
                model = catalog.load(source)
            except (ValueError, OSError) as error:
                self._selector.revert()
                kept = "" if self._model is None else f"\n\nThe model in use is still {self._model.name}."
                QMessageBox.critical(self, "Cannot load the model", f"{error}{kept}")
                return False
            self._add_model(source, model)
        self._model = model
        self._selector.set_active(source)
        self._prediction.set_classes(model.classes)
        self._inspector.set_model(model.layers, model.classes, model.ideal_inputs)
        self._model_status.setText(describe(model.name, model.metadata, model.precision))
        self.setWindowTitle(f"fastmnist — {model.name}")
        self._refresh()
        return True

    def _ask_for_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open weights file", self._last_folder(), WEIGHTS_FILTER)
        if not path:
            self._selector.revert()
            return
        self._remember_folder(path)
        self.use_model(path)

    # --- files -----------------------------------------------------------------------------------

    def open_image(self, path: str) -> bool:
        """Put the digit in an image file on the canvas (replacing the drawing); False on failure."""
        try:
            picture = read_image(path)
        except (ValueError, OSError) as error:
            QMessageBox.critical(self, "Cannot open the image", str(error))
            return False
        self._canvas.set_picture(picture)
        self.statusBar().showMessage(f"Opened {path}", 5000)
        return True

    def open_image_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self._last_folder(), IMAGE_FILTER)
        if path:
            self._remember_folder(path)
            self.open_image(path)

    def save_drawing_dialog(self) -> None:
        suggested = os.path.join(self._last_folder(), "digit.png")
        path, _ = QFileDialog.getSaveFileName(self, "Save drawing", suggested, "PNG image (*.png)")
        if not path:
            return
        if not path.lower().endswith(".png"):
            path += ".png"
        self._remember_folder(path)
        if self._canvas.save(path):
            self.statusBar().showMessage(f"Saved {path}", 5000)
        else:
            QMessageBox.critical(self, "Cannot save the drawing", f"Could not write '{path}'.")

    def _last_folder(self) -> str:
        return str(_settings().value("lastFolder", os.path.expanduser("~")))

    def _remember_folder(self, path: str) -> None:
        _settings().setValue("lastFolder", os.path.dirname(os.path.abspath(path)))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            path = urls[0].toLocalFile()
            if path.lower().endswith(".npz"):
                self.use_model(path)
            else:
                self.open_image(path)

    # --- the data flow: canvas -> preprocess -> model -> views -----------------------------------

    def _classify(self, picture: np.ndarray) -> None:
        self._picture = picture
        self._refresh()

    def _refresh(self) -> None:
        """Classify the latest picture with the active model and update the visible views."""
        if self._model is None or self._picture is None or is_blank(self._picture):
            self._prediction.show_empty()
            self._inspector.show_activations(None)
            return
        network_input = to_mnist(self._picture)[np.newaxis]
        start = time.perf_counter()
        probabilities = self._model.predict_proba(network_input)
        seconds = time.perf_counter() - start
        self._prediction.show_prediction(network_input[0], probabilities[0], seconds)
        # Activations cost a second pass through the network; only pay for it when they are seen.
        if self._tabs.currentWidget() is self._inspector:
            activations = self._model.activations(network_input)
            self._inspector.show_activations({name: values[0] for name, values in activations})

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About fastmnist",
            "<b>fastmnist</b>: a small CPU inference engine for MNIST-sized networks.<br><br>"
            "Draw a digit; the drawing is cropped, scaled to 20x20 and centred in 28x28 as MNIST was, "
            "then classified by the chosen model.",
        )


def _settings() -> QSettings:
    """The app's saved preferences (named here, so they do not depend on how QApplication was set up)."""
    return QSettings("fastmnist", "fastmnist")
