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
/* Whether the exp passes add four chunks' exponentials in the row type before converting them
   to double (float rows), rather than two (double rows); see fx_sumexp. */
#define FX_FOURS (sizeof(FX_T) == 4)

/* The exp passes run on a row (or a block of a long row) that the max pass has just brought
   into L1, so memory would sit idle while they compute. Each chunk therefore asks for the
   chunk one sweep ahead, x + n (at least FX_PREFETCH_MIN_BYTES ahead): in a C-ordered array
   that is the same place in the next row (or the next block), which the next max pass will
   read; the output likewise, for writing. A prefetch never faults, so past the end of an
   array, or with other strides, it only costs its issue slot. */
#ifndef FX_PREFETCH_MIN_BYTES
#define FX_PREFETCH_MIN_BYTES 1024
#endif
#define FX_PREFETCH_AHEAD(n, T)                                                   \
    ((n) * (ptrdiff_t)sizeof(T) > FX_PREFETCH_MIN_BYTES                           \
         ? (n) : FX_PREFETCH_MIN_BYTES / (ptrdiff_t)sizeof(T))
#if defined(FX_NO_PREFETCH) || !(defined(__GNUC__) || defined(__clang__))
#define FX_PREFETCH_CHUNK(p) ((void)0)
#define FX_PREFETCH_CHUNK_W(p) ((void)0)
#else
#define FX_PREFETCH_CHUNK(p)                                                      \
    do {                                                                          \
        for (size_t b_ = 0; b_ < FX_CHUNK * sizeof(*(p)); b_ += 64) {             \
            __builtin_prefetch((const char *)(p) + b_);                           \
        }                                                                         \
    } while (0)
#define FX_PREFETCH_CHUNK_W(p)                                                    \
    do {                                                                          \
        for (size_t b_ = 0; b_ < FX_CHUNK * sizeof(*(p)); b_ += 64) {             \
            __builtin_prefetch((const char *)(p) + b_, 1);                        \
        }                                                                         \
    } while (0)
#endif

/* For the small helpers that end every reduction: left to itself GCC made fx_chunk_sum a call
   inside the larger kernels, which forced the partial sums out to memory on every row. */
#if defined(__GNUC__) || defined(__clang__)
#define FX_ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FX_ALWAYS_INLINE static __forceinline
#else
#define FX_ALWAYS_INLINE static inline
#endif

/* For the long-row paths of small inlined helpers: kept out of line, they cost the short
   rows' loops that inline those helpers no registers nor code size. */
#if defined(__GNUC__) || defined(__clang__)
#define FX_NOINLINE static __attribute__((noinline))
#elif defined(_MSC_VER)
#define FX_NOINLINE static __declspec(noinline)
#else
#define FX_NOINLINE static
#endif

#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* The sum of acc[0:FX_CHUNK] (FX_CHUNK = 16), in a fixed tree of halves: h8[k] = acc[k] +
   acc[k + 8], h4[k] = h8[k] + h8[k + 4], then (h4[0] + h4[2]) + (h4[1] + h4[3]). Where the
   build has AVX2 (the AVX-512 build too), in vector registers: GCC compiled the scalar form to
   sixteen loads from the partial sums spilled to the stack and fifteen scalar additions,
   about a fifth of a row of 100 floats (perf, docs/performance.md, session 11). Same
   additions in the same order, so the same bits. Written out step by step: as a loop over
   the step width, GCC kept the tree in memory and ran it as a scalar loop, which cost a row
   of 100 classes a quarter of its time. */
FX_ALWAYS_INLINE double fx_chunk_sum(const double *acc)
{
#if defined(__AVX2__)
    const __m256d h8a = _mm256_add_pd(_mm256_loadu_pd(acc), _mm256_loadu_pd(acc + 8));
    const __m256d h8b = _mm256_add_pd(_mm256_loadu_pd(acc + 4), _mm256_loadu_pd(acc + 12));
    const __m256d h4 = _mm256_add_pd(h8a, h8b);
    const __m128d h2 = _mm_add_pd(_mm256_castpd256_pd128(h4), _mm256_extractf128_pd(h4, 1));
    return _mm_cvtsd_f64(h2) + _mm_cvtsd_f64(_mm_unpackhi_pd(h2, h2));
#else
    double h8[8], h4[4];
    for (int k = 0; k < 8; ++k) {
        h8[k] = acc[k] + acc[k + 8];
    }
    for (int k = 0; k < 4; ++k) {
        h4[k] = h8[k] + h8[k + 4];
    }
    return (h4[0] + h4[2]) + (h4[1] + h4[3]);
#endif
}

#if defined(__AVX2__)
/* The tree of fx_chunk_max (fx_rowops_impl.h) in vector registers, for the same reason:
   _mm*_max_p*(a, b) is a > b ? a : b, the tree's own expression, step by step. */
FX_ALWAYS_INLINE float fx_chunk_max_vec_f(const float *acc)
{
    const __m256 h8 = _mm256_max_ps(_mm256_loadu_ps(acc + 8), _mm256_loadu_ps(acc));
    const __m128 h4 = _mm_max_ps(_mm256_extractf128_ps(h8, 1), _mm256_castps256_ps128(h8));
    const __m128 ab = _mm_max_ps(_mm_movehl_ps(h4, h4), h4);        /* a, b in lanes 0, 1 */
    return _mm_cvtss_f32(_mm_max_ss(_mm_movehdup_ps(ab), ab));      /* b > a ? b : a */
}

FX_ALWAYS_INLINE double fx_chunk_max_vec_d(const double *acc)
{
    const __m256d h8a = _mm256_max_pd(_mm256_loadu_pd(acc + 8), _mm256_loadu_pd(acc));
    const __m256d h8b = _mm256_max_pd(_mm256_loadu_pd(acc + 12), _mm256_loadu_pd(acc + 4));
    const __m256d h4 = _mm256_max_pd(h8b, h8a);
    const __m128d ab = _mm_max_pd(_mm256_extractf128_pd(h4, 1), _mm256_castpd256_pd128(h4));
    return _mm_cvtsd_f64(_mm_max_sd(_mm_unpackhi_pd(ab, ab), ab));
}
#endif

/* Most row passes (fx_rowops_impl.h) share one shape, written once here: the body over whole
   chunks, then over the last, partial chunk.

   FX_ROW_MAP(n, j, out, VALUE, AHEAD) sets out[j] = VALUE for every j in [0, n); with AHEAD
   nonzero it also prefetches out[j + AHEAD] for writing (a pass that is the first to write a
   row: its stores would otherwise each wait for the line to come from memory);
   FX_ROW_SUM(n, j, TERM, result) sets result to the sum of TERM over j in [0, n), in double.
   VALUE and TERM read their inputs through FX_IN(p, j).

   The last partial chunk of a row of at least FX_CHUNK elements is taken as the full chunk
   that ends at n, overlapping the one before: every lane then loads real elements, in sums the
   lanes that overlap add 0. FX_ROW_MAP computes that chunk first, before the body has stored
   anything, and stores its new lanes last, from registers, with a masked store: its loads are
   unconditional and read values no store of the pass has touched. (It used to compute the
   chunk last and store back the old values of the overlapping lanes; its loads then waited
   for the body's last stores to the same bytes, which a partial overlap keeps from being
   forwarded: perf put 13% of a C = 100 softmax on that one stall, and computing the chunk
   first made softmax, log_softmax and the loss gradient 1.1-1.4x faster at C = 40 and 100,
   docs/performance.md, v8. A store masked to the new lanes of a chunk computed last let GCC
   mask the loads as well, bringing back the garbage below.) A row shorter than a chunk uses
   masked lanes, FX_IN(p, j) giving 1 past n (which keeps the scalar SSE2 code from reading
   past the row).

   Why not masked lanes everywhere: a masked load leaves whatever a register held before in its
   masked-off lanes -- GCC 12 merges into a stale register and drops any select that would pad
   them, since those lanes are never stored -- and when the garbage is a subnormal float, each
   row's last chunk pays a microcode assist of a hundred cycles or more. Cross-entropy rows of
   100 classes ran 1.7x slower than softmax rows from this alone (the MXCSR denormal flag, set
   after the call, showed it). */
#define FX_IN(p, j) (fx_live_ ? (p)[j] : 1)

#define FX_ROW_MAP(n, j, out, VALUE, AHEAD)                                       \
    do {                                                                          \
        ptrdiff_t j0_ = 0;                                                        \
        const ptrdiff_t last_ = (n) - FX_CHUNK;     /* the chunk that ends at n */   \
        const int tail_ = (n) > FX_CHUNK && (n) % FX_CHUNK != 0;                  \
        FX_T tailv_[FX_CHUNK];                                                    \
        if (tail_) {                                                              \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = last_ + k_;                                   \
                const int fx_live_ = 1;                                           \
                tailv_[k_] = (VALUE);                                             \
            }                                                                     \
        }                                                                         \
        for (; j0_ + FX_CHUNK <= (n); j0_ += FX_CHUNK) {                          \
            if (AHEAD) {                                                          \
                FX_PREFETCH_CHUNK_W((out) + j0_ + (AHEAD));                       \
            }                                                                     \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = j0_ + k_;                                     \
                const int fx_live_ = 1;                                           \
                (out)[j] = (VALUE);                                               \
            }                                                                     \
        }                                                                         \
        if (tail_) {                                                              \
            const int new_ = (int)(j0_ - last_);                                  \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                if (k_ >= new_) {                                                 \
                    (out)[last_ + k_] = tailv_[k_];                               \
                }                                                                 \
            }                                                                     \
        } else if (j0_ < (n)) {                                                   \
            const int left_ = (int)(n);             /* a row shorter than a chunk */ \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = k_;                                           \
                const int fx_live_ = k_ < left_;                                  \
                FX_T v_ = (VALUE);                                                \
                if (fx_live_) {                                                   \
                    (out)[j] = v_;                                                \
                }                                                                 \
            }                                                                     \
        }                                                                         \
    } while (0)

#define FX_ROW_SUM(n, j, TERM, result)                                            \
    do {                                                                          \
        double acc_[FX_CHUNK] = {0};                                              \
        ptrdiff_t j0_ = 0;                                                        \
        for (; j0_ + FX_CHUNK <= (n); j0_ += FX_CHUNK) {                          \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = j0_ + k_;                                     \
                const int fx_live_ = 1;                                           \
                acc_[k_] += (TERM);                                               \
            }                                                                     \
        }                                                                         \
        if (j0_ < (n) && (n) >= FX_CHUNK) {     /* the chunk that ends at n */      \
            const ptrdiff_t base_ = (n) - FX_CHUNK;                               \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = base_ + k_;                                   \
                const int fx_live_ = 1;                                           \
                double t_ = (TERM);                                               \
                acc_[k_] += j >= j0_ ? t_ : 0.0;                                  \
            }                                                                     \
        } else if (j0_ < (n)) {                 /* a row shorter than a chunk */    \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = k_;                                           \
                const int fx_live_ = j < (n);                                     \
                double t_ = (TERM);                                               \
                acc_[k_] += fx_live_ ? t_ : 0.0;                                  \
            }                                                                     \
        }                                                                         \
        (result) = fx_chunk_sum(acc_);                                            \
    } while (0)

/* FX_ROW_SUM of two terms in one pass: each read of a row serves both sums (the coefficient
   sums of a probability target read the target for both). */
#define FX_ROW_SUM2(n, j, TERM1, TERM2, result1, result2)                          \
    do {                                                                          \
        double acc1_[FX_CHUNK] = {0}, acc2_[FX_CHUNK] = {0};                      \
        ptrdiff_t j0_ = 0;                                                        \
        for (; j0_ + FX_CHUNK <= (n); j0_ += FX_CHUNK) {                          \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = j0_ + k_;                                     \
                const int fx_live_ = 1;                                           \
                acc1_[k_] += (TERM1);                                             \
                acc2_[k_] += (TERM2);                                             \
            }                                                                     \
        }                                                                         \
        if (j0_ < (n) && (n) >= FX_CHUNK) {     /* the chunk that ends at n */      \
            const ptrdiff_t base_ = (n) - FX_CHUNK;                               \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = base_ + k_;                                   \
                const int fx_live_ = 1;                                           \
                double t1_ = (TERM1), t2_ = (TERM2);                              \
                acc1_[k_] += j >= j0_ ? t1_ : 0.0;                                \
                acc2_[k_] += j >= j0_ ? t2_ : 0.0;                                \
            }                                                                     \
        } else if (j0_ < (n)) {                 /* a row shorter than a chunk */    \
            FX_PRAGMA(omp simd)                                                   \
            for (int k_ = 0; k_ < FX_CHUNK; ++k_) {                               \
                const ptrdiff_t j = k_;                                           \
                const int fx_live_ = j < (n);                                     \
                double t1_ = (TERM1), t2_ = (TERM2);                              \
                acc1_[k_] += fx_live_ ? t1_ : 0.0;                                \
                acc2_[k_] += fx_live_ ? t2_ : 0.0;                                \
            }                                                                     \
        }                                                                         \
        (result1) = fx_chunk_sum(acc1_);                                          \
        (result2) = fx_chunk_sum(acc2_);                                          \
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
