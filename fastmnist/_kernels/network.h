/* The forward pass of a whole model in one call: the op list, the workspace, tiles of images and threads. */
#ifndef FM_NETWORK_H
#define FM_NETWORK_H

#include "common.h"
#include "dispatch.h"

typedef enum {
    FM_OP_DENSE = 0,
    FM_OP_CONV2D = 1,
    FM_OP_MAXPOOL2D = 2,
    FM_OP_BATCHNORM = 3,
    FM_OP_ACTIVATION = 4,
    FM_OP_DEPTHWISE_CONV2D = 5,
    FM_OP_AVGPOOL2D = 6,
    FM_OP_GLOBAL_AVGPOOL2D = 7, /* (h, w, c) -> (1, 1, c) */
    FM_OP_GLOBAL_MAXPOOL2D = 8,
    FM_OP_ZEROPAD2D = 9,
} fm_op_kind;

/* One computing layer. Shapes are per image in `window`: a dense layer is in_c -> out_c with h = w = 1;
 * batchnorm and activation keep their shape (in_* == out_*), on a vector or a map. Flatten and dropout need
 * no op. */
typedef struct {
    fm_op_kind kind;
    fm_activation activation; /* dense, conv2d, depthwise_conv2d, activation */
    fm_window window;
    const float *weights;     /* dense, conv2d, depthwise_conv2d: kernel packed by the kernels' pack function;
                                 batchnorm: scale */
    const float *bias;        /* dense, conv2d, depthwise_conv2d: bias padded with zeros to FM_BIAS_ALIGN;
                                 batchnorm: shift */
    int count_include_pad;    /* avgpool2d */
} fm_op;

#define FM_BIAS_ALIGN 64 /* a multiple of every ISA's panel width */

typedef struct {
    /* set by the caller */
    const fm_kernels *kernels;
    const fm_op *ops;
    size_t num_ops;
    size_t input_values;   /* 784 */
    float input_offset;    /* model input = input_offset + input_scale * pixel, for a pixel in [0, 1] */
    float input_scale;
    /* derived by fm_network_init */
    size_t first_vector_op; /* ops before it (up to the last that takes an image) run image by image */
    size_t tile;            /* images per tile in the vector stage */
    size_t spatial_values;  /* the largest spatial-stage activation of one image */
    size_t padded_values;   /* the largest padded conv2d or depthwise_conv2d input of one image */
    size_t vector_values;   /* the largest vector-stage activation of one image */
    size_t active_values;   /* the kernels' scratch for listing nonzero inputs (uint32 entries) */
    size_t macs_per_image;
    size_t dense_weight_bytes;
    size_t workspace_values; /* per thread */
} fm_network;

/* Derives the fields above from the ops; returns the floats of workspace one thread needs. */
size_t fm_network_init(fm_network *net);

/* The thread count that pays for `images` images, at most max_threads (1 when OpenMP is absent). */
int fm_network_threads(const fm_network *net, size_t images, int max_threads);

/* out (images, classes) = the model applied to `in` (images, input_values), uint8 (0..255) when in_is_u8,
 * else float32. Returns the index of the first float value that is NaN or outside [0, 1], where the outputs
 * mean nothing, or images * input_values when there is none. `workspace` holds `threads` times the floats
 * fm_network_init returned (each thread needs its own scratch, even in a team). `taps`, when not NULL,
 * gives each op a buffer (images, op outputs) to receive its output, for inspection; it forces one thread.
 * Releasing the GIL is the caller's business. */
size_t fm_network_run(const fm_network *net, float *out, const void *in, int in_is_u8, size_t images,
                      float *workspace, int threads, float *const *taps);

/* The index of the first value that is NaN or outside [0, 1], or `count` if there is none. */
size_t fm_first_outside_unit(const float *x, size_t count);

#endif
