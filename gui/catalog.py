"""Which models the app offers, and which one it opens on."""

from __future__ import annotations

import fastmnist

# The app classifies one image at a time, which one thread does fastest: more would only add the cost of
# waking them (large on a busy machine) to every stroke.
THREADS = 1
# The convolutional network is the one worth showing off: the most accurate, and the one with feature
# maps to look at. Without it, the most accurate shipped model is used.
PREFERRED = "cnn"


def load(source: str) -> fastmnist.Model:
    """Load a shipped model by name, or a weights file, for the app. Raises ValueError or OSError."""
    return fastmnist.load(source, num_threads=THREADS)


def load_shipped() -> tuple[dict[str, fastmnist.Model], dict[str, str]]:
    """Load every shipped model.

    Returns:
        ({name: model} for those that load, {name: error message} for those that do not).
    """
    loaded: dict[str, fastmnist.Model] = {}
    failed: dict[str, str] = {}
    for name in fastmnist.shipped_models():
        try:
            loaded[name] = load(name)
        except (ValueError, OSError) as error:
            failed[name] = str(error)
    return loaded, failed


def best(models: dict[str, fastmnist.Model]) -> str | None:
    """The name of the model to open on: `PREFERRED` if present, else the highest test accuracy."""
    if PREFERRED in models:
        return PREFERRED
    if not models:
        return None

    def accuracy(name: str) -> float:
        value = models[name].metadata.get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) else -1.0

    return max(sorted(models), key=accuracy)
