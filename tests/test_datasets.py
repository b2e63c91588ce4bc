"""The MNIST IDX reader: good files (plain and gzipped), corrupt files, and the real data set."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from fastmnist.datasets import MnistDataError, load_mnist, read_idx_images, read_idx_labels

REAL_MNIST = Path(os.environ.get("FASTMNIST_DATA") or Path(__file__).parents[1].parent / "shared/data/mnist")
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file holding ``array`` (uint8), with the right magic number unless one is given."""
    magic = magic if magic is not None else {3: 2051, 1: 2049}[array.ndim]
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(folder: Path, num_train: int = 12, num_test: int = 7, compress: bool = True) -> dict:
    """Write a small, valid MNIST-shaped data set to ``folder``; returns the arrays written."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, num_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / NAMES[key]).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_load_mnist_reads_what_was_written(tmp_path, compress):
    written = write_fake_mnist(tmp_path, compress=compress)
    (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path)
    for key, array in zip(written, (x_train, y_train, x_test, y_test)):
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, written[key])


def test_load_mnist_uses_environment_variable(tmp_path, monkeypatch):
    written = write_fake_mnist(tmp_path)
    monkeypatch.setenv("FASTMNIST_DATA", str(tmp_path))
    (_, y_train), _ = load_mnist()
    np.testing.assert_array_equal(y_train, written["train_labels"])


def test_load_mnist_without_data_or_network_lists_the_options(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTMNIST_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no Keras cache, no download cache
    monkeypatch.setattr("fastmnist.datasets.DOWNLOAD_URLS", ("http://127.0.0.1:9/",))  # nothing listens there
    with pytest.raises(MnistDataError, match=r"FASTMNIST_DATA.*mnist\.npz"):
        load_mnist()


def test_load_mnist_reads_keras_cache(tmp_path, monkeypatch):
    arrays = write_fake_mnist(tmp_path / "idx")
    cache = tmp_path / ".keras/datasets/mnist.npz"
    cache.parent.mkdir(parents=True)
    np.savez(cache, x_train=arrays["train_images"], y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    monkeypatch.delenv("FASTMNIST_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    _, (x_test, _) = load_mnist()
    np.testing.assert_array_equal(x_test, arrays["test_images"])


def corrupt(folder: Path, key: str, data: bytes) -> Path:
    """Replace one file of a fake data set with ``data`` (stored uncompressed); returns its path."""
    (folder / f"{NAMES[key]}.gz").unlink()
    path = folder / NAMES[key]
    path.write_bytes(data)
    return path


def test_truncated_image_file_is_named(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    path = corrupt(tmp_path, "test_images", idx_bytes(arrays["test_images"])[:-100])
    with pytest.raises(MnistDataError, match=rf"'{path}'.*{7 * 784 - 100} data bytes.*expected {7 * 784}"):
        load_mnist(tmp_path)


def test_header_only_fragment_is_refused(tmp_path):
    write_fake_mnist(tmp_path)
    path = corrupt(tmp_path, "train_labels", b"\x00\x00\x08")
    with pytest.raises(MnistDataError, match=rf"'{path}' has 3 bytes, expected at least a 8-byte IDX header"):
        load_mnist(tmp_path)


def test_bad_magic_number_is_named(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    path = corrupt(tmp_path, "train_labels", idx_bytes(arrays["train_labels"], magic=2051))
    with pytest.raises(MnistDataError, match=rf"'{path}' has IDX magic number 2051, expected 2049"):
        load_mnist(tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    path = corrupt(tmp_path, "test_labels", idx_bytes(arrays["test_labels"][:-1]))
    with pytest.raises(MnistDataError, match=rf"'{path}' has 6 labels but .* has 7 images"):
        load_mnist(tmp_path)


def test_label_out_of_range_is_refused(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    labels = arrays["train_labels"].copy()
    labels[3] = 10
    path = corrupt(tmp_path, "train_labels", idx_bytes(labels))
    with pytest.raises(MnistDataError, match=rf"'{path}': found label 10, expected labels 0..9"):
        load_mnist(tmp_path)


def test_wrong_image_size_is_refused(tmp_path):
    write_fake_mnist(tmp_path)
    path = corrupt(tmp_path, "train_images", idx_bytes(np.zeros((12, 28, 27), np.uint8)))
    with pytest.raises(MnistDataError, match=rf"'{path}': images are 28x27, expected 28x28"):
        load_mnist(tmp_path)


def test_bad_gzip_is_named(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    path = tmp_path / f"{NAMES['test_images']}.gz"
    path.write_bytes(gzip.compress(idx_bytes(arrays["test_images"]))[:-20])
    with pytest.raises(MnistDataError, match=rf"'{path}' is not a valid gzip file"):
        load_mnist(tmp_path)


def test_missing_file_is_named(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / f"{NAMES['test_labels']}.gz").unlink()
    with pytest.raises(MnistDataError, match="neither 't10k-labels-idx1-ubyte.gz' nor 't10k-labels-idx1-ubyte'"):
        load_mnist(tmp_path)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(MnistDataError, match="'.*nowhere' does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_readers_check_the_kind_of_file(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))
    np.testing.assert_array_equal(read_idx_labels(path), np.arange(10))
    with pytest.raises(MnistDataError, match="magic number 2049, expected 2051"):
        read_idx_images(path)


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"the MNIST files are not at {REAL_MNIST} (set FASTMNIST_DATA)")
def test_real_mnist_matches_its_published_description():
    (x_train, y_train), (x_test, y_test) = load_mnist(REAL_MNIST)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8
    # Label counts as published with the files (shared/data/mnist/README.md).
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_test.max() == 255 and x_test[:, 0, 0].max() == 0  # ink high, blank corners
