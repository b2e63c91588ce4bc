/* The forward pass of a quantized model in one call. The same two stages as the float executor
 * (network.h): spatial ops image by image, then the vector stage on tiles of images, so that a large
 * weight matrix is read once per tile. Activations are uint8 with a per-tensor zero point; the last op
 * dequantizes its accumulators to float logits and a float softmax gives the probabilities. */
#ifndef FM_NETWORK_S8_H
#define FM_NETWORK_S8_H

#include <stdint.h>

#include "common.h"
#include "dispatch_s8.h"
#include "requantize.h"

typedef enum {
    FM_S8_OP_DENSE = 0,
    FM_S8_OP_CONV2D = 1,
    FM_S8_OP_MAXPOOL2D = 2,
    FM_S8_OP_LOOKUP = 3, /* an activation layer: a 256-entry table, in place */
} fm_s8_op_kind;

typedef struct {
    fm_s8_op_kind kind;
    fm_window window;           /* per image; dense is in_c -> out_c with h = w = 1 */
    const int8_t *kernel;       /* dense, conv2d: packed by the kernels' pack function */
    const int32_t *bias;        /* the scalar path's bias (zeros without one) */
    const int32_t *folded_bias; /* the fast paths': bias - in_zero_point * sum of the kernel's column */
    int32_t in_zero_point;
    fm_requant rq;              /* dense, conv2d; for a lookup op only rq.table */
} fm_s8_op;

typedef struct {
    /* set by the caller */
    const fm_s8_kernels *kernels;
    const fm_s8_op *ops;
    size_t num_ops;         /* the last is a dense op whose rq.dequantize gives the logits */
    size_t input_values;    /* 784 */
    /* derived by fm_network_s8_init */
    size_t first_vector_op; /* ops before it take (h, w, c) images and run image by image */
    size_t tile;
    size_t spatial_bytes, padded_bytes, vector_stride, scratch_entries;
    size_t macs_per_image;
    size_t workspace_bytes; /* per thread, a multiple of 64 */
} fm_s8_network;

/* Derives the fields above from the ops; returns the bytes of workspace one thread needs. */
size_t fm_network_s8_init(fm_s8_network *net);

/* The thread count that pays for `images` images, at most max_threads (1 when OpenMP is absent). */
int fm_network_s8_threads(const fm_s8_network *net, size_t images, int max_threads);

/* out (images, classes) = the model's probabilities for `in` (images, input_values): uint8 pixels when
 * in_is_u8, else float pixels in [0, 1], each quantized to rint(255 p). Returns the index of the first float
 * pixel that is NaN or outside [0, 1] (where the outputs mean nothing), or images * input_values. `workspace`
 * holds `threads` times fm_network_s8_init's bytes, 64-byte aligned. `taps`, when not NULL, gives each op a
 * buffer (images, op outputs) of uint8 (float for the last op's probabilities); it forces one
 * thread. */
size_t fm_network_s8_run(const fm_s8_network *net, float *out, const void *in, int in_is_u8, size_t images,
                         uint8_t *workspace, int threads, void *const *taps);

#endif
