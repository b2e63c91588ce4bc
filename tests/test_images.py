"""Tests for fastmnist.images.read_image: every common file flavour comes back as ink-high grey."""

from __future__ import annotations

import numpy as np
import pytest

QtGui = pytest.importorskip("PySide6.QtGui", reason="reading images needs PySide6")
QImage = QtGui.QImage

from fastmnist.images import MAX_PIXELS, read_image  # noqa: E402

HEIGHT, WIDTH = 60, 40
STROKE = (slice(10, 50), slice(17, 23))  # a "1": rows 10..49, columns 17..22


def digit_on_paper() -> np.ndarray:
    """(60, 40) uint8: a dark vertical stroke on white paper, as a scan would look."""
    picture = np.full((HEIGHT, WIDTH), 255, np.uint8)
    picture[STROKE] = 0
    return picture


def qimage(array: np.ndarray, image_format: QImage.Format) -> QImage:
    """A QImage owning a copy of `array`, whose rows are `array`'s rows."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return QImage(array.data, width, height, array.strides[0], image_format).copy()


def assert_is_the_digit(result: np.ndarray, tolerance: float = 0.02) -> None:
    assert result.shape == (HEIGHT, WIDTH)
    assert result.dtype == np.float32
    expected = np.zeros((HEIGHT, WIDTH), np.float32)
    expected[STROKE] = 1.0
    np.testing.assert_allclose(result, expected, atol=tolerance)


def save(image: QImage, path, file_format: str, quality: int = -1) -> str:
    assert image.save(str(path), file_format, quality), f"could not write {path}"
    return str(path)


@pytest.mark.parametrize("file_format", ["PNG", "BMP", "PGM"])
def test_read_image_reads_8_bit_grey(tmp_path, file_format):
    grey = qimage(digit_on_paper(), QImage.Format.Format_Grayscale8)
    path = save(grey, tmp_path / f"d.{file_format.lower()}", file_format)
    assert_is_the_digit(read_image(path))


def test_read_image_reads_jpeg_within_its_loss(tmp_path):
    grey = qimage(digit_on_paper(), QImage.Format.Format_Grayscale8)
    path = save(grey, tmp_path / "d.jpg", "JPEG", quality=90)
    assert_is_the_digit(read_image(path), tolerance=0.15)


def test_read_image_reads_colour_as_luminance(tmp_path):
    rgb = np.repeat(digit_on_paper()[:, :, None], 3, axis=2)
    rgb[STROKE] = (0, 0, 160)  # dark blue ink
    path = save(qimage(rgb, QImage.Format.Format_RGB888), tmp_path / "d.png", "PNG")
    result = read_image(path)
    assert result[STROKE].min() == pytest.approx(1.0)
    assert result[0, 0] == 0.0


def test_read_image_composites_transparency_on_white(tmp_path):
    # Black ink on a fully transparent black background: shown on a page it is black on white.
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[STROKE] = (0, 0, 0, 255)
    path = save(qimage(rgba, QImage.Format.Format_RGBA8888), tmp_path / "d.png", "PNG")
    assert_is_the_digit(read_image(path))


def test_read_image_reads_palette_images(tmp_path):
    indexed = qimage((digit_on_paper() == 0).astype(np.uint8), QImage.Format.Format_Indexed8)
    indexed.setColorTable([QtGui.qRgb(250, 250, 240), QtGui.qRgb(20, 20, 90)])
    path = save(indexed, tmp_path / "d.png", "PNG")
    assert_is_the_digit(read_image(path))


def test_read_image_composites_a_transparent_palette_entry_on_white(tmp_path):
    indexed = qimage((digit_on_paper() == 0).astype(np.uint8), QImage.Format.Format_Indexed8)
    indexed.setColorTable([QtGui.qRgba(0, 0, 0, 0), QtGui.qRgba(0, 0, 0, 255)])  # see-through, black
    path = save(indexed, tmp_path / "d.png", "PNG")
    assert_is_the_digit(read_image(path))


def test_read_image_keeps_16_bit_precision(tmp_path):
    # Two ink levels 100/65535 apart: the same 8-bit value, distinct at 16 bits.
    deep = digit_on_paper().astype(np.uint16) * 257
    deep[10:30, 17:23] = 1000
    deep[30:50, 17:23] = 1100
    path = save(qimage(deep, QImage.Format.Format_Grayscale16), tmp_path / "d.png", "PNG")
    assert QImage(path).format() == QImage.Format.Format_Grayscale16
    result = read_image(path)
    assert result[20, 20] == pytest.approx(1.0)
    assert result[40, 20] == pytest.approx((65535 - 1100) / (65535 - 1000), abs=1e-5)
    assert result[0, 0] == 0.0


def test_read_image_keeps_light_ink_on_dark_paper(tmp_path):
    inverted = 255 - digit_on_paper()
    path = save(qimage(inverted, QImage.Format.Format_Grayscale8), tmp_path / "d.png", "PNG")
    assert_is_the_digit(read_image(path))


def test_read_image_refuses_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.png", b""),
        ("text.png", b"this is not an image\n"),
        ("truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"),
        ("noise.jpg", bytes(range(256)) * 4),
    ],
)
def test_read_image_refuses_files_that_are_not_images(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=name):
        read_image(path)


def test_read_image_refuses_absurd_sizes_before_decoding(tmp_path):
    # A 20000x20000 PBM header: 400 Mpixel declared, a few bytes of data. Refused from the header,
    # without allocating the image.
    path = tmp_path / "huge.pbm"
    path.write_bytes(b"P4\n20000 20000\n" + b"\x00" * 16)
    assert 20000 * 20000 > MAX_PIXELS
    with pytest.raises(ValueError, match="Mpixel"):
        read_image(path)
