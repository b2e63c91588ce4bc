"""Whole models against the NumPy reference, on every path, thread count and batch size; the Model API."""

import threading

import numpy as np
import pytest

import fastmnist
from fastmnist import _engine, format, reference, spec
from random_models import CNN_LAYERS, MLP_BN_ELU_LAYERS, V2_HEAVY_LAYERS, V2_LAYERS, random_images, write_model

ISAS = _engine.supported_isas()
# Probabilities after several float32 layers with reductions up to K = 3136: each logit is within about
# sqrt(K) * 2**-24 * sum|x w| of exact in practice (Higham's probabilistic bound), a few 1e-6 here, and
# softmax does not amplify absolute errors; 1e-5 leaves room without hiding a wrong tap or a wrong pixel.
PROBABILITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("cnn") / "cnn.npz", CNN_LAYERS, seed=3)


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("mlp") / "mlp.npz", MLP_BN_ELU_LAYERS, input_shape=(784,), seed=4)


@pytest.fixture(scope="module")
def v2_path(tmp_path_factory):
    """Every layer type of format version 2, heavy enough for a team of threads on one image."""
    return write_model(tmp_path_factory.mktemp("v2") / "v2.npz", V2_HEAVY_LAYERS, seed=5)


@pytest.fixture(scope="module")
def v2_small_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("v2s") / "v2s.npz", V2_LAYERS, seed=6)


def reference_probabilities(path, images):
    return reference.forward(spec.parse(*format.read(path), str(path)), images)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3, 70, 130])
@pytest.mark.parametrize("which", ["cnn", "mlp", "v2", "v2_small"])
def test_model_matches_reference(request, which, isa, threads, batch):
    path = request.getfixturevalue(f"{which}_path")
    images = random_images(batch, seed=batch)
    model = fastmnist.load(path, isa=isa, num_threads=threads)
    got = model.predict_proba(images)
    assert got.shape == (batch, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_probabilities(path, images), rtol=0, atol=PROBABILITY_ATOL)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("which", ["cnn", "mlp", "v2", "v2_small"])
def test_an_images_result_does_not_depend_on_its_batch(request, which, isa):
    """Every path adds a layer's terms in one order whatever the batch, the thread count or the zeros of the
    other images in a block, so an image's probabilities are the same bits alone or in any batch."""
    path = request.getfixturevalue(f"{which}_path")
    images = random_images(70, seed=9)
    images[5] = 0.0
    alone = np.concatenate([fastmnist.load(path, isa=isa, num_threads=1).predict_proba(image) for image in images])
    for threads in (1, 2):
        model = fastmnist.load(path, isa=isa, num_threads=threads)
        for batch in (1, 2, 7, 70):  # 1 at 2 threads: a team splits each op
            got = np.concatenate([model.predict_proba(images[i:i + batch]) for i in range(0, 70, batch)])
            np.testing.assert_array_equal(got, alone, err_msg=f"{threads} threads, batches of {batch}")


def test_input_forms_agree(mlp_path):
    model = fastmnist.load(mlp_path)
    pixels = (random_images(5) * 255).round().astype(np.uint8)
    expected = model.predict_proba(pixels.astype(np.float32) / 255)
    for form in (pixels, pixels.reshape(5, 784), pixels.astype(np.float64) / 255, list(pixels / 255.0)):
        np.testing.assert_allclose(model.predict_proba(form), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(pixels[0]), expected[:1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(pixels[0].ravel()), expected[:1], rtol=0, atol=1e-6)


def test_awkward_arrays_are_read_correctly(cnn_path):
    model = fastmnist.load(cnn_path)
    images = random_images(6)
    expected = model.predict_proba(images)
    read_only = images.copy()
    read_only.flags.writeable = False
    strided = np.zeros((6, 28, 56), np.float32)
    strided[:, :, ::2] = images
    big_endian = images.astype(">f4")
    for form in (read_only, strided[:, :, ::2], big_endian, np.asfortranarray(images)):
        np.testing.assert_array_equal(model.predict_proba(form), expected)


def test_input_range_maps_pixels(tmp_path):
    """A model trained on [-1, 1] inputs sees blank paper as -1 and full ink as 1."""
    path = write_model(tmp_path / "m.npz", MLP_BN_ELU_LAYERS, input_shape=(784,), input_range=(-1.0, 1.0))
    images = random_images(4)
    want = reference_probabilities(path, images)
    model = fastmnist.load(path)
    np.testing.assert_allclose(model.predict_proba(images), want, rtol=0, atol=PROBABILITY_ATOL)
    np.testing.assert_allclose(model.predict_proba((images * 255).round().astype(np.uint8)),
                               reference_probabilities(path, (images * 255).round() / 255), atol=PROBABILITY_ATOL)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((2, 28, 27), np.float32), "shape"),
    (np.zeros((3, 783), np.uint8), "shape"),
    (np.zeros((28, 28), np.int64), "dtype"),
    (np.zeros((28, 28), bool), "dtype"),
    (np.zeros((28, 28), complex), "dtype"),
    (np.array([[object()] * 28] * 28), "dtype"),
    (np.full((28, 28), 1.5, np.float32), "in \\[0, 1\\]"),
    (np.full((28, 28), np.nan, np.float64), "in \\[0, 1\\]"),
    (np.full((28, 28), -np.inf, np.float32), "in \\[0, 1\\]"),
    ("not an image", "dtype"),
])
def test_bad_images_are_refused(mlp_path, bad, message):
    model = fastmnist.load(mlp_path)
    with pytest.raises(ValueError, match=message):
        model.predict_proba(bad)


def test_empty_batch(mlp_path):
    model = fastmnist.load(mlp_path)
    assert model.predict_proba(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)
    assert model.predict(np.zeros((0, 784), np.float32)).shape == (0,)


def test_out_buffer_is_filled_and_checked(mlp_path):
    model = fastmnist.load(mlp_path)
    images = random_images(4)
    out = np.empty((4, 10), np.float32)
    assert model.predict_proba(images, out=out) is out
    np.testing.assert_array_equal(out, model.predict_proba(images))
    with pytest.raises(ValueError, match="out"):
        model.predict_proba(images, out=np.empty((3, 10), np.float32))
    with pytest.raises(ValueError, match="out"):
        model.predict_proba(images, out=np.empty((4, 10), np.float64))


def test_predict_and_activations(cnn_path):
    model = fastmnist.load(cnn_path)
    images = random_images(3)
    labels = model.predict(images)
    assert labels.dtype == np.int64 and labels.shape == (3,)
    np.testing.assert_array_equal(labels, model.predict_proba(images).argmax(axis=1))
    acts = model.activations(images)
    assert [name for name, _ in acts] == [layer["name"] for layer in CNN_LAYERS]
    shapes = {name: a.shape for name, a in acts}
    assert shapes["conv1"] == (3, 28, 28, 32) and shapes["pool2"] == (3, 7, 7, 64)
    assert shapes["flatten"] == (3, 3136) and shapes["logits"] == (3, 10)
    np.testing.assert_array_equal(dict(acts)["fc1"], dict(acts)["dropout"])
    np.testing.assert_allclose(acts[-1][1], model.predict_proba(images), atol=1e-6)


def test_activations_and_summary_of_every_version_2_layer(v2_small_path):
    model = fastmnist.load(v2_small_path)
    images = random_images(2)
    acts = dict(model.activations(images))
    assert list(acts) == [layer["name"] for layer in V2_LAYERS]
    want = reference.layer_outputs(spec.parse(*format.read(v2_small_path), "v2"), images)
    for (name, got), expected in zip(acts.items(), want):
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * (np.abs(expected).max() + 1), err_msg=name)
    text = model.summary()
    for fragment in ("zeropad2d", "depthwise_conv2d (relu max_value=6.0)", "(30, 32, 2)", "conv2d (gelu)",
                     "avgpool2d", "activation (elu alpha=0.5)", "global_avgpool2d", "(5,)",
                     "dense (hard_sigmoid alpha=0.25)", "total parameters: 265"):
        assert fragment in text, text


def test_summary_counts_parameters(cnn_path):
    text = fastmnist.load(cnn_path).summary()
    assert "3,274,634" in text and "conv2d (relu)" in text and "(7, 7, 64)" in text


def test_threads_and_isa_settings(mlp_path, monkeypatch):
    monkeypatch.setenv("FASTMNIST_NUM_THREADS", "3")
    monkeypatch.setenv("FASTMNIST_ISA", "scalar")
    model = fastmnist.load(mlp_path)
    assert model.num_threads == 3 and model.isa == "scalar"
    monkeypatch.setenv("FASTMNIST_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="FASTMNIST_NUM_THREADS"):
        fastmnist.load(mlp_path)
    monkeypatch.delenv("FASTMNIST_NUM_THREADS")
    with pytest.raises(ValueError, match="instruction set 'sse9'"):
        fastmnist.load(mlp_path, isa="sse9")


@pytest.mark.parametrize("which", ["cnn", "v2"])
def test_one_model_shared_by_python_threads(request, which):
    """Calls from several threads at once (each releasing the GIL) give exactly the serial results."""
    model = fastmnist.load(request.getfixturevalue(f"{which}_path"), num_threads=2)
    batches = [random_images(n, seed=n) for n in (1, 2, 5, 1, 9, 1, 3, 1)]
    expected = [model.predict_proba(b) for b in batches]
    failures = []

    def worker(index):
        for _ in range(15):
            if not np.array_equal(model.predict_proba(batches[index]), expected[index]):
                failures.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_show_config_reports_paths(capsys):
    fastmnist.show_config()
    out = capsys.readouterr().out
    assert "chosen:" in out and _engine.best_isa() in out and "OpenMP" in out
    assert set(fastmnist.config()["isa_supported"]) <= set(fastmnist.config()["isa_compiled"])


def test_eight_python_threads_ten_thousand_calls_each(mlp_path):
    """8 threads x 10,000 calls on one model, batch sizes that take both the team and the tiled paths."""
    model = fastmnist.load(mlp_path, num_threads=2)
    inputs = [(random_images(n, seed=10 + i) * 255).astype(np.uint8) for i, n in enumerate((1, 1, 2, 3, 1, 40, 1, 7))]
    expected = [model.predict_proba(x) for x in inputs]
    mismatches = [0] * len(inputs)

    def worker(index):
        for _ in range(10_000):
            if not np.array_equal(model.predict_proba(inputs[index]), expected[index]):
                mismatches[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == [0] * len(inputs)


def test_hand_made_models_cannot_send_kernels_out_of_bounds(mlp_path, cnn_path):
    """Model specs built by hand, bypassing the file checks, are still checked before any kernel runs."""
    import dataclasses

    def forged(path, index, **changes):
        model_spec = spec.parse(*format.read(path), str(path))
        layers = list(model_spec.layers)
        layers[index] = dataclasses.replace(layers[index], **changes)
        return dataclasses.replace(model_spec, layers=tuple(layers))

    mlp = spec.parse(*format.read(mlp_path), str(mlp_path))
    short_kernel = {**mlp.layers[0].params, "kernel": mlp.layers[0].params["kernel"][:100]}
    with pytest.raises(ValueError, match="layer 'fc1' kernel has 30000 values, the layer needs 235200"):
        _engine.Network(forged(mlp_path, 0, params=short_kernel), "scalar", 1)
    with pytest.raises(ValueError, match="do not follow"):
        _engine.Network(forged(mlp_path, 3, input_shape=(3000,)), "scalar", 1)
    with pytest.raises(ValueError, match="do not follow"):
        _engine.Network(forged(cnn_path, 0, output_shape=(40, 40, 32)), _engine.best_isa(), 2)


@pytest.mark.parametrize("which", ["mlp", "cnn"])  # pixels read in place, and converted
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("position", [0, 783, 4095, 4096, 5000, 8 * 784 - 1])
@pytest.mark.parametrize("bad_value", [np.nan, -1e-6, 1.0000001, np.inf])
def test_a_bad_pixel_is_found_and_named_wherever_it_is(request, which, threads, position, bad_value):
    model = fastmnist.load(request.getfixturevalue(f"{which}_path"), num_threads=threads)
    images = random_images(8)
    # -0 is valid, but its bits look like a negative value's: with it in the first three images only, both the
    # exact search (in a block holding -0) and the fast test (in one without) have to find the bad pixel
    images[:3][images[:3] == 0] = -0.0
    images.reshape(-1)[position] = bad_value
    with pytest.raises(ValueError, match=f"image {position // 784}, pixel {position % 784} is"):
        model.predict_proba(images)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_negative_zero_pixels_are_zero(request, which):
    model = fastmnist.load(request.getfixturevalue(f"{which}_path"))
    images = random_images(20)
    signed = images.copy()
    signed[signed == 0] = -0.0
    np.testing.assert_array_equal(model.predict_proba(signed), model.predict_proba(images))
