"""Export a model as C: a weights file -> NAME.h and NAME.c, a self-contained C99 program for that one model.

The C is what the engine runs, written out: the engine's own kernel sources (fastmnist/_kernels, read from the
installed package) with one call per layer, the weights as `static const` arrays (flash on a microcontroller)
and every activation in one work buffer sized here. The scalar path is always there; where the compiler
targets AVX2+FMA or NEON, the engine's fast paths for them run instead, on weights packed here by the
engine's own packing. No allocation, no I/O, and no header beyond <math.h>, <stddef.h> and <stdint.h>
(and an ISA's intrinsics inside its fast path).

An int8 model (`precision` "int8") is written by _export_c_int8 from the engine's scalar int8 kernels, on the
same memory plan and header API.

The work buffer holds the layers' outputs in turn (its memory plan, `plan_memory`): a layer writes at the
end of the buffer opposite to its input, batchnorm and activations work in place, and a pooling layer
writes just below its input, as close as its kernel's order of reads allows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import _engine, format, spec
from .layers import (Activation, ActivationSpec, AvgPool2D, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Dropout,
                     Flatten, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D, ZeroPad2D, activation_of, explicit_pads)

INPUT_VALUES = 784
FLOAT_BYTES = 4
VALUES_PER_LINE = 8
# The fast paths the C carries: (the condition that selects one, its kernels' ISA suffix, floats per
# vector). A panel of packed weights is two vectors wide (FM_NR in simd.h), as setup.py builds the engine.
FAST_PATHS = (("defined(__AVX2__) && defined(__FMA__)", "avx2", 8), ("defined(__ARM_NEON)", "neon", 4))
BIAS_ALIGN = 64  # biases padded as the engine pads them (FM_BIAS_ALIGN): whole panels for every fast path
DEPTHWISE_CHANNEL_ALIGN = 32  # FM_DEPTHWISE_CHANNEL_ALIGN: the fast depthwise path's channels per pixel
HEADERS_ALLOWED = {"math.h", "stddef.h", "stdint.h"}
FAST_HEADERS_ALLOWED = HEADERS_ALLOWED | {"immintrin.h", "arm_neon.h"}
# The kernel files each op needs, in an order where every file comes after those it includes.
SCALAR_FILES = {
    "common": ["common.h"],
    "activation": ["activation.h", "activation.c"],
    "softmax": ["softmax.h", "softmax.c"],
    "dense": ["dense.h", "dense.c"],
    "conv2d": ["conv2d.h", "conv2d.c"],
    "depthwise_conv2d": ["conv2d.h", "conv2d.c", "depthwise_conv2d.h", "depthwise_conv2d.c"],
    "maxpool2d": ["maxpool2d.h", "maxpool2d.c"],
    "avgpool2d": ["avgpool2d.h", "avgpool2d.c"],
    "global_avgpool2d": ["global_pool2d.h", "global_pool2d.c"],
    "global_maxpool2d": ["global_pool2d.h", "global_pool2d.c"],
    "zeropad2d": ["zeropad2d.h", "zeropad2d.c"],
    "batchnorm": ["batchnorm.h", "batchnorm.c"],
}
FAST_FILES = {"common": ["simd.h"], "activation": ["activation_simd.c"], "softmax": ["softmax_simd.c"],
              "dense": ["dense_simd.c"], "conv2d": ["conv2d_simd.c"],
              "depthwise_conv2d": ["conv2d_simd.c", "depthwise_conv2d_simd.c"]}
ALWAYS = ("common", "activation", "softmax")
GLOBAL_POOLS = {"global_avgpool2d": "fm_global_avgpool2d_f32", "global_maxpool2d": "fm_global_maxpool2d_f32"}
C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef union unsigned
    void volatile while _Bool _Complex _Imaginary""".split())

_INCLUDE = re.compile(r'\s*#\s*include\s*([<"])([^>"]+)[>"]')
_FAST_DECLARATIONS = re.compile(r"FM_DECLARE_\w+\(\w+\)\s*$")
# A function declared or defined at file scope without `static`: its first line starts at column 0 with a
# return type and names an fm_ function, directly or through FM_FN.
_EXTERNAL_FUNCTION = re.compile(r"(?!static\b|typedef\b|extern\b|FM_ALWAYS_INLINE\b)[A-Za-z_][\w\s*]*?"
                                r"\b(?:fm_\w+|FM_FN\(\w+\))\s*\(")
# A fast path's own declaration (its ISA after a double underscore), written out rather than by FM_DECLARE_*
_FAST_DECLARATION = re.compile(r"[A-Za-z_][\w\s*]*?\bfm_\w+__\w+\s*\(")
_STATIC_FUNCTION = re.compile(r"(?:static|FM_ALWAYS_INLINE)\b[\w\s*]*?\b(\w+)\s*\(", re.MULTILINE)
_MACRO = re.compile(r"\s*#\s*define\s+(\w+)", re.MULTILINE)


@dataclass
class Op:
    """One call in the generated forward pass."""
    kind: str                      # dense, conv2d, maxpool2d, batchnorm, activation
    name: str                      # the layer's name
    description: str               # the layer as the comment before its call describes it
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    activation: ActivationSpec = ActivationSpec("linear")
    window: tuple[int, ...] = ()   # fm_window's fields, in its order, for the ops that take an image
    count_include_pad: bool = False
    c_name: str = ""               # the prefix of its arrays in the C (c_names)
    # int8 dense and conv2d: (input zero point, (output zero point, clamp low) or None for the float logits)
    quantization: tuple = ()
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # float32 (int8 models: theirs), scalar layouts

    @property
    def in_values(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def out_values(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def in_place(self) -> bool:
        return self.kind in ("batchnorm", "activation")

    @property
    def writes_below(self) -> int | None:
        """For an op that may write just below its input, how far below its input's start its output must
        start (see _pool_shift); None for the others."""
        if self.kind in ("maxpool2d", "avgpool2d"):
            return _pool_shift(self.window)
        if self.kind in GLOBAL_POOLS:  # the kernels start every output before reading all of the input
            return self.out_values
        return None


def export_c(weights: str | os.PathLike, folder: str | os.PathLike, name: str | None = None) -> tuple[Path, Path]:
    """Write NAME.h and NAME.c for the model in `weights` (a weights file, or a shipped model's name) into
    `folder` (created if missing); returns their paths. NAME defaults to the file's stem and must be a C
    identifier. Raises WeightsFormatError for a file the engine would refuse, ValueError for a bad name."""
    from .model import shipped_models, shipped_weights_dir

    path = Path(weights)
    if not path.suffix and not path.exists() and str(weights) in shipped_models():
        path = shipped_weights_dir() / f"{weights}.npz"
    name = path.stem if name is None else name
    check_name(name)
    raw, arrays = format.read(path)
    model = spec.parse(raw, arrays, str(path))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header, source = folder / f"{name}.h", folder / f"{name}.c"
    if model.precision == "int8":
        from ._export_c_int8 import int8_source_text, lower_int8

        ops = lower_int8(model)
        plan = plan_memory(ops[:-1])  # the last op writes its float logits straight into `probabilities`
        header.write_text(header_text(name, model.num_classes, plan.values, plan.values, "uint8_t", path.name))
        source.write_text(int8_source_text(name, model, ops, plan, path.name))
        return header, source
    ops = lower(model)
    plan = plan_memory(ops)
    header.write_text(header_text(name, model.num_classes, plan.workspace_bytes, FLOAT_BYTES * plan.values,
                                  "float and uint32_t", path.name))
    source.write_text(source_text(name, model, ops, plan, path.name))
    return header, source


def check_name(name: str) -> None:
    """NAME becomes a file name, a function prefix and (upper-cased) a macro prefix: a plain C identifier."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name) or name in C_KEYWORDS:
        raise ValueError(f"C name {name!r}: expected a C identifier of 1 to 63 letters, digits and underscores, "
                         "starting with a letter and not a C keyword (choose one with --name)")


def lower(model: spec.ModelSpec) -> list[Op]:
    """The model's layers as calls: flatten and dropout need none (an NHWC map is already its flat vector)."""
    ops = []
    for planned in model.layers:
        layer, params = planned.layer, planned.params
        op = dict(name=layer.name, input_shape=tuple(planned.input_shape), output_shape=tuple(planned.output_shape),
                  activation=activation_of(layer))
        act = describe_activation(activation_of(layer))
        if isinstance(layer, Dense):
            ops.append(Op("dense", description=f"dense, {layer.units} units, {act}",
                          arrays=_kernel_and_bias(params, layer.units), **op))
        elif isinstance(layer, (Conv2D, DepthwiseConv2D)):
            (k_h, k_w), (s_y, s_x) = layer.kernel_size, layer.strides
            what = (f"conv2d {k_h}x{k_w}, {layer.filters} filters" if isinstance(layer, Conv2D) else
                    f"depthwise_conv2d {k_h}x{k_w}, depth multiplier {layer.depth_multiplier}")
            ops.append(Op(layer.type, description=f"{what}, strides {s_y}x{s_x}, padding {_padding(layer.padding)}, "
                          f"{act}", window=_window(planned, layer.kernel_size, layer.strides, layer.padding),
                          arrays=_kernel_and_bias(params, planned.output_shape[-1]), **op))
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            (p_h, p_w), (s_y, s_x) = layer.pool_size, layer.strides
            count = isinstance(layer, AvgPool2D) and layer.count_include_pad
            ops.append(Op(layer.type, description=f"{layer.type} {p_h}x{p_w}, strides {s_y}x{s_x}, padding "
                          f"{_padding(layer.padding)}" + (", padding counted" if count else ""),
                          window=_window(planned, layer.pool_size, layer.strides, layer.padding),
                          count_include_pad=count, **op))
        elif isinstance(layer, (GlobalAvgPool2D, GlobalMaxPool2D)):
            ops.append(Op(layer.type, description=layer.type, **op))
        elif isinstance(layer, ZeroPad2D):
            window = list(_window(planned, (1, 1), (1, 1), "valid"))
            window[10], window[11] = layer.padding[0][0], layer.padding[1][0]
            ops.append(Op("zeropad2d", description=f"zeropad2d {_padding(layer.padding)}", window=tuple(window), **op))
        elif isinstance(layer, BatchNorm):
            # folded as the engine folds it (_engine.Network): in float64, then rounded to float32
            scale = params["gamma"] / np.sqrt(params["moving_variance"].astype(np.float64) + layer.epsilon)
            shift = params["beta"] - params["moving_mean"] * scale
            ops.append(Op("batchnorm", description=f"batchnorm, epsilon {layer.epsilon:g}",
                          arrays={"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}, **op))
        elif isinstance(layer, Activation):
            ops.append(Op("activation", description=f"activation {act}", **op))
        elif not isinstance(layer, (Flatten, Dropout)):
            raise ValueError(f"layer '{layer.name}': type {layer.type!r} has no C export")
    c_names(ops)
    return ops


def describe_activation(activation: ActivationSpec) -> str:
    """relu, or relu(max_value=6.0): the name and the parameters that differ from their defaults."""
    spelled = activation.to_json()
    if isinstance(spelled, str):
        return spelled
    return activation.name + "(" + ", ".join(f"{k}={v}" for k, v in spelled.items() if k != "name") + ")"


def _padding(padding) -> str:
    return padding if isinstance(padding, str) else str([list(p) for p in padding])


def c_activation(activation: ActivationSpec) -> str:
    """The kernels' fm_activation for `activation`, as the engine fills it (_engine._activation_struct)."""
    kind, alpha, beta, gamma = activation.name.upper(), 0.0, 0.0, 0.0
    if activation.name == "relu":
        alpha, beta = activation["negative_slope"], activation["threshold"]
        gamma = np.inf if activation["max_value"] is None else activation["max_value"]
    elif activation.name == "elu":
        alpha = activation["alpha"]
    elif activation.name == "hard_sigmoid":
        alpha, beta = activation["alpha"], activation["beta"]
    elif activation.name == "gelu" and activation["approximate"]:
        kind = "GELU_TANH"
    values = ", ".join("INFINITY" if np.isinf(v) else c_float(np.float32(v)) for v in (alpha, beta, gamma))
    return f"{{FM_ACT_{kind}, {values}}}"


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A per-image shape as (h, w, c), as the engine sees it: a vector is one pixel of c channels."""
    return tuple(shape) if len(shape) == 3 else (1, *shape) if len(shape) == 2 else (1, 1, shape[0])


def _window(planned: spec.PlannedLayer, window: tuple[int, int], strides: tuple[int, int], padding):
    in_h, in_w, in_c = _image_shape(planned.input_shape)
    out_h, out_w, out_c = _image_shape(planned.output_shape)
    (pad_top, _), (pad_left, _) = explicit_pads((in_h, in_w), window, strides, padding)
    return (in_h, in_w, in_c, out_h, out_w, out_c, *window, *strides, pad_top, pad_left)


def _kernel_and_bias(params: dict[str, np.ndarray], units: int) -> dict[str, np.ndarray]:
    """The kernel as it is, and the bias (zeros without one) padded for the fast paths' vector loads."""
    bias = np.zeros(-(-units // BIAS_ALIGN) * BIAS_ALIGN, np.float32)
    if "bias" in params:
        bias[:units] = params["bias"]
    return {"kernel": np.ascontiguousarray(params["kernel"], np.float32), "bias": bias}


# ---- the memory plan -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """floats [offset, offset + size) of the work buffer, with offset = from_end * buffer_size + base, so
    that a region anchored at the buffer's end moves with its size while the plan searches for it."""
    from_end: int
    base: int
    size: int

    def offset(self, buffer: int) -> int:
        return self.from_end * buffer + self.base


@dataclass(frozen=True)
class MemoryPlan:
    values: int                      # floats of the activations' buffer
    inputs: list[int]                # each op's input offset in it
    outputs: list[int]               # each op's output offset
    padded: int                      # floats of the fast conv2d path's zero-padded input
    active: int                      # uint32 entries of the fast paths' lists of nonzero inputs

    @property
    def workspace_bytes(self) -> int:
        """What NAME_predict_r needs on the widest path (the scalar path needs only `values`)."""
        return FLOAT_BYTES * (self.values + self.padded + self.active)


def plan_memory(ops: list[Op]) -> MemoryPlan:
    """Offsets for every op's input and output in the smallest buffer this greedy placement finds: the
    buffer starts as large as the largest activation and grows to the least size that lets the op that
    did not fit be placed, until every op fits."""
    buffer = max([INPUT_VALUES] + [max(op.in_values, op.out_values) for op in ops])
    for _ in range(4 * len(ops) + 8):
        placed = _place(ops, buffer)
        if isinstance(placed, int):
            buffer = placed
            continue
        inputs, outputs = placed
        padded = max([_padded_values(op) for op in ops if op.kind in ("conv2d", "depthwise_conv2d")], default=0)
        active = max([_active_entries(op) for op in ops if op.kind in ("dense", "conv2d")], default=0)
        return MemoryPlan(buffer, inputs, outputs, padded, active)
    raise AssertionError("the memory plan did not converge")  # each retry grows the buffer; bounded by sum


def _place(ops: list[Op], buffer: int):
    """(input offsets, output offsets) with a buffer of `buffer` floats, or the least larger buffer that
    would let the first op that does not fit be placed."""
    current, inputs, outputs = Region(0, 0, INPUT_VALUES), [], []
    for op in ops:
        inputs.append(current.offset(buffer))
        if not op.in_place:
            least = [(_least_buffer(constraints, buffer), region) for region, constraints in _options(op, current)]
            fitting = [region for size, region in least if size == buffer]
            if not fitting:
                return min(size for size, _ in least)
            current = fitting[0]
        outputs.append(current.offset(buffer))
    return inputs, outputs


def _options(op: Op, current: Region) -> list[tuple[Region, list[tuple[int, int]]]]:
    """Where `op`'s output may go, best first, each with its conditions: pairs (a, b) meaning
    a * buffer + b >= 0. Pooling first tries just below its input; every op tries the end of the buffer
    opposite to its input, then the same end."""
    m = op.out_values
    options = []
    if op.writes_below is not None:
        below = Region(current.from_end, current.base - op.writes_below, m)
        options.append((below, _inside(below)))
    low, high = Region(0, 0, m), Region(1, -m, m)
    low_option = (low, _inside(low) + [_before(low, current)])
    high_option = (high, _inside(high) + [_before(current, high)])
    options += [high_option, low_option] if current.from_end == 0 else [low_option, high_option]
    return options


def _inside(r: Region) -> list[tuple[int, int]]:
    """offset >= 0 and offset + size <= buffer."""
    return [(r.from_end, r.base), (1 - r.from_end, -r.base - r.size)]


def _before(first: Region, second: Region) -> tuple[int, int]:
    """`first` ends at or before `second` starts."""
    return second.from_end - first.from_end, second.base - first.base - first.size


def _least_buffer(constraints: list[tuple[int, int]], buffer: int) -> float:
    """The least size from `buffer` up that meets every a * size + b >= 0 (inf: none does)."""
    low, high = buffer, float("inf")
    for a, b in constraints:
        if a == 0 and b < 0:
            return float("inf")
        if a > 0:
            low = max(low, -b)
        elif a < 0:
            high = min(high, b)
    return low if low <= high else float("inf")


def _pool_shift(window: tuple[int, ...]) -> int:
    """How far below its input a pooling layer may write: the kernel writes output pixel p (in row-major
    order) before it has read all of p's window, so p's values must end at or before the first input value
    that pixel p or any later pixel reads."""
    in_h, in_w, in_c, out_h, out_w, _, k_h, k_w, s_y, s_x, pad_top, pad_left = window
    first_y = np.clip(np.arange(out_h) * s_y - pad_top, 0, in_h - 1)
    first_x = np.clip(np.arange(out_w) * s_x - pad_left, 0, in_w - 1)
    first_read = ((first_y[:, None] * in_w + first_x[None, :]) * in_c).ravel()
    later_first_read = np.minimum.accumulate(first_read[::-1])[::-1]
    written_end = (np.arange(out_h * out_w) + 1) * in_c
    return max(0, int((written_end - later_first_read).max()))


def _padded_values(op: Op) -> int:
    """fm_conv2d_padded_h * fm_conv2d_padded_w pixels (conv2d.c) of in_c values, or for depthwise of
    fm_depthwise_channels(out_c) (depthwise_conv2d.h)."""
    _, _, in_c, out_h, out_w, out_c, k_h, k_w, s_y, s_x, _, _ = op.window
    channels = in_c if op.kind == "conv2d" else -(-out_c // DEPTHWISE_CHANNEL_ALIGN) * DEPTHWISE_CHANNEL_ALIGN
    return ((out_h - 1) * s_y + k_h) * ((out_w - 1) * s_x + k_w) * channels


def _active_entries(op: Op) -> int:
    """fm_dense_active_size for one row (dense.h), fm_conv2d_active_size (conv2d.h)."""
    if op.kind == "dense":
        return op.in_values + 1
    _, _, in_c, _, _, _, k_h, k_w, *_ = op.window
    return 2 * k_h * k_w * in_c


# ---- the kernels --------------------------------------------------------------------------------------

def kernels_dir() -> Path:
    """The kernel sources the installed engine was built from (shipped as package data)."""
    return Path(str(resources.files("fastmnist").joinpath("_kernels")))


def kernel_text(ops: list[Op]) -> str:
    """The kernel files the ops need, in include order, as one file-scope block: their functions made
    `static` (internal: two models can share a program), each .c file's macros undefined after it, its
    static helpers renamed where two files share a name. The files come whole, so a model leaves some of
    their functions unused, which is no reason for a warning."""
    kinds = [*ALWAYS, *(k for k in SCALAR_FILES if k not in ALWAYS and any(op.kind == k for op in ops))]
    scalar = list(dict.fromkeys(f for kind in kinds for f in SCALAR_FILES[kind]))
    fast = list(dict.fromkeys(f for kind in kinds for f in FAST_FILES.get(kind, [])))
    blocks, seen_helpers = [], {}
    for files, allowed, fast_section in ((scalar, HEADERS_ALLOWED, False), (fast, FAST_HEADERS_ALLOWED, True)):
        emitted = set() if not fast_section else set(scalar)
        parts = []
        for file in files:
            parts.append(_one_kernel_file(file, emitted, allowed, seen_helpers))
            emitted.add(file)
        text = "\n".join(parts)
        if fast_section:
            text = f"#ifdef FM_ISA_SUFFIX\n\n{text}\n#endif /* FM_ISA_SUFFIX */"
        blocks.append(text)
    return "\n\n".join([_UNUSED_OFF, *blocks, _UNUSED_ON])


_UNUSED_OFF = """#if defined(__GNUC__) /* GCC and Clang: the kernel files come whole, and this model uses some of them */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#if defined(__GNUC__) && !defined(__clang__) /* GCC, once it has propagated this model's sizes into the fast
                                                paths, warns of iterations that their loop bounds exclude */
#pragma GCC diagnostic ignored "-Waggressive-loop-optimizations"
#endif"""
_UNUSED_ON = """#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif"""


def _one_kernel_file(file: str, emitted: set[str], allowed: set[str], seen_helpers: dict[str, str]) -> str:
    text = (kernels_dir() / file).read_text()
    if file.endswith(".c"):
        for helper in sorted(set(_STATIC_FUNCTION.findall(text)) - {"inline"}):
            if helper.startswith("fm_"):
                continue
            if helper in seen_helpers:  # two files' static helpers share a name: this file's gets its own
                text = re.sub(rf"\b{helper}\b", f"{Path(file).stem}_{helper}", text)
            else:
                seen_helpers[helper] = file
    lines, in_fast_declaration = [], False
    for line in text.splitlines():
        fast = _EXTERNAL_FUNCTION.match(line) and _FAST_DECLARATION.match(line)
        if file.endswith(".h") and (in_fast_declaration or fast):
            in_fast_declaration = not line.rstrip().endswith(";")  # the other paths are not in the C
            continue
        include = _INCLUDE.match(line)
        if include:
            quoted, target = include.group(1) == '"', include.group(2)
            if quoted and target not in emitted:
                raise ValueError(f"kernel {file} includes {target}, which the C export does not write before it")
            if not quoted and target not in allowed:
                raise ValueError(f"kernel {file} includes <{target}>; the C export allows only "
                                 f"{', '.join(sorted(allowed))} there")
            if quoted:
                continue
        if _FAST_DECLARATIONS.match(line):
            continue  # declarations of every ISA's fast path; this file defines the one it compiles
        if _EXTERNAL_FUNCTION.match(line):
            line = "static " + line
        lines.append(line)
    body = "\n".join(lines).strip("\n")
    undefs = ""
    if file.endswith(".c"):
        macros = sorted(set(_MACRO.findall(text)))
        undefs = "".join(f"\n#undef {macro}" for macro in macros)
    return f"/* ---- fastmnist/_kernels/{file} ---- */\n{body}\n{undefs}".rstrip("\n") + "\n"


# ---- the C text ---------------------------------------------------------------------------------------

def c_float(value: float) -> str:
    """A float32 as a C literal that converts back to the same float (9 significant digits)."""
    text = "%.9g" % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text + "f"


def c_array(name: str, values: np.ndarray, comment: str) -> str:
    flat = np.ascontiguousarray(values, np.float32).ravel()
    items = [c_float(v) for v in flat.tolist()]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    body = ",\n    ".join(lines)
    return f"/* {comment} */\nstatic const float {name}[{len(items)}] = {{\n    {body}\n}};\n"


def c_names(ops: list[Op]) -> None:
    """Gives each op its C prefix: layer_ and its name with '.' and '-' as '_', numbered where two names
    would then be the same."""
    taken = set()
    for index, op in enumerate(ops):
        name = "layer_" + re.sub(r"[^A-Za-z0-9_]", "_", op.name)
        op.c_name = name if name not in taken else f"{name}_{index}"
        taken.add(op.c_name)


def weights_text(ops: list[Op]) -> str:
    """Every op's arrays. Kernels once per path: dense and conv2d packed for each fast path's panel width,
    depthwise packed once for both fast paths (its layout does not depend on the ISA), by the engine."""
    parts = []
    for op in ops:
        prefix = op.c_name
        for key, array in op.arrays.items():
            if key == "bias":
                parts.append(c_array(f"{prefix}_bias", array, f"{op.name}: bias, zero-padded to a multiple of "
                                     f"{BIAS_ALIGN}"))
            elif key != "kernel":
                parts.append(c_array(f"{prefix}_{key}", array, f"{op.name}: {key}"))
            elif op.kind == "depthwise_conv2d":
                parts.append("#ifdef FM_ISA_SUFFIX\n" + c_array(
                    f"{prefix}_kernel", _engine.pack_depthwise(array), f"{op.name}: kernel {array.shape}, packed "
                    f"for the fast paths: {DEPTHWISE_CHANNEL_ALIGN} channels a tap") +
                    "#else\n" + c_array(f"{prefix}_kernel", array, f"{op.name}: kernel {array.shape}") + "#endif\n")
            else:
                pack = _engine.pack_dense if op.kind == "dense" else _engine.pack_conv2d
                branches = [f"{keyword_} {condition}\n" + c_array(
                    f"{prefix}_kernel", pack(array, 2 * width), f"{op.name}: kernel {array.shape}, packed for the "
                    f"{isa} fast path in panels of {2 * width} outputs")
                    for keyword_, (condition, isa, width) in zip(("#if", "#elif"), FAST_PATHS)]
                branches.append("#else\n" + c_array(f"{prefix}_kernel", array, f"{op.name}: kernel {array.shape}"))
                parts.append("".join(branches) + "#endif\n")
    return "\n".join(parts)


def _call(op: Op, plan: MemoryPlan, index: int) -> str:
    prefix = op.c_name
    x, y, act = f"values + {plan.inputs[index]}", f"values + {plan.outputs[index]}", f"{prefix}_activation"
    window, out_h = f"&{prefix}_window", op.window[3] if op.window else 0
    weights = f"{prefix}_kernel, {prefix}_bias"
    if op.kind == "dense":
        return f"run_dense({y}, {x}, {weights}, {op.in_values}, {op.out_values}, {act}, active);"
    if op.kind == "conv2d":
        return f"run_conv2d({y}, {x}, {weights}, {window}, {act}, padded, active);"
    if op.kind == "depthwise_conv2d":
        return f"run_depthwise_conv2d({y}, {x}, {weights}, {window}, {act}, padded);"
    if op.kind == "maxpool2d":
        return f"fm_maxpool2d_f32({y}, {x}, {window}, 0, {out_h});"
    if op.kind == "avgpool2d":
        return f"fm_avgpool2d_f32({y}, {x}, {window}, {int(op.count_include_pad)}, 0, {out_h});"
    if op.kind == "zeropad2d":
        return f"fm_zeropad2d_f32({y}, {x}, {window}, 0, {out_h});"
    channels = _image_shape(op.output_shape)[2]
    if op.kind in GLOBAL_POOLS:
        return f"{GLOBAL_POOLS[op.kind]}({y}, {x}, {op.in_values // channels}, {channels}, 0, {channels});"
    positions = op.out_values // channels
    if op.kind == "batchnorm":
        return f"fm_batchnorm_f32({x}, {prefix}_scale, {prefix}_shift, {channels}, 0, {positions});"
    if op.activation.name == "softmax":
        return f"run_softmax({x}, {positions}, {channels});"
    return f"run_activation({x}, {op.out_values}, {act});"


def _wrapped(call: str, width: int = 110) -> str:
    """A call as a statement of the forward pass, its arguments carried over to further lines past `width`."""
    lines, line = [], "    "
    for i, part in enumerate(call.split(", ")):
        piece = part if i == 0 else " " + part
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line + ",")
            line, piece = "        ", part
        elif i > 0:
            line += ","
        line += piece
    return "\n".join(lines + [line])


def _description_text(ops: list[Op]) -> str:
    """Each op's window and activation, as the kernels take them."""
    lines = []
    for op in ops:
        prefix = op.c_name
        if op.window:
            lines.append(f"static const fm_window {prefix}_window = {{{', '.join(str(v) for v in op.window)}}};")
        if op.kind in ("dense", "conv2d", "depthwise_conv2d") or (op.kind == "activation" and
                                                                   op.activation.name != "softmax"):
            lines.append(f"static const fm_activation {prefix}_activation = {c_activation(op.activation)};")
    return ("/* windows: in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_y, stride_x, pad_top, pad_left;\n"
            " * activations: kind, alpha, beta, gamma (common.h) */\n" + "\n".join(lines))


def header_text(name: str, num_classes: int, workspace_bytes: int, scalar_bytes: int, aligned_for: str,
                source: str) -> str:
    upper = name.upper()
    return f"""/* {name}.h: the model {name} ({source}) as C, written by `fastmnist export-c`.
 *
 * image: 28x28 pixels, row-major, ink high (MNIST's convention): floats in [0, 1], or bytes 0..255 for the
 * _u8 variant. Each function writes the probability of every class and returns the most probable one, or -1
 * when a float pixel is NaN or outside [0, 1] (probabilities then mean nothing). {name}_predict and
 * {name}_predict_u8 use one static work buffer (not reentrant); {name}_predict_r uses the caller's
 * `workspace`: {upper}_WORKSPACE_BYTES bytes, aligned for {aligned_for} (from malloc, say).
 */
#ifndef {upper}_H
#define {upper}_H

#ifdef __cplusplus
extern "C" {{
#endif

#define {upper}_NUM_CLASSES {num_classes}
/* the largest buffer any path of {name}.c needs (scalar: {scalar_bytes} bytes) */
#define {upper}_WORKSPACE_BYTES {workspace_bytes}

int {name}_predict(const float image[784], float probabilities[{upper}_NUM_CLASSES]);
int {name}_predict_u8(const unsigned char image[784], float probabilities[{upper}_NUM_CLASSES]);
int {name}_predict_r(const float image[784], float probabilities[{upper}_NUM_CLASSES], void *workspace);

#ifdef __cplusplus
}}
#endif

#endif /* {upper}_H */
"""


def source_text(name: str, model: spec.ModelSpec, ops: list[Op], plan: MemoryPlan, source: str) -> str:
    upper = name.upper()
    lo, hi = model.input_range
    offset, scale = np.float32(lo), np.float32(hi - lo)  # as the engine's fm_network holds them
    conditions = "\n".join(
        f"{'#if' if i == 0 else '#elif'} {condition}\n#define FM_ISA_SUFFIX {isa}\n#define FM_VECTOR_WIDTH {width}"
        for i, (condition, isa, width) in enumerate(FAST_PATHS)) + "\n#endif"
    calls = []
    for index, op in enumerate(ops):
        calls.append(f"    /* {op.name}: {op.description} -> {op.output_shape} */\n{_wrapped(_call(op, plan, index))}")
    last = plan.outputs[-1]
    uses = {op.kind for op in ops}
    wrappers = [_SOFTMAX_WRAPPER]
    if any(op.kind == "activation" and op.activation.name != "softmax" for op in ops):
        wrappers.append(_ACTIVATION_WRAPPER)
    wrappers += [text for kind, text in _WRAPPERS.items() if kind in uses]
    layer_list = "\n".join(f" *   {op.name}: {op.description} -> {op.output_shape}" for op in ops)
    return f"""/* {name}.c: the model {name} ({source}) as C, written by `fastmnist export-c`; see {name}.h.
 *
{layer_list}
 *
 * The kernels are the fastmnist engine's own (fastmnist/_kernels). Where the compiler targets AVX2+FMA or
 * NEON, the engine's fast path for it runs, on weights packed for it; otherwise its scalar path.
 */
#include "{name}.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* the fast path this build takes, if any (as the engine's build names them) */
{conditions}

{kernel_text(ops)}

/* ---- the weights ---- */

{weights_text(ops)}
{_description_text(ops)}

/* ---- the forward pass ---- */

/* The work buffer: the layers' outputs in turn ({plan.values} floats), then what the fast paths need: the
 * zero-padded input of a conv2d and the lists of nonzero inputs. */
#define VALUES {plan.values}
#ifdef FM_ISA_SUFFIX
#define PADDED {plan.padded}
#define ACTIVE {max(plan.active, 1)}
#else
#define PADDED 0
#define ACTIVE 1 /* unused by the scalar path; C has no empty arrays */
#endif
typedef char {name}_workspace_is_large_enough[(VALUES + PADDED + ACTIVE) * 4 <= {upper}_WORKSPACE_BYTES ? 1 : -1];

static const float input_offset = {c_float(offset)}, input_scale = {c_float(scale)}; /* input range [{lo:g}, {hi:g}] */

{chr(10).join(wrappers)}
/* The model on its input in values[0, 784): writes the probabilities, returns the most probable class. */
static int forward(float probabilities[{upper}_NUM_CLASSES], float *values, float *padded, uint32_t *active)
{{
    int best = 0;
{_unused(ops)}{chr(10).join(calls)}
    for (int c = 0; c < {upper}_NUM_CLASSES; c++) {{
        probabilities[c] = values[{last} + c];
        if (!isfinite(probabilities[c]))
            return -1; /* the weights overflow float32 on this image */
        best = probabilities[c] > probabilities[best] ? c : best;
    }}
    return best;
}}

int {name}_predict_r(const float image[784], float probabilities[{upper}_NUM_CLASSES], void *workspace)
{{
    float *values = (float *)workspace;
    for (int i = 0; i < 784; i++) {{
        if (!(image[i] >= 0.0f && image[i] <= 1.0f))
            return -1;
        values[i] = input_offset + input_scale * image[i];
    }}
    return forward(probabilities, values, values + VALUES, (uint32_t *)(values + VALUES + PADDED));
}}

static float static_values[VALUES + PADDED];
static uint32_t static_active[ACTIVE];

int {name}_predict(const float image[784], float probabilities[{upper}_NUM_CLASSES])
{{
    for (int i = 0; i < 784; i++) {{
        if (!(image[i] >= 0.0f && image[i] <= 1.0f))
            return -1;
        static_values[i] = input_offset + input_scale * image[i];
    }}
    return forward(probabilities, static_values, static_values + VALUES, static_active);
}}

int {name}_predict_u8(const unsigned char image[784], float probabilities[{upper}_NUM_CLASSES])
{{
    const float scale = input_scale / 255.0f; /* as the engine converts bytes */
    for (int i = 0; i < 784; i++)
        static_values[i] = input_offset + scale * (float)image[i];
    return forward(probabilities, static_values, static_values + VALUES, static_active);
}}
"""


def _unused(ops: list[Op]) -> str:
    """The casts that say which of forward's scratch buffers this model's layers leave unused."""
    uses = {"padded": ("conv2d", "depthwise_conv2d"), "active": ("dense", "conv2d")}
    unused = [f"(void){name};" for name, kinds in uses.items() if not any(op.kind in kinds for op in ops)]
    return f"    {' '.join(unused)} /* no layer here needs it */\n" if unused else ""


_SOFTMAX_WRAPPER = """static void run_softmax(float *x, size_t rows, size_t row_len)
{
#ifdef FM_ISA_SUFFIX
    FM_FN(fm_softmax_f32)(x, rows, row_len);
#else
    fm_softmax_f32(x, rows, row_len);
#endif
}
"""

_ACTIVATION_WRAPPER = """static void run_activation(float *x, size_t count, fm_activation activation)
{
#ifdef FM_ISA_SUFFIX
    FM_FN(fm_activation_f32)(x, count, activation);
#else
    fm_activation_f32(x, count, activation);
#endif
}
"""

_DENSE_WRAPPER = """static void run_dense(float *out, const float *in, const float *kernel, const float *bias, size_t in_dim,
                      size_t out_dim, fm_activation activation, uint32_t *active)
{
#ifdef FM_ISA_SUFFIX
    FM_FN(fm_dense_f32)(out, in, kernel, bias, 1, in_dim, out_dim, 0, out_dim, activation, active);
#else
    (void)active;
    fm_dense_f32(out, in, kernel, bias, 1, in_dim, out_dim, 0, out_dim, activation);
#endif
    if (activation.kind == FM_ACT_SOFTMAX)
        run_softmax(out, 1, out_dim);
}
"""

_CONV2D_WRAPPER = """static void run_conv2d(float *out, const float *in, const float *kernel, const float *bias, const fm_window *w,
                       fm_activation activation, float *padded, uint32_t *active)
{
#ifdef FM_ISA_SUFFIX
    fm_conv2d_pad_f32(padded, in, w, 0, fm_conv2d_padded_h(w));
    FM_FN(fm_conv2d_f32)(out, padded, kernel, bias, w, 0, w->out_h, activation, active);
#else
    (void)padded, (void)active;
    fm_conv2d_f32(out, in, kernel, bias, w, 0, w->out_h * w->out_w, activation);
#endif
    if (activation.kind == FM_ACT_SOFTMAX)
        run_softmax(out, w->out_h * w->out_w, w->out_c);
}
"""

_DEPTHWISE_CONV2D_WRAPPER = """static void run_depthwise_conv2d(float *out, const float *in, const float *kernel, const float *bias,
                                 const fm_window *w, fm_activation activation, float *padded)
{
#ifdef FM_ISA_SUFFIX
    fm_depthwise_pad_f32(padded, in, w, 0, fm_conv2d_padded_h(w));
    FM_FN(fm_depthwise_conv2d_f32)(out, padded, kernel, bias, w, 0, w->out_h, activation);
#else
    (void)padded;
    fm_depthwise_conv2d_f32(out, in, kernel, bias, w, 0, w->out_h * w->out_w, activation);
#endif
    if (activation.kind == FM_ACT_SOFTMAX)
        run_softmax(out, w->out_h * w->out_w, w->out_c);
}
"""

_WRAPPERS = {"dense": _DENSE_WRAPPER, "conv2d": _CONV2D_WRAPPER, "depthwise_conv2d": _DEPTHWISE_CONV2D_WRAPPER}
