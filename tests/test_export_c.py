"""The C export, compiled on every target it claims and run against the engine.

Each exported model is compiled with warnings as errors (C99, pedantic) and run by tests/c/run_model.c on
the weights file's reference inputs, on MNIST test digits (as floats and as bytes) and on images it must
refuse. Tolerance: probabilities within 1e-5 of the engine's (the atol the weights files store against
their source framework), every top class equal. The C runs the engine's own kernels on the same weights;
what differs is the path (the engine picks its widest, the C the scalar, AVX2 or NEON one) and the
compiler's rounding choices (fused multiply-adds), each a few ulps per layer, far inside 1e-5.

A missing compiler or emulator fails these tests: the packages are gcc, g++, clang, gcc-aarch64-linux-gnu,
qemu-user, gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm.
"""

from __future__ import annotations

import importlib
import os
import re
import resource
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fastmnist
from fastmnist import _export_c as export_c
from fastmnist.datasets import load_mnist
from random_models import V2_LAYERS, random_images, write_model

HERE = Path(__file__).parent
HARNESS = HERE / "c" / "run_model.c"
M4_STARTUP, M4_LINKER_SCRIPT = HERE / "c" / "mps2_an386_startup.c", HERE / "c" / "mps2_an386.ld"
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
ATOL = 1e-5
MNIST_DIGITS = 300
STACK_LIMIT_BYTES = 64 * 1024
RUN_TIMEOUT_S = 600
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
QEMU_AARCH64 = ["qemu-aarch64", "-cpu", "max", "-L", "/usr/aarch64-linux-gnu"]
M4_FLASH_BYTES = 4 << 20  # mps2-an386's SSRAM1, where code and constants go

# Small models with every layer type and the shapes that test the kernels' edges: odd channel counts,
# strides, "same" and "valid" padding, overlapping pools, batchnorm on maps and vectors, an input range.
EVERY_LAYER = [
    {"type": "conv2d", "name": "c1", "filters": 9, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
    {"type": "batchnorm", "name": "bn1"},
    {"type": "maxpool2d", "name": "p1", "pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
    {"type": "conv2d", "name": "c2", "filters": 19, "kernel_size": [3, 5], "strides": [2, 1], "activation": "elu"},
    {"type": "activation", "name": "a2", "activation": "relu"},
    {"type": "maxpool2d", "name": "p2", "pool_size": [2, 2]},
    {"type": "dropout", "name": "drop", "rate": 0.5},
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "d1", "units": 37},
    {"type": "batchnorm", "name": "bn2"},
    {"type": "activation", "name": "a3", "activation": "elu"},
    {"type": "dense", "name": "d2", "units": 10, "activation": "softmax"},
]
ACTIVATIONS = [  # every activation of the format, fused and as layers, with parameters
    {"type": "dense", "name": "d1", "units": 23,
     "activation": {"name": "relu", "max_value": 6.0, "negative_slope": 0.1, "threshold": 0.05}},
    {"type": "activation", "name": "a1", "activation": "selu"},
    {"type": "dense", "name": "d2", "units": 19, "activation": "tanh"},
    {"type": "activation", "name": "a2", "activation": "sigmoid"},
    {"type": "dense", "name": "d3", "units": 21, "activation": {"name": "hard_sigmoid", "alpha": 0.25, "beta": 0.4}},
    {"type": "activation", "name": "a3", "activation": "silu"},
    {"type": "dense", "name": "d4", "units": 17, "activation": {"name": "gelu", "approximate": True}},
    {"type": "activation", "name": "a4", "activation": "gelu"},
    {"type": "dense", "name": "d5", "units": 13, "activation": "softplus"},
    {"type": "activation", "name": "a5", "activation": {"name": "elu", "alpha": 0.5}},
    {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"},
]
SMALL_MODELS = ["every_layer", "v2_layers", "activations", "softmax_layer"]
SOFTMAX_LAYER = [  # a flat input, and softmax as a layer of its own
    {"type": "dense", "name": "d", "units": 23, "activation": "relu"},
    {"type": "dense", "name": "logits", "units": 10},
    {"type": "activation", "name": "probabilities", "activation": "softmax"},
]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; the C export tests need gcc, g++, clang, gcc-aarch64-linux-gnu, "
                    "qemu-user, gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm")
    return found


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(MNIST_DIGITS, 28, 28) uint8 test digits and their labels."""
    shared = HERE.parents[1] / "shared" / "data" / "mnist"  # beside the checkout
    _, (x_test, y_test) = load_mnist(os.environ.get("FASTMNIST_DATA") or (shared if shared.is_dir() else None))
    return x_test[:MNIST_DIGITS], y_test[:MNIST_DIGITS]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Weights files by name: the shipped models and the small ones above."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {name: fastmnist.model.shipped_weights_dir() / f"{name}.npz" for name in fastmnist.shipped_models()}
    paths["every_layer"] = write_model(folder / "every_layer.npz", EVERY_LAYER, seed=3, input_range=(-1.0, 1.0))
    paths["softmax_layer"] = write_model(folder / "softmax_layer.npz", SOFTMAX_LAYER, input_shape=(784,), seed=4)
    paths["v2_layers"] = write_model(folder / "v2_layers.npz", V2_LAYERS, seed=5)
    paths["activations"] = write_model(folder / "activations.npz", ACTIVATIONS, input_shape=(784,), seed=6)
    return paths


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """name -> folder holding name.h, name.c and the harness's model.h, exported once per module."""
    cache = {}

    def export(name: str) -> Path:
        if name not in cache:
            folder = tmp_path_factory.mktemp(f"c_{name}")
            export_c.export_c(models[name], folder)
            (folder / "model.h").write_text(
                f'#include "{name}.h"\n'
                f"#define MODEL_PREDICT {name}_predict\n#define MODEL_PREDICT_U8 {name}_predict_u8\n"
                f"#define MODEL_PREDICT_R {name}_predict_r\n#define MODEL_NUM_CLASSES {name.upper()}_NUM_CLASSES\n"
                f"#define MODEL_WORKSPACE_BYTES {name.upper()}_WORKSPACE_BYTES\n")
            cache[name] = folder
        return cache[name]

    return export


def bad_images() -> np.ndarray:
    """Images with one pixel the C must refuse: NaN, infinities, just above 1, just below 0."""
    values = [np.nan, np.inf, -np.inf, np.nextafter(np.float32(1), np.float32(2)), -1e-30, 2.0]
    images = np.zeros((len(values), 28, 28), np.float32)
    for i, value in enumerate(values):
        images[i].flat[(97 * i + 350) % 784] = value
    return images


def images_for(model_path: Path, digits: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(float images, byte images): the reference inputs, a blank image, an image of -0 (accepted, as the
    engine accepts it) and random sparse ones; the MNIST digits as bytes."""
    model = fastmnist.load(model_path)
    floats = [random_images(6, seed=9), np.zeros((1, 28, 28), np.float32), np.full((1, 28, 28), -0.0, np.float32)]
    if model._spec.reference_inputs is not None:
        floats.insert(0, model._spec.reference_inputs)
    byte_images = digits if digits is not None else (random_images(8, seed=10) * 255).astype(np.uint8)
    return np.concatenate(floats).astype(np.float32), byte_images


def c_rows(images: np.ndarray, literal) -> str:
    """A C initializer for an array of images, one braced row each."""
    return ",\n".join("{" + ", ".join(literal(v) for v in image.ravel()) + "}" for image in images)


def write_images(folder: Path, floats: np.ndarray, byte_images: np.ndarray, bad: np.ndarray) -> None:
    def float_literal(v: float) -> str:
        if np.isnan(v):
            return "NAN"
        if np.isinf(v):
            return "INFINITY" if v > 0 else "-INFINITY"
        return export_c.c_float(v)

    (folder / "images.h").write_text(
        "#include <math.h>\n"
        f"#define FLOAT_IMAGES {len(floats)}\n#define BYTE_IMAGES {len(byte_images)}\n"
        f"#define BAD_IMAGES {len(bad)}\n"
        f"static const float float_images[FLOAT_IMAGES][784] = {{\n{c_rows(floats, export_c.c_float)}}};\n"
        f"static const unsigned char byte_images[BYTE_IMAGES][784] = {{\n{c_rows(byte_images, str)}}};\n"
        f"static const float bad_images[BAD_IMAGES][784] = {{\n{c_rows(bad, float_literal)}}};\n")


def compile_program(compiler: list[str], flags: list[str], folder: Path, name: str, output: str,
                    extra: list[Path] = (), libraries: list[str] = ("-lm",)) -> Path:
    program = folder / output
    command = [*compiler, *WARNINGS, *flags, "-I", str(folder), str(folder / f"{name}.c"), str(HARNESS),
               *map(str, extra), "-o", str(program), *libraries]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-4000:]}"
    return program


def limit_stack() -> None:
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_LIMIT_BYTES, STACK_LIMIT_BYTES))


def run_program(command: list[str], limit_stack_size: bool = True) -> dict[str, np.ndarray]:
    """Runs the harness; returns entry -> (images, 1 + classes) array: the class returned, then the
    probabilities (as float64)."""
    # one stream: QEMU's semihosting writes the guest's output to its stderr
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=RUN_TIMEOUT_S, preexec_fn=limit_stack if limit_stack_size else None)
    assert result.returncode == 0 and result.stdout.endswith("done\n"), (
        f"{' '.join(command)}: status {result.returncode}\n{result.stdout[-3000:]}")
    rows: dict[str, list] = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3:
            entry, index, best, *bits = fields
            values = np.array([int(b, 16) for b in bits], np.uint32).view(np.float32).astype(np.float64)
            rows.setdefault(entry, []).append((int(index, 16), np.int32(np.uint32(int(best, 16))), values))
        elif fields[0] == "stack":
            rows["stack"] = [(0, int(fields[1], 16), np.zeros(0))]
    return {entry: np.array([[best, *values] for _, best, values in sorted(items, key=lambda r: r[0])])
            for entry, items in rows.items()}


def check_against_engine(results: dict[str, np.ndarray], model_path: Path, floats: np.ndarray,
                         byte_images: np.ndarray, what: str) -> None:
    model = fastmnist.load(model_path)
    scaled = byte_images.astype(np.float32) / np.float32(255)
    expected = {"float": model.predict_proba(floats), "reentrant": model.predict_proba(floats),
                "byte": model.predict_proba(byte_images), "scaled": model.predict_proba(scaled)}
    for entry, want in expected.items():
        got = results[entry]
        assert got.shape == (len(want), 1 + want.shape[1]), f"{what} {entry}: {got.shape} rows"
        classes, probabilities = got[:, 0].astype(int), got[:, 1:]
        error = np.abs(probabilities - want)
        worst = np.unravel_index(np.argmax(error), error.shape)
        assert error.max() <= ATOL, f"{what} {entry}: probability off by {error.max():.3g} at {worst}"
        np.testing.assert_array_equal(classes, want.argmax(axis=1), err_msg=f"{what} {entry}: top classes")
        np.testing.assert_array_equal(classes, probabilities.argmax(axis=1), err_msg=f"{what} {entry}")
    for entry in ("refused", "refused_r"):
        np.testing.assert_array_equal(results[entry][:, 0], -1, err_msg=f"{what}: {entry} images not refused")


def build_and_check(exported, models, digits, name: str, compiler: list[str], flags: list[str],
                    runner: list[str] = (), output: str = "prog", **kwargs) -> None:
    folder = exported(name)
    floats, byte_images = images_for(models[name], digits)
    write_images(folder, floats, byte_images, bad_images())
    program = compile_program(compiler, flags, folder, name, output, **kwargs)
    results = run_program([*runner, str(program)])
    check_against_engine(results, models[name], floats, byte_images, f"{name} {' '.join(flags)}")


HOST_BUILDS = [("gcc", "-O0"), ("gcc", "-O2"), ("gcc", "-O2 -march=native"), ("clang", "-O0"), ("clang", "-O2"),
               ("clang", "-O2 -march=native")]


@pytest.mark.parametrize("compiler,flags", HOST_BUILDS)
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_models_match_engine_on_host(exported, models, compiler, flags, name):
    build_and_check(exported, models, None, name, [tool(compiler)], flags.split(), output=f"{compiler}{flags}")


@pytest.mark.parametrize("flags", ["-O2", "-O2 -march=native"])
@pytest.mark.parametrize("name", fastmnist.shipped_models())
def test_shipped_models_match_engine_on_mnist(exported, models, digits, name, flags):
    build_and_check(exported, models, digits[0], name, [tool("gcc")], flags.split(), output=f"gcc{flags}")


INT8_MODELS = [name for name in fastmnist.shipped_models() if name.endswith("_int8")]
INT8_HOST_BUILDS = [("gcc", "-O0"), ("clang", "-O0"), ("clang", "-O2")]  # gcc -O2: the shipped models' test


@pytest.mark.parametrize("compiler,flags", INT8_HOST_BUILDS)
@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_models_match_engine_on_mnist(exported, models, digits, name, compiler, flags):
    """The int8 C runs the engine's scalar int8 kernels: the integers are the engine's exactly, the float
    dequantization and softmax differ from it by a few ulps at most."""
    build_and_check(exported, models, digits[0], name, [tool(compiler)], flags.split(), output=f"{compiler}{flags}")


@pytest.mark.parametrize("name", ["softmax_int8", "cnn_int8"])
def test_int8_export_holds_integer_weights(exported, models, name):
    """Kernels int8, biases and multipliers int32, tables uint8, activations uint8: no float weights but the
    last layer's dequantization scales."""
    text = (exported(name) / f"{name}.c").read_text()
    _, arrays = fastmnist.format.read(models[name])
    kernels = re.findall(r"static const (\w+) (\w+)_kernel\[(\d+)\]", text)
    expected = sorted(array.size for key, array in arrays.items() if key.endswith("/kernel"))
    assert sorted(int(size) for _, _, size in kernels) == expected and {t for t, _, _ in kernels} == {"int8_t"}
    assert {t for t in re.findall(r"static const (\w+) \w+_bias\[", text)} == {"int32_t"}
    assert re.findall(r"static const float (\w+)\[", text) == [kernels[-1][1] + "_dequantize"]
    assert "static uint8_t static_values[" in text


@pytest.mark.parametrize("name", [*SMALL_MODELS, "mlp300", "cnn", "mlp300_int8", "cnn_int8"])
def test_aarch64_neon_matches_engine(exported, models, digits, name):
    compiler = tool("aarch64-linux-gnu-gcc")
    tool(QEMU_AARCH64[0])
    probe = subprocess.run([compiler, "-dM", "-E", "-x", "c", "/dev/null"], capture_output=True, text=True)
    assert "__ARM_NEON 1" in probe.stdout, "the aarch64 compiler does not target NEON: the fast path is untested"
    build_and_check(exported, models, digits[0] if name in fastmnist.shipped_models() else None, name,
                    [compiler], ["-O2"], runner=QEMU_AARCH64, output="aarch64", libraries=["-lm", "-static"])


M4_MODELS = [*SMALL_MODELS, "softmax", "mlp300", "mlp_bn_elu", "pca_mlp_bn_elu", "mlp1024", *INT8_MODELS]


def m4_sizes(program: Path) -> dict[str, int]:
    """text (code and constants), data and bss, from arm-none-eabi-size (Berkeley format)."""
    out = subprocess.run([tool("arm-none-eabi-size"), str(program)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in out.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


@pytest.mark.parametrize("name", M4_MODELS)
def test_cortex_m4_matches_engine_on_qemu(exported, models, name):
    """The scalar path, bare metal on QEMU's mps2-an386 (Cortex-M4F), newlib's libm, on the reference inputs
    and a few other images. The fp32 cnn (13 MB of weights) exceeds the board's 4 MB of code memory; its int8
    form (3.3 MB) fits."""
    compiler = tool("arm-none-eabi-gcc")
    folder = exported(name)
    floats, byte_images = images_for(models[name], None)
    write_images(folder, floats, byte_images, bad_images())
    program = compile_program(
        [compiler], [*M4_FLAGS, "-O2", "-DSEMIHOSTING", "-ffunction-sections", "-fdata-sections"], folder, name,
        "m4.elf", extra=[M4_STARTUP],
        libraries=["-nostartfiles", f"-T{M4_LINKER_SCRIPT}", "-Wl,--gc-sections", "-lm", "-lc", "-lgcc", "-lnosys"])
    assert sum(m4_sizes(program).values()) <= M4_FLASH_BYTES, f"{name}: does not fit the board"
    model_object = folder / "m4_model.o"  # the model alone, without the harness, newlib and the stack
    subprocess.run([compiler, *WARNINGS, *M4_FLAGS, "-O2", "-c", str(folder / f"{name}.c"), "-o",
                    str(model_object)], check=True)
    sizes = m4_sizes(model_object)
    results = run_program([tool("qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-monitor", "none",
                           "-semihosting-config", "enable=on,target=native", "-kernel", str(program)],
                          limit_stack_size=False)
    check_against_engine(results, models[name], floats, byte_images, f"{name} cortex-m4")
    stack = int(results["stack"][0, 0])
    print(f"{name} cortex-m4: flash {sizes['text'] + sizes['data']} B, RAM {sizes['data'] + sizes['bss']} B, "
          f"stack {stack} B")
    assert 0 < stack < 8192, f"{name}: {stack} bytes of stack"


def test_generated_object_exports_only_its_api(exported):
    """The kernels are static: two exported models link into one program."""
    folder = exported("every_layer")
    obj = folder / "every_layer.o"
    subprocess.run([tool("gcc"), *WARNINGS, "-O2", "-c", str(folder / "every_layer.c"), "-o", str(obj)], check=True)
    symbols = subprocess.run([tool("nm"), "--defined-only", "-g", str(obj)], capture_output=True, text=True,
                             check=True)
    names = sorted(line.split()[-1] for line in symbols.stdout.splitlines())
    assert names == ["every_layer_predict", "every_layer_predict_r", "every_layer_predict_u8"]


C_HEADERS = {"math.h", "stddef.h", "stdint.h"}
FAST_SECTION = re.compile(r"^#ifdef FM_ISA_SUFFIX$.*?^#endif /\* FM_ISA_SUFFIX \*/$", re.DOTALL | re.MULTILINE)


def includes(text: str) -> set[str]:
    return set(re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', text, re.MULTILINE))


@pytest.mark.parametrize("name", ["every_layer", "softmax_layer", *INT8_MODELS])
def test_generated_c_includes_only_allowed_headers(exported, name):
    """Both files, float and int8 models: <math.h>, <stddef.h>, <stdint.h> and the model's own header; the
    intrinsics headers only inside the fast paths' section, which a compiler without them leaves out; no
    allocator, stdio or <string.h> functions."""
    folder = exported(name)
    for file in (f"{name}.h", f"{name}.c"):
        text = (folder / file).read_text()
        fast_sections = FAST_SECTION.findall(text)
        outside = FAST_SECTION.sub("", text)
        assert includes(outside) <= {f"{name}.h", *C_HEADERS}, f"{file}: {includes(outside)}"
        inside = set().union(*map(includes, fast_sections))
        assert inside <= {*C_HEADERS, "immintrin.h", "arm_neon.h"}, f"{file}, fast paths: {inside}"
        for word in ("malloc", "free", "printf", "fopen", "memcpy", "memset", "memmove"):
            assert not re.search(rf"\b{word}\s*\(", text), f"{file} calls {word}"


def test_export_is_deterministic(models, tmp_path):
    first = export_c.export_c(models["every_layer"], tmp_path / "a")
    second = export_c.export_c(models["every_layer"], tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()


def test_float_literals_round_trip():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 2000).astype(np.float32) * np.float32(10) ** rng.integers(-40, 38, 2000),
                             np.array([0.0, -0.0, 1.0, 3.0, 1e-45, 3.4028235e38, 1e-8], np.float32)]).astype(np.float32)
    values = values[np.isfinite(values)]
    texts = [export_c.c_float(v) for v in values]
    assert all(re.fullmatch(r"-?[0-9.]+(e[-+][0-9]+)?f", t) and ("." in t or "e" in t) for t in texts)
    back = np.array([float(t[:-1]) for t in texts]).astype(np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), values.view(np.uint32))


@pytest.mark.parametrize("name", ["my-model", "1cnn", "int", "", "a b"])
def test_invalid_names_are_refused(models, tmp_path, name):
    with pytest.raises(ValueError, match="C identifier"):
        export_c.export_c(models["softmax"], tmp_path, name=name)


def test_name_defaults_to_the_file_stem_and_is_used_throughout(models, tmp_path):
    header, source = export_c.export_c(models["softmax"], tmp_path)
    assert (header.name, source.name) == ("softmax.h", "softmax.c")
    header, source = export_c.export_c(models["softmax"], tmp_path, name="digits")
    text = header.read_text()
    for expected in ("#define DIGITS_NUM_CLASSES 10", "DIGITS_WORKSPACE_BYTES", "int digits_predict(",
                     "int digits_predict_u8(", "int digits_predict_r(", 'extern "C"', "#ifndef DIGITS_H"):
        assert expected in text


def test_memory_plan_keeps_every_input_until_its_layer_has_read_it(models):
    """Each non-elementwise op's output must not overlap its input (pooling may, by its computed shift),
    and every region lies in the buffer."""
    model = fastmnist.spec.parse(*fastmnist.format.read(models["cnn"]), "cnn")
    ops = export_c.lower(model)
    plan = export_c.plan_memory(ops)
    for op, start, out in zip(ops, plan.inputs, plan.outputs):
        assert 0 <= start and start + op.in_values <= plan.values
        assert 0 <= out and out + op.out_values <= plan.values
        if op.kind in ("dense", "conv2d"):
            assert out + op.out_values <= start or start + op.in_values <= out, op.name
    # the pools write below their inputs, so the buffer is smaller than the naive ping-pong
    assert plan.values < max(op.in_values + op.out_values for op in ops)


def test_cli_export_c(models, tmp_path, capsys):
    from fastmnist.cli import main

    assert main(["export-c", str(models["softmax"]), str(tmp_path), "--name", "tiny"]) == 0
    assert (tmp_path / "tiny.c").is_file() and (tmp_path / "tiny.h").is_file()
    assert main(["export-c", str(models["softmax"]), str(tmp_path), "--name", "no-good"]) == 2
    assert "C identifier" in capsys.readouterr().err


def test_engine_neon_fast_paths_match_scalar_under_qemu(tmp_path):
    """tests/c/neon_kernels.c: the engine's NEON dense, conv2d and softmax against its scalar path, built
    from the installed kernel sources as setup.py builds them for AArch64, on odd shapes and tile edges."""
    kernels = export_c.kernels_dir()
    sources = ["dense.c", "conv2d.c", "softmax.c", "activation.c", "dense_simd.c", "conv2d_simd.c",
               "softmax_simd.c", "activation_simd.c"]
    program = tmp_path / "neon_kernels"
    command = [tool("aarch64-linux-gnu-gcc"), "-O3", "-std=gnu11", "-ffp-contract=fast", "-Wall", "-Wextra",
               "-Werror", "-I", str(kernels), "-DFM_ISA_SUFFIX=neon", "-DFM_VECTOR_WIDTH=4",
               str(HERE / "c" / "neon_kernels.c"), *(str(kernels / s) for s in sources), "-o", str(program),
               "-lm", "-static"]
    built = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert built.returncode == 0, built.stderr[-4000:]
    tool(QEMU_AARCH64[0])
    result = subprocess.run([*QEMU_AARCH64, str(program)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0 and ", 0 failed" in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]


def test_header_serves_cpp(exported, tmp_path):
    """A C++ program includes the header (extern "C") and links with the C object."""
    folder = exported("softmax_layer")
    main = tmp_path / "main.cpp"
    main.write_text('#include "softmax_layer.h"\nint main() {\n    static const float image[784] = {};\n'
                    "    float probabilities[SOFTMAX_LAYER_NUM_CLASSES];\n"
                    "    return softmax_layer_predict(image, probabilities) < 0;\n}\n")
    obj = tmp_path / "model.o"
    subprocess.run([tool("gcc"), *WARNINGS, "-O2", "-c", str(folder / "softmax_layer.c"), "-o", str(obj)], check=True)
    built = subprocess.run([tool("g++"), "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(folder),
                            str(main), str(obj), "-o", str(tmp_path / "main"), "-lm"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    assert subprocess.run([str(tmp_path / "main")]).returncode == 0


def test_layer_names_that_spell_alike_in_c_stay_apart(tmp_path):
    """Layer names may hold '.' and '-', which C identifiers cannot: 'a.b' and 'a_b' must not collide."""
    layers = [{"type": "dense", "name": "a.b", "units": 11, "activation": "relu"},
              {"type": "dense", "name": "a_b", "units": 10, "activation": "softmax"}]
    path = write_model(tmp_path / "alike.npz", layers, input_shape=(784,), seed=7)
    _, source = export_c.export_c(path, tmp_path)
    subprocess.run([tool("gcc"), *WARNINGS, "-c", str(source), "-o", str(tmp_path / "alike.o")], check=True)


def test_export_c_is_the_function_at_the_top_level(models, tmp_path):
    """fastmnist.export_c stays the function once the module that holds it has been imported."""
    first = fastmnist.export_c
    importlib.import_module("fastmnist._export_c")

    assert callable(first) and fastmnist.export_c is first
    header, source = fastmnist.export_c(models["softmax"], tmp_path)
    assert header.is_file() and source.is_file()
