"""Tests for fastmnist.preprocess: turning any picture of a digit into an MNIST-style input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from fastmnist.preprocess import CENTRE, DIGIT_SIZE, FIELD_SIZE, NOISE_FLOOR, ink_high, is_blank, to_mnist

# The official files live next to the checkout (../shared/data/mnist), never inside it.
MNIST_FOLDER = Path(os.environ.get("FASTMNIST_DATA", Path(__file__).resolve().parents[2] / "shared/data/mnist"))


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, columns = np.indices(image.shape)
    total = image.sum()
    return float((rows * image).sum() / total), float((columns * image).sum() / total)


def ink_extent(image: np.ndarray, level: float = 0.0) -> tuple[int, int]:
    """(height, width) of the bounding box of pixels above `level`."""
    rows = np.flatnonzero((image > level).any(axis=1))
    columns = np.flatnonzero((image > level).any(axis=0))
    return rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


def rectangle(shape: tuple[int, int], top: int, left: int, height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """A `shape` image of `dtype` with a full-ink rectangle on blank paper."""
    image = np.zeros(shape, dtype)
    image[top : top + height, left : left + width] = np.iinfo(dtype).max
    return image


def test_to_mnist_returns_28x28_float32_in_unit_range():
    result = to_mnist(rectangle((100, 80), 10, 20, 50, 7))
    assert result.shape == (FIELD_SIZE, FIELD_SIZE)
    assert result.dtype == np.float32
    assert result.min() >= 0.0 and result.max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "shape, box, expected",
    [
        ((200, 200), (30, 40, 100, 50), (20, 10)),  # tall: height becomes 20, width keeps the 2:1 ratio
        ((200, 300), (50, 10, 40, 160), (5, 20)),  # wide
        ((64, 64), (0, 0, 64, 64), (20, 20)),  # square, touching every edge
    ],
)
def test_to_mnist_scales_the_longer_side_to_20_pixels_keeping_aspect(shape, box, expected):
    result = to_mnist(rectangle(shape, *box))
    assert ink_extent(result) == expected


def test_to_mnist_crops_to_the_ink_wherever_it_is():
    a = to_mnist(rectangle((300, 300), 0, 0, 60, 30))
    b = to_mnist(rectangle((300, 300), 230, 260, 60, 30))
    np.testing.assert_array_equal(a, b)


def test_to_mnist_ignores_faint_noise_outside_the_digit():
    rng = np.random.default_rng(0)
    clean = rectangle((120, 120), 40, 50, 60, 20)
    noisy = clean.copy()
    background = clean == 0
    noisy[background] = rng.integers(0, int(NOISE_FLOOR * 255), size=background.sum())
    np.testing.assert_allclose(to_mnist(noisy), to_mnist(clean), atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_to_mnist_puts_the_centre_of_mass_at_14(seed):
    rng = np.random.default_rng(seed)
    image = np.zeros((400, 300), np.float32)
    # An asymmetric blob: a thick bar plus a heavy corner, so the centre of mass is not the box centre.
    top, left = rng.integers(0, 150, size=2)
    image[top : top + 200, left : left + 30] = 1.0
    image[top : top + 40, left : left + 120] = rng.uniform(0.5, 1.0)
    row, column = centre_of_mass(to_mnist(image))
    assert abs(row - CENTRE) <= 0.5 and abs(column - CENTRE) <= 0.5


def test_to_mnist_keeps_a_lopsided_digit_inside_the_field():
    # A "T" with a heavy bar and a hairline stem has its centre of mass near the top of its box;
    # centring it exactly would push the stem out of the field, so the shift is clipped instead.
    image = np.zeros((100, 100), np.float32)
    image[:10] = 1.0
    image[10:, 50:52] = 1.0
    result = to_mnist(image)
    assert ink_extent(result) == (DIGIT_SIZE, DIGIT_SIZE)
    assert result[-1].max() > 0  # the stem reaches the bottom edge, whole
    assert centre_of_mass(result)[0] < CENTRE - 1  # so its centre of mass could not be centred


def test_to_mnist_antialiases_when_shrinking():
    # One-pixel lines 10 pixels apart shrunk 10x must become uniform grey, not aliased stripes.
    image = np.zeros((400, 400), np.float32)
    image[::10] = 1.0
    image[-1] = 1.0
    result = to_mnist(image)
    inner = result[5:20, 5:20]
    assert inner.std() < 0.05 and 0.05 < inner.mean() < 1.0


def test_to_mnist_treats_dtypes_by_their_full_scale():
    box = (30, 40, 100, 50)
    expected = to_mnist(rectangle((200, 200), *box))
    np.testing.assert_allclose(to_mnist(rectangle((200, 200), *box, dtype=np.uint16)), expected, atol=1e-6)
    np.testing.assert_allclose(to_mnist(rectangle((200, 200), *box).astype(bool)), expected, atol=1e-6)
    as_float = rectangle((200, 200), *box).astype(np.float32) / 255
    np.testing.assert_allclose(to_mnist(as_float), expected, atol=1e-6)


def test_to_mnist_of_an_empty_picture_is_all_zero():
    assert not to_mnist(np.zeros((50, 70), np.uint8)).any()
    assert not to_mnist(np.full((50, 70), NOISE_FLOOR, np.float32)).any()


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (5, 3)])
def test_to_mnist_enlarges_tiny_inputs(shape):
    result = to_mnist(np.ones(shape, np.float32))
    height, width = ink_extent(result)
    assert max(height, width) == DIGIT_SIZE
    assert height / width == pytest.approx(shape[0] / shape[1], rel=0.1)
    assert abs(centre_of_mass(result)[0] - CENTRE) <= 0.5


def test_to_mnist_handles_a_4000x4000_input_quickly():
    image = np.zeros((4000, 4000), np.uint8)
    image[500:3500, 1800:2300] = 255  # a long "1"
    image[500:900, 1200:1800] = 255
    start = time.perf_counter()
    result = to_mnist(image)
    elapsed = time.perf_counter() - start
    assert ink_extent(result)[0] == DIGIT_SIZE
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((2, 3, 4)), "2-D"),
        (np.zeros(10), "2-D"),
        (np.zeros((0, 5)), "at least one pixel"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.0, 2.0]]), r"\[0, 1\]"),
        (np.array([[-1, 3]]), r"\[0, 255\]"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_to_mnist_rejects_invalid_images_naming_what_it_got(image, message):
    with pytest.raises(ValueError, match=message):
        to_mnist(image)


def test_is_blank():
    assert is_blank(np.zeros((10, 10), np.uint8))
    assert is_blank(np.full((10, 10), 0.05, np.float32))
    assert not is_blank(rectangle((10, 10), 2, 2, 1, 1))
    with pytest.raises(ValueError, match="2-D"):
        is_blank(np.zeros(3))


def test_ink_high_inverts_dark_ink_on_light_paper():
    paper = np.full((60, 40), 230, np.uint8)
    paper[20:40, 15:20] = 30  # dark stroke
    result = ink_high(paper)
    assert result.dtype == np.float32
    assert result[30, 17] == pytest.approx(1.0)
    assert result[0, 0] == 0.0 and result[50, 30] == 0.0


def test_ink_high_keeps_light_ink_on_dark_paper_and_stretches_contrast():
    board = np.full((60, 40), 40, np.uint8)
    board[20:40, 15:20] = 140  # a faint chalk stroke
    result = ink_high(board)
    assert result[30, 17] == pytest.approx(1.0)
    assert result[0, 0] == 0.0


def test_ink_high_is_decided_by_the_border_not_by_the_amount_of_ink():
    # A bold digit covering most of the image is still ink: the border shows the paper is white.
    paper = np.full((50, 50), 255, np.uint8)
    paper[3:47, 3:47] = 0
    assert ink_high(paper)[25, 25] == pytest.approx(1.0)


def test_ink_high_of_a_uniform_image_is_zero():
    assert not ink_high(np.full((8, 8), 200, np.uint8)).any()


@pytest.fixture(scope="module")
def mnist_test_digits():
    if not (MNIST_FOLDER / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST files are not in {MNIST_FOLDER} (set FASTMNIST_DATA to their folder)")
    from fastmnist.datasets import load_mnist

    _, (images, labels) = load_mnist(MNIST_FOLDER)
    return images, labels


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 7, 11, 18])
def test_to_mnist_recovers_a_real_digit_pasted_large_and_off_centre(mnist_test_digits, index):
    images, _ = mnist_test_digits
    original = images[index].astype(np.float32) / 255
    enlarged = np.kron(original, np.ones((5, 5), np.float32))  # 140x140
    canvas = np.zeros((600, 500), np.float32)
    canvas[37 : 37 + 140, 311 : 311 + 140] = enlarged
    result = to_mnist(canvas)
    correlation = np.corrcoef(result.ravel(), original.ravel())[0, 1]
    assert correlation > 0.99
    assert np.abs(result - original).mean() < 0.01


def test_to_mnist_leaves_real_digits_almost_unchanged(mnist_test_digits):
    # MNIST digits already are what to_mnist makes, so it should be close to a fixed point on them.
    images, _ = mnist_test_digits
    originals = images[:200].astype(np.float32) / 255
    results = np.stack([to_mnist(image) for image in originals])
    correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(results, originals)]
    assert np.median(correlations) > 0.95
