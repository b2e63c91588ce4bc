"""One training run: data, build, fit (TensorBoard logs), evaluate, save the Keras model, export."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import tensorflow as tf

from ..datasets import load_mnist
from ..export import export_keras
from . import pipeline
from .device import select_device
from .models import RECIPES

EVAL_BATCH_SIZE = 1000


@dataclass(frozen=True)
class TrainingResult:
    """What a run produced: test accuracy (fraction), the saved Keras model, the weights file, fit time (s)."""

    test_accuracy: float
    keras_path: Path
    weights_path: Path
    fit_seconds: float


def train(
    model_name: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    logdir: str | os.PathLike | None = None,
    seed: int = 0,
    command: str | None = None,
    device: str = "auto",
) -> TrainingResult:
    """Train the named model on MNIST and export it.

    epochs / batch_size default to the model's recipe; data is an MNIST folder (see ``load_mnist``); out is
    the weights file (default ``weights/<model_name>.npz``); logdir the TensorBoard folder (default
    ``runs/<model_name>-<UTC time>/logs``). The Keras model is saved as ``<model_name>.keras`` in the run
    folder (the parent of logdir), never beside the shipped weights, with the training record (the
    metadata: accuracy, epochs, seed, command) as ``<model_name>.json`` beside it. device is one of
    ``DEVICES`` (see ``device.select_device``); the run prints what it trains on and records it.
    """
    if model_name not in RECIPES:
        raise ValueError(f"unknown model '{model_name}', expected one of {', '.join(RECIPES)}")
    recipe = RECIPES[model_name]
    epochs = recipe.epochs if epochs is None else epochs
    batch_size = recipe.batch_size if batch_size is None else batch_size
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs is {epochs} and batch size {batch_size}, expected both >= 1")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    logdir = Path(logdir) if logdir is not None else Path("runs") / f"{model_name}-{stamp}" / "logs"
    out = Path(out) if out is not None else Path("weights") / f"{model_name}.npz"

    training_device = select_device(device)  # first: TensorFlow must not have initialised its devices yet
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    print(f"training '{model_name}' on {training_device}", flush=True)

    (x_train, y_train), (x_test, y_test) = load_mnist(data)
    train_images, test_images = pipeline.to_model_input(x_train), pipeline.to_model_input(x_test)
    model = recipe.build(train_images)
    steps_per_epoch = -(-len(train_images) // batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=epochs * steps_per_epoch)
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary()

    # The test set is only watched (TensorBoard's validation curves); nothing is chosen or stopped on it.
    test_data = pipeline.evaluation_dataset(test_images, y_test, EVAL_BATCH_SIZE)
    started = time.perf_counter()
    model.fit(
        pipeline.training_dataset(train_images, y_train, batch_size, seed, recipe.augment),
        epochs=epochs,
        validation_data=test_data,
        callbacks=[keras.callbacks.TensorBoard(log_dir=str(logdir))],
        verbose=1 if os.isatty(1) else 2,
    )
    fit_seconds = time.perf_counter() - started
    _, test_accuracy = model.evaluate(test_data, verbose=0)
    print(f"test accuracy: {test_accuracy:.2%} after {epochs} epochs ({fit_seconds:.0f} s)", flush=True)

    keras_path = logdir.parent / f"{model_name}.keras"
    keras_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(keras_path)
    print(f"Keras model saved to {keras_path}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model": model_name,
        "test_accuracy": round(float(test_accuracy), 6),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "fit_seconds": round(fit_seconds, 1),
        "training_device": training_device,
    }
    if command is not None:
        metadata["training_command"] = command
    # Kept beside the Keras model so that a later `fastmnist export` of it records how it was trained.
    keras_path.with_suffix(".json").write_text(json.dumps(metadata, indent=1) + "\n")
    export_keras(model, out, reference_images=x_test, metadata=metadata)
    print(f"weights exported to {out} (parity with Keras checked on {len(x_test)} test images)", flush=True)
    return TrainingResult(float(test_accuracy), keras_path, out, fit_seconds)

