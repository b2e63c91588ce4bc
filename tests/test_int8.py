"""Int8 models: the quantizer, the format's checks, the NumPy integer reference, and every int8 kernel path
against the scalar one, bit for bit (integer paths are exact: no tolerance anywhere but the float softmax
against the reference's float64 one)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import fastmnist
from fastmnist import _engine, format, int8_format, reference_int8, spec
from fastmnist.quantize import calibration_set, choose_range, quantize
from random_models import head, random_images, write_model

ISAS = _engine.supported_int8_isas()
FAST_ISAS = [isa for isa in ISAS if isa != "scalar"]
SOFTMAX_ATOL = 1e-6  # float32 softmax of 10 identical float32 logits against float64: a few ulp of 1

# Odd sizes everywhere: dense widths that are not multiples of 4, 16 or 64, more columns than one column block
# (129 > 8 panels of 16), channel counts that leave partial panels, taps per kernel row that are not groups of 4.
MLP_LAYERS = [
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "wide", "units": 129, "activation": "relu"},
    {"type": "dense", "name": "tiled", "units": 64, "activation": "relu"},  # a multiple of 64 inputs next: AMX
    {"type": "dense", "name": "odd", "units": 45, "activation": "linear"},  # signed: a nonzero zero point
    {"type": "dense", "name": "capped", "units": 33, "activation": {"name": "relu", "max_value": 0.5}},
    {"type": "dense", "name": "smooth", "units": 17, "activation": "elu"},
    {"type": "dense", "name": "out", "units": 10, "activation": "softmax"},
]
CNN_LAYERS = [
    {"type": "conv2d", "name": "c1", "filters": 5, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
    {"type": "conv2d", "name": "c2", "filters": 17, "kernel_size": [5, 5], "strides": [2, 2], "padding": "valid",
     "activation": "linear"},
    {"type": "maxpool2d", "name": "pool", "pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
    {"type": "activation", "name": "act", "activation": {"name": "relu", "negative_slope": 0.1}},
    {"type": "conv2d", "name": "c3", "filters": 33, "kernel_size": [2, 3], "padding": [[1, 0], [2, 1]],
     "activation": "tanh"},
    *head(),
]

# Enough multiply-adds per image that a batch of one is split between a team of threads: each op's share by
# output rows (heights 26 and 11 split unevenly), dense columns in shares of 64 (129 leaves a partial panel).
TEAM_CNN_LAYERS = [
    {"type": "conv2d", "name": "c1", "filters": 19, "kernel_size": [3, 3], "padding": "valid", "activation": "relu"},
    {"type": "conv2d", "name": "c2", "filters": 40, "kernel_size": [5, 5], "padding": "same", "activation": "relu"},
    {"type": "maxpool2d", "name": "pool", "pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
    {"type": "conv2d", "name": "c3", "filters": 21, "kernel_size": [3, 3], "padding": [[0, 1], [1, 0]],
     "activation": "linear"},
    {"type": "activation", "name": "act", "activation": "elu"},
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "wide", "units": 129, "activation": "relu"},
    {"type": "dense", "name": "out", "units": 10, "activation": "softmax"},
]
# A dense-only model whose batch of 3 is worth two threads: a team splits its dense layers by columns.
TEAM_MLP_LAYERS = [
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "wide", "units": 1700, "activation": "relu"},
    {"type": "dense", "name": "odd", "units": 77, "activation": "linear"},
    {"type": "dense", "name": "out", "units": 10, "activation": "softmax"},
]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """name -> path of int8 models quantized from random float models."""
    tmp = tmp_path_factory.mktemp("int8")
    calibration = random_images(96, seed=5)
    paths = {}
    for name, layers in (("mlp", MLP_LAYERS), ("cnn", CNN_LAYERS), ("team_cnn", TEAM_CNN_LAYERS),
                         ("team_mlp", TEAM_MLP_LAYERS)):
        source = write_model(tmp / f"{name}.npz", layers, seed=3)
        paths[name] = quantize(source, tmp / f"{name}_int8.npz", calibration)
    return paths


def images(count: int, seed: int = 11) -> np.ndarray:
    return random_images(count, seed)


def load_spec(path) -> spec.ModelSpec:
    return spec.parse(*format.read(path), str(path))


# --- the requantization ---------------------------------------------------------------------------------

@pytest.mark.parametrize("real", [0.5, 0.25, 2.0 ** -32, 0.999, 0.3, 1e-5, 0.75 - 2 ** -40])
def test_quantized_multiplier_is_real_to_31_bits(real):
    multiplier, shift = int8_format.quantized_multiplier(real)
    assert 2 ** 30 <= multiplier < 2 ** 31 and 0 <= shift <= 31
    assert abs(Fraction(multiplier, 2 ** (31 + shift)) - Fraction(real)) <= Fraction(1, 2 ** (32 + shift))


@pytest.mark.parametrize("real", [1.0, 1.5, 2.0 ** -33, 0.0, 1 - 2 ** -40])
def test_quantized_multiplier_refuses_what_a_right_shift_cannot_express(real):
    with pytest.raises(fastmnist.layers.LayerError, match="multiplier"):
        int8_format.quantized_multiplier(real)


def test_reference_requantize_is_gemmlowps_two_roundings():
    """Against exact rational arithmetic: the high multiply round(acc * m / 2^31) with ties up (gemmlowp's nudge),
    then round(high / 2^shift) with ties away from zero; ties included (m = 2^30 and odd acc make them)."""
    rng = np.random.default_rng(0)
    acc = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 4000), [0, 1, -1, 2 ** 31 - 1, -2 ** 31, 3, -3, -5, 5]])
    multiplier = np.where(np.arange(len(acc)) % 3 == 0, 2 ** 30, rng.integers(2 ** 30, 2 ** 31, len(acc)))
    shift = rng.integers(0, 32, len(acc))

    def round_half_up(value: Fraction) -> int:
        return math.floor(value + Fraction(1, 2))

    def round_away(value: Fraction) -> int:
        return int(math.copysign(math.floor(abs(value) + Fraction(1, 2)), value))

    high = reference_int8.rounding_doubling_high_mul(acc.astype(np.int64), multiplier.astype(np.int64))
    result = reference_int8.rounding_divide_by_pot(high, shift.astype(np.int64))
    for a, m, s, h, r in zip(acc, multiplier, shift, high, result):
        expected_high = round_half_up(Fraction(int(a) * int(m), 2 ** 31))
        assert h == expected_high and r == round_away(Fraction(expected_high, 2 ** int(s)))


# --- the engine against the NumPy integer reference, and every path against the scalar one -------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_every_layer_equals_the_integer_reference(quantized, name, isa):
    model = fastmnist.load(quantized[name], isa=isa, num_threads=1)
    model_spec = load_spec(quantized[name])
    x = images(7)
    expected = reference_int8.layer_outputs(model_spec, x)
    got = model.quantized_op_outputs(x)
    computing = [i for i, p in enumerate(model_spec.layers) if p.layer.type != "flatten"]
    assert len(got) == len(computing)
    for output, i in zip(got[:-1], computing[:-1]):
        np.testing.assert_array_equal(output.reshape(expected[i].shape), expected[i],
                                      err_msg=model_spec.layers[i].layer.name)
    np.testing.assert_allclose(got[-1], expected[-1], rtol=0, atol=SOFTMAX_ATOL)


@pytest.mark.parametrize("isa", FAST_ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 7, 49, 65])  # 49: 3 AMX row tiles and a row for VNNI
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fast_path_equals_scalar_bit_for_bit(quantized, name, batch, threads, isa):
    x = images(batch, seed=batch)
    scalar = fastmnist.load(quantized[name], isa="scalar", num_threads=1)
    fast = fastmnist.load(quantized[name], isa=isa, num_threads=threads)
    np.testing.assert_array_equal(fast.predict_proba(x), scalar.predict_proba(x))
    for got, expected in zip(fast.quantized_op_outputs(x), scalar.quantized_op_outputs(x)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("name, batches", [("team_cnn", [1, 2, 3]), ("team_mlp", [3])])
def test_team_of_threads_equals_one_thread_bit_for_bit(quantized, name, batches, threads, isa):
    scalar = fastmnist.load(quantized[name], isa="scalar", num_threads=1)
    one = fastmnist.load(quantized[name], isa=isa, num_threads=1)
    team = fastmnist.load(quantized[name], isa=isa, num_threads=threads)
    for batch in batches:
        if _engine.openmp_version():  # a team, not a split of images
            assert 1 < team.threads_for(batch) and batch < 2 * team.threads_for(batch)
        x = images(batch, seed=batch + threads)
        expected = scalar.predict_proba(x)
        np.testing.assert_array_equal(one.predict_proba(x), expected)
        np.testing.assert_array_equal(team.predict_proba(x), expected)
        pixels = np.ascontiguousarray((x * 255).round().astype(np.uint8))  # read in place by a dense-only model
        np.testing.assert_array_equal(team.predict_proba(pixels), scalar.predict_proba(pixels))


@pytest.mark.parametrize("name", ["team_cnn", "team_mlp"])
def test_team_of_threads_names_the_first_bad_pixel(quantized, name):
    team = fastmnist.load(quantized[name], num_threads=2)
    x = images(3)
    x[2, 27, 27] = np.nan  # in the second thread's share of the pixels
    x[1, 20, 3] = 1.5
    with pytest.raises(ValueError, match=r"image 1, pixel 563 is 1\.5"):
        team.predict_proba(x)
    with pytest.raises(ValueError, match=r"image 0, pixel 783 is nan"):
        team.predict_proba(x[2:])


def test_small_models_batch_of_one_stays_on_one_thread(quantized):
    for name in ("mlp", "cnn"):
        assert fastmnist.load(quantized[name], num_threads=2).threads_for(1) == 1
    assert fastmnist.load("cnn_int8", num_threads=2).threads_for(1) == (2 if _engine.openmp_version() else 1)


@pytest.mark.parametrize("isa", FAST_ISAS)
@pytest.mark.parametrize("name", ["softmax", "mlp1024", "pca_mlp_bn_elu", "cnn"])
def test_shipped_int8_model_fast_path_equals_scalar(name, isa):
    x = np.concatenate([fastmnist.load(name).ideal_inputs.clip(0, 1), images(55)]).astype(np.float32)
    scalar = fastmnist.load(f"{name}_int8", isa="scalar", num_threads=1)
    fast = fastmnist.load(f"{name}_int8", isa=isa, num_threads=2)
    np.testing.assert_array_equal(fast.predict_proba(x), scalar.predict_proba(x))
    pixels = np.ascontiguousarray((x * 255).round().astype(np.uint8)[:48])  # read in place: its end is the array's
    np.testing.assert_array_equal(fast.predict_proba(pixels), scalar.predict_proba(pixels))
    for got, expected in zip(fast.quantized_op_outputs(x[:7]), scalar.quantized_op_outputs(x[:7])):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("isa", ISAS)
def test_an_image_gets_the_same_answer_in_any_batch(quantized, isa):
    model = fastmnist.load(quantized["cnn"], isa=isa, num_threads=2)
    x = images(70)
    batch = model.predict_proba(x)
    for i in (0, 33, 69):
        np.testing.assert_array_equal(model.predict_proba(x[i]), batch[i:i + 1])


def test_uint8_and_float_pixels_quantize_alike(quantized):
    model = fastmnist.load(quantized["mlp"])
    pixels = (images(9) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(model.predict_proba(pixels), model.predict_proba(pixels / np.float32(255)))


# --- the model interface ---------------------------------------------------------------------------------

def test_shipped_int8_models_load_by_name_with_their_precision():
    for name in ["softmax", "mlp300", "mlp1024", "mlp_bn_elu", "pca_mlp_bn_elu", "cnn"]:
        model = fastmnist.load(f"{name}_int8")
        assert model.precision == "int8" and fastmnist.load(name).precision == "float32"
        assert model.predict_proba(np.zeros((28, 28), np.uint8)).shape == (1, 10)


def test_activations_are_the_dequantized_outputs(quantized):
    model = fastmnist.load(quantized["cnn"])
    x = images(3)
    expected = reference_int8.dequantized_outputs(load_spec(quantized["cnn"]), x)
    names = [layer["name"] for layer in model.layers]
    activations = model.activations(x)
    assert [n for n, _ in activations] == names
    for (_, got), want in zip(activations[:-1], expected[:-1]):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(activations[-1][1], expected[-1], rtol=0, atol=SOFTMAX_ATOL)


def test_show_config_lists_the_int8_paths():
    config = fastmnist.config()
    assert config["int8_isa_compiled"][0] == "scalar"
    assert set(config["int8_isa_supported"]) <= set(config["int8_isa_compiled"])
    assert config["int8_isa_chosen"] in config["int8_isa_supported"]


def test_unknown_int8_isa_is_refused(quantized):
    with pytest.raises(ValueError, match="int8 instruction set 'avx512' is not available"):
        fastmnist.load(quantized["mlp"], isa="avx512")


# --- the quantizer ----------------------------------------------------------------------------------------

def test_quantizer_folds_batchnorm_and_fuses_activation_layers(tmp_path):
    layers = [{"type": "flatten", "name": "f"},
              {"type": "dense", "name": "d", "units": 20},
              {"type": "batchnorm", "name": "bn"},
              {"type": "activation", "name": "a", "activation": "relu"},
              {"type": "dropout", "name": "drop", "rate": 0.3},
              {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    source = write_model(tmp_path / "m.npz", layers, seed=1)
    path = quantize(source, tmp_path / "q.npz", random_images(50))
    raw, _ = format.read(path)
    assert [(layer["name"], layer.get("activation")) for layer in raw["layers"]] == [
        ("f", None), ("d", "relu"), ("out", "softmax")]
    float_model, int8_model = fastmnist.load(source), fastmnist.load(path)
    x = images(200)
    assert np.mean(float_model.predict(x) == int8_model.predict(x)) > 0.9


def test_relu_outputs_and_input_have_zero_point_zero(quantized):
    model_spec = load_spec(quantized["mlp"])
    params = {p.layer.name: p.params for p in model_spec.layers}
    assert params["wide"]["output_zero_point"].item() == 0
    assert params["odd"]["output_zero_point"].item() > 0  # a linear output's range is signed
    assert int8_format.input_quantization(model_spec.input_range) == int8_format.Quantization(1 / 255, 0)


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_choose_range_holds_zero_and_is_within_the_data(method):
    values = np.random.default_rng(0).normal(2.0, 1.0, 10000)
    lo, hi = choose_range(values, method)
    assert values.min() <= lo < 0 < hi <= values.max()
    assert choose_range(np.abs(values), method)[0] == 0.0


def test_quantizer_refuses_what_it_cannot_quantize(tmp_path):
    source = write_model(tmp_path / "dw.npz", [{"type": "depthwise_conv2d", "name": "dw", "kernel_size": [3, 3]},
                                               *head()], seed=0)
    with pytest.raises(ValueError, match="'dw' \\(depthwise_conv2d\\) cannot be quantized"):
        quantize(source, tmp_path / "q.npz", random_images(8))
    with pytest.raises(ValueError, match="calibration images: shape"):
        quantize("softmax", tmp_path / "q.npz", np.zeros((5, 27, 28)))
    with pytest.raises(ValueError, match="already int8"):
        quantize("softmax_int8", tmp_path / "q.npz", random_images(8))
    assert not (tmp_path / "q.npz").exists()


def test_calibration_set_is_reproducible():
    train = np.arange(1000 * 784, dtype=np.int64).reshape(1000, 28, 28)
    np.testing.assert_array_equal(calibration_set(train, 10), calibration_set(train, 10))
    with pytest.raises(ValueError, match="calibration images: 0"):
        calibration_set(train, 0)


# --- the format's checks ----------------------------------------------------------------------------------

def rewrite(path, tmp_path, change):
    """A copy of the weights file at `path` with `change(spec, arrays)` applied."""
    raw, arrays = format.read(path)
    change(raw, arrays)
    return format.save(tmp_path / "changed.npz", raw, arrays)


@pytest.mark.parametrize("change, message", [
    (lambda s, a: a.__setitem__("wide/output_scale", np.float32([-1.0])), "'output_scale' must be positive"),
    (lambda s, a: a.__setitem__("wide/output_scale", np.float32([np.nan])), "NaN or infinite"),
    (lambda s, a: a.__setitem__("odd/output_zero_point", np.int32([256])), "'output_zero_point' is 256"),
    (lambda s, a: a.__setitem__("wide/kernel", a["wide/kernel"].astype(np.float32)), "dtype float32, expected int8"),
    (lambda s, a: a.__setitem__("wide/bias", a["wide/bias"][:-1]), "shape \\(128,\\), expected \\(129,\\)"),
    (lambda s, a: a.__setitem__("smooth/table", np.full(256, 300, np.int32)), "'table' entries must be 0 to 255"),
    (lambda s, a: a.pop("capped/table"), "array 'capped/table' is missing"),
    (lambda s, a: a.__setitem__("wide/output_scale", np.float32([1e-12])), "multiplier .* outside"),
    (lambda s, a: a.__setitem__("wide/bias", np.full(129, 2 ** 31 - 1000, np.int32)), "could overflow"),
    (lambda s, a: s.__setitem__("precision", "int4"), "precision 'int4'"),
    (lambda s, a: s.__setitem__("input", {"shape": [28, 28, 1], "range": [-1.0, 1.0]}), "input range"),
    (lambda s, a: s["layers"][-1].__setitem__("activation", "relu"), "must be a dense layer with softmax"),
])
def test_bad_int8_files_are_refused_with_the_reason(quantized, tmp_path, change, message):
    with pytest.raises(fastmnist.WeightsFormatError, match=message):
        fastmnist.load(rewrite(quantized["mlp"], tmp_path, change))


def test_stored_reference_outputs_are_checked_at_load(quantized, tmp_path):
    def flip(raw, arrays):
        kernel = arrays["wide/kernel"].copy()
        kernel[:, 0] = -kernel[:, 0]
        arrays["wide/kernel"] = kernel
    with pytest.raises(fastmnist.WeightsFormatError, match="differ from the stored ones"):
        fastmnist.load(rewrite(quantized["mlp"], tmp_path, flip))


def test_quantize_command_writes_a_model_that_eval_reads(tmp_path, capsys):
    from fastmnist.cli import main
    from test_cli import write_band_dataset, write_band_model

    labels = np.arange(20, dtype=np.uint8) % 10
    write_band_dataset(tmp_path / "data", labels, labels)
    write_band_model(tmp_path / "band.npz")
    assert main(["quantize", str(tmp_path / "band.npz"), str(tmp_path / "band_int8.npz"), "--data",
                 str(tmp_path / "data"), "--calibration-images", "40"]) == 0
    metadata = fastmnist.load(tmp_path / "band_int8.npz").metadata
    assert metadata["quantization"]["calibration_images"] == 40
    assert metadata["test_accuracy"] == 1.0  # the int8 model's own, measured on the test digits
    assert "int8 test accuracy 100.00%" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "band_int8.npz"), "--data", str(tmp_path / "data")]) == 0
    assert "test accuracy 100.00% (20/20 correct)" in capsys.readouterr().out
    assert main(["quantize", str(tmp_path / "band.npz"), str(tmp_path / "x.npz"), "--data", str(tmp_path / "data"),
                 "--calibration-images", "41"]) == 2
    assert "calibration images: 41, expected 1 to 40" in capsys.readouterr().err
