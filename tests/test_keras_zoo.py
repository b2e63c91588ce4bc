"""Well-known Keras MNIST models, trained briefly on real digits, export and compute what Keras computes.

Each model trains for one epoch on the first 4,000 MNIST training images (seeds fixed), is exported, and on
the 10,000 test digits the engine's probabilities must be within 1e-4 of Keras' with the same accuracy to
0.1 percentage points. MNIST comes from $FASTMNIST_DATA or the shared/data/mnist folder beside the checkout;
without it these tests fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="exporting needs TensorFlow/Keras (pip install tensorflow)")

from fastmnist import format as weights_format  # noqa: E402
from fastmnist import load, load_mnist  # noqa: E402
from fastmnist.cli import main  # noqa: E402
from fastmnist.export import convert_keras, export_keras  # noqa: E402

layers = keras.layers
TRAIN_IMAGES = 4000
PROBABILITY_ATOL = 1e-4
ACCURACY_TOLERANCE = 0.001  # 0.1 percentage points: at most 10 of the 10,000 test digits
MIN_ACCURACY = 0.5  # after one short epoch: five times chance, so predictions vary and the comparison means something
BATCHNORM_MOMENTUM = 0.9  # moving statistics that settle within one short epoch


def mnist_folder() -> Path:
    return Path(os.environ.get("FASTMNIST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_folder())
    return x_train[:TRAIN_IMAGES], y_train[:TRAIN_IMAGES], x_test, y_test


def build_quickstart() -> keras.Model:
    """The TensorFlow beginner quickstart: logits, trained with from_logits=True."""
    return keras.Sequential([
        keras.Input((28, 28)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(10),
    ], name="quickstart")


def build_keras_convnet() -> keras.Model:
    """The Keras MNIST convnet example."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ], name="keras_convnet")


def build_lenet5() -> keras.Model:
    """LeNet-5: tanh, average pooling, the first convolution padded to keep 28x28."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 5, padding="same", activation="tanh"),
        layers.AveragePooling2D(2),
        layers.Conv2D(16, 5, activation="tanh"),
        layers.AveragePooling2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="tanh"),
        layers.Dense(84, activation="tanh"),
        layers.Dense(10, activation="softmax"),
    ], name="lenet5")


def build_functional_convnet() -> keras.Model:
    """A Functional convnet with BatchNorm and a ReLU layer, ending in logits."""
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, use_bias=False)(inputs)
    x = layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="functional_convnet")


def build_rescaling_convnet() -> keras.Model:
    """A model fed raw 0..255 pixels, rescaled by its first layer."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name="rescaling_convnet")


def build_normalization_mlp(train_pixels: np.ndarray) -> keras.Model:
    """A Normalization (one mean and variance for every pixel) adapted on the training images, into an MLP."""
    normalization = layers.Normalization(axis=None)
    normalization.adapt(train_pixels.reshape(-1, 784))
    return keras.Sequential([
        keras.Input((784,)),
        normalization,
        layers.Dense(64, activation="relu"),
        layers.Dense(10),
    ], name="normalization_mlp")


def build_global_pool_head() -> keras.Model:
    """Strided convolutions with BatchNorm, then a global average pool and a Dense head."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 3, use_bias=False), layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM), layers.ReLU(),
        layers.Conv2D(32, 3, strides=2, use_bias=False), layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM),
        layers.ReLU(),
        layers.Conv2D(64, 3, strides=2, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM), layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10, activation="softmax"),
    ], name="global_pool_head")


def build_separable_depthwise() -> keras.Model:
    """A small MobileNet-style stack: zero padding, depthwise and separable convolutions, ReLU6, BatchNorm."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM),
        layers.ReLU(6.0),
        layers.ZeroPadding2D(1),
        layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False),
        layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM),
        layers.ReLU(6.0),
        layers.SeparableConv2D(48, 3, strides=2, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM),
        layers.ReLU(),
        layers.GlobalMaxPooling2D(),
        layers.Dense(10),
    ], name="separable_depthwise")


@dataclass(frozen=True)
class ZooModel:
    build: Callable[..., keras.Model]
    input_max: float = 1.0  # what the model is trained on for full ink
    needs_training_pixels: bool = False
    learning_rate: float = 1e-3  # Adam's; the global-pool models need a faster start to learn in one epoch


ZOO = {
    "quickstart": ZooModel(build_quickstart),
    "keras_convnet": ZooModel(build_keras_convnet),
    "lenet5": ZooModel(build_lenet5),
    "functional_convnet": ZooModel(build_functional_convnet),
    "rescaling": ZooModel(build_rescaling_convnet, input_max=255.0),
    "normalization": ZooModel(build_normalization_mlp, needs_training_pixels=True),
    "global_pool_head": ZooModel(build_global_pool_head, learning_rate=1e-2),
    "separable_depthwise": ZooModel(build_separable_depthwise, learning_rate=1e-2),
}


def trained(entry: ZooModel, x_train: np.ndarray, y_train: np.ndarray) -> keras.Model:
    keras.utils.set_random_seed(0)
    pixels = x_train.astype(np.float32) / 255.0 * entry.input_max
    model = entry.build(pixels) if entry.needs_training_pixels else entry.build()
    logits = convert_keras(model).softmax_appended
    model.compile(optimizer=keras.optimizers.Adam(entry.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits), metrics=["accuracy"])
    model.fit(pixels.reshape((-1, *model.input_shape[1:])), y_train, batch_size=64, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("entry", ZOO.values(), ids=ZOO.keys())
def test_zoo_model_exports_and_matches_keras(tmp_path, mnist, entry):
    x_train, y_train, x_test, y_test = mnist
    model = trained(entry, x_train, y_train)
    path = export_keras(model, tmp_path / "model.npz", reference_images=x_test)

    conversion = convert_keras(model)
    assert conversion.input_max == entry.input_max
    keras_probabilities = conversion.keras_probabilities(x_test.astype(np.float32) / 255.0)
    engine_probabilities = load(path).predict_proba(x_test)
    assert np.abs(engine_probabilities - keras_probabilities).max() <= PROBABILITY_ATOL
    keras_accuracy = np.mean(keras_probabilities.argmax(1) == y_test)
    engine_accuracy = np.mean(engine_probabilities.argmax(1) == y_test)
    assert keras_accuracy >= MIN_ACCURACY
    assert abs(engine_accuracy - keras_accuracy) <= ACCURACY_TOLERANCE

    spec, _ = weights_format.read(path)
    expected_output = "logits, softmax appended" if conversion.softmax_appended else "softmax"
    assert spec["metadata"]["output"] == expected_output and spec["metadata"]["source"] == "keras"
    assert spec["input"]["range"] == [0.0, 1.0]  # every zoo model's preprocessing folds into its first layer


COMMAND_CASES = {
    "quickstart_h5_file": (".h5", ZooModel(build_quickstart), []),
    # Normalization adapted on raw 0..255 pixels: nothing in the model says so, the command is told. (Keras
    # cannot reload a Normalization(axis=None) from .h5, so this one is a .keras file.)
    "raw_pixels_keras_file": (".keras", ZooModel(build_normalization_mlp, input_max=255.0,
                                                 needs_training_pixels=True), ["--input-max", "255"]),
}


@pytest.mark.parametrize("suffix, entry, options", COMMAND_CASES.values(), ids=COMMAND_CASES.keys())
def test_export_command_reads_keras_and_h5_files(tmp_path, mnist, capsys, suffix, entry, options):
    x_train, y_train, x_test, y_test = mnist
    model = trained(entry, x_train, y_train)
    saved = tmp_path / f"model{suffix}"
    model.save(saved)
    out = tmp_path / "model.npz"
    assert main(["export", str(saved), str(out), "--data", str(mnist_folder()), *options]) == 0
    printed = capsys.readouterr().out
    assert f"output: logits, softmax appended; Keras input: pixels times {entry.input_max:g}" in printed
    spec, _ = weights_format.read(out)
    assert spec["metadata"]["output"] == "logits, softmax appended"
    assert spec["metadata"]["export_command"].startswith("fastmnist export ")
    keras_accuracy = float(printed.split("Keras test accuracy: ")[1].split("%")[0]) / 100
    assert keras_accuracy == pytest.approx(spec["metadata"]["test_accuracy"], abs=1e-4)
    assert keras_accuracy >= MIN_ACCURACY
    engine_accuracy = np.mean(load(out).predict(x_test) == y_test)
    assert abs(engine_accuracy - keras_accuracy) <= ACCURACY_TOLERANCE
