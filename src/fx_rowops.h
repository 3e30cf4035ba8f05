/*
 * fx_rowops.h: the vector loops over one row, for float and double.
 *
 * Each function here is one pass over a contiguous row; the Cython kernels (src/_kernels.pyx)
 * combine them into log-sum-exp, softmax, cross-entropy and their gradients. They live in C
 * because only C can say `#pragma omp simd reduction(...)`: without it a compiler that honours
 * IEEE semantics (no -ffast-math, which we never use) may not reorder a floating-point sum, so
 * the max and sum reductions would stay scalar. With it, each reduction is computed in vector
 * lanes and combined at the end: the order of additions depends on the vector width of the
 * build (see setup.py), never on the number of threads.
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
