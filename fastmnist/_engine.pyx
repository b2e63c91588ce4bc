"""The bridge between a checked model (fastmnist.spec.ModelSpec) and the C executor.

`Network` prepares a model once for one instruction set (packs the kernels, folds batchnorm to a scale and a
shift, lays out the op list) and then only runs it. Inputs are checked here, at the boundary, in C-level code
cheap enough for batch-1 latency; the forward pass itself runs in C with the GIL released.
"""

import numpy as np

cimport numpy as cnp
from libc.stdlib cimport calloc, free

from .layers import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, DepthwiseConv2D, GlobalAvgPool2D,
                     GlobalMaxPool2D, MaxPool2D, ZeroPad2D, activation_of, explicit_pads)

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    static int fm_openmp_version(void) { return _OPENMP; }
    #else
    static int fm_openmp_version(void) { return 0; }
    #endif
    #if defined(__clang__)
    #define FM_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FM_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FM_COMPILER "msvc"
    #else
    #define FM_COMPILER "unknown"
    #endif
    """
    int fm_openmp_version()
    const char *FM_COMPILER

_ACTIVATION_KINDS = {"linear": FM_ACT_LINEAR, "relu": FM_ACT_RELU, "elu": FM_ACT_ELU, "selu": FM_ACT_SELU,
                     "tanh": FM_ACT_TANH, "sigmoid": FM_ACT_SIGMOID, "hard_sigmoid": FM_ACT_HARD_SIGMOID,
                     "silu": FM_ACT_SILU, "gelu": FM_ACT_GELU, "softplus": FM_ACT_SOFTPLUS, "softmax": FM_ACT_SOFTMAX}
INPUT_VALUES = 784
CACHE_LINE_FLOATS = 16
_COMPUTING = (Dense, Conv2D, DepthwiseConv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, ZeroPad2D,
              BatchNorm, Activation)  # flatten and dropout need no op
_POOL_KINDS = {MaxPool2D: FM_OP_MAXPOOL2D, AvgPool2D: FM_OP_AVGPOOL2D, GlobalAvgPool2D: FM_OP_GLOBAL_AVGPOOL2D,
               GlobalMaxPool2D: FM_OP_GLOBAL_MAXPOOL2D}
_ACCEPTED = "(n, 28, 28), (28, 28), (n, 784) or (784,) arrays of uint8 (0..255) or float (0..1)"


def isa_names() -> list:
    """Every instruction-set path the kernels know, compiled here or not."""
    return [fm_isa_name(<fm_isa>i).decode() for i in range(FM_ISA_COUNT)]


def compiled_isas() -> list:
    return [name for i, name in enumerate(isa_names()) if fm_isa_compiled(<fm_isa>i)]


def supported_isas() -> list:
    return [name for i, name in enumerate(isa_names()) if fm_isa_supported(<fm_isa>i)]


def best_isa() -> str:
    return fm_isa_name(fm_isa_best()).decode()


def compiler() -> str:
    """The compiler that built the extension, with its version."""
    return FM_COMPILER.decode()


def openmp_version() -> int:
    """The _OPENMP date the extension was built with, or 0 without OpenMP."""
    return fm_openmp_version()


cdef cnp.ndarray _as_pixels(object images, size_t *count):
    """images -> a C-contiguous uint8 or float32 array of `count` images of 784 values (a view when possible)."""
    cdef cnp.ndarray a
    if type(images) is np.ndarray:
        a = <cnp.ndarray>images
    else:
        try:
            a = np.asarray(images)
        except (ValueError, TypeError) as e:
            raise ValueError(f"images: cannot be read as an array ({e}); expected {_ACCEPTED}") from None
    cdef int type_num = cnp.PyArray_TYPE(a)
    if type_num != cnp.NPY_UINT8 and type_num != cnp.NPY_FLOAT32:
        if a.dtype.kind != "f" or a.dtype.itemsize > 8:
            raise ValueError(f"images: dtype {a.dtype}, expected {_ACCEPTED}")
        a = a.astype(np.float32)
    cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(a)
    cdef int ndim = cnp.PyArray_NDIM(a)
    if ndim == 3 and shape[1] == 28 and shape[2] == 28:
        count[0] = shape[0]
    elif ndim == 2 and shape[0] == 28 and shape[1] == 28:
        count[0] = 1
    elif ndim == 2 and shape[1] == INPUT_VALUES:
        count[0] = shape[0]
    elif ndim == 1 and shape[0] == INPUT_VALUES:
        count[0] = 1
    else:
        raise ValueError(f"images: shape {np.shape(a)}, expected {_ACCEPTED}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISNOTSWAPPED(a):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    return a


cdef _check_pixels(cnp.ndarray pixels, size_t bad, size_t count):
    """Raises for the pixel fm_network_run found outside [0, 1] (its pass over the input checks them)."""
    if bad < count * INPUT_VALUES:
        value = (<const float *>cnp.PyArray_DATA(pixels))[bad]
        raise ValueError(f"images: image {bad // INPUT_VALUES}, pixel {bad % INPUT_VALUES} is {value}; "
                         "float pixels must be in [0, 1] (use uint8 for 0..255)")


cdef inline (size_t, size_t, size_t) _image_shape(tuple shape):
    """A layer's per-image shape as (h, w, c): a vector is one pixel of c channels."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return 1, 1, shape[0]


cdef class Network:
    """A model prepared for one instruction set; safe to run from several Python threads at once.

    fastmnist.Model extends it; `predict_proba` is defined here so that a call reaches C without a Python frame.
    """
    cdef fm_network net
    cdef fm_op *ops
    cdef list owners                 # the arrays the ops point into
    cdef list free_workspaces        # one per concurrent caller, reused
    cdef readonly int max_threads
    cdef readonly str isa
    cdef readonly int num_classes
    cdef readonly tuple op_shapes     # each op's output shape per image
    cdef readonly tuple layer_ops     # for each layer, the op whose output it is (-1: the input itself)

    def __cinit__(self, *args, **kwargs):
        self.ops = NULL

    def __dealloc__(self):
        free(self.ops)

    def __init__(self, model, str isa, int max_threads):
        if isa not in supported_isas():
            raise ValueError(f"instruction set {isa!r} is not available here; available: "
                             f"{', '.join(supported_isas())}")
        cdef int isa_code = isa_names().index(isa)
        cdef const fm_kernels *kernels = fm_kernels_for(<fm_isa>isa_code)
        if max_threads < 1:
            raise ValueError(f"num_threads is {max_threads}, expected at least 1")
        self.isa, self.max_threads, self.num_classes = isa, max_threads, model.num_classes
        self.owners, self.free_workspaces = [], []
        num_ops = sum(isinstance(p.layer, _COMPUTING) for p in model.layers)
        self.ops = <fm_op *>calloc(max(num_ops, 1), sizeof(fm_op))
        if self.ops == NULL:
            raise MemoryError()
        _check_shapes_chain(model)
        layer_ops, op_shapes = [], []
        for planned in model.layers:
            if isinstance(planned.layer, _COMPUTING):
                self._prepare_op(&self.ops[len(op_shapes)], planned, kernels)
                op_shapes.append(planned.output_shape)
            layer_ops.append(len(op_shapes) - 1)
        self.op_shapes, self.layer_ops = tuple(op_shapes), tuple(layer_ops)
        lo, hi = model.input_range
        self.net.kernels, self.net.ops, self.net.num_ops = kernels, self.ops, len(op_shapes)
        self.net.input_values, self.net.input_offset, self.net.input_scale = INPUT_VALUES, lo, hi - lo
        fm_network_init(&self.net)

    cdef const float *_keep(self, cnp.ndarray array) except NULL:
        """Hold `array` (float32, C-contiguous) for as long as the network lives; the ops point into it."""
        self.owners.append(array)
        return <const float *>cnp.PyArray_DATA(array)

    cdef _prepare_op(self, fm_op *op, planned, const fm_kernels *kernels):
        layer, params = planned.layer, planned.params
        cdef fm_window *w = &op.window
        w.in_h, w.in_w, w.in_c = _image_shape(planned.input_shape)
        w.out_h, w.out_w, w.out_c = _image_shape(planned.output_shape)
        op.activation = _activation_struct(activation_of(layer))
        cdef cnp.ndarray packed, kernel
        name = layer.name
        if isinstance(layer, Dense):
            op.kind = FM_OP_DENSE
            kernel = _checked(params["kernel"], w.in_c * w.out_c, f"layer '{name}' kernel")
            packed = _aligned_empty(kernels.dense_packed_size(w.in_c, w.out_c))
            kernels.dense_pack(<float *>cnp.PyArray_DATA(packed), <const float *>cnp.PyArray_DATA(kernel),
                               w.in_c, w.out_c)
            op.weights, op.bias = self._keep(packed), self._keep(_padded_bias(params.get("bias"), w.out_c, name))
        elif isinstance(layer, Conv2D):
            op.kind = FM_OP_CONV2D
            _set_window(w, layer.kernel_size, layer.strides, layer.padding)
            kernel = _checked(params["kernel"], w.k_h * w.k_w * w.in_c * w.out_c, f"layer '{name}' kernel")
            packed = _aligned_empty(kernels.conv2d_packed_size(w))
            kernels.conv2d_pack(<float *>cnp.PyArray_DATA(packed), <const float *>cnp.PyArray_DATA(kernel), w)
            op.weights, op.bias = self._keep(packed), self._keep(_padded_bias(params.get("bias"), w.out_c, name))
        elif isinstance(layer, DepthwiseConv2D):
            op.kind = FM_OP_DEPTHWISE_CONV2D
            _set_window(w, layer.kernel_size, layer.strides, layer.padding)
            kernel = _checked(params["kernel"], w.k_h * w.k_w * w.out_c, f"layer '{name}' kernel")
            packed = _aligned_empty(kernels.depthwise_packed_size(w))
            kernels.depthwise_pack(<float *>cnp.PyArray_DATA(packed), <const float *>cnp.PyArray_DATA(kernel), w)
            op.weights, op.bias = self._keep(packed), self._keep(_padded_bias(params.get("bias"), w.out_c, name))
        elif type(layer) in _POOL_KINDS:
            op.kind = _POOL_KINDS[type(layer)]
            if isinstance(layer, (MaxPool2D, AvgPool2D)):
                _set_window(w, layer.pool_size, layer.strides, layer.padding)
                op.count_include_pad = isinstance(layer, AvgPool2D) and layer.count_include_pad
        elif isinstance(layer, ZeroPad2D):
            op.kind = FM_OP_ZEROPAD2D
            (w.pad_top, _), (w.pad_left, _) = layer.padding
        elif isinstance(layer, BatchNorm):
            op.kind = FM_OP_BATCHNORM
            scale = params["gamma"] / np.sqrt(params["moving_variance"].astype(np.float64) + layer.epsilon)
            op.weights = self._keep(_checked(scale, w.out_c, f"layer '{name}' scale"))
            op.bias = self._keep(_checked(params["beta"] - params["moving_mean"] * scale, w.out_c, f"layer '{name}' shift"))
        else:
            op.kind = FM_OP_ACTIVATION

    cdef cnp.ndarray _take_workspace(self):
        # The test and the pop run under the GIL with no Python code between them, so no two callers
        # can take the same workspace.
        if self.free_workspaces:
            return self.free_workspaces.pop()
        return _aligned_empty(self.max_threads * self.net.workspace_values)

    cdef _give_back(self, cnp.ndarray workspace):
        self.free_workspaces.append(workspace)

    def predict_proba(self, images, out=None):
        """(n, classes) float32 probabilities, rows summing to 1; `out`, if given, is filled and returned
        (after an error, what it holds means nothing).

        images: (n, 28, 28), (28, 28), (n, 784) or (784,); uint8 in 0..255 or float in [0, 1]; ink high.
        """
        cdef size_t n
        cdef cnp.ndarray pixels = _as_pixels(images, &n)
        cdef cnp.ndarray result = self._output(out, n)
        if n == 0:
            return result
        cdef int threads = fm_network_threads(&self.net, n, self.max_threads)
        cdef cnp.ndarray workspace = self._take_workspace()
        cdef int is_u8 = cnp.PyArray_TYPE(pixels) == cnp.NPY_UINT8
        cdef size_t bad_pixel, bad
        with nogil:
            bad_pixel = fm_network_run(&self.net, <float *>cnp.PyArray_DATA(result), cnp.PyArray_DATA(pixels),
                                       is_u8, n, <float *>cnp.PyArray_DATA(workspace), threads, NULL)
            bad = fm_first_outside_unit(<const float *>cnp.PyArray_DATA(result), n * self.num_classes)
        self._give_back(workspace)
        _check_pixels(pixels, bad_pixel, n)
        if bad < n * self.num_classes:
            raise FloatingPointError(f"the model's weights overflow float32 for image {bad // self.num_classes}: "
                                     "its probabilities are not finite")
        return result

    cdef cnp.ndarray _output(self, out, size_t n):
        cdef cnp.npy_intp dims[2]
        if out is None:
            dims[0], dims[1] = n, self.num_classes
            return cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        if (type(out) is not np.ndarray or out.dtype != np.float32 or out.shape != (n, self.num_classes)
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out: expected a writeable C-contiguous float32 array of shape ({n}, "
                             f"{self.num_classes}), got {getattr(out, 'dtype', type(out).__name__)} "
                             f"{getattr(out, 'shape', '')}")
        return out

    def op_outputs(self, images) -> list:
        """Each op's output for `images`, as arrays (n, *op shape); one thread."""
        cdef size_t n
        cdef cnp.ndarray pixels = _as_pixels(images, &n)
        outputs = [np.empty((n, *shape), np.float32) for shape in self.op_shapes]
        if n == 0 or not outputs:
            return outputs
        cdef float **taps = <float **>calloc(len(outputs), sizeof(float *))
        if taps == NULL:
            raise MemoryError()
        for i, array in enumerate(outputs):
            taps[i] = <float *>cnp.PyArray_DATA(array)
        cdef cnp.ndarray result = np.empty((n, self.num_classes), np.float32)
        cdef cnp.ndarray workspace = self._take_workspace()
        cdef int is_u8 = cnp.PyArray_TYPE(pixels) == cnp.NPY_UINT8
        cdef size_t bad_pixel
        with nogil:
            bad_pixel = fm_network_run(&self.net, <float *>cnp.PyArray_DATA(result), cnp.PyArray_DATA(pixels),
                                       is_u8, n, <float *>cnp.PyArray_DATA(workspace), 1, taps)
        free(taps)
        self._give_back(workspace)
        _check_pixels(pixels, bad_pixel, n)
        return outputs


def pack_dense(kernel, size_t panel_width) -> np.ndarray:
    """A dense kernel (in_dim, out_dim) packed for a fast path of `panel_width` columns per panel, by the
    engine's own packing (dense.h): flat float32. For writing a fast path's weights elsewhere (export_c)."""
    cdef cnp.ndarray k = np.ascontiguousarray(kernel, dtype=np.float32)
    if k.ndim != 2 or panel_width < 1:
        raise ValueError(f"pack_dense: kernel shape {np.shape(kernel)} and panel width {panel_width}, "
                         "expected (in_dim, out_dim) and at least 1")
    cdef size_t in_dim = k.shape[0], out_dim = k.shape[1]
    cdef cnp.ndarray packed = np.empty(fm_dense_packed_size_for_width(in_dim, out_dim, panel_width), np.float32)
    fm_dense_pack_f32_for_width(<float *>cnp.PyArray_DATA(packed), <const float *>cnp.PyArray_DATA(k), in_dim,
                                out_dim, panel_width)
    return packed


def pack_conv2d(kernel, size_t panel_width) -> np.ndarray:
    """A conv2d kernel (k_h, k_w, in_c, out_c) packed for a fast path of `panel_width` output channels per
    panel, by the engine's own packing (conv2d.h): flat float32."""
    cdef cnp.ndarray k = np.ascontiguousarray(kernel, dtype=np.float32)
    if k.ndim != 4 or panel_width < 1:
        raise ValueError(f"pack_conv2d: kernel shape {np.shape(kernel)} and panel width {panel_width}, "
                         "expected (k_h, k_w, in_c, out_c) and at least 1")
    cdef fm_window w
    w.k_h, w.k_w, w.in_c, w.out_c = k.shape[0], k.shape[1], k.shape[2], k.shape[3]
    cdef cnp.ndarray packed = np.empty(fm_conv2d_packed_size_for_width(&w, panel_width), np.float32)
    fm_conv2d_pack_f32_for_width(<float *>cnp.PyArray_DATA(packed), <const float *>cnp.PyArray_DATA(k), &w,
                                 panel_width)
    return packed


cdef _set_window(fm_window *w, window, strides, padding):
    """The window, strides and the pads before the input (those after follow from the output size)."""
    w.k_h, w.k_w = window
    w.stride_y, w.stride_x = strides
    (w.pad_top, _), (w.pad_left, _) = explicit_pads((w.in_h, w.in_w), window, strides, padding)


cdef fm_activation _activation_struct(activation):
    """fastmnist.layers.ActivationSpec -> the kernels' fm_activation (parameters rounded to float32)."""
    cdef fm_activation a
    a.kind = _ACTIVATION_KINDS[activation.name]
    a.alpha = a.beta = a.gamma = 0.0
    if activation.name == "relu":
        a.alpha, a.beta = activation["negative_slope"], activation["threshold"]
        a.gamma = np.inf if activation["max_value"] is None else activation["max_value"]
    elif activation.name == "elu":
        a.alpha = activation["alpha"]
    elif activation.name == "hard_sigmoid":
        a.alpha, a.beta = activation["alpha"], activation["beta"]
    elif activation.name == "gelu" and activation["approximate"]:
        a.kind = FM_ACT_GELU_TANH
    return a


def pack_depthwise(kernel) -> np.ndarray:
    """A depthwise kernel (k_h, k_w, in_c, depth_multiplier) packed as the fast paths read it, by the
    engine's own packing (depthwise_conv2d.h; the same for every ISA): flat float32."""
    cdef cnp.ndarray k = np.ascontiguousarray(kernel, dtype=np.float32)
    if k.ndim != 4:
        raise ValueError(f"pack_depthwise: kernel shape {np.shape(kernel)}, expected (k_h, k_w, in_c, multiplier)")
    cdef fm_window w
    w.k_h, w.k_w, w.in_c, w.out_c = k.shape[0], k.shape[1], k.shape[2], k.shape[2] * k.shape[3]
    cdef cnp.ndarray packed = np.empty(fm_depthwise_packed_size(&w), np.float32)
    fm_depthwise_pack_f32(<float *>cnp.PyArray_DATA(packed), <const float *>cnp.PyArray_DATA(k), &w)
    return packed


def _check_shapes_chain(model) -> None:
    """Every layer's shapes must follow from the input, as fastmnist.spec.parse makes them: the executor sizes
    its buffers from them, so a hand-made model with shapes that do not chain could overrun one."""
    shape = tuple(model.input_shape)
    if np.prod(shape) != INPUT_VALUES:
        raise ValueError(f"the input shape {shape} does not hold {INPUT_VALUES} values")
    for planned in model.layers:
        if tuple(planned.input_shape) != shape or planned.layer.output_shape(shape) != tuple(planned.output_shape):
            raise ValueError(f"layer '{planned.layer.name}': shapes {planned.input_shape} -> {planned.output_shape} "
                             f"do not follow from the previous layer's output {shape}")
        shape = tuple(planned.output_shape)
    if shape != (model.num_classes,):
        raise ValueError(f"the model outputs shape {shape}, expected ({model.num_classes},)")


cdef cnp.ndarray _checked(array, size_t size, str what):
    """`array` as float32, C-contiguous, after checking it holds the `size` values the kernels will read:
    no model, however it was made, can send them past the end of an array."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.size != size:
        raise ValueError(f"{what} has {array.size} values, the layer needs {size}")
    return array


cdef cnp.ndarray _aligned_empty(size_t count):
    """An uninitialised float32 array of `count` values starting on a cache line, so that packed weight rows
    (and the rows of a workspace) do not straddle two lines."""
    raw = np.empty(count + CACHE_LINE_FLOATS, np.float32)
    cdef size_t address = <size_t>cnp.PyArray_DATA(raw)
    cdef size_t skip = (0 - address) % (CACHE_LINE_FLOATS * 4) // 4
    return raw[skip:skip + count]


def _padded_bias(bias, size_t units, str name):
    """The bias (zeros without one) padded to whole panels for the vector loads of the fast paths."""
    padded = np.zeros((units + FM_BIAS_ALIGN - 1) // FM_BIAS_ALIGN * FM_BIAS_ALIGN, np.float32)
    if bias is not None:
        if np.size(bias) != units:
            raise ValueError(f"layer '{name}' bias has {np.size(bias)} values, the layer needs {units}")
        padded[:units] = np.ravel(bias)
    return padded


include "_engine_int8.pxi"
