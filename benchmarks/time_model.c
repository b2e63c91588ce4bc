/* Times an exported model (benchmarks/tflite_micro.py): reads `count` digits of 784 float32 pixels from
 * the file named on the command line, then runs MODEL_PREDICT over all of them `rounds` times, printing each
 * round's nanoseconds per digit, and last the classes it found (so that no work can be left out). */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "model.h"

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    const long count = atol(argv[2]), rounds = atol(argv[3]);
    float *images = malloc((size_t)count * 784 * sizeof(float));
    FILE *f = fopen(argv[1], "rb");
    if (!images || !f || fread(images, sizeof(float) * 784, (size_t)count, f) != (size_t)count)
        return 2;
    fclose(f);
    float probabilities[MODEL_NUM_CLASSES];
    long checksum = 0;
    for (long r = 0; r < rounds; r++) {
        const double start = now_ns();
        for (long i = 0; i < count; i++)
            checksum += MODEL_PREDICT(images + i * 784, probabilities);
        printf("%.1f\n", (now_ns() - start) / (double)count);
    }
    printf("classes %ld\n", checksum);
    free(images);
    return 0;
}
