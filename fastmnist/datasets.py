"""Load MNIST from the official IDX files, with NumPy only.

``load_mnist()`` finds the data in this order: an explicit folder, ``$FASTMNIST_DATA``, Keras' own cache
(``~/.keras/datasets/mnist.npz``), a previous download in ``~/.cache/fastmnist/mnist``, and finally a fresh
download of the four official files. Every file is checked against its IDX header before it is used, and
an error names the file, what it found and what it expected.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension
IMAGE_SIDE = 28
NUM_CLASSES = 10

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

KERAS_CACHE = Path("~/.keras/datasets/mnist.npz")
DOWNLOAD_CACHE = Path("~/.cache/fastmnist/mnist")
DOWNLOAD_URLS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

Split = tuple[np.ndarray, np.ndarray]


class MnistDataError(ValueError):
    """An MNIST file is missing, unreadable or does not match its IDX header."""


def load_mnist(path: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Return ``(x_train, y_train), (x_test, y_test)`` as Keras' ``mnist.load_data()`` does.

    Shapes and dtypes: x_train ``(60000, 28, 28) uint8``, y_train ``(60000,) uint8``, x_test
    ``(10000, 28, 28) uint8``, y_test ``(10000,) uint8``; pixels 0 (paper) to 255 (ink).

    ``path`` is a folder with the four IDX files, each either plain or gzipped (``name`` or ``name.gz``).
    Without it, ``$FASTMNIST_DATA`` is used, then Keras' cache, then a cached or fresh download.
    """
    if path is not None:
        return _load_idx_folder(Path(path))
    from_env = os.environ.get("FASTMNIST_DATA")
    if from_env:
        return _load_idx_folder(Path(from_env))
    keras_cache = KERAS_CACHE.expanduser()
    if keras_cache.is_file():
        return _load_keras_npz(keras_cache)
    download_dir = DOWNLOAD_CACHE.expanduser()
    if not _has_all_files(download_dir):
        _download(download_dir)
    return _load_idx_folder(download_dir)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file (magic 2051, plain or gzipped) as ``(n, rows, cols) uint8``."""
    data = _read_bytes(Path(path))
    n, rows, cols = _parse_header(path, data, IMAGES_MAGIC, num_dims=3)
    pixels = _payload(path, data, header_size=16, expected_size=n * rows * cols)
    return pixels.reshape(n, rows, cols)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file (magic 2049, plain or gzipped) as ``(n,) uint8``, each in 0..9."""
    data = _read_bytes(Path(path))
    (n,) = _parse_header(path, data, LABELS_MAGIC, num_dims=1)
    labels = _payload(path, data, header_size=8, expected_size=n)
    if labels.size and labels.max() >= NUM_CLASSES:
        raise MnistDataError(
            f"MNIST label file '{path}': found label {int(labels.max())}, expected labels 0..{NUM_CLASSES - 1}"
        )
    return labels


def _load_idx_folder(folder: Path) -> tuple[Split, Split]:
    if not folder.is_dir():
        raise MnistDataError(f"MNIST folder '{folder}' does not exist; expected a folder with the four IDX files")
    return (
        _load_split(folder, TRAIN_IMAGES, TRAIN_LABELS),
        _load_split(folder, TEST_IMAGES, TEST_LABELS),
    )


def _load_split(folder: Path, images_name: str, labels_name: str) -> Split:
    images_path = _find_file(folder, images_name)
    labels_path = _find_file(folder, labels_name)
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise MnistDataError(
            f"MNIST image file '{images_path}': images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    if len(images) != len(labels):
        raise MnistDataError(
            f"MNIST label file '{labels_path}' has {len(labels)} labels but '{images_path}' has "
            f"{len(images)} images; expected one label per image"
        )
    return images, labels


def _find_file(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise MnistDataError(f"MNIST folder '{folder}' has neither '{name}.gz' nor '{name}'")


def _has_all_files(folder: Path) -> bool:
    names = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
    return all((folder / f"{name}.gz").is_file() for name in names)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise MnistDataError(f"MNIST file '{path}' cannot be read: {error.strerror or error}") from error
    # Gzip is recognised by its magic bytes rather than the file name, so a renamed file still works.
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise MnistDataError(f"MNIST file '{path}' is not a valid gzip file: {error}") from error


def _parse_header(path: str | os.PathLike, data: bytes, magic: int, num_dims: int) -> tuple[int, ...]:
    header_size = 4 * (1 + num_dims)
    if len(data) < header_size:
        raise MnistDataError(
            f"MNIST file '{path}' has {len(data)} bytes, expected at least a {header_size}-byte IDX header"
        )
    fields = np.frombuffer(data, dtype=">u4", count=1 + num_dims)
    if int(fields[0]) != magic:
        raise MnistDataError(
            f"MNIST file '{path}' has IDX magic number {int(fields[0])}, expected {magic} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}, unsigned bytes, {num_dims} dimension(s))"
        )
    return tuple(int(size) for size in fields[1:])


def _payload(path: str | os.PathLike, data: bytes, header_size: int, expected_size: int) -> np.ndarray:
    found_size = len(data) - header_size
    if found_size != expected_size:
        raise MnistDataError(
            f"MNIST file '{path}' has {found_size} data bytes after its header, expected {expected_size} "
            "as the header's dimensions say (truncated or wrong file?)"
        )
    # Copy so the arrays are writable and do not pin the decompressed buffer.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).copy()


def _load_keras_npz(path: Path) -> tuple[Split, Split]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    for key in ("x_train", "x_test"):
        if arrays[key].dtype != np.uint8 or arrays[key].shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise MnistDataError(
                f"Keras cache '{path}': '{key}' is {arrays[key].dtype} {arrays[key].shape}, "
                f"expected uint8 (n, {IMAGE_SIDE}, {IMAGE_SIDE})"
            )
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _download(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS):
        target = folder / f"{name}.gz"
        if not target.is_file():
            _download_one(f"{name}.gz", target)


def _download_one(file_name: str, target: Path) -> None:
    errors = []
    for base_url in DOWNLOAD_URLS:
        try:
            with urllib.request.urlopen(base_url + file_name, timeout=30) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as error:
            errors.append(f"{base_url}{file_name}: {error}")
            continue
        # Write then rename, so an interrupted download never leaves a half file that looks cached.
        partial = target.with_suffix(".part")
        partial.write_bytes(payload)
        partial.replace(target)
        return
    raise MnistDataError(
        "MNIST data not found and could not be downloaded ("
        + "; ".join(errors)
        + "). Pass a folder with the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) as path / --data, set $FASTMNIST_DATA to it, "
        f"or place Keras' mnist.npz at {KERAS_CACHE}"
    )
