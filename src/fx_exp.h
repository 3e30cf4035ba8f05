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
 * polynomial: a degree-6 fit for float, 1 + r + r^2 P(r) with a degree-10 fit P for double.
 * 2^n is built from its bits, in two
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

/* Cody-Waite reduction and polynomial shared by the float variants: returns one * exp(r) for
   r = x - n ln2, and sets *t to x / ln2 + shifter, whose low mantissa bits hold
   n = round(x / ln2). `one` is a power of two (1 or 2^-64), folded into the coefficients at
   compile time, exactly. */
#define FX_SHIFTER_F 12582912.0f                    /* 1.5 * 2^23 */
static inline float fx_expf_reduced(float x, float *t, float one)
{
    float n, r, p;
    /* Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer (in the current
       rounding mode, nearest) and leaves that integer in the low mantissa bits. */
    *t = x * 1.44269504088896341f + FX_SHIFTER_F;
    n = *t - FX_SHIFTER_F;
    r = x - n * 0.693359375f;           /* 355/512: n * this is exact for |n| <= 2^15 */
    r = r - n * -2.12194440e-4f;        /* ln2 - 355/512 */
    /* Degree 6, fitted to the relative error on |r| <= ln2/2 with each coefficient rounded
       to float before the next was fitted: 0.05 ulp from exp(r), so the result is within
       about 1 ulp of exp(x) (tests/test_exp_accuracy.py). Six FMAs where Cephes' form needs
       eight operations. */
    p = 0.001382041024044156f * one;
    p = p * r + 0.008368677459657192f * one;
    p = p * r + 0.04166826978325844f * one;
    p = p * r + 0.1666652113199234f * one;
    p = p * r + 0.4999999403953552f * one;
    p = p * r + one;
    return p * r + one;
}

/* exp(x) for any float x. */
static inline float fx_expf(float x)
{
    float t, p;
    int32_t n, n1;

    x = x < -104.0f ? -104.0f : x;      /* exp(-104) < 2^-150: rounds to 0 */
    x = x > 89.0f ? 89.0f : x;          /* exp(89) > 2^128: rounds to inf */
    p = fx_expf_reduced(x, &t, 1.0f);
    /* n in [-150, 129]: 2^n as two normal powers, so that overflow and subnormal results are
       rounded once, in the last product. */
    n = fx_float_to_bits(t) - fx_float_to_bits(FX_SHIFTER_F);
    n1 = n >> 1;                        /* arithmetic shift: floor(n / 2) */
    return p * fx_bits_to_float((uint32_t)(n1 + 127) << 23)
             * fx_bits_to_float((uint32_t)(n - n1 + 127) << 23);
}

/* exp(x) for x <= 0 or NaN: the shifted logits x - max. Fewer operations than fx_expf, which
   matters in the loops that are bound by arithmetic: n <= 0, so 2^(n + 64) is a normal
   number, and the factor 2^-64 that brings it back sits in the polynomial's coefficients;
   subnormal results are rounded once, in the last product. */
static inline float fx_expf_le0(float x)
{
    float t, p;
    x = x < -104.0f ? -104.0f : x;      /* exp(-104) < 2^-150: rounds to 0 */
    p = fx_expf_reduced(x, &t, 5.42101086242752217e-20f);           /* 2^-64 */
    /* (n + 64 + 127) << 23, with n = bits(t) - bits(shifter): one shift and one add. */
    return p * fx_bits_to_float(((uint32_t)fx_float_to_bits(t) << 23)
                                + ((uint32_t)(64 + 127 - 0x4B400000) << 23));
}

#define FX_SHIFTER_D 6755399441055744.0                 /* 1.5 * 2^52 */
static inline double fx_exp_reduced(double x, double *t, double one)
{
    double n, r, p;
    *t = x * 1.4426950408889634 + FX_SHIFTER_D;
    n = *t - FX_SHIFTER_D;
    r = x - n * 6.93147180369123816490e-01;       /* 32 significant bits: n * this is exact */
    r = r - n * 1.90821492927058770002e-10;
    /* exp(r) = 1 + r + r^2 P(r), P of degree 10 fitted to (exp(r) - 1 - r) / r^2 for the
       relative error of exp on |r| <= ln2/2 (Lawson's iteration on 400 Chebyshev nodes, in
       200-bit arithmetic; tools/fit_exp_double.py): 0.003 ulp from exp(r) with the coefficients
       rounded to double, one FMA fewer than the Taylor series (degree 11) it replaces. (Degree
       9 errs by 0.05 ulp, which took the worst total error over 60,000 arguments from 0.92 to
       0.99 ulp: too close to the 1 ulp we promise.) Horner, then r + r^2 P and + 1 last, which
       keeps the result within 1 ulp also without FMA instructions (SSE2). */
    p = 2.0826624606190034e-09 * one;
    p = p * r + 2.5112037030528525e-08 * one;
    p = p * r + 2.755758185735806e-07 * one;
    p = p * r + 2.755723486130839e-06 * one;
    p = p * r + 2.4801586926620483e-05 * one;
    p = p * r + 1.9841269896384513e-04 * one;
    p = p * r + 1.3888888889115637e-03 * one;
    p = p * r + 8.333333333317034e-03 * one;
    p = p * r + 4.1666666666666095e-02 * one;
    p = p * r + 1.6666666666666682e-01 * one;
    p = p * r + 0.5 * one;
    return p * (r * r) + r * one + one;
}

/* exp(x) for any double x. */
static inline double fx_exp(double x)
{
    double t, p;
    int64_t n, n1;

    x = x < -746.0 ? -746.0 : x;        /* exp(-746) < 2^-1075: rounds to 0 */
    x = x > 710.0 ? 710.0 : x;          /* exp(710) > 2^1024: rounds to inf */
    p = fx_exp_reduced(x, &t, 1.0);
    n = fx_double_to_bits(t) - fx_double_to_bits(FX_SHIFTER_D);   /* in [-1077, 1025] */
    n1 = n >> 1;
    return p * fx_bits_to_double((uint64_t)(n1 + 1023) << 52)
             * fx_bits_to_double((uint64_t)(n - n1 + 1023) << 52);
}

/* exp(x) for x <= 0 or NaN, as fx_expf_le0. */
static inline double fx_exp_le0(double x)
{
    double t, p;
    x = x < -746.0 ? -746.0 : x;
    p = fx_exp_reduced(x, &t, 5.42101086242752217e-20);            /* 2^-64 */
    return p * fx_bits_to_double(((uint64_t)fx_double_to_bits(t) << 52)
                                 + ((uint64_t)(64 + 1023 - 0x4338000000000000LL) << 52));
}

#endif /* FX_EXP_H */
