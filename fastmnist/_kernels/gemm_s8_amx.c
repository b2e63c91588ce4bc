/* The AMX-INT8 paths of dense and conv2d: one TDPBUSD multiplies a 16 x 64 tile of uint8 inputs by a 64 x 16
 * tile of int8 weights into 16 x 16 int32 sums, 16,384 products (a VPDPBUSD makes 64). Same integers as
 * every path: int32 sums of exact products, then requantize.h's requantization (simd_s8.h's vector form).
 *
 * Weights in the AVX-512 VNNI packing (dense_s8_simd.c): panel by panel of 16 columns, each panel's groups
 * of 4 inputs in order and padded to a multiple of 16, so 16 groups of a panel are one contiguous 1 KB weight
 * tile. A register block is 2 x 2 accumulator tiles (32 rows x 32 columns), so each input and weight tile
 * loaded serves two products, and a pair of panels' weights (2 KB per 64 inputs) stays in L1 across the row
 * blocks.
 * dense: rows in blocks of 16; the rows past the last whole block (and a batch of fewer than 16) go to the
 * AVX-512 VNNI kernel, which reads the same packing and skips zero inputs. No zero skipping here: a tile is
 * cheaper to multiply than to test.
 * conv2d: the patches of an image are copied into rows (im2col, taps padded to 64 with zeros), then the
 * same tile product against the kernel packed as a dense (taps x out_c) matrix. */
/* every CPU with AMX has VBMI's byte permutes (fm_s8_isa_supported checks), which lookup activations use */
#pragma GCC target("avx512vbmi")
#include <immintrin.h>
#include <string.h>

#include "conv2d.h"
#include "conv2d_s8.h"
#include "dense_s8.h"
#include "simd_s8.h"

#define TILE_ROWS 16
#define K_STEP 64 /* bytes of a tile row: 16 groups of 4 inputs */
#define TILE_BYTES (TILE_ROWS * K_STEP)
#define BLOCK 2 /* accumulator tiles per side of a register block */
#define SHORT_ROW 64 /* a kernel row of at most this many bytes is copied as one vector (FM_CONV2D_S8_SLACK) */

_Static_assert(FM_DENSE_S8_GROUP_ALIGN * 4 == K_STEP, "a panel's groups come in whole weight tiles");

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }
static size_t padded_columns(size_t out_dim) { return round_up(out_dim, 16); }

/* Every tile 16 rows of 64 bytes: tiles 0-3 accumulate, 4-5 hold inputs, 6-7 weights. */
static void configure_tiles(void)
{
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t bytes_per_row[16];
        uint8_t rows[16];
    } config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++)
        config.bytes_per_row[t] = K_STEP, config.rows[t] = TILE_ROWS;
    _tile_loadconfig(&config);
}

/* acc[32][32]: accumulator tile (i, j) of rows 16 i of `a` (stride a_stride, k_steps * 64 bytes) times panel
 * j of `panel` (k_steps weight tiles each, one after the other), for i < m_tiles and j < n_tiles (1 or 2). */
static void tile_product(int32_t acc[BLOCK * TILE_ROWS][BLOCK * 16], const uint8_t *a, size_t a_stride,
                         const int8_t *panel, size_t m_tiles, size_t n_tiles, size_t k_steps)
{
    const uint8_t *a1 = a + TILE_ROWS * a_stride;
    const int8_t *b1 = panel + k_steps * TILE_BYTES;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (size_t s = 0; s < k_steps; s++) {
        _tile_loadd(4, a + s * K_STEP, a_stride);
        _tile_loadd(6, panel + s * TILE_BYTES, K_STEP);
        _tile_dpbusd(0, 4, 6);
        if (n_tiles > 1) {
            _tile_loadd(7, b1 + s * TILE_BYTES, K_STEP);
            _tile_dpbusd(1, 4, 7);
        }
        if (m_tiles > 1) {
            _tile_loadd(5, a1 + s * K_STEP, a_stride);
            _tile_dpbusd(2, 5, 6);
            if (n_tiles > 1)
                _tile_dpbusd(3, 5, 7);
        }
    }
    const size_t c_stride = BLOCK * 16 * sizeof(int32_t);
    _tile_stored(0, &acc[0][0], c_stride);
    _tile_stored(1, &acc[0][16], c_stride);
    _tile_stored(2, &acc[TILE_ROWS][0], c_stride);
    _tile_stored(3, &acc[TILE_ROWS][16], c_stride);
}

/* Rows [0, rows) of acc plus the bias, requantized into output row `first_row + r` (stride out_stride). Column
 * by column, so that a column's bias and requantization constants serve every row. */
static void store_rows(void *out, size_t first_row, size_t out_stride, int32_t acc[BLOCK * TILE_ROWS][BLOCK * 16],
                       size_t rows, const int32_t *bias, size_t n0, size_t n_tiles, size_t out_dim,
                       const fm_requant *rq)
{
    const fm_requant local = *rq; /* a copy the byte stores cannot alias, so its fields stay in registers */
    for (size_t j = 0; j < n_tiles && n0 + 16 * j < out_dim; j++) {
        const size_t n = n0 + 16 * j, count = out_dim - n < 16 ? out_dim - n : 16;
        const __m512i column_bias = _mm512_loadu_si512(bias + n);
        for (size_t r = 0; r < rows; r++) {
            const fm_s8_acc sums = _mm512_add_epi32(_mm512_load_si512(&acc[r][16 * j]), column_bias);
            if (count == 16) /* a constant count: whole-vector stores */
                fm_s8_store(out, (first_row + r) * out_stride + n, sums, n, 16, &local);
            else
                fm_s8_store(out, (first_row + r) * out_stride + n, sums, n, count, &local);
        }
    }
}

/* out rows = a's `rows` rows (stride a_stride, k_steps * 64 bytes, readable up to a whole tile of rows) times
 * the packed weights' columns [col_begin, col_end) (col_begin a multiple of 16). */
static void product(void *out, size_t out_stride, const uint8_t *a, size_t a_stride, size_t rows, const int8_t *packed,
                    const int32_t *bias, size_t k_steps, size_t out_dim, size_t col_begin, size_t col_end,
                    const fm_requant *rq)
{
    const size_t last_column = padded_columns(col_end), panel_bytes = k_steps * TILE_BYTES;
    const size_t m_tiles_total = (rows + TILE_ROWS - 1) / TILE_ROWS;
    int32_t acc[BLOCK * TILE_ROWS][BLOCK * 16] __attribute__((aligned(64)));
    configure_tiles();
    for (size_t n0 = col_begin; n0 < last_column; n0 += BLOCK * 16) { /* a pair of panels stays in L1 */
        const size_t n_tiles = (last_column - n0) / 16 < BLOCK ? (last_column - n0) / 16 : BLOCK;
        for (size_t m = 0; m < m_tiles_total; m += BLOCK) {
            const size_t m_tiles = m_tiles_total - m < BLOCK ? m_tiles_total - m : BLOCK, m0 = m * TILE_ROWS;
            tile_product(acc, a + m0 * a_stride, a_stride, packed + n0 / 16 * panel_bytes, m_tiles, n_tiles, k_steps);
            store_rows(out, m0, out_stride, acc, rows - m0 < BLOCK * TILE_ROWS ? rows - m0 : BLOCK * TILE_ROWS, bias,
                       n0, n_tiles, out_dim, rq);
        }
    }
    _tile_release();
}

size_t fm_dense_s8_packed_size__amx(size_t in_dim, size_t out_dim)
{
    return fm_dense_s8_packed_size__avx512vnni(in_dim, out_dim);
}

void fm_dense_s8_pack__amx(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim)
{
    fm_dense_s8_pack__avx512vnni(packed, kernel, in_dim, out_dim);
}

void fm_dense_s8_columns__amx(void *out, const uint8_t *in, const int8_t *packed, const int32_t *folded_bias,
                              size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                              size_t col_begin, size_t col_end, const fm_requant *rq, uint32_t *scratch)
{
    /* A tile row reads round_up(in_dim, 64) bytes: past a row's end into the next one (times zero weights),
     * but never past the last row, which may end the caller's array. */
    const size_t row_bytes = round_up(in_dim, K_STEP);
    size_t whole = rows / TILE_ROWS * TILE_ROWS;
    if (whole == rows && whole > 0 && row_bytes > in_stride)
        whole -= TILE_ROWS;
    if (whole)
        product(out, out_stride, in, in_stride, whole, packed, folded_bias, row_bytes / K_STEP, out_dim, col_begin,
                col_end, rq);
    if (whole < rows) {
        const size_t element = rq->dequantize ? sizeof(float) : 1;
        fm_dense_s8_columns__avx512vnni((char *)out + whole * out_stride * element, in + whole * in_stride, packed,
                                        folded_bias, rows - whole, in_dim, in_stride, out_dim, out_stride, col_begin,
                                        col_end, rq, scratch);
    }
}

static size_t conv_taps(const fm_window *w) { return w->k_h * w->k_w * w->in_c; }

size_t fm_conv2d_s8_packed_size__amx(const fm_window *w)
{
    return fm_dense_s8_packed_size__avx512vnni(conv_taps(w), w->out_c);
}

/* The kernel as a dense (taps, out_c) matrix (its HWIO layout is one), packed as dense's. */
void fm_conv2d_s8_pack__amx(int8_t *packed, const int8_t *kernel, const fm_window *w)
{
    fm_dense_s8_pack__avx512vnni(packed, kernel, conv_taps(w), w->out_c);
}

void fm_conv2d_s8__amx(uint8_t *out, const uint8_t *padded, const int8_t *packed, const int32_t *folded_bias,
                       const fm_window *w, size_t row_begin, size_t row_end, const fm_requant *rq, uint32_t *scratch)
{
    const size_t row_values = fm_conv2d_padded_w(w) * w->in_c, window_row = w->k_w * w->in_c;
    const size_t taps = conv_taps(w), stride = round_up(taps, K_STEP);
    const size_t pixels = (row_end - row_begin) * w->out_w;
    uint8_t *rows = (uint8_t *)scratch; /* im2col: one row of taps per output pixel, whole tiles of rows */
    for (size_t p = 0; p < pixels; p++) {
        const size_t out_y = row_begin + p / w->out_w, out_x = p % w->out_w;
        const uint8_t *window = padded + out_y * w->stride_y * row_values + out_x * w->stride_x * w->in_c;
        if (window_row <= SHORT_ROW) /* one vector per kernel row, the bytes past it overwritten next */
            for (size_t k_y = 0; k_y < w->k_h; k_y++)
                memcpy(rows + p * stride + k_y * window_row, window + k_y * row_values, SHORT_ROW);
        else
            for (size_t k_y = 0; k_y < w->k_h; k_y++)
                memcpy(rows + p * stride + k_y * window_row, window + k_y * row_values, window_row);
        memset(rows + p * stride + taps, 0, stride - taps); /* times zero weights, but never uninitialised */
    }
    memset(rows + pixels * stride, 0, (round_up(pixels, TILE_ROWS) - pixels) * stride);
    product(out + row_begin * w->out_w * w->out_c, w->out_c, rows, stride, pixels, packed, folded_bias,
            stride / K_STEP, w->out_c, 0, w->out_c, rq);
}
