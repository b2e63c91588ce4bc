"""A long run: a million batch-1 predictions on one model, reporting how much the process's memory grew.

    python tests/soak.py --calls 1000000 --model mlp300

The resident set size is read after a warm-up (caches, pools and allocator arenas are filled) and after the
run; fastmnist allocates nothing per call that outlives it, so the growth should be near zero.
"""

import argparse
import sys
import time

import numpy as np

import fastmnist


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--model", default="mlp300", help="a shipped model name or a weights file")
    args = parser.parse_args(argv)
    model = fastmnist.load(args.model)
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    for i in range(20_000):
        model.predict_proba(images[i % 16])
    before, start = rss_kib(), time.perf_counter()
    for i in range(args.calls):
        model.predict_proba(images[i % 16])
    seconds, after = time.perf_counter() - start, rss_kib()
    print(f"{args.calls:,} batch-1 predictions with '{args.model}' in {seconds:.0f} s "
          f"({seconds / args.calls * 1e6:.1f} µs each): RSS {before:,} KiB -> {after:,} KiB, "
          f"growth {after - before:+,} KiB")
    return 0 if after - before < 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
