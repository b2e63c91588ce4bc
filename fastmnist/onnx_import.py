"""Import an ONNX model (torch.onnx.export, tf2onnx, onnx.helper) into a fastmnist weights file (docs/FORMAT.md).

The ONNX knowledge lives in the package-private modules behind this one: `fastmnist._onnx_read` reads the
untrusted file (tensors stored outside it are refused, and every size is checked before anything is
allocated); `fastmnist._onnx_convert` walks the graph once, in order, folding constants
(`fastmnist._onnx_constants`) and turning the ops on run-time tensors (`fastmnist._onnx_tensor_ops`) into the
format's layer list, with transposes, reshapes and flattens folded into the weights' layout and affine maps,
BatchNorm, input normalisation and the output softmax folded by `fastmnist._fold`.

`import_onnx` then runs the model with an independent executor (onnxruntime when installed, else onnx's
reference evaluator) on reference images, and `fastmnist._converted` stores its probabilities in the file and
writes the file only after the engine has reproduced them.

onnx is imported inside the functions, so ``import fastmnist`` stays light.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import _fold
from ._converted import as_unit_images, write_proven
from ._onnx_convert import Converter
from ._onnx_read import read_model
from .errors import OnnxImportError

__all__ = ["OUTPUT_LOGITS", "OUTPUT_LOG_SOFTMAX", "OUTPUT_SOFTMAX", "OnnxConversion", "OnnxImportError",
           "convert_onnx", "import_onnx", "run_executor"]

EXECUTOR_BATCH = 256

OUTPUT_SOFTMAX = _fold.SOFTMAX
OUTPUT_LOG_SOFTMAX = _fold.LOG_SOFTMAX_REPLACED
OUTPUT_LOGITS = _fold.SOFTMAX_APPENDED


@dataclass(frozen=True)
class OnnxConversion:
    """An ONNX model converted to the format: spec (without the reference) and float64 arrays."""
    spec: dict[str, Any]
    arrays: dict[str, np.ndarray]
    model: Any                    # the onnx.ModelProto, checked
    input_shape: tuple[int, ...]  # the ONNX input's shape without the batch axis
    fixed_batch: int | None       # the batch size the ONNX input requires, if it fixes one
    output: str                   # OUTPUT_SOFTMAX, OUTPUT_LOG_SOFTMAX or OUTPUT_LOGITS


def import_onnx(
    source: str | os.PathLike | bytes | Any,
    path: str | os.PathLike,
    *,
    mean: float | None = None,
    std: float | None = None,
    reference_images: np.ndarray | None = None,
) -> Path:
    """Convert the ONNX model ``source`` to the weights file ``path`` and verify it.

    source: a path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``. mean, std: the input
    normalisation the model was trained with (``transforms.Normalize((mean,), (std,))``): the engine then
    takes pixels in [0, 1] (or 0..255) and the normalisation is folded into the file. reference_images:
    ``(N, 28, 28)`` (or ``(N, 784)``) images, uint8 0..255 or floats in [0, 1], ink high; the first 16 are
    stored with the independent executor's probabilities and all N are checked against the engine (within
    1e-5). Without them, 16 fixed pseudo-random images are used.

    Returns the path. Raises ``OnnxImportError`` naming the node and what is not supported, or the parity
    failure; the file is only written (atomically) when the check passes.
    """
    conversion = convert_onnx(source, mean=mean, std=std)
    images = as_unit_images(reference_images, OnnxImportError)
    inputs = _normalised(images, mean, std).reshape(-1, *conversion.input_shape)
    outputs = run_executor(conversion.model, inputs, conversion.fixed_batch)
    probabilities = _probabilities(outputs, conversion.output)
    return write_proven(path, conversion.spec, conversion.arrays, images, probabilities,
                        source="the independent executor's", error=OnnxImportError)


def convert_onnx(source: str | os.PathLike | bytes | Any, *, mean: float | None = None,
                 std: float | None = None) -> OnnxConversion:
    """The format's spec and arrays for an ONNX model, without running it. Raises ``OnnxImportError``."""
    model, where = read_model(source)
    scale, shift = _input_normalisation(mean, std)
    converter = Converter(model, where, scale, shift)
    spec, arrays = converter.convert()
    if mean is not None or std is not None:
        spec["metadata"]["input_normalization"] = {"mean": float(mean or 0.0),
                                                   "std": float(1.0 if std is None else std)}
    return OnnxConversion(spec, arrays, model, converter.input_shape, converter.fixed_batch, converter.output)


def run_executor(model: Any, inputs: np.ndarray, fixed_batch: int | None = None) -> np.ndarray:
    """The ONNX model's outputs ``(N, classes) float64`` for ``inputs`` (``(N, ...)`` float32), computed by
    onnxruntime when installed, else by onnx's reference evaluator. Raises ``OnnxImportError``."""
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    name = "onnxruntime" if onnxruntime is not None else "onnx.reference"
    try:
        if onnxruntime is not None:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                   providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name
            run: Callable[[np.ndarray], Any] = lambda x: session.run(None, {input_name: x})[0]
        else:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(model)
            input_name = evaluator.input_names[0]
            run = lambda x: evaluator.run(None, {input_name: x})[0]
        chunk = fixed_batch or EXECUTOR_BATCH
        outputs = []
        for start in range(0, len(inputs), chunk):
            batch = inputs[start:start + chunk]
            padded = np.concatenate([batch, np.zeros((chunk - len(batch), *batch.shape[1:]), batch.dtype)]) \
                if fixed_batch and len(batch) < chunk else batch
            outputs.append(np.asarray(run(np.ascontiguousarray(padded, np.float32)), np.float64)[:len(batch)])
    except Exception as error:  # each executor has its own exception types for a model it cannot run
        raise OnnxImportError(f"the independent executor ({name}) cannot run the model: "
                              f"{type(error).__name__}: {str(error)[:300]}") from None
    result = np.concatenate(outputs)
    if result.ndim != 2 or len(result) != len(inputs) or not np.isfinite(result).all():
        raise OnnxImportError(f"the independent executor ({name}) returned shape {result.shape} or non-finite "
                              f"values, expected finite ({len(inputs)}, classes)")
    return result


def _input_normalisation(mean: float | None, std: float | None) -> tuple[float, float]:
    """(scale, shift) with model input = scale * pixel + shift, pixel in [0, 1]."""
    mean = 0.0 if mean is None else mean
    std = 1.0 if std is None else std
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
            raise OnnxImportError(f"{name} is {value!r}, expected a finite number")
    if not std > 0:
        raise OnnxImportError(f"std is {std!r}, expected a positive number")
    return 1.0 / std, -mean / std


def _normalised(images: np.ndarray, mean: float | None, std: float | None) -> np.ndarray:
    """What the ONNX model takes: (pixel - mean) / std, float32."""
    return ((images.astype(np.float64) - (mean or 0.0)) / (1.0 if std is None else std)).astype(np.float32)


def _probabilities(outputs: np.ndarray, output: str) -> np.ndarray:
    if output == OUTPUT_SOFTMAX:
        return outputs
    if output == OUTPUT_LOG_SOFTMAX:
        return np.exp(outputs)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
