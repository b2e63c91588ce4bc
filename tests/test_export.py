"""The Keras exporter: every supported layer and option reproduces Keras, and everything else is refused."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="exporting needs TensorFlow/Keras (pip install tensorflow)")

from fastmnist import format as weights_format  # noqa: E402
from fastmnist import load  # noqa: E402
from fastmnist.export import REFERENCE_ATOL, ExportError, convert_layers, export_keras  # noqa: E402

layers = keras.layers


def random_images(count: int, seed: int = 0) -> np.ndarray:
    """``(count, 28, 28) float32`` in [0, 1]: smooth blobs on blank paper, closer to digits than noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28]
    images = np.zeros((count, 28, 28), np.float32)
    for image in images:
        for _ in range(4):
            cy, cx, radius = rng.uniform(6, 22), rng.uniform(6, 22), rng.uniform(2, 5)
            image += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    return np.clip(images, 0.0, 1.0)


def with_random_batchnorm_statistics(model: keras.Sequential, seed: int = 0) -> keras.Sequential:
    """Give every BatchNormalization layer non-trivial gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.uniform(-0.3, 0.3, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.uniform(-0.3, 0.3, channels))
    return model


def conv_model() -> keras.Sequential:
    """VALID stride-2 conv (28 -> 12), folded and unfolded BatchNorm, overhanging SAME pool, ELU, ReLU."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 5, strides=2, padding="valid", name="conv_valid_s2"),  # 12x12
        layers.BatchNormalization(name="bn_folded_into_conv"),
        layers.ReLU(name="relu_layer"),
        layers.MaxPooling2D(3, strides=2, padding="same", name="pool3_s2_same"),  # 6x6
        layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_same_relu"),
        layers.BatchNormalization(name="bn_after_relu_conv"),
        layers.Activation("elu", name="elu_activation"),
        layers.MaxPooling2D(2, padding="valid", name="pool2_valid"),  # 3x3
        layers.Flatten(name="flatten"),
        layers.Dense(16, name="dense_linear"),
        layers.BatchNormalization(name="bn_folded_into_dense"),
        layers.ELU(name="elu_layer"),
        layers.Dropout(0.3, name="dropout"),
        layers.Dense(10, name="logits"),
        layers.Activation("softmax", name="softmax"),
    ], name="conv_model")


def strided_same_model() -> keras.Sequential:
    """Even kernel with SAME stride 2 (uneven padding), 1-stride pools, odd sizes 13 -> 12 -> 4."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(4, (4, 3), strides=2, padding="same", activation="elu", name="conv_s2_same"),  # 14x14
        layers.Conv2D(3, (2, 3), strides=(1, 1), padding="valid", use_bias=False, name="conv_no_bias"),  # 13x12
        layers.Activation("relu", name="relu_after_conv"),
        layers.MaxPooling2D(2, strides=1, padding="valid", name="pool_s1"),  # 12x11
        layers.MaxPooling2D(3, strides=3, padding="same", name="pool_overhang"),  # 4x4
        layers.Flatten(name="flatten"),
        layers.Dense(10, activation="softmax", name="logits"),
    ], name="strided_same_model")


def mlp_model() -> keras.Sequential:
    """784-vector input, Dense without bias + folded BN, BN after ReLU Dense, BN without centre/scale."""
    return keras.Sequential([
        keras.Input((784,)),
        layers.Dense(32, use_bias=False, name="dense_no_bias"),
        layers.BatchNormalization(name="bn_creates_bias"),
        layers.Activation("relu", name="relu"),
        layers.Dense(24, activation="relu", name="dense_relu"),
        layers.BatchNormalization(center=False, scale=False, epsilon=0.01, name="bn_standalone"),
        layers.Dense(10, activation="linear", name="logits"),
        layers.Softmax(name="softmax_layer"),
    ], name="mlp_model")


def flat_image_model() -> keras.Sequential:
    """A (28, 28) input flattened into one softmax Dense."""
    return keras.Sequential([
        keras.Input((28, 28)),
        layers.Flatten(name="flatten"),
        layers.Dense(10, activation="softmax", name="logits"),
    ], name="flat_image_model")


MODELS = {"conv": conv_model, "strided_same": strided_same_model, "mlp": mlp_model, "flat": flat_image_model}


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_export_matches_keras(tmp_path, build):
    keras.utils.set_random_seed(3)
    model = with_random_batchnorm_statistics(build())
    images = random_images(64)
    path = export_keras(model, tmp_path / "model.npz", reference_images=images, metadata={"note": "test"})

    keras_probabilities = model.predict(images.reshape((-1, *model.input_shape[1:])), verbose=0)
    engine_probabilities = load(path).predict_proba(images)
    assert np.abs(engine_probabilities - keras_probabilities).max() <= REFERENCE_ATOL
    np.testing.assert_array_equal(engine_probabilities.argmax(1), keras_probabilities.argmax(1))
    # The probabilities must not all be one-hot, or the comparison would prove little.
    assert keras_probabilities.max(axis=1).min() < 0.99

    spec, arrays = weights_format.read(path)
    assert spec["metadata"]["note"] == "test" and "tensorflow_version" in spec["metadata"]
    assert arrays["reference/inputs"].shape == (16, 28, 28)
    np.testing.assert_allclose(arrays["reference/probabilities"], keras_probabilities[:16], atol=1e-6)
    ideal = arrays["analysis/ideal_inputs"]
    assert ideal.shape == (10, 28, 28) and 0.0 <= ideal.min() and ideal.max() <= 1.0


def test_export_folds_batchnorm_and_activations():
    keras.utils.set_random_seed(0)
    spec_layers, arrays = convert_layers(with_random_batchnorm_statistics(conv_model()))
    assert [(layer["type"], layer["name"], layer.get("activation")) for layer in spec_layers] == [
        ("conv2d", "conv_valid_s2", "relu"),  # BatchNorm folded, ReLU layer fused
        ("maxpool2d", "pool3_s2_same", None),
        ("conv2d", "conv_same_relu", "relu"),
        ("batchnorm", "bn_after_relu_conv", None),  # after a ReLU it cannot be folded
        ("activation", "elu_activation", "elu"),
        ("maxpool2d", "pool2_valid", None),
        ("flatten", "flatten", None),
        ("dense", "dense_linear", "elu"),
        ("dense", "logits", "softmax"),
    ]
    assert sorted(arrays) == sorted([
        "conv_valid_s2/kernel", "conv_valid_s2/bias", "conv_same_relu/kernel", "conv_same_relu/bias",
        "bn_after_relu_conv/gamma", "bn_after_relu_conv/beta", "bn_after_relu_conv/moving_mean",
        "bn_after_relu_conv/moving_variance", "dense_linear/kernel", "dense_linear/bias",
        "logits/kernel", "logits/bias",
    ])


def test_folded_batchnorm_uses_the_layers_own_epsilon():
    model = keras.Sequential([keras.Input((784,)), layers.Dense(10, use_bias=False, name="dense"),
                              layers.BatchNormalization(epsilon=0.5), layers.Softmax()])
    gamma, beta, mean, variance = (np.full(10, value, np.float32) for value in (2.0, 0.25, 1.0, 1.5))
    model.layers[1].set_weights([gamma, beta, mean, variance])
    _, arrays = convert_layers(model)
    scale = 2.0 / np.sqrt(1.5 + 0.5)
    np.testing.assert_allclose(arrays["dense/kernel"], model.layers[0].get_weights()[0] * scale, rtol=1e-6)
    np.testing.assert_allclose(arrays["dense/bias"], np.full(10, -1.0 * scale + 0.25))


def test_failed_parity_check_leaves_no_file(tmp_path, monkeypatch):
    import fastmnist.export

    def perturbed_convert_layers(model):
        spec_layers, arrays = convert_layers(model)
        arrays["logits/bias"] = arrays["logits/bias"] + np.arange(10) * 0.01
        return spec_layers, arrays

    monkeypatch.setattr(fastmnist.export, "convert_layers", perturbed_convert_layers)
    with pytest.raises(ExportError, match="differ from"):
        export_keras(flat_image_model(), tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


def head(*middle: keras.layers.Layer, input_shape=(28, 28, 1)) -> keras.Sequential:
    """``middle`` between an image input and a Flatten -> Dense(10) softmax head."""
    return keras.Sequential([keras.Input(input_shape), *middle, layers.Flatten(),
                             layers.Dense(10, activation="softmax")])


UNSUPPORTED = {
    "dilation": (lambda: head(layers.Conv2D(4, 3, dilation_rate=2, name="c")),
                 r"layer 'c' \(Conv2D\) has dilation_rate=\(2, 2\).*expected \(1, 1\)"),
    "groups": (lambda: head(layers.Conv2D(4, 3), layers.Conv2D(4, 3, groups=2, name="c")),
               r"layer 'c' \(Conv2D\) has groups=2.*expected 1"),
    "channels_first": (lambda: head(layers.Conv2D(4, (3, 1), data_format="channels_first", name="c")),
                       r"layer 'c' \(Conv2D\) has data_format='channels_first'.*expected 'channels_last'"),
    "sigmoid": (lambda: keras.Sequential([keras.Input((784,)), layers.Dense(8, activation="sigmoid", name="d"),
                                          layers.Dense(10, activation="softmax")]),
                r"layer 'd' uses activation 'sigmoid'.*supported: linear, relu, elu, softmax"),
    "gelu_layer": (lambda: head(layers.Activation("gelu", name="a")), r"layer 'a' uses activation 'gelu'"),
    "elu_alpha": (lambda: head(layers.ELU(alpha=0.5, name="e")), r"layer 'e' \(ELU\) has alpha=0.5.*expected 1.0"),
    "relu6": (lambda: head(layers.ReLU(max_value=6.0, name="r")), r"layer 'r' \(ReLU\) has \(max_value"),
    "leaky_relu": (lambda: head(layers.LeakyReLU(name="l")), r"layer 'l' is a LeakyReLU.*supported layers: Input"),
    "average_pool": (lambda: head(layers.AveragePooling2D(2, name="p")), r"layer 'p' is a AveragePooling2D"),
    "depthwise": (lambda: head(layers.DepthwiseConv2D(3, name="dw")), r"layer 'dw' is a DepthwiseConv2D"),
    "batchnorm_axis": (lambda: head(layers.Conv2D(4, 3), layers.BatchNormalization(axis=1, name="bn")),
                       r"layer 'bn' \(BatchNormalization\) normalises axis 1, expected the last axis"),
    "dense_on_image": (lambda: keras.Sequential([keras.Input((28, 28, 1)), layers.Dense(10, name="d"),
                                                 layers.Flatten(), layers.Dense(10, activation="softmax")]),
                       r"layer 'd' \(Dense\) gets a rank-3 input .*put a Flatten before it"),
    "linear_output": (lambda: keras.Sequential([keras.Input((784,)), layers.Dense(10, name="out")]),
                      r"ends in layer 'out' with output activation 'linear'.*add activation='softmax'"),
    "relu_output": (lambda: keras.Sequential([keras.Input((784,)), layers.Dense(10, activation="relu", name="o")]),
                    r"ends in layer 'o' with output activation 'relu'"),
    "wrong_classes": (lambda: keras.Sequential([keras.Input((784,)), layers.Dense(3, activation="softmax")]),
                      r"outputs shape \(None, 3\), expected \(None, 10\)"),
    "input_shape": (lambda: head(input_shape=(32, 32, 1)), r"takes inputs of shape \(32, 32, 1\)"),
}


@pytest.mark.parametrize("build, message", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_models_are_refused_by_name(build, message):
    with pytest.raises(ExportError, match=message):
        convert_layers(build())


def test_functional_models_are_refused():
    inputs = keras.Input((784,))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(inputs), name="functional")
    with pytest.raises(ExportError, match="model 'functional' is a Functional, expected a keras.Sequential"):
        convert_layers(model)
