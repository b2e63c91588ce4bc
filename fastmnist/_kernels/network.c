/* The executor. Two stages, because their costs differ:
 *  - spatial ops (convolutions, pools, padding and what acts on their (h, w, c) output) run one image at a
 *    time, so their activations stay in L2 whatever the batch;
 *  - the vector stage (from the first op on a flat input: dense, mostly) runs on tiles of up to `tile`
 *    images, so a large weight matrix is streamed from memory once per tile rather than once per image.
 * Threads: a batch with enough images gives each thread its own tiles and workspace; a smaller one is run by
 * the whole team, each op split by output rows or columns, with a barrier between ops (Cython's prange has no
 * barrier, which is why the threading lives here and not in the Cython layer). */
#include "network.h"

#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "activation.h"
#include "avgpool2d.h"
#include "batchnorm.h"
#include "conv2d.h"
#include "dense.h"
#include "depthwise_conv2d.h"
#include "global_pool2d.h"
#include "maxpool2d.h"
#include "team.h"
#include "zeropad2d.h"

_Static_assert(FM_BIAS_ALIGN % FM_DEPTHWISE_CHANNEL_ALIGN == 0, "depthwise fast paths load whole padded biases");

#define MAX_TILE 64
#define TILE_BUDGET_VALUES (256 * 1024)   /* one vector-stage buffer of a tile: about 1 MB */
/* Below these a second thread costs more (waking it, a barrier per op) than it saves. Weights count on their
 * own: at small batches a dense layer is bound by streaming its weights, and each thread streams only its
 * share of the columns. The bar is high because a team waits at every barrier for a thread the OS has
 * preempted: on a busy machine a 1 MB model at batch 1 averaged 6x its median with two threads. */
#define MIN_MACS_PER_THREAD (512 * 1024)
#define MIN_WEIGHT_BYTES_PER_THREAD (1024 * 1024)

static size_t in_values(const fm_op *op) { return op->window.in_h * op->window.in_w * op->window.in_c; }
static size_t out_values(const fm_op *op) { return op->window.out_h * op->window.out_w * op->window.out_c; }
static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Whether the op works on one image at a time: a sliding window or a global pool (even over a 1 x 1 map),
 * or an element-wise op on a map. */
static int takes_image(const fm_op *op)
{
    switch (op->kind) {
    case FM_OP_DENSE: return 0;
    case FM_OP_BATCHNORM:
    case FM_OP_ACTIVATION: return op->window.in_h * op->window.in_w > 1;
    default: return 1;
    }
}

size_t fm_network_init(fm_network *net)
{
    net->first_vector_op = 0;
    net->spatial_values = net->padded_values = net->macs_per_image = net->dense_weight_bytes = 0;
    net->active_values = 0;
    net->vector_values = net->input_values;
    for (size_t i = 0; i < net->num_ops; i++) /* an op after an image op still has the image's layout */
        if (takes_image(&net->ops[i]))
            net->first_vector_op = i + 1;
    for (size_t i = 0; i < net->num_ops; i++) {
        const fm_op *op = &net->ops[i];
        const fm_window *w = &op->window;
        if (i < net->first_vector_op) {
            net->spatial_values = max_size(net->spatial_values, max_size(in_values(op), out_values(op)));
        } else {
            net->vector_values = max_size(net->vector_values, out_values(op));
        }
        if (op->kind == FM_OP_CONV2D) {
            net->padded_values = max_size(net->padded_values, fm_conv2d_padded_h(w) * fm_conv2d_padded_w(w) * w->in_c);
            net->macs_per_image += out_values(op) * w->k_h * w->k_w * w->in_c;
        } else if (op->kind == FM_OP_DEPTHWISE_CONV2D) {
            net->padded_values = max_size(net->padded_values, fm_depthwise_padded_size(w));
            net->macs_per_image += out_values(op) * w->k_h * w->k_w;
        } else if (op->kind == FM_OP_DENSE) {
            net->macs_per_image += w->in_c * w->out_c;
            net->dense_weight_bytes += w->in_c * w->out_c * sizeof(float);
        }
    }
    if (net->first_vector_op > 0) /* the spatial stage's last output is the vector stage's first input */
        net->vector_values = max_size(net->vector_values, out_values(&net->ops[net->first_vector_op - 1]));
    net->tile = min_size(MAX_TILE, max_size(1, TILE_BUDGET_VALUES / net->vector_values));
    for (size_t i = 0; i < net->num_ops; i++) { /* dense ops run on tiles, conv2d on one image */
        const fm_op *op = &net->ops[i];
        if (op->kind == FM_OP_DENSE)
            net->active_values = max_size(net->active_values, fm_dense_active_size(net->tile, op->window.in_c));
        else if (op->kind == FM_OP_CONV2D)
            net->active_values = max_size(net->active_values, fm_conv2d_active_size(&op->window));
    }
    net->workspace_values = 2 * net->spatial_values + net->padded_values + 2 * net->tile * net->vector_values +
                            net->active_values;
    return net->workspace_values;
}

int fm_network_threads(const fm_network *net, size_t images, int max_threads)
{
#ifdef _OPENMP
    const size_t useful = max_size(images * net->macs_per_image / MIN_MACS_PER_THREAD,
                                   net->dense_weight_bytes / MIN_WEIGHT_BYTES_PER_THREAD);
    return max_threads < 1 ? 1 : (int)max_size(1, min_size((size_t)max_threads, useful));
#else
    (void)net, (void)images, (void)max_threads;
    return 1;
#endif
}

size_t fm_first_outside_unit(const float *x, size_t count)
{
    /* As unsigned integers the bits of +0 to 1 are 0 to 0x3f800000, and those of every negative value
     * (-0 included) and NaN are above: a block whose largest is in range is valid, found with one integer
     * max per vector. Only a block above it is searched, by float compares, where -0 is allowed. */
    const size_t block = 4096;
    for (size_t start = 0; start < count; start += block) {
        const size_t end = min_size(start + block, count);
        uint32_t largest = 0;
        for (size_t i = start; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, x + i, sizeof bits);
            largest = bits > largest ? bits : largest;
        }
        for (size_t i = start; largest > 0x3f800000u && i < end; i++)
            if (!(x[i] >= 0.0f && x[i] <= 1.0f))
                return i;
    }
    return count;
}

typedef struct {
    float *spatial[2], *padded, *vector[2];
    uint32_t *active; /* never shared between threads */
} workspace;

/* The buffers in `base`, with the scratch list from thread `tid`'s own share of the workspace. */
static workspace carve(const fm_network *net, float *base, int tid)
{
    workspace ws;
    ws.active = (uint32_t *)(base + (size_t)tid * net->workspace_values + net->workspace_values - net->active_values);
    ws.spatial[0] = base;
    ws.spatial[1] = ws.spatial[0] + net->spatial_values;
    ws.padded = ws.spatial[1] + net->spatial_values;
    ws.vector[0] = ws.padded + net->padded_values;
    ws.vector[1] = ws.vector[0] + net->tile * net->vector_values;
    return ws;
}

/* Copies `src` to `dst` (when they differ) and applies batchnorm or the activation in place there. */
static void run_elementwise(const fm_network *net, const fm_op *op, float *dst, const float *src, size_t images,
                            int tid, int nth)
{
    const size_t channels = op->window.out_c;
    const size_t positions = images * op->window.out_h * op->window.out_w;
    size_t begin, end;
    fm_team_share(positions, 1, tid, nth, &begin, &end);
    if (dst != src)
        memcpy(dst + begin * channels, src + begin * channels, (end - begin) * channels * sizeof(float));
    if (op->kind == FM_OP_BATCHNORM)
        fm_batchnorm_f32(dst, op->weights, op->bias, channels, begin, end);
    else if (op->activation.kind == FM_ACT_SOFTMAX)
        net->kernels->softmax(dst + begin * channels, end - begin, channels);
    else
        net->kernels->activation(dst + begin * channels, (end - begin) * channels, op->activation);
}

/* Whether thread 0 computes all of a dense op's columns, whatever the team: they fit in one panel, the
 * unit that fm_team_share() hands out (a 10-class output layer does). */
static int one_owner(const fm_network *net, const fm_op *op)
{
    return op->kind == FM_OP_DENSE && op->window.out_c <= net->kernels->panel_width();
}

/* One op on `images` images (always 1 for the ops that take an image), split across the team. */
static void run_op(const fm_network *net, const fm_op *op, float *dst, const float *src, size_t images,
                   workspace ws, int tid, int nth)
{
    const fm_window *w = &op->window;
    size_t begin, end;
    switch (op->kind) {
    case FM_OP_DENSE:
        fm_team_share(w->out_c, net->kernels->panel_width(), tid, nth, &begin, &end);
        if (begin < end)
            net->kernels->dense(dst, src, op->weights, op->bias, images, w->in_c, w->out_c, begin, end, op->activation,
                                ws.active);
        break;
    case FM_OP_CONV2D:
        if (net->kernels->conv2d_padded) {
            fm_team_share(fm_conv2d_padded_h(w), 1, tid, nth, &begin, &end);
            fm_conv2d_pad_f32(ws.padded, src, w, begin, end);
            fm_team_barrier(nth);
            fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
            net->kernels->conv2d_padded(dst, ws.padded, op->weights, op->bias, w, begin, end, op->activation,
                                        ws.active);
        } else {
            fm_team_share(w->out_h * w->out_w, 1, tid, nth, &begin, &end);
            fm_conv2d_f32(dst, src, op->weights, op->bias, w, begin, end, op->activation);
        }
        break;
    case FM_OP_DEPTHWISE_CONV2D:
        if (net->kernels->depthwise_padded) {
            fm_team_share(fm_conv2d_padded_h(w), 1, tid, nth, &begin, &end);
            fm_depthwise_pad_f32(ws.padded, src, w, begin, end);
            fm_team_barrier(nth);
            fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
            net->kernels->depthwise_padded(dst, ws.padded, op->weights, op->bias, w, begin, end, op->activation);
        } else {
            fm_team_share(w->out_h * w->out_w, 1, tid, nth, &begin, &end);
            fm_depthwise_conv2d_f32(dst, src, op->weights, op->bias, w, begin, end, op->activation);
        }
        break;
    case FM_OP_MAXPOOL2D:
        fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
        fm_maxpool2d_f32(dst, src, w, begin, end);
        return;
    case FM_OP_AVGPOOL2D:
        fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
        fm_avgpool2d_f32(dst, src, w, op->count_include_pad, begin, end);
        return;
    case FM_OP_GLOBAL_AVGPOOL2D:
    case FM_OP_GLOBAL_MAXPOOL2D:
        fm_team_share(w->out_c, 16, tid, nth, &begin, &end); /* whole vectors of channels for each thread */
        (op->kind == FM_OP_GLOBAL_AVGPOOL2D ? fm_global_avgpool2d_f32 : fm_global_maxpool2d_f32)(
            dst, src, w->in_h * w->in_w, w->in_c, begin, end);
        return;
    case FM_OP_ZEROPAD2D:
        fm_team_share(w->out_h, 1, tid, nth, &begin, &end);
        fm_zeropad2d_f32(dst, src, w, begin, end);
        return;
    case FM_OP_BATCHNORM:
    case FM_OP_ACTIVATION:
        run_elementwise(net, op, dst, src, images, tid, nth);
        return;
    }
    if (op->activation.kind == FM_ACT_SOFTMAX) { /* needs every column of a row */
        if (one_owner(net, op)) { /* the owner of every column needs no barrier: it takes every row */
            if (tid == 0)
                net->kernels->softmax(dst, images * w->out_h * w->out_w, w->out_c);
            return;
        }
        fm_team_barrier(nth);
        fm_team_share(images * w->out_h * w->out_w, 1, tid, nth, &begin, &end);
        net->kernels->softmax(dst + begin * w->out_c, end - begin, w->out_c);
    }
}

/* The batch index of the first float pixel of this thread's share of images [first, first + images) that
 * is NaN or outside [0, 1], or SIZE_MAX. */
static size_t check_input(const fm_network *net, const float *in, size_t first, size_t images, int tid, int nth)
{
    size_t begin, end;
    fm_team_share(images * net->input_values, 1, tid, nth, &begin, &end);
    const size_t offset = first * net->input_values + begin;
    const size_t bad = fm_first_outside_unit(in + offset, end - begin);
    return bad < end - begin ? offset + bad : SIZE_MAX;
}

/* Writes the model input of this thread's share of images [first, first + images) to `dst`; returns
 * check_input's verdict on them. Checking here, a block at a time as the pixels are converted, reads a float
 * batch from memory once instead of twice. */
static size_t convert_input(const fm_network *net, float *dst, const void *in, int in_is_u8, size_t first,
                            size_t images, int tid, int nth)
{
    size_t begin, end;
    fm_team_share(images * net->input_values, 1, tid, nth, &begin, &end);
    const size_t offset = first * net->input_values;
    if (in_is_u8) {
        const unsigned char *pixels = (const unsigned char *)in + offset;
        const float scale = net->input_scale / 255.0f;
        for (size_t i = begin; i < end; i++)
            dst[i] = net->input_offset + scale * (float)pixels[i];
        return SIZE_MAX;
    }
    const float *pixels = (const float *)in + offset;
    const size_t block = 4096; /* 16 KB: checked while it is still in L1 */
    for (size_t start = begin; start < end; start += block) {
        const size_t stop = min_size(start + block, end);
        for (size_t i = start; i < stop; i++)
            dst[i] = net->input_offset + net->input_scale * pixels[i];
        const size_t bad = fm_first_outside_unit(pixels + start, stop - start);
        if (bad < stop - start)
            return offset + start + bad;
    }
    return SIZE_MAX;
}

/* Whether a dense-only model reads a batch where the caller keeps it: float pixels that are the model input
 * as they are need no conversion, and a copy would only add a pass over the largest array of the call. */
static int reads_input_in_place(const fm_network *net, int in_is_u8)
{
    return net->first_vector_op == 0 && !in_is_u8 && net->input_offset == 0.0f && net->input_scale == 1.0f;
}

static void tap(float *const *taps, size_t op_index, const fm_op *op, size_t first, const float *values, size_t images)
{
    if (taps && taps[op_index])
        memcpy(taps[op_index] + first * out_values(op), values, images * out_values(op) * sizeof(float));
}

/* Images [first, first + images) of the batch, with workspace `ws`, by thread `tid` of a team of `nth`;
 * returns check_input's verdict on the pixels this thread read. */
static size_t run_tile(const fm_network *net, float *out, const void *in, int in_is_u8, size_t first,
                     size_t images, workspace ws, int tid, int nth, float *const *taps)
{
    const size_t last_op = net->num_ops - 1, split = net->first_vector_op;
    float *const final_out = out + first * out_values(&net->ops[last_op]);
    size_t bad = SIZE_MAX;
    const float *vector_in = ws.vector[0]; /* the vector stage's input */
    if (reads_input_in_place(net, in_is_u8)) {
        vector_in = (const float *)in + first * net->input_values;
        bad = check_input(net, in, first, images, tid, nth);
    } else if (split == 0) {
        bad = convert_input(net, ws.vector[0], in, in_is_u8, first, images, tid, nth);
        fm_team_barrier(nth);
    }
    for (size_t image = 0; image < images && split > 0; image++) {
        bad = min_size(bad, convert_input(net, ws.spatial[0], in, in_is_u8, first + image, 1, tid, nth));
        fm_team_barrier(nth);
        for (size_t i = 0; i < split; i++) {
            const fm_op *op = &net->ops[i];
            float *dst = i == last_op ? final_out + image * out_values(op)
                       : i + 1 == split ? ws.vector[0] + image * out_values(op)
                       : ws.spatial[(i + 1) % 2];
            run_op(net, op, dst, ws.spatial[i % 2], 1, ws, tid, nth);
            fm_team_barrier(nth);
            tap(taps, i, op, first + image, dst, 1);
        }
    }
    for (size_t i = split; i < net->num_ops; i++) {
        const fm_op *op = &net->ops[i];
        const size_t j = i - split; /* ping-pong between the two vector buffers */
        float *dst = i == last_op ? final_out : ws.vector[(j + 1) % 2];
        run_op(net, op, dst, j == 0 ? vector_in : ws.vector[j % 2], images, ws, tid, nth);
        if (i < last_op) /* after the last, the caller waits for the team */
            fm_team_barrier(nth);
        tap(taps, i, op, first, dst, images);
    }
    return bad;
}

size_t fm_network_run(const fm_network *net, float *out, const void *in, int in_is_u8, size_t images,
                      float *workspace, int threads, float *const *taps)
{
    size_t bad = SIZE_MAX;
    if (taps || threads < 1)
        threads = 1;
    /* A spatial model keeps a thread busy with one image; a dense-only one needs rows to amortise weights. */
    const size_t rows_per_thread = net->first_vector_op > 0 ? 1 : 16;
    if (threads > 1 && images >= (size_t)threads * rows_per_thread) {
        const size_t per_thread = (images + (size_t)threads - 1) / (size_t)threads;
        const size_t tile = min_size(net->tile, per_thread);
        const size_t tiles = (images + tile - 1) / tile;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(min : bad)
#endif
        for (size_t t = 0; t < tiles; t++) {
#ifdef _OPENMP
            const int tid = omp_get_thread_num();
#else
            const int tid = 0;
#endif
            bad = min_size(bad, run_tile(net, out, in, in_is_u8, t * tile, min_size(tile, images - t * tile),
                                         carve(net, workspace + (size_t)tid * net->workspace_values, 0), 0, 1, taps));
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
