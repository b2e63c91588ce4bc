"""Turn any picture of one digit into the 28x28 image an MNIST network expects.

MNIST was made from scans of handwriting like this (LeCun et al.): each digit was cropped to its ink,
scaled with anti-aliasing so that its longer side is 20 pixels (aspect ratio kept), and placed in a
28x28 field so that its centre of mass sits at the centre. A network trained on MNIST only works well
on inputs made the same way, so `to_mnist` repeats those steps:

1. scale the input to [0, 1] and zero everything at or below `NOISE_FLOOR` (sensor noise, paper grain);
2. crop to the bounding box of the remaining ink;
3. resample the box so its longer side is `DIGIT_SIZE` pixels, with an exact area (box) filter;
4. stretch the contrast so the strongest ink is 1.0, as in MNIST where almost every digit reaches 255;
5. paste it into a `FIELD_SIZE` square with its centre of mass at `(14, 14)` (row, column; pixel centres
   at integer coordinates, which is where MNIST's centres of mass lie, 14.0 +- 0.3), shifted by whole
   pixels and clipped so that the digit stays inside the field.

Everything here is NumPy only, so the engine and the command line can use it without Qt.
"""

from __future__ import annotations

import numpy as np

FIELD_SIZE = 28
DIGIT_SIZE = 20
CENTRE = 14.0
# Ink at or below this level (on the 0..1 scale) is treated as background; high enough to drop JPEG
# ringing and paper grain, low enough to keep the faint edge of a thin pencil stroke.
NOISE_FLOOR = 0.1
# How `ink_high` finds the paper: the median of a frame this fraction of the shorter side wide.
BORDER_FRACTION = 0.05


def _full_scale(dtype: np.dtype) -> float:
    """The pixel value that means full ink for an image of this dtype."""
    if dtype == np.bool_:
        return 1.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.integer):
        return 255.0
    return 1.0


def _checked(image: np.ndarray) -> np.ndarray:
    """Validate `image` as a 2-D picture and return it as an array (not yet converted)."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D (height, width), got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"image must have at least one pixel, got shape {array.shape}")
    kind = array.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"image must have a bool, integer or float dtype, got {array.dtype}")
    if kind == "f" and np.isnan(array).any():
        raise ValueError(f"image of shape {array.shape} contains NaN")
    lowest, highest = array.min(), array.max()
    if lowest < 0 or highest > _full_scale(array.dtype):
        expected = "[0, 1]" if kind in "bf" else f"[0, {_full_scale(array.dtype):.0f}]"
        raise ValueError(
            f"{array.dtype} image values must lie in {expected}, found [{lowest}, {highest}]"
        )
    return array


def _to_unit(array: np.ndarray) -> np.ndarray:
    """`array` as float32 on the 0..1 scale of its dtype."""
    return array.astype(np.float32) / np.float32(_full_scale(array.dtype))


def _ink_box(array: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of pixels above `NOISE_FLOOR`, or None when there are none.

    Works in the array's own units, so a huge uint8 input is never converted to float as a whole.
    """
    ink = array > NOISE_FLOOR * _full_scale(array.dtype)
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(ink.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def is_blank(image: np.ndarray) -> bool:
    """True when `image` (2-D, ink high, any size and dtype) holds no ink above `NOISE_FLOOR`."""
    return _ink_box(_checked(image)) is None


def _area_weights(source: int, target: int) -> np.ndarray:
    """The (target, source) float32 matrix of an exact area resampling along one axis.

    Output pixel i covers the source interval [i * source / target, (i + 1) * source / target); its
    weight on source pixel j is the length of that interval's overlap with [j, j + 1), divided by the
    interval's length. Rows sum to 1. This is a box filter when shrinking (anti-aliased) and a
    pixel-replication with blended edges when enlarging.
    """
    step = source / target
    starts = np.arange(target)[:, None] * step
    ends = starts + step
    left = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, left + 1) - np.maximum(starts, left), 0.0, None)
    return (overlap / step).astype(np.float32)


def _resample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-resample a 2-D float32 image to (height, width).

    Separable: one matrix product per axis. A 4000x4000 crop costs two BLAS calls of about 0.3
    GFLOP in total, so no integer pre-reduction is needed to keep big inputs fast.
    """
    rows = _area_weights(image.shape[0], height)
    columns = _area_weights(image.shape[1], width)
    return rows @ image @ columns.T


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of mass of a non-empty 2-D image, pixel centres at integers."""
    total = image.sum()
    row = float(image.sum(axis=1) @ np.arange(image.shape[0])) / total
    column = float(image.sum(axis=0) @ np.arange(image.shape[1])) / total
    return row, column


def to_mnist(image: np.ndarray) -> np.ndarray:
    """Make an MNIST-style input from a picture of one digit.

    Args:
        image: (H, W) array, ink high (0 = blank paper). uint8 is read as 0..255, uint16 as 0..65535,
            other integer dtypes as 0..255, bool as 0/1 and floats as 0..1.

    Returns:
        (28, 28) float32 in [0, 1], ink high: the digit cropped, scaled to fit 20x20 and centred by its
        centre of mass, as in MNIST. All zeros when the image holds no ink.

    Raises:
        ValueError: when `image` is not 2-D, has no pixels, contains NaN or has values out of range.
    """
    array = _checked(image)
    field = np.zeros((FIELD_SIZE, FIELD_SIZE), np.float32)
    box = _ink_box(array)
    if box is None:
        return field
    digit = _to_unit(array[box])
    digit[digit <= NOISE_FLOOR] = 0.0

    height, width = digit.shape
    scale = DIGIT_SIZE / max(height, width)
    digit = _resample(digit, max(1, round(height * scale)), max(1, round(width * scale)))
    digit /= digit.max()

    centre_row, centre_column = _centre_of_mass(digit)
    top = int(np.clip(round(CENTRE - centre_row), 0, FIELD_SIZE - digit.shape[0]))
    left = int(np.clip(round(CENTRE - centre_column), 0, FIELD_SIZE - digit.shape[1]))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.clip(field, 0.0, 1.0, out=field)


def ink_high(image: np.ndarray) -> np.ndarray:
    """Normalise a photo or scan of a digit so that ink is high and the paper is 0.

    The rule: the paper is what surrounds the digit, so its level is the median of a frame along the
    image border (`BORDER_FRACTION` of the shorter side wide, at least one pixel). If that level is
    above mid-grey the picture is dark ink on light paper and is inverted. Then the contrast is
    stretched so the paper maps to 0 and the strongest ink to 1 (values beyond the paper level clip
    to 0), which also lifts faint pencil or a grey background.

    Args:
        image: (H, W) array of any dtype accepted by `to_mnist`, in either polarity.

    Returns:
        (H, W) float32 in [0, 1], ink high. All zeros for a uniform image.
    """
    picture = _to_unit(_checked(image))
    frame = max(1, round(BORDER_FRACTION * min(picture.shape)))
    border = np.concatenate(
        [
            picture[:frame].ravel(),
            picture[-frame:].ravel(),
            picture[:, :frame].ravel(),
            picture[:, -frame:].ravel(),
        ]
    )
    paper = float(np.median(border))
    if paper > 0.5:
        picture = 1.0 - picture
        paper = 1.0 - paper
    ink = float(picture.max())
    if ink <= paper:
        return np.zeros_like(picture)
    stretched = (picture - np.float32(paper)) / np.float32(ink - paper)
    return np.clip(stretched, 0.0, 1.0, out=stretched)
