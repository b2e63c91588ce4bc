# The bridge between a checked int8 model (fastmnist.int8_format) and the int8 executor (network_s8.h);
# included at the end of _engine.pyx. `Int8Network` prepares the integer ops once (packs the kernels, folds
# the zero point into the bias, derives the fixed-point multipliers) and then only runs them.

from libc.stdint cimport int8_t, int32_t, uint8_t

from .int8_format import dequantize_scales, input_quantization, output_quantization, requantization
from .layers import Activation, Conv2D, Dense, Dropout, MaxPool2D, explicit_pads

cdef extern from "_kernels/cpu_s8.h":
    ctypedef enum fm_s8_isa:
        FM_S8_ISA_SCALAR
        FM_S8_ISA_COUNT
    const char *fm_s8_isa_name(fm_s8_isa isa) noexcept nogil
    int fm_s8_isa_compiled(fm_s8_isa isa) noexcept nogil
    int fm_s8_isa_supported(fm_s8_isa isa) noexcept nogil
    fm_s8_isa fm_s8_isa_best() noexcept nogil

cdef extern from "_kernels/requantize.h":
    ctypedef struct fm_requant:
        const int32_t *multiplier
        const int32_t *shift
        const int32_t *mask
        int32_t zero_point, lo, hi
        const uint8_t *table
        const float *dequantize
    int FM_S8_CHANNEL_ALIGN

cdef extern from "_kernels/dispatch_s8.h":
    ctypedef struct fm_s8_kernels:
        fm_s8_isa isa
        size_t (*dense_packed_size)(size_t in_dim, size_t out_dim) noexcept nogil
        void (*dense_pack)(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim) noexcept nogil
        size_t (*conv2d_packed_size)(const fm_window *w) noexcept nogil
        void (*conv2d_pack)(int8_t *packed, const int8_t *kernel, const fm_window *w) noexcept nogil
    const fm_s8_kernels *fm_s8_kernels_for(fm_s8_isa isa) noexcept nogil

cdef extern from "_kernels/network_s8.h":
    ctypedef enum fm_s8_op_kind:
        FM_S8_OP_DENSE
        FM_S8_OP_CONV2D
        FM_S8_OP_MAXPOOL2D
        FM_S8_OP_LOOKUP

    ctypedef struct fm_s8_op:
        fm_s8_op_kind kind
        fm_window window
        const int8_t *kernel
        const int32_t *bias
        const int32_t *folded_bias
        int32_t in_zero_point
        fm_requant rq

    ctypedef struct fm_s8_network:
        const fm_s8_kernels *kernels
        const fm_s8_op *ops
        size_t num_ops
        size_t input_values
        size_t workspace_bytes

    size_t fm_network_s8_init(fm_s8_network *net) noexcept nogil
    int fm_network_s8_threads(const fm_s8_network *net, size_t images, int max_threads) noexcept nogil
    size_t fm_network_s8_run(const fm_s8_network *net, float *out, const void *input, int in_is_u8, size_t images,
                             uint8_t *workspace, int threads, void *const *taps) noexcept nogil

_INT8_COMPUTING = (Dense, Conv2D, MaxPool2D, Activation)


def int8_isa_names() -> list:
    """Every int8 kernel path, compiled here or not."""
    return [fm_s8_isa_name(<fm_s8_isa>i).decode() for i in range(FM_S8_ISA_COUNT)]


def compiled_int8_isas() -> list:
    return [name for i, name in enumerate(int8_isa_names()) if fm_s8_isa_compiled(<fm_s8_isa>i)]


def supported_int8_isas() -> list:
    return [name for i, name in enumerate(int8_isa_names()) if fm_s8_isa_supported(<fm_s8_isa>i)]


def best_int8_isa() -> str:
    return fm_s8_isa_name(fm_s8_isa_best()).decode()


cdef cnp.ndarray _aligned_bytes(size_t count):
    """A zeroed uint8 array of `count` bytes starting on a cache line."""
    raw = np.zeros(count + 64, np.uint8)
    cdef size_t skip = (0 - <size_t>cnp.PyArray_DATA(raw)) % 64
    return raw[skip:skip + count]


def _padded_channels(values, dtype) -> np.ndarray:
    """Per-channel values padded with zeros to whole vectors of the widest int8 path."""
    values = np.asarray(values)
    padded = np.zeros((len(values) + FM_S8_CHANNEL_ALIGN - 1) // FM_S8_CHANNEL_ALIGN * FM_S8_CHANNEL_ALIGN, dtype)
    padded[:len(values)] = values
    return padded


cdef class Int8Network(Network):
    """An int8 model prepared for one int8 instruction set; the same interface as Network (which it extends
    for its Python-visible attributes; the float executor is not used)."""
    cdef fm_s8_network qnet
    cdef fm_s8_op *qops
    cdef readonly tuple op_quantizations  # each op's output (scale, zero point); None for the probabilities

    def __cinit__(self, *args, **kwargs):
        self.qops = NULL

    def __dealloc__(self):
        free(self.qops)

    def __init__(self, model, str isa, int max_threads):
        if isa not in supported_int8_isas():
            raise ValueError(f"int8 instruction set {isa!r} is not available here; available: "
                             f"{', '.join(supported_int8_isas())}")
        if max_threads < 1:
            raise ValueError(f"num_threads is {max_threads}, expected at least 1")
        cdef int isa_code = int8_isa_names().index(isa)
        cdef const fm_s8_kernels *kernels = fm_s8_kernels_for(<fm_s8_isa>isa_code)
        self.isa, self.max_threads, self.num_classes = isa, max_threads, model.num_classes
        self.owners, self.free_workspaces = [], []
        _check_shapes_chain(model)
        num_ops = sum(isinstance(p.layer, _INT8_COMPUTING) for p in model.layers)
        self.qops = <fm_s8_op *>calloc(max(num_ops, 1), sizeof(fm_s8_op))
        if self.qops == NULL:
            raise MemoryError()
        q = input_quantization(model.input_range)
        last = max(i for i, p in enumerate(model.layers) if not isinstance(p.layer, Dropout))
        layer_ops, op_shapes, quantizations = [], [], []
        for i, planned in enumerate(model.layers):
            if isinstance(planned.layer, _INT8_COMPUTING):
                self._prepare_int8_op(&self.qops[len(op_shapes)], planned, q, i == last, kernels)
                op_shapes.append(planned.output_shape)
                q = output_quantization(planned.layer, planned.params, q)
                quantizations.append(None if i == last else (q.scale, q.zero_point))
            layer_ops.append(len(op_shapes) - 1)
        self.op_shapes, self.layer_ops, self.op_quantizations = tuple(op_shapes), tuple(layer_ops), tuple(quantizations)
        self.qnet.kernels, self.qnet.ops, self.qnet.num_ops = kernels, self.qops, len(op_shapes)
        self.qnet.input_values = INPUT_VALUES
        fm_network_s8_init(&self.qnet)

    cdef const void *_hold(self, cnp.ndarray array):
        """Hold `array` (C-contiguous) for as long as the network lives; the ops point into it."""
        self.owners.append(array)
        return cnp.PyArray_DATA(array)

    cdef _prepare_int8_op(self, fm_s8_op *op, planned, q, bint is_output, const fm_s8_kernels *kernels):
        layer, params = planned.layer, planned.params
        cdef fm_window *w = &op.window
        w.in_h, w.in_w, w.in_c = _image_shape(planned.input_shape)
        w.out_h, w.out_w, w.out_c = _image_shape(planned.output_shape)
        op.in_zero_point = q.zero_point
        cdef cnp.ndarray packed, kernel
        if isinstance(layer, (Conv2D, MaxPool2D)):
            window = layer.kernel_size if isinstance(layer, Conv2D) else layer.pool_size
            w.k_h, w.k_w = window
            w.stride_y, w.stride_x = layer.strides
            (w.pad_top, _), (w.pad_left, _) = explicit_pads(planned.input_shape[:2], window, layer.strides,
                                                           layer.padding)
        if isinstance(layer, MaxPool2D):
            op.kind = FM_S8_OP_MAXPOOL2D
            return
        if isinstance(layer, Activation):
            op.kind = FM_S8_OP_LOOKUP
            op.rq.table = <const uint8_t *>self._hold(np.ascontiguousarray(params["table"], np.uint8))
            return
        kernel = np.ascontiguousarray(params["kernel"], np.int8)
        if isinstance(layer, Dense):
            op.kind = FM_S8_OP_DENSE
            packed = _aligned_bytes(kernels.dense_packed_size(w.in_c, w.out_c))
            kernels.dense_pack(<int8_t *>cnp.PyArray_DATA(packed), <const int8_t *>cnp.PyArray_DATA(kernel),
                               w.in_c, w.out_c)
        else:
            op.kind = FM_S8_OP_CONV2D
            packed = _aligned_bytes(kernels.conv2d_packed_size(w))
            kernels.conv2d_pack(<int8_t *>cnp.PyArray_DATA(packed), <const int8_t *>cnp.PyArray_DATA(kernel), w)
        op.kernel = <const int8_t *>self._hold(packed)
        bias = params["bias"].astype(np.int64) if "bias" in params else np.zeros(w.out_c, np.int64)
        # the fast paths add in_zero_point * sum(kernel) once here instead of subtracting it from every input
        folded = bias - q.zero_point * kernel.reshape(-1, w.out_c).astype(np.int64).sum(axis=0)
        op.bias = <const int32_t *>self._hold(_padded_channels(bias, np.int32))
        op.folded_bias = <const int32_t *>self._hold(_padded_channels(folded, np.int32))
        if is_output:
            op.rq.dequantize = <const float *>self._hold(_padded_channels(dequantize_scales(params, q), np.float32))
            return
        rq = requantization(layer, params, q)
        op.rq.multiplier = <const int32_t *>self._hold(_padded_channels(rq.multiplier, np.int32))
        op.rq.shift = <const int32_t *>self._hold(_padded_channels(rq.shift, np.int32))
        op.rq.mask = <const int32_t *>self._hold(_padded_channels((1 << rq.shift.astype(np.int64)) - 1, np.int32))
        op.rq.zero_point, op.rq.lo, op.rq.hi = rq.zero_point, rq.lo, 255
        if rq.table is not None:
            op.rq.table = <const uint8_t *>self._hold(np.ascontiguousarray(rq.table, np.uint8))

    cdef cnp.ndarray _take_int8_workspace(self):
        # as in Network: the test and the pop run under the GIL with no Python code between them
        if self.free_workspaces:
            return self.free_workspaces.pop()
        return _aligned_bytes(self.max_threads * self.qnet.workspace_bytes)

    def predict_proba(self, images, out=None):
        """(n, classes) float32 probabilities, as Network.predict_proba; the int8 kernels compute them."""
        cdef size_t n
        cdef cnp.ndarray pixels = _as_pixels(images, &n)
        cdef cnp.ndarray result = self._output(out, n)
        if n == 0:
            return result
        cdef int threads = fm_network_s8_threads(&self.qnet, n, self.max_threads)
        cdef cnp.ndarray workspace = self._take_int8_workspace()
        cdef int is_u8 = cnp.PyArray_TYPE(pixels) == cnp.NPY_UINT8
        cdef size_t bad_pixel, bad
        with nogil:
            bad_pixel = fm_network_s8_run(&self.qnet, <float *>cnp.PyArray_DATA(result), cnp.PyArray_DATA(pixels),
                                          is_u8, n, <uint8_t *>cnp.PyArray_DATA(workspace), threads, NULL)
            bad = fm_first_outside_unit(<const float *>cnp.PyArray_DATA(result), n * self.num_classes)
        self.free_workspaces.append(workspace)
        _check_pixels(pixels, bad_pixel, n)
        if bad < n * self.num_classes:
            raise FloatingPointError(f"the model's scales overflow float32 for image {bad // self.num_classes}: "
                                     "its probabilities are not finite")
        return result

    def threads_for(self, size_t images) -> int:
        """The threads predict_proba runs a batch of `images` on: split between them by images, or, for a
        batch smaller than twice their count, each op split between them (a team)."""
        return fm_network_s8_threads(&self.qnet, images, self.max_threads)

    def quantized_op_outputs(self, images) -> list:
        """Each op's output for `images` as the kernels hold it: uint8 arrays (n, *op shape), and float32
        probabilities for the last op; one thread."""
        cdef size_t n
        cdef cnp.ndarray pixels = _as_pixels(images, &n)
        outputs = [np.empty((n, *shape), np.uint8 if quantization is not None else np.float32)
                   for shape, quantization in zip(self.op_shapes, self.op_quantizations)]
        if n == 0:
            return outputs
        cdef void **taps = <void **>calloc(len(outputs), sizeof(void *))
        if taps == NULL:
            raise MemoryError()
        for i, array in enumerate(outputs):
            taps[i] = cnp.PyArray_DATA(array)
        cdef cnp.ndarray result = np.empty((n, self.num_classes), np.float32)
        cdef cnp.ndarray workspace = self._take_int8_workspace()
        cdef int is_u8 = cnp.PyArray_TYPE(pixels) == cnp.NPY_UINT8
        cdef size_t bad_pixel
        with nogil:
            bad_pixel = fm_network_s8_run(&self.qnet, <float *>cnp.PyArray_DATA(result), cnp.PyArray_DATA(pixels),
                                          is_u8, n, <uint8_t *>cnp.PyArray_DATA(workspace), 1, taps)
        free(taps)
        self.free_workspaces.append(workspace)
        _check_pixels(pixels, bad_pixel, n)
        return outputs

    def op_outputs(self, images) -> list:
        """Each op's output for `images`, dequantized: float32 scale * (q - zero_point)."""
        return [output if quantization is None
                else np.float32(quantization[0]) * (output.astype(np.float32) - np.float32(quantization[1]))
                for output, quantization in zip(self.quantized_op_outputs(images), self.op_quantizations)]
