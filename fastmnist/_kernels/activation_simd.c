/* Element-wise activation fast path (an `activation` layer); see activation.h. The kernels that produce
 * values fuse the same vector code (fm_activate) into their epilogues. */
#include "activation.h"
#include "simd.h"

void FM_FN(fm_activation_f32)(float *x, size_t count, fm_activation activation)
{
    if (activation.kind == FM_ACT_LINEAR || activation.kind == FM_ACT_SOFTMAX)
        return;
    size_t i = 0;
    for (; i + FM_VECTOR_WIDTH <= count; i += FM_VECTOR_WIDTH)
        fm_store(x + i, fm_activate(fm_load(x + i), activation));
    if (i < count) {
        float part[FM_VECTOR_WIDTH] = {0};
        fm_memcpy(part, x + i, (count - i) * sizeof(float));
        fm_store(part, fm_activate(fm_load(part), activation));
        fm_memcpy(x + i, part, (count - i) * sizeof(float));
    }
}
