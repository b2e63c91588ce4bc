/* Runs an exported model on the images of images.h through each entry point and prints, per image, the
 * class returned and the probabilities as the bits of each float in hex, which the test compares with the
 * engine. model.h names the model's entry points (MODEL_PREDICT, ...); images.h holds float images in
 * [0, 1] (FLOAT_IMAGES), byte images (BYTE_IMAGES) and invalid float images that must be refused
 * (BAD_IMAGES). Output goes to stdout, or through semihosting on a bare-metal target (SEMIHOSTING). */
#include <stdint.h>

#include "model.h"
#include "images.h"

#ifdef SEMIHOSTING
void semihosting_write(const char *text);
void semihosting_exit(void);
unsigned long stack_bytes_used(void);
#define put semihosting_write
#else
#include <stdio.h>
static void put(const char *text) { fputs(text, stdout); }
#endif

static uint32_t workspace[(MODEL_WORKSPACE_BYTES + 3) / 4];

static void put_hex(uint32_t value)
{
    char text[10];
    for (int i = 0; i < 8; i++)
        text[i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 15];
    text[8] = ' ';
    text[9] = '\0';
    put(text);
}

static void put_result(const char *entry, unsigned index, int best, const float probabilities[])
{
    put(entry);
    put(" ");
    put_hex(index);
    put_hex((uint32_t)best);
    for (int c = 0; c < MODEL_NUM_CLASSES; c++) {
        union { float f; uint32_t u; } bits;
        bits.f = probabilities[c];
        put_hex(bits.u);
    }
    put("\n");
}

int main(void)
{
    float probabilities[MODEL_NUM_CLASSES];
    for (unsigned i = 0; i < FLOAT_IMAGES; i++) {
        put_result("float", i, MODEL_PREDICT(float_images[i], probabilities), probabilities);
        put_result("reentrant", i, MODEL_PREDICT_R(float_images[i], probabilities, workspace), probabilities);
    }
    for (unsigned i = 0; i < BYTE_IMAGES; i++) {
        static float image[784]; /* static: the stack figure is the model's own */
        for (int p = 0; p < 784; p++)
            image[p] = (float)byte_images[i][p] / 255.0f;
        put_result("byte", i, MODEL_PREDICT_U8(byte_images[i], probabilities), probabilities);
        put_result("scaled", i, MODEL_PREDICT(image, probabilities), probabilities);
    }
    for (unsigned i = 0; i < BAD_IMAGES; i++) {
        put_result("refused", i, MODEL_PREDICT(bad_images[i], probabilities), probabilities);
        put_result("refused_r", i, MODEL_PREDICT_R(bad_images[i], probabilities, workspace), probabilities);
    }
#ifdef SEMIHOSTING
    put("stack ");
    put_hex((uint32_t)stack_bytes_used());
    put("\n");
#endif
    put("done\n");
#ifdef SEMIHOSTING
    semihosting_exit();
#endif
    return 0;
}
