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
    int64_t k;
    double kd;
    /* k = (bits - bits of sqrt(1/2)) >> 52, an arithmetic shift, and k as a double.
       AVX-512DQ has both as one instruction each (vpsraq, vcvtqq2pd). AVX2 and SSE2 have
       neither, and GCC left this loop scalar there: a third of the AVX2 build's instructions
       in the C = 10 loss gradient (callgrind; docs/performance.md, session 16). So there the
       shift is a logical one of (bits - c) ^ 2^63, which orders as unsigned what bits - c
       orders as signed, and the conversion adds k to the mantissa of 1.5 * 2^52. The same k
       and kd either way, whatever x: for any 64-bit v, (v ^ 2^63) >> 52 taken unsigned is
       floor(v / 2^52) + 2048, and |k| <= 2048 is exact in that mantissa. */
#if defined(__AVX512DQ__)
    k = (bits - 0x3FE6A09E667F3BCDLL) >> 52;                /* bits of sqrt(1/2) */
    kd = (double)k;
#else
    k = (int64_t)(((uint64_t)(bits - 0x3FE6A09E667F3BCDLL) ^ 0x8000000000000000ULL) >> 52)
        - 2048;
    kd = fx_bits_to_double(k + 0x4338000000000000LL) - 6755399441055744.0;
#endif
    double m = fx_bits_to_double(bits - (int64_t)((uint64_t)k << 52));
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

/* Register tiles: a block transposed as square tiles of one vector's width (16 x 16 floats,
   8 x 8 doubles), each row of a tile one masked load or store of a row of the matrix and the
   transposition in registers (the textbook unpack / 128-bit-lane shuffle network: 64
   shuffles for a float tile, 24 for a double one). On AVX-512 this replaces the gathers: a
   gather of 16 elements from 16 rows cost about 17 cycles here (perf, session 5: 37% of
   log_softmax at C = 10), a tile of 16 rows by 10 classes about 60 shuffles for 10 gathers'
   work. Masked-off lanes load as zeros, so no lane computes on garbage (see the denormal trap
   of docs/performance.md, v6). Turned off for the tests' comparison by fx_use_tiles. */
static int fx_use_tiles = 1;

#if defined(__AVX512F__)
#define FX_HAS_TILES 1                  /* the tiles, and fx_rows_sub_* below */
#define FX_TILE_N(T) (64 / (int)sizeof(T))

/* r[i] lane j <-> r[j] lane i, for 16 x 16 floats. */
static inline void fx_transpose_tile_f(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {           /* pairs of rows interleaved */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {           /* 4 rows of columns 4L + k, k = 0..3 */
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int h = 0; h < 16; h += 8) {           /* 8 rows of columns k and k + 8 */
        for (int k = 0; k < 4; ++k) {
            t[h + k] = _mm512_shuffle_f32x4(u[h + k], u[h + k + 4], 0x88);
            t[h + k + 4] = _mm512_shuffle_f32x4(u[h + k], u[h + k + 4], 0xdd);
        }
    }
    for (int k = 0; k < 8; ++k) {               /* all 16 rows of column k, k + 8 */
        r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
        r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
    }
}

/* r[i] lane j <-> r[j] lane i, for 8 x 8 doubles. */
static inline void fx_transpose_tile_d(__m512d r[8])
{
    __m512d t[8], u[8];
    for (int i = 0; i < 8; i += 2) {            /* pairs of rows interleaved */
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int h = 0; h < 8; h += 4) {            /* 4 rows of columns k and k + 4 */
        u[h] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0x88);
        u[h + 1] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0x88);
        u[h + 2] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0xdd);
        u[h + 3] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0xdd);
    }
    for (int k = 0; k < 4; ++k) {               /* all 8 rows of column k, k + 4 */
        r[k] = _mm512_shuffle_f64x2(u[k], u[k + 4], 0x88);
        r[k + 4] = _mm512_shuffle_f64x2(u[k], u[k + 4], 0xdd);
    }
}

/* bt[j * FX_LANES + i] = x[i * ld + j] for i < 16, j < nj <= 16. */
static inline void fx_tile_load_f(const float *x, ptrdiff_t ld, int nj, float *bt)
{
    __mmask16 k = (__mmask16)((1u << nj) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
        r[i] = _mm512_maskz_loadu_ps(k, x + i * ld);
    }
    fx_transpose_tile_f(r);
    for (int j = 0; j < nj; ++j) {
        _mm512_storeu_ps(bt + j * FX_LANES, r[j]);
    }
}

/* y[i * ld + j] = bt[j * FX_LANES + i] for i < 16, j < nj <= 16. */
static inline void fx_tile_store_f(const float *bt, int nj, float *y, ptrdiff_t ld)
{
    __mmask16 k = (__mmask16)((1u << nj) - 1);
    __m512 r[16];
    for (int j = 0; j < 16; ++j) {
        r[j] = j < nj ? _mm512_loadu_ps(bt + j * FX_LANES) : _mm512_setzero_ps();
    }
    fx_transpose_tile_f(r);
    for (int i = 0; i < 16; ++i) {
        _mm512_mask_storeu_ps(y + i * ld, k, r[i]);
    }
}

static inline void fx_tile_load_d(const double *x, ptrdiff_t ld, int nj, double *bt)
{
    __mmask8 k = (__mmask8)((1u << nj) - 1);
    __m512d r[8];
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_maskz_loadu_pd(k, x + i * ld);
    }
    fx_transpose_tile_d(r);
    for (int j = 0; j < nj; ++j) {
        _mm512_storeu_pd(bt + j * FX_LANES, r[j]);
    }
}

static inline void fx_tile_store_d(const double *bt, int nj, double *y, ptrdiff_t ld)
{
    __mmask8 k = (__mmask8)((1u << nj) - 1);
    __m512d r[8];
    for (int j = 0; j < 8; ++j) {
        r[j] = j < nj ? _mm512_loadu_pd(bt + j * FX_LANES) : _mm512_setzero_pd();
    }
    fx_transpose_tile_d(r);
    for (int i = 0; i < 8; ++i) {
        _mm512_mask_storeu_pd(y + i * ld, k, r[i]);
    }
}

/* log_softmax's last pass in the rows' own layout, for a block of contiguous rows:
   y[k] = (x[k] - hi[r]) - lo[r] for the element k of row r = k / nc, with hi + lo = c[r] split
   as in fx_blk_sub (the same operations, so the same bits). The block's input is still in
   L1; this replaces the subtraction in the transposed block and the tiles back (64 shuffles
   for every 16 rows of floats) with two permutes per vector. `expand` (fx_blk_expand_index)
   gives, for each of the nc vectors that a group of one vector's width of rows fills, the
   row within the group of each lane. */
static inline void fx_rows_sub_f(const float *x, ptrdiff_t nr, ptrdiff_t nc, const double *c,
                                 float *y, const int32_t *expand)
{
    float hi[FX_LANES], lo[FX_LANES];
    ptrdiff_t r0 = 0;
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        hi[r] = (float)c[r];
        lo[r] = (float)(c[r] - (double)hi[r]);
    }
    for (; r0 + 16 <= nr; r0 += 16) {
        const __m512 h = _mm512_loadu_ps(hi + r0), l = _mm512_loadu_ps(lo + r0);
        const float *xg = x + r0 * nc;
        float *yg = y + r0 * nc;
        for (ptrdiff_t v = 0; v < nc; ++v) {
            const __m512i k = _mm512_loadu_si512((const void *)(expand + 16 * v));
            __m512 e = _mm512_sub_ps(_mm512_loadu_ps(xg + 16 * v), _mm512_permutexvar_ps(k, h));
            _mm512_storeu_ps(yg + 16 * v, _mm512_sub_ps(e, _mm512_permutexvar_ps(k, l)));
        }
    }
    for (ptrdiff_t r = r0; r < nr; ++r) {               /* a partial block's last rows */
        for (ptrdiff_t j = 0; j < nc; ++j) {
            y[r * nc + j] = (x[r * nc + j] - hi[r]) - lo[r];
        }
    }
}

static inline void fx_rows_sub_d(const double *x, ptrdiff_t nr, ptrdiff_t nc, const double *c,
                                 double *y, const int32_t *expand)
{
    ptrdiff_t r0 = 0;
    for (; r0 + 8 <= nr; r0 += 8) {
        const __m512d h = _mm512_loadu_pd(c + r0);
        const double *xg = x + r0 * nc;
        double *yg = y + r0 * nc;
        for (ptrdiff_t v = 0; v < nc; ++v) {
            const __m512i k = _mm512_cvtepi32_epi64(
                _mm256_loadu_si256((const __m256i *)(expand + 8 * v)));
            /* lo = c - (double)hi = 0 for double rows: as fx_blk_sub, one subtraction */
            __m512d e = _mm512_sub_pd(_mm512_loadu_pd(xg + 8 * v), _mm512_permutexvar_pd(k, h));
            _mm512_storeu_pd(yg + 8 * v, e);
        }
    }
    for (ptrdiff_t r = r0; r < nr; ++r) {
        for (ptrdiff_t j = 0; j < nc; ++j) {
            y[r * nc + j] = x[r * nc + j] - c[r];
        }
    }
}
#else
#define FX_HAS_TILES 0                  /* log_softmax transposes back */
#define FX_TILE_N(T) 0                  /* no tiles: gathers or the scalar loops */
static inline void fx_tile_load_f(const float *x, ptrdiff_t ld, int nj, float *bt)
{
    (void)x; (void)ld; (void)nj; (void)bt;
}
static inline void fx_tile_store_f(const float *bt, int nj, float *y, ptrdiff_t ld)
{
    (void)bt; (void)nj; (void)y; (void)ld;
}
static inline void fx_tile_load_d(const double *x, ptrdiff_t ld, int nj, double *bt)
{
    (void)x; (void)ld; (void)nj; (void)bt;
}
static inline void fx_tile_store_d(const double *bt, int nj, double *y, ptrdiff_t ld)
{
    (void)bt; (void)nj; (void)y; (void)ld;
}
static inline void fx_rows_sub_f(const float *x, ptrdiff_t nr, ptrdiff_t nc, const double *c,
                                 float *y, const int32_t *expand)
{
    (void)x; (void)nr; (void)nc; (void)c; (void)y; (void)expand;
}
static inline void fx_rows_sub_d(const double *x, ptrdiff_t nr, ptrdiff_t nc, const double *c,
                                 double *y, const int32_t *expand)
{
    (void)x; (void)nr; (void)nc; (void)c; (void)y; (void)expand;
}
#endif

/* expand[v * width + i] = (v * width + i) / nc for v < nc, i < width: the row, within a group
   of `width` contiguous rows of nc elements, of lane i of the group's vector v. */
static inline void fx_blk_expand_index(ptrdiff_t nc, int width, int32_t *expand)
{
    for (ptrdiff_t k = 0; k < nc * width; ++k) {
        expand[k] = (int32_t)(k / nc);
    }
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

/* The labels of a block's rows (fx_blk_label_terms), in lanes as wide as the block's elements:
   32-bit for float, 64-bit for double. A select by label then takes one compare per vector
   on every ISA; 32-bit labels beside double lanes cost AVX2 a widening per vector, and made
   the float64 loss gradient at C = 10-28 slower than the scalar loop they replaced
   (docs/performance.md, session 10). */
typedef union {
    int32_t f[FX_LANES];
    int64_t d[FX_LANES];
} fx_blk_labels_t;

/* out[r] = log(s[r]) for a block. */
static inline void fx_blk_log(const double *s, ptrdiff_t nr, double *out)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < nr; ++r) {
        out[r] = fx_log(s[r]);
    }
}

#define FX_T float
#define FX_LABEL_T int32_t
#define FX_LABELS(u) ((u)->f)
#define FX_NAME(op) op##_f
#define FX_EXP fx_expf
#define FX_EXP_LE0 fx_expf_le0
#define FX_GATHER fx_gather_f
#define FX_TILE_LOAD fx_tile_load_f
#define FX_TILE_STORE fx_tile_store_f
#include "fx_blockops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP
#undef FX_EXP_LE0
#undef FX_GATHER
#undef FX_TILE_LOAD
#undef FX_TILE_STORE
#undef FX_LABEL_T
#undef FX_LABELS

#define FX_T double
#define FX_LABEL_T int64_t
#define FX_LABELS(u) ((u)->d)
#define FX_NAME(op) op##_d
#define FX_EXP fx_exp
#define FX_EXP_LE0 fx_exp_le0
#define FX_GATHER fx_gather_d
#define FX_TILE_LOAD fx_tile_load_d
#define FX_TILE_STORE fx_tile_store_d
#include "fx_blockops_impl.h"
#undef FX_T
#undef FX_NAME
#undef FX_EXP
#undef FX_EXP_LE0
#undef FX_GATHER
#undef FX_TILE_LOAD
#undef FX_TILE_STORE
#undef FX_LABEL_T
#undef FX_LABELS

#endif /* FX_BLOCKOPS_H */
