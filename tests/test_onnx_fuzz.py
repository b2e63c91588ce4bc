"""A slice of the ONNX fuzzer (tests/onnx_fuzzer.py): mutated files are refused clearly or imported correctly,
and none crashes or hangs the importer."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="importing ONNX models needs onnx (pip install 'fastmnist[onnx]')")

from onnx_fuzzer import fuzz  # noqa: E402

CASES = 300


def test_mutated_onnx_files_are_refused_clearly_or_imported_correctly():
    counts, failures = fuzz(CASES, seed=20261201, timeout=60.0)
    assert not failures, "\n".join(f"case {case} ({what}): {result}" for case, what, result in failures[:10])
    assert counts["refused"] + counts["imported"] + counts["ill_conditioned"] == CASES
    # The mutants reach both ends: some are still models that import, most are refused.
    assert counts["imported"] >= 10 and counts["refused"] >= CASES // 2


def test_every_seed_model_imports_before_it_is_mutated(tmp_path):
    from onnx_fuzzer import check_case, seed_models

    for name, data in seed_models().items():
        path = tmp_path / "seed.onnx"
        path.write_bytes(data)
        assert check_case(path, tmp_path)["outcome"] == "imported", name
