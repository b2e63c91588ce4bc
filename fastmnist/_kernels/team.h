/* A team of OpenMP threads sharing one op: each thread takes its share of the op's items, and the team waits
 * at a barrier before the next op reads them. Both executors (network.c, network_s8.c) split small batches
 * this way. Called from inside a parallel region; without OpenMP a team is one thread. */
#ifndef FM_TEAM_H
#define FM_TEAM_H

#include <stddef.h>

/* This thread's share [begin, end) of `total` items, in chunks aligned to `align`. */
static inline void fm_team_share(size_t total, size_t align, int tid, int nth, size_t *begin, size_t *end)
{
    const size_t units = (total + align - 1) / align;
    const size_t chunk = (units + (size_t)nth - 1) / (size_t)nth * align;
    *begin = (size_t)tid * chunk < total ? (size_t)tid * chunk : total;
    *end = *begin + chunk < total ? *begin + chunk : total;
}

static inline void fm_team_barrier(int nth)
{
#ifdef _OPENMP
    if (nth > 1) {
#pragma omp barrier
    }
#else
    (void)nth;
#endif
}

#endif
