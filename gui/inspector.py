"""The "Look inside" panel: what the hidden layers make of the drawing, and what each class looks for."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from .tiles import HEAT, TileGrid

# Layers that act on each value independently: a hidden layer is shown after the last of these that
# follow it, i.e. after its normalisation and activation.
_ELEMENTWISE = {"batchnorm", "activation", "dropout"}
NO_HIDDEN_LAYERS = "This model has no hidden layers: it maps the pixels straight to the classes."
NO_IDEAL_INPUTS = "Ideal inputs: not stored in this weights file."


def shown_layers(layers: list[dict]) -> list[tuple[str, str]]:
    """(layer to display, title) for every conv2d layer and the first hidden dense layer.

    The dense layer that produces the output is not hidden and is never shown.
    """
    dense_indices = [index for index, layer in enumerate(layers) if layer["type"] == "dense"]
    first_hidden_dense = dense_indices[0] if len(dense_indices) > 1 else None
    shown = []
    for index, layer in enumerate(layers):
        if layer["type"] != "conv2d" and index != first_hidden_dense:
            continue
        end = index
        while end + 1 < len(layers) and layers[end + 1]["type"] in _ELEMENTWISE:
            end += 1
        if layer["type"] == "conv2d":
            title = f"{layer['name']}: {layer['filters']} feature maps"
        else:
            title = f"{layer['name']}: the {layer['units']} units' activations, the drawing's fingerprint"
        shown.append((layers[end]["name"], title))
    return shown


def _unit_range(values: np.ndarray) -> np.ndarray:
    """`values` mapped to [0, 1] for display: the lower of 0 and the minimum to 0, the maximum to 1."""
    low = min(0.0, float(values.min()))
    span = float(values.max()) - low
    return np.zeros_like(values) if span <= 0 else (values - low) / span


def _as_grid(values: np.ndarray) -> np.ndarray:
    """A 1-D array laid out row by row in a near-square 2-D grid, padded with zeros."""
    columns = math.ceil(math.sqrt(values.size))
    rows = math.ceil(values.size / columns)
    grid = np.zeros(rows * columns, values.dtype)
    grid[: values.size] = values
    return grid.reshape(rows, columns)


class Inspector(QWidget):
    """Shows the current drawing's hidden-layer activations and the model's per-class ideal inputs."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._grids: dict[str, TileGrid] = {}

    def set_model(self, layers: list[dict], classes: list[str], ideal_inputs: np.ndarray | None) -> None:
        """Lay the panel out for a model.

        Args:
            layers: the model's layer dicts, in order.
            classes: the output class names.
            ideal_inputs: (classes, 28, 28) float32, the input that maximises each class, or None.
        """
        while self._layout.count():
            widget = self._layout.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self._grids = {}
        shown = shown_layers(layers)
        if not shown:
            self._layout.addWidget(_wrapped(NO_HIDDEN_LAYERS))
        for name, title in shown:
            self._layout.addWidget(_wrapped(title))
            grid = TileGrid(minimum_tile=10)
            grid.setObjectName(f"activations:{name}")
            self._layout.addWidget(grid, 3)
            self._grids[name] = grid
        if ideal_inputs is None:
            self._layout.addWidget(_wrapped(NO_IDEAL_INPUTS))
            return
        self._layout.addWidget(_wrapped("What each class looks for: the input that maximises it"))
        ideal = TileGrid(minimum_tile=28)
        ideal.setObjectName("idealInputs")
        ideal.setToolTip("Found by gradient ascent on the class score, with an L2 penalty on the image")
        ideal.set_tiles([_unit_range(image) for image in ideal_inputs], captions=list(classes))
        self._layout.addWidget(ideal, 3)

    def layer_names(self) -> list[str]:
        """The names of the layers whose activations are shown."""
        return list(self._grids)

    def show_activations(self, activations: dict[str, np.ndarray] | None) -> None:
        """Show one image's activations, {layer name: (*layer output shape) array}; None clears them."""
        for name, grid in self._grids.items():
            if activations is None:
                grid.set_tiles([])
                continue
            values = _unit_range(activations[name].astype(np.float32))
            if values.ndim == 3:
                grid.set_tiles([values[:, :, channel] for channel in range(values.shape[2])], colours=HEAT)
            else:
                grid.set_tiles([_as_grid(values.ravel())], colours=HEAT)


def _wrapped(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label

