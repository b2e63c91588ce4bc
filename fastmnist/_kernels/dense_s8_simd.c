/* Int8 dense fast path: register tiles of up to 4 rows (images) times P panels of FM_S8_LANES columns, 4
 * inputs per fm_s8_dot4; see dense_s8.h.
 *
 * Zero inputs are skipped in groups of 4, the dot product's unit: a block of rows visits only the groups
 * where some row has a nonzero byte. A skipped group adds 0 to every sum, so the result is the scalar
 * path's whatever is skipped (and int32 sums do not depend on their order).
 *
 * Layout, panel by panel: packed[panel][g][j][b] = kernel[4 g + b][panel * W + fm_s8_position_output(j)] (0 past
 * in_dim and out_dim), as fm_s8_pack_weight packs it, groups padded to a multiple of FM_DENSE_S8_GROUP_ALIGN. A
 * panel's weights are one sequential stream, and with W = 16 every 16 groups of a panel are a 1 KB AMX weight
 * tile (gemm_s8_amx.c reads this packing). */
#include "dense_s8.h"
#include "simd_s8.h"

#define W FM_S8_LANES
#define MAX_ROWS FM_DENSE_S8_BLOCK_ROWS
#define MAX_PANELS 8
#define COLUMN_BLOCK (MAX_PANELS * W) /* the columns all row blocks finish before the next: their weights stay in L2 */

static size_t padded_columns(size_t out_dim) { return (out_dim + W - 1) / W * W; }
static size_t groups_of(size_t in_dim) { return (in_dim + 3) / 4; }
static size_t panel_bytes_of(size_t in_dim)
{
    return (groups_of(in_dim) + FM_DENSE_S8_GROUP_ALIGN - 1) / FM_DENSE_S8_GROUP_ALIGN * FM_DENSE_S8_GROUP_ALIGN * W * 4;
}

size_t FM_S8_FN(fm_dense_s8_packed_size)(size_t in_dim, size_t out_dim)
{
    return padded_columns(out_dim) / W * panel_bytes_of(in_dim);
}

void FM_S8_FN(fm_dense_s8_pack)(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim)
{
    const size_t panel_bytes = panel_bytes_of(in_dim);
    for (size_t panel = 0; panel < padded_columns(out_dim) / W; panel++)
        for (size_t g = 0; g < panel_bytes / (W * 4); g++)
            for (size_t j = 0; j < W; j++) {
                const size_t out_c = panel * W + fm_s8_position_output(j);
                for (size_t b = 0; b < 4; b++) {
                    const size_t in_c = 4 * g + b;
                    packed[panel * panel_bytes + (g * W + j) * 4 + b] =
                        fm_s8_pack_weight(in_c < in_dim && out_c < out_dim ? kernel[in_c * out_dim + out_c] : 0);
                }
            }
}

/* Writes the groups where some of `rows` rows is nonzero to `list`; returns how many. A vector of groups at a
 * time, then one by one (so that no read goes past a row's last group). */
static size_t list_nonzero(uint32_t *list, const uint8_t *in, size_t rows, size_t in_stride, size_t groups)
{
    const uint8_t *row[MAX_ROWS];
    for (size_t r = 0; r < rows; r++)
        row[r] = in + r * in_stride;
    size_t count = 0, g = 0;
    for (; g + W <= groups; g += W)
        for (unsigned lanes = fm_s8_nonzero_groups(row, rows, 4 * g); lanes; lanes &= lanes - 1)
            list[count++] = (uint32_t)(g + (size_t)__builtin_ctz(lanes));
    for (; g < groups; g++) {
        uint32_t bytes = 0;
        for (size_t r = 0; r < rows; r++)
            bytes |= fm_s8_load_u32(row[r] + 4 * g);
        list[count] = (uint32_t)g;
        count += bytes != 0;
    }
    return count;
}

/* `rows` x `panels` (constants after inlining) accumulators from column `col`, over the `count` groups in
 * `list`, or over every group in order when `list` is NULL (a constant too); `correction`: the rows' offset
 * corrections (simd_s8.h). */
FM_S8_INLINE void dense_tile(size_t rows, size_t panels, void *out, const uint8_t *in, size_t in_stride,
                             const int8_t *packed, size_t panel_bytes, const int32_t *bias, size_t col, size_t out_dim,
                             size_t out_stride, const fm_requant *rq, const uint32_t *list, size_t count,
                             const uint32_t *correction)
{
    fm_s8_acc acc[MAX_ROWS][MAX_PANELS];
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < panels; p++)
            acc[r][p] = fm_s8_start(bias + col + p * W, correction, r);
    const int8_t *weights = packed + col / W * panel_bytes;
    for (size_t i = 0; i < count; i++) {
        const size_t g = list ? list[i] : i;
        const int8_t *row = weights + g * W * 4;
        fm_s8_x x[MAX_ROWS];
        for (size_t r = 0; r < rows; r++)
            x[r] = fm_s8_broadcast(fm_s8_load_u32(in + r * in_stride + 4 * g));
        for (size_t p = 0; p < panels; p++) {
            const fm_s8_w w = fm_s8_load_w(row + p * panel_bytes);
            for (size_t r = 0; r < rows; r++)
                acc[r][p] = fm_s8_dot4(acc[r][p], x[r], w);
        }
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < panels; p++) {
            const size_t first = col + p * W;
            if (first < out_dim)
                fm_s8_store(out, r * out_stride + first, acc[r][p], first, out_dim - first < W ? out_dim - first : W, rq);
        }
}

/* The most panels a tile of `rows` rows holds in FM_S8_MAX_ACC accumulators. */
static size_t panels_for(size_t rows)
{
    const size_t panels = FM_S8_MAX_ACC / rows;
    return panels < 1 ? 1 : panels > MAX_PANELS ? MAX_PANELS : panels;
}

#define TILE_CALL(R, P)                                                                                       \
    do {                                                                                                      \
        if (count == groups)                                                                                  \
            dense_tile(R, P, out, in, in_stride, packed, panel_bytes, bias, col, out_dim, out_stride, rq, NULL, count, \
                       correction);                                                                           \
        else                                                                                                  \
            dense_tile(R, P, out, in, in_stride, packed, panel_bytes, bias, col, out_dim, out_stride, rq, list, count, \
                       correction);                                                                           \
    } while (0)
#define ROWS_CASE(R)                                 \
    case R:                                           \
        FM_S8_WITH_PANELS(R, panels, TILE_CALL)       \
        break;

/* Columns [col, col + panels * W) of `rows` (<= MAX_ROWS) rows. */
static void block_columns(size_t rows, size_t panels, void *out, const uint8_t *in, size_t in_stride,
                          const int8_t *packed, size_t panel_bytes, const int32_t *bias, size_t col, size_t out_dim,
                          size_t out_stride, const fm_requant *rq, const uint32_t *list, size_t count, size_t groups,
                          const uint32_t *correction)
{
    switch (rows) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4)
    default: break;
    }
}

void FM_S8_FN(fm_dense_s8)(void *out, const uint8_t *in, const int8_t *packed, const int32_t *folded_bias,
                           size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                           const fm_requant *rq, uint32_t *scratch)
{
    FM_S8_FN(fm_dense_s8_columns)(out, in, packed, folded_bias, rows, in_dim, in_stride, out_dim, out_stride, 0,
                                  out_dim, rq, scratch);
}

void FM_S8_FN(fm_dense_s8_columns)(void *out, const uint8_t *in, const int8_t *packed, const int32_t *folded_bias,
                                   size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                                   size_t col_begin, size_t col_end, const fm_requant *rq, uint32_t *scratch)
{
    const size_t groups = groups_of(in_dim), columns = padded_columns(out_dim), list_size = groups + 1 + MAX_ROWS;
    const size_t panel_bytes = panel_bytes_of(in_dim);
    const size_t last_column = col_end < out_dim ? padded_columns(col_end) : columns;
    const size_t blocks = (rows + MAX_ROWS - 1) / MAX_ROWS;
    /* each block's list is its length, its rows' offset corrections, then its groups; made once, read for
     * every column block */
    for (size_t b = 0; b < blocks; b++) {
        const size_t first = b * MAX_ROWS, block_rows = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        uint32_t *list = scratch + b * list_size;
        list[0] = (uint32_t)list_nonzero(list + 1 + MAX_ROWS, in + first * in_stride, block_rows, in_stride, groups);
        if (FM_S8_WEIGHT_OFFSET) {
            const uint8_t *row[MAX_ROWS];
            for (size_t r = 0; r < block_rows; r++)
                row[r] = in + (first + r) * in_stride;
            fm_s8_offset_corrections(list + 1, row, block_rows, list + 1 + MAX_ROWS, list[0], 4);
        }
    }
    const size_t element = rq->dequantize ? sizeof(float) : 1;
    for (size_t block_begin = col_begin; block_begin < last_column; block_begin += COLUMN_BLOCK) {
        const size_t block_end = last_column - block_begin < COLUMN_BLOCK ? last_column : block_begin + COLUMN_BLOCK;
        for (size_t b = 0; b < blocks; b++) {
            const size_t first = b * MAX_ROWS, block_rows = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
            const uint32_t *correction = scratch + b * list_size + 1, *list = correction + MAX_ROWS;
            const size_t most = panels_for(block_rows);
            for (size_t col = block_begin; col < block_end;) {
                const size_t left = (block_end - col) / W, panels = left < most ? left : most;
                block_columns(block_rows, panels, (char *)out + first * out_stride * element, in + first * in_stride,
                              in_stride, packed, panel_bytes, folded_bias, col, out_dim, out_stride, rq, list,
                              correction[-1], groups, correction);
                col += panels * W;
            }
        }
    }
}
