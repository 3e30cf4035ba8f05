/*
 * fx_exp.h: branch-free exp for float and double that compilers vectorise.
 *
 * Why our own exp: libm's expf/exp are scalar calls, so a loop that calls them never
 * vectorises; glibc's vector variants (libmvec) exist only on glibc and are picked by the
 * compile-time ISA anyway. These functions are plain arithmetic on one value, with no
 * branches and no calls, so a `#pragma omp simd` loop that calls them becomes SSE2, AVX2 or
 * AVX-512 code, whichever the translation unit is compiled for (see setup.py: the kernels are
 * compiled once per ISA and chosen at import time).
 *
 * Method (Cody & Waite): exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n*ln2 with ln2 split
 * into a high part whose products with n are exact and a low part. exp(r), |r| <= ln2/2, is a
 * polynomial: Cephes' minimax polynomial for float (max error about 1 ulp), the Taylor series
 * to degree 13 for double (truncation error below 2^-60). 2^n is built from its bits, in two
 * factors so that subnormal results and overflow to inf come out right.
 *
 * Special values are preserved: exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN. The clamps
 * are written `x < lo ? lo : x` so that NaN (for which every comparison is false) passes
 * through them unchanged.
 *
 * Bit casts go through memcpy, the one portable way that compilers turn into a register move.
 * Nothing here converts a float to an int (out of range that is undefined behaviour).
 */
#ifndef FX_EXP_H
#define FX_EXP_H

#include <stdint.h>
#include <string.h>

static inline float fx_bits_to_float(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int32_t fx_float_to_bits(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }
static inline double fx_bits_to_double(int64_t i) { double f; memcpy(&f, &i, sizeof f); return f; }
static inline int64_t fx_double_to_bits(double f) { int64_t i; memcpy(&i, &f, sizeof i); return i; }

static inline float fx_expf(float x)
{
    /* Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer (in the current
       rounding mode, nearest) and leaves that integer in the low mantissa bits. */
    const float shifter = 12582912.0f;
    float t, n, r, p;
    int32_t ni, n1, n2;

    x = x < -104.0f ? -104.0f : x;      /* exp(-104) < 2^-150: rounds to 0 */
    x = x > 89.0f ? 89.0f : x;          /* exp(89) > 2^128: rounds to inf */
    t = x * 1.44269504088896341f + shifter;
    n = t - shifter;
    r = x - n * 0.693359375f;           /* 355/512: n * this is exact for |n| <= 2^15 */
    r = r - n * -2.12194440e-4f;        /* ln2 - 355/512 */
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    ni = fx_float_to_bits(t) - fx_float_to_bits(shifter);
    n1 = ni / 2;                        /* n in [-150, 129]: each half is a normal power */
    n2 = ni - n1;
    return p * fx_bits_to_float((n1 + 127) << 23) * fx_bits_to_float((n2 + 127) << 23);
}

static inline double fx_exp(double x)
{
    const double shifter = 6755399441055744.0;     /* 1.5 * 2^52 */
    double t, n, r, p;
    int64_t ni, n1, n2;

    x = x < -746.0 ? -746.0 : x;        /* exp(-746) < 2^-1075: rounds to 0 */
    x = x > 710.0 ? 710.0 : x;          /* exp(710) > 2^1024: rounds to inf */
    t = x * 1.4426950408889634 + shifter;
    n = t - shifter;
    r = x - n * 6.93147180369123816490e-01;       /* 32 significant bits: n * this is exact */
    r = r - n * 1.90821492927058770002e-10;
    /* Taylor series of exp(r) - 1 - r, Horner from 1/13! down to 1/2!. */
    p = 1.6059043836821613e-10;
    p = p * r + 2.0876756987868100e-09;
    p = p * r + 2.5052108385441720e-08;
    p = p * r + 2.7557319223985893e-07;
    p = p * r + 2.7557319223985888e-06;
    p = p * r + 2.4801587301587302e-05;
    p = p * r + 1.9841269841269841e-04;
    p = p * r + 1.3888888888888889e-03;
    p = p * r + 8.3333333333333332e-03;
    p = p * r + 4.1666666666666664e-02;
    p = p * r + 1.6666666666666666e-01;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    ni = fx_double_to_bits(t) - fx_double_to_bits(shifter);
    n1 = ni / 2;                        /* n in [-1077, 1025]: each half is a normal power */
    n2 = ni - n1;
    return p * fx_bits_to_double((n1 + 1023) << 52) * fx_bits_to_double((n2 + 1023) << 52);
}

#endif /* FX_EXP_H */
