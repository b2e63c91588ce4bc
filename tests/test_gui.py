"""Tests for the desktop app, driven through real mouse events (pytest-qt, offscreen)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("PySide6", reason="the app needs PySide6")
pytest.importorskip("pytestqt", reason="the app's tests need pytest-qt")

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QInputDevice, QPointingDevice, QTabletEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMessageBox, QTabWidget  # noqa: E402

import fastmnist  # noqa: E402
from fastmnist import format as weights_format  # noqa: E402
from fastmnist.gui import catalog  # noqa: E402
from fastmnist.gui.app import create_window  # noqa: E402
from fastmnist.gui.canvas import PICTURE_SIZE, Canvas  # noqa: E402
from fastmnist.gui.inspector import NO_IDEAL_INPUTS, shown_layers  # noqa: E402
from fastmnist.gui.main_window import MainWindow  # noqa: E402
from fastmnist.gui.model_selector import ModelSelector, describe  # noqa: E402
from fastmnist.gui.prediction_view import EMPTY_TEXT, ProbabilityBars  # noqa: E402
from fastmnist.gui.tiles import TileGrid  # noqa: E402
from fastmnist.images import read_image  # noqa: E402
from fastmnist.preprocess import to_mnist  # noqa: E402
from drawing import DIGITS, draw  # noqa: E402

# Any Qt warning fails a test, except one the offscreen platform always prints for main windows.
pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints"),
]



ONE, ZERO = DIGITS["1"], DIGITS["0"]


def save_model(path, layers: list[dict], arrays: dict[str, np.ndarray], accuracy: float) -> str:
    spec = {
        "format": "fastmnist-weights",
        "version": 1,
        "input": {"shape": [28, 28, 1], "range": [0.0, 1.0]},
        "classes": [str(digit) for digit in range(10)],
        "layers": layers,
        "metadata": {"test_accuracy": accuracy},
    }
    weights_format.save(path, spec, arrays)
    return str(path)


@pytest.fixture
def small_models(tmp_path) -> dict[str, str]:
    """Two untrained models in temporary files: a softmax regression and a tiny CNN."""
    rng = np.random.default_rng(0)
    softmax = save_model(
        tmp_path / "softmax.npz",
        [{"type": "flatten", "name": "flatten"},
         {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"}],
        {"logits/kernel": rng.normal(0, 0.05, (784, 10)), "logits/bias": np.zeros(10)},
        accuracy=0.5,
    )
    cnn = save_model(
        tmp_path / "tiny_cnn.npz",
        [{"type": "conv2d", "name": "conv1", "filters": 4, "kernel_size": [3, 3], "padding": "same",
          "activation": "relu"},
         {"type": "flatten", "name": "flatten"},
         {"type": "dense", "name": "fc1", "units": 12, "activation": "relu"},
         {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"}],
        {"conv1/kernel": rng.normal(0, 0.3, (3, 3, 1, 4)), "conv1/bias": np.zeros(4),
         "fc1/kernel": rng.normal(0, 0.02, (3136, 12)), "fc1/bias": np.zeros(12),
         "logits/kernel": rng.normal(0, 0.3, (12, 10)), "logits/bias": np.zeros(10)},
        accuracy=0.6,
    )
    return {"softmax": softmax, "cnn": cnn}


@pytest.fixture
def window(qtbot, small_models) -> MainWindow:
    window = MainWindow({path: fastmnist.load(path) for path in small_models.values()})
    window.use_model(small_models["softmax"])
    qtbot.addWidget(window)
    window.resize(900, 600)
    window.show()
    qtbot.waitExposed(window)
    return window


@pytest.fixture
def canvas(qtbot) -> Canvas:
    canvas = Canvas()
    qtbot.addWidget(canvas)
    canvas.resize(300, 300)
    canvas.show()
    qtbot.waitExposed(canvas)
    return canvas


def prediction_label(window: MainWindow) -> QLabel:
    return window.findChild(QLabel, "prediction")


def wait_for_prediction(qtbot, window: MainWindow) -> str:
    qtbot.waitUntil(lambda: prediction_label(window).text() != "", timeout=2000)
    return prediction_label(window).text()


# --- the canvas alone --------------------------------------------------------------------------


def test_canvas_publishes_ink_where_the_mouse_drew(qtbot, canvas):
    with qtbot.waitSignal(canvas.pictureChanged, timeout=1000) as published:
        draw(canvas, [[(0.2, 0.5), (0.8, 0.5)]])
    picture = published.args[0]
    assert picture.shape == (PICTURE_SIZE, PICTURE_SIZE) and picture.dtype == np.uint8
    middle = PICTURE_SIZE // 2
    assert picture[middle, int(0.25 * PICTURE_SIZE) : int(0.75 * PICTURE_SIZE)].min() > 200
    assert picture[: middle - 30].max() == 0 and picture[middle + 30 :].max() == 0


def test_canvas_joins_distant_samples_of_a_fast_stroke(qtbot, canvas):
    draw(canvas, [[(0.1, 0.3), (0.9, 0.7)]], step=1.0)  # press, one move, release
    picture = canvas.picture()
    for fraction in np.linspace(0.15, 0.85, 15):
        x, y = fraction * PICTURE_SIZE, (0.3 + 0.4 * (fraction - 0.1) / 0.8) * PICTURE_SIZE
        assert picture[int(y), int(x)] > 200, f"gap at {fraction:.2f} of the stroke"


def test_canvas_keeps_the_drawing_when_resized(qtbot, canvas):
    draw(canvas, ZERO)
    before = canvas.picture()
    canvas.resize(520, 410)
    qtbot.wait(10)
    after = canvas.picture()
    assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.95


def test_canvas_undo_removes_only_the_last_stroke_and_clear_removes_all(qtbot, canvas):
    draw(canvas, [[(0.2, 0.2), (0.8, 0.2)], [(0.2, 0.8), (0.8, 0.8)]])
    canvas.undo()
    picture = canvas.picture()
    assert picture[int(0.2 * PICTURE_SIZE)].max() > 200
    assert picture[int(0.8 * PICTURE_SIZE)].max() == 0
    canvas.clear()
    assert canvas.is_empty() and canvas.picture().max() == 0


def test_canvas_saves_a_png_that_reads_back_as_the_same_digit(qtbot, canvas, tmp_path):
    draw(canvas, ONE)
    path = str(tmp_path / "one.png")
    assert canvas.save(path)
    reread = to_mnist(read_image(path))
    drawn = to_mnist(canvas.picture())
    assert np.abs(reread - drawn).mean() < 0.03


def test_canvas_draws_with_a_pen_tablet(canvas):
    pen = QPointingDevice("test pen", 1001, QInputDevice.DeviceType.Stylus, QPointingDevice.PointerType.Pen,
                          QInputDevice.Capability.Position | QInputDevice.Capability.Pressure, 1, 2)

    def send(kind: QEvent.Type, x: float, buttons: Qt.MouseButton) -> None:
        position = QPointF(x, 150)
        event = QTabletEvent(kind, pen, position, canvas.mapToGlobal(position), 0.8, 0, 0, 0, 0, 0,
                             Qt.KeyboardModifier.NoModifier, Qt.MouseButton.LeftButton, buttons)
        QApplication.sendEvent(canvas, event)

    send(QEvent.Type.TabletPress, 50, Qt.MouseButton.LeftButton)
    for x in range(60, 260, 10):
        send(QEvent.Type.TabletMove, x, Qt.MouseButton.LeftButton)
    send(QEvent.Type.TabletRelease, 250, Qt.MouseButton.NoButton)
    picture = canvas.picture()
    assert picture[PICTURE_SIZE // 2, int(0.2 * PICTURE_SIZE) : int(0.8 * PICTURE_SIZE)].min() > 200


def test_canvas_draws_with_a_finger(qtbot, canvas):
    screen = QTest.createTouchDevice()
    QTest.touchEvent(canvas, screen).press(0, QPoint(150, 40), canvas).commit()
    for y in range(50, 260, 10):
        QTest.touchEvent(canvas, screen).move(0, QPoint(150, y), canvas).commit()
    QTest.touchEvent(canvas, screen).release(0, QPoint(150, 250), canvas).commit()
    picture = canvas.picture()
    assert picture[int(0.2 * PICTURE_SIZE) : int(0.8 * PICTURE_SIZE), PICTURE_SIZE // 2].min() > 200


# --- the window ---------------------------------------------------------------------------------


def test_window_opens_empty_and_asks_for_a_digit(window):
    assert prediction_label(window).text() == ""
    assert any(EMPTY_TEXT in label.text() for label in window.findChildren(QLabel))


def test_window_predicts_while_drawing_and_clears_with_escape(qtbot, window):
    canvas = window.findChild(Canvas, "canvas")
    draw(canvas, ONE)
    assert wait_for_prediction(qtbot, window) in [str(digit) for digit in range(10)]
    bars = window.findChild(ProbabilityBars, "probabilities")
    assert bars.probabilities().sum() == pytest.approx(1.0, abs=1e-4)

    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: prediction_label(window).text() == "", timeout=2000)
    assert bars.probabilities() is None


def test_window_switches_models_from_the_selector(qtbot, window, small_models):
    canvas = window.findChild(Canvas, "canvas")
    draw(canvas, ZERO)
    wait_for_prediction(qtbot, window)
    selector = window.findChild(ModelSelector, "modelSelector")
    selector.setCurrentIndex(selector.findData(small_models["cnn"]))
    assert window.model().layers[0]["type"] == "conv2d"
    expected = window.model().predict_proba(to_mnist(canvas.picture())[None])[0]
    bars = window.findChild(ProbabilityBars, "probabilities")
    np.testing.assert_allclose(bars.probabilities(), expected, atol=1e-6)


def test_window_without_any_model_draws_but_does_not_guess(qtbot, small_models, monkeypatch):
    window = MainWindow({})
    qtbot.addWidget(window)
    window.show()
    canvas = window.findChild(Canvas, "canvas")
    with qtbot.waitSignal(canvas.pictureChanged, timeout=1000):
        draw(canvas, ONE)
    assert prediction_label(window).text() == ""
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (small_models["softmax"], ""))
    selector = window.findChild(ModelSelector, "modelSelector")
    selector.setCurrentIndex(selector.count() - 1)  # "Open weights file…"
    assert wait_for_prediction(qtbot, window) in [str(digit) for digit in range(10)]


def test_window_refuses_a_corrupt_weights_file_and_keeps_working(qtbot, window, tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    errors = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(corrupt), ""))
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: errors.append(text))
    before = window.model()
    selector = window.findChild(ModelSelector, "modelSelector")
    active_index = selector.currentIndex()

    selector.setCurrentIndex(selector.count() - 1)  # "Open weights file…"

    assert len(errors) == 1 and "corrupt.npz" in errors[0]
    assert window.model() is before
    assert selector.currentIndex() == active_index
    draw(window.findChild(Canvas, "canvas"), ONE)
    assert wait_for_prediction(qtbot, window) in [str(digit) for digit in range(10)]


def test_look_inside_shows_feature_maps_dense_units_and_ideal_input_status(qtbot, window, small_models):
    window.use_model(small_models["cnn"])
    window.findChild(QTabWidget).setCurrentIndex(1)
    draw(window.findChild(Canvas, "canvas"), ZERO)
    qtbot.waitUntil(lambda: window.findChild(TileGrid, "activations:conv1").tile_count() == 4, timeout=2000)
    assert window.findChild(TileGrid, "activations:fc1").tile_count() == 1
    assert window.findChild(TileGrid, "activations:logits") is None  # the output layer is not hidden
    assert any("not stored in this weights file" in label.text() for label in window.findChildren(QLabel))


def test_look_inside_shows_hidden_layers_after_their_normalisation_and_activation():
    layers = [
        {"type": "conv2d", "name": "conv1", "filters": 8},
        {"type": "batchnorm", "name": "bn1"},
        {"type": "activation", "name": "relu1"},
        {"type": "maxpool2d", "name": "pool1"},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc1", "units": 64},
        {"type": "dropout", "name": "dropout"},
        {"type": "dense", "name": "fc2", "units": 32},
        {"type": "dense", "name": "logits", "units": 10},
    ]
    assert [name for name, _ in shown_layers(layers)] == ["relu1", "dropout"]
    softmax_regression = [{"type": "flatten", "name": "f"}, {"type": "dense", "name": "logits", "units": 10}]
    assert shown_layers(softmax_regression) == []


def test_the_app_opens_on_the_cnn_else_on_the_most_accurate_model():
    def model(accuracy):
        return types.SimpleNamespace(metadata={} if accuracy is None else {"test_accuracy": accuracy})

    assert catalog.best({"mlp": model(0.99), "cnn": model(0.98)}) == "cnn"
    assert catalog.best({"a": model(0.97), "b": model(0.985), "c": model(None)}) == "b"
    assert catalog.best({}) is None


def test_a_model_entry_names_its_accuracy_and_precision():
    assert describe("cnn_int8", {"test_accuracy": 0.9964}, "int8") == "cnn_int8 — 99.64 % on MNIST test · int8"
    assert describe("cnn", {"test_accuracy": 0.9964}, "float32") == "cnn — 99.64 % on MNIST test · float32"
    quantized = {"quantization": {"source": "mlp300.npz", "source_test_accuracy": 0.9889}}
    assert (describe("mlp300_int8", quantized, "int8")
            == "mlp300_int8 — 98.89 % on MNIST test before quantization · int8")
    assert describe("mine", {}, "int8") == "mine · int8"


# A child interpreter starts the app as a user does, with a timer queued before the event loop runs: once the
# loop starts it prints the titles of the shown windows and quits, and the command's exit status comes back.
START_THEN_QUIT = """
import runpy, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

app = QApplication(sys.argv[:1])
def report_and_quit():
    print("shown:", [w.windowTitle() for w in app.topLevelWidgets() if w.isVisible()], flush=True)
    app.quit()
QTimer.singleShot(0, report_and_quit)
entry, model = sys.argv[1:]
if entry == "python -m fastmnist.gui":
    sys.argv = ["fastmnist.gui", model]
    runpy.run_module("fastmnist.gui", run_name="__main__", alter_sys=True)
else:
    from fastmnist.cli import main
    sys.exit(main(["gui", "--model", model]))
"""


@pytest.mark.parametrize("entry", ["python -m fastmnist.gui", "fastmnist gui"])
def test_the_app_starts_from_the_installed_package(small_models, tmp_path, entry):
    model = small_models["softmax"]
    result = subprocess.run([sys.executable, "-c", START_THEN_QUIT, entry, model], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"shown: ['fastmnist — {fastmnist.load(model).name}']" in result.stdout, result.stdout + result.stderr


def test_opening_an_image_file_classifies_it(qtbot, window, canvas, tmp_path):
    draw(canvas, ONE)
    path = str(tmp_path / "one.png")
    assert canvas.save(path)
    assert window.open_image(path)
    assert wait_for_prediction(qtbot, window) in [str(digit) for digit in range(10)]


def test_window_refuses_an_unreadable_image_and_keeps_the_drawing(qtbot, window, tmp_path, monkeypatch):
    canvas = window.findChild(Canvas, "canvas")
    draw(canvas, ZERO)
    shown = wait_for_prediction(qtbot, window)
    drawing = canvas.picture().copy()
    errors = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: errors.append(text))
    for name, content in [("garbage.png", b"\x89PNG\r\n\x1a\n not really"), ("empty.jpg", b"")]:
        (tmp_path / name).write_bytes(content)
        assert not window.open_image(str(tmp_path / name))
    assert not window.open_image(str(tmp_path / "missing.png"))
    assert len(errors) == 3 and "garbage.png" in errors[0]
    np.testing.assert_array_equal(canvas.picture(), drawing)
    assert prediction_label(window).text() == shown


def test_window_survives_rapid_drawing_clearing_and_model_switching(qtbot, window, small_models):
    """A frantic user: strokes, clears and model switches faster than the prediction timer fires."""
    canvas = window.findChild(Canvas, "canvas")
    selector = window.findChild(ModelSelector, "modelSelector")
    paths = [small_models["softmax"], small_models["cnn"]]
    for round_ in range(12):
        draw(canvas, [[(0.2 + 0.05 * (round_ % 5), 0.2), (0.6, 0.8)]], step=0.1)
        selector.setCurrentIndex(selector.findData(paths[round_ % 2]))
        if round_ % 4 == 3:
            qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    draw(canvas, ONE)
    drawing = canvas.picture().copy()
    selector.setCurrentIndex(selector.findData(paths[0]))  # switching models keeps the drawing
    np.testing.assert_array_equal(canvas.picture(), drawing)
    assert wait_for_prediction(qtbot, window) in [str(digit) for digit in range(10)]
    expected = window.model().predict_proba(to_mnist(drawing)[None])[0]
    qtbot.waitUntil(lambda: np.allclose(window.findChild(ProbabilityBars, "probabilities").probabilities(),
                                        expected, atol=1e-6), timeout=2000)


# --- with the shipped, trained models --------------------------------------------------------------

needs_trained_model = pytest.mark.skipif(
    not fastmnist.shipped_models(), reason="weights/ holds no trained model yet (train and export one first)"
)


@pytest.fixture(scope="module")
def app_window(qapp):
    """The app as it starts: the best shipped model, shared by the tests that only draw and read."""
    window = create_window()
    window.resize(900, 600)
    window.show()
    yield window
    window.close()


@needs_trained_model
@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_the_best_shipped_model_reads_each_drawn_digit(qtbot, app_window, digit):
    canvas = app_window.findChild(Canvas, "canvas")
    canvas.clear()
    qtbot.waitUntil(lambda: prediction_label(app_window).text() == "", timeout=2000)
    draw(canvas, DIGITS[digit])
    qtbot.waitUntil(lambda: prediction_label(app_window).text() == digit, timeout=2000)


def percent(fraction: float) -> str:
    return f"{fraction:.2%}".replace("%", " %")


# The offscreen platform warns that it cannot raise a popup or let it grab the keyboard; the popup works.
shows_a_popup = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints",
                                          "This plugin does not support raise",
                                          "This plugin does not support grabbing the keyboard")


def pick_from_popup(qtbot, selector: ModelSelector, source: str) -> None:
    """Choose `source` as a user does: open the selector's list and click its entry."""
    selector.showPopup()
    view = selector.view()
    qtbot.waitUntil(view.isVisible, timeout=2000)
    index = view.model().index(selector.findData(source), 0)
    view.scrollTo(index)
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(index).center())
    qtbot.waitUntil(lambda: not view.isVisible(), timeout=2000)


@pytest.fixture
def shipped_window(qtbot) -> MainWindow:
    """The app as it starts, for a test that switches models (app_window is shared by tests that do not)."""
    window = create_window()
    qtbot.addWidget(window)
    window.resize(1100, 680)
    window.show()
    qtbot.waitExposed(window)
    return window


@needs_trained_model
def test_the_selector_lists_every_shipped_model_with_its_precision_and_accuracy(shipped_window):
    selector = shipped_window.findChild(ModelSelector, "modelSelector")
    assert selector.sources() == fastmnist.shipped_models()
    assert any(name.endswith("_int8") for name in selector.sources())
    for index, name in enumerate(selector.sources()):
        model = fastmnist.load(name)
        text = selector.itemText(index)
        assert text.startswith(f"{name} — ") and text.endswith(f" · {model.precision}"), text
        assert model.precision == ("int8" if name.endswith("_int8") else "float32")
        recorded = model.metadata.get("test_accuracy", model.metadata.get("quantization", {}).get(
            "source_test_accuracy"))
        assert f" — {percent(recorded)} on MNIST test" in text, text
    assert shipped_window.model().name == "cnn" and shipped_window.model().precision == "float32"
    status = shipped_window.findChild(QLabel, "modelStatus").text()
    assert status.startswith("cnn — ") and status.endswith(" · float32"), status


@needs_trained_model
@shows_a_popup
def test_switching_to_cnn_int8_shows_int8_and_reads_a_drawn_digit(qtbot, shipped_window):
    selector = shipped_window.findChild(ModelSelector, "modelSelector")
    pick_from_popup(qtbot, selector, "cnn_int8")
    assert shipped_window.model().name == "cnn_int8" and shipped_window.model().precision == "int8"
    status = shipped_window.findChild(QLabel, "modelStatus").text()
    assert status.startswith("cnn_int8 — ") and status.endswith(" · int8"), status
    assert selector.currentText() == status
    draw(shipped_window.findChild(Canvas, "canvas"), DIGITS["3"])
    qtbot.waitUntil(lambda: prediction_label(shipped_window).text() == "3", timeout=2000)


@needs_trained_model
@shows_a_popup
def test_look_inside_an_int8_model_shows_its_feature_maps_without_ideal_inputs(qtbot, shipped_window):
    pick_from_popup(qtbot, shipped_window.findChild(ModelSelector, "modelSelector"), "cnn_int8")
    canvas = shipped_window.findChild(Canvas, "canvas")
    tabs = shipped_window.findChild(QTabWidget).tabBar()
    QTest.mouseClick(tabs, Qt.MouseButton.LeftButton, pos=tabs.tabRect(1).center())  # "Look inside"
    # The float cnn's panel, ideal inputs and all, goes once the event loop has run.
    qtbot.waitUntil(lambda: shipped_window.findChild(TileGrid, "idealInputs") is None, timeout=2000)
    draw(canvas, ZERO)
    conv1 = shipped_window.findChild(TileGrid, "activations:conv1")
    qtbot.waitUntil(lambda: conv1.tile_count() == 32, timeout=2000)
    assert shipped_window.findChild(TileGrid, "activations:conv2").tile_count() == 64
    assert shipped_window.findChild(TileGrid, "activations:fc1").tile_count() == 1
    assert any(label.text() == NO_IDEAL_INPUTS for label in shipped_window.findChildren(QLabel))
    # The maps are the dequantized activations of the drawing, not blank tiles.
    image = conv1.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)}
    assert len(colours) > 10
