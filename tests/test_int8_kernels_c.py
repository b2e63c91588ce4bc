"""The int8 kernels compiled on their own (tests/c/test_int8_kernels.c): each fast path against the scalar path,
bit for bit, on random odd shapes, natively for every x86 path this CPU runs and for AArch64 (USDOT, i8mm)
under qemu-aarch64. The AArch64 toolchain is part of the test setup (`make test` installs it): without it the
test fails rather than skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fastmnist import _engine

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "fastmnist" / "_kernels"
SOURCES = [ROOT / "tests" / "c" / "test_int8_kernels.c"] + [KERNELS / name for name in (
    "dense_s8.c", "conv2d_s8.c", "conv2d.c", "activation.c", "dense_s8_simd.c", "conv2d_s8_simd.c")]
WARNINGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-psabi"]
# the flags setup.py compiles each path with (int8_simd_variants)
X86_FLAGS = {"avx2": ["-mavx2", "-mfma"], "avxvnni": ["-mavx2", "-mfma", "-mavxvnni"],
             "avx512vnni": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]}
AARCH64_GCC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
CASES = "200"


def build(compiler: str, flags: list[str], isa: str, out: Path) -> Path:
    command = [compiler, *WARNINGS, *flags, f"-I{KERNELS}", f"-DFM_S8_ISA_SUFFIX={isa}", *map(str, SOURCES), "-lm",
               "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return out


def check_run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "0 failures" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("isa", [isa for isa in X86_FLAGS if isa in _engine.supported_int8_isas()])
def test_x86_fast_path_equals_scalar(tmp_path, isa):
    check_run([str(build("gcc", X86_FLAGS[isa], isa, tmp_path / f"test_{isa}")), CASES])


def test_aarch64_i8mm_fast_path_equals_scalar_under_qemu(tmp_path):
    missing = [tool for tool in (AARCH64_GCC, QEMU) if shutil.which(tool) is None]
    assert not missing, f"{', '.join(missing)} not found: install gcc-aarch64-linux-gnu and qemu-user"
    program = build(AARCH64_GCC, ["-march=armv8.2-a+i8mm", "-static"], "neon_i8mm", tmp_path / "test_neon")
    check_run([QEMU, "-cpu", "max", str(program), CASES])
