"""The Keras exporter: every supported layer and setting reproduces Keras, and everything else is refused by name.

Each converted model is checked against the NumPy reference (`fastmnist.reference`, float64, so a wrong
conversion cannot hide behind the engine) and against the engine; whole models also through `export_keras`.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="exporting needs TensorFlow/Keras (pip install tensorflow)")

from blob_images import blob_images as random_images  # noqa: E402

from fastmnist import format as weights_format  # noqa: E402
from fastmnist import load, reference, spec  # noqa: E402
from fastmnist.export import REFERENCE_ATOL, ExportError, convert_keras, export_keras  # noqa: E402

layers = keras.layers
# The float64 reference against Keras' float32: probabilities in [0, 1] through a few small layers.
CONVERSION_ATOL = 1e-5


def with_random_batchnorm_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization layer non-trivial gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.uniform(-0.3, 0.3, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.uniform(-0.3, 0.3, channels))
    return model


def assert_conversion_matches_keras(model: keras.Model, images: np.ndarray | None = None, **options) -> None:
    """The converted model, run by the NumPy reference (float64) and by the engine, gives Keras' probabilities."""
    images = random_images(32) if images is None else images
    conversion = convert_keras(model, **options)
    keras_probabilities = conversion.keras_probabilities(images)
    # The probabilities must not all be one-hot, or the comparison would prove little.
    assert keras_probabilities.max(axis=1).min() < 0.99
    arrays = {name: value.astype(np.float32) for name, value in conversion.arrays.items()}
    reference_probabilities = reference.forward(spec.parse(conversion.spec, arrays, model.name), images)
    np.testing.assert_allclose(reference_probabilities, keras_probabilities, rtol=0, atol=CONVERSION_ATOL)
    with tempfile.TemporaryDirectory() as folder:
        path = weights_format.save(Path(folder) / "model.npz", conversion.spec, arrays)
        engine_probabilities = load(path).predict_proba(images)
    np.testing.assert_allclose(engine_probabilities, keras_probabilities, rtol=0, atol=REFERENCE_ATOL)


# ---------------------------------------------------------------------------------------------------------------
# Whole models through the engine


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


def wide(units: int, **options) -> layers.Dense:
    """A Dense whose pre-activations spread over several units, so that activations are seen away from 0."""
    return layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(stddev=0.15), **options)


def activations_model() -> keras.Sequential:
    """Every activation, fused into a Dense, on a vector: logits at the end get a softmax appended."""
    return keras.Sequential([
        keras.Input((784,)),
        wide(24, activation="tanh"), wide(24, activation="sigmoid"), wide(24, activation="hard_sigmoid"),
        wide(24, activation="leaky_relu"), wide(24, activation="relu6"), wide(24, activation="elu"),
        wide(24, activation="selu"), wide(24, activation="silu"), wide(24, activation="swish"),
        wide(24, activation="gelu"), wide(24, activation=functools.partial(keras.activations.gelu, approximate=True)),
        wide(24, activation="softplus"), wide(24), layers.LeakyReLU(negative_slope=0.1),
        wide(24), layers.ReLU(max_value=1.5, negative_slope=0.05, threshold=0.25), wide(24), layers.ELU(alpha=0.4),
        layers.Dense(10),
    ], name="activations_model")


def standalone_activations_model() -> keras.Sequential:
    """Activation layers after a pool (nothing to fuse into) on an (h, w, c) map, and BatchNorm on a map."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 3, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5)),
        layers.MaxPooling2D(2), layers.Activation("gelu"),
        layers.MaxPooling2D(2), layers.ReLU(max_value=6.0),
        layers.BatchNormalization(), layers.Activation("tanh"), layers.ELU(alpha=2.0),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ], name="standalone_activations_model")


def pooling_model() -> keras.Sequential:
    """Zero padding, average pools (VALID and an overhanging SAME), a global average pool head."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.ZeroPadding2D(((1, 2), (3, 0))),  # 31x31
        layers.Conv2D(8, 3, activation="relu"),  # 29x29
        layers.AveragePooling2D(3, strides=2, padding="same"),  # 15x15, the edge windows overhang
        layers.Conv2D(12, 3, padding="same", activation="relu"),
        layers.AveragePooling2D(2),  # 7x7
        layers.Conv2D(10, 3),
        layers.GlobalAveragePooling2D(),
    ], name="pooling_model")


def depthwise_model() -> keras.Sequential:
    """Depthwise (multiplier 3, SAME stride 2, BN folded in), separable (multiplier 2), global max pool head."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=3),
        layers.BatchNormalization(), layers.ReLU(),
        layers.SeparableConv2D(16, 3, depth_multiplier=2, activation="elu"),
        layers.DepthwiseConv2D(2, use_bias=False, activation="relu"),
        layers.GlobalMaxPooling2D(keepdims=True), layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name="depthwise_model")


def rescaled_functional_model() -> keras.Model:
    """A Functional chain fed raw 0..255 pixels: Rescaling and a Reshape fold away, the SAME conv keeps a range."""
    inputs = keras.Input((784,))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Reshape((28, 28, 1))(x)
    x = layers.Conv2D(6, 5, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.GaussianNoise(0.1)(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="rescaled_functional_model")


def normalized_model() -> keras.Sequential:
    """A scalar Normalization (of 0..1 pixels) folded into a VALID conv."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Normalization(axis=None, mean=0.13, variance=0.09),
        layers.Conv2D(6, 5, strides=2, activation="relu"),
        layers.SpatialDropout2D(0.2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name="normalized_model")


ENGINE_MODELS = {
    "conv": conv_model, "strided_same": strided_same_model, "mlp": mlp_model, "flat": flat_image_model,
    "activations": activations_model, "standalone_activations": standalone_activations_model,
    "pooling": pooling_model, "depthwise": depthwise_model, "rescaled_functional": rescaled_functional_model,
    "normalized": normalized_model,
}


@pytest.mark.parametrize("build", ENGINE_MODELS.values(), ids=ENGINE_MODELS.keys())
def test_export_matches_keras(tmp_path, build):
    keras.utils.set_random_seed(3)
    model = with_random_batchnorm_statistics(build())
    images = random_images(64)
    path = export_keras(model, tmp_path / "model.npz", reference_images=images, metadata={"note": "test"})

    keras_probabilities = convert_keras(model).keras_probabilities(images)
    engine_probabilities = load(path).predict_proba(images)
    assert np.abs(engine_probabilities - keras_probabilities).max() <= REFERENCE_ATOL
    np.testing.assert_array_equal(engine_probabilities.argmax(1), keras_probabilities.argmax(1))
    assert keras_probabilities.max(axis=1).min() < 0.99

    file_spec, arrays = weights_format.read(path)
    assert file_spec["version"] == weights_format.FORMAT_VERSION
    assert file_spec["metadata"]["note"] == "test" and "tensorflow_version" in file_spec["metadata"]
    assert file_spec["metadata"]["source"] == "keras"
    assert arrays["reference/inputs"].shape == (16, 28, 28)
    np.testing.assert_allclose(arrays["reference/probabilities"], keras_probabilities[:16], atol=1e-6)
    ideal = arrays["analysis/ideal_inputs"]
    assert ideal.shape == (10, 28, 28) and 0.0 <= ideal.min() and ideal.max() <= 1.0


@pytest.mark.parametrize("build", ENGINE_MODELS.values(), ids=ENGINE_MODELS.keys())
def test_conversion_matches_keras(build):
    keras.utils.set_random_seed(3)
    assert_conversion_matches_keras(with_random_batchnorm_statistics(build()))


def test_export_folds_batchnorm_and_activations():
    keras.utils.set_random_seed(0)
    conversion = convert_keras(with_random_batchnorm_statistics(conv_model()))
    assert [(layer["type"], layer["name"], layer.get("activation")) for layer in conversion.spec["layers"]] == [
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
    assert sorted(conversion.arrays) == sorted([
        "conv_valid_s2/kernel", "conv_valid_s2/bias", "conv_same_relu/kernel", "conv_same_relu/bias",
        "bn_after_relu_conv/gamma", "bn_after_relu_conv/beta", "bn_after_relu_conv/moving_mean",
        "bn_after_relu_conv/moving_variance", "dense_linear/kernel", "dense_linear/bias",
        "logits/kernel", "logits/bias",
    ])
    assert conversion.spec["metadata"] == {"source": "keras", "output": "softmax"}


def test_folded_batchnorm_uses_the_layers_own_epsilon():
    model = keras.Sequential([keras.Input((784,)), layers.Dense(10, use_bias=False, name="dense"),
                              layers.BatchNormalization(epsilon=0.5), layers.Softmax()])
    gamma, beta, mean, variance = (np.full(10, value, np.float32) for value in (2.0, 0.25, 1.0, 1.5))
    model.layers[1].set_weights([gamma, beta, mean, variance])
    arrays = convert_keras(model).arrays
    scale = 2.0 / np.sqrt(1.5 + 0.5)
    np.testing.assert_allclose(arrays["dense/kernel"], model.layers[0].get_weights()[0] * scale, rtol=1e-6)
    np.testing.assert_allclose(arrays["dense/bias"], np.full(10, -1.0 * scale + 0.25))


def test_failed_parity_check_leaves_no_file(tmp_path, monkeypatch):
    import fastmnist.export

    def perturbed_convert_keras(model, **options):
        conversion = convert_keras(model, **options)
        conversion.arrays["logits/bias"] = conversion.arrays["logits/bias"] + np.arange(10) * 0.01
        return conversion

    monkeypatch.setattr(fastmnist.export, "convert_keras", perturbed_convert_keras)
    with pytest.raises(ExportError, match="differ from"):
        export_keras(flat_image_model(), tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# One layer or setting at a time, against the NumPy reference


def image_model(*middle: keras.layers.Layer, input_shape=(28, 28, 1), head=True) -> keras.Sequential:
    """``middle`` after an image input, then (with ``head``) Flatten -> Dense(10) softmax."""
    tail = [layers.Flatten(), layers.Dense(10, activation="softmax")] if head else []
    return keras.Sequential([keras.Input(input_shape), *middle, *tail])


def vector_model(*middle: keras.layers.Layer) -> keras.Sequential:
    return keras.Sequential([keras.Input((784,)), *middle, layers.Dense(10, activation="softmax")])


def spread_conv(filters: int = 4, size: int = 3, **options) -> layers.Conv2D:
    return layers.Conv2D(filters, size, kernel_initializer=keras.initializers.RandomNormal(stddev=0.4), **options)


ACTIVATION_FUNCTIONS = {
    "tanh": ("tanh", "tanh"),
    "sigmoid": ("sigmoid", "sigmoid"),
    "hard_sigmoid": ("hard_sigmoid", {"name": "hard_sigmoid", "alpha": 1 / 6}),  # beta 0.5 is the default
    "leaky_relu": ("leaky_relu", {"name": "relu", "negative_slope": 0.2}),
    "relu6": ("relu6", {"name": "relu", "max_value": 6.0}),
    "elu": ("elu", "elu"),
    "elu_alpha": (functools.partial(keras.activations.elu, alpha=0.3), {"name": "elu", "alpha": 0.3}),
    "relu_options": (functools.partial(keras.activations.relu, max_value=2.0, negative_slope=0.1, threshold=0.5),
                     {"name": "relu", "max_value": 2.0, "negative_slope": 0.1, "threshold": 0.5}),
    "selu": ("selu", "selu"),
    "silu": ("silu", "silu"),
    "swish": ("swish", "silu"),
    "gelu": ("gelu", "gelu"),
    "gelu_exact_object": (keras.activations.gelu, "gelu"),
    "gelu_tanh": (functools.partial(keras.activations.gelu, approximate=True), {"name": "gelu", "approximate": True}),
    "softplus": ("softplus", "softplus"),
}


@pytest.mark.parametrize("activation, expected", ACTIVATION_FUNCTIONS.values(), ids=ACTIVATION_FUNCTIONS.keys())
def test_activation_functions_are_fused_and_match_keras(activation, expected):
    keras.utils.set_random_seed(1)
    model = image_model(spread_conv(activation=activation), layers.MaxPooling2D(3),
                        layers.Activation(activation), input_shape=(28, 28, 1))
    conversion = convert_keras(model)
    fused, _, standalone, *_ = conversion.spec["layers"]
    assert fused["type"] == "conv2d" and fused["activation"] == expected
    assert standalone["type"] == "activation" and standalone["activation"] == expected
    assert_conversion_matches_keras(model)


ACTIVATION_LAYERS = {
    "leaky_relu_default": (layers.LeakyReLU(), {"name": "relu", "negative_slope": pytest.approx(0.3)}),
    "leaky_relu": (layers.LeakyReLU(negative_slope=0.05), {"name": "relu", "negative_slope": pytest.approx(0.05)}),
    "relu6": (layers.ReLU(max_value=6.0), {"name": "relu", "max_value": 6.0}),
    "relu_all": (layers.ReLU(max_value=1.0, negative_slope=0.2, threshold=0.3),
                 {"name": "relu", "max_value": 1.0, "negative_slope": pytest.approx(0.2),
                  "threshold": pytest.approx(0.3)}),
    "elu": (layers.ELU(alpha=0.5), {"name": "elu", "alpha": 0.5}),
    "elu_default": (layers.ELU(), "elu"),
    "softmax": (layers.Softmax(), "softmax"),
    "gelu": (layers.Activation("gelu"), "gelu"),
}


@pytest.mark.parametrize("layer, expected", ACTIVATION_LAYERS.values(), ids=ACTIVATION_LAYERS.keys())
def test_activation_layers_match_keras(layer, expected):
    keras.utils.set_random_seed(2)
    model = image_model(spread_conv(), layer)
    assert convert_keras(model).spec["layers"][0]["activation"] == expected  # fused into the conv
    assert_conversion_matches_keras(model)


LAYER_CASES = {
    "avgpool_valid": lambda: image_model(spread_conv(), layers.AveragePooling2D(2)),
    "avgpool_valid_odd": lambda: image_model(spread_conv(), layers.AveragePooling2D((3, 2), strides=(2, 3))),
    "avgpool_same_overhang": lambda: image_model(spread_conv(), layers.AveragePooling2D(3, strides=2, padding="same")),
    "avgpool_same_stride1": lambda: image_model(spread_conv(), layers.AveragePooling2D(4, strides=1, padding="same")),
    "maxpool_same": lambda: image_model(spread_conv(), layers.MaxPooling2D(3, strides=2, padding="same")),
    "global_avgpool": lambda: image_model(spread_conv(10), layers.GlobalAveragePooling2D(), layers.Softmax(),
                                          head=False),
    "global_maxpool": lambda: image_model(spread_conv(6), layers.GlobalMaxPooling2D(),
                                          layers.Dense(10, activation="softmax"), head=False),
    "global_avgpool_keepdims": lambda: image_model(spread_conv(6), layers.GlobalAveragePooling2D(keepdims=True)),
    "zeropad": lambda: image_model(layers.ZeroPadding2D(((2, 0), (1, 3))), spread_conv()),
    "zeropad_after_conv": lambda: image_model(spread_conv(), layers.ZeroPadding2D(2), spread_conv(3)),
    "zeropad_before_same_conv": lambda: image_model(spread_conv(), layers.ZeroPadding2D((0, 1)),
                                                    spread_conv(3, padding="same")),
    "zeropad_before_pool": lambda: image_model(spread_conv(), layers.ZeroPadding2D(1), layers.MaxPooling2D(3)),
    "zeropad_before_depthwise": lambda: image_model(spread_conv(), layers.ZeroPadding2D(((1, 0), (0, 2))),
                                                    layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2)),
    "depthwise": lambda: image_model(spread_conv(), layers.DepthwiseConv2D(3, activation="relu")),
    "depthwise_multiplier": lambda: image_model(spread_conv(3), layers.DepthwiseConv2D(
        (3, 2), strides=(2, 1), padding="same", depth_multiplier=4, use_bias=False)),
    "depthwise_first": lambda: image_model(layers.DepthwiseConv2D(5, depth_multiplier=2, activation="tanh")),
    "separable": lambda: image_model(spread_conv(), layers.SeparableConv2D(5, 3, activation="relu")),
    "separable_multiplier": lambda: image_model(spread_conv(3), layers.SeparableConv2D(
        6, (2, 3), strides=2, padding="same", depth_multiplier=3, use_bias=False)),
    "batchnorm_after_pool": lambda: image_model(spread_conv(), layers.MaxPooling2D(2), layers.BatchNormalization()),
    "batchnorm_at_input": lambda: image_model(layers.BatchNormalization(), spread_conv()),
    "batchnorm_on_vector": lambda: vector_model(layers.BatchNormalization(), wide(16, activation="relu"),
                                                layers.BatchNormalization()),
    "batchnorm_into_depthwise": lambda: image_model(spread_conv(2), layers.DepthwiseConv2D(3, depth_multiplier=3),
                                                    layers.BatchNormalization()),
    "batchnorm_into_separable": lambda: image_model(spread_conv(2), layers.SeparableConv2D(4, 3),
                                                    layers.BatchNormalization(), layers.ReLU()),
    "identities": lambda: image_model(
        layers.GaussianNoise(0.5), spread_conv(), layers.SpatialDropout2D(0.5), layers.GaussianDropout(0.5),
        layers.ActivityRegularization(l1=0.1), layers.AlphaDropout(0.5), layers.Dropout(0.5)),
    "reshape_to_vector": lambda: image_model(spread_conv(), layers.Reshape((-1,)), layers.Dense(10), head=False),
    "logits_after_pool": lambda: image_model(spread_conv(10), layers.GlobalMaxPooling2D(), head=False),
    "logits_after_batchnorm": lambda: keras.Sequential([keras.Input((784,)), wide(16, activation="relu"),
                                                        layers.Dense(10, activation="relu"),
                                                        layers.BatchNormalization()]),
}


@pytest.mark.parametrize("build", LAYER_CASES.values(), ids=LAYER_CASES.keys())
def test_layer_matches_keras(build):
    keras.utils.set_random_seed(4)
    assert_conversion_matches_keras(with_random_batchnorm_statistics(build()))


def test_separable_conv_is_depthwise_then_pointwise():
    keras.utils.set_random_seed(5)
    model = image_model(layers.SeparableConv2D(5, 3, depth_multiplier=2, activation="relu", name="sep"))
    conversion = convert_keras(model)
    depthwise, pointwise, *_ = conversion.spec["layers"]
    assert depthwise == {"type": "depthwise_conv2d", "name": "sep.depthwise", "kernel_size": [3, 3],
                         "strides": [1, 1], "padding": "valid", "depth_multiplier": 2, "activation": "linear",
                         "use_bias": False}
    assert pointwise == {"type": "conv2d", "name": "sep.pointwise", "filters": 5, "kernel_size": [1, 1],
                         "strides": [1, 1], "padding": "valid", "activation": "relu", "use_bias": True}
    assert conversion.arrays["sep.depthwise/kernel"].shape == (3, 3, 1, 2)
    assert conversion.arrays["sep.pointwise/kernel"].shape == (1, 1, 2, 5)


def test_zero_padding_folds_into_a_valid_convolution_only():
    model = image_model(layers.ZeroPadding2D(((1, 2), (0, 3))), layers.Conv2D(4, 3, name="conv"),
                        layers.ZeroPadding2D(1, name="before_pool"), layers.MaxPooling2D(2),
                        layers.ZeroPadding2D(1, name="before_same"), layers.Conv2D(4, 3, padding="same"))
    conversion_layers = convert_keras(model).spec["layers"]
    assert [layer["type"] for layer in conversion_layers] == [
        "conv2d", "zeropad2d", "maxpool2d", "zeropad2d", "conv2d", "flatten", "dense"]
    assert conversion_layers[0]["name"] == "conv" and conversion_layers[0]["padding"] == [[1, 2], [0, 3]]
    assert conversion_layers[1] == {"type": "zeropad2d", "name": "before_pool", "padding": [[1, 1], [1, 1]]}
    assert conversion_layers[4]["padding"] == "same"


def test_identities_are_dropped_and_keepdims_pool_is_a_vector():
    model = image_model(layers.GaussianNoise(0.5), layers.Conv2D(4, 3), layers.SpatialDropout2D(0.5),
                        layers.GaussianDropout(0.5), layers.ActivityRegularization(), layers.AlphaDropout(0.2),
                        layers.Dropout(0.5),
                        layers.GlobalAveragePooling2D(keepdims=True))
    assert [layer["type"] for layer in convert_keras(model).spec["layers"]] == [
        "conv2d", "global_avgpool2d", "flatten", "dense"]


def test_logits_get_a_softmax_appended():
    vector_logits = keras.Sequential([keras.Input((784,)), layers.Dense(10, name="logits"), layers.Dropout(0.1)])
    conversion = convert_keras(vector_logits)
    assert conversion.spec["layers"][-1]["activation"] == "softmax"
    assert conversion.spec["metadata"]["output"] == "logits, softmax appended" and conversion.softmax_appended
    pooled_logits = image_model(layers.Conv2D(10, 3, name="softmax"), layers.GlobalAveragePooling2D(), head=False)
    conversion = convert_keras(pooled_logits)
    assert conversion.spec["layers"][-1] == {"type": "activation", "name": "softmax1", "activation": "softmax"}
    assert conversion.spec["metadata"]["output"] == "logits, softmax appended"


def test_log_softmax_output_is_replaced_by_softmax(tmp_path):
    keras.utils.set_random_seed(10)
    fused = keras.Sequential([keras.Input((784,)), wide(16, activation="relu"),
                              layers.Dense(10, activation="log_softmax")])
    standalone = image_model(spread_conv(10), layers.GlobalMaxPooling2D(), layers.Activation("log_softmax"),
                             head=False)
    for model in (fused, standalone):
        conversion = convert_keras(model)
        assert conversion.spec["metadata"]["output"] == "log_softmax, replaced by softmax"
        assert conversion.spec["layers"][-1]["activation"] == "softmax"
        assert_conversion_matches_keras(model)
    images = random_images(16)
    path = export_keras(fused, tmp_path / "model.npz", reference_images=images)
    np.testing.assert_allclose(load(path).predict_proba(images), np.exp(fused.predict(images.reshape(-1, 784))),
                               rtol=0, atol=REFERENCE_ATOL)


# ---------------------------------------------------------------------------------------------------------------
# Input preprocessing


def first_dense_model(*preprocessing: keras.layers.Layer, input_shape=(28, 28, 1)) -> keras.Sequential:
    return keras.Sequential([keras.Input(input_shape), *preprocessing, layers.Flatten(), wide(16, activation="relu"),
                             layers.Dense(10, activation="softmax")])


def first_conv_model(*preprocessing: keras.layers.Layer, padding="valid", input_shape=(28, 28, 1)) -> keras.Sequential:
    return keras.Sequential([keras.Input(input_shape), *preprocessing, spread_conv(padding=padding), layers.Flatten(),
                             layers.Dense(10, activation="softmax")])


PIXEL_STATISTICS = {"mean": 33.3, "variance": 78.6**2}  # of raw 0..255 MNIST pixels
INPUT_CASES = {
    # name: (model, input_max expected by default, input.range left to the engine (None: random statistics))
    "rescaling_raw_into_dense": (lambda: first_dense_model(layers.Rescaling(1 / 255)), 255.0, [0.0, 1.0]),
    "rescaling_offset_into_conv": (lambda: first_conv_model(layers.Rescaling(1 / 127.5, offset=-1)), 255.0,
                                   [0.0, 1.0]),
    "rescaling_same_conv": (lambda: first_conv_model(layers.Rescaling(1 / 127.5, offset=-1), padding="same"), 255.0,
                            [-1.0, 1.0]),
    "rescaling_unit_pixels": (lambda: first_conv_model(layers.Rescaling(2.0, offset=-1), padding="same"), 1.0,
                              [-1.0, 1.0]),
    "normalization_into_conv": (lambda: first_conv_model(layers.Normalization(axis=None, mean=0.13, variance=0.095)),
                                1.0, [0.0, 1.0]),
    "normalization_channel_same_conv": (lambda: first_conv_model(
        layers.Normalization(axis=-1, mean=[0.13], variance=[0.095]), padding="same"), 1.0,
        [-0.13 / 0.095**0.5, 0.87 / 0.095**0.5]),
    "normalization_after_rescaling": (lambda: first_dense_model(
        layers.Rescaling(1 / 255), layers.Normalization(axis=None, mean=0.13, variance=0.095)), 255.0, [0.0, 1.0]),
    "normalization_per_pixel_into_dense": (lambda: keras.Sequential([
        keras.Input((784,)), layers.Normalization(axis=-1, mean=np.linspace(0, 0.3, 784),
                                                  variance=np.linspace(0.05, 0.2, 784)),
        wide(16, activation="relu"), layers.Dense(10, activation="softmax")]), 1.0, [0.0, 1.0]),
    "normalization_after_flatten": (lambda: keras.Sequential([
        keras.Input((28, 28)), layers.Flatten(), layers.Normalization(axis=None, mean=0.1, variance=0.1),
        wide(16), layers.Dense(10, activation="softmax")]), 1.0, [0.0, 1.0]),
    "normalization_before_pool": (lambda: image_model(
        layers.Normalization(axis=None, mean=0.1, variance=0.25), layers.MaxPooling2D(2), spread_conv()), 1.0,
        [-0.2, 1.8]),
    "batchnorm_into_conv": (lambda: first_conv_model(layers.BatchNormalization()), 1.0, [0.0, 1.0]),
    "batchnorm_per_column_into_dense": (lambda: first_dense_model(layers.BatchNormalization(), input_shape=(28, 28)),
                                        1.0, [0.0, 1.0]),
    "batchnorm_before_pool": (lambda: image_model(layers.BatchNormalization(), layers.MaxPooling2D(2), spread_conv()),
                              1.0, None),
    "reshape_vector_to_image": (lambda: first_conv_model(layers.Reshape((28, 28, 1)), input_shape=(784,)), 1.0,
                                [0.0, 1.0]),
    "reshape_rows_to_image": (lambda: first_conv_model(layers.Reshape((28, 28, 1)), layers.Rescaling(1 / 255),
                                                       input_shape=(28, 28)), 255.0, [0.0, 1.0]),
}


@pytest.mark.parametrize("build, input_max, input_range", INPUT_CASES.values(), ids=INPUT_CASES.keys())
def test_input_preprocessing_is_folded(build, input_max, input_range):
    keras.utils.set_random_seed(6)
    model = with_random_batchnorm_statistics(build())
    conversion = convert_keras(model)
    assert conversion.input_max == input_max
    if input_range is not None:
        assert conversion.spec["input"]["range"] == pytest.approx(input_range)
    # Nothing of the preprocessing is left as a layer.
    assert conversion.spec["layers"][0]["type"] in ("flatten", "dense", "conv2d", "maxpool2d")
    assert_conversion_matches_keras(model)


def test_folded_input_keeps_blank_pixels_at_zero():
    """Folded into the first layer, a blank image's first-layer output is the layer's own bias, as in Keras."""
    keras.utils.set_random_seed(7)
    model = first_conv_model(layers.Normalization(axis=None, mean=0.2, variance=0.3))
    conversion = convert_keras(model)
    assert conversion.spec["input"]["range"] == [0.0, 1.0]
    conv = model.layers[1]
    blank_output = conv(layers.Normalization(axis=None, mean=0.2, variance=0.3)(np.zeros((1, 28, 28, 1))))
    np.testing.assert_allclose(conversion.arrays[f"{conv.name}/bias"], np.asarray(blank_output)[0, 0, 0], atol=1e-5)


def test_input_max_can_be_given():
    model = first_dense_model(layers.Normalization(axis=None, **PIXEL_STATISTICS))
    assert convert_keras(model).input_max == 1.0
    assert convert_keras(model, input_max=255).input_max == 255.0
    images = random_images(32)
    assert_conversion_matches_keras(model, images, input_max=255)


# ---------------------------------------------------------------------------------------------------------------
# Functional models


def test_functional_chain_matches_keras():
    keras.utils.set_random_seed(8)
    inputs = keras.Input((28, 28, 1))
    x = spread_conv(6, activation="relu", name="conv")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs, name="functional")
    conversion = convert_keras(model)
    assert [layer["type"] for layer in conversion.spec["layers"]] == ["conv2d", "maxpool2d", "flatten", "dense"]
    assert conversion.spec["metadata"]["output"] == "logits, softmax appended"
    assert_conversion_matches_keras(model)


def test_nested_models_are_expanded():
    keras.utils.set_random_seed(9)
    features = keras.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2)], name="features")
    inputs = keras.Input((28, 28, 1))
    outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(features(inputs)))
    model = keras.Model(inputs, outputs)
    assert [layer["type"] for layer in convert_keras(model).spec["layers"]] == [
        "conv2d", "maxpool2d", "flatten", "dense"]
    assert_conversion_matches_keras(model)


def branching_model() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    trunk = layers.Conv2D(4, 3, name="trunk")(inputs)
    left, right = layers.Conv2D(4, 1, name="left")(trunk), layers.Conv2D(4, 1, name="right")(trunk)
    x = layers.Add(name="add")([left, right])
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Flatten()(x)), name="branching")


def residual_model() -> keras.Model:
    inputs = keras.Input((784,))
    hidden = layers.Dense(784, name="hidden")(inputs)
    x = layers.Add(name="skip")([inputs, hidden])
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="residual")


def shared_layer_model() -> keras.Model:
    inputs = keras.Input((784,))
    shared = layers.Dense(784, name="shared")
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(shared(shared(inputs))), name="shared_use")


def bare_operation_model() -> keras.Model:
    inputs = keras.Input((784,))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(inputs / 255.0), name="bare_operation")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.dense = layers.Dense(10, activation="softmax")

    def call(self, x):
        return self.dense(x)


def subclassed_model() -> keras.Model:
    model = Subclassed()
    model(np.zeros((1, 784), np.float32))
    return model


def two_input_model() -> keras.Model:
    first, second = keras.Input((784,)), keras.Input((784,))
    x = layers.Concatenate()([first, second])
    return keras.Model([first, second], layers.Dense(10, activation="softmax")(x), name="two_inputs")


def two_output_model() -> keras.Model:
    inputs = keras.Input((784,))
    return keras.Model(inputs, [layers.Dense(10, activation="softmax")(inputs), layers.Dense(1)(inputs)],
                       name="two_outputs")


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def dense_after(*middle: keras.layers.Layer, input_shape=(784,), activation="softmax") -> keras.Sequential:
    return keras.Sequential([keras.Input(input_shape), *middle, layers.Dense(10, activation=activation, name="out")])


def quantized(model: keras.Model) -> keras.Model:
    model.quantize("int8")
    return model


UNSUPPORTED = {
    "branching": (branching_model,
                  r"model 'branching' branches: the output of layer 'trunk' \(Conv2D\) feeds 2 layers \('left', "
                  r"'right'\)"),
    "residual": (residual_model, r"the output of layer 'input_layer.*' \(InputLayer\) feeds 2 layers"),
    "shared_layer": (shared_layer_model, r"layer 'shared' \(Dense\) is applied 2 times in model 'shared_use'"),
    "bare_operation": (bare_operation_model, r"model 'bare_operation' applies the operation 'true_divide' "
                       r"\(TrueDivide\) outside any layer;.*keras.layers.Rescaling"),
    "subclassed": (subclassed_model, r"model 'subclassed' is a subclassed keras.Model \(Subclassed\).*expected a "
                   r"Sequential or Functional model"),
    "two_inputs": (two_input_model, r"model 'two_inputs' has 2 inputs and 1 outputs, expected one of each"),
    "two_outputs": (two_output_model, r"model 'two_outputs' has 1 inputs and 2 outputs, expected one of each"),
    "not_a_model": (lambda: layers.Dense(10, name="lonely"), r"'lonely' is a Dense, expected a keras.Model"),
    "unbuilt": (lambda: keras.Sequential([layers.Dense(10)], name="unbuilt"),
                r"model 'unbuilt' has no input shape; start it with keras.Input"),
    "layer_norm": (lambda: dense_after(layers.LayerNormalization(name="ln")),
                   r"layer 'ln' is a LayerNormalization, which the fastmnist format does not support; supported "
                   r"layers: InputLayer, Rescaling"),
    "prelu": (lambda: dense_after(layers.Dense(8), layers.PReLU(name="p")), r"layer 'p' is a PReLU"),
    "conv1d": (lambda: dense_after(layers.Conv1D(2, 3, name="c"), layers.Flatten(), input_shape=(28, 28)),
               r"layer 'c' is a Conv1D, which the fastmnist format does not support"),
    "reshape_input": (lambda: dense_after(layers.Reshape((784, 1), name="r"), layers.Flatten(), input_shape=(28, 28)),
                      r"layer 'r' \(Reshape\) reshapes the input to \(784, 1\), which the format does not support"),
    "reshape_mid": (lambda: dense_after(layers.Conv2D(2, 3), layers.Reshape((26, 52)), layers.Flatten(),
                                        input_shape=(28, 28, 1)),
                    r"\(Reshape\) reshapes \(26, 26, 2\) to \(26, 52\).*expected a reshape to a vector"),
    "rescaling_mid": (lambda: dense_after(layers.Dense(8), layers.Rescaling(2.0, name="r")),
                      r"layer 'r' \(Rescaling\) comes after layer 'dense.*'; the format takes Rescaling only at the "
                      r"model's input"),
    "normalization_invert": (lambda: dense_after(layers.Normalization(axis=None, mean=0.0, variance=1.0,
                                                                      invert=True, name="n")),
                             r"layer 'n' \(Normalization\) has invert=True"),
    "per_pixel_normalization_into_conv": (
        lambda: first_conv_model(layers.Normalization(axis=(1, 2), mean=np.full((28, 28), 0.1),
                                                      variance=np.full((28, 28), 0.2) + np.eye(28))),
        r"scales or shifts each pixel differently .* only a first dense layer can absorb; the first layer "
        r"'conv2d.*' is a conv2d"),
    "custom_activation": (lambda: dense_after(layers.Dense(8, activation=lambda x: x * 2, name="d")),
                          r"layer 'd' uses activation '<lambda>' \(layer type Dense\), which the format does not "
                          r"support; supported: the keras.activations linear, relu6"),
    "mish": (lambda: dense_after(layers.Dense(8, activation="mish", name="d")), r"layer 'd' uses "
             r"activation 'mish' \(layer type Dense\)"),
    "log_softmax_hidden": (lambda: dense_after(layers.Flatten(), layers.Dense(8, name="hidden"),
                                               layers.Activation("log_softmax", name="a"), layers.Dense(10),
                                               input_shape=(28, 28)),
                           r"layer 'hidden' uses activation 'log_softmax', which the format supports only as the "
                           r"model's output"),
    "partial_unknown_keyword": (lambda: dense_after(layers.Dense(8, activation=functools.partial(
        keras.activations.elu, beta=2.0), name="d")),
        r"layer 'd' \(Dense\) passes \['beta'\] to activation 'elu', expected alpha"),
    "partial_keyword_to_tanh": (lambda: dense_after(layers.Dense(8, activation=functools.partial(
        keras.activations.tanh, alpha=2.0), name="d")), r"passes \['alpha'\] to activation 'tanh', expected none"),
    "negative_threshold": (lambda: dense_after(layers.Dense(8, activation=functools.partial(
        keras.activations.relu, threshold=-1.0), name="d")), r"layer 'd' \(Dense\) has relu settings .*threshold "
        r">= 0"),
    "cap_below_threshold": (lambda: dense_after(layers.Dense(8), layers.ReLU(max_value=0.5, threshold=1.0, name="r")),
                            r"layer 'r' \(ReLU\) has relu settings .*a finite max_value >= threshold"),
    "softmax_axis": (lambda: image_model(layers.Conv2D(4, 3), layers.Softmax(axis=1, name="s")),
                     r"layer 's' \(Softmax\) takes the softmax over axis 1.*expected the last axis"),
    "dilation": (lambda: image_model(layers.Conv2D(4, 3, dilation_rate=2, name="c")),
                 r"layer 'c' \(Conv2D\) has dilation_rate=\(2, 2\).*expected \(1, 1\)"),
    "depthwise_dilation": (lambda: image_model(layers.DepthwiseConv2D(3, dilation_rate=2, name="c")),
                           r"layer 'c' \(DepthwiseConv2D\) has dilation_rate=\(2, 2\)"),
    "separable_dilation": (lambda: image_model(layers.SeparableConv2D(3, 3, dilation_rate=(1, 2), name="c")),
                           r"layer 'c' \(SeparableConv2D\) has dilation_rate=\(1, 2\)"),
    "groups": (lambda: image_model(layers.Conv2D(4, 3), layers.Conv2D(4, 3, groups=2, name="c")),
               r"layer 'c' \(Conv2D\) has groups=2.*expected 1"),
    "channels_first": (lambda: image_model(layers.Conv2D(4, (3, 1), data_format="channels_first", name="c")),
                       r"layer 'c' \(Conv2D\) has data_format='channels_first'.*expected 'channels_last'"),
    "channels_first_pool": (lambda: image_model(layers.AveragePooling2D(1, data_format="channels_first", name="p")),
                            r"layer 'p' \(AveragePooling2D\) has data_format='channels_first'"),
    "keepdims_without_flatten": (lambda: image_model(layers.Conv2D(4, 3), layers.GlobalMaxPooling2D(
        keepdims=True, name="g"), layers.Conv2D(10, 1), layers.Flatten(), layers.Softmax(), head=False),
        r"layer 'g' \(GlobalMaxPooling2D\) has keepdims=True and is followed by layer 'conv2d.*' \(Conv2D\)"),
    "flatten_channels_first": (lambda: dense_after(layers.Flatten(data_format="channels_first", name="f"),
                                                   input_shape=(28, 28)),
                               r"layer 'f' \(Flatten\) has data_format='channels_first'"),
    "batchnorm_axis": (lambda: image_model(layers.Conv2D(4, 3), layers.BatchNormalization(axis=1, name="bn")),
                       r"layer 'bn' \(BatchNormalization\) normalises axis 1, expected the last axis"),
    "dense_on_image": (lambda: keras.Sequential([keras.Input((28, 28, 1)), layers.Dense(10, name="d"),
                                                 layers.Flatten(), layers.Dense(10, activation="softmax")]),
                       r"layer 'd' \(Dense\) gets a rank-3 input .*put a Flatten before it"),
    "float16": (lambda: dense_after(layers.Dense(8, dtype="mixed_float16", name="half")),
                r"layer 'half' \(Dense\) computes in float16, expected float32"),
    "quantized": (lambda: quantized(dense_after(layers.Dense(8, name="q"))),
                  r"layer 'q' \(Dense\) is quantized \(int8\), expected float32 weights"),
    "sigmoid_output": (lambda: dense_after(activation="sigmoid"),
                       r"the last layer 'out' uses activation 'sigmoid', which does not give probabilities"),
    "relu_output": (lambda: dense_after(activation="relu"), r"the last layer 'out' uses activation 'relu'"),
    "wrong_classes": (lambda: keras.Sequential([keras.Input((784,)), layers.Dense(3, activation="softmax")]),
                      r"outputs shape \(None, 3\), expected \(None, 10\)"),
    "input_shape": (lambda: image_model(input_shape=(32, 32, 1)), r"takes inputs of shape \(32, 32, 1\)"),
}


@pytest.mark.parametrize("build, message", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_models_are_refused_by_name(build, message):
    with pytest.raises(ExportError, match=message):
        convert_keras(build())


def test_refused_export_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="branches"):
        export_keras(branching_model(), tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []
