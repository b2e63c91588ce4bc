"""The C export of an int8 model (docs/INT8.md): the engine's scalar int8 kernels with one call per layer.

What the int8 executor (network_s8.c) does, written out for one image: the float pixels quantized to bytes
as rint(255 p), int8 kernels and int32 biases as `static const` arrays, each layer's per-channel fixed-point
multipliers and its lookup table, uint8 activations in the work buffer planned as for a float model (in
values, here bytes), and the last layer's accumulators dequantized to float logits in `probabilities`, where
the float softmax runs. Only the scalar kernels, the definition: the engine's int8 fast paths read weights
that its C packing functions rearrange at load, and the engine does not offer them to the exporter (the
C would have to pack at start-up, in RAM), so an exported int8 model runs the plain loops on every target.
"""

from __future__ import annotations

import numpy as np

from . import spec
from ._export_c import (HEADERS_ALLOWED, VALUES_PER_LINE, MemoryPlan, Op, _UNUSED_OFF, _UNUSED_ON, _one_kernel_file,
                        _padding, _window, _wrapped, c_float, c_names, describe_activation)
from .int8_format import dequantize_scales, input_quantization, output_quantization, requantization
from .layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPool2D

INT8_FILES = {
    "always": ["common.h", "softmax.h", "softmax.c", "requantize.h", "dense_s8.h", "dense_s8.c"],
    # conv2d_s8.c takes the padded input's size from conv2d.c, which includes activation.h
    "conv2d": ["activation.h", "activation.c", "conv2d.h", "conv2d.c", "conv2d_s8.h", "conv2d_s8.c"],
    "maxpool2d": ["pool_u8.h", "pool_u8.c"],
    "activation": ["pool_u8.h", "pool_u8.c"],
}
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.uint8): "uint8_t",
           np.dtype(np.float32): "float"}


def lower_int8(model: spec.ModelSpec) -> list[Op]:
    """The int8 model's layers as calls, with the arrays the scalar kernels read (requantize.h's fm_requant,
    as _engine_int8.pxi fills it, without the fast paths' padding and folded bias)."""
    ops, q = [], input_quantization(model.input_range)
    last = max(i for i, p in enumerate(model.layers) if not isinstance(p.layer, Dropout))
    for i, planned in enumerate(model.layers):
        layer, params = planned.layer, planned.params
        op = dict(name=layer.name, input_shape=tuple(planned.input_shape), output_shape=tuple(planned.output_shape))
        if isinstance(layer, (Dense, Conv2D)):
            out = planned.output_shape[-1]
            arrays = {"kernel": np.ascontiguousarray(params["kernel"], np.int8),
                      "bias": (params["bias"] if "bias" in params else np.zeros(out, np.int32)).astype(np.int32)}
            if i == last:
                arrays["dequantize"] = dequantize_scales(params, q)
            else:
                rq = requantization(layer, params, q)
                arrays.update(multiplier=rq.multiplier, shift=rq.shift,
                              mask=((1 << rq.shift.astype(np.int64)) - 1).astype(np.int32))
                if rq.table is not None:
                    arrays["table"] = rq.table
            act = describe_activation(layer.activation) + (", dequantized to float" if i == last else "")
            if isinstance(layer, Dense):
                ops.append(Op("dense", description=f"dense, {layer.units} units, {act}", arrays=arrays, **op))
            else:
                (k_h, k_w), (s_y, s_x) = layer.kernel_size, layer.strides
                ops.append(Op("conv2d", description=f"conv2d {k_h}x{k_w}, {layer.filters} filters, strides "
                              f"{s_y}x{s_x}, padding {_padding(layer.padding)}, {act}",
                              window=_window(planned, layer.kernel_size, layer.strides, layer.padding),
                              arrays=arrays, **op))
            ops[-1].quantization = (q.zero_point, None if i == last else (rq.zero_point, rq.lo))
        elif isinstance(layer, MaxPool2D):
            (p_h, p_w), (s_y, s_x) = layer.pool_size, layer.strides
            ops.append(Op("maxpool2d", description=f"maxpool2d {p_h}x{p_w}, strides {s_y}x{s_x}, padding "
                          f"{_padding(layer.padding)}",
                          window=_window(planned, layer.pool_size, layer.strides, layer.padding), **op))
        elif isinstance(layer, Activation):
            ops.append(Op("activation", description=f"activation {describe_activation(layer.activation)}, a "
                          "lookup table", arrays={"table": params["table"].astype(np.uint8)}, **op))
        elif not isinstance(layer, (Flatten, Dropout)):
            raise ValueError(f"layer '{layer.name}': type {layer.type!r} has no int8 C export")
        q = output_quantization(layer, params, q)
    c_names(ops)
    return ops


def int8_kernel_text(ops: list[Op]) -> str:
    """The scalar int8 kernel files the ops need, in include order, made static as the float export's."""
    files = list(dict.fromkeys(f for kind in ("always", "conv2d", "maxpool2d", "activation")
                               if kind == "always" or any(op.kind == kind for op in ops) for f in INT8_FILES[kind]))
    emitted, seen_helpers, parts = set(), {}, []
    for file in files:
        parts.append(_one_kernel_file(file, emitted, HEADERS_ALLOWED, seen_helpers))
        emitted.add(file)
    return "\n\n".join([_UNUSED_OFF, "\n".join(parts), _UNUSED_ON])


def c_typed_array(name: str, values: np.ndarray, comment: str) -> str:
    """A static const array of its dtype (C_TYPES): 16 integers a line, or 8 floats printed exactly."""
    flat = np.ascontiguousarray(values).ravel()
    c_type = C_TYPES[flat.dtype]
    items = [c_float(v) for v in flat.tolist()] if c_type == "float" else [str(v) for v in flat.tolist()]
    per_line = VALUES_PER_LINE if c_type == "float" else 2 * VALUES_PER_LINE
    body = ",\n    ".join(", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    return f"/* {comment} */\nstatic const {c_type} {name}[{len(items)}] = {{\n    {body}\n}};\n"


def _weights_text(ops: list[Op]) -> str:
    comments = {"kernel": "kernel {shape}, int8", "bias": "bias, int32 at input_scale * kernel_scale",
                "multiplier": "requantization multipliers, per output channel (x 2^-31)",
                "shift": "requantization right shifts", "mask": "2^shift - 1",
                "table": "activation lookup table, uint8", "dequantize": "logit = float(acc) * this"}
    parts = []
    for op in ops:
        for key, array in op.arrays.items():
            parts.append(c_typed_array(f"{op.c_name}_{key}", array,
                                     f"{op.name}: " + comments[key].format(shape=array.shape)))
        if "bias" not in op.arrays:
            continue
        prefix, null = op.c_name, "NULL"
        if "dequantize" in op.arrays:
            fields = [null, null, null, "0", "0", "0", null, f"{prefix}_dequantize"]
        else:
            _, (zero_point, lo) = op.quantization
            table = f"{prefix}_table" if "table" in op.arrays else null
            fields = [f"{prefix}_multiplier", f"{prefix}_shift", f"{prefix}_mask", str(zero_point), str(lo), "255",
                      table, null]
        parts.append(f"static const fm_requant {prefix}_requant = {{{', '.join(fields)}}};\n")
    return "\n".join(parts)


def _call(op: Op, plan: MemoryPlan, index: int, last: bool) -> str:
    prefix = op.c_name
    if index < len(plan.inputs):
        x = f"values + {plan.inputs[index]}"
    else:  # the last op, not in the plan: its input is the output before it
        x = f"values + {plan.outputs[-1] if plan.outputs else 0}"
    y = "probabilities" if last else f"values + {plan.outputs[index]}"
    if op.kind == "dense":
        in_dim = op.input_shape[-1]
        rows, out_dim = op.in_values // in_dim, op.output_shape[-1]
        return (f"fm_dense_s8({y}, {x}, {prefix}_kernel, {prefix}_bias, {op.quantization[0]}, {rows}, {in_dim}, "
                f"{in_dim}, {out_dim}, {out_dim}, &{prefix}_requant);")
    if op.kind == "conv2d":
        return (f"fm_conv2d_s8({y}, {x}, {prefix}_kernel, {prefix}_bias, {op.quantization[0]}, &{prefix}_window, 0, "
                f"{op.window[3] * op.window[4]}, &{prefix}_requant);")
    if op.kind == "maxpool2d":
        return f"fm_maxpool2d_u8({y}, {x}, &{prefix}_window, 0, {op.window[3]});"
    return f"fm_lookup_u8({x}, {op.out_values}, {prefix}_table);"


def int8_source_text(name: str, model: spec.ModelSpec, ops: list[Op], plan: MemoryPlan, source: str) -> str:
    upper = name.upper()
    last_op = ops[-1]
    assert last_op.kind == "dense" and "dequantize" in last_op.arrays, "int8_format: an int8 model ends in dense"
    calls = [f"    /* {op.name}: {op.description} -> {op.output_shape} */\n"
             f"{_wrapped(_call(op, plan, i, op is last_op))}" for i, op in enumerate(ops)]
    windows = "\n".join(f"static const fm_window {op.c_name}_window = {{{', '.join(str(v) for v in op.window)}}};"
                        for op in ops if op.window)
    layer_list = "\n".join(f" *   {op.name}: {op.description} -> {op.output_shape}" for op in ops)
    classes = last_op.output_shape[-1]
    return f"""/* {name}.c: the int8 model {name} ({source}) as C, written by `fastmnist export-c`; see {name}.h.
 *
{layer_list}
 *
 * The kernels are the fastmnist engine's own scalar int8 kernels (fastmnist/_kernels): uint8 activations,
 * int8 weights, int32 accumulators requantized by requantize.h; the logits are float, as is the softmax. The
 * engine's int8 fast paths are not exported (their weights are packed at load), so every target runs these.
 */
#include "{name}.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

{int8_kernel_text(ops)}

/* ---- the weights ---- */

{_weights_text(ops)}
/* windows: in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_y, stride_x, pad_top, pad_left */
{windows}

/* ---- the forward pass ---- */

/* The work buffer: the layers' uint8 outputs in turn ({plan.values} bytes); the last layer's float logits go
 * to `probabilities`. */
#define VALUES {plan.values}
typedef char {name}_workspace_is_large_enough[VALUES <= {upper}_WORKSPACE_BYTES ? 1 : -1];

/* The model on its quantized input in values[0, 784): writes the probabilities, returns the most probable
 * class. */
static int forward(float probabilities[{upper}_NUM_CLASSES], uint8_t *values)
{{
    int best = 0;
{chr(10).join(calls)}
    fm_softmax_f32(probabilities, 1, {classes});
    for (int c = 0; c < {upper}_NUM_CLASSES; c++) {{
        if (!isfinite(probabilities[c]))
            return -1; /* the scales overflow float32 on this image */
        best = probabilities[c] > probabilities[best] ? c : best;
    }}
    return best;
}}

/* A pixel p in [0, 1] becomes the byte rint(255 p), as the engine quantizes it; -1 for any other value. */
static int quantize_input(uint8_t *values, const float image[784])
{{
    for (int i = 0; i < 784; i++) {{
        if (!(image[i] >= 0.0f && image[i] <= 1.0f))
            return -1;
        values[i] = (uint8_t)nearbyintf(image[i] * 255.0f);
    }}
    return 0;
}}

int {name}_predict_r(const float image[784], float probabilities[{upper}_NUM_CLASSES], void *workspace)
{{
    uint8_t *values = (uint8_t *)workspace;
    return quantize_input(values, image) < 0 ? -1 : forward(probabilities, values);
}}

static uint8_t static_values[VALUES];

int {name}_predict(const float image[784], float probabilities[{upper}_NUM_CLASSES])
{{
    return quantize_input(static_values, image) < 0 ? -1 : forward(probabilities, static_values);
}}

int {name}_predict_u8(const unsigned char image[784], float probabilities[{upper}_NUM_CLASSES])
{{
    for (int i = 0; i < 784; i++)
        static_values[i] = image[i]; /* the input's quantization: the byte itself */
    return forward(probabilities, static_values);
}}
"""
