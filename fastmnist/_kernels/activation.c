#include "activation.h"

#include <math.h>

void fm_activation_f32(float *x, size_t count, fm_activation activation)
{
    if (activation == FM_ACTIVATION_RELU) {
        for (size_t i = 0; i < count; i++)
            x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    } else if (activation == FM_ACTIVATION_ELU) {
        for (size_t i = 0; i < count; i++)
            x[i] = x[i] > 0.0f ? x[i] : expm1f(x[i]); /* expm1 keeps precision near 0 */
    }
}
