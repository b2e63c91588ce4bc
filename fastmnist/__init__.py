"""fastmnist: fast CPU inference for MNIST-sized neural networks.

    model = fastmnist.load("cnn")             # a shipped model by name, or a path to a weights file
    probabilities = model.predict_proba(images)   # (n, 10) float32
"""

from .config import __version__, config, show_config
from .errors import WeightsFormatError
from .model import Model, load, shipped_models
from .quantize import quantize  # the function, not its module (which holds the quantizer's helpers)

__all__ = ["Model", "WeightsFormatError", "__version__", "config", "export_c", "export_keras", "import_onnx",
           "load", "load_mnist", "quantize", "shipped_models", "show_config"]


def __getattr__(name: str):
    # Imported on first use: exporting needs TensorFlow and importing needs onnx, which inference never does.
    if name == "export_keras":
        from .export import export_keras
        return export_keras
    if name == "import_onnx":
        from .onnx_import import import_onnx
        return import_onnx
    if name == "export_c":
        from ._export_c import export_c
        return export_c
    if name == "load_mnist":
        from .datasets import load_mnist
        return load_mnist
    raise AttributeError(f"module 'fastmnist' has no attribute {name!r}")
