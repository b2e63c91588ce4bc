"""The ``fastmnist`` command: train, export, import, export-c, quantize, eval, predict, gui, info.

Each subcommand imports what it needs when it runs, so ``eval``/``predict`` never load TensorFlow and
``--help`` is instant. Expected failures (a bad file, missing data, an optional package that is not
installed) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .training import DEVICES, MODEL_NAMES

DEFAULT_MODEL = "cnn"
EXIT_ERROR = 2
INSTALL_HINTS = {
    "train": "; install with: pip install 'fastmnist[train]'",
    "export": "; install with: pip install 'fastmnist[train]'",
    "import": "; install with: pip install 'fastmnist[onnx]'",
    "predict": "; install with: pip install 'fastmnist[gui]'",
    "gui": "; install with: pip install 'fastmnist[gui]'",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        return args.run(args, argv)
    except ImportError as error:
        hint = INSTALL_HINTS.get(args.command, "")
        print(f"fastmnist {args.command}: a package it needs cannot be imported ({error}){hint}", file=sys.stderr)
    except (OSError, ValueError) as error:  # the project's errors (weights, data, export) are ValueErrors
        print(f"fastmnist {args.command}: {error}", file=sys.stderr)
    return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastmnist", description="Fast CPU inference for MNIST networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model with TensorFlow and export it",
        description="Train one of the named models on MNIST (TensorBoard logs, Keras model in the run folder), "
        "print its test accuracy and export it to a weights file.")
    train.add_argument("model", choices=MODEL_NAMES, metavar="MODEL", help=f"one of: {', '.join(MODEL_NAMES)}")
    train.add_argument("--epochs", type=int, help="number of epochs (default: the model's recipe)")
    train.add_argument("--batch-size", type=int, help="batch size (default: the model's recipe)")
    train.add_argument("--data", metavar="DIR", help="folder with the four MNIST IDX files")
    train.add_argument("--out", metavar="FILE", help="weights file to write (default: weights/MODEL.npz)")
    train.add_argument("--logdir", metavar="DIR",
                       help="TensorBoard log folder (default: runs/MODEL-<UTC time>/logs); the Keras model "
                       "is saved in its parent folder")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--device", choices=DEVICES, default="auto",
                       help="auto (default): TensorFlow's first GPU if it sees one, else the CPU; cpu: hide the "
                       "GPUs from TensorFlow; gpu: refuse to run without one")
    train.set_defaults(run=_train)

    export = commands.add_parser(
        "export", help="export a saved Keras model to a weights file",
        description="Convert a saved Keras model (.keras or .h5; Sequential, or a Functional chain of layers) to "
        "the fastmnist weights format, storing MNIST test images with Keras' probabilities, and check that the "
        "engine reproduces them. A model that outputs logits gets a softmax appended (a log_softmax output is "
        "replaced by a softmax). The training record that `fastmnist train` writes beside the model (same name, "
        ".json) goes into the metadata.")
    export.add_argument("keras_file", metavar="KERAS_FILE", help="a saved Keras model (.keras or .h5)")
    export.add_argument("out", metavar="OUT.npz", help="weights file to write")
    export.add_argument("--data", metavar="DIR", help="folder with the four MNIST IDX files")
    export.add_argument("--input-max", type=float, metavar="VALUE",
                        help="what the Keras model takes for full ink: 1 (pixels in [0, 1]) or 255 (raw pixels); "
                        "default: 255 when it starts with a Rescaling by 1/100 or less (1/255, 1/127.5), else 1")
    export.set_defaults(run=_export)

    onnx_import = commands.add_parser(
        "import", help="import an ONNX model (e.g. from torch.onnx.export) to a weights file",
        description="Convert an ONNX model to the fastmnist weights format, storing MNIST test images with the "
        "probabilities an independent executor (onnxruntime) computes, and check that the engine reproduces "
        "them on all 10,000 test images. --mean/--std: the input normalisation the model was trained with "
        "(e.g. --mean 0.1307 --std 0.3081), folded into the file so the engine still takes pixels in [0, 1].")
    onnx_import.add_argument("onnx_file", metavar="MODEL.onnx", help="an ONNX model")
    onnx_import.add_argument("out", metavar="OUT.npz", help="weights file to write")
    onnx_import.add_argument("--mean", type=float, help="the mean subtracted from pixels in [0, 1] (default: 0)")
    onnx_import.add_argument("--std", type=float, help="the deviation they are divided by (default: 1)")
    onnx_import.add_argument("--data", metavar="DIR", help="folder with the four MNIST IDX files")
    onnx_import.set_defaults(run=_import)

    export_c = commands.add_parser(
        "export-c", help="write a model as C source (NAME.h, NAME.c) for programs without Python",
        description="Write the model as a C99 header and source with the engine's own kernels and the weights "
        "as constant arrays: no allocation, no I/O, AVX2 and NEON fast paths where the compiler targets them.")
    export_c.add_argument("weights", metavar="WEIGHTS", help="a weights file or a shipped model name")
    export_c.add_argument("outdir", metavar="OUTDIR", help="folder to write NAME.h and NAME.c into")
    export_c.add_argument("--name", help="the C name: file names and function prefix (default: the weights "
                          "file's name without .npz)")
    export_c.set_defaults(run=_export_c)

    evaluate = commands.add_parser(
        "eval", help="accuracy and confusion matrix on the MNIST test set",
        description="Classify the 10,000 MNIST test images with the engine (no TensorFlow) and print the "
        "accuracy and the confusion matrix.")
    evaluate.add_argument("weights", metavar="WEIGHTS", help="a weights file or a shipped model name")
    evaluate.add_argument("--data", metavar="DIR", help="folder with the four MNIST IDX files")
    evaluate.set_defaults(run=_eval)

    predict = commands.add_parser(
        "predict", help="classify image files",
        description="Print the most likely digit and the probability of each digit for each image file.")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|FILE",
                         help=f"a shipped model name or a weights file (default: {DEFAULT_MODEL})")
    predict.set_defaults(run=_predict)

    quantize = commands.add_parser(
        "quantize", help="quantize a float weights file to int8",
        description="Post-training static quantization: int8 kernels (per output channel), uint8 activations "
        "calibrated on MNIST training digits, float softmax. Stores the NumPy integer reference's outputs on "
        "reference images and checks that the engine reproduces them.")
    quantize.add_argument("source", metavar="IN.npz", help="a float32 weights file or a shipped model name")
    quantize.add_argument("out", metavar="OUT.npz", help="int8 weights file to write")
    quantize.add_argument("--data", metavar="DIR", help="folder with the four MNIST IDX files")
    quantize.add_argument("--calibration-images", type=int, metavar="N", default=None,
                          help="training digits to calibrate on (default: 512)")
    quantize.set_defaults(run=_quantize)

    gui = commands.add_parser("gui", help="open the drawing app", description="Draw digits and watch the model.")
    gui.add_argument("--model", metavar="NAME|FILE", help="a shipped model name or a weights file")
    gui.set_defaults(run=_gui)

    info = commands.add_parser("info", help="show the engine's build and CPU configuration",
                               description="Show how the engine was built and which kernels it uses.")
    info.set_defaults(run=_info)
    return parser


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from .training.train import train

    train(args.model, epochs=args.epochs, batch_size=args.batch_size, data=args.data, out=args.out,
          logdir=args.logdir, seed=args.seed, command=shlex.join(["fastmnist", *argv]), device=args.device)
    return 0


def _export(args: argparse.Namespace, argv: list[str]) -> int:
    import keras

    from .datasets import load_mnist
    from .export import convert_keras, export_keras

    model = keras.saving.load_model(args.keras_file, compile=False)  # inference needs no loss or optimiser
    _, (x_test, y_test) = load_mnist(args.data)
    conversion = convert_keras(model, input_max=args.input_max)
    probabilities = conversion.keras_probabilities(x_test.astype(np.float32) / 255.0)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y_test))
    print(f"Keras test accuracy: {accuracy:.2%}")
    # `fastmnist train` leaves a training record beside the Keras model; keep what it says.
    record = Path(args.keras_file).with_suffix(".json")
    metadata = json.loads(record.read_text()) if record.is_file() else {}
    metadata.update(test_accuracy=round(accuracy, 6), export_command=shlex.join(["fastmnist", *argv]))
    path = export_keras(model, args.out, reference_images=x_test, metadata=metadata, input_max=conversion.input_max)
    print(f"exported to {path} (parity with Keras checked on {len(x_test)} test images)")
    print(f"output: {conversion.spec['metadata']['output']}; Keras input: pixels times {conversion.input_max:g}")
    return 0


def _import(args: argparse.Namespace, argv: list[str]) -> int:
    from . import load
    from .datasets import load_mnist
    from .onnx_import import import_onnx

    _, (x_test, y_test) = load_mnist(args.data)
    path = import_onnx(args.onnx_file, args.out, mean=args.mean, std=args.std, reference_images=x_test)
    model = load(path)
    accuracy = float(np.mean(model.predict(x_test) == y_test))
    print(f"imported to {path} ({model.metadata['output']}; parity with the independent executor checked on "
          f"{len(x_test)} test images); test accuracy {accuracy:.2%}")
    return 0


def _export_c(args: argparse.Namespace, argv: list[str]) -> int:
    from ._export_c import export_c

    header, source = export_c(args.weights, args.outdir, name=args.name)
    print(f"wrote {header} and {source}")
    return 0


def _eval(args: argparse.Namespace, argv: list[str]) -> int:
    from . import load
    from .datasets import load_mnist

    model = load(args.weights)
    _, (x_test, y_test) = load_mnist(args.data)
    predicted = model.predict(x_test)
    correct = int(np.sum(predicted == y_test))
    print(f"{args.weights}: test accuracy {correct / len(y_test):.2%} ({correct}/{len(y_test)} correct)\n")
    print(format_confusion_matrix(confusion_matrix(y_test, predicted)))
    return 0


def _predict(args: argparse.Namespace, argv: list[str]) -> int:
    from . import load
    from .images import read_image
    from .preprocess import to_mnist

    model = load(args.model)
    images = np.stack([to_mnist(read_image(path)) for path in args.images])
    for path, probabilities in zip(args.images, model.predict_proba(images)):
        best = int(probabilities.argmax())
        spread = "  ".join(f"{digit}:{p:.3f}" for digit, p in enumerate(probabilities))
        print(f"{path}: {best} ({probabilities[best]:.1%})   {spread}")
    return 0


def _quantize(args: argparse.Namespace, argv: list[str]) -> int:
    from . import load
    from .datasets import load_mnist
    from .quantize import DEFAULT_CALIBRATION_IMAGES, calibration_set, quantize

    count = DEFAULT_CALIBRATION_IMAGES if args.calibration_images is None else args.calibration_images
    (x_train, _), (x_test, y_test) = load_mnist(args.data)
    path = quantize(args.source, args.out, calibration_set(x_train, count), test_set=(x_test, y_test))
    accuracy = load(path).metadata["test_accuracy"]
    print(f"quantized to {path} (calibrated on {count} training digits; the engine reproduces the stored "
          f"integer reference outputs); int8 test accuracy {accuracy:.2%}")
    return 0


def _gui(args: argparse.Namespace, argv: list[str]) -> int:
    from .gui.app import main as run_app

    return run_app(model=args.model)


def _info(args: argparse.Namespace, argv: list[str]) -> int:
    from . import show_config

    show_config()
    return 0


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """``(classes, classes) int64``: entry [t, p] counts images of true class t predicted as p."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def format_confusion_matrix(counts: np.ndarray) -> str:
    """The matrix as a text table: a row per true class, a column per predicted class, recall at the end."""
    classes = range(len(counts))
    width = max(5, len(str(counts.max())) + 1)
    lines = ["true \\ predicted".ljust(17) + "".join(f"{c:>{width}}" for c in classes) + "   recall"]
    for true_class in classes:
        row = counts[true_class]
        recall = row[true_class] / row.sum() if row.sum() else float("nan")
        lines.append(f"{true_class:<17}" + "".join(f"{n:>{width}}" for n in row) + f"   {recall:7.2%}")
    return "\n".join(lines)
