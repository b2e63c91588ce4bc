"""Peak memory of one runtime, in a fresh process: its peak RSS above that of a process that only imports NumPy.

Each measurement starts a new interpreter that imports NumPy, builds one runtime (nothing else is imported:
LiteRT and ONNX Runtime load the files converted beforehand), runs a batch a few times and reports its peak
resident set size (the kernel's VmHWM). The same measured for a process that only imports NumPy is
subtracted, so the figure is what the runtime, its libraries, the model and the batch cost on top of NumPy.

    python benchmarks/memory.py RUNTIME WEIGHTS THREADS PEER_FILES BATCH    # prints the peak in KiB
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

BARE = "import numpy only"
RUNS = 3


def peak_mb(runtime: str, weights: Path, threads: int, peer_files: Path, batch: int) -> float:
    """Peak RSS in MB (10^6 bytes) of `runtime` at `batch` images, above a bare `import numpy` process."""
    return (_peak_kib(runtime, weights, threads, peer_files, batch) - _bare_numpy_kib()) * 1024 / 1e6


@cache
def _bare_numpy_kib() -> int:
    return _peak_kib(BARE, Path(), 1, Path(), 0)


def _peak_kib(runtime: str, weights: Path, threads: int, peer_files: Path, batch: int) -> int:
    from peers import thread_environment

    # The child imports what this process imports, from where this process finds it.
    environment = {**os.environ, **thread_environment(threads), "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, __file__, runtime, str(weights), str(threads), str(peer_files),
                             str(batch)], env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"measuring the memory of {runtime} failed:\n{result.stderr[-2000:]}")
    return int(result.stdout.split()[-1])


def _measure(runtime: str, weights: Path, threads: int, peer_files: Path, batch: int) -> int:
    import numpy as np

    if runtime != BARE:
        from peers import build_runtime

        predict = build_runtime(runtime, weights, threads, peer_files)
        images = np.random.default_rng(0).random((batch, 28, 28), dtype=np.float32)
        for _ in range(RUNS):
            predict(images)
    # VmHWM belongs to this process's own address space; ru_maxrss would also count the parent's peak, which
    # Linux carries across fork and exec.
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))  # KiB


if __name__ == "__main__":
    name, weights_path, thread_count, folder, batch_size = sys.argv[1:]
    print(_measure(name, Path(weights_path), int(thread_count), Path(folder), int(batch_size)))
