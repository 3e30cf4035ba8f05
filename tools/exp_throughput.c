/*
 * tools/exp_throughput.c: how fast the float exp alone runs, summed over a row in L1
 * (docs/performance.md, session 7). Not part of the build.
 *
 * Three loops over a 4 KiB row, the exponentials summed in float:
 *   portable   fx_expf_le0 of src/fx_exp.h in an `omp simd` loop, as the kernels use it;
 *   scalef     the same polynomial with 2^n applied by vscalefps (AVX-512 intrinsics; the
 *              rejected experiment: faster alone, slower in the kernels, see the docs);
 *   scalef+rnd vscalefps, and vrndscaleps in place of the shifter's rounding.
 * Each prints ns per element. Compiled for AVX-512 (as setup.py's avx512 build), then with
 * -mprefer-vector-width=256 for the AVX2-width form of the portable loop:
 *
 *   gcc -O3 -Isrc -fopenmp-simd -fno-math-errno -fno-trapping-math -mavx2 -mfma -mavx512f \
 *       -mavx512vl -mavx512dq -mavx512bw -mprefer-vector-width=512 \
 *       -o /tmp/exp_throughput tools/exp_throughput.c && /tmp/exp_throughput
 *
 * Measured on the project's machine, five runs of three rounds: portable 0.20-0.30 ns per
 * element (15 instructions per 16 floats), scalef 0.17-0.30 (10-15% faster than portable in
 * the steadier runs), 256-bit portable 0.31-0.37.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#include "fx_exp.h"

#define N 1024
#define REPEAT 200000

static float x[N] __attribute__((aligned(64)));

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The polynomial of fx_expf_reduced, then 2^n by vscalefps; `round` picks how n is found. */
static inline __m512 exp_scalef(__m512 v, int round)
{
    const __m512 shifter = _mm512_set1_ps(FX_SHIFTER_F);
    __m512 n, r, p;
    v = _mm512_max_ps(_mm512_set1_ps(-104.0f), v);
    if (round) {
        n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
        n = _mm512_sub_ps(_mm512_fmadd_ps(v, _mm512_set1_ps(1.44269504088896341f), shifter),
                          shifter);
    }
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    p = _mm512_set1_ps(0.001382041024044156f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.008368677459657192f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04166826978325844f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666652113199234f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.4999999403953552f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

__attribute__((noinline)) static float sum_portable(const float *v, int n)
{
    float acc[16] = {0};
    for (int j = 0; j < n; j += 32) {
#pragma omp simd
        for (int k = 0; k < 16; ++k) {
            acc[k] += fx_expf_le0(v[j + k]) + fx_expf_le0(v[j + 16 + k]);
        }
    }
    float s = 0;
    for (int k = 0; k < 16; ++k) {
        s += acc[k];
    }
    return s;
}

__attribute__((noinline)) static float sum_scalef(const float *v, int n, int round)
{
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 32) {
        acc = _mm512_add_ps(acc, _mm512_add_ps(exp_scalef(_mm512_loadu_ps(v + j), round),
                                               exp_scalef(_mm512_loadu_ps(v + j + 16), round)));
    }
    return _mm512_reduce_add_ps(acc);
}

int main(void)
{
    float s = 0;
    for (int i = 0; i < N; ++i) {
        x[i] = -(float)(i % 97) * 0.05f;        /* x - max of a row: <= 0 */
    }
    for (int round = 0; round < 3; ++round) {
        double t = now();
        for (int r = 0; r < REPEAT; ++r) {
            __asm__ volatile("" ::: "memory");  /* keep the calls in the loop */
            s += sum_portable(x, N);
        }
        printf("portable   %.3f ns/element\n", (now() - t) / REPEAT / N * 1e9);
        t = now();
        for (int r = 0; r < REPEAT; ++r) {
            __asm__ volatile("" ::: "memory");
            s += sum_scalef(x, N, 0);
        }
        printf("scalef     %.3f ns/element\n", (now() - t) / REPEAT / N * 1e9);
        t = now();
        for (int r = 0; r < REPEAT; ++r) {
            __asm__ volatile("" ::: "memory");
            s += sum_scalef(x, N, 1);
        }
        printf("scalef+rnd %.3f ns/element\n", (now() - t) / REPEAT / N * 1e9);
    }
    return s > 0 ? 0 : 1;
}
