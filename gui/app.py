"""Start the app: create the Qt application, load the models and show the main window."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from . import catalog
from .main_window import MainWindow


def create_window(model: str | None = None) -> MainWindow:
    """Build the main window with every shipped model, opened on `model` or on the best one.

    Args:
        model: a shipped model's name or a weights file path; None for the best shipped model.

    Raises:
        ValueError: when `model` is given and cannot be loaded.
    """
    models, failed = catalog.load_shipped()
    if model is not None and model not in models:
        models[model] = catalog.load(model)
    window = MainWindow(models, failed)
    chosen = model if model is not None else catalog.best(models)
    if chosen is None:
        window.statusBar().showMessage("No shipped model found: use “Open weights file…” to load one.")
    else:
        window.use_model(chosen)
    return window


def main(model: str | None = None) -> int:
    """Run the app until its window is closed; the process exit status.

    Args:
        model: a shipped model's name or a weights file path; None for the best shipped model.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("fastmnist")
    app.setOrganizationName("fastmnist")
    app.setApplicationDisplayName("fastmnist")
    try:
        window = create_window(model)
    except (ValueError, OSError) as error:
        print(f"fastmnist gui: cannot load model '{model}': {error}", file=sys.stderr)
        return 2
    # As large as a comfortable default, but never larger than the screen (small laptops, HiDPI scaling).
    available = window.screen().availableGeometry()
    window.resize(min(1100, int(0.9 * available.width())), min(680, int(0.9 * available.height())))
    window.show()
    return app.exec()
