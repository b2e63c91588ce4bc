"""The ``fastmnist`` command line: help, eval without TensorFlow, train/export end to end, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from test_datasets import NAMES, idx_bytes

import fastmnist
from fastmnist import format as weights_format
from fastmnist.cli import confusion_matrix, format_confusion_matrix, main

# A child interpreter must import the same fastmnist as this one (installed, or built in place in a checkout),
# and never a source tree without its compiled extension that happens to be in its working directory.
CHILD_ENV = {**os.environ, "PYTHONPATH": str(Path(fastmnist.__file__).resolve().parents[1])}
SUBCOMMANDS = ("train", "export", "eval", "predict", "gui", "info")
NEEDS_TF = "training and export need TensorFlow/Keras (pip install tensorflow)"


def band_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(N, 28, 28) uint8``: faint noise plus a bright 3-row bar whose height encodes the label."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 50, (len(labels), 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        image[2 + 2 * label : 5 + 2 * label, 4:24] = 255
    return images


def write_band_dataset(folder: Path, test_labels: np.ndarray, true_test_labels: np.ndarray) -> None:
    """A tiny MNIST-shaped data set: 40 training images, and test images drawn for ``true_test_labels``
    but labelled ``test_labels`` in the file (so a perfect model shows exactly those as errors)."""
    train_labels = np.arange(40, dtype=np.uint8) % 10
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in {
        "train_images": band_images(train_labels),
        "train_labels": train_labels,
        "test_images": band_images(true_test_labels, seed=1),
        "test_labels": test_labels,
    }.items():
        (folder / NAMES[key]).write_bytes(idx_bytes(array))


def write_band_model(path: Path) -> None:
    """A hand-made one-layer model that reads the bar height: class c sums the pixels of bar c."""
    kernel = np.zeros((28, 28, 10), np.float32)
    for label in range(10):
        kernel[2 + 2 * label : 5 + 2 * label, 4:24, label] = 0.5
    spec = {
        "format": "fastmnist-weights",
        "version": 1,
        "input": {"shape": [28, 28], "range": [0.0, 1.0]},
        "classes": [str(digit) for digit in range(10)],
        "layers": [
            {"type": "flatten", "name": "flatten"},
            {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"},
        ],
        "metadata": {},
    }
    weights_format.save(path, spec, {"logits/kernel": kernel.reshape(784, 10), "logits/bias": np.zeros(10)})


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fastmnist {command}")


def test_python_m_fastmnist_runs_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastmnist", "--help"], cwd=tmp_path, env=CHILD_ENV,
                            capture_output=True, text=True, check=True)
    assert all(command in result.stdout for command in SUBCOMMANDS)


def test_eval_prints_accuracy_and_confusion_matrix_without_tensorflow(tmp_path):
    true_labels = np.arange(20, dtype=np.uint8) % 10
    file_labels = true_labels.copy()
    file_labels[[3, 13]] = [5, 8]  # two images of a 3 labelled 5 and 8
    write_band_dataset(tmp_path / "data", file_labels, true_labels)
    write_band_model(tmp_path / "band.npz")
    # A fresh interpreter, so that the check for TensorFlow is not fooled by other tests' imports.
    script = (
        "import sys; from fastmnist.cli import main; status = main(sys.argv[1:]); "
        "assert 'tensorflow' not in sys.modules, 'eval imported TensorFlow'; sys.exit(status)"
    )
    result = subprocess.run([sys.executable, "-c", script, "eval", str(tmp_path / "band.npz"), "--data",
                             str(tmp_path / "data")], cwd=tmp_path, env=CHILD_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test accuracy 90.00% (18/20 correct)" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[3:]}
    assert rows["5"][:10] == ["0", "0", "0", "1", "0", "2", "0", "0", "0", "0"]
    assert rows["3"][3] == "0" and rows["3"][10] == "nan%"  # no image is labelled 3 any more


def test_confusion_matrix_counts_and_table():
    counts = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), num_classes=3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    table = format_confusion_matrix(counts).splitlines()
    assert table[1].split() == ["0", "1", "1", "0", "50.00%"]
    assert table[3].split() == ["2", "0", "1", "0", "0.00%"]


@pytest.mark.parametrize("make_file, message", [
    (lambda path: None, "no such file"),
    (lambda path: path.write_bytes(b"not a zip"), "not an .npz"),
], ids=["missing", "corrupt"])
def test_eval_errors_are_one_line_with_status_2(tmp_path, capsys, make_file, message):
    make_file(tmp_path / "bad.npz")
    assert main(["eval", str(tmp_path / "bad.npz"), "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fastmnist eval: ") and message in error


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    write_band_model(tmp_path / "band.npz")
    assert main(["eval", str(tmp_path / "band.npz"), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere' does not exist" in capsys.readouterr().err


def test_gui_passes_the_model_to_the_app(monkeypatch):
    calls = []
    app = types.ModuleType("gui.app")
    app.main = lambda model=None: calls.append(model) or 0
    package = types.ModuleType("gui")
    package.app = app
    monkeypatch.setitem(sys.modules, "gui", package)
    monkeypatch.setitem(sys.modules, "gui.app", app)
    assert main(["gui", "--model", "mlp300"]) == 0
    assert calls == ["mlp300"]


def test_gui_without_qt_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gui.app", None)  # makes `import gui.app` fail
    assert main(["gui"]) == 2
    assert capsys.readouterr().err.startswith("fastmnist gui: a package it needs cannot be imported")


def test_info_shows_the_configuration(capsys):
    import fastmnist

    fastmnist.show_config()
    expected = capsys.readouterr().out
    assert main(["info"]) == 0
    assert capsys.readouterr().out == expected and expected.startswith("fastmnist ")


def test_predict_classifies_image_files(tmp_path, capsys):
    pytest.importorskip("PySide6", reason="reading image files needs PySide6")
    from PySide6.QtGui import QImage

    write_band_model(tmp_path / "band.npz")
    # A large, dark-on-light picture of the bar for class 4; preprocessing must invert and shrink it.
    picture = np.full((112, 112), 255, np.uint8)
    picture[40:52, 16:96] = 0
    path = tmp_path / "bar.png"
    image = QImage(picture.tobytes(), 112, 112, 112, QImage.Format.Format_Grayscale8)
    assert image.save(str(path))
    assert main(["predict", str(path), "--model", str(tmp_path / "band.npz")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: ") and "0:" in line and "9:" in line


def test_train_then_export_then_eval(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason=NEEDS_TF)
    labels = np.arange(20, dtype=np.uint8) % 10
    write_band_dataset(tmp_path / "data", labels, labels)
    weights = tmp_path / "softmax.npz"
    logdir = tmp_path / "run" / "logs"
    assert main(["train", "softmax", "--epochs", "2", "--batch-size", "8", "--data", str(tmp_path / "data"),
                 "--out", str(weights), "--logdir", str(logdir)]) == 0
    output = capsys.readouterr().out
    assert "training 'softmax' on CPU" in output or "training 'softmax' on GPU" in output
    assert "test accuracy: " in output
    assert list((logdir / "train").glob("events.out.tfevents.*"))
    assert list((logdir / "validation").glob("events.out.tfevents.*"))
    spec, _ = weights_format.read(weights)
    assert spec["metadata"]["training_command"].startswith("fastmnist train softmax --epochs 2")
    assert spec["metadata"]["epochs"] == 2

    exported = tmp_path / "again.npz"
    assert main(["export", str(tmp_path / "run" / "softmax.keras"), str(exported), "--data",
                 str(tmp_path / "data")]) == 0
    again, _ = weights_format.read(exported)
    assert again["metadata"]["training_command"] == spec["metadata"]["training_command"]
    assert again["metadata"]["export_command"].startswith("fastmnist export ")
    assert main(["eval", str(exported), "--data", str(tmp_path / "data")]) == 0
    assert f"test accuracy {spec['metadata']['test_accuracy']:.2%}" in capsys.readouterr().out


def test_export_refuses_an_unsupported_model(tmp_path, capsys):
    keras = pytest.importorskip("keras", reason=NEEDS_TF)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="mish", name="out")])
    model.save(tmp_path / "mish.keras")
    labels = np.arange(20, dtype=np.uint8) % 10
    write_band_dataset(tmp_path / "data", labels, labels)
    assert main(["export", str(tmp_path / "mish.keras"), str(tmp_path / "out.npz"), "--data",
                 str(tmp_path / "data")]) == 2
    assert "layer 'out' uses activation 'mish'" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()


def test_predict_names_a_missing_image(tmp_path, capsys):
    write_band_model(tmp_path / "band.npz")
    assert main(["predict", str(tmp_path / "nothing.png"), "--model", str(tmp_path / "band.npz")]) == 2
    assert "nothing.png' does not exist" in capsys.readouterr().err
