# The C API of the kernels (fastmnist/_kernels/*.h), as the Cython layer sees it.

cdef extern from "_kernels/common.h":
    ctypedef enum fm_activation_kind:
        FM_ACT_LINEAR
        FM_ACT_RELU
        FM_ACT_ELU
        FM_ACT_SELU
        FM_ACT_TANH
        FM_ACT_SIGMOID
        FM_ACT_HARD_SIGMOID
        FM_ACT_SILU
        FM_ACT_GELU
        FM_ACT_GELU_TANH
        FM_ACT_SOFTPLUS
        FM_ACT_SOFTMAX

    ctypedef struct fm_activation:
        fm_activation_kind kind
        float alpha, beta, gamma

    ctypedef struct fm_window:
        size_t in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_y, stride_x, pad_top, pad_left

cdef extern from "_kernels/cpu.h":
    ctypedef enum fm_isa:
        FM_ISA_SCALAR
        FM_ISA_COUNT
    const char *fm_isa_name(fm_isa isa) noexcept nogil
    int fm_isa_compiled(fm_isa isa) noexcept nogil
    int fm_isa_supported(fm_isa isa) noexcept nogil
    fm_isa fm_isa_best() noexcept nogil

cdef extern from "_kernels/dispatch.h":
    ctypedef struct fm_kernels:
        fm_isa isa
        size_t (*panel_width)() noexcept nogil
        size_t (*dense_packed_size)(size_t in_dim, size_t out_dim) noexcept nogil
        void (*dense_pack)(float *packed, const float *kernel, size_t in_dim, size_t out_dim) noexcept nogil
        size_t (*conv2d_packed_size)(const fm_window *w) noexcept nogil
        void (*conv2d_pack)(float *packed, const float *kernel, const fm_window *w) noexcept nogil
        size_t (*depthwise_packed_size)(const fm_window *w) noexcept nogil
        void (*depthwise_pack)(float *packed, const float *kernel, const fm_window *w) noexcept nogil
    const fm_kernels *fm_kernels_for(fm_isa isa) noexcept nogil

cdef extern from "_kernels/dense.h":
    size_t fm_dense_packed_size_for_width(size_t in_dim, size_t out_dim, size_t panel_width) noexcept nogil
    void fm_dense_pack_f32_for_width(float *packed, const float *kernel, size_t in_dim, size_t out_dim,
                                     size_t panel_width) noexcept nogil

cdef extern from "_kernels/conv2d.h":
    size_t fm_conv2d_packed_size_for_width(const fm_window *w, size_t panel_width) noexcept nogil
    void fm_conv2d_pack_f32_for_width(float *packed, const float *kernel, const fm_window *w,
                                      size_t panel_width) noexcept nogil

cdef extern from "_kernels/depthwise_conv2d.h":
    size_t fm_depthwise_packed_size(const fm_window *w) noexcept nogil
    void fm_depthwise_pack_f32(float *packed, const float *kernel, const fm_window *w) noexcept nogil

cdef extern from "_kernels/network.h":
    ctypedef enum fm_op_kind:
        FM_OP_DENSE
        FM_OP_CONV2D
        FM_OP_MAXPOOL2D
        FM_OP_BATCHNORM
        FM_OP_ACTIVATION
        FM_OP_DEPTHWISE_CONV2D
        FM_OP_AVGPOOL2D
        FM_OP_GLOBAL_AVGPOOL2D
        FM_OP_GLOBAL_MAXPOOL2D
        FM_OP_ZEROPAD2D

    ctypedef struct fm_op:
        fm_op_kind kind
        fm_activation activation
        fm_window window
        const float *weights
        const float *bias
        int count_include_pad

    int FM_BIAS_ALIGN

    ctypedef struct fm_network:
        const fm_kernels *kernels
        const fm_op *ops
        size_t num_ops
        size_t input_values
        float input_offset
        float input_scale
        size_t tile
        size_t workspace_values

    size_t fm_network_init(fm_network *net) noexcept nogil
    int fm_network_threads(const fm_network *net, size_t images, int max_threads) noexcept nogil
    size_t fm_network_run(const fm_network *net, float *out, const void *input, int in_is_u8, size_t images,
                          float *workspace, int threads, float *const *taps) noexcept nogil
    size_t fm_first_outside_unit(const float *x, size_t count) noexcept nogil
