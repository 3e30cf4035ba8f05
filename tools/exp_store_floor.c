/*
 * tools/exp_store_floor.c: how close the long-row float64 kernels are to what one pass of
 * exponentials can do (docs/performance.md, session 15). Not part of the build; AVX-512 only.
 *
 * 1024 rows of 32000 doubles, split between the threads (argument 1, default 1). Per row:
 *   exp store only   out = exp(x - shift) with ordinary stores, and the sum: one pass, no
 *                    rescale (not a softmax: the least any kernel that writes must do);
 *   exp NT only      the same with non-temporal stores (no read for ownership);
 *   in place         the exponentials stored, then rescaled in place from L2;
 *   scratch + NT     the exponentials into a scratch row (L2), then rescaled into the
 *                    output with non-temporal stores;
 *   pipelined NT     row r's exponentials into a scratch row while row r - 1's scratch is
 *                    rescaled into the output with non-temporal stores, BLK elements of
 *                    each in turn (-DBLK=n, default 64), so that the reads from memory and
 *                    the streaming stores overlap (session 16: at 2048 they do not).
 * Compare with the library's kernels on the same shape:
 *   python tools/time_kernels.py --classes 32000 --elements 32768000 --dtype float64 \
 *       --threads 2 --ops softmax,ce_grad --number 3 --rounds 7
 *
 * The exponential is fx_exp.h's float64 exp_le0 in intrinsics, with its 2^n by vscalefpd
 * (the generic code's shift, add and multiply, and its 2^-64 factor, in one instruction).
 * Its results are the same bits as fx_exp_le0's (checked at start, including -inf, NaN,
 * results that underflow to 0 or are subnormal); it also times the two on a row in L1.
 *
 *   gcc -O3 -fopenmp -mavx512f -mfma -mprefer-vector-width=512 -fno-math-errno -Isrc \
 *       [-DBLK=64] -o /tmp/exp_store_floor tools/exp_store_floor.c -lm && /tmp/exp_store_floor 2
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fx_exp.h"

#define ROWS 1024L
#define ROW 32000L
#ifndef BLK
#define BLK 64
#endif

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

/* fx_exp_reduced's polynomial, highest degree first */
static const double POLY[11] = {
    2.0826624606190034e-09, 2.5112037030528525e-08, 2.755758185735806e-07,
    2.755723486130839e-06, 2.4801586926620483e-05, 1.9841269896384513e-04,
    1.3888888889115637e-03, 8.333333333317034e-03, 4.1666666666666095e-02,
    1.6666666666666682e-01, 0.5};

static inline __m512d exp_scalef(__m512d x)
{
    __mmask8 keep = _mm512_cmp_pd_mask(x, _mm512_set1_pd(-746.0), _CMP_NLT_UQ); /* or NaN */
    __m512d sh = _mm512_set1_pd(FX_SHIFTER_D);
    __m512d n = _mm512_sub_pd(_mm512_fmadd_pd(x, _mm512_set1_pd(1.4426950408889634), sh), sh);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);
    __m512d p = _mm512_set1_pd(POLY[0]);
    for (int k = 1; k < 11; ++k) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(POLY[k]));
    p = _mm512_add_pd(_mm512_fmadd_pd(p, _mm512_mul_pd(r, r), r), _mm512_set1_pd(1.0));
    return _mm512_maskz_scalef_pd(keep, p, n);
}

/* out = exp(x - shift), returns the sum; non-temporal stores when nt (out 64-byte aligned) */
__attribute__((noinline)) static double exp_store(const double *x, double *out, long n, double shift, int nt)
{
    __m512d acc = _mm512_setzero_pd(), s = _mm512_set1_pd(shift);
    for (long j = 0; j + 8 <= n; j += 8) {
        __m512d e = exp_scalef(_mm512_sub_pd(_mm512_loadu_pd(x + j), s));
        if (nt) _mm512_stream_pd(out + j, e); else _mm512_storeu_pd(out + j, e);
        acc = _mm512_add_pd(acc, e);
    }
    return _mm512_reduce_add_pd(acc);
}

__attribute__((noinline)) static double exp_store_generic(const double *x, double *out, long n, double shift)
{
    double acc[8] = {0};
    for (long j = 0; j + 8 <= n; j += 8) {
        #pragma omp simd
        for (int k = 0; k < 8; ++k) { out[j + k] = fx_exp_le0(x[j + k] - shift); acc[k] += out[j + k]; }
    }
    double s = 0; for (int k = 0; k < 8; ++k) s += acc[k]; return s;
}

static void scale(double *y, const double *s, long n, double a, int nt)
{
    if (nt) {
        for (long j = 0; j < n; j += 8) _mm512_stream_pd(y + j, _mm512_mul_pd(_mm512_loadu_pd(s + j), _mm512_set1_pd(a)));
    } else {
        #pragma omp simd
        for (long j = 0; j < n; j++) y[j] = s[j] * a;
    }
}

/* Row r's exponentials into cur (their sum returned), and row r - 1's, in prev, times a into
   out_prev with non-temporal stores, blk elements of each in turn (x NULL: no row r; out_prev
   NULL: no row r - 1). */
__attribute__((noinline)) static double pipelined_row(const double *x, double *cur,
                                                      const double *prev, double *out_prev,
                                                      long n, double shift, double a, long blk)
{
    __m512d acc = _mm512_setzero_pd(), s = _mm512_set1_pd(shift), av = _mm512_set1_pd(a);
    for (long b = 0; b < n; b += blk) {
        long e = b + blk < n ? b + blk : n;
        if (x != NULL) {
            for (long j = b; j + 8 <= e; j += 8) {
                __m512d v = exp_scalef(_mm512_sub_pd(_mm512_loadu_pd(x + j), s));
                _mm512_store_pd(cur + j, v);
                acc = _mm512_add_pd(acc, v);
            }
        }
        if (out_prev != NULL) {
            for (long j = b; j + 8 <= e; j += 8) {
                _mm512_stream_pd(out_prev + j, _mm512_mul_pd(_mm512_load_pd(prev + j), av));
            }
        }
    }
    return _mm512_reduce_add_pd(acc);
}

int main(int argc, char **argv)
{
    int nt = argc > 1 ? atoi(argv[1]) : 1;
    long N = ROWS * ROW, diff = 0;
    double *x = aligned_alloc(64, N * 8), *y = aligned_alloc(64, N * 8), *y2 = aligned_alloc(64, N * 8);
    for (long i = 0; i < N; i++) x[i] = (i % 1000) * 0.77 - 740.0;     /* x - 10 in [-750, 20] */
    const double special[] = {-800, -1.0 / 0.0, 0.0 / 0.0, -720, -735.5, -708.5, 11, 0};
    memcpy(x, special, sizeof special);
    exp_store_generic(x, y, N, 10.0);
    exp_store(x, y2, N, 10.0, 0);
    for (long i = 0; i < N; i++) diff += memcmp(y + i, y2 + i, 8) != 0;
    printf("elements whose bits differ from fx_exp_le0's: %ld of %ld\n", diff, N);
    for (long i = 0; i < N; i++) { x[i] = (i % 1000) * 0.01 - 5; y[i] = 0; }

    for (int rep = 0; rep < 5; rep++) {
        double t[8];
        t[0] = now();
        for (int k = 0; k < 1000; k++) exp_store_generic(x, y, 2048, 10.0);
        t[1] = now();
        for (int k = 0; k < 1000; k++) exp_store(x, y, 2048, 10.0, 0);
        t[2] = now();
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (long r = 0; r < ROWS; r++) exp_store(x + r * ROW, y + r * ROW, ROW, 10.0, 0);
        t[3] = now();
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (long r = 0; r < ROWS; r++) exp_store(x + r * ROW, y + r * ROW, ROW, 10.0, 1);
        _mm_sfence();
        t[4] = now();
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (long r = 0; r < ROWS; r++) {
            double s = exp_store(x + r * ROW, y + r * ROW, ROW, 10.0, 0);
            scale(y + r * ROW, y + r * ROW, ROW, 1 / s, 0);
        }
        t[5] = now();
        #pragma omp parallel num_threads(nt)
        {
            double *sc = aligned_alloc(64, ROW * 8);
            #pragma omp for schedule(static)
            for (long r = 0; r < ROWS; r++) {
                double s = exp_store(x + r * ROW, sc, ROW, 10.0, 0);
                scale(y + r * ROW, sc, ROW, 1 / s, 1);
            }
            _mm_sfence();
            free(sc);
        }
        t[6] = now();
        #pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(), nth = omp_get_num_threads();
            long lo = ROWS * id / nth, hi = ROWS * (id + 1) / nth;
            double *cur = aligned_alloc(64, ROW * 8), *prev = aligned_alloc(64, ROW * 8), a = 0;
            for (long r = lo; r <= hi; r++) {
                double s = pipelined_row(r < hi ? x + r * ROW : NULL, cur, prev,
                                         r > lo ? y + (r - 1) * ROW : NULL, ROW, 10.0, a, BLK);
                a = 1 / s;
                double *tmp = cur;
                cur = prev;
                prev = tmp;
            }
            _mm_sfence();
            free(cur);
            free(prev);
        }
        t[7] = now();
        printf("L1 row of 2048: generic %.2f us, vscalefpd %.2f us | %d thread(s), ms: exp store only "
               "%.1f, exp NT only %.1f, in place %.1f, scratch + NT %.1f, pipelined NT (%d) %.1f\n",
               (t[1] - t[0]) * 1e3, (t[2] - t[1]) * 1e3, nt, (t[3] - t[2]) * 1e3,
               (t[4] - t[3]) * 1e3, (t[5] - t[4]) * 1e3, (t[6] - t[5]) * 1e3, BLK,
               (t[7] - t[6]) * 1e3);
    }
    return 0;
}
