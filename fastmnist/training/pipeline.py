"""tf.data input pipelines: shuffled (optionally augmented) training batches and plain evaluation batches."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

MAX_ROTATION_DEGREES = 10.0
MAX_SHIFT_PIXELS = 2.0
MAX_SCALE_CHANGE = 0.1  # zoom factor drawn from [0.9, 1.1]


def to_model_input(images: np.ndarray) -> np.ndarray:
    """``(N, 28, 28) uint8`` pixels 0..255 -> ``(N, 28, 28, 1) float32`` in [0, 1], the models' input."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def training_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, augment: bool
) -> tf.data.Dataset:
    """Batches of ``(images (B, 28, 28, 1) float32, labels (B,) uint8)``, reshuffled every epoch.

    With ``augment``, each image gets its own random rotation, shift and zoom; the random draws come from
    ``seed``, so a run is reproducible.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        batch_seeds = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip(dataset, batch_seeds).map(_augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` in file order, for evaluation."""
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment_batch(batch: tuple[tf.Tensor, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    images, labels = batch
    count = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    draws = tf.random.stateless_uniform((count, 4), seed=seed, minval=-1.0, maxval=1.0)
    angle = draws[:, 0] * (MAX_ROTATION_DEGREES * math.pi / 180.0)
    shift_x = draws[:, 1] * MAX_SHIFT_PIXELS
    shift_y = draws[:, 2] * MAX_SHIFT_PIXELS
    scale = 1.0 + draws[:, 3] * MAX_SCALE_CHANGE
    # The output pixel p comes from input pixel R^T (p - c - t) / s + c: a zoom by s and rotation R about
    # the image centre c, then a shift t. The transform op wants that output -> input map as 8 numbers.
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    moved_x, moved_y = centre_x + shift_x, centre_y + shift_y
    zeros = tf.zeros_like(angle)
    transforms = tf.stack(
        [
            cos, sin, centre_x - cos * moved_x - sin * moved_y,
            -sin, cos, centre_y + sin * moved_x - cos * moved_y,
            zeros, zeros,
        ],
        axis=1,
    )  # fmt: skip
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=[height, width],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return warped, labels
