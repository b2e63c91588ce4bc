"""fastmnist against LiteRT, ONNX Runtime, TensorFlow and plain NumPy, on the same networks, in one run.

    python benchmarks/bench.py                          # every shipped model, 1 and 2 threads
    python benchmarks/bench.py --models cnn --calls 5000
    python benchmarks/bench.py --quick --models mlp300  # a smoke run: few calls, numbers meaningless
    python benchmarks/bench.py --random                 # random weights in the mlp300 and cnn shapes
    python benchmarks/bench.py --runtimes "fastmnist int8" "LiteRT int8"   # fastmnist and these only
    python benchmarks/bench.py --inputs digits dense    # also on images without a zero pixel: no skipping

For each model, input kind and thread count: batch-1 latency as a Python user sees it (median and p99 over all calls after
warm-up), batch-1024 throughput (the fastest of a few timed stretches), peak memory of the cnn at batch 1024
(each runtime in a fresh process) and each runtime's agreement with fastmnist. All runtimes at all thread counts
are interleaved round by round, so that noise from the machine hits them all alike. Prints a markdown table; see
benchmarks/README.md for what each column means. A benchmark, not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# fastmnist is the installed package (a checkout has no compiled engine); the tests' model writer is borrowed
# from tests/, searched after everything installed so that nothing there can shadow a package
sys.path.append(str(ROOT / "tests"))

import fastmnist  # noqa: E402
from memory import peak_mb  # noqa: E402
from peers import RUNTIMES, write_peer_files  # noqa: E402
from random_models import CNN_LAYERS, random_images, write_model  # noqa: E402
from worker import Worker  # noqa: E402

MNIST_FOLDER = ROOT.parent / "shared" / "data" / "mnist"
PEER_PACKAGES = ("ai-edge-litert", "onnxruntime", "onnx", "tensorflow", "openvino")
MLP300_LAYERS = [{"type": "dense", "name": "fc1", "units": 300, "activation": "relu"},
                 {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"}]
RANDOM_SHAPES = {"mlp300": (MLP300_LAYERS, (784,)), "cnn": (CNN_LAYERS, (28, 28, 1))}
MEMORY_MODEL = "cnn"
AGREEMENT_IMAGES = 300
CALIBRATION_IMAGES = 512  # training digits for every int8 runtime, as fastmnist quantize takes by default
AGREEMENT_ATOL = 1e-4  # beyond this a runtime is flagged: float32 rounding alone stays far below it
LATENCY_ROUNDS = 20
# The machine's speed drifts over seconds: one process timing 0.2 s stretches of softmax batches saw anything
# from 2.0 to 3.4 M images/s, in runs of slow stretches. Ten rounds spread over the run find a quiet one.
THROUGHPUT_ROUNDS = 10
# Idle threads of OpenMP (at its default wait policy) and of LiteRT's pool spin for a while after a call before
# they sleep, in any worker: each block of calls starts after this pause, so that none is timed while another
# runtime's threads still spin on the 2 cores.
PAUSE_SECONDS = 0.1
# The fast paths skip zero inputs, so images with none are their worst case: every pixel raised to at least the
# faintest ink a uint8 image can hold.
INPUT_KINDS = {"digits": "the images as they are", "dense": "every pixel at least 1/255: no zero to skip"}
DENSE_FLOOR = np.float32(1 / 255)


@dataclass(frozen=True)
class Plan:
    calls: int              # batch-1 calls timed per runtime and thread count
    warm_up_calls: int      # batch-1 calls made before timing: caches, thread pools, lazy allocations
    throughput_rounds: int  # timed stretches of batch calls per runtime; the fastest counts
    throughput_seconds: float  # length of one stretch
    batch: int
    threads: tuple[int, ...]


@dataclass(frozen=True)
class Row:
    model: str
    inputs: str
    threads: int
    runtime: str
    median_us: float
    p99_us: float
    images_per_s: float
    max_diff: float
    argmax_agreement: float
    memory_mb: float | None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(calls=args.calls or (100 if args.quick else 2000), warm_up_calls=20 if args.quick else 200,
                throughput_rounds=2 if args.quick else THROUGHPUT_ROUNDS, throughput_seconds=0.02 if args.quick else 0.2,
                batch=args.batch, threads=tuple(args.threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, in every process
    with tempfile.TemporaryDirectory(prefix="fastmnist-bench-") as folder:
        rows = run(args, plan, Path(folder))
    print_table(rows, plan)
    return 0


def run(args: argparse.Namespace, plan: Plan, workdir: Path) -> list[Row]:
    """Every model at every thread count; `workdir` receives random weights and the converted peer models."""
    models = model_paths(args, workdir)
    images, source = benchmark_images(max(plan.batch, AGREEMENT_IMAGES))
    calibration = calibration_images()
    kinds = {kind: input_kind(images, kind) for kind in args.inputs}
    inputs = {kind: {"single": chosen[:1], "batch": chosen[:plan.batch], "agreement": chosen[:AGREEMENT_IMAGES]}
              for kind, chosen in kinds.items()}

    fastmnist.show_config()
    print(f"inputs: {source}; {'; '.join(f'{kind}: {INPUT_KINDS[kind]}' for kind in kinds)}; "
          f"peers: {peer_versions()}")
    workers = [Worker(threads) for threads in plan.threads]
    try:
        return [row for name, weights in models.items()
                for row in benchmark_model(name, weights, workers, workdir, inputs, plan, args.skip_memory,
                                           calibration, runtimes_to_run(args))]
    finally:
        for worker in workers:
            worker.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="shipped model names or weights files (default: all shipped)")
    parser.add_argument("--random", action="store_true", help="random weights in the mlp300 and cnn shapes")
    parser.add_argument("--calls", type=int, help="batch-1 calls timed per runtime (default 2000; 100 with --quick)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--batch", type=int, default=1024, help="batch size for throughput and memory")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--quick", action="store_true", help="few calls and rounds: a smoke run")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, metavar="RUNTIME",
                        help=f"runtimes to run besides fastmnist (default: all of {', '.join(RUNTIMES)})")
    parser.add_argument("--inputs", nargs="+", choices=INPUT_KINDS, default=["digits"],
                        help="input kinds, each a group of rows: " + "; ".join(f"{k}: {v}" for k, v in
                                                                           INPUT_KINDS.items()) + " (default digits)")
    return parser.parse_args(argv)


def model_paths(args: argparse.Namespace, workdir: Path) -> dict[str, Path]:
    """label -> weights file. mlp300 and cnn get random weights with --random or while not shipped (in training)."""
    shipped = [name for name in fastmnist.shipped_models() if not name.endswith("_int8")]  # int8 is a runtime
    names = args.models or ([] if args.random else shipped) or list(RANDOM_SHAPES)
    paths = {}
    for name in names:
        if name in RANDOM_SHAPES and (args.random or name not in shipped):
            layers, shape = RANDOM_SHAPES[name]
            paths[f"{name} (random weights)"] = write_model(workdir / f"{name}.npz", layers, shape)
        elif args.random:
            raise SystemExit(f"--random: no random shape for '{name}', only for {', '.join(RANDOM_SHAPES)}")
        else:
            paths[Path(name).stem] = fastmnist.load(name).path
    return paths


def benchmark_images(count: int) -> tuple[np.ndarray, str]:
    """(count, 28, 28) float32 in [0, 1]: MNIST test digits where the shared copy exists, else random ink."""
    if MNIST_FOLDER.is_dir():
        _, (test_images, _) = fastmnist.load_mnist(MNIST_FOLDER)
        return (test_images[:count] / np.float32(255)).astype(np.float32), f"MNIST test images ({MNIST_FOLDER})"
    return random_images(count), "random MNIST-like images (no MNIST copy found)"


def calibration_images() -> np.ndarray:
    """(CALIBRATION_IMAGES, 28, 28) float32: the training digits fastmnist quantize draws, else random ink."""
    from fastmnist.quantize import calibration_set

    if MNIST_FOLDER.is_dir():
        (train_images, _), _ = fastmnist.load_mnist(MNIST_FOLDER)
        return (calibration_set(train_images, CALIBRATION_IMAGES) / np.float32(255)).astype(np.float32)
    return random_images(CALIBRATION_IMAGES, seed=2)


def runtimes_to_run(args: argparse.Namespace) -> tuple[str, ...]:
    return RUNTIMES if not args.runtimes else tuple(r for r in RUNTIMES if r == "fastmnist" or r in args.runtimes)


def input_kind(images: np.ndarray, kind: str) -> np.ndarray:
    """`images` as they are ("digits") or with every pixel at least DENSE_FLOOR ("dense")."""
    return images if kind == "digits" else np.maximum(images, DENSE_FLOOR)


def peer_versions() -> str:
    found = []
    for package in PEER_PACKAGES:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} missing")
    return ", ".join(found)


def benchmark_model(name: str, weights: Path, workers: list[Worker], workdir: Path, inputs: dict[str, dict],
                    plan: Plan, skip_memory: bool, calibration: np.ndarray,
                    wanted: tuple[str, ...] = RUNTIMES) -> list[Row]:
    """The rows of one model: for each input kind (a key of `inputs`), every wanted runtime at every thread count."""
    print(f"\n{name}: {weights}", flush=True)
    skipped = write_peer_files(weights, workdir, calibration)
    rows = []
    for kind, kind_inputs in inputs.items():
        for worker in workers:
            for runtime, reason in worker.call("load", weights, workdir, kind_inputs, wanted).items():
                skipped.setdefault(runtime, reason)  # a conversion failure explains the worker's "not written"
        if not rows:
            for runtime, reason in skipped.items():
                if runtime in wanted:
                    print(f"  skipping {runtime}: {reason}")
        runtimes = [r for r in wanted if r not in skipped]
        blocks = [(worker, runtime) for worker in workers for runtime in runtimes]

        agreement = {(w.threads, r): agreement_with_fastmnist(w, r) for w, r in blocks}
        latency = interleaved_latencies(blocks, plan)
        rate = interleaved_throughput(blocks, plan)
        memory = {}
        if weights.stem == MEMORY_MODEL and not skip_memory and not rows:  # peak memory does not depend on pixels
            print(f"  measuring peak memory at batch {plan.batch}, one fresh process each", flush=True)
            memory = {(w.threads, r): peak_mb(r, weights, w.threads, workdir, plan.batch) for w, r in blocks}
        rows += [Row(name, kind, w.threads, r, *latency[w.threads, r], rate[w.threads, r], *agreement[w.threads, r],
                     memory.get((w.threads, r))) for w, r in blocks]
    return rows


def agreement_with_fastmnist(worker: Worker, runtime: str) -> tuple[float, float]:
    """(max |Δp|, fraction of equal argmax) of `runtime` against fastmnist at the same thread count."""
    expected = worker.call("probabilities", "fastmnist")
    got = worker.call("probabilities", runtime)
    return float(np.abs(got - expected).max()), float(np.mean(got.argmax(1) == expected.argmax(1)))


def interleaved_latencies(blocks: list[tuple[Worker, str]], plan: Plan) -> dict[tuple[int, str], tuple[float, float]]:
    """(threads, runtime) -> (median, p99) µs of batch-1 calls, made in rounds that visit every runtime."""
    for worker, runtime in blocks:
        worker.call("latencies_us", runtime, plan.warm_up_calls)
    samples = {(w.threads, r): [] for w, r in blocks}
    per_round = max(1, plan.calls // LATENCY_ROUNDS)
    for round_index in range(LATENCY_ROUNDS):
        for worker, runtime in rotated(blocks, round_index):
            time.sleep(PAUSE_SECONDS)
            worker.call("latencies_us", runtime, 1)  # wakes the pool after the pause
            samples[worker.threads, runtime] += worker.call("latencies_us", runtime, per_round)
    return {key: (statistics.median(s), float(np.percentile(s, 99))) for key, s in samples.items()}


def interleaved_throughput(blocks: list[tuple[Worker, str]], plan: Plan) -> dict[tuple[int, str], float]:
    """(threads, runtime) -> images/s at batch `plan.batch`, from the fastest of the rounds."""
    for worker, runtime in blocks:
        worker.call("batch_seconds", runtime, 0.0)
    best = {(w.threads, r): float("inf") for w, r in blocks}
    for round_index in range(plan.throughput_rounds):
        for worker, runtime in rotated(blocks, round_index):
            time.sleep(PAUSE_SECONDS)
            seconds = worker.call("batch_seconds", runtime, plan.throughput_seconds)
            best[worker.threads, runtime] = min(best[worker.threads, runtime], seconds)
    return {key: plan.batch / seconds for key, seconds in best.items()}


def rotated(blocks: list, round_index: int) -> list:
    """The blocks starting at a different one each round, so that no runtime always follows the same one."""
    start = round_index % len(blocks)
    return blocks[start:] + blocks[:start]


def print_table(rows: list[Row], plan: Plan) -> None:
    print(f"\nbatch-1 latency per call in µs; throughput in images/s at batch {plan.batch}; "
          f"latency ratio = runtime / fastmnist and throughput ratio = fastmnist / runtime, at the same thread "
          f"count (> 1: fastmnist is faster); peak MB above bare NumPy ({MEMORY_MODEL} at batch {plan.batch}); "
          f"agreement with fastmnist on {AGREEMENT_IMAGES} images, ⚠ beyond {AGREEMENT_ATOL:g}\n")
    print("| model | inputs | threads | runtime | median µs | p99 µs | latency ratio | images/s | throughput ratio "
          "| peak MB | max \\|Δp\\| | argmax agree |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline = {(r.model, r.inputs, r.threads): r for r in rows if r.runtime == "fastmnist"}
    for r in rows:
        base = baseline[r.model, r.inputs, r.threads]
        memory = "—" if r.memory_mb is None else f"{r.memory_mb:,.0f}"
        flag = " ⚠" if r.max_diff > AGREEMENT_ATOL else ""
        print(f"| {r.model} | {r.inputs} | {r.threads} | {r.runtime} | {r.median_us:,.1f} | {r.p99_us:,.1f} | "
              f"{r.median_us / base.median_us:.2f}× | {r.images_per_s:,.0f} | "
              f"{base.images_per_s / r.images_per_s:.2f}× | {memory} | {r.max_diff:.1e}{flag} | "
              f"{r.argmax_agreement:.1%} |")


if __name__ == "__main__":
    sys.exit(main())
