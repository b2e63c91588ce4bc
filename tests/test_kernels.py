"""Every kernel, on every instruction-set path this CPU runs, against the NumPy reference.

Each op is checked in isolation: the engine's own output of the previous layer (from `activations`) is fed
to the reference op, so an error cannot hide behind or be blamed on another layer. Tolerances are worst-case
float32 rounding bounds for the reduction at hand: a dot product of K terms in float32 is within
gamma_K * sum |x_i w_i| of the exact value, gamma_K = K u / (1 - K u), u = 2**-24 (Higham, Accuracy and
Stability of Numerical Algorithms, eq. 3.5) — so the bound is computed per output from |x| and |w|.
"""

import numpy as np
import pytest

import fastmnist
from fastmnist import _engine, reference
from random_models import V2_HEAVY_LAYERS, head, random_arrays, random_images, spec_for, write_model

ISAS = _engine.supported_isas()
U = 2.0 ** -24


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def engine_layers(path, isa, images, threads=1):
    model = fastmnist.load(path, isa=isa, num_threads=threads)
    return model, dict(model.activations(images))


def input_of(model, acts, name, images):
    """The engine's input to layer `name` (the previous layer's output, or the model input)."""
    names = [layer["name"] for layer in model.layers]
    index = names.index(name)
    if index == 0:
        return images.reshape(len(images), *model._spec.input_shape).astype(np.float64)
    return acts[names[index - 1]].astype(np.float64)


def check_within(got, want, bound, what):
    error = np.abs(got - want)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert np.all(error <= bound), (f"{what}: error {error[worst]:.3g} exceeds the bound {bound[worst]:.3g} "
                                    f"at {worst} (got {got[worst]}, want {want[worst]})")


def activation_slack(y, activation):
    """expm1f and the max in ELU/ReLU add at most a couple of ulps of the result."""
    return 4 * U * np.abs(y) + (1e-7 if activation == "elu" else 0.0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("units", [1, 7, 16, 17, 33, 300])
@pytest.mark.parametrize("activation", ["linear", "relu", "elu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_reference(tmp_path, isa, units, activation, use_bias):
    layer = {"type": "dense", "name": "fc", "units": units, "activation": activation, "use_bias": use_bias}
    path = write_model(tmp_path / "m.npz", [layer, *head()[1:]], input_shape=(784,), seed=units)
    images = random_images(9)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "fc", images)
    params = model_params(path, "fc")
    want = reference.dense(x, params["kernel"], params.get("bias"), activation)
    bound = gamma(784) * (np.abs(x) @ np.abs(params["kernel"]) + np.abs(params.get("bias", 0.0)))
    check_within(acts["fc"], want, bound + activation_slack(want, activation), f"dense {isa}")


CONV_CASES = [  # (in_c, filters, kernel, strides, padding)
    (1, 32, (5, 5), (1, 1), "same"),
    (1, 5, (3, 3), (2, 2), "same"),
    (3, 17, (5, 5), (1, 1), "valid"),
    (8, 16, (3, 2), (2, 1), "valid"),
    (13, 40, (4, 4), (2, 2), "same"),
    (32, 64, (5, 5), (1, 1), "same"),
    (2, 1, (1, 1), (3, 3), "valid"),
    (5, 9, (2, 2), (1, 2), "same"),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("in_c,filters,kernel,strides,padding", CONV_CASES)
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_conv2d_matches_reference(tmp_path, isa, in_c, filters, kernel, strides, padding, activation):
    # A first "valid" 4x4 conv makes an odd 25x25 map with in_c channels for the conv under test.
    prefix = [{"type": "conv2d", "name": "pre", "filters": in_c, "kernel_size": [4, 4], "activation": "relu"}]
    layer = {"type": "conv2d", "name": "conv", "filters": filters, "kernel_size": list(kernel),
             "strides": list(strides), "padding": padding, "activation": activation}
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()], seed=in_c * 100 + filters)
    images = random_images(3)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "conv", images)
    params = model_params(path, "conv")
    want = reference.conv2d(x, params["kernel"], params["bias"], strides, padding, activation)
    magnitude = reference.conv2d(np.abs(x), np.abs(params["kernel"]), np.abs(params["bias"]), strides, padding)
    bound = gamma(kernel[0] * kernel[1] * in_c) * magnitude + activation_slack(want, activation)
    check_within(acts["conv"], want, bound, f"conv2d {isa}")


POOL_CASES = [  # (input size from the "pre" conv, pool, strides, padding)
    ((28, 28), (2, 2), (2, 2), "same"),
    ((25, 25), (2, 2), (2, 2), "same"),   # the last window overhangs the input
    ((25, 25), (3, 3), (2, 2), "same"),
    ((25, 25), (3, 3), (2, 2), "valid"),
    ((24, 24), (2, 3), (1, 2), "valid"),
    ((25, 25), (3, 2), (3, 1), "same"),
    ((28, 28), (5, 5), (4, 4), "same"),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size,pool,strides,padding", POOL_CASES)
def test_maxpool2d_matches_reference_exactly(tmp_path, isa, size, pool, strides, padding):
    kernel = 29 - size[0]
    prefix = [{"type": "conv2d", "name": "pre", "filters": 7, "kernel_size": [kernel, kernel]}]  # negative values too
    layer = {"type": "maxpool2d", "name": "pool", "pool_size": list(pool), "strides": list(strides),
             "padding": padding}
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()])
    images = random_images(3)
    model, acts = engine_layers(path, isa, images)
    want = reference.maxpool2d(input_of(model, acts, "pool", images), pool, strides, padding)
    np.testing.assert_array_equal(acts["pool"], want.astype(np.float32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("where", ["after_dense", "after_conv"])
def test_batchnorm_matches_reference(tmp_path, isa, where):
    if where == "after_dense":
        prefix, input_shape = [{"type": "dense", "name": "pre", "units": 37}], (784,)
    else:
        prefix, input_shape = [{"type": "conv2d", "name": "pre", "filters": 11, "kernel_size": [3, 3]}], (28, 28, 1)
    layer = {"type": "batchnorm", "name": "bn", "epsilon": 0.01}
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()], input_shape=input_shape)
    images = random_images(4)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "bn", images)
    p = model_params(path, "bn")
    want = reference.batchnorm(x, p["gamma"], p["beta"], p["moving_mean"], p["moving_variance"], 0.01)
    scale = p["gamma"] / np.sqrt(p["moving_variance"] + 0.01)
    # scale and shift are rounded to float32 once, then one multiply-add: a few ulps of each term
    bound = 4 * U * (np.abs(x * scale) + np.abs(p["beta"]) + np.abs(p["moving_mean"] * scale)) + 1e-7
    check_within(acts["bn"], want, bound, f"batchnorm {isa}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ["relu", "elu", "softmax", "linear"])
@pytest.mark.parametrize("where", ["after_dense", "after_conv"])
def test_activation_layer_matches_reference(tmp_path, isa, activation, where):
    if where == "after_dense":
        prefix, input_shape = [{"type": "dense", "name": "pre", "units": 50}], (784,)
    else:  # softmax here is over the channels of every pixel
        prefix, input_shape = [{"type": "conv2d", "name": "pre", "filters": 6, "kernel_size": [5, 5]}], (28, 28, 1)
    layer = {"type": "activation", "name": "act", "activation": activation}
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()], input_shape=input_shape)
    images = random_images(4)
    model, acts = engine_layers(path, isa, images)
    want = reference.activate(input_of(model, acts, "act", images), activation)
    check_within(acts["act"], want, 8 * U * np.abs(want) + 2e-7, f"{activation} {isa}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("row_len", [1, 7, 9, 10, 33])
def test_softmax_matches_reference_over_a_wide_range_of_logits(tmp_path, isa, row_len):
    """Logits over 100 apart: probabilities from 1 down to far below float32's smallest normal, rows
    shorter and longer than a vector, and 5 rows so that the values end inside a vector. Bound: the rounding
    of x - max (u |x - max| relative, after exp) and a few ulps of exp, the sum and the scaling."""
    layers = [{"type": "dense", "name": "pre", "units": row_len},
              {"type": "activation", "name": "act", "activation": "softmax"}, *head()]
    arrays = random_arrays(layers, (784,), np.random.default_rng(row_len))
    arrays["pre/kernel"] *= 100.0
    path = tmp_path / "m.npz"
    fastmnist.format.save(path, spec_for(layers, (784,)), arrays)
    images = random_images(5)
    model, acts = engine_layers(path, isa, images)
    logits = input_of(model, acts, "act", images)
    want = reference.activate(logits, "softmax")
    spread = logits.max(axis=1, keepdims=True) - logits
    assert row_len == 1 or spread.max() > 100  # probabilities below e^-100 included
    # relative: x - max, exp, a sum of row_len terms, the scaling; absolute: below 1e-37 a value may be 0
    bound = want * (spread + 8 + row_len) * U + 1e-37
    check_within(acts["act"], want, bound, f"softmax {isa}")


def zero_patterns() -> np.ndarray:
    """Images that take every branch of the fast paths' zero skipping: blank, without a single zero, -0 in
    place of 0, one pixel at the first or last input, blank halves (whole vectors and blocks of pixels with
    nothing to list) and the usual sparse noise."""
    images = np.zeros((8, 28, 28), np.float32)
    images[1] = np.linspace(0.01, 1.0, 784, dtype=np.float32).reshape(28, 28)
    images[2] = -0.0
    images[2, 9:19, 9:19] = 0.5
    images[3, 0, 0] = 1.0
    images[4, 27, 27] = 1.0
    images[5, :, 14:] = random_images(1, seed=5)[0, :, 14:]
    images[6, 14:] = random_images(1, seed=6)[0, 14:]
    images[7] = random_images(1, seed=7)[0]
    return images


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("batch", ["one_by_one", "together"])
def test_zero_inputs_are_skipped_exactly(tmp_path, isa, batch):
    """The fast paths list the nonzero inputs of each block of images or pixels; each layer must still be
    within the rounding bound of its reference, alone (the single-row path) and in blocks of 6 plus a tail."""
    layers = [
        {"type": "dense", "name": "d1", "units": 300, "activation": "relu"},
        {"type": "dense", "name": "d2", "units": 37, "activation": "relu"},
        {"type": "dense", "name": "d3", "units": 10, "activation": "softmax"},
    ]
    dense_path = write_model(tmp_path / "dense.npz", layers, input_shape=(784,), seed=11)
    # in_c 9 gives rows of 27 taps (whole vectors and a tail); in_c 1 rows of 3 taps, which are not listed
    layers = [
        {"type": "conv2d", "name": "c1", "filters": 9, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
        {"type": "conv2d", "name": "c2", "filters": 20, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
        {"type": "maxpool2d", "name": "p", "pool_size": [2, 2], "padding": "same"},
        *head(),
    ]
    conv_path = write_model(tmp_path / "conv.npz", layers, seed=12)
    images = zero_patterns()
    for path in (dense_path, conv_path):
        model = fastmnist.load(path, isa=isa, num_threads=1)
        if batch == "together":
            acts = dict(model.activations(images))
        else:
            singles = [dict(model.activations(image[None])) for image in images]
            acts = {name: np.concatenate([s[name] for s in singles]) for name in singles[0]}
        for name, kind in [(layer["name"], layer["type"]) for layer in model.layers]:
            if kind not in ("dense", "conv2d"):
                continue
            x, params = input_of(model, acts, name, images), model_params(path, name)
            layer = next(layer for layer in model.layers if layer["name"] == name)
            activation = "linear" if layer["activation"] == "softmax" else layer["activation"]
            got = acts[name] if activation != "linear" else None
            if kind == "dense":
                want = reference.dense(x, params["kernel"], params["bias"], activation)
                bound = gamma(x.shape[1]) * (np.abs(x) @ np.abs(params["kernel"]) + np.abs(params["bias"]))
            else:
                want = reference.conv2d(x, params["kernel"], params["bias"], (1, 1), "same", activation)
                bound = gamma(x.shape[-1] * 9) * reference.conv2d(np.abs(x), np.abs(params["kernel"]),
                                                                   np.abs(params["bias"]), (1, 1), "same")
            if got is None:  # the softmax head: compare its probabilities instead of logits
                got, want = acts[name], reference.activate(want, "softmax")
                bound = np.full_like(want, 1e-6)
            check_within(got, want, bound + activation_slack(want, activation), f"{name} {isa} {batch}")


@pytest.mark.parametrize("isa", ISAS)
def test_wide_dense_input_is_summed_in_chunks_exactly(tmp_path, isa):
    """At a batch of 64, a dense layer on 2,352 inputs takes them in chunks (its sums wait in the output in
    between): each output must be within its rounding bound, blocks with nothing listed in a chunk included,
    and the same bits as the image's own single-row result."""
    layers = [
        {"type": "conv2d", "name": "c", "filters": 3, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
        {"type": "flatten", "name": "f"},
        {"type": "dense", "name": "d", "units": 37, "activation": "elu"},
        *head(),
    ]
    path = write_model(tmp_path / "wide.npz", layers, seed=13)
    images = np.concatenate([zero_patterns(), np.zeros((6, 28, 28), np.float32), random_images(50, seed=14)])
    images[20:26, 10:] = 0.0  # a block whose last chunks list nothing
    model = fastmnist.load(path, isa=isa, num_threads=1)
    acts = dict(model.activations(images))
    x, params = input_of(model, acts, "d", images), model_params(path, "d")
    want = reference.dense(x, params["kernel"], params["bias"], "elu")
    bound = gamma(x.shape[1]) * (np.abs(x) @ np.abs(params["kernel"]) + np.abs(params["bias"]))
    check_within(acts["d"], want, bound + activation_slack(want, "elu"), f"chunked dense {isa}")
    alone = np.concatenate([dict(model.activations(image[None]))["d"] for image in images])
    np.testing.assert_array_equal(acts["d"], alone)


@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "scalar"])
def test_fast_paths_match_scalar_path(tmp_path, isa):
    """The fast path against the obviously-right one, layer by layer, on a model with odd sizes everywhere."""
    layers = [
        {"type": "conv2d", "name": "c1", "filters": 19, "kernel_size": [3, 5], "strides": [2, 1], "padding": "same",
         "activation": "relu"},
        {"type": "maxpool2d", "name": "p1", "pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
        {"type": "conv2d", "name": "c2", "filters": 33, "kernel_size": [3, 3], "activation": "elu"},
        {"type": "flatten", "name": "f"},
        {"type": "dense", "name": "d1", "units": 47, "activation": "relu"},
        {"type": "dense", "name": "d2", "units": 10, "activation": "softmax"},
    ]
    path = write_model(tmp_path / "m.npz", layers)
    images = random_images(13)
    _, fast = engine_layers(path, isa, images)
    _, scalar = engine_layers(path, "scalar", images)
    for name in fast:
        # each layer is within gamma_K sum|x w| of exact on its own input (tests above, K <= 300 here);
        # stacked, the two paths drift apart by a few times that: well under 2e-5 of the layer's scale
        scale = np.abs(scalar[name]).max() + 1e-30
        np.testing.assert_allclose(fast[name], scalar[name], rtol=0, atol=2e-5 * scale, err_msg=name)


def model_params(path, layer_name) -> dict:
    """The float64 arrays of one layer, straight from the file."""
    _, arrays = fastmnist.format.read(path)
    prefix = f"{layer_name}/"
    return {k[len(prefix):]: v.astype(np.float64) for k, v in arrays.items() if k.startswith(prefix)}


# ---- format version 2: activations, depthwise convolution, average and global pools, padding ----

# Each vector activation's error bound, from the analysis in fastmnist/_kernels/simd.h (u = 2**-24): a
# relative term in units of u, and an absolute term where exp(x) below -87 (under 1.7e-38) becomes 0. The
# scalar path (the C library, and double for gelu) is within the same bounds.
ACTIVATION_CASES = {  # id: (activation, relative bound in u, absolute bound)
    "relu": ("relu", 0, 0.0),
    "relu6": ({"name": "relu", "max_value": 6.0}, 0, 0.0),
    "leaky_threshold_cap": ({"name": "relu", "negative_slope": 0.25, "threshold": 0.5, "max_value": 4.0}, 2, 0.0),
    "elu": ("elu", 6, 0.0),
    "elu_alpha": ({"name": "elu", "alpha": 0.75}, 6, 0.0),
    "selu": ("selu", 7, 0.0),
    "tanh": ("tanh", 10, 0.0),
    "sigmoid": ("sigmoid", 9, 1e-37),
    "hard_sigmoid": ("hard_sigmoid", None, 0.0),  # bounded per value below
    "hard_sigmoid_keras3": ({"name": "hard_sigmoid", "alpha": 1 / 6}, None, 0.0),
    "silu": ("silu", 10, 2e-36),
    "gelu": ("gelu", 24, 1e-36),
    "gelu_tanh": ({"name": "gelu", "approximate": True}, None, 1e-37),  # relative term grows with |y|
    "softplus": ("softplus", 12, 1e-37),
    "linear": ("linear", 0, 0.0),
}


def activation_bound(x: np.ndarray, activation, want: np.ndarray) -> np.ndarray:
    spec = fastmnist.layers.parse_activation(activation)
    _, relative, absolute = next(c for c in ACTIVATION_CASES.values() if fastmnist.layers.parse_activation(c[0]) == spec)
    if relative is not None:
        return relative * U * np.abs(want) + absolute
    if spec.name == "hard_sigmoid":  # one rounding of alpha x + beta, and alpha and beta rounded to float32
        return 2 * U * (np.abs(spec["alpha"] * x) + abs(spec["beta"]))
    two_y = 2 * np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)  # gelu tanh: sigmoid(2y) turns 4u |2y| relative
    return (11 + 4 * np.abs(two_y)) * U * np.abs(want) + absolute


def identity_layer(kind: str, activation) -> list[dict]:
    """A layer whose pre-activation is exactly its input (a weight of 1 on one input), so that the fused
    activation is tested on known values; and the input shape it takes."""
    if kind == "dense":
        return [{"type": "dense", "name": "f", "units": 784, "activation": activation, "use_bias": False}], (784,)
    if kind == "conv2d":
        return [{"type": "conv2d", "name": "f", "filters": 1, "kernel_size": [1, 1], "activation": activation,
                 "use_bias": False}], (28, 28, 1)
    if kind == "depthwise_conv2d":
        return [{"type": "depthwise_conv2d", "name": "f", "kernel_size": [1, 1], "activation": activation,
                 "use_bias": False}], (28, 28, 1)
    return [{"type": "activation", "name": "f", "activation": activation}], (784,)


def activation_inputs() -> np.ndarray:
    """Pixels that the input range [-100, 100] maps to -100 .. 100 (past exp's underflow at -87), to -2 .. 2
    finely, to the region near 0, and to sparse noise."""
    images = np.zeros((4, 28, 28), np.float32)
    images[0] = np.linspace(0.0, 1.0, 784, dtype=np.float32).reshape(28, 28)
    images[1] = np.linspace(0.49, 0.51, 784, dtype=np.float32).reshape(28, 28)
    images[2] = np.linspace(0.4999, 0.5001, 784, dtype=np.float32).reshape(28, 28)
    images[3] = random_images(1, seed=3)[0]
    return images


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("producer", ["dense", "conv2d", "depthwise_conv2d", "activation"])
@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_matches_reference(tmp_path, isa, producer, case):
    """Every activation, fused into each producing kernel's epilogue and as an activation layer, on values
    from -100 to 100, against the float64 reference within the bound of its approximation."""
    activation = ACTIVATION_CASES[case][0]
    layers, input_shape = identity_layer(producer, activation)
    layers = [*layers, *head()] if len(input_shape) == 3 else [*layers, *head()[1:]]
    arrays = random_arrays(layers, input_shape, np.random.default_rng(0))
    if producer == "dense":
        arrays["f/kernel"] = np.eye(784, dtype=np.float32)
    elif producer != "activation":
        arrays["f/kernel"][:] = 1.0
    path = tmp_path / "m.npz"
    fastmnist.format.save(path, spec_for(layers, input_shape, input_range=(-100.0, 100.0)), arrays)
    images = activation_inputs()
    model = fastmnist.load(path, isa=isa, num_threads=1)
    x = model_input(images, (-100.0, 100.0), tmp_path)
    got = dict(model.activations(images))["f"].reshape(len(images), -1)
    want = reference.activate(x, activation)
    check_within(got, want, activation_bound(x, activation, want), f"{case} in {producer} {isa}")


def model_input(images: np.ndarray, input_range, workdir) -> np.ndarray:
    """The model input the engine computes from float pixels (lo + (hi - lo) p in float32), as float64: the
    output of a linear dense identity, which adds one product by 1 and zeros, exactly."""
    layers = [{"type": "dense", "name": "id", "units": 784, "use_bias": False}, *head()[1:]]
    arrays = random_arrays(layers, (784,), np.random.default_rng(0))
    arrays["id/kernel"] = np.eye(784, dtype=np.float32)
    path = fastmnist.format.save(workdir / "identity.npz", spec_for(layers, (784,), input_range=input_range), arrays)
    engine = fastmnist.load(path, isa="scalar", num_threads=1)
    return dict(engine.activations(images))["id"].astype(np.float64).reshape(len(images), -1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_of_huge_values_matches_reference(tmp_path, isa, case):
    """Pre-activations up to 1e30, whose squares and cubes overflow float32 (gelu's forms square x): every
    activation stays finite and within its bound, as it must for weights that are large but finite."""
    activation = ACTIVATION_CASES[case][0]
    layers, input_shape = identity_layer("dense", activation)
    layers = [*layers, {"type": "dense", "name": "head", "units": 10, "use_bias": False},
              {"type": "activation", "name": "probabilities", "activation": "softmax"}]
    arrays = random_arrays(layers, input_shape, np.random.default_rng(0))
    arrays["f/kernel"] = np.eye(784, dtype=np.float32) * np.float32(1e30)
    arrays["head/kernel"][:] = 0.0  # the probabilities stay finite whatever f's outputs are
    path = tmp_path / "m.npz"
    fastmnist.format.save(path, spec_for(layers, input_shape, input_range=(-1.0, 1.0)), arrays)
    images = activation_inputs()
    model = fastmnist.load(path, isa=isa, num_threads=1)
    # the pre-activation is one float32 product (the other terms are exact zeros)
    x = (model_input(images, (-1.0, 1.0), tmp_path).astype(np.float32) * np.float32(1e30)).astype(np.float64)
    got = dict(model.activations(images))["f"].reshape(len(images), -1)
    want = reference.activate(x, activation)
    assert np.isfinite(got).all(), f"{case} {isa}: non-finite outputs"
    check_within(got, want, activation_bound(x, activation, want), f"{case} of huge values {isa}")


DEPTHWISE_CASES = [  # (in_c, depth_multiplier, kernel, strides, padding)
    (1, 1, (3, 3), (1, 1), "same"),
    (1, 3, (5, 5), (2, 2), "valid"),
    (7, 1, (3, 3), (1, 1), [[2, 0], [1, 3]]),
    (7, 2, (3, 2), (2, 1), "same"),
    (16, 1, (3, 3), (1, 1), "valid"),
    (17, 2, (3, 3), (2, 2), [[0, 1], [1, 0]]),
    (33, 1, (5, 5), (1, 1), "same"),
    (11, 3, (2, 2), (3, 3), "valid"),        # strides larger than the window
    (5, 2, (1, 1), (4, 5), [[3, 4], [0, 6]]),  # windows that see only padding
    (3, 1, (4, 4), (2, 3), [[1, 2], [2, 1]]),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("in_c,multiplier,kernel,strides,padding", DEPTHWISE_CASES)
@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid"])
def test_depthwise_conv2d_matches_reference(tmp_path, isa, in_c, multiplier, kernel, strides, padding, activation):
    prefix = [{"type": "conv2d", "name": "pre", "filters": in_c, "kernel_size": [4, 4], "activation": "relu"}]
    layer = {"type": "depthwise_conv2d", "name": "dw", "kernel_size": list(kernel), "strides": list(strides),
             "padding": padding, "depth_multiplier": multiplier, "activation": activation}
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()], seed=in_c * 10 + multiplier)
    images = random_images(3)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "dw", images)
    params = model_params(path, "dw")
    want = reference.depthwise_conv2d(x, params["kernel"], params["bias"], strides, padding, activation)
    magnitude = reference.depthwise_conv2d(np.abs(x), np.abs(params["kernel"]), np.abs(params["bias"]), strides,
                                           padding)
    linear_bound = gamma(kernel[0] * kernel[1] + 1) * magnitude
    # the activation's own error, plus the pre-activation's error carried through (sigmoid' <= 1/4, relu' <= 1)
    bound = linear_bound + activation_bound(want, activation, want) if activation != "linear" else linear_bound
    check_within(acts["dw"], want, bound, f"depthwise {isa}")


EXPLICIT_CONV_CASES = [  # (in_c, filters, kernel, strides, padding)
    (3, 17, (3, 3), (1, 1), [[1, 0], [0, 2]]),
    (8, 16, (5, 3), (2, 1), [[4, 4], [2, 0]]),
    (1, 5, (3, 3), (2, 2), [[0, 3], [3, 0]]),
    (2, 3, (1, 1), (60, 60), [[30, 0], [30, 0]]),  # the left pad is wider than the columns the windows read
    (9, 33, (2, 2), (3, 3), [[0, 0], [1, 1]]),     # strides larger than the window
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("in_c,filters,kernel,strides,padding", EXPLICIT_CONV_CASES)
def test_conv2d_with_explicit_padding_matches_reference(tmp_path, isa, in_c, filters, kernel, strides, padding):
    prefix = [{"type": "conv2d", "name": "pre", "filters": in_c, "kernel_size": [4, 4], "activation": "relu"}]
    layer = {"type": "conv2d", "name": "conv", "filters": filters, "kernel_size": list(kernel),
             "strides": list(strides), "padding": padding, "activation": "relu"}
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()], seed=in_c + filters)
    images = random_images(3)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "conv", images)
    params = model_params(path, "conv")
    want = reference.conv2d(x, params["kernel"], params["bias"], strides, padding, "relu")
    magnitude = reference.conv2d(np.abs(x), np.abs(params["kernel"]), np.abs(params["bias"]), strides, padding)
    check_within(acts["conv"], want, gamma(kernel[0] * kernel[1] * in_c) * magnitude, f"conv2d {isa}")


EXPLICIT_POOL_CASES = [  # (input size from the "pre" conv, pool, strides, padding)
    ((25, 25), (3, 3), (2, 2), [[2, 0], [0, 2]]),
    ((24, 24), (2, 3), (1, 2), [[1, 1], [2, 2]]),
    ((25, 25), (2, 2), (3, 3), [[1, 0], [0, 1]]),  # strides larger than the window
    ((28, 28), (5, 5), (4, 4), [[4, 4], [0, 3]]),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size,pool,strides,padding", POOL_CASES + EXPLICIT_POOL_CASES)
@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d", "avgpool2d_include_pad"])
def test_pools_match_reference(tmp_path, isa, size, pool, strides, padding, kind):
    """Max is exact. Avg sums K values (gamma_K of the sum of |x|) and divides once (u of the result)."""
    kernel = 29 - size[0]
    prefix = [{"type": "conv2d", "name": "pre", "filters": 7, "kernel_size": [kernel, kernel]}]  # negative values too
    layer = {"type": kind.replace("_include_pad", ""), "name": "pool", "pool_size": list(pool),
             "strides": list(strides), "padding": padding}
    include_pad = kind.endswith("include_pad")
    if kind != "maxpool2d":
        layer["count_include_pad"] = include_pad
    path = write_model(tmp_path / "m.npz", [*prefix, layer, *head()])
    images = random_images(3)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "pool", images)
    if kind == "maxpool2d":
        np.testing.assert_array_equal(acts["pool"], reference.maxpool2d(x, pool, strides, padding).astype(np.float32))
        return
    want = reference.avgpool2d(x, pool, strides, padding, include_pad)
    magnitude = reference.avgpool2d(np.abs(x), pool, strides, padding, include_pad)
    check_within(acts["pool"], want, gamma(pool[0] * pool[1]) * magnitude + U * np.abs(want), f"{kind} {isa}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("channels", [1, 7, 16, 33])
def test_global_pools_match_reference(tmp_path, isa, channels):
    layers = [{"type": "conv2d", "name": "pre", "filters": channels, "kernel_size": [3, 3], "strides": [1, 2]},
              {"type": "global_avgpool2d", "name": "gap"}, {"type": "dense", "name": "out", "units": 10,
                                                              "activation": "softmax"}]
    path = write_model(tmp_path / "avg.npz", layers, seed=channels)
    images = random_images(7)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "gap", images)
    want = reference.global_avgpool2d(x)
    bound = gamma(x.shape[1] * x.shape[2]) * np.abs(x).mean(axis=(1, 2)) + U * np.abs(want)
    check_within(acts["gap"], want, bound, f"global_avgpool2d {isa}")
    layers[1] = {"type": "global_maxpool2d", "name": "gmp"}
    path = write_model(tmp_path / "max.npz", layers, seed=channels)
    model, acts = engine_layers(path, isa, images)
    np.testing.assert_array_equal(acts["gmp"], reference.global_maxpool2d(input_of(model, acts, "gmp", images)))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pads", [[[0, 0], [0, 0]], [[1, 2], [3, 0]], [[0, 5], [0, 1]], [[7, 0], [2, 9]]])
def test_zeropad2d_is_exact(tmp_path, isa, pads):
    layers = [{"type": "conv2d", "name": "pre", "filters": 3, "kernel_size": [2, 2]},
              {"type": "zeropad2d", "name": "pad", "padding": pads}, *head()]
    path = write_model(tmp_path / "m.npz", layers)
    images = random_images(3)
    model, acts = engine_layers(path, isa, images)
    want = reference.zeropad2d(input_of(model, acts, "pad", images), pads)
    np.testing.assert_array_equal(acts["pad"], want.astype(np.float32))


BATCHNORM_PLACES = {  # where: (layers before the batchnorm, input shape)
    "first_on_an_image": ([], (28, 28, 1)),
    "first_on_a_vector": ([], (784,)),
    "first_on_rows": ([], (28, 28)),
    "after_depthwise": ([{"type": "depthwise_conv2d", "name": "pre", "kernel_size": [3, 3], "depth_multiplier": 3}],
                        (28, 28, 1)),
    "after_global_pool": ([{"type": "conv2d", "name": "pre0", "filters": 9, "kernel_size": [3, 3]},
                           {"type": "global_avgpool2d", "name": "pre"}], (28, 28, 1)),
    "on_a_1x1_map_between_convs": ([{"type": "conv2d", "name": "pre", "filters": 8, "kernel_size": [28, 28]}],
                                   (28, 28, 1)),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("where", list(BATCHNORM_PLACES))
def test_batchnorm_anywhere_matches_reference(tmp_path, isa, where):
    """Batchnorm in any position, on a vector or a map; on a 1 x 1 map a conv2d follows it, which must still
    run image by image in a batch of 7."""
    prefix, input_shape = BATCHNORM_PLACES[where]
    layers = [*prefix, {"type": "batchnorm", "name": "bn", "epsilon": 0.01}]
    if where == "on_a_1x1_map_between_convs":
        layers.append({"type": "conv2d", "name": "post", "filters": 6, "kernel_size": [1, 1], "activation": "elu"})
    layers += head() if len(input_shape) > 1 and where != "after_global_pool" else head()[1:]
    path = write_model(tmp_path / "m.npz", layers, input_shape=input_shape)
    images = random_images(7)
    model, acts = engine_layers(path, isa, images)
    x = input_of(model, acts, "bn", images) if prefix else model_input(images, (0.0, 1.0), tmp_path).reshape(7, *input_shape)
    p = model_params(path, "bn")
    want = reference.batchnorm(x, p["gamma"], p["beta"], p["moving_mean"], p["moving_variance"], 0.01)
    scale = p["gamma"] / np.sqrt(p["moving_variance"] + 0.01)
    bound = 4 * U * (np.abs(x * scale) + np.abs(p["beta"]) + np.abs(p["moving_mean"] * scale)) + 1e-7
    check_within(acts["bn"], want, bound, f"batchnorm {where} {isa}")
    if where == "on_a_1x1_map_between_convs":
        q = model_params(path, "post")
        bn = acts["bn"].astype(np.float64)
        want = reference.conv2d(bn, q["kernel"], q["bias"], activation="elu")
        magnitude = reference.conv2d(np.abs(bn), np.abs(q["kernel"]), np.abs(q["bias"]))
        check_within(acts["post"], want, gamma(9) * magnitude + activation_slack(want, "elu"), f"post conv {isa}")


@pytest.mark.parametrize("isa", ISAS)
def test_zero_skipping_after_activations_that_are_not_zero_at_zero(tmp_path, isa):
    """Zero skipping skips inputs that are exactly 0 whatever made them: hard_sigmoid gives exact zeros and
    ones, sigmoid none, zeropad a border of zeros. Each layer within its bound, alone and in a batch."""
    layers = [
        {"type": "zeropad2d", "name": "pad", "padding": [[2, 1], [0, 3]]},
        {"type": "conv2d", "name": "c1", "filters": 9, "kernel_size": [3, 3], "activation": "hard_sigmoid"},
        {"type": "conv2d", "name": "c2", "filters": 20, "kernel_size": [3, 3], "padding": [[1, 1], [1, 1]],
         "activation": "sigmoid"},
        {"type": "flatten", "name": "f"},
        {"type": "dense", "name": "d1", "units": 37, "activation": {"name": "relu", "threshold": 0.5}},
        {"type": "dense", "name": "d2", "units": 10, "activation": "softmax"},
    ]
    path = write_model(tmp_path / "m.npz", layers, seed=21)
    images = zero_patterns()
    model = fastmnist.load(path, isa=isa, num_threads=1)
    acts = dict(model.activations(images))
    singles = [dict(model.activations(image[None])) for image in images]
    for name in acts:
        np.testing.assert_array_equal(acts[name], np.concatenate([s[name] for s in singles]), err_msg=name)
    for name, padding, activation in [("c1", "valid", "hard_sigmoid"), ("c2", [[1, 1], [1, 1]], "sigmoid")]:
        x, q = input_of(model, acts, name, images), model_params(path, name)
        linear = reference.conv2d(x, q["kernel"], q["bias"], (1, 1), padding)
        want = reference.activate(linear, activation)
        magnitude = reference.conv2d(np.abs(x), np.abs(q["kernel"]), np.abs(q["bias"]), (1, 1), padding)
        # the sum's error, carried at the activation's largest slope (0.2 and 1/4), and the activation's own
        slope = 0.2 if activation == "hard_sigmoid" else 0.25
        bound = slope * gamma(x.shape[-1] * 9) * magnitude + activation_bound(linear, activation, want)
        check_within(acts[name], want, bound, f"{name} {isa}")
    x, q = input_of(model, acts, "d1", images), model_params(path, "d1")
    want = reference.dense(x, q["kernel"], q["bias"], {"name": "relu", "threshold": 0.5})
    pre = np.abs(x) @ np.abs(q["kernel"]) + np.abs(q["bias"])
    # a sum within its bound of the threshold may land on either side of it: allow the value it jumps to
    linear = reference.dense(x, q["kernel"], q["bias"])
    bound = gamma(x.shape[1]) * pre + np.where(np.abs(linear - 0.5) <= gamma(x.shape[1]) * pre, 0.5 + 1e-6, 0.0)
    check_within(acts["d1"], want, bound, f"d1 {isa}")


@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "scalar"])
def test_fast_paths_match_scalar_path_on_version_2_layers(tmp_path, isa):
    """The fast paths against the scalar one on a model of every version 2 layer, odd sizes everywhere."""
    path = write_model(tmp_path / "m.npz", V2_HEAVY_LAYERS, seed=8)
    images = random_images(13)
    _, fast = engine_layers(path, isa, images)
    _, scalar = engine_layers(path, "scalar", images)
    for name in fast:
        # each layer within its bound of exact (the tests above, K <= 25 * 48 here); stacked, well under
        # 2e-5 of the layer's scale
        scale = np.abs(scalar[name]).max() + 1e-30
        np.testing.assert_allclose(fast[name], scalar[name], rtol=0, atol=2e-5 * scale, err_msg=name)


@pytest.mark.parametrize("isa", ISAS)
def test_version_2_layers_give_the_same_bits_in_any_batch_and_thread_count(tmp_path, isa):
    """Depthwise, pools, padding and the vector activations add and round each value the same way whatever
    the batch (1, 7, 65), the thread count, or a team of two splitting one image's rows and channels."""
    path = write_model(tmp_path / "m.npz", V2_HEAVY_LAYERS, seed=9)
    images = random_images(65, seed=10)
    images[3] = 0.0
    alone = np.concatenate([fastmnist.load(path, isa=isa, num_threads=1).predict_proba(image) for image in images])
    for threads in (1, 2):
        model = fastmnist.load(path, isa=isa, num_threads=threads)
        for batch in (1, 7, 65):
            got = np.concatenate([model.predict_proba(images[i:i + batch]) for i in range(0, 65, batch)])
            np.testing.assert_array_equal(got, alone, err_msg=f"{threads} threads, batches of {batch}")
