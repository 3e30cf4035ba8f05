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
#include "fx_blockops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP_LE0

#define FX_T double
#define FX_NAME(op) op##_d
#define FX_EXP_LE0 fx_exp_le0
#include "fx_blockops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP_LE0

#endif /* FX_BLOCKOPS_H */
