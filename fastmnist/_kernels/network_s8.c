/* The int8 executor; see network_s8.h. Threads: a batch with enough images gives each thread its own tiles
 * and workspace; a smaller one that is worth several threads (a convolutional model's image) is run by a team
 * that splits each op (conv2d and pools by output rows, padding by rows, dense by output columns) with a
 * barrier between ops, as the float executor does. A small model's batch of one stays on one thread: it is a
 * few microseconds, less than the team's barriers would cost on a busy machine. */
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
#include "team.h"

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
    uint8_t *spatial[2], *padded, *vector[2]; /* shared by a team */
    uint32_t *scratch;                        /* never shared between threads */
} workspace;

/* The buffers in `base`, with the scratch from thread `tid`'s own share of the workspace. */
static workspace carve(const fm_s8_network *net, uint8_t *base, int tid)
{
    workspace ws;
    ws.spatial[0] = base;
    ws.spatial[1] = ws.spatial[0] + net->spatial_bytes;
    ws.padded = ws.spatial[1] + net->spatial_bytes;
    ws.vector[0] = ws.padded + net->padded_bytes;
    ws.vector[1] = ws.vector[0] + net->tile * net->vector_stride;
    ws.scratch = (uint32_t *)(ws.vector[1] + net->tile * net->vector_stride + (size_t)tid * net->workspace_bytes);
    return ws;
}

/* This thread's share of images [first, first + images) as uint8, row r at dst + r * stride; returns the batch
 * index of the first float pixel of its share that is NaN or outside [0, 1], or SIZE_MAX. A float pixel p
 * becomes rint(255 p): one rounding of one product, so any implementation of the format gets the same bytes. */
static size_t convert_input(const fm_s8_network *net, uint8_t *dst, size_t stride, const void *in, int in_is_u8,
                            size_t first, size_t images, int tid, int nth)
{
    const size_t n = net->input_values;
    size_t begin, end;
    fm_team_share(images * n, 64, tid, nth, &begin, &end);
    for (size_t start = begin; start < end;) {
        const size_t r = start / n, i = start % n, count = min_size(end, (r + 1) * n) - start;
        const size_t offset = (first + r) * n + i;
        uint8_t *to = dst + r * stride + i;
        if (in_is_u8) {
            memcpy(to, (const uint8_t *)in + offset, count);
        } else {
            const float *pixels = (const float *)in + offset;
            const size_t bad = fm_first_outside_unit(pixels, count);
            if (bad < count)
                return offset + bad;
            for (size_t k = 0; k < count; k++)
                to[k] = (uint8_t)nearbyintf(pixels[k] * 255.0f);
        }
        start += count;
    }
    return SIZE_MAX;
}

/* Whether thread 0 computes all of a dense op's `rows` rows whatever the team: the fast paths share out
 * whole panels of columns (one holds a 10-class output layer), the scalar path rows. */
static int one_owner(const fm_s8_network *net, const fm_s8_op *op, size_t rows)
{
    return net->kernels->dense ? op->window.out_c <= FM_DENSE_S8_COLUMN_ALIGN : rows <= 1;
}

/* This thread's share of a dense op: the fast paths' columns, the scalar path's rows. */
static void run_dense(const fm_s8_network *net, const fm_s8_op *op, void *dst, size_t out_stride,
                      const uint8_t *src, size_t in_stride, size_t rows, uint32_t *scratch, int tid, int nth)
{
    const fm_window *w = &op->window;
    size_t begin, end;
    if (net->kernels->dense) {
        fm_team_share(w->out_c, FM_DENSE_S8_COLUMN_ALIGN, tid, nth, &begin, &end);
        if (begin < end)
            net->kernels->dense(dst, src, op->kernel, op->folded_bias, rows, w->in_c, in_stride, w->out_c,
                                out_stride, begin, end, &op->rq, scratch);
    } else {
        const size_t element = op->rq.dequantize ? sizeof(float) : 1;
        fm_team_share(rows, 1, tid, nth, &begin, &end);
        if (begin < end)
            fm_dense_s8((char *)dst + begin * out_stride * element, src + begin * in_stride, op->kernel, op->bias,
                        op->in_zero_point, end - begin, w->in_c, in_stride, w->out_c, out_stride, &op->rq);
    }
}

/* This thread's share of a spatial op on one image; the caller waits for the team after it. */
static void run_spatial(const fm_s8_network *net, const fm_s8_op *op, uint8_t *dst, const uint8_t *src,
                        workspace ws, int tid, int nth)
{
    const fm_window *w = &op->window;
    size_t begin, end;
    switch (op->kind) {
    case FM_S8_OP_CONV2D:
        if (net->kernels->conv2d_padded) {
            fm_team_share(fm_conv2d_padded_h(w), 1, tid, nth, &begin, &end);
            fm_conv2d_pad_u8(ws.padded, src, (uint8_t)op->in_zero_point, w, begin, end);
            fm_team_barrier(nth); /* a row's taps reach into the padded rows of its neighbours */
            fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
            if (begin < end)
                net->kernels->conv2d_padded(dst, ws.padded, op->kernel, op->folded_bias, w, begin, end, &op->rq,
                                            ws.scratch);
        } else {
            fm_team_share(w->out_h * w->out_w, 1, tid, nth, &begin, &end);
            fm_conv2d_s8(dst, src, op->kernel, op->bias, op->in_zero_point, w, begin, end, &op->rq);
        }
        break;
    case FM_S8_OP_MAXPOOL2D:
        fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
        fm_maxpool2d_u8(dst, src, w, begin, end);
        break;
    case FM_S8_OP_LOOKUP:
        fm_team_share(out_values(op), 64, tid, nth, &begin, &end);
        memcpy(dst + begin, src + begin, end - begin);
        fm_lookup_u8(dst + begin, end - begin, op->rq.table);
        break;
    case FM_S8_OP_DENSE: /* on a (1, w, c) input: each of its w pixels is a row */
        run_dense(net, op, dst, w->out_c, src, w->in_c, w->in_w, ws.scratch, tid, nth);
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

/* Images [first, first + images) of the batch, with workspace `ws`, by thread `tid` of a team of `nth`;
 * returns convert_input's verdict on the pixels this thread read. */
static size_t run_tile(const fm_s8_network *net, float *out, const void *in, int in_is_u8, size_t first,
                       size_t images, workspace ws, int tid, int nth, void *const *taps)
{
    const size_t split = net->first_vector_op, last = net->num_ops - 1, classes = net->ops[last].window.out_c;
    size_t bad = SIZE_MAX;
    const uint8_t *vector_in = ws.vector[0];
    size_t vector_in_stride = net->vector_stride;
    if (split == 0 && in_is_u8) { /* a dense-only model reads uint8 pixels where the caller keeps them */
        vector_in = (const uint8_t *)in + first * net->input_values;
        vector_in_stride = net->input_values;
    } else if (split == 0) {
        bad = convert_input(net, ws.vector[0], net->vector_stride, in, in_is_u8, first, images, tid, nth);
        fm_team_barrier(nth);
    }
    for (size_t image = 0; image < images && split > 0; image++) {
        bad = min_size(bad, convert_input(net, ws.spatial[0], net->spatial_bytes, in, in_is_u8, first + image, 1,
                                          tid, nth));
        fm_team_barrier(nth);
        for (size_t i = 0; i < split; i++) {
            const fm_s8_op *op = &net->ops[i];
            uint8_t *dst = i + 1 == split ? ws.vector[0] + image * net->vector_stride : ws.spatial[(i + 1) % 2];
            run_spatial(net, op, dst, ws.spatial[i % 2], ws, tid, nth);
            fm_team_barrier(nth);
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
            float *logits = out + first * classes;
            size_t begin, end;
            run_dense(net, op, logits, classes, src, src_stride, images, ws.scratch, tid, nth);
            if (one_owner(net, op, images)) { /* thread 0 has every logit: no barrier */
                begin = 0, end = tid == 0 ? images : 0;
            } else {
                fm_team_barrier(nth);
                fm_team_share(images, 1, tid, nth, &begin, &end);
            }
            fm_softmax_f32(logits + begin * classes, end - begin, classes);
            tap(taps, i, first, logits, images, classes * sizeof(float), classes * sizeof(float));
        } else if (op->kind == FM_S8_OP_DENSE) {
            run_dense(net, op, dst, net->vector_stride, src, src_stride, images, ws.scratch, tid, nth);
        } else { /* a lookup activation */
            size_t begin, end;
            fm_team_share(images, 1, tid, nth, &begin, &end);
            for (size_t r = begin; r < end; r++) {
                memcpy(dst + r * net->vector_stride, src + r * src_stride, out_values(op));
                fm_lookup_u8(dst + r * net->vector_stride, out_values(op), op->rq.table);
            }
        }
        if (i != last) {
            fm_team_barrier(nth);
            tap(taps, i, first, dst, images, net->vector_stride, out_values(op));
        }
    }
    return bad;
}

size_t fm_network_s8_run(const fm_s8_network *net, float *out, const void *in, int in_is_u8, size_t images,
                         uint8_t *workspace, int threads, void *const *taps)
{
    size_t bad = SIZE_MAX;
#ifndef _OPENMP
    threads = 1;
#endif
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
                                         carve(net, workspace + tid * net->workspace_bytes, 0), 0, 1, taps));
        }
    } else if (threads == 1) { /* without entering OpenMP at all: even a team of one costs a microsecond */
        for (size_t first = 0; first < images; first += net->tile)
            bad = min_size(bad, run_tile(net, out, in, in_is_u8, first, min_size(net->tile, images - first),
                                         carve(net, workspace, 0), 0, 1, taps));
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(min : bad)
        {
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            for (size_t first = 0; first < images; first += net->tile) {
                fm_team_barrier(first > 0 ? nth : 1); /* a tile reuses the buffers that the last one read */
                bad = min_size(bad, run_tile(net, out, in, in_is_u8, first, min_size(net->tile, images - first),
                                             carve(net, workspace, tid), tid, nth, taps));
            }
        } /* the end of the parallel region: every thread's last op is done */
#endif
    }
    return bad < images * net->input_values ? bad : images * net->input_values;
}
