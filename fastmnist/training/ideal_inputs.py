"""Per-class "ideal inputs": the image in [0, 1] that a model finds most typical of each class.

For class c, start from a flat grey image x0 and do gradient ascent on

    logit_c(x) - lambda_c * ||x||^2,

where logit_c is the model's output before its final softmax (the softmax would reward pushing the other
classes down rather than building up class c). At a maximum the gradient of logit_c equals 2 lambda_c x, so
lambda_c is tied to the class's own gradient scale, lambda_c = max |grad logit_c(x0)| / 2: for a linear
model the optimum is then the classic template w_c / max |w_c| (clipped at 0), and deeper models get the
same scale instead of being pushed into a pattern of saturated pixels. Each step moves x along the gradient
divided by its RMS, with a step that decays linearly to zero; after each step x is clipped to [0, 1], the
range of real inputs. The penalty keeps pixels that do not help the class dark.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

STEPS = 300
START_VALUE = 0.1
FIRST_STEP = 0.05  # pixel units, per unit-RMS gradient


def ideal_inputs(model: keras.Sequential, steps: int = STEPS) -> np.ndarray:
    """``(classes, 28, 28) float32`` in [0, 1]: row c maximises class c's logit minus the L2 penalty.

    model: a built Sequential ending in a softmax (a Dense with softmax activation, or a softmax layer).
    """
    num_classes = int(model.output_shape[-1])
    images = tf.Variable(tf.fill((num_classes, *model.input_shape[1:]), START_VALUE))
    logits_of = _logit_function(model)

    def class_logits() -> tf.Tensor:
        return tf.linalg.diag_part(logits_of(images))  # image c's logit for class c

    with tf.GradientTape() as tape:
        start_logits = class_logits()
    start_gradient = tf.reshape(tape.gradient(start_logits, images), (num_classes, -1))
    penalty_weight = tf.reduce_max(tf.abs(start_gradient), axis=1) / 2.0  # lambda_c

    @tf.function
    def ascend(step_size: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            squares = tf.reduce_sum(tf.reshape(tf.square(images), (num_classes, -1)), axis=1)
            objective = tf.reduce_sum(class_logits() - penalty_weight * squares)
        gradient = tape.gradient(objective, images)
        rms = tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=range(1, len(images.shape)), keepdims=True))
        images.assign(tf.clip_by_value(images + step_size * gradient / (rms + 1e-12), 0.0, 1.0))

    for step in range(steps):
        ascend(tf.constant(FIRST_STEP * (1.0 - step / steps)))
    return images.numpy().reshape(num_classes, 28, 28)


def _logit_function(model: keras.Sequential):
    """The model with its final softmax replaced by the identity: images -> (N, classes) logits."""
    layers = list(model.layers)
    while type(layers[-1]) is keras.layers.Dropout:  # the identity at inference
        layers.pop()
    *body, last = layers

    def logits(x: tf.Tensor) -> tf.Tensor:
        for layer in body:
            x = layer(x, training=False)
        if type(last) is not keras.layers.Dense:
            return x  # `last` is the softmax layer itself
        x = tf.matmul(x, last.kernel)
        return x + last.bias if last.use_bias else x

    return logits
