"""Batch-1 latency and batch-1024 throughput of fastmnist against plain NumPy, in one process.

    python benchmarks/latency.py                      # the shipped models (random-weight shapes if none)
    python benchmarks/latency.py --random             # random weights in the mlp300 and cnn shapes
    python benchmarks/latency.py --models cnn --calls 3000

Runtimes are interleaved round by round, so that noise from the machine hits them all alike; each is first
checked to agree with fastmnist. Latency is per call as a Python user makes it (median and p99 over all
calls after warm-up); throughput is images per second at batch 1024. Prints a markdown table with each
runtime's ratio to fastmnist at the same thread count. A benchmark, not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

import fastmnist
from fastmnist import format, reference, spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from random_models import CNN_LAYERS, random_images, write_model  # noqa: E402

MLP300_LAYERS = [{"type": "dense", "name": "fc1", "units": 300, "activation": "relu"},
                 {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"}]
RANDOM_SHAPES = {"mlp300": (MLP300_LAYERS, (784,)), "cnn": (CNN_LAYERS, (28, 28, 1))}

Predict = Callable[[np.ndarray], np.ndarray]


def runtimes_for(path: Path) -> dict[str, Predict]:
    """name -> predict_proba-like callable taking (n, 28, 28) float32 in [0, 1]."""
    runtimes: dict[str, Predict] = {}
    for threads in (1, 2):
        runtimes[f"fastmnist {threads}T"] = fastmnist.load(path, num_threads=threads).predict_proba
    model_spec = spec.parse(*format.read(path), str(path))
    runtimes["numpy"] = lambda images: reference.forward(model_spec, images, np.float32)
    return runtimes


def latencies_us(runtimes: dict[str, Predict], image: np.ndarray, calls: int, rounds: int = 20) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in runtimes}
    per_round = max(1, calls // rounds)
    for name, predict in runtimes.items():  # warm-up: caches, thread pools, lazy allocations
        for _ in range(min(200, per_round)):
            predict(image)
    for _ in range(rounds):
        for name, predict in runtimes.items():
            timer = time.perf_counter_ns
            for _ in range(per_round):
                start = timer()
                predict(image)
                samples[name].append((timer() - start) / 1e3)
    return {name: (statistics.median(s), float(np.percentile(s, 99))) for name, s in samples.items()}


def throughput(runtimes: dict[str, Predict], batch: np.ndarray, rounds: int = 5) -> dict[str, float]:
    best = {name: float("inf") for name in runtimes}
    for name, predict in runtimes.items():
        predict(batch)
    for _ in range(rounds):
        for name, predict in runtimes.items():
            start = time.perf_counter()
            predict(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(batch) / seconds for name, seconds in best.items()}


def check_agreement(runtimes: dict[str, Predict], images: np.ndarray) -> dict[str, float]:
    expected = runtimes["fastmnist 1T"](images)
    return {name: float(np.abs(predict(images) - expected).max()) for name, predict in runtimes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="shipped model names or weights files")
    parser.add_argument("--random", action="store_true", help="random weights in the mlp300 and cnn shapes")
    parser.add_argument("--calls", type=int, default=2000, help="batch-1 calls per runtime (default 2000)")
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="fastmnist-bench-"))
    if args.random or not (args.models or fastmnist.shipped_models()):
        paths = {name: write_model(workdir / f"{name}.npz", layers, shape)
                 for name, (layers, shape) in RANDOM_SHAPES.items()}
    else:
        names = args.models or fastmnist.shipped_models()
        paths = {Path(n).stem: fastmnist.load(n).path for n in names}

    fastmnist.show_config()
    rows = []
    for name, path in paths.items():
        runtimes = runtimes_for(path)
        disagreement = check_agreement(runtimes, random_images(64))
        latency = latencies_us(runtimes, random_images(1), args.calls)
        rate = throughput(runtimes, random_images(args.batch))
        for runtime in runtimes:
            baseline = f"fastmnist {runtime[-2:]}" if runtime.startswith("fastmnist") else "fastmnist 1T"
            rows.append((name, runtime, latency[runtime], latency[baseline][0], rate[runtime], rate[baseline],
                         disagreement[runtime]))

    print(f"\nbatch-1 latency in µs per call (median, p99) and batch-{args.batch} throughput in images/s; "
          "ratio = runtime / fastmnist at the same thread count (numpy: against fastmnist 1T)\n")
    print("| model | runtime | median µs | p99 µs | latency ratio | images/s | throughput ratio | max |Δp| |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, runtime, (median, p99), base_median, images_per_s, base_rate, diff in rows:
        print(f"| {name} | {runtime} | {median:,.1f} | {p99:,.1f} | {median / base_median:.2f}× | "
              f"{images_per_s:,.0f} | {images_per_s / base_rate:.2f}× | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
