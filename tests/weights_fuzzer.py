"""Mutates valid weights files and checks that loading them never does anything but succeed or refuse.

The property, for every mutant: `fastmnist.load` either raises WeightsFormatError, or returns a model whose
probabilities for a few images are finite and sum to 1. Any other exception fails the case; a crash or a hang
ends the run (run it under `timeout`). The tests run a slice; the full run is

    python tests/weights_fuzzer.py --cases 100000 --seed 1

which prints the counts (accepted, refused, failures) and the slowest case.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np

import fastmnist
from fastmnist import WeightsFormatError
from random_models import V2_LAYERS, random_arrays, random_images, spec_for

SEED_MODELS = {
    "mlp": ([{"type": "dense", "name": "fc1", "units": 24},
             {"type": "batchnorm", "name": "bn", "epsilon": 0.001},
             {"type": "activation", "name": "act", "activation": "elu"},
             {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}], (784,)),
    "cnn": ([{"type": "conv2d", "name": "conv", "filters": 4, "kernel_size": [3, 3], "strides": [2, 2],
              "padding": "same", "activation": "relu"},
             {"type": "maxpool2d", "name": "pool", "pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
             {"type": "flatten", "name": "flat"},
             {"type": "dropout", "name": "drop", "rate": 0.5},
             {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}], (28, 28, 1)),
    "v2": (V2_LAYERS, (28, 28, 1)),  # every version 2 layer type, explicit pads, activation objects
    "v2_vector": ([{"type": "batchnorm", "name": "bn0"},
                   {"type": "dense", "name": "fc1", "units": 16,
                    "activation": {"name": "relu", "negative_slope": 0.1, "threshold": 0.25, "max_value": 6.0}},
                   {"type": "activation", "name": "act", "activation": {"name": "gelu", "approximate": True}},
                   {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}], (784,)),
}

HOSTILE_VALUES = [None, True, -1, 0, 1, 3, 2 ** 31, 2 ** 63, 10 ** 30, -1e308, 1e-300, 0.5, "", "same", "valid",
                  "softmax", "x" * 300, [], {}, [1], [0, 0], [65536, 65536], [1, 2, 3], {"atol": 1e-5},
                  [[1, 2], [3, 4]], [[0, -1], [0, 0]], [[65536, 65536], [65536, 65536]], [[1, 2]], "tanh", "gelu",
                  {"name": "relu", "max_value": 6.0}, {"name": "gelu", "approximate": True}, {"name": "selu"},
                  {"name": "elu", "alpha": -1e6}, {"name": "hard_sigmoid", "alpha": 1e6, "beta": -1e6},
                  {"name": "relu", "max_value": None}, {"name": "swish"}, "depthwise_conv2d", "avgpool2d",
                  "global_maxpool2d", "zeropad2d"]
IMAGES = random_images(3)


def seed_members(name: str) -> tuple[dict, dict]:
    """(spec, arrays) of a seed model, with reference vectors the engine reproduces."""
    layers, shape = SEED_MODELS[name]
    spec, arrays = spec_for(layers, shape), random_arrays(layers, shape, np.random.default_rng(7))
    with tempfile.TemporaryDirectory() as tmp:
        probabilities = fastmnist.load(fastmnist.format.save(Path(tmp, "m.npz"), spec, arrays)).predict_proba(IMAGES)
    arrays["reference/inputs"], arrays["reference/probabilities"] = IMAGES, probabilities
    spec["reference"] = {"atol": 1e-5}
    return spec, arrays


def npz_bytes(spec, arrays: dict, raw_members: dict | None = None) -> bytes:
    """An .npz of the spec and arrays (any dtype kept as given), plus raw extra members."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate member names are one of the mutations
        members = {"spec": np.frombuffer(json.dumps(spec).encode(), np.uint8), **arrays}
        for name, value in members.items():
            array_bytes = io.BytesIO()
            np.lib.format.write_array(array_bytes, np.asarray(value), allow_pickle=False)
            archive.writestr(name + ".npy", array_bytes.getvalue())
        for name, data in (raw_members or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:
        i = rng.randrange(len(data))
        data[i:i + rng.randint(1, 16)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 2:
        del data[rng.randrange(len(data)):]
    elif kind == 3:
        i = rng.randrange(len(data))
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        i, j = sorted(rng.randrange(len(data)) for _ in range(2))
        data[j:j] = data[i:j]
    return bytes(data)


def json_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, path + (index,))


def mutate_spec(rng: random.Random, spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    path = rng.choice(list(json_paths(spec))[1:])
    parent = spec
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = rng.randrange(4)
    if action == 0:
        parent[key] = rng.choice(HOSTILE_VALUES)
    elif action == 1 and isinstance(parent, dict):
        del parent[key]
    elif action == 2 and isinstance(parent, dict):
        parent[rng.choice(["units", "filters", "strides", "padding", "zzz", "kernel_size", "depth_multiplier",
                           "count_include_pad", "activation", "pool_size", "alpha", "name"])] = rng.choice(HOSTILE_VALUES)
    elif isinstance(parent, list):
        parent.insert(rng.randrange(len(parent) + 1), copy.deepcopy(rng.choice(parent)))
    return spec


def mutate_arrays(rng: random.Random, arrays: dict) -> dict:
    arrays = dict(arrays)
    name = rng.choice(sorted(arrays))
    value = arrays[name]
    action = rng.randrange(6)
    if action == 0:
        del arrays[name]
    elif action == 1:
        arrays[name] = value.astype(rng.choice([np.float64, np.float16, np.int8, np.int32, np.uint8, np.complex64,
                                                bool]))
    elif action == 2:
        flat = value.ravel().copy()
        flat[rng.randrange(flat.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e38, -1e38])
        arrays[name] = flat.reshape(value.shape)
    elif action == 3:
        arrays[name] = value.reshape(-1) if value.ndim > 1 else value[: max(0, len(value) - 1)]
    elif action == 4:
        arrays[name] = np.zeros(tuple(rng.randint(0, 5) for _ in range(rng.randint(0, 4))), np.float32)
    else:
        arrays[name + rng.choice(["x", "/kernel", ""])] = value
    return arrays


def mutant(rng: random.Random, seeds: dict) -> bytes:
    spec, arrays = seeds[rng.choice(sorted(seeds))]
    kind = rng.randrange(4)
    if kind == 0:
        return mutate_bytes(rng, npz_bytes(spec, arrays))
    if kind == 1:
        return npz_bytes(mutate_spec(rng, spec), arrays)
    if kind == 2:
        return npz_bytes(spec, mutate_arrays(rng, arrays))
    raw = {rng.choice(["evil.npy", "spec.npy", "readme.txt", "out/bias.npy"]): bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))}
    return npz_bytes(spec, arrays, raw)


def check(path: Path) -> str:
    """'accepted' or 'refused'; raises AssertionError for anything else."""
    try:
        model = fastmnist.load(path)
    except WeightsFormatError as e:
        assert str(path) in str(e), f"the message does not name the file: {e}"
        return "refused"
    probabilities = model.predict_proba(IMAGES)
    assert np.isfinite(probabilities).all(), "accepted model gives non-finite probabilities"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    return "accepted"


def run(cases: int, seed: int, workdir: Path) -> dict:
    rng = random.Random(seed)
    seeds = {name: seed_members(name) for name in SEED_MODELS}
    counts = {"accepted": 0, "refused": 0}
    failures, slowest = [], (0.0, -1)
    path = workdir / "mutant.npz"
    for case in range(cases):
        path.write_bytes(mutant(rng, seeds))
        start = time.perf_counter()
        try:
            counts[check(path)] += 1
        except Exception:  # the property: anything but WeightsFormatError is a failure
            failures.append((case, traceback.format_exc(limit=3)))
        slowest = max(slowest, (time.perf_counter() - start, case))
    return {**counts, "failures": failures, "slowest_seconds": slowest[0], "slowest_case": slowest[1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.cases, args.seed, Path(tmp))
    print(f"{args.cases} cases (seed {args.seed}) in {time.perf_counter() - start:.0f} s: "
          f"{result['accepted']} accepted, {result['refused']} refused, {len(result['failures'])} failures; "
          f"slowest case {result['slowest_case']}: {result['slowest_seconds'] * 1e3:.1f} ms")
    for case, trace in result["failures"][:10]:
        print(f"--- case {case}\n{trace}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
