/* Dense fast path: register-blocked over rows (images) and a panel of FM_NR columns; see dense.h.
 *
 * Zero inputs are skipped. A block reads only the weight rows of the inputs that are nonzero in some row of
 * the block: most MNIST pixels are 0, and so are most ReLU outputs, so at batch 1 a first layer reads a fifth
 * of its weights. Skipping x = 0 changes no sum (the weights are finite), and every loop adds an output's
 * terms in the same order with the same rounding, so an image's result does not depend on its batch.
 *
 * Layout: the columns are packed in groups of GROUP_PANELS panels, and a group stores row k of all its
 * panels side by side. A block walks one panel of a group with a constant stride; a single row reads, for
 * each of its nonzero inputs, one contiguous run of a group, which is what memory serves best when the
 * inputs it needs are scattered. */
#include "dense.h"
#include "simd.h"

#define MAX_ROWS FM_DENSE_BLOCK_ROWS /* 6 rows x 2 vectors = 12 accumulators, within AVX2's 16 registers */
/* Two neighbouring blocks that skip nothing run as one, so a panel's weights come from L2 once for both: AVX-512
 * has the 32 registers for 24 accumulators. Blocks with zeros to skip keep their own lists. */
#if FM_VECTOR_WIDTH == 16
#define JOINED_ROWS (2 * MAX_ROWS)
#define WITH_ROWS FM_WITH_CONSTANT_1_TO_12
#else
#define JOINED_ROWS MAX_ROWS
#define WITH_ROWS FM_WITH_CONSTANT_1_TO_6
#endif
#define GROUP_PANELS FM_DENSE_GROUP_PANELS /* 1 row x 6 panels x 2 vectors: 12 accumulators as well */
#define GROUP (GROUP_PANELS * FM_NR)
#define PREFETCH_AHEAD 16            /* listed rows: about 0.2 us of work ahead, the latency of memory */
#define CHUNK_VALUES (64 * 1024)     /* inputs of all rows per chunk: 256 KB, which stays in L2 */

size_t FM_FN(fm_dense_panel_width)(void) { return FM_NR; }

size_t FM_FN(fm_dense_packed_size)(size_t in_dim, size_t out_dim)
{
    return fm_dense_packed_size_for_width(in_dim, out_dim, FM_NR);
}

static const float *panel_at(const float *packed, size_t in_dim, size_t out_dim, size_t col, size_t *stride)
{
    return packed + fm_dense_panel_offset(in_dim, out_dim, col, FM_NR, stride);
}

void FM_FN(fm_dense_pack_f32)(float *packed, const float *kernel, size_t in_dim, size_t out_dim)
{
    fm_dense_pack_f32_for_width(packed, kernel, in_dim, out_dim, FM_NR);
}

/* Writes the k where some of `rows` rows of `in` is nonzero to `active`; returns how many. A vector of
 * inputs at a time, and without a branch per input, as which inputs are zero is data. */
static size_t list_nonzero(uint32_t *active, const float *in, size_t rows, size_t in_dim)
{
    size_t count = 0, k = 0;
    for (; k + FM_VECTOR_WIDTH <= in_dim; k += FM_VECTOR_WIDTH) {
        fm_ivec bits = fm_load_bits(in + k);
        for (size_t r = 1; r < rows; r++)
            bits |= fm_load_bits(in + r * in_dim + k);
        count = fm_append_lanes(active, count, fm_nonzero_lanes(bits), (uint32_t)k);
    }
    for (; k < in_dim; k++) {
        int nonzero = 0;
        for (size_t r = 0; r < rows; r++)
            nonzero |= in[r * in_dim + k] != 0.0f;
        active[count] = (uint32_t)k;
        count += (size_t)nonzero;
    }
    return count;
}

/* The sums so far of one row's panel: its bias before the first chunk of inputs, then the `count` (<= FM_NR)
 * columns that `out` holds. */
FM_ALWAYS_INLINE void load_sums(fm_vec acc[2], const float *out, const float *bias, size_t col, size_t count,
                                int resume)
{
    const float *from = resume ? out + col : bias + col;
    if (!resume || count == FM_NR) {
        acc[0] = fm_load(from);
        acc[1] = fm_load(from + FM_VECTOR_WIDTH);
        return;
    }
    float sums[FM_NR] = {0};
    fm_memcpy(sums, from, count * sizeof(float));
    acc[0] = fm_load(sums);
    acc[1] = fm_load(sums + FM_VECTOR_WIDTH);
}

/* `rows` (<= JOINED_ROWS, a constant after inlining) rows times one panel, over the `count` inputs listed in
 * `active`, or over all inputs in order when `active` is NULL (a constant too, so the dense loop has no
 * indirection). `vectors`: 2, or 1 when the panel's real columns fit in its first vector (a 10-class layer on
 * AVX-512), which halves the FMAs; the same terms are added in the same order either way. `resume`: add to
 * the sums in `out` rather than start from the bias; `finish`: these are the last inputs, so apply the
 * activation. */
FM_ALWAYS_INLINE void dense_block(size_t rows, size_t vectors, float *out, const float *in, const float *panel,
                                  size_t stride, const float *bias, size_t in_dim, size_t out_dim, size_t col,
                                  fm_activation activation, const uint32_t *active, size_t count, int resume,
                                  int finish)
{
    const size_t stored = out_dim - col < FM_NR ? out_dim - col : FM_NR;
    fm_vec acc[JOINED_ROWS][2];
    for (size_t r = 0; r < rows; r++)
        load_sums(acc[r], out + r * out_dim, bias, col, stored, resume);
    for (size_t i = 0; i < count; i++) {
        const size_t k = active ? active[i] : i;
        const fm_vec w0 = fm_load(panel + k * stride);
        const fm_vec w1 = vectors == 2 ? fm_load(panel + k * stride + FM_VECTOR_WIDTH) : w0;
        for (size_t r = 0; r < rows; r++) {
            const fm_vec x = fm_broadcast(in[r * in_dim + k]);
            acc[r][0] = fm_madd(acc[r][0], x, w0);
            if (vectors == 2)
                acc[r][1] = fm_madd(acc[r][1], x, w1);
        }
    }
    for (size_t r = 0; r < rows; r++)
        fm_store_activated(out + r * out_dim + col, acc[r][0], acc[r][1], stored,
                           finish ? activation : fm_activation_linear());
}

/* One row times `panels` (<= GROUP_PANELS, a constant after inlining) neighbouring panels of a group: a
 * single row has one dependent FMA chain per vector of a panel, so panels side by side give the FMA units
 * independent work. `active` as in dense_block. */
FM_ALWAYS_INLINE void dense_row(size_t panels, float *out, const float *in, const float *panel, size_t stride,
                                const float *bias, size_t out_dim, size_t col, fm_activation activation,
                                const uint32_t *active, size_t count)
{
    fm_vec acc[GROUP_PANELS][2];
    for (size_t p = 0; p < panels; p++) {
        acc[p][0] = fm_load(bias + col + p * FM_NR);
        acc[p][1] = fm_load(bias + col + p * FM_NR + FM_VECTOR_WIDTH);
    }
    for (size_t i = 0; i < count; i++) {
        const size_t k = active ? active[i] : i;
        if (active) { /* the hardware cannot guess where the listed rows are; memory is asked for them early */
            const size_t ahead = active[i + PREFETCH_AHEAD < count ? i + PREFETCH_AHEAD : i];
            for (size_t p = 0; p < panels; p++)
                __builtin_prefetch(panel + ahead * stride + p * FM_NR);
        }
        const fm_vec x = fm_broadcast(in[k]);
        for (size_t p = 0; p < panels; p++) {
            acc[p][0] = fm_madd(acc[p][0], x, fm_load(panel + k * stride + p * FM_NR));
            acc[p][1] = fm_madd(acc[p][1], x, fm_load(panel + k * stride + p * FM_NR + FM_VECTOR_WIDTH));
        }
    }
    for (size_t p = 0; p < panels; p++) {
        const size_t first = col + p * FM_NR, stored = out_dim - first < FM_NR ? out_dim - first : FM_NR;
        fm_store_activated(out + first, acc[p][0], acc[p][1], stored, activation);
    }
}

/* Columns [col_begin, col_end) of a single row, as many panels of a group at a time as lie in the range. */
static void single_row(float *out, const float *in, const float *packed, const float *bias, size_t in_dim,
                       size_t out_dim, size_t col_begin, size_t col_end, fm_activation activation,
                       const uint32_t *active, size_t count)
{
    size_t panels;
    for (size_t col = col_begin; col < col_end; col += panels * FM_NR) {
        size_t stride;
        const float *panel = panel_at(packed, in_dim, out_dim, col, &stride);
        const size_t in_group = (col / GROUP * GROUP + stride - col) / FM_NR;
        const size_t in_range = (col_end - col + FM_NR - 1) / FM_NR;
        panels = in_group < in_range ? in_group : in_range;
#define ROW_CALL(n)                                                                                 \
    do {                                                                                            \
        if (count == in_dim)                                                                        \
            dense_row(n, out, in, panel, stride, bias, out_dim, col, activation, NULL, in_dim);    \
        else                                                                                        \
            dense_row(n, out, in, panel, stride, bias, out_dim, col, activation, active, count);   \
    } while (0)
        FM_WITH_CONSTANT_1_TO_6(panels, ROW_CALL)
#undef ROW_CALL
    }
}

/* One block of `rows` rows times one panel, over the `count` inputs of the block's list that lie in chunk
 * [k_begin, k_end) (over the whole chunk in order, when the list holds all of it). */
static void block_times_panel(size_t rows, float *out, const float *in, const float *panel, size_t stride,
                              const float *bias, size_t in_dim, size_t out_dim, size_t col,
                              fm_activation activation, const uint32_t *active, size_t count, size_t k_begin,
                              size_t k_end)
{
    const int resume = k_begin > 0, finish = k_end == in_dim;
    const size_t vectors = out_dim - col <= FM_VECTOR_WIDTH ? 1 : 2;
#define BLOCK_CALL_WITH(n, v)                                                                                  \
    do {                                                                                                       \
        if (count == k_end - k_begin)                                                                          \
            dense_block(n, v, out, in + k_begin, panel + k_begin * stride, stride, bias, in_dim, out_dim, col, \
                        activation, NULL, count, resume, finish);                                              \
        else                                                                                                   \
            dense_block(n, v, out, in, panel, stride, bias, in_dim, out_dim, col, activation, active, count,   \
                        resume, finish);                                                                       \
    } while (0)
#define BLOCK_CALL(n)                   \
    do {                                \
        if (vectors == 1)               \
            BLOCK_CALL_WITH(n, 1);      \
        else                            \
            BLOCK_CALL_WITH(n, 2);      \
    } while (0)
    WITH_ROWS(rows, BLOCK_CALL)
#undef BLOCK_CALL
#undef BLOCK_CALL_WITH
}

/* The index of the first of the `count` ascending entries of `list` that is at least `k`. */
static size_t first_at_least(const uint32_t *list, size_t count, size_t k)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (list[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Into L2, block b's share of the next panel's rows in chunk [k_begin, k_begin + length), every cache line of
 * each (a row of an AVX-512 panel is two); nothing without a next panel. */
static void prefetch_share(const float *next, size_t next_stride, size_t k_begin, size_t length, size_t b,
                           size_t blocks)
{
    for (size_t k = k_begin + b * length / blocks; next && k < k_begin + (b + 1) * length / blocks; k++)
        for (size_t line = 0; line < FM_NR; line += 64 / sizeof(float))
            __builtin_prefetch(next + k * next_stride + line, 0, 2);
}

/* The entries [start, stop) of a block's list (its length at list[-1]) that lie in chunk [k_begin, k_end). */
static void listed_in_chunk(const uint32_t *list, size_t k_begin, size_t k_end, size_t *start, size_t *stop)
{
    *start = first_at_least(list, list[-1], k_begin);
    *stop = first_at_least(list, list[-1], k_end);
}

void FM_FN(fm_dense_f32)(float *out, const float *in, const float *packed, const float *bias,
                         size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end,
                         fm_activation activation, uint32_t *active)
{
    /* each block's list is its length followed by its inputs; made once, read for every panel */
    const size_t blocks = (rows + MAX_ROWS - 1) / MAX_ROWS, list_size = in_dim + 1;
    for (size_t b = 0; b < blocks; b++) {
        const size_t first = b * MAX_ROWS, block_rows = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        uint32_t *list = active + b * list_size;
        list[0] = (uint32_t)list_nonzero(list + 1, in + first * in_dim, block_rows, in_dim);
    }
    if (rows == 1) {
        single_row(out, in, packed, bias, in_dim, out_dim, col_begin, col_end, activation, active + 1, active[0]);
        return;
    }
    /* The inputs go in chunks whose slice of every row stays in L2 while all the panels pass over it; between
     * chunks an output's sum waits in `out`, its terms still added in the same order. A panel's weights come
     * from memory once per chunk: while the blocks work on one panel, they ask for the next one's rows. */
    const size_t chunk = CHUNK_VALUES / rows > FM_VECTOR_WIDTH ? CHUNK_VALUES / rows : FM_VECTOR_WIDTH;
    for (size_t k_begin = 0; k_begin < in_dim; k_begin += chunk) {
        const size_t k_end = in_dim - k_begin < chunk ? in_dim : k_begin + chunk, length = k_end - k_begin;
        for (size_t col = col_begin; col < col_end; col += FM_NR) {
            size_t stride, next_stride = 0;
            const float *panel = panel_at(packed, in_dim, out_dim, col, &stride);
            const float *next =
                col + FM_NR < col_end ? panel_at(packed, in_dim, out_dim, col + FM_NR, &next_stride) : NULL;
            for (size_t b = 0; b < blocks; b++) {
                const size_t first = b * MAX_ROWS;
                size_t block_rows = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
                prefetch_share(next, next_stride, k_begin, length, b, blocks);
                const uint32_t *list = active + b * list_size + 1;
                size_t start, stop;
                listed_in_chunk(list, k_begin, k_end, &start, &stop);
                if (JOINED_ROWS > MAX_ROWS && stop - start == length && b + 1 < blocks) {
                    size_t next_start, next_stop;
                    listed_in_chunk(list + list_size, k_begin, k_end, &next_start, &next_stop);
                    if (next_stop - next_start == length) { /* neither skips anything: one block of both */
                        prefetch_share(next, next_stride, k_begin, length, ++b, blocks);
                        block_rows += rows - first - MAX_ROWS < MAX_ROWS ? rows - first - MAX_ROWS : MAX_ROWS;
                    }
                }
                block_times_panel(block_rows, out + first * out_dim, in + first * in_dim, panel, stride, bias,
                                  in_dim, out_dim, col, activation, list + start, stop - start, k_begin, k_end);
            }
        }
    }
}
