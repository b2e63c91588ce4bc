"""The exceptions the project raises for a weights file it cannot accept and a model it cannot export or import."""


class WeightsFormatError(ValueError):
    """A weights file is unreadable, malformed, or does not compute what it claims.

    The message names the file, the part of it that is wrong (a layer, an array) and what was expected.
    """


class ExportError(ValueError):
    """A model cannot be written in the fastmnist format, or the written file does not compute what the source did.

    The message names the layer, its type and the setting that is not supported, and what is.
    """


class OnnxImportError(ValueError):
    """An ONNX model cannot be read or written in the fastmnist format, or the written file does not match."""
