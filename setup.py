"""Builds fastmnist's compiled extension: the C kernels and the Cython bridge.

The fast-path sources (*_simd.c) are compiled once per instruction set with that set's flags, and the CPU
picks one at run time, so one build serves every CPU of its architecture. Environment switches:
  FASTMNIST_PORTABLE=1   no -march=native for the rest of the code (for wheels meant for other machines)
  FASTMNIST_NO_OPENMP=1  build without OpenMP (one thread)
  FASTMNIST_DEBUG=1      -O0 -g and Cython bounds checks, for debugging
"""

import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

KERNELS = Path("fastmnist/_kernels")
PLAIN_SOURCES = ["activation.c", "avgpool2d.c", "batchnorm.c", "conv2d.c", "cpu.c", "dense.c", "depthwise_conv2d.c",
                 "dispatch.c", "global_pool2d.c", "maxpool2d.c", "network.c", "softmax.c", "zeropad2d.c"]
SIMD_SOURCES = ["activation_simd.c", "dense_simd.c", "conv2d_simd.c", "depthwise_conv2d_simd.c", "softmax_simd.c"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def simd_variants() -> dict[str, tuple[int, list[str]]]:
    """ISA name -> (floats per vector, compiler flags) for this machine's architecture."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return {"avx2": (8, ["-mavx2", "-mfma"]), "avx512": (16, ["-mavx512f", "-mfma"])}
    if machine in ("aarch64", "arm64"):
        return {"neon": (4, [])}
    return {}


class BuildKernels(build_ext):
    """Adds the per-ISA objects and, where the compiler has it, OpenMP."""

    def build_extension(self, ext):
        gnu_like = self.compiler.compiler_type == "unix"  # gcc and clang; the vector code needs their extensions
        base = ["-O0", "-g"] if _flag("FASTMNIST_DEBUG") else ["-O3"]
        if gnu_like:
            base += ["-std=gnu11", "-ffp-contract=fast"]
            if not _flag("FASTMNIST_PORTABLE") and self._accepts(["-march=native"]):
                base.append("-march=native")
            openmp = [] if _flag("FASTMNIST_NO_OPENMP") else self._openmp_flags()
            for isa, (width, flags) in simd_variants().items():
                if not self._accepts(flags):
                    continue
                objects = self.compiler.compile(
                    [str(KERNELS / s) for s in SIMD_SOURCES], output_dir=os.path.join(self.build_temp, isa),
                    macros=[("FM_ISA_SUFFIX", isa), ("FM_VECTOR_WIDTH", str(width))],
                    extra_postargs=base + flags, depends=[str(p) for p in KERNELS.glob("*.h")])
                ext.extra_objects += objects
                ext.define_macros.append((f"FM_HAVE_{isa.upper()}", "1"))
            ext.extra_compile_args += base + openmp
            ext.extra_link_args += openmp
        super().build_extension(ext)

    def _accepts(self, flags: list[str], code: str = "int main(void) { return 0; }\n") -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp, "probe.c")
            source.write_text(code)
            try:
                objects = self.compiler.compile([str(source)], output_dir=tmp, extra_postargs=flags)
                self.compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
            except Exception:
                return False
        return True

    def _openmp_flags(self) -> list[str]:
        probe = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
        return ["-fopenmp"] if self._accepts(["-fopenmp"], probe) else []


debug = _flag("FASTMNIST_DEBUG")
extension = Extension(
    "fastmnist._engine",
    sources=["fastmnist/_engine.pyx"] + [str(KERNELS / s) for s in PLAIN_SOURCES],
    include_dirs=[np.get_include(), "fastmnist"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    # the per-ISA sources are compiled separately (BuildKernels); listed here so that a change relinks
    depends=[str(p) for p in KERNELS.glob("*.h")] + [str(KERNELS / s) for s in SIMD_SOURCES] + ["fastmnist/_engine.pxd"],
)

setup(
    packages=find_packages(include=["fastmnist", "fastmnist.*", "gui", "gui.*"]) + ["fastmnist.weights"],
    ext_modules=cythonize(
        [extension],
        compiler_directives={"language_level": 3, "boundscheck": debug, "wraparound": debug,
                             "initializedcheck": debug, "cdivision": not debug},
    ),
    cmdclass={"build_ext": BuildKernels},
)
