/*
 * fx_blockops.h: passes over a block of short rows, one row per vector lane.
 *
 * Why: with few classes (C = 10, say) a row is shorter than one AVX-512 vector, so the row
 * passes of fx_rowops.h spend their time in scalar remainders and in horizontal reductions,
 * and one scalar log per row costs as much as the row's exponentials. Here a block of up to
 * FX_LANES rows is transposed into scratch (nc x FX_LANES), so that every pass, and the log,
 * works on whole vectors of rows. The Cython kernels use these passes below a threshold of C.
 */
#ifndef FX_BLOCKOPS_H
#define FX_BLOCKOPS_H

#include "fx_rowops.h"

/* Rows per block, a multiple of every vector width, and the most classes a block holds:
   the scratch of a block is FX_LANES * FX_BLOCK_CLASSES elements (a column is FX_LANES). */
#define FX_LANES 64
#define FX_BLOCK_CLASSES 128
#define FX_BLOCK_ELEMS (FX_LANES * FX_BLOCK_CLASSES)

/* log(x) for double x, vectorisable: exact at 1, within about 1 ulp elsewhere; +inf, NaN and
   0 (-> -inf) as libm. Written for the sums of exponentials (x >= 1); a subnormal x gets no
   special care. x = 2^k m with m in [sqrt(1/2), sqrt(2)), u = (m - 1) / (m + 1), and
   log(m) = 2 atanh(u) = 2u (1 + u^2/3 + u^4/5 + ...), |u| <= 0.172. */
static inline double fx_log(double x)
{
    int64_t bits = fx_double_to_bits(x);
    int64_t k = (bits - 0x3FE6A09E667F3BCDLL) >> 52;        /* bits of sqrt(1/2) */
    double m = fx_bits_to_double(bits - (k << 52));
    double u = (m - 1.0) / (m + 1.0);
    double u2 = u * u;
    double p = 1.0 / 23;
    p = p * u2 + 1.0 / 21;
    p = p * u2 + 1.0 / 19;
    p = p * u2 + 1.0 / 17;
    p = p * u2 + 1.0 / 15;
    p = p * u2 + 1.0 / 13;
    p = p * u2 + 1.0 / 11;
    p = p * u2 + 1.0 / 9;
    p = p * u2 + 1.0 / 7;
    p = p * u2 + 1.0 / 5;
    p = p * u2 + 1.0 / 3;
    double kd = (double)k;
    double r = kd * 6.93147180369123816490e-01 + (2.0 * u + (2.0 * u * u2 * p
                                                   + kd * 1.90821492927058770002e-10));
    r = x == 0.0 ? -INFINITY : r;
    r = x == INFINITY ? x : r;
    return x != x ? x : r;
}

/* Gathers: out[i] = base[idx[i]] for FX_GATHER_N(T) elements at a time, with the hardware gather
   instructions of AVX-512 or AVX2 where the build has them. They transpose a block (in
   fx_blk_load_max and fx_blk_store) twice as fast as the scalar loop GCC compiles the same
   indexing to (C micro benchmark, 65536 x 10 float32: store 0.27 -> 0.13 ms, load 0.28 ->
   0.15 ms; docs/performance.md, v7); GCC itself never emits them under its generic tuning, which
   assumes the slow gathers of the processors that patched Gather Data Sampling in microcode.
   On those, fastxent._dispatch turns them off at import (fx_use_gathers = 0). */
static int fx_use_gathers = 1;

#if defined(__AVX512F__)
#include <immintrin.h>
#define FX_GATHER_N(T) (64 / (int)sizeof(T))
static inline void fx_gather_f(const float *base, const int32_t *idx, float *out)
{
    _mm512_storeu_ps(out, _mm512_i32gather_ps(_mm512_loadu_si512((const void *)idx), base, 4));
}
static inline void fx_gather_d(const double *base, const int32_t *idx, double *out)
{
    _mm512_storeu_pd(out, _mm512_i32gather_pd(_mm256_loadu_si256((const __m256i *)idx), base, 8));
}
#elif defined(__AVX2__)
#include <immintrin.h>
#define FX_GATHER_N(T) (32 / (int)sizeof(T))
static inline void fx_gather_f(const float *base, const int32_t *idx, float *out)
{
    _mm256_storeu_ps(out, _mm256_i32gather_ps(base, _mm256_loadu_si256((const __m256i *)idx), 4));
}
static inline void fx_gather_d(const double *base, const int32_t *idx, double *out)
{
    _mm256_storeu_pd(out, _mm256_i32gather_pd(base, _mm_loadu_si128((const __m128i *)idx), 8));
}
#else
#define FX_GATHER_N(T) 0                /* no gather instructions: the scalar loops */
static inline void fx_gather_f(const float *base, const int32_t *idx, float *out)
{
    (void)base; (void)idx; (void)out;
}
static inline void fx_gather_d(const double *base, const int32_t *idx, double *out)
{
    (void)base; (void)idx; (void)out;
}
#endif

/* flat[k] = (k % nc) * FX_LANES + k / nc for k < FX_LANES * nc: where element k of a block of
   contiguous rows sits in the transposed block (see fx_blk_store). */
static inline void fx_blk_flat_index(ptrdiff_t nc, int32_t *flat)
{
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        for (ptrdiff_t j = 0; j < nc; ++j) {
            flat[r * nc + j] = (int32_t)(j * FX_LANES + r);
        }
    }
}

/* out[r] = log(s[r]) for a block. */
static inline void fx_blk_log(const double *s, ptrdiff_t nr, double *out)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < nr; ++r) {
        out[r] = fx_log(s[r]);
    }
}

#define FX_T float
#define FX_NAME(op) op##_f
#define FX_EXP_LE0 fx_expf_le0
#define FX_GATHER fx_gather_f
#include "fx_blockops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP_LE0
#undef FX_GATHER

#define FX_T double
#define FX_NAME(op) op##_d
#define FX_EXP_LE0 fx_exp_le0
#define FX_GATHER fx_gather_d
#include "fx_blockops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP_LE0
#undef FX_GATHER

#endif /* FX_BLOCKOPS_H */
