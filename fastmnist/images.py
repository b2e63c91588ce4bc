"""Read a picture of a digit from an image file.

Decoding is done by Qt's `QImageReader` (PySide6 is the one image library the project uses), so PNG,
JPEG, BMP, PGM/PPM/PBM and the other formats Qt was built with all work, in grey, colour, palette and
16-bit variants. The result is ink high, ready for `fastmnist.preprocess.to_mnist`.
"""

from __future__ import annotations

import os

import numpy as np

from fastmnist.preprocess import ink_high

# Refuse larger images before decoding them: no digit needs more, and a decompression bomb would
# otherwise allocate gigabytes.
MAX_PIXELS = 100_000_000
# Luma weights (ITU-R BT.601), the usual choice for turning a colour scan into grey.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _import_qt():
    """Import Qt's image classes, with an error that says what to install when they are missing."""
    try:
        from PySide6.QtGui import QImage, QImageReader
    except ImportError as error:
        raise ImportError("reading image files needs PySide6 (pip install pyside6)") from error
    return QImage, QImageReader


def _pixels(image, dtype: type, channels: int) -> np.ndarray:
    """Copy a QImage's pixels into a (height, width[, channels]) array, dropping row padding."""
    height, width = image.height(), image.width()
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(image.constBits(), dtype, count=height * image.bytesPerLine() // itemsize)
    rows = rows.reshape(height, image.bytesPerLine() // itemsize)[:, : width * channels]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rows.reshape(shape).copy()


def _grey(image) -> np.ndarray:
    """A decoded QImage as (height, width) float32 grey in [0, 1], dark = 0, alpha composited on white.

    16-bit images are read at 16 bits, all others at 8 bits.
    """
    QImage, _ = _import_qt()
    Format = QImage.Format
    deep = image.depth() > 32 or image.format() == Format.Format_Grayscale16
    dtype, grey_format, rgba_format = (
        (np.uint16, Format.Format_Grayscale16, Format.Format_RGBA64)
        if deep
        else (np.uint8, Format.Format_Grayscale8, Format.Format_RGBA8888)
    )
    scale = np.float32(1.0 / np.iinfo(dtype).max)
    if image.isGrayscale() and not image.hasAlphaChannel():
        return _pixels(image.convertToFormat(grey_format), dtype, 1) * scale
    # Channel by channel in float32, so a big colour photo needs a few (height, width) temporaries
    # rather than a float copy of all four channels.
    rgba = _pixels(image.convertToFormat(rgba_format), dtype, 4)
    luma = sum(rgba[..., channel] * (weight * scale) for channel, weight in enumerate(_LUMA))
    alpha = rgba[..., 3] * scale
    # Transparent areas show the page behind them, which we take to be white paper.
    grey = luma * alpha + (1.0 - alpha)
    return np.clip(grey, 0.0, 1.0, out=grey)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a picture of a digit, ink high.

    Colour is converted to grey, transparency is composited on white and the polarity is detected
    from the border (see `fastmnist.preprocess.ink_high`): dark ink on light paper is inverted.
    JPEG orientation tags are honoured.

    Args:
        path: an image file in any format Qt reads (PNG, JPEG, BMP, PGM, ...).

    Returns:
        (H, W) float32 in [0, 1], ink high, at the file's own resolution.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: when the file is empty, not an image, cannot be decoded, or has more than
            `MAX_PIXELS` pixels.
        ImportError: when PySide6 is not installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file '{path}' does not exist")
    _, QImageReader = _import_qt()
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and size.width() * size.height() > MAX_PIXELS:
        raise ValueError(
            f"image file '{path}' is {size.width()}x{size.height()} pixels, more than the "
            f"{MAX_PIXELS // 1_000_000} Mpixel this reader accepts"
        )
    image = reader.read()
    if image.isNull():
        raise ValueError(f"cannot read image file '{path}': {reader.errorString()}")
    return ink_high(_grey(image))
