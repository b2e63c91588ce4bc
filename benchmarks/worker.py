"""One process per thread count, holding every runtime at that count and timing them on command.

TensorFlow and NumPy's BLAS size their thread pools once per process, so 1 and 2 threads cannot share one;
fastmnist, LiteRT and ONNX Runtime take a thread count per model and live alongside them, so that every
runtime is measured the same way. The benchmark drives all workers round by round through `Worker.call`;
the timing itself happens inside the worker, around each Python call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from peers import RUNTIMES, PeerUnavailable, Predict, build_runtime, thread_environment


class Worker:
    """The benchmark's handle on a worker process serving `threads` threads."""

    def __init__(self, threads: int):
        self.threads = threads
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread pool is inherited
        self.connection, child = context.Pipe()
        with _environment(thread_environment(threads)):  # read by the child's imports, before any pool exists
            self.process = context.Process(target=serve, args=(child, threads), daemon=True)
            self.process.start()

    def call(self, method: str, *args):
        """Run `method` of the worker's Session with `args` and return its result."""
        self.connection.send((method, args))
        ok, value = self.connection.recv()
        if not ok:
            raise RuntimeError(f"worker at {self.threads} thread(s), {method}: {value}")
        return value

    def close(self) -> None:
        self.connection.send(None)
        self.process.join()


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def serve(connection, threads: int) -> None:
    session = Session(threads)
    while (message := connection.recv()) is not None:
        method, args = message
        try:
            connection.send((True, getattr(session, method)(*args)))
        except Exception as e:  # reported to the benchmark, which stops with the worker's message
            connection.send((False, f"{type(e).__name__}: {e}"))


class Session:
    """The runtimes of one model at one thread count, and the inputs they are timed on."""

    def __init__(self, threads: int):
        self.threads = threads
        self.runtimes: dict[str, Predict] = {}
        self.inputs: dict[str, np.ndarray] = {}

    def load(self, weights: Path, peer_files: Path, inputs: dict[str, np.ndarray],
             runtimes: tuple[str, ...] = RUNTIMES) -> dict[str, str]:
        """Build `runtimes` for `weights`; returns runtime -> why it could not be built."""
        self.runtimes, self.inputs, skipped = {}, inputs, {}
        for runtime in runtimes:
            try:
                self.runtimes[runtime] = build_runtime(runtime, weights, self.threads, peer_files)
            except PeerUnavailable as e:
                skipped[runtime] = str(e)
        return skipped

    def probabilities(self, runtime: str) -> np.ndarray:
        return self.runtimes[runtime](self.inputs["agreement"])

    def latencies_us(self, runtime: str, calls: int) -> list[float]:
        """`calls` batch-1 calls, each timed on its own, in µs."""
        predict, image, timer = self.runtimes[runtime], self.inputs["single"], time.perf_counter_ns
        samples = []
        for _ in range(calls):
            start = timer()
            predict(image)
            samples.append((timer() - start) / 1e3)
        return samples

    def batch_seconds(self, runtime: str, min_seconds: float) -> float:
        """Seconds per batch call, over as many calls as fill `min_seconds` (a single call of a small model
        lasts about a millisecond: too short to time alone)."""
        predict, batch = self.runtimes[runtime], self.inputs["batch"]
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds or calls == 0:
            predict(batch)
            calls += 1
        return elapsed / calls
