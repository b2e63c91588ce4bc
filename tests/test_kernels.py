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
from random_models import head, random_arrays, random_images, spec_for, write_model

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
