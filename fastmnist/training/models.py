"""The shipped models: one named builder each, plus the training recipe that reaches its accuracy.

Every builder returns an uncompiled ``keras.Sequential`` taking ``(N, 28, 28, 1) float32`` pixels in [0, 1]
and ending in a softmax over the 10 digits, made only of layers the exporter supports (docs/FORMAT.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from .pca import principal_components

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
PCA_COMPONENTS = 154  # keeps 95% of the pixel variance of the MNIST training set


def build_softmax() -> keras.Sequential:
    """Multinomial logistic regression: 784 pixels -> Dense(10) softmax."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="logits"),
        ],
        name="softmax",
    )


def build_mlp1024() -> keras.Sequential:
    """784 -> Dense(1024) relu -> Dense(10) softmax."""
    return _relu_mlp(1024, name="mlp1024")


def build_mlp300() -> keras.Sequential:
    """784 -> Dense(300) relu -> Dense(10) softmax."""
    return _relu_mlp(300, name="mlp300")


def build_mlp_bn_elu() -> keras.Sequential:
    """784 -> Dense(300) -> BatchNorm -> ELU -> Dense(100) -> BatchNorm -> ELU -> Dense(10) softmax."""
    return keras.Sequential(
        [keras.Input(IMAGE_SHAPE), keras.layers.Flatten(name="flatten"), *_bn_elu_head()],
        name="mlp_bn_elu",
    )


def build_pca_mlp_bn_elu(train_images: np.ndarray) -> keras.Sequential:
    """The ``mlp_bn_elu`` head on the first 154 principal components of ``train_images``.

    train_images: ``(N, 28, 28, 1) float32`` in [0, 1]. The projection ``(x - mean) @ components`` is a
    frozen Dense(154) layer (kernel = components, bias = -mean @ components), so the model still takes
    raw pixels and exports like any other.
    """
    mean, components = principal_components(train_images, PCA_COMPONENTS)
    projection = keras.layers.Dense(PCA_COMPONENTS, name="pca", trainable=False)
    model = keras.Sequential(
        [keras.Input(IMAGE_SHAPE), keras.layers.Flatten(name="flatten"), projection, *_bn_elu_head()],
        name="pca_mlp_bn_elu",
    )
    projection.set_weights([components, -mean @ components])
    return model


def build_cnn() -> keras.Sequential:
    """Two 5x5 SAME conv + 2x2 max-pool stages (32, 64 filters) -> Dense(1024) relu -> Dropout(0.5) -> 10."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, strides=2, padding="same", name="pool1"),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, strides=2, padding="same", name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(1024, activation="relu", name="fc1"),
            keras.layers.Dropout(0.5, name="dropout"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="logits"),
        ],
        name="cnn",
    )


def _relu_mlp(hidden_units: int, name: str) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(hidden_units, activation="relu", name="hidden"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="logits"),
        ],
        name=name,
    )


def _bn_elu_head() -> list[keras.layers.Layer]:
    # The Dense layers stay linear so the exporter can fold each BatchNorm into the Dense before it.
    return [
        keras.layers.Dense(300, name="fc1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ELU(name="elu1"),
        keras.layers.Dense(100, name="fc2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.ELU(name="elu2"),
        keras.layers.Dense(NUM_CLASSES, activation="softmax", name="logits"),
    ]


@dataclass(frozen=True)
class Recipe:
    """How to build and train one named model.

    build takes the ``(N, 28, 28, 1) float32`` training images (only the PCA model looks at them).
    The learning rate starts at ``learning_rate`` and follows a cosine decay to zero over all epochs (Adam).
    augment: random small rotations, shifts and scalings of each training batch (see ``pipeline``).
    """

    build: Callable[[np.ndarray], keras.Sequential]
    epochs: int
    batch_size: int
    learning_rate: float
    augment: bool = False


RECIPES: dict[str, Recipe] = {
    # The linear model underfits rather than overfits (train and test accuracy within 0.4%): no augmentation.
    "softmax": Recipe(lambda _: build_softmax(), epochs=15, batch_size=128, learning_rate=2e-3),
    # Without augmentation the MLPs reach 100% training accuracy within 20 epochs and stop improving on
    # the test set; with it they keep learning for 30.
    "mlp1024": Recipe(lambda _: build_mlp1024(), epochs=30, batch_size=128, learning_rate=1e-3, augment=True),
    "mlp300": Recipe(lambda _: build_mlp300(), epochs=30, batch_size=128, learning_rate=1e-3, augment=True),
    "mlp_bn_elu": Recipe(lambda _: build_mlp_bn_elu(), epochs=30, batch_size=128, learning_rate=1e-3, augment=True),
    "pca_mlp_bn_elu": Recipe(build_pca_mlp_bn_elu, epochs=30, batch_size=128, learning_rate=1e-3, augment=True),
    "cnn": Recipe(lambda _: build_cnn(), epochs=15, batch_size=128, learning_rate=1e-3, augment=True),
}
