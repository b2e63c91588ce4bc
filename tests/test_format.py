"""Weights files: a valid one round-trips; every kind of malformed one is refused with a message that says
which file, which part and what was expected."""

import io
import json
import zipfile

import numpy as np
import pytest

import fastmnist
from fastmnist import WeightsFormatError, format
from random_models import MLP_BN_ELU_LAYERS, random_arrays, spec_for, write_model


@pytest.fixture
def valid(tmp_path):
    """(spec, arrays) of a small valid model, with reference vectors that the engine reproduces."""
    layers = [{"type": "dense", "name": "fc1", "units": 20, "activation": "relu"},
              {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    spec, arrays = spec_for(layers, (784,)), random_arrays(layers, (784,), np.random.default_rng(0))
    path = format.save(tmp_path / "valid.npz", spec, arrays)
    inputs = np.random.default_rng(1).random((4, 28, 28), dtype=np.float32)
    arrays["reference/inputs"] = inputs
    arrays["reference/probabilities"] = fastmnist.load(path).predict_proba(inputs)
    spec["reference"] = {"atol": 1e-5}
    return spec, arrays


def write(tmp_path, spec, arrays, name="m.npz"):
    return format.save(tmp_path / name, spec, arrays)


def refused(path, *fragments):
    with pytest.raises(WeightsFormatError) as info:
        fastmnist.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_valid_file_round_trips(tmp_path, valid):
    spec, arrays = valid
    path = write(tmp_path, spec, arrays)
    read_spec, read_arrays = format.read(path)
    assert read_spec == spec
    assert set(read_arrays) == set(arrays)
    assert all(read_arrays[k].dtype == np.float32 for k in read_arrays)
    fastmnist.load(path)  # reproduces its reference vectors


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.npz", "no such file")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    refused(path, "not an .npz")


def test_truncated_file(tmp_path, valid):
    data = write(tmp_path, *valid).read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsFormatError):
            fastmnist.load(path)


def test_missing_array(tmp_path, valid):
    spec, arrays = valid
    del arrays["fc1/bias"]
    refused(write(tmp_path, spec, arrays), "fc1", "'fc1/bias' is missing")


def test_extra_array(tmp_path, valid):
    spec, arrays = valid
    arrays["stowaway"] = np.zeros(3)
    refused(write(tmp_path, spec, arrays), "stowaway", "belong to no layer")


def test_wrong_shape(tmp_path, valid):
    spec, arrays = valid
    arrays["fc1/kernel"] = np.zeros((784, 21))
    refused(write(tmp_path, spec, arrays), "'fc1/kernel' has shape (784, 21), expected (784, 20)")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights(tmp_path, valid, value):
    spec, arrays = valid
    arrays["out/kernel"][3, 4] = value
    refused(write(tmp_path, spec, arrays), "out", "NaN or infinite")


def raw_npz(path, members: dict):
    """An .npz whose members are written as given (arrays of any dtype, or raw bytes)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, value in members.items():
            if isinstance(value, bytes):
                z.writestr(name + ".npy", value)
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, value, allow_pickle=True)
                z.writestr(name + ".npy", buffer.getvalue())
    return path


def spec_bytes(spec):
    return np.frombuffer(json.dumps(spec).encode(), np.uint8)


def test_wrong_dtype(tmp_path, valid):
    spec, arrays = valid
    members = {"spec": spec_bytes(spec), **arrays, "fc1/kernel": arrays["fc1/kernel"].astype(np.float64)}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/kernel", "dtype float64, expected float32")


def test_pickled_object_array_is_never_loaded(tmp_path, valid):
    spec, arrays = valid
    members = {"spec": spec_bytes(spec), **arrays, "fc1/kernel": np.array([{"evil": 1}], dtype=object)}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/kernel", "never loaded")


def test_huge_shape_claim_is_refused_before_allocating(tmp_path, valid):
    spec, arrays = valid
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (1 << 20, 1 << 20)})
    members = {"spec": spec_bytes(spec), **arrays, "fc1/kernel": header.getvalue() + b"\x00" * 64}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/kernel", "header claims shape")


@pytest.mark.parametrize("text,fragment", [
    (b"{not json", "not valid UTF-8 JSON"),
    (b"\xff\xfe", "not valid UTF-8 JSON"),
    (b"[1, 2]", "expected an object"),
    (b'{"format": "fastmnist-weights", "version": NaN}', "not valid UTF-8 JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid UTF-8 JSON"),
])
def test_spec_not_json(tmp_path, valid, text, fragment):
    _, arrays = valid
    refused(raw_npz(tmp_path / "m.npz", {"spec": np.frombuffer(text, np.uint8), **arrays}), fragment)


def test_no_spec(tmp_path, valid):
    _, arrays = valid
    refused(raw_npz(tmp_path / "m.npz", dict(arrays)), "no 'spec' array")


@pytest.mark.parametrize("change,fragment", [
    (lambda s: s.update(version=2), "format version 2"),
    (lambda s: s.update(format="other"), "format is 'other'"),
    (lambda s: s["layers"][0].update(type="lstm"), "type 'lstm' is not supported"),
    (lambda s: s["layers"][0].update(units=0), "'units' is 0"),
    (lambda s: s["layers"][0].update(activation="tanh"), "'activation' is 'tanh'"),
    (lambda s: s["layers"][0].update(kernel_size=[3, 3]), "unknown field(s) 'kernel_size'"),
    (lambda s: s["layers"][1].update(name="fc1"), "used by an earlier layer"),
    (lambda s: s["layers"][1].update(activation="relu"), "expected softmax"),
    (lambda s: s.update(classes=["a", "b"]), "expected (2,) for 2 classes"),
    (lambda s: s["input"].update(shape=[32, 32, 1]), "input shape [32, 32, 1]"),
    (lambda s: s.update(reference={"atol": 5.0}), "reference atol 5.0"),
    (lambda s: s.update(extra=1), "unknown spec field(s) 'extra'"),
    (lambda s: s["layers"].insert(0, {"type": "conv2d", "name": "c", "filters": 4, "kernel_size": [3, 3]}),
     "expected (height, width, channels)"),
])
def test_spec_contradictions(tmp_path, valid, change, fragment):
    spec, arrays = valid
    change(spec)
    refused(write(tmp_path, spec, arrays), fragment)


def test_activation_too_large_for_memory_is_refused_before_reading_weights(tmp_path):
    layers = [{"type": "conv2d", "name": "c", "filters": 65536, "kernel_size": [1, 1]},
              {"type": "flatten", "name": "f"}, {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    refused(write(tmp_path, spec_for(layers), {}), "layer 0 'c'", "(28, 28, 65536) exceeds")


def test_reference_not_reproduced(tmp_path, valid):
    spec, arrays = valid
    arrays["reference/probabilities"] = np.roll(arrays["reference/probabilities"], 1, axis=1)
    refused(write(tmp_path, spec, arrays), "reference inputs differ", "at most 1e-05")


def test_reference_needs_both_arrays(tmp_path, valid):
    spec, arrays = valid
    del arrays["reference/probabilities"]
    refused(write(tmp_path, spec, arrays), "reference")


def test_shipped_name_and_path(tmp_path, monkeypatch):
    path = write_model(tmp_path / "tiny.npz", MLP_BN_ELU_LAYERS, input_shape=(784,))
    monkeypatch.setattr(fastmnist.model, "shipped_weights_dir", lambda: tmp_path)
    assert fastmnist.shipped_models() == ["tiny"]
    assert fastmnist.load("tiny").path == path
    with pytest.raises(WeightsFormatError, match="no such file"):
        fastmnist.load("no_such_model")


def test_negative_variance_is_refused(tmp_path):
    layers = [{"type": "dense", "name": "fc", "units": 5}, {"type": "batchnorm", "name": "bn"},
              {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    arrays = random_arrays(layers, (784,), np.random.default_rng(0))
    arrays["bn/moving_variance"][2] = -1.0
    refused(write(tmp_path, spec_for(layers, (784,)), arrays), "'bn'", "'moving_variance' + epsilon must be positive")


def test_overflowing_weights_raise_instead_of_answering_nan(tmp_path):
    layers = [{"type": "dense", "name": "fc", "units": 5}, {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    arrays = random_arrays(layers, (784,), np.random.default_rng(0))
    arrays["fc/kernel"][:] = 3e38  # finite, but any ink overflows float32
    model = fastmnist.load(write(tmp_path, spec_for(layers, (784,)), arrays))
    with pytest.raises(FloatingPointError, match="image 1"):
        model.predict_proba(np.stack([np.zeros((28, 28)), np.ones((28, 28))]))
