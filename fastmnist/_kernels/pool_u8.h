/* Max pooling and lookup activations on uint8 activations. Both are exact on the quantized values: a
 * positive scale keeps the order of values, and a lookup table is its own definition. */
#ifndef FM_POOL_U8_H
#define FM_POOL_U8_H

#include <stdint.h>

#include "common.h"

/* Output rows [row_begin, row_end) of one image; window positions outside the input are skipped. */
void fm_maxpool2d_u8(uint8_t *out, const uint8_t *in, const fm_window *w, size_t row_begin, size_t row_end);

/* x[i] = table[x[i]] for i < count. */
void fm_lookup_u8(uint8_t *x, size_t count, const uint8_t *table);

#endif
