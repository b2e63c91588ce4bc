"""The int8 kernels compiled on their own (tests/c/test_int8_kernels.c): each fast path against the scalar path,
bit for bit, on random odd shapes, natively for every x86 path this CPU runs and for the AArch64 ones (USDOT with
i8mm, UDOT with dotprod) under qemu-aarch64, on CPU models with and without i8mm; and the AArch64 choice of path
from what the CPU reports. The AArch64 toolchain is part of the test setup (`make test` installs it): without it
the tests fail rather than skip."""

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
AARCH64_FLAGS = {"neon_i8mm": ["-march=armv8.2-a+i8mm"], "neon_dotprod": ["-march=armv8.2-a+dotprod"]}
# qemu's CPU models: `max` has every extension, Cortex-A76 (ARMv8.2) dotprod without i8mm, Cortex-A53 (ARMv8.0)
# neither
AARCH64_RUNS = [("neon_i8mm", "max"), ("neon_dotprod", "max"), ("neon_dotprod", "cortex-a76")]
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


def require_aarch64_tools() -> None:
    missing = [tool for tool in (AARCH64_GCC, QEMU) if shutil.which(tool) is None]
    assert not missing, f"{', '.join(missing)} not found: install gcc-aarch64-linux-gnu and qemu-user"


@pytest.mark.parametrize("isa, cpu", AARCH64_RUNS)
def test_aarch64_fast_path_equals_scalar_under_qemu(tmp_path, isa, cpu):
    require_aarch64_tools()
    program = build(AARCH64_GCC, [*AARCH64_FLAGS[isa], "-static"], isa, tmp_path / f"test_{isa}")
    check_run([QEMU, "-cpu", cpu, str(program), CASES])


BEST_PATH = '#include <stdio.h>\n#include "cpu_s8.h"\nint main(void) { puts(fm_s8_isa_name(fm_s8_isa_best())); }\n'


@pytest.mark.parametrize("cpu, expected", [("max", "neon_i8mm"), ("cortex-a76", "neon_dotprod"),
                                           ("cortex-a53", "scalar")])
def test_aarch64_path_is_chosen_from_hwcap(tmp_path, cpu, expected):
    require_aarch64_tools()
    source = tmp_path / "best_path.c"
    source.write_text(BEST_PATH)
    program = tmp_path / "best_path"
    command = [AARCH64_GCC, *WARNINGS, "-static", f"-I{KERNELS}", "-DFM_HAVE_S8_NEON_I8MM",
               "-DFM_HAVE_S8_NEON_DOTPROD", str(source), str(KERNELS / "cpu_s8.c"), "-o", str(program)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    result = subprocess.run([QEMU, "-cpu", cpu, str(program)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, expected), result.stdout + result.stderr
