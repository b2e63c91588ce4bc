"""PyTorch models through ONNX: the fixtures of tests/make_onnx_fixtures.py (trained, written by both torch
exporters) reproduce PyTorch's probabilities on the 10,000 MNIST test digits; and, where torch is installed, a
fresh model exported live by both exporters reproduces torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="importing ONNX models needs onnx (pip install 'fastmnist[onnx]')")

from blob_images import blob_images  # noqa: E402
from test_datasets import REAL_MNIST  # noqa: E402

import fastmnist  # noqa: E402
from fastmnist.datasets import load_mnist  # noqa: E402
from fastmnist.onnx_import import OUTPUT_LOG_SOFTMAX, OUTPUT_LOGITS, OUTPUT_SOFTMAX, import_onnx  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "onnx"
MEAN, STD = 0.1307, 0.3081  # the models' transforms.Normalize
OUTPUTS = {"mnist_net": OUTPUT_LOG_SOFTMAX, "lenet5": OUTPUT_LOGITS, "mlp": OUTPUT_LOGITS, "bn_cnn": OUTPUT_SOFTMAX}
# Engine (float32) vs PyTorch (float32): the two sum up to 9216 products per output in different orders, each
# rounding to 2^-24 relative; on probabilities this stays well below 1e-5, the limit is 10 times that.
TORCH_ATOL = 1e-4
ACCURACY_TOLERANCE = 0.001  # 0.1 percentage points


@pytest.fixture(scope="module")
def mnist_test():
    if not REAL_MNIST.is_dir():
        pytest.skip(f"the MNIST files are not at {REAL_MNIST} (set FASTMNIST_DATA)")
    return load_mnist(REAL_MNIST)[1]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(OUTPUTS))
def test_fixture_reproduces_pytorch_on_the_mnist_test_digits(tmp_path, mnist_test, name, exporter):
    x_test, y_test = mnist_test
    torch_probabilities = np.load(FIXTURES / f"{name}.torch.npz")["probabilities"]
    assert torch_probabilities.dtype == np.float32 and torch_probabilities.shape == (10000, 10)
    path = import_onnx(FIXTURES / f"{name}.{exporter}.onnx", tmp_path / f"{name}.npz", mean=MEAN, std=STD,
                       reference_images=x_test[:500])
    model = fastmnist.load(path)
    assert model.metadata["output"] == OUTPUTS[name] and model.metadata["source"] == "onnx"
    probabilities = model.predict_proba(x_test)
    np.testing.assert_allclose(probabilities, torch_probabilities, atol=TORCH_ATOL, rtol=0)
    accuracy = np.mean(probabilities.argmax(axis=1) == y_test)
    torch_accuracy = np.mean(torch_probabilities.argmax(axis=1) == y_test)
    assert abs(accuracy - torch_accuracy) <= ACCURACY_TOLERANCE and accuracy > 0.9


def test_fixture_normalisation_is_folded_where_exact(tmp_path):
    """mnist_net starts with an unpadded conv: mean/std go into its weights. lenet5's first conv is padded:
    they go into the input range."""
    folded = fastmnist.load(import_onnx(FIXTURES / "mnist_net.torchscript.onnx", tmp_path / "a.npz", mean=MEAN,
                                        std=STD))
    ranged = fastmnist.load(import_onnx(FIXTURES / "lenet5.torchscript.onnx", tmp_path / "b.npz", mean=MEAN,
                                        std=STD))
    assert fastmnist.format.read(folded.path)[0]["input"]["range"] == [0.0, 1.0]
    assert fastmnist.format.read(ranged.path)[0]["input"]["range"] == pytest.approx([-MEAN / STD, (1 - MEAN) / STD])


def test_live_export_by_both_torch_exporters_reproduces_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="the live export needs PyTorch")
    pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")
    nn = torch.nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, groups=8), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 10))
    with torch.no_grad():  # running statistics that are not the identity
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    images = blob_images(64, seed=3)
    with torch.no_grad():
        expected = model((torch.from_numpy(images)[:, None] - MEAN) / STD).softmax(dim=1).numpy()
    for dynamo in (False, True):
        source = tmp_path / f"live_{dynamo}.onnx"
        options = {"dynamic_shapes": {"input": {0: torch.export.Dim("batch")}}} if dynamo else {
            "opset_version": 17, "dynamic_axes": {"image": {0: "batch"}}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(source), dynamo=dynamo, external_data=False,
                              input_names=["image"], verbose=False, **options)
        engine = fastmnist.load(import_onnx(source, tmp_path / f"live_{dynamo}.npz", mean=MEAN, std=STD,
                                            reference_images=images))
        np.testing.assert_allclose(engine.predict_proba(images), expected, atol=TORCH_ATOL, rtol=0)
        assert engine.metadata["output"] == OUTPUT_LOGITS
