/*
 * tools/register_tile_loss.c: the loss gradient of short rows with a block held in registers,
 * a prototype to time against the library's block kernel (docs/performance.md, session 14).
 * Not part of the build.
 *
 * The question: at C = 10 the block kernels (fx_blockops_impl.h) run about ten passes over
 * a scratch block of 64 rows in L1, some 3,000 instructions per block (an estimate from their
 * loops). Is that what sets their time? Here one tile of 16 rows stays in zmm registers from
 * its masked loads to its masked stores: transposed in registers, max, the label's logit by
 * selects, exponentials (the kernels' fx_expf_le0, written out in intrinsics), their sum in
 * double, the log, the coefficients and the gradient, transposed back. About 300
 * instructions per tile, 1,200 per 64 rows (objdump of `tile`: 282 with C fixed at 10 at
 * compile time, which timed the same), and no scratch memory. Mean reduction, no weights, no
 * smoothing, no ignored rows, no special values: enough work to compare, not a kernel.
 *
 *   gcc -O2 -Isrc -fopenmp-simd -fno-math-errno -fno-trapping-math -mavx2 -mfma -mavx512f \
 *       -mavx512vl -mavx512dq -mavx512bw -o /tmp/register_tile_loss \
 *       tools/register_tile_loss.c -lm
 *   /tmp/register_tile_loss [N [C]]          # default 65536 x 10, C <= 16
 *
 * and, alternately with it, the library's kernel on the same shape:
 *
 *   python tools/time_kernels.py --classes 10 --elements 655360 --number 50 --rounds 21 \
 *       --ops softmax,ce_grad
 *
 * It prints the best of 31 samples of 50 calls, and checks the loss and the gradient against
 * a double-precision loop. Measured (session 14, Intel Xeon, 65536 x 10, two series of three
 * alternating runs; the first with a draft of this file, logits in [-3, 3]): this prototype
 * 0.73-0.86 ms against the library's loss gradient 0.66-0.70 ms (its softmax 0.48 ms); later,
 * in a slower phase of the host, 0.96-1.00 ms against 0.81-0.99 ms. Fewer than half the
 * instructions, and no faster.
 *
 * Ablations, for where the time goes (wrong results, timing only): -DSKIP_EXP (x - m in place
 * of its exponential), -DSKIP_LOG (the log's polynomial and both divisions made one
 * multiplication each), -DSKIP_TRANSPOSE (both transpositions left out). Draft, first
 * series: 0.70 ms whole; 0.58 without the exponentials; 0.62-0.66 without the log and the
 * divisions; 0.48-0.53 without both; 0.37 without those and the transpositions.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fx_blockops.h"         /* fx_transpose_tile_f; fx_exp.h */

/* r[i] lane j <-> r[j] lane i: the tiles' own network (fx_transpose_tile_f). */
static inline void transpose16(__m512 r[16])
{
#ifndef SKIP_TRANSPOSE
    fx_transpose_tile_f(r);
#else
    (void)r;
#endif
}

/* fx_expf_le0 on 16 lanes, as GCC vectorises it: the clamp at -104 becomes a zero mask. */
static inline __m512 exp_le0(__m512 x)
{
#ifdef SKIP_EXP
    return x;
#endif
    const float one = 5.42101086242752217e-20f;                     /* 2^-64 */
    __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_NLT_US);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f),
                               _mm512_set1_ps(FX_SHIFTER_F));
    __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(FX_SHIFTER_F));
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(0.001382041024044156f * one);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.008368677459657192f * one));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04166826978325844f * one));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666652113199234f * one));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.4999999403953552f * one));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(one));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(one));
    __m512i scale = _mm512_add_epi32(_mm512_slli_epi32(_mm512_castps_si512(t), 23),
                                     _mm512_set1_epi32((int32_t)((uint32_t)(64 + 127 - 0x4B400000)
                                                                 << 23)));
    return _mm512_maskz_mul_ps(ok, p, _mm512_castsi512_ps(scale));
}

/* fx_log (fx_blockops.h) on 8 double lanes. */
static inline __m512d log_d(__m512d x)
{
    static const double c[] = {1.0 / 21, 1.0 / 19, 1.0 / 17, 1.0 / 15, 1.0 / 13,
                               1.0 / 11, 1.0 / 9, 1.0 / 7, 1.0 / 5, 1.0 / 3};
    __m512i bits = _mm512_castpd_si512(x);
    __m512i k = _mm512_srai_epi64(_mm512_sub_epi64(bits, _mm512_set1_epi64(0x3FE6A09E667F3BCDLL)),
                                  52);
    __m512d m = _mm512_castsi512_pd(_mm512_sub_epi64(bits, _mm512_slli_epi64(k, 52)));
    __m512d one = _mm512_set1_pd(1.0);
#ifdef SKIP_LOG
    __m512d u = _mm512_mul_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    __m512d u2 = _mm512_mul_pd(u, u);
    __m512d p = u2;
    (void)c;
#else
    __m512d u = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    __m512d u2 = _mm512_mul_pd(u, u);
    __m512d p = _mm512_set1_pd(1.0 / 23);
    for (int i = 0; i < 10; ++i) {
        p = _mm512_fmadd_pd(p, u2, _mm512_set1_pd(c[i]));
    }
#endif
    __m512d kd = _mm512_cvtepi64_pd(k);
    __m512d twice_u = _mm512_add_pd(u, u);
    __m512d r = _mm512_fmadd_pd(_mm512_mul_pd(twice_u, u2), p,
                                _mm512_mul_pd(kd, _mm512_set1_pd(1.90821492927058770002e-10)));
    return _mm512_fmadd_pd(kd, _mm512_set1_pd(6.93147180369123816490e-01),
                           _mm512_add_pd(twice_u, r));
}

static inline __m512d lo_half(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d hi_half(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }

/* The loss gradient of 16 rows of nc <= 16 classes at stride ld, scaled by `scale`, into g;
   returns the sum of their losses. */
static double tile(const float *x, ptrdiff_t ld, int nc, const int64_t *y, float scale,
                   float *g)
{
    const __mmask16 cols = (__mmask16)((1u << nc) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
        r[i] = _mm512_maskz_loadu_ps(cols, x + i * ld);
    }
    transpose16(r);                             /* r[j]: class j of the 16 rows */
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nc; ++j) {
        m = _mm512_max_ps(r[j], m);
    }
    __m512i label = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm512_cvtepi64_epi32(_mm512_loadu_si512(y))),
        _mm512_cvtepi64_epi32(_mm512_loadu_si512(y + 8)), 1);
    __m512 at_label = _mm512_setzero_ps();
    for (int j = 0; j < nc; ++j) {
        at_label = _mm512_mask_mov_ps(
            at_label, _mm512_cmpeq_epi32_mask(label, _mm512_set1_epi32(j)), r[j]);
    }
    /* exponentials in place; their sum four (then two, one) at a time, as fx_blk_sumexp */
    __m512d s_lo = _mm512_setzero_pd(), s_hi = _mm512_setzero_pd();
    int j = 0;
    for (; j + 4 <= nc; j += 4) {
        for (int q = 0; q < 4; ++q) {
            r[j + q] = exp_le0(_mm512_sub_ps(r[j + q], m));
        }
        __m512 four = _mm512_add_ps(_mm512_add_ps(r[j], r[j + 1]),
                                    _mm512_add_ps(r[j + 2], r[j + 3]));
        s_lo = _mm512_add_pd(s_lo, lo_half(four));
        s_hi = _mm512_add_pd(s_hi, hi_half(four));
    }
    for (; j + 2 <= nc; j += 2) {
        r[j] = exp_le0(_mm512_sub_ps(r[j], m));
        r[j + 1] = exp_le0(_mm512_sub_ps(r[j + 1], m));
        __m512 two = _mm512_add_ps(r[j], r[j + 1]);
        s_lo = _mm512_add_pd(s_lo, lo_half(two));
        s_hi = _mm512_add_pd(s_hi, hi_half(two));
    }
    if (j < nc) {
        r[j] = exp_le0(_mm512_sub_ps(r[j], m));
        s_lo = _mm512_add_pd(s_lo, lo_half(r[j]));
        s_hi = _mm512_add_pd(s_hi, hi_half(r[j]));
    }
    /* loss = m + log(s) - x[label]; gradient = scale (e / s - onehot) */
    __m512d loss_lo = _mm512_sub_pd(_mm512_add_pd(lo_half(m), log_d(s_lo)), lo_half(at_label));
    __m512d loss_hi = _mm512_sub_pd(_mm512_add_pd(hi_half(m), log_d(s_hi)), hi_half(at_label));
    const __m512d scale_d = _mm512_set1_pd(scale);
#ifdef SKIP_LOG
#define DIVIDE _mm512_mul_pd
#else
#define DIVIDE _mm512_div_pd
#endif
    const __m512 a = _mm512_insertf32x8(
        _mm512_castps256_ps512(_mm512_cvtpd_ps(DIVIDE(scale_d, s_lo))),
        _mm512_cvtpd_ps(DIVIDE(scale_d, s_hi)), 1);
    const __m512 gamma = _mm512_set1_ps(scale);
    for (int k = 0; k < 16; ++k) {
        if (k < nc) {
            __m512 e = _mm512_mul_ps(a, r[k]);
            r[k] = _mm512_mask_sub_ps(e, _mm512_cmpeq_epi32_mask(label, _mm512_set1_epi32(k)),
                                      e, gamma);
        } else {
            r[k] = _mm512_setzero_ps();
        }
    }
    transpose16(r);
    for (int i = 0; i < 16; ++i) {
        _mm512_mask_storeu_ps(g + i * ld, cols, r[i]);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(loss_lo, loss_hi));
}

static double loss_grad(const float *x, ptrdiff_t n, int nc, const int64_t *y, float *g)
{
    double total = 0.0;
    for (ptrdiff_t i = 0; i + 16 <= n; i += 16) {
        total += tile(x + i * nc, nc, nc, y + i, 1.0f / (float)n, g + i * nc);
    }
    return total / (double)n;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

int main(int argc, char **argv)
{
    ptrdiff_t n = argc > 1 ? atol(argv[1]) : 65536;
    int nc = argc > 2 ? atoi(argv[2]) : 10;
    if (n < 16 || n % 16 != 0 || nc < 1 || nc > 16) {
        fprintf(stderr, "N: a multiple of 16; 1 <= C <= 16\n");
        return 2;
    }
    float *x = malloc(n * nc * sizeof *x), *g = malloc(n * nc * sizeof *g);
    int64_t *y = malloc((size_t)n * sizeof *y);
    srand(1);
    for (ptrdiff_t i = 0; i < n * nc; ++i) {
        x[i] = (float)rand() / (float)RAND_MAX * 12.0f - 6.0f;     /* as the bench: [-6, 6] */
        g[i] = 0.0f;
    }
    for (ptrdiff_t i = 0; i < n; ++i) {
        y[i] = rand() % nc;
    }
    double best = INFINITY, loss = 0.0;
    for (int sample = 0; sample < 31; ++sample) {
        double t0 = now_ms();
        for (int k = 0; k < 50; ++k) {
            loss = loss_grad(x, n, nc, y, g);
        }
        double ms = (now_ms() - t0) / 50;
        best = ms < best ? ms : best;
    }
    double ref = 0.0, worst = 0.0;
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float *row = x + i * nc;
        double m = -INFINITY, s = 0.0;
        for (int j = 0; j < nc; ++j) {
            m = fmax(m, row[j]);
        }
        for (int j = 0; j < nc; ++j) {
            s += exp(row[j] - m);
        }
        ref += (m + log(s) - row[y[i]]) / (double)n;
        for (int j = 0; j < nc; ++j) {
            double want = (exp(row[j] - m) / s - (j == y[i])) / (double)n;
            worst = fmax(worst, fabs(want - g[i * nc + j]) * (double)n);
        }
    }
    printf("%td x %d float32: best of 31 samples of 50 calls %.3f ms per call; loss %.9f "
           "(double loop %.9f), largest gradient error %.1e (in units of 1/N)\n",
           n, nc, best, loss, ref, worst);
    return 0;
}
