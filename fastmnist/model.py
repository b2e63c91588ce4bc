"""`load()` and `Model`: a weights file, checked and prepared once, then fast predictions."""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import _engine, format, spec
from . import layers as layer_types
from .errors import WeightsFormatError

THREADS_VARIABLE = "FASTMNIST_NUM_THREADS"
ISA_VARIABLE = "FASTMNIST_ISA"


def shipped_weights_dir() -> Path:
    """Where the shipped weights are: inside the installed package, or weights/ of a source checkout."""
    installed = resources.files("fastmnist").joinpath("weights")
    if installed.is_dir():
        return Path(str(installed))
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_models() -> list[str]:
    """Names of the shipped models, e.g. ["cnn", "mlp300", ...], usable with `load(name)`."""
    return sorted(p.stem for p in shipped_weights_dir().glob("*.npz"))


def default_num_threads() -> int:
    """$FASTMNIST_NUM_THREADS if set, else the cores this process may run on."""
    value = os.environ.get(THREADS_VARIABLE)
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"${THREADS_VARIABLE} is {value!r}, expected a positive integer")
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_isa() -> str:
    """$FASTMNIST_ISA if set (e.g. "scalar" to force the plain C path), else the best this CPU runs."""
    return os.environ.get(ISA_VARIABLE) or _engine.best_isa()


def load(source: str | os.PathLike, num_threads: int | None = None, isa: str | None = None) -> Model:
    """Load a weights file (a path, or the name of a shipped model such as "cnn") and prepare it.

    num_threads: the most threads one call may use (default: $FASTMNIST_NUM_THREADS, else all available
    cores); small calls use fewer. isa: the kernel path ("scalar", "avx2", ...; default: $FASTMNIST_ISA,
    else the best for this CPU). Raises WeightsFormatError for a file it cannot accept, including one whose
    stored reference outputs the engine does not reproduce.
    """
    path = Path(source)
    if not path.suffix and not path.exists() and str(source) in shipped_models():
        path = shipped_weights_dir() / f"{source}.npz"
    raw_spec, arrays = format.read(path)
    model_spec = spec.parse(raw_spec, arrays, str(path))
    model = Model(model_spec, raw_spec, path, num_threads or default_num_threads(), isa or default_isa())
    model.check_reference()
    return model


def _activation_note(layer) -> str:
    """" (relu)", " (relu max_value=6.0)": a layer's activation for the summary; "" for linear or none."""
    activation = layer_types.activation_of(layer)
    if activation.name == "linear":
        return ""
    written = activation.to_json()
    params = "" if isinstance(written, str) else "".join(f" {k}={v}" for k, v in written.items() if k != "name")
    return f" ({activation.name}{params})"


class Model(_engine.Network):
    """A prepared model. Safe to use from several Python threads at once.

    images, wherever accepted: (n, 28, 28), (28, 28), (n, 784) or (784,); uint8 in 0..255 or float in [0, 1];
    ink high, background 0 (MNIST's convention). `predict_proba(images, out=None)` comes from the compiled
    Network: (n, classes) float32 probabilities, written into `out` when given.
    """

    def __init__(self, model_spec: spec.ModelSpec, raw_spec: dict[str, Any], path: Path, num_threads: int,
                 isa: str):
        super().__init__(model_spec, isa, num_threads)
        # The network owns packed copies of the weights; keep the description without the originals.
        self._spec = dataclasses.replace(
            model_spec, layers=tuple(dataclasses.replace(p, params={}) for p in model_spec.layers))
        self._layer_dicts = raw_spec["layers"]
        self.path = path

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def classes(self) -> list[str]:
        return list(self._spec.classes)

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The spec's layer list (dicts with "type", "name" and the layer's fields)."""
        return [dict(layer) for layer in self._layer_dicts]

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._spec.metadata)

    @property
    def ideal_inputs(self) -> np.ndarray | None:
        """(classes, 28, 28) float32: per class, the input that maximises it, if the file stores them."""
        return self._spec.ideal_inputs

    @property
    def num_threads(self) -> int:
        return self.max_threads

    def predict(self, images: Any) -> np.ndarray:
        """(n,) int64: the most probable class of each image."""
        return self.predict_proba(images).argmax(axis=1)

    def activations(self, images: Any) -> list[tuple[str, np.ndarray]]:
        """(layer name, output (n, *layer output shape) float32) for every layer, in order."""
        op_outputs = self.op_outputs(images)
        result = []
        for planned, op in zip(self._spec.layers, self.layer_ops):
            output = op_outputs[op] if op >= 0 else self._model_input(images)
            result.append((planned.layer.name, output.reshape(len(output), *planned.output_shape)))
        return result

    def _model_input(self, images: Any) -> np.ndarray:
        """(n, 784) float32: the input as the first layer sees it (for layers before the first computing one)."""
        pixels = np.asarray(images)
        scale = 255.0 if pixels.dtype == np.uint8 else 1.0
        lo, hi = self._spec.input_range
        return (lo + (hi - lo) * pixels.reshape(-1, 784) / scale).astype(np.float32)

    def summary(self) -> str:
        """A table of the layers: type, output shape, parameters; then the totals."""
        rows = [("layer", "type", "output shape", "params")]
        total = 0
        for planned in self._spec.layers:
            count = sum(int(np.prod(s)) for s in planned.layer.param_shapes(planned.input_shape).values())
            total += count
            kind = planned.layer.type + _activation_note(planned.layer)
            rows.append((planned.layer.name, kind, str(planned.output_shape), f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"model '{self.name}' ({self.path}), input {self._spec.input_shape}, "
                 f"{len(self.classes)} classes, kernels: {self.isa}, up to {self.num_threads} thread(s)"]
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) if j < 3 else cell.rjust(w) for j, (cell, w) in
                                   enumerate(zip(row, widths))))
            if i == 0:
                lines.append("-" * (sum(widths) + 6))
        lines.append(f"total parameters: {total:,} ({total * 4 / 1e6:.2f} MB as float32)")
        return "\n".join(lines)

    def check_reference(self) -> None:
        """Recompute the stored reference outputs; raise WeightsFormatError if they differ beyond atol."""
        s = self._spec
        if s.reference_inputs is None:
            return
        got = self.predict_proba(s.reference_inputs)
        error = float(np.abs(got - s.reference_probabilities).max())
        if not error <= s.reference_atol:
            raise WeightsFormatError(
                f"weights file '{self.path}': the engine's probabilities for the stored reference inputs differ "
                f"from the stored ones by up to {error:.3g}, expected at most {s.reference_atol:.3g}")

    def __repr__(self) -> str:
        return f"<fastmnist.Model '{self.name}' {len(self._spec.layers)} layers, {self.isa}>"
