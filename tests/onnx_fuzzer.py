"""Fuzz the ONNX importer: mutate valid ONNX files and check that each mutant is either refused with a clear
ValueError (OnnxImportError) or imported correctly (the engine reproduces the independent executor), and that
nothing crashes or hangs.

    python tests/onnx_fuzzer.py --cases 10000 [--seed 0] [--timeout 30] [--save DIR]

Mutations: bytes (flips, truncation, insertion), tensor dims, attribute values and types, initializer data and
data types, op types, graph wiring (inputs, node order, removed and duplicated nodes), the graph input's shape,
the opset and external-data fields. Each case runs in a long-lived worker process; a worker that dies is a
crash and one that takes longer than the timeout is a hang (both are restarted). An imported mutant is checked
on other images than the importer's own, within 1e-5 of the executor; mutated weights that make the model so
ill-conditioned that float32 rounding alone moves probabilities further are counted apart, and must still
agree to within 16 times the spread between the engine's fast and scalar paths. tests/test_onnx_fuzz.py runs a
slice of this.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "onnx"
ATOL = 1e-5  # engine vs the independent executor, as the importer itself checks
ROUNDING_FACTOR = 16  # an ill-conditioned mutant may differ by this many times the engine's own rounding spread


def seed_models() -> dict[str, bytes]:
    """Valid models to mutate: hand-built graphs covering most ops, and the smaller torch exports."""
    from onnx_graphs import conv_net, make_model, mlp, node, weights

    gelu_bn = make_model([
        node("Sub", ["x", "mean"], "s"), node("Div", ["s", "std"], "n"),
        node("Conv", ["n", "w1"], "c1", strides=[2, 2], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c1", "g", "b", "m", "v"], "bn"),
        node("Clip", ["bn", "zero", "six"], "r6"),
        node("Conv", ["r6", "dw"], "c2", group=4),
        node("AveragePool", ["c2"], "ap", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
        node("Shape", ["ap"], "shape"), node("Gather", ["shape", "zero_i"], "batch", axis=0),
        node("Unsqueeze", ["batch", "axes"], "batch1"), node("Concat", ["batch1", "minus_one"], "target", axis=0),
        node("Reshape", ["ap", "target"], "flat"),
        node("Gemm", ["flat", "w2", "b2"], "g1", transB=1),
        node("Div", ["g1", "sqrt2"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a"),
        node("Mul", ["g1", "a"], "mm"), node("Mul", ["mm", "half"], "gelu"),
        node("Gemm", ["gelu", "w3"], "g2"), node("LogSoftmax", ["g2"], "y", axis=1),
    ], {"mean": np.array(0.1, np.float32), "std": np.array(0.3, np.float32), "w1": weights((4, 1, 3, 3), 1),
        "g": np.ones(4, np.float32) * 1.1, "b": weights((4,), 2), "m": weights((4,), 3),
        "v": np.ones(4, np.float32) * 0.9, "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
        "dw": weights((8, 1, 3, 3), 4), "zero_i": np.array(0, np.int64), "axes": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64), "w2": weights((16, 8 * 6 * 6), 5, 0.1), "b2": weights((16,), 6),
        "sqrt2": np.array(2 ** 0.5, np.float32), "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32), "w3": weights((16, 10), 7)}, opset=13)
    nhwc = make_model([
        node("Transpose", ["x"], "nchw", perm=[0, 3, 1, 2]), node("Conv", ["nchw", "w", "b"], "c"),
        node("MaxPool", ["c"], "p", kernel_shape=[2, 2], strides=[2, 2]), node("Sigmoid", ["p"], "s"),
        node("Transpose", ["s"], "nhwc", perm=[0, 2, 3, 1]), node("Flatten", ["nhwc"], "f"),
        node("MatMul", ["f", "w2"], "mm"), node("Add", ["mm", "b2"], "y")],
        {"w": weights((3, 1, 3, 3), 8), "b": weights((3,), 9), "w2": weights((3 * 13 * 13, 10), 10, 0.05),
         "b2": weights((10,), 11)}, input_shape=("N", 28, 28, 1), opset=11)
    pad_prelu = make_model([
        node("Conv", ["x", "w1"], "c1"), node("PRelu", ["c1", "slope"], "r"), node("Pad", ["r", "pads"], "p"),
        node("Conv", ["p", "w2", "b2"], "c2", group=2, strides=[2, 2]), node("Elu", ["c2"], "e"),
        node("GlobalAveragePool", ["e"], "g"), node("Flatten", ["g"], "f"), node("Gemm", ["f", "w3"], "y")],
        {"w1": weights((2, 1, 3, 3), 12), "slope": np.array([0.2], np.float32),
         "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w2": weights((6, 1, 3, 3), 13),
         "b2": weights((6,), 14), "w3": weights((6, 10), 15)}, opset=18)
    models = {"conv_net": conv_net(), "mlp": mlp(), "gelu_bn": gelu_bn, "nhwc": nhwc, "pad_prelu": pad_prelu}
    serialised = {name: model.SerializeToString() for name, model in models.items()}
    for name in ("bn_cnn.torchscript.onnx", "bn_cnn.dynamo.onnx", "lenet5.torchscript.onnx", "mlp.dynamo.onnx"):
        serialised[name] = (FIXTURES / name).read_bytes()
    return serialised


# ---------------------------------------------------------------------------------------------------------
# Mutations: each takes (ModelProto, rng) and changes the model in place; byte mutations work on the bytes.

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 28, 255, 1 << 16, (1 << 31) - 1, -(1 << 31), (1 << 62), -(1 << 62)]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-12, 1e30, -1e30, float("inf"), float("-inf"), float("nan")]
OP_TYPES = ["Conv", "Gemm", "MatMul", "Relu", "Softmax", "LogSoftmax", "Reshape", "Flatten", "Transpose", "Add",
            "Mul", "Div", "Sub", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Erf",
            "Gelu", "Clip", "Pad", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Gather", "Concat",
            "Constant", "Loop", "If", "Scan", "NonZero", "Resize", "Expand", "Tile", "Range", "Hardmax", "Bogus"]


def _pick(rng, items):
    return items[int(rng.integers(len(items)))] if len(items) else None


def _tensors(model) -> list:
    """The initializers and the tensors of the nodes' attributes (Constant values)."""
    attributes = [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    return list(model.graph.initializer) + attributes


def mutate_dims(model, rng) -> None:
    tensor = _pick(rng, _tensors(model))
    if tensor is None or not len(tensor.dims):
        return
    tensor.dims[int(rng.integers(len(tensor.dims)))] = int(_pick(rng, INTERESTING_INTS + [int(rng.integers(100))]))


def mutate_attribute(model, rng) -> None:
    nodes = [n for n in model.graph.node if len(n.attribute)]
    node = _pick(rng, nodes)
    if node is None:
        return
    attribute = _pick(rng, node.attribute)
    choice = int(rng.integers(5))
    if choice == 0 and len(attribute.ints):
        attribute.ints[int(rng.integers(len(attribute.ints)))] = int(_pick(rng, INTERESTING_INTS))
    elif choice == 1:
        attribute.i = int(_pick(rng, INTERESTING_INTS))
    elif choice == 2:
        attribute.f = float(_pick(rng, INTERESTING_FLOATS))
    elif choice == 3:
        attribute.type = int(rng.integers(0, 15))  # a type that may not match the value
    else:
        attribute.s = bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8))
        attribute.name = _pick(rng, [attribute.name, "axis", "perm", "pads", "group", "to", "value", "bogus"])


def mutate_data(model, rng) -> None:
    tensor = _pick(rng, _tensors(model))
    if tensor is None:
        return
    choice = int(rng.integers(4))
    if choice == 0 and tensor.raw_data:
        raw = bytearray(tensor.raw_data)
        for _ in range(int(rng.integers(1, 8))):
            raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        tensor.raw_data = bytes(raw)
    elif choice == 1:
        tensor.raw_data = tensor.raw_data[:int(rng.integers(len(tensor.raw_data) + 1))]
    elif choice == 2:
        tensor.data_type = int(rng.integers(0, 17))
    else:
        values = np.frombuffer(tensor.raw_data[:len(tensor.raw_data) // 4 * 4], np.float32).copy()
        if values.size:
            values[int(rng.integers(values.size))] = _pick(rng, INTERESTING_FLOATS)
            tensor.raw_data = values.tobytes() + tensor.raw_data[values.size * 4:]


def mutate_op_type(model, rng) -> None:
    node = _pick(rng, model.graph.node)
    if node is not None:
        node.op_type = _pick(rng, OP_TYPES)


def mutate_wiring(model, rng) -> None:
    graph = model.graph
    nodes = list(graph.node)
    if not nodes:
        return
    names = [i.name for i in graph.input] + [t.name for t in graph.initializer] + [o for n in nodes for o in n.output]
    choice = int(rng.integers(5))
    if choice == 0:
        node = _pick(rng, nodes)
        if len(node.input):
            node.input[int(rng.integers(len(node.input)))] = _pick(rng, names + ["", "missing"])
    elif choice == 1:
        del graph.node[int(rng.integers(len(nodes)))]
    elif choice == 2:
        graph.node.append(_pick(rng, nodes))
    elif choice == 3:
        i, j = rng.integers(len(nodes), size=2)
        a, b = graph.node[int(i)], graph.node[int(j)]
        copy_a = type(a)()
        copy_a.CopyFrom(a)
        a.CopyFrom(b)
        b.CopyFrom(copy_a)
    else:
        node = _pick(rng, nodes)
        node.output[0] = _pick(rng, names + [graph.output[0].name])


def mutate_input_shape(model, rng) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not len(dims):
        return
    choice = int(rng.integers(3))
    if choice == 0:
        dims[int(rng.integers(len(dims)))].dim_value = int(_pick(rng, [0, 1, 2, 3, 27, 28, 29, 784, 1 << 40]))
    elif choice == 1:
        del dims[int(rng.integers(len(dims)))]
    else:
        dims.add().dim_value = 1


def mutate_opset(model, rng) -> None:
    if len(model.opset_import):
        model.opset_import[0].version = int(_pick(rng, [1, 7, 8, 9, 10, 12, 18, 20, 22, 30, 1 << 40]))
    model.ir_version = int(_pick(rng, [model.ir_version, 3, 7, 9, 11, 100]))


def mutate_external(model, rng) -> None:
    tensor = _pick(rng, _tensors(model))
    if tensor is None:
        return
    if rng.integers(2):
        tensor.data_location = 1
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", _pick(rng, ["/etc/passwd", "../../x.bin", "weights.bin"])


PROTO_MUTATIONS = {f.__name__[len("mutate_"):]: f for f in (mutate_dims, mutate_attribute, mutate_data,
                                                          mutate_op_type, mutate_wiring, mutate_input_shape,
                                                          mutate_opset, mutate_external)}


def mutate_bytes(data: bytes, rng) -> bytes:
    data = bytearray(data)
    choice = int(rng.integers(3))
    if choice == 0:
        for _ in range(int(rng.integers(1, 16))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif choice == 1:
        del data[int(rng.integers(len(data))):]
    else:
        at = int(rng.integers(len(data)))
        data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    return bytes(data)


def make_mutant(seeds: dict[str, bytes], seed: int, case: int) -> tuple[str, bytes]:
    """Case `case`'s mutant: (description, bytes), the same for the same seed and case."""
    import onnx

    rng = np.random.default_rng([seed, case])
    name = _pick(rng, sorted(seeds))
    data = seeds[name]
    if rng.random() < 0.2:
        return f"{name}:bytes", mutate_bytes(data, rng)
    model = onnx.ModelProto()
    model.ParseFromString(data)
    applied = []
    for _ in range(int(rng.integers(1, 4))):
        mutation = _pick(rng, sorted(PROTO_MUTATIONS))
        PROTO_MUTATIONS[mutation](model, rng)
        applied.append(mutation)
    return f"{name}:{'+'.join(applied)}", model.SerializeToString()


# ---------------------------------------------------------------------------------------------------------
# The worker: one case per line on stdin (a path), one JSON result per line on stdout.


def check_case(path: Path, workdir: Path) -> dict:
    from blob_images import blob_images
    from onnx_graphs import executor_probabilities

    import fastmnist
    from fastmnist.onnx_import import convert_onnx, import_onnx

    images = blob_images(16, seed=5)
    out = workdir / "mutant.npz"
    try:
        import_onnx(path, out, reference_images=blob_images(8, seed=4))
    except ValueError as error:  # OnnxImportError, or another ValueError subclass the project raises
        message = str(error)
        if len(message) < 20:
            return {"outcome": "unclear", "detail": f"{type(error).__name__}: {message!r}"}
        return {"outcome": "refused", "detail": message[:200]}
    except Exception as error:
        return {"outcome": "exception", "detail": f"{type(error).__name__}: {str(error)[:300]}"}
    # Imported: check it again, on other images, against the executor run on the mutant itself.
    try:
        conversion = convert_onnx(path)
        expected = executor_probabilities(conversion, images)
        got = fastmnist.load(out).predict_proba(images)
        scalar = fastmnist.load(out, isa="scalar").predict_proba(images)
    except Exception as error:
        return {"outcome": "exception", "detail": f"after import: {type(error).__name__}: {str(error)[:300]}"}
    finally:
        out.unlink(missing_ok=True)
    error = float(np.abs(got - expected).max())
    if error <= ATOL:
        return {"outcome": "imported", "detail": f"max difference {error:.3g}"}
    # Mutated weights can make a model so ill-conditioned (logits in the thousands) that float32 rounding alone
    # moves probabilities by more than ATOL. The engine's own two summation orders (fast path, scalar path) show
    # how far: a conversion error is far beyond that spread, rounding is not.
    spread = float(np.abs(got - scalar).max())
    outcome = "ill_conditioned" if error <= ATOL + ROUNDING_FACTOR * spread else "mismatch"
    return {"outcome": outcome, "detail": f"max difference {error:.3g}, fast vs scalar path {spread:.3g}"}


def worker() -> None:
    # Results go to the original stdout; whatever the libraries print (Python or C) goes to stderr.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    workdir = Path(tempfile.mkdtemp(prefix="onnx-fuzz-worker-"))
    for line in sys.stdin:
        result = check_case(Path(line.strip()), workdir)
        results.write(json.dumps(result) + "\n")
        results.flush()


class Worker:
    def __init__(self):
        import fastmnist

        # The worker imports the same fastmnist as this process (installed, or built in place in a checkout).
        package_root = Path(fastmnist.__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(package_root)]), "OMP_NUM_THREADS": "1",
               "FASTMNIST_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, env=env)

    def run(self, path: Path, timeout: float) -> dict:
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return {"outcome": "hang", "detail": f"no answer within {timeout} s"}
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            return {"outcome": "crash", "detail": f"the worker died with status {code}"}
        return json.loads(line)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def fuzz(cases: int, seed: int = 0, timeout: float = 30.0, save: Path | None = None, progress: bool = False):
    """Run `cases` mutants; returns (Counter of outcomes, list of (case, description, result) that failed)."""
    seeds = seed_models()
    counts: Counter = Counter()
    failures = []
    worker_process = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="onnx-fuzz-") as folder:
        path = Path(folder) / "mutant.onnx"
        for case in range(cases):
            description, data = make_mutant(seeds, seed, case)
            path.write_bytes(data)
            if worker_process is None:
                worker_process = Worker()
            # The first case of a worker also pays for its imports.
            result = worker_process.run(path, timeout)
            if result["outcome"] in ("hang", "crash"):
                worker_process = None
            counts[result["outcome"]] += 1
            if result["outcome"] not in ("refused", "imported", "ill_conditioned"):
                failures.append((case, description, result))
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"case{case}.onnx").write_bytes(data)
            if progress and (case + 1) % 500 == 0:
                print(f"{case + 1} cases in {time.monotonic() - started:.0f} s: {dict(counts)}", flush=True)
        if worker_process is not None:
            worker_process.stop()
    return counts, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--save", type=Path, help="folder for the mutants that fail")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    started = time.monotonic()
    counts, failures = fuzz(args.cases, args.seed, args.timeout, args.save, progress=True)
    for case, description, result in failures[:50]:
        print(f"case {case} ({description}): {result['outcome']}: {result['detail']}")
    print(f"{args.cases} mutants (seed {args.seed}) in {time.monotonic() - started:.0f} s: "
          f"{counts['refused']} refused, {counts['imported']} imported and matching, {counts['ill_conditioned']} "
          f"imported with ill-conditioned weights (matching to float32 rounding), {counts['mismatch']} mismatches, "
          f"{counts['exception'] + counts['unclear']} other exceptions or unclear errors, {counts['crash']} crashes, "
          f"{counts['hang']} hangs")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
