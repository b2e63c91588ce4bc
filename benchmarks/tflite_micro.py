"""fastmnist's C export beside TensorFlow Lite for Microcontrollers, model by model.

For each model: the exported C (`fastmnist export-c`), compiled with gcc -O2 -march=native and timed on one
core by benchmarks/time_model.c; TFLite Micro (`pip install tflite-micro`: its Python interpreter runs the
reference kernels) on a float32 .tflite converted from the same network (benchmarks/peers.py), timed per
invoke; both on the same MNIST test digits, `--rounds` rounds each, interleaved, medians reported. Then the
Cortex-M4 footprint of the C (arm-none-eabi-gcc -O2, the model's object: flash = text + rodata + data,
RAM = data + bss) beside TFLite Micro's tensor arena, the smallest arena its interpreter accepts.

An int8 weights file (`cnn_int8`, ...) gets the C's time and footprint alone, in a table of its own: TFLite
Micro is compared on float32 networks only, and an int8 file's "weights" are every array its C holds
(int8 kernels, int32 biases, requantization parameters, lookup tables).

    python benchmarks/tflite_micro.py [--models cnn mlp300 cnn_int8] [--digits 200] [--rounds 7] [--data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastmnist
from fastmnist import _export_c as export_c
from fastmnist._export_c_int8 import lower_int8
from fastmnist.datasets import load_mnist
from peers import _tflite_bytes

HERE = Path(__file__).parent
MAX_ARENA = 1 << 30
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2"]


@contextlib.contextmanager
def quiet_fds():
    """Silence what C code prints on stdout and stderr (TFLite Micro reports every failed allocation)."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(null.fileno(), 1), os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def tflm_runtime():
    """The tflite_micro package's runtime module: this script has the package's name, so its own folder
    leaves the import path while the package is imported."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE.resolve()]
    try:
        from tflite_micro import runtime
    finally:
        sys.path[:] = saved
    return runtime


def tflm_interpreter(model: bytes, arena: int):
    return tflm_runtime().Interpreter.from_bytes(model, arena_size=arena)


def smallest_arena(model: bytes) -> int:
    """The least tensor arena (bytes, to 16) with which the interpreter allocates and runs the model."""
    def works(arena: int) -> bool:
        try:
            with quiet_fds():
                interpreter = tflm_interpreter(model, arena)
                interpreter.set_input(np.zeros(interpreter.get_input_details(0)["shape"], np.float32), 0)
                interpreter.invoke()
            return True
        except Exception:
            return False

    low, high = 16, 1 << 16
    while not works(high):
        if high > MAX_ARENA:
            raise RuntimeError(f"TFLite Micro runs the model with no arena up to {MAX_ARENA} bytes")
        low, high = high, high * 2
    while high - low > 16:
        middle = (low + high) // 32 * 16
        low, high = (low, middle) if works(middle) else (middle, high)
    return high


def tflm_round(interpreter, digits: np.ndarray) -> tuple[float, np.ndarray]:
    """Nanoseconds per digit of one pass over `digits` (the invokes alone: setting the input and reading
    the output from Python is no part of TFLite Micro's work), and the probabilities."""
    shape = interpreter.get_input_details(0)["shape"]
    outputs, elapsed = [], 0
    for image in digits:
        interpreter.set_input(image.reshape(shape), 0)
        start = time.perf_counter_ns()
        interpreter.invoke()
        elapsed += time.perf_counter_ns() - start
        outputs.append(interpreter.get_output(0).ravel().copy())
    return elapsed / len(digits), np.array(outputs)


def c_program(weights: Path, name: str, folder: Path) -> Path:
    export_c.export_c(weights, folder, name=name)
    (folder / "model.h").write_text(f'#include "{name}.h"\n#define MODEL_PREDICT {name}_predict\n'
                                    f"#define MODEL_NUM_CLASSES {name.upper()}_NUM_CLASSES\n")
    program = folder / "time_model"
    subprocess.run(["gcc", "-std=c99", "-O2", "-march=native", "-I", str(folder), str(folder / f"{name}.c"),
                    str(HERE / "time_model.c"), "-o", str(program), "-lm"], check=True)
    return program


def c_round(program: Path, images_file: Path, count: int) -> float:
    """Nanoseconds per digit of one pass, on one core."""
    out = subprocess.run(["taskset", "-c", "0", str(program), str(images_file), str(count), "1"],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0])


def m4_footprint(folder: Path, name: str) -> dict[str, int]:
    obj = folder / "m4.o"
    subprocess.run(["arm-none-eabi-gcc", "-std=c99", *M4_FLAGS, "-c", str(folder / f"{name}.c"), "-o", str(obj)],
                   check=True)
    line = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1]
    text, data, bss = (int(v) for v in line.split()[:3])
    return {"flash": text + data, "ram": data + bss}


def parse(weights: Path) -> fastmnist.spec.ModelSpec:
    return fastmnist.spec.parse(*fastmnist.format.read(weights), str(weights))


def weight_bytes(model: fastmnist.spec.ModelSpec) -> int:
    """The bytes of the arrays the C holds: float32 weights, or an int8 model's arrays as its C types them."""
    if model.precision == "int8":
        return sum(a.nbytes for op in lower_int8(model) for a in op.arrays.values())
    return sum(a.size * 4 for p in model.layers for a in p.params.values())


def c_build(name: str, weights: Path, floats: np.ndarray, work: Path) -> tuple[dict, Path, Path]:
    """The C's timing program, the file of digits it reads, and the model's row: its weights and M4 footprint."""
    folder = work / name
    folder.mkdir()
    images_file = folder / "digits.f32"
    floats.tofile(images_file)
    program = c_program(weights, f"m_{name}", folder)
    row = {"name": name, "weights": weight_bytes(parse(weights)), **m4_footprint(folder, f"m_{name}")}
    return row, program, images_file


def as_floats(digits: np.ndarray) -> np.ndarray:
    return (digits.astype(np.float32) / np.float32(255)).reshape(len(digits), 784)


def int8_benchmark(name: str, weights: Path, digits: np.ndarray, rounds: int, work: Path) -> dict:
    row, program, images_file = c_build(name, weights, as_floats(digits), work)
    c_times = [c_round(program, images_file, len(digits)) for _ in range(rounds)]
    return {**row, "c_ns": statistics.median(c_times), "c_spread": (min(c_times), max(c_times))}


def benchmark(name: str, weights: Path, digits: np.ndarray, rounds: int, work: Path) -> dict:
    floats = as_floats(digits)
    row, program, images_file = c_build(name, weights, floats, work)
    tflite = _tflite_bytes(weights)
    arena = smallest_arena(tflite)
    interpreter = tflm_interpreter(tflite, arena)
    c_times, tflm_times, tflm_probabilities = [], [], None
    for _ in range(rounds):  # interleaved, so that both see the same load on a shared machine
        c_times.append(c_round(program, images_file, len(floats)))
        elapsed, tflm_probabilities = tflm_round(interpreter, floats)
        tflm_times.append(elapsed)
    engine = fastmnist.load(weights).predict_proba(floats)
    return {**row, "c_ns": statistics.median(c_times), "tflm_ns": statistics.median(tflm_times), "arena": arena,
            "agreement": float(np.abs(tflm_probabilities - engine).max()), "c_spread": (min(c_times), max(c_times)),
            "tflm_spread": (min(tflm_times), max(tflm_times))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp300", "mlp1024", "softmax"])
    parser.add_argument("--digits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--data", help="folder with the MNIST IDX files (default: $FASTMNIST_DATA)")
    args = parser.parse_args(argv)
    _, (x_test, _) = load_mnist(args.data)
    digits = x_test[:args.digits]
    paths = {name: fastmnist.model.shipped_weights_dir() / f"{name}.npz" for name in args.models}
    int8 = {name for name, path in paths.items() if parse(path).precision == "int8"}
    if int8 != set(paths):
        tflm_runtime()  # fail now, not after the first export, if the package is missing
    rows, int8_rows = [], []
    with tempfile.TemporaryDirectory() as work:
        for name, weights in paths.items():
            if name in int8:
                int8_rows.append(int8_benchmark(name, weights, digits, args.rounds, Path(work)))
            else:
                rows.append(benchmark(name, weights, digits, args.rounds, Path(work)))
            print(f"{name}: done", file=sys.stderr)
    print(f"{args.digits} MNIST test digits, {args.rounds} rounds (a float model's interleaved with TFLite Micro's), "
          "medians (min-max in brackets)\n")
    if rows:
        print("| model | C, x86-64 (us/digit) | TFLite Micro (us/digit) | C / TFLM | M4 flash, C (KiB) "
              "| weights (KiB) | M4 RAM, C: data+bss (KiB) | TFLM tensor arena (KiB) | TFLM vs engine |")
        print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {c_time(r)} "
              f"| {r['tflm_ns'] / 1e3:.0f} ({r['tflm_spread'][0] / 1e3:.0f}-{r['tflm_spread'][1] / 1e3:.0f}) "
              f"| {r['c_ns'] / r['tflm_ns']:.3f} | {r['flash'] / 1024:.1f} | {r['weights'] / 1024:.1f} "
              f"| {r['ram'] / 1024:.1f} | {r['arena'] / 1024:.1f} | {r['agreement']:.1e} |")
    if int8_rows:
        print("\n| int8 model | C, x86-64 (us/digit) | M4 flash, C (KiB) | weights (KiB) | M4 RAM, C: data+bss (KiB) |")
        print("|---|---|---|---|---|")
    for r in int8_rows:
        print(f"| {r['name']} | {c_time(r)} | {r['flash'] / 1024:.1f} | {r['weights'] / 1024:.1f} "
              f"| {r['ram'] / 1024:.1f} |")
    return 0


def c_time(row: dict) -> str:
    return f"{row['c_ns'] / 1e3:.1f} ({row['c_spread'][0] / 1e3:.1f}-{row['c_spread'][1] / 1e3:.1f})"


if __name__ == "__main__":
    sys.exit(main())
