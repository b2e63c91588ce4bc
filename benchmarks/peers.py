"""The runtimes the benchmark compares, each built from one fastmnist weights file.

Every runtime is a `Predict`: images (n, 28, 28) float32 in [0, 1] -> probabilities (n, classes) float32,
called as a Python user would call that library. Peer packages are imported only when their runtime is built,
so a missing one costs a note instead of the whole run, and a process measuring one runtime's memory loads
nothing else.

    fastmnist     fastmnist.load(weights, num_threads).predict_proba
    LiteRT        ai_edge_litert Interpreter (default XNNPACK delegate) on a .tflite converted from the Keras model
    ONNX Runtime  an InferenceSession on the graph of onnx_graph.py, all graph optimisations
    TensorFlow    the Keras model inside a tf.function with a fixed input signature
    NumPy         fastmnist.reference.forward in float32 (einsum and BLAS)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Callable

import numpy as np

RUNTIMES = ("fastmnist", "LiteRT", "ONNX Runtime", "TensorFlow", "NumPy")

Predict = Callable[[np.ndarray], np.ndarray]

# fastmnist's layer types -> the Keras layers they describe; the layer fields are named after Keras' arguments.
KERAS_LAYERS = {"dense": "Dense", "conv2d": "Conv2D", "maxpool2d": "MaxPooling2D", "batchnorm": "BatchNormalization",
                "activation": "Activation", "flatten": "Flatten", "dropout": "Dropout"}


class PeerUnavailable(RuntimeError):
    """A runtime cannot be built here (package missing, model not convertible); the message says why."""


def thread_environment(threads: int) -> dict[str, str]:
    """Variables that size process-wide thread pools (NumPy's BLAS, OpenMP); they must be set before import."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def model_spec(weights: Path):
    from fastmnist import format, spec

    return spec.parse(*format.read(weights), str(weights))


def keras_model_from_weights(weights: Path):
    """The network of a weights file as a keras.Sequential with its trained weights."""
    import keras

    described = model_spec(weights)
    layers = [keras.Input(shape=described.input_shape)]
    lo, hi = described.input_range
    if (lo, hi) != (0.0, 1.0):
        layers.append(keras.layers.Rescaling(hi - lo, offset=lo))
    layers += [getattr(keras.layers, KERAS_LAYERS[p.layer.type])(**_keras_arguments(p.layer))
               for p in described.layers]
    model = keras.Sequential(layers)
    for planned in described.layers:
        if planned.params:  # spec.parse keeps each layer's arrays in Keras' weight order
            model.get_layer(planned.layer.name).set_weights(list(planned.params.values()))
    return model


def _keras_arguments(layer) -> dict:
    """A layer's fields as Keras arguments; an activation by its name (those with parameters have none here)."""
    arguments = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)}
    if "activation" in arguments:
        spelling = arguments["activation"].to_json()
        if not isinstance(spelling, str):
            raise NotImplementedError(f"layer '{layer.name}': activation {spelling} has no Keras name")
        arguments["activation"] = spelling
    return arguments


def peer_file(folder: Path, weights: Path, runtime: str) -> Path:
    """Where the converted model of `weights` for `runtime` (LiteRT or ONNX Runtime) is kept."""
    return folder / f"{weights.stem}.{'tflite' if runtime == 'LiteRT' else 'onnx'}"


def write_peer_files(weights: Path, folder: Path) -> dict[str, str]:
    """Convert `weights` for LiteRT (.tflite) and ONNX Runtime (.onnx) into `folder`; runtime -> why it failed."""
    failures = {}
    try:
        peer_file(folder, weights, "LiteRT").write_bytes(_tflite_bytes(weights))
    except ImportError as e:
        failures["LiteRT"] = f"no .tflite: {_missing(e)}"
    try:
        from onnx_graph import onnx_model

        peer_file(folder, weights, "ONNX Runtime").write_bytes(onnx_model(model_spec(weights)).SerializeToString())
    except ImportError as e:
        failures["ONNX Runtime"] = f"no .onnx: {_missing(e)}"
    except NotImplementedError as e:
        failures["ONNX Runtime"] = f"no .onnx: {e}"
    return failures


def _missing(error: ImportError) -> str:
    return f"{error.name.split('.')[0]} is not installed" if error.name else str(error)


def _tflite_bytes(weights: Path) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model_from_weights(weights))  # fp32, no quantisation
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel's signature
        return converter.convert()


def build_runtime(runtime: str, weights: Path, threads: int, peer_files: Path) -> Predict:
    """`runtime` (one of RUNTIMES) for `weights` at `threads` threads. Raises PeerUnavailable."""
    builders = {"fastmnist": _fastmnist, "LiteRT": _litert, "ONNX Runtime": _onnxruntime,
                "TensorFlow": _tensorflow, "NumPy": _numpy}
    source = peer_file(peer_files, weights, runtime) if runtime in ("LiteRT", "ONNX Runtime") else weights
    if not source.exists():
        raise PeerUnavailable(f"{source} was not written")
    try:
        return builders[runtime](source, threads)
    except ImportError as e:
        raise PeerUnavailable(_missing(e)) from None
    except Exception as e:
        if runtime == "fastmnist":  # the subject of the benchmark must work; a peer that fails is only noted
            raise
        raise PeerUnavailable(f"{type(e).__name__}: {e}") from None


def _fastmnist(weights: Path, threads: int) -> Predict:
    import fastmnist

    return fastmnist.load(weights, num_threads=threads).predict_proba


def _numpy(weights: Path, threads: int) -> Predict:
    from fastmnist import reference

    described = model_spec(weights)  # NumPy's threads are BLAS's, fixed by thread_environment
    return lambda images: reference.forward(described, images, np.float32)


def _litert(tflite: Path, threads: int) -> Predict:
    from ai_edge_litert.interpreter import Interpreter

    content = tflite.read_bytes()
    prepared = {}  # batch size -> (interpreter, input index, output index, input shape); resizing is slow

    def prepare(batch: int):
        interpreter = Interpreter(model_content=content, num_threads=threads)
        source, = interpreter.get_input_details()
        shape = (batch, *source["shape_signature"][1:])
        interpreter.resize_tensor_input(source["index"], shape)
        interpreter.allocate_tensors()
        return interpreter, source["index"], interpreter.get_output_details()[0]["index"], shape

    def predict(images: np.ndarray) -> np.ndarray:
        if len(images) not in prepared:
            prepared[len(images)] = prepare(len(images))
        interpreter, source, result, shape = prepared[len(images)]
        interpreter.set_tensor(source, images.reshape(shape))
        interpreter.invoke()
        return interpreter.get_tensor(result)

    return predict


def _onnxruntime(onnx_file: Path, threads: int) -> Predict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    source, = session.get_inputs()
    shape = tuple(source.shape[1:])
    return lambda images: session.run(None, {source.name: images.reshape(-1, *shape)})[0]


def _tensorflow(weights: Path, threads: int) -> Predict:
    import tensorflow as tf

    # TensorFlow sizes its thread pools once per process, so a process serves one thread count.
    if tf.config.threading.get_intra_op_parallelism_threads() != threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras_model_from_weights(weights)
    shape = tuple(model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32)])
    def call(x):
        return model(x, training=False)

    return lambda images: call(images.reshape(-1, *shape)).numpy()
