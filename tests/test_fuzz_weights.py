"""A slice of the weights-file fuzzer in CI: mutated files are either loaded and predict sanely, or refused
with WeightsFormatError; never another exception, a crash or a hang. The full run: tests/weights_fuzzer.py."""

import weights_fuzzer


def test_mutated_weights_files_are_loaded_or_refused(tmp_path):
    result = weights_fuzzer.run(cases=2000, seed=20261122, workdir=tmp_path)
    assert result["failures"] == []
    assert result["refused"] > 1000 and result["accepted"] > 10  # the mutants exercise both outcomes
    assert result["slowest_seconds"] < 5.0
