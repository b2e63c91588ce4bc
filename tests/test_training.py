"""The model builders, the input pipeline, the PCA projection, ideal inputs, and the shipped weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fastmnist.training import MODEL_NAMES
from fastmnist.training.pca import principal_components

REPO = Path(__file__).parents[1]
REAL_MNIST = Path(os.environ.get("FASTMNIST_DATA") or REPO.parent / "shared/data/mnist")
# Test accuracy each shipped model must reach on the 10,000 MNIST test images, measured by the engine.
ACCURACY_FLOORS = {
    "softmax": 0.920,
    "mlp1024": 0.980,
    "mlp300": 0.980,
    "mlp_bn_elu": 0.982,
    "pca_mlp_bn_elu": 0.978,
    "cnn": 0.993,
}
NEEDS_TF = "training needs TensorFlow/Keras (pip install tensorflow)"


def digit_like_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(count, 28, 28, 1) float32`` images whose label is which of 10 places holds a bright bar."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.uniform(0.0, 0.2, (count, 28, 28, 1)).astype(np.float32)
    for image, label in zip(images, labels):
        row = 2 + 2 * int(label)
        image[row : row + 3, 4:24] = 1.0
    return images, labels


def test_model_names_match_the_recipes():
    pytest.importorskip("keras", reason=NEEDS_TF)
    from fastmnist.training.models import RECIPES

    assert tuple(RECIPES) == MODEL_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builder_learns_in_a_few_steps(name):
    keras = pytest.importorskip("keras", reason=NEEDS_TF)
    from fastmnist.training.models import RECIPES

    keras.utils.set_random_seed(0)
    images, labels = digit_like_images(256)
    model = RECIPES[name].build(images)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    before = model.evaluate(images, labels, verbose=0)
    model.fit(images, labels, batch_size=32, epochs=3, verbose=0)
    after = model.evaluate(images, labels, verbose=0)
    assert after < 0.5 * before, f"{name}: loss went from {before:.3f} to only {after:.3f}"
    probabilities = model.predict(images[:4], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_pca_projection_is_frozen_and_exact():
    keras = pytest.importorskip("keras", reason=NEEDS_TF)
    from fastmnist.training.models import PCA_COMPONENTS, build_pca_mlp_bn_elu

    images, _ = digit_like_images(300)
    model = build_pca_mlp_bn_elu(images)
    projection = model.get_layer("pca")
    assert not projection.trainable
    mean, components = principal_components(images, PCA_COMPONENTS)
    flat = images.reshape(len(images), -1)
    expected = (flat - mean) @ components
    np.testing.assert_allclose(keras.ops.convert_to_numpy(projection(flat)), expected, atol=1e-4)


def test_principal_components_are_orthonormal_and_ordered():
    rng = np.random.default_rng(0)
    # Data with known variances 9, 4, 1 along three random orthonormal directions of a 6-D space.
    directions, _ = np.linalg.qr(rng.normal(size=(6, 3)))
    data = (rng.normal(size=(5000, 3)) * [3.0, 2.0, 1.0]) @ directions.T + 5.0
    mean, components = principal_components(data, 3)
    np.testing.assert_allclose(mean, 5.0, atol=0.1)
    np.testing.assert_allclose(components.T @ components, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.abs(components.T @ directions), np.eye(3), atol=0.05)
    with pytest.raises(ValueError, match="num_components is 7, expected 1..6"):
        principal_components(data, 7)


def test_augmentation_is_reproducible_and_keeps_the_digit():
    pytest.importorskip("tensorflow", reason=NEEDS_TF)
    from fastmnist.training.pipeline import training_dataset

    images = np.zeros((64, 28, 28, 1), np.float32)
    images[:, 10:18, 12:16] = 1.0  # a bar at the centre
    labels = np.zeros(64, np.uint8)

    def first_batch(seed: int) -> np.ndarray:
        return next(iter(training_dataset(images, labels, 64, seed=seed, augment=True)))[0].numpy()

    first, again, other = first_batch(1), first_batch(1), first_batch(2)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.1
    assert not np.allclose(first, images)
    # Each image moved by at most the shift plus what a 10 degree turn and 10 % zoom add near the centre.
    y, x = np.mgrid[0:28, 0:28]
    ink = first[..., 0].sum(axis=(1, 2))
    centre_y = (first[..., 0] * y).sum(axis=(1, 2)) / ink
    centre_x = (first[..., 0] * x).sum(axis=(1, 2)) / ink
    assert np.abs(centre_y - 13.5).max() < 3.0 and np.abs(centre_x - 13.5).max() < 3.0
    assert np.all((ink > 0.7 * 32) & (ink < 1.4 * 32))


def test_ideal_inputs_of_a_linear_model_are_the_known_optimum():
    keras = pytest.importorskip("keras", reason=NEEDS_TF)
    from fastmnist.training.ideal_inputs import ideal_inputs

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    kernel = np.random.default_rng(0).uniform(-0.3, 0.3, (784, 10)).astype(np.float32)
    model.layers[-1].set_weights([kernel, np.zeros(10, np.float32)])
    ideal = ideal_inputs(model)
    assert ideal.shape == (10, 28, 28) and ideal.dtype == np.float32
    # For logit w.x the penalty weight is max|w| / 2, and the optimum of w.x - (max|w| / 2) |x|^2 over
    # [0, 1] is clip(w / max|w|, 0, 1): the class template.
    expected = np.clip(kernel.T / np.abs(kernel).max(axis=0)[:, None], 0.0, 1.0).reshape(10, 28, 28)
    np.testing.assert_allclose(ideal, expected, atol=0.02)


def test_training_runs_repeat_exactly(tmp_path):
    pytest.importorskip("tensorflow", reason=NEEDS_TF)
    from test_datasets import write_fake_mnist

    from fastmnist import format as weights_format
    from fastmnist.training.train import train

    write_fake_mnist(tmp_path / "data", num_train=64, num_test=16)

    def trained_arrays(run: str, seed: int) -> dict[str, np.ndarray]:
        train("mlp300", epochs=1, batch_size=16, data=tmp_path / "data", out=tmp_path / f"{run}.npz",
              logdir=tmp_path / run / "logs", seed=seed)
        return weights_format.read(tmp_path / f"{run}.npz")[1]

    first, again, other = trained_arrays("first", 0), trained_arrays("again", 0), trained_arrays("other", 1)
    for name in ("hidden/kernel", "logits/bias"):
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"the MNIST files are not at {REAL_MNIST} (set FASTMNIST_DATA)")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_weights_reach_their_accuracy_floor(name):
    from fastmnist import load
    from fastmnist.datasets import load_mnist

    model = load(REPO / "weights" / f"{name}.npz")
    _, (x_test, y_test) = load_mnist(REAL_MNIST)
    accuracy = float(np.mean(model.predict(x_test) == y_test))
    assert accuracy >= ACCURACY_FLOORS[name]
    # The accuracy Keras measured when it was trained is what the engine measures now.
    assert abs(model.metadata["test_accuracy"] - accuracy) <= 2e-4
