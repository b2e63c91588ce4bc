/* The int8 executor; see network_s8.h. Threads: a batch with enough images gives each thread its own tiles
 * and workspace; a smaller one runs on one thread (an int8 model's batch of one is a few microseconds, less
 * than a team's barriers between ops would cost on a busy machine). */
#include "network_s8.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv2d.h"
#include "conv2d_s8.h"
#include "dense_s8.h"
#include "network.h"
#include "pool_u8.h"
#include "softmax.h"

#define MAX_TILE 64
#define TILE_BUDGET_BYTES (256 * 1024) /* one vector-stage buffer of a tile */
#define MIN_MACS_PER_THREAD (2 * 1024 * 1024) /* below this a second thread costs more than it saves */

static size_t in_values(const fm_s8_op *op) { return op->window.in_h * op->window.in_w * op->window.in_c; }
static size_t out_values(const fm_s8_op *op) { return op->window.out_h * op->window.out_w * op->window.out_c; }
static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

size_t fm_network_s8_init(fm_s8_network *net)
{
    size_t spatial = 0, padded = 0, vector = net->input_values, scratch = 0, macs = 0;
    net->first_vector_op = net->num_ops;
    for (size_t i = 0; i < net->num_ops; i++) {
        const fm_s8_op *op = &net->ops[i];
        const fm_window *w = &op->window;
        const int is_spatial = op->kind == FM_S8_OP_CONV2D || op->kind == FM_S8_OP_MAXPOOL2D || w->in_h * w->in_w > 1;
        if (!is_spatial && net->first_vector_op == net->num_ops)
            net->first_vector_op = i;
        if (net->first_vector_op == net->num_ops)
            spatial = max_size(spatial, max_size(in_values(op), out_values(op)));
        else
            vector = max_size(vector, out_values(op));
        if (op->kind == FM_S8_OP_CONV2D) {
            padded = max_size(padded, fm_conv2d_s8_padded_size(w));
            scratch = max_size(scratch, fm_conv2d_s8_scratch_size(w));
            macs += out_values(op) * w->k_h * w->k_w * w->in_c;
        } else if (op->kind == FM_S8_OP_DENSE) {
            macs += w->in_c * w->out_c;
        }
    }
    if (net->first_vector_op > 0)
        vector = max_size(vector, out_values(&net->ops[net->first_vector_op - 1]));
    net->spatial_bytes = round_up(spatial, 64);
    net->padded_bytes = round_up(padded, 64);
    net->vector_stride = round_up(vector, 64);
    net->tile = min_size(MAX_TILE, max_size(1, TILE_BUDGET_BYTES / net->vector_stride));
    for (size_t i = 0; i < net->num_ops; i++)
        if (net->ops[i].kind == FM_S8_OP_DENSE)
            scratch = max_size(scratch, fm_dense_s8_scratch_size(net->tile, net->ops[i].window.in_c));
    net->scratch_entries = scratch;
    net->macs_per_image = macs;
    net->workspace_bytes = 2 * net->spatial_bytes + net->padded_bytes + 2 * net->tile * net->vector_stride +
                           round_up(scratch * sizeof(uint32_t), 64);
    return net->workspace_bytes;
}

int fm_network_s8_threads(const fm_s8_network *net, size_t images, int max_threads)
{
#ifdef _OPENMP
    const size_t useful = images * net->macs_per_image / MIN_MACS_PER_THREAD;
    return max_threads < 1 ? 1 : (int)max_size(1, min_size((size_t)max_threads, useful));
#else
    (void)net, (void)images, (void)max_threads;
    return 1;
#endif
}

typedef struct {
    uint8_t *spatial[2], *padded, *vector[2];
    uint32_t *scratch;
} workspace;

static workspace carve(const fm_s8_network *net, uint8_t *base)
{
    workspace ws;
    ws.spatial[0] = base;
    ws.spatial[1] = ws.spatial[0] + net->spatial_bytes;
    ws.padded = ws.spatial[1] + net->spatial_bytes;
    ws.vector[0] = ws.padded + net->padded_bytes;
    ws.vector[1] = ws.vector[0] + net->tile * net->vector_stride;
    ws.scratch = (uint32_t *)(ws.vector[1] + net->tile * net->vector_stride);
    return ws;
}

/* Images [first, first + images) as uint8, row r at dst + r * stride; returns the batch index of the first
 * float pixel that is NaN or outside [0, 1], or SIZE_MAX. A float pixel p becomes rint(255 p): one rounding
 * of one product, so any implementation of the format gets the same bytes. */
static size_t convert_input(const fm_s8_network *net, uint8_t *dst, size_t stride, const void *in, int in_is_u8,
                            size_t first, size_t images)
{
    const size_t n = net->input_values;
    for (size_t r = 0; r < images; r++) {
        const size_t offset = (first + r) * n;
        if (in_is_u8) {
            memcpy(dst + r * stride, (const uint8_t *)in + offset, n);
            continue;
        }
        const float *pixels = (const float *)in + offset;
        const size_t bad = fm_first_outside_unit(pixels, n);
        if (bad < n)
            return offset + bad;
        for (size_t i = 0; i < n; i++)
            dst[r * stride + i] = (uint8_t)nearbyintf(pixels[i] * 255.0f);
    }
    return SIZE_MAX;
}

static void run_dense(const fm_s8_network *net, const fm_s8_op *op, void *dst, size_t out_stride,
                      const uint8_t *src, size_t in_stride, size_t rows, uint32_t *scratch)
{
    const fm_window *w = &op->window;
    if (net->kernels->dense)
        net->kernels->dense(dst, src, op->kernel, op->folded_bias, rows, w->in_c, in_stride, w->out_c, out_stride,
                            &op->rq, scratch);
    else
        fm_dense_s8(dst, src, op->kernel, op->bias, op->in_zero_point, rows, w->in_c, in_stride, w->out_c,
                    out_stride, &op->rq);
}

/* A spatial op on one image. */
static void run_spatial(const fm_s8_network *net, const fm_s8_op *op, uint8_t *dst, const uint8_t *src,
                        workspace ws)
{
    const fm_window *w = &op->window;
    switch (op->kind) {
    case FM_S8_OP_CONV2D:
        if (net->kernels->conv2d_padded) {
            fm_conv2d_pad_u8(ws.padded, src, (uint8_t)op->in_zero_point, w, 0, fm_conv2d_padded_h(w));
            net->kernels->conv2d_padded(dst, ws.padded, op->kernel, op->folded_bias, w, 0, w->out_h, &op->rq,
                                        ws.scratch);
        } else {
            fm_conv2d_s8(dst, src, op->kernel, op->bias, op->in_zero_point, w, 0, w->out_h * w->out_w, &op->rq);
        }
        break;
    case FM_S8_OP_MAXPOOL2D:
        fm_maxpool2d_u8(dst, src, w, 0, w->out_h);
        break;
    case FM_S8_OP_LOOKUP:
        memcpy(dst, src, out_values(op));
        fm_lookup_u8(dst, out_values(op), op->rq.table);
        break;
    case FM_S8_OP_DENSE: /* on a (1, w, c) input: each of its w pixels is a row */
        run_dense(net, op, dst, w->out_c, src, w->in_c, w->in_w, ws.scratch);
        break;
    }
}

static void tap(void *const *taps, size_t op_index, size_t first, const void *values, size_t images,
                size_t stride, size_t row_bytes)
{
    if (!taps || !taps[op_index])
        return;
    for (size_t r = 0; r < images; r++)
        memcpy((uint8_t *)taps[op_index] + (first + r) * row_bytes, (const uint8_t *)values + r * stride, row_bytes);
}

static size_t run_tile(const fm_s8_network *net, float *out, const void *in, int in_is_u8, size_t first,
                       size_t images, workspace ws, void *const *taps)
{
    const size_t split = net->first_vector_op, last = net->num_ops - 1, classes = net->ops[last].window.out_c;
    size_t bad = SIZE_MAX;
    const uint8_t *vector_in = ws.vector[0];
    size_t vector_in_stride = net->vector_stride;
    if (split == 0 && in_is_u8) { /* a dense-only model reads uint8 pixels where the caller keeps them */
        vector_in = (const uint8_t *)in + first * net->input_values;
        vector_in_stride = net->input_values;
    } else if (split == 0) {
        bad = convert_input(net, ws.vector[0], net->vector_stride, in, in_is_u8, first, images);
    }
    for (size_t image = 0; image < images && split > 0; image++) {
        bad = min_size(bad, convert_input(net, ws.spatial[0], net->spatial_bytes, in, in_is_u8, first + image, 1));
        for (size_t i = 0; i < split; i++) {
            const fm_s8_op *op = &net->ops[i];
            uint8_t *dst = i + 1 == split ? ws.vector[0] + image * net->vector_stride : ws.spatial[(i + 1) % 2];
            run_spatial(net, op, dst, ws.spatial[i % 2], ws);
            tap(taps, i, first + image, dst, 1, 0, out_values(op));
        }
    }
    for (size_t i = split; i < net->num_ops; i++) {
        const fm_s8_op *op = &net->ops[i];
        const size_t j = i - split;
        const uint8_t *src = j == 0 ? vector_in : ws.vector[j % 2];
        const size_t src_stride = j == 0 ? vector_in_stride : net->vector_stride;
        uint8_t *dst = ws.vector[(j + 1) % 2];
        if (i == last) {
            run_dense(net, op, out + first * classes, classes, src, src_stride, images, ws.scratch);
            fm_softmax_f32(out + first * classes, images, classes);
            tap(taps, i, first, out + first * classes, images, classes * sizeof(float), classes * sizeof(float));
        } else if (op->kind == FM_S8_OP_DENSE) {
            run_dense(net, op, dst, net->vector_stride, src, src_stride, images, ws.scratch);
        } else { /* a lookup activation */
            for (size_t r = 0; r < images; r++) {
                memcpy(dst + r * net->vector_stride, src + r * src_stride, out_values(op));
                fm_lookup_u8(dst + r * net->vector_stride, out_values(op), op->rq.table);
            }
        }
        if (i != last)
            tap(taps, i, first, dst, images, net->vector_stride, out_values(op));
    }
    return bad;
}

size_t fm_network_s8_run(const fm_s8_network *net, float *out, const void *in, int in_is_u8, size_t images,
                         uint8_t *workspace, int threads, void *const *taps)
{
    size_t bad = SIZE_MAX;
    if (taps || threads < 1)
        threads = 1;
    if (threads > 1 && images >= 2 * (size_t)threads) {
        const size_t tile = min_size(net->tile, (images + (size_t)threads - 1) / (size_t)threads);
        const size_t tiles = (images + tile - 1) / tile;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(min : bad)
#endif
        for (size_t t = 0; t < tiles; t++) {
#ifdef _OPENMP
            const size_t tid = (size_t)omp_get_thread_num();
#else
            const size_t tid = 0;
#endif
            bad = min_size(bad, run_tile(net, out, in, in_is_u8, t * tile, min_size(tile, images - t * tile),
                                         carve(net, workspace + tid * net->workspace_bytes), taps));
        }
    } else {
        for (size_t first = 0; first < images; first += net->tile)
            bad = min_size(bad, run_tile(net, out, in, in_is_u8, first, min_size(net->tile, images - first),
                                         carve(net, workspace), taps));
    }
    return bad < images * net->input_values ? bad : images * net->input_values;
}
