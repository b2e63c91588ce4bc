"""fastmnist against LiteRT at batch 1, on digits and on images without a zero pixel, one thread count.

    python benchmarks/worst_case.py --threads 1
    python benchmarks/worst_case.py --threads 2 --models mlp1024 --rounds 60

The quick look behind `bench.py --inputs digits dense`: only the two runtimes and batch-1 latency, so that many
rounds fit in a minute. Each round times `--calls` calls of each runtime in turn (the order alternating), and
keeps each runtime's median, with a pause between the blocks (see PAUSE_SECONDS); printed are the median and quartiles over the rounds of those medians and of
their ratio fastmnist / LiteRT (below 1: fastmnist is faster). One process serves one thread count, with
OMP_NUM_THREADS set to it before anything is imported. A benchmark: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("fastmnist", "LiteRT")
WARM_UP_CALLS = 200
# Both runtimes' idle threads spin for a while after a call before they sleep (OpenMP's default wait policy,
# and LiteRT's thread pool): a block timed while the other runtime's threads still spin shares the 2 cores with
# them. A pause between blocks lets them fall asleep.
PAUSE_SECONDS = 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, required=True, help="thread count of both runtimes")
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all shipped)")
    parser.add_argument("--rounds", type=int, default=30, help="rounds per model and input kind (default 30)")
    parser.add_argument("--calls", type=int, default=200, help="calls per runtime and round (default 200)")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before any import that starts a thread pool
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import fastmnist
    from bench import INPUT_KINDS, benchmark_images, input_kind
    from peers import build_runtime, write_peer_files

    images, source = benchmark_images(1)
    print(f"inputs: {source}, the first; " + "; ".join(f"{k}: {v}" for k, v in INPUT_KINDS.items()))
    print(f"batch-1 latency in µs at {args.threads} thread(s): median [quartiles] over {args.rounds} rounds "
          f"of each round's median of {args.calls} calls\n")
    print("| model | inputs | fastmnist µs | LiteRT µs | fastmnist / LiteRT |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="fastmnist-worst-") as folder:
        for name in args.models or [m for m in fastmnist.shipped_models() if not m.endswith("_int8")]:
            weights = Path(fastmnist.load(name).path)
            failures = write_peer_files(weights, Path(folder))
            if "LiteRT" in failures:
                raise SystemExit(f"{name}: {failures['LiteRT']}")
            predict = {r: build_runtime(r, weights, args.threads, Path(folder)) for r in RUNTIMES}
            for kind in INPUT_KINDS:
                medians = round_medians(predict, input_kind(images, kind), args.rounds, args.calls)
                ratios = [a / b for a, b in zip(medians["fastmnist"], medians["LiteRT"])]
                print(f"| {name} | {kind} | {spread(medians['fastmnist'], 1)} | {spread(medians['LiteRT'], 1)} "
                      f"| {spread(ratios, 2)} |", flush=True)
    return 0


def round_medians(predict: dict, image: np.ndarray, rounds: int, calls: int) -> dict[str, list[float]]:
    """runtime -> its median µs in each round; the runtimes take turns, first one then the other going first."""
    for f in predict.values():
        for _ in range(WARM_UP_CALLS):
            f(image)
    medians = {runtime: [] for runtime in predict}
    for round_index in range(rounds):
        for runtime in (RUNTIMES if round_index % 2 == 0 else RUNTIMES[::-1]):
            time.sleep(PAUSE_SECONDS)
            f, samples = predict[runtime], []
            f(image)  # wakes the pool: the first call after a pause is not what a caller in a loop sees
            for _ in range(calls):
                start = time.perf_counter_ns()
                f(image)
                samples.append(time.perf_counter_ns() - start)
            medians[runtime].append(statistics.median(samples) / 1e3)
    return medians


def spread(values: list[float], digits: int) -> str:
    low, mid, high = np.percentile(values, [25, 50, 75])
    return f"{mid:.{digits}f} [{low:.{digits}f}–{high:.{digits}f}]"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
    sys.exit(main())
