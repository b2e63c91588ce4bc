"""The installed distribution: everything under the one name `fastmnist`, the app and the weights inside it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

import fastmnist


@pytest.fixture(scope="module")
def distribution() -> metadata.Distribution:
    try:
        return metadata.distribution("fastmnist")
    except metadata.PackageNotFoundError:
        pytest.skip("fastmnist is not installed (these tests check the installed package, as `make test` runs)")


def installed_files(distribution: metadata.Distribution) -> set[str]:
    """Paths of the distribution's files relative to site-packages, without its scripts (in ../../bin)."""
    return {str(path) for path in distribution.files if not str(path).startswith("..")}


def test_only_fastmnist_lands_at_the_top_level(distribution):
    top_level = {Path(path).parts[0] for path in installed_files(distribution)}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"fastmnist"}


def test_the_app_and_the_weights_are_inside_the_package(distribution):
    expected = {"fastmnist/gui/__main__.py", "fastmnist/gui/app.py", "fastmnist/weights/cnn.npz"}
    assert expected <= installed_files(distribution)


def test_the_tests_import_the_installed_package(distribution):
    located = Path(str(distribution.locate_file("fastmnist/__init__.py")))
    assert Path(fastmnist.__file__).resolve() == located.resolve()
