"""What this build of fastmnist is and which kernel path it runs: `show_config()`."""

from __future__ import annotations

import platform
import sys
from typing import Any, TextIO

import numpy as np

from . import _engine
from .model import default_int8_isa, default_isa, default_num_threads

__version__ = "0.1.0"


def config() -> dict[str, Any]:
    """The build and run-time configuration, as a dict."""
    return {
        "fastmnist": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "compiler": _engine.compiler(),
        "isa_compiled": _engine.compiled_isas(),
        "isa_supported": _engine.supported_isas(),
        "isa_chosen": default_isa(),
        "int8_isa_compiled": _engine.compiled_int8_isas(),
        "int8_isa_supported": _engine.supported_int8_isas(),
        "int8_isa_chosen": default_int8_isa(),
        "openmp": _engine.openmp_version(),
        "num_threads": default_num_threads(),
    }


def show_config(file: TextIO | None = None) -> None:
    """Print version, compiler, the kernel paths compiled in and supported, the chosen one, OpenMP, threads."""
    c = config()
    openmp = f"yes (_OPENMP {c['openmp']})" if c["openmp"] else "no (one thread)"
    print(f"fastmnist {c['fastmnist']} (Python {c['python']}, NumPy {c['numpy']}, {c['machine']})\n"
          f"  compiler:        {c['compiler']}\n"
          f"  kernels built:   {', '.join(c['isa_compiled'])}\n"
          f"  CPU runs:        {', '.join(c['isa_supported'])}\n"
          f"  chosen:          {c['isa_chosen']}  (override: $FASTMNIST_ISA)\n"
          f"  int8 built:      {', '.join(c['int8_isa_compiled'])}\n"
          f"  int8 CPU runs:   {', '.join(c['int8_isa_supported'])}\n"
          f"  int8 chosen:     {c['int8_isa_chosen']}  (override: $FASTMNIST_INT8_ISA)\n"
          f"  OpenMP:          {openmp}\n"
          f"  threads:         {c['num_threads']}  (override: $FASTMNIST_NUM_THREADS or load(num_threads=))",
          file=file or sys.stdout)
