/*
 * fx_rowops.h: the vector loops over one row, for float and double.
 *
 * Each function here is one pass over a contiguous row; the Cython kernels (src/_kernels.pyx)
 * combine them into log-sum-exp, softmax, cross-entropy and their gradients. They live in C
 * because only C can say `#pragma omp simd`: a compiler that honours IEEE semantics (no
 * -ffast-math, which we never use) may not reorder a floating-point sum, so a plain loop's
 * max and sum reductions would stay scalar. Here each reduction keeps FX_CHUNK partial results
 * and combines them in a fixed tree at the end: the order of additions is written in the
 * source, the same for every vector width (see setup.py) and every number of threads.
 *
 * Sums are accumulated in double for float rows as well: a float sum of 10^5 terms would lose
 * up to 4 decimal digits; the widening costs little next to the exp.
 *
 * The file is a template: fx_rowops_impl.h is included once per element type.
 */
#ifndef FX_ROWOPS_H
#define FX_ROWOPS_H

#include <math.h>
#include <stddef.h>
#include "fx_exp.h"

#define FX_PRAGMA(x) _Pragma(#x)

/* Elements per chunk of the row passes (fx_rowops_impl.h): a multiple of every vector width
   (16 floats fill an AVX-512 register), and the number of partial sums a reduction keeps. */
#define FX_CHUNK 16

/* The sum of acc[0:FX_CHUNK], in a fixed tree; acc is overwritten. */
static inline double fx_chunk_sum(double *acc)
{
    for (int w = FX_CHUNK / 2; w > 0; w /= 2) {
        FX_PRAGMA(omp simd)
        for (int k = 0; k < w; ++k) {
            acc[k] += acc[k + w];
        }
    }
    return acc[0];
}

/* Most row passes (fx_rowops_impl.h) share one shape: the body, over whole chunks and then over
   the masked last chunk. FX_ROW_LOOP(n, j, BODY) runs BODY for every j in [0, n). */
#define FX_ROW_LOOP(n, j, BODY)                                                   \
    do {                                                                          \
        ptrdiff_t j0_ = 0;                                                        \
        for (; j0_ + FX_CHUNK <= (n); j0_ += FX_CHUNK) {                          \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                ptrdiff_t j = j0_ + k_;                                           \
                BODY;                                                             \
            }                                                                     \
        }                                                                         \
        FX_PRAGMA(omp simd)                                                       \
        for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                                   \
            ptrdiff_t j = j0_ + k_;                                               \
            if (j < (n)) {                                                        \
                BODY;                                                             \
            }                                                                     \
        }                                                                         \
    } while (0)

/* The sum of TERM over every j in [0, n) into a double, in chunk order (see above); masked
   lanes add 0. */
#define FX_ROW_SUM(n, j, TERM, result)                                            \
    do {                                                                          \
        double acc_[FX_CHUNK] = {0};                                              \
        ptrdiff_t j0_ = 0;                                                        \
        for (; j0_ + FX_CHUNK <= (n); j0_ += FX_CHUNK) {                          \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                ptrdiff_t j = j0_ + k_;                                           \
                acc_[k_] += (TERM);                                               \
            }                                                                     \
        }                                                                         \
        FX_PRAGMA(omp simd)                                                       \
        for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                                   \
            ptrdiff_t j = j0_ + k_;                                               \
            acc_[k_] += j < (n) ? (TERM) : 0.0;                                   \
        }                                                                         \
        (result) = fx_chunk_sum(acc_);                                            \
    } while (0)


#define FX_T float
#define FX_NAME(op) op##_f
#define FX_EXP fx_expf
#define FX_EXP_LE0 fx_expf_le0
#include "fx_rowops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP
#undef FX_EXP_LE0

#define FX_T double
#define FX_NAME(op) op##_d
#define FX_EXP fx_exp
#define FX_EXP_LE0 fx_exp_le0
#include "fx_rowops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP
#undef FX_EXP_LE0

#endif /* FX_ROWOPS_H */
