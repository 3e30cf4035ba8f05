/*
 * Template body of fx_rowops.h: FX_T is the element type, FX_NAME(op) the function name for it,
 * FX_EXP the exp for it and FX_EXP_LE0 its faster variant for arguments <= 0. No include guard: included once per element type.
 */

/* max(x[0:n]) over the values that are not NaN, -inf for n == 0 (a NaN never compares
   greater). NaN reaches the results through the sums of exponentials instead. */
static inline FX_T FX_NAME(fx_max)(const FX_T *x, ptrdiff_t n)
{
    FX_T m = -INFINITY;
    FX_PRAGMA(omp simd reduction(max:m))
    for (ptrdiff_t j = 0; j < n; ++j) {
        m = x[j] > m ? x[j] : m;
    }
    return m;
}

/* Whether x[0:n] holds a NaN. */
static inline int FX_NAME(fx_has_nan)(const FX_T *x, ptrdiff_t n)
{
    int nan = 0;
    FX_PRAGMA(omp simd reduction(|:nan))
    for (ptrdiff_t j = 0; j < n; ++j) {
        nan |= x[j] != x[j];
    }
    return nan;
}

/* The exp loops run over whole chunks of FX_TAIL elements (a multiple of every vector width)
   and finish with one more chunk in a small buffer padded with -inf, whose exp is 0: a row of
   100 classes would otherwise spend as long on its 4 leftover scalar exps as on the 96 in
   vectors. (Peeling a head up to a 64-byte boundary as well was tried: it made the order of
   the sums, so the last bits of the results, depend on where an array happens to be
   allocated. Results must not.) */
#ifndef FX_TAIL
#define FX_TAIL 16
#endif

/* out[0:len] = exp(x[0:len] - shift) (out may be NULL), returns their sum; len < FX_TAIL. */
static inline double FX_NAME(fx_expstore_short)(const FX_T *x, FX_T *out, ptrdiff_t len,
                                                FX_T shift)
{
    FX_T buf[FX_TAIL];
    double s = 0.0;
    if (len <= 0) {
        return 0.0;
    }
    for (ptrdiff_t k = 0; k < FX_TAIL; ++k) {
        buf[k] = k < len ? x[k] : -INFINITY;
    }
    FX_PRAGMA(omp simd reduction(+:s))
    for (ptrdiff_t k = 0; k < FX_TAIL; ++k) {
        buf[k] = FX_EXP_LE0(buf[k] - shift);
        s += (double)buf[k];
    }
    if (out != NULL) {
        for (ptrdiff_t k = 0; k < len; ++k) {
            out[k] = buf[k];
        }
    }
    return s;
}

/* sum(exp(x - shift)) in double, shift >= max(x). */
static inline double FX_NAME(fx_sumexp)(const FX_T *x, ptrdiff_t n, FX_T shift)
{
    ptrdiff_t nv = n / FX_TAIL * FX_TAIL;
    double s = 0.0;
    FX_PRAGMA(omp simd reduction(+:s))
    for (ptrdiff_t j = 0; j < nv; ++j) {
        s += (double)FX_EXP_LE0(x[j] - shift);
    }
    return s + FX_NAME(fx_expstore_short)(x + nv, NULL, n - nv, shift);
}

/* out = exp(x - shift), returns sum(out) in double; shift >= max(x). out may be x. Storing the
   exponentials lets softmax and the loss gradient rescale them instead of computing exp a
   second time. */
static inline double FX_NAME(fx_expstore)(const FX_T *x, FX_T *out, ptrdiff_t n, FX_T shift)
{
    ptrdiff_t nv = n / FX_TAIL * FX_TAIL;
    double s = 0.0;
    FX_PRAGMA(omp simd reduction(+:s))
    for (ptrdiff_t j = 0; j < nv; ++j) {
        FX_T e = FX_EXP_LE0(x[j] - shift);
        out[j] = e;
        s += (double)e;
    }
    return s + FX_NAME(fx_expstore_short)(x + nv, out + nv, n - nv, shift);
}

/* Row max and sum(exp(x - max)) in one sweep over memory (the online normaliser of Milakov &
   Gimelshein, 2018, applied per block): each block is read from memory once for its max and
   again from L1 for its exponentials; when a block raises the max, the sum so far is rescaled.
   Used by the kernels that only read a row, so a row longer than the caches is read once.
   With max = -inf the sum is 0, or NaN if the row holds a NaN; with max = +inf it is
   meaningless (inf - inf) and the caller decides. */
static inline void FX_NAME(fx_max_sumexp)(const FX_T *x, ptrdiff_t n, double *max, double *sum)
{
    enum { BLOCK = 2048 };      /* 8 or 16 KiB: stays in any L1 */
    FX_T m = -INFINITY;
    double s = 0.0;
    for (ptrdiff_t b = 0; b < n; b += BLOCK) {
        ptrdiff_t len = n - b < BLOCK ? n - b : BLOCK;
        FX_T bm = FX_NAME(fx_max)(x + b, len);
        if (bm > m) {
            if (s != 0.0) {
                s *= exp((double)m - (double)bm);
            }
            m = bm;
        }
        if (m == -INFINITY) {
            /* Everything so far is -inf, adding 0, or NaN (which max skips), adding NaN. */
            if (FX_NAME(fx_has_nan)(x + b, len)) {
                s = NAN;
            }
        } else {
            s += FX_NAME(fx_sumexp)(x + b, len, m);
        }
    }
    *max = m;
    *sum = s;
}

/* y *= a. */
static inline void FX_NAME(fx_scale)(FX_T *y, ptrdiff_t n, FX_T a)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < n; ++j) {
        y[j] *= a;
    }
}

/* out = x - c for a double c, out may be x. c is split into hi + lo of the row type, and
   x - hi is exact near the row's top (where x and hi are within a factor of two), so the
   result is rounded about once, as if the difference were taken in double, at two vector
   operations per element instead of two conversions and back. */
static inline void FX_NAME(fx_sub)(const FX_T *x, FX_T *out, ptrdiff_t n, double c)
{
    FX_T hi = (FX_T)c, lo = (FX_T)(c - (double)hi);
    FX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < n; ++j) {
        out[j] = (x[j] - hi) - lo;
    }
}

/* sum(a * w) in double, w a double vector (class weights), or sum(a) when w is NULL. */
static inline double FX_NAME(fx_wsum)(const FX_T *a, const double *w, ptrdiff_t n)
{
    double s = 0.0;
    if (w == NULL) {
        FX_PRAGMA(omp simd reduction(+:s))
        for (ptrdiff_t j = 0; j < n; ++j) {
            s += (double)a[j];
        }
    } else {
        FX_PRAGMA(omp simd reduction(+:s))
        for (ptrdiff_t j = 0; j < n; ++j) {
            s += (double)a[j] * w[j];
        }
    }
    return s;
}

/* sum(a * b) in double. */
static inline double FX_NAME(fx_dot)(const FX_T *a, const FX_T *b, ptrdiff_t n)
{
    double s = 0.0;
    FX_PRAGMA(omp simd reduction(+:s))
    for (ptrdiff_t j = 0; j < n; ++j) {
        s += (double)a[j] * (double)b[j];
    }
    return s;
}

/* out = y * (g - d): the softmax vector-Jacobian product once d = sum(g * y) is known. */
static inline void FX_NAME(fx_mul_sub)(const FX_T *y, const FX_T *g, FX_T *out, ptrdiff_t n,
                                       double d)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < n; ++j) {
        out[j] = (FX_T)((double)y[j] * ((double)g[j] - d));
    }
}

/* out = g - exp(y) * s: the log-softmax vector-Jacobian product once s = sum(g) is known. */
static inline void FX_NAME(fx_sub_expmul)(const FX_T *g, const FX_T *y, FX_T *out, ptrdiff_t n,
                                          FX_T s)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < n; ++j) {
        out[j] = g[j] - FX_EXP(y[j]) * s;
    }
}

/* out = a * exp(x - shift): the log-sum-exp vector-Jacobian product. */
static inline void FX_NAME(fx_expmul)(const FX_T *x, FX_T *out, ptrdiff_t n, FX_T shift, FX_T a)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < n; ++j) {
        out[j] = a * FX_EXP(x[j] - shift);
    }
}

/* g = alpha * g - beta * w (w NULL: - beta): turns stored exponentials into the gradient of a
   loss whose per-class coefficients are beta * w. */
static inline void FX_NAME(fx_axpw)(FX_T *g, const double *w, ptrdiff_t n, FX_T alpha,
                                    FX_T beta)
{
    if (w == NULL) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t j = 0; j < n; ++j) {
            g[j] = alpha * g[j] - beta;
        }
    } else {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t j = 0; j < n; ++j) {
            g[j] = alpha * g[j] - beta * (FX_T)w[j];
        }
    }
}

/* Coefficients of a probability target: c = w * (a * t + b) (w NULL: 1). Returns sum(c) and
   sum(c * x) in double. */
static inline void FX_NAME(fx_coef_sums)(const FX_T *x, const FX_T *t, const double *w,
                                         ptrdiff_t n, double a, double b,
                                         double *sum_c, double *sum_cx)
{
    double sc = 0.0, scx = 0.0;
    FX_PRAGMA(omp simd reduction(+:sc, scx))
    for (ptrdiff_t j = 0; j < n; ++j) {
        double c = a * (double)t[j] + b;
        if (w != NULL) {
            c *= w[j];
        }
        sc += c;
        scx += c * (double)x[j];
    }
    *sum_c = sc;
    *sum_cx = scx;
}

/* g = alpha * g - r * c with c = w * (a * t + b), the probability-target gradient. */
static inline void FX_NAME(fx_axpc)(FX_T *g, const FX_T *t, const double *w, ptrdiff_t n,
                                    FX_T alpha, double r, double a, double b)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < n; ++j) {
        double c = a * (double)t[j] + b;
        if (w != NULL) {
            c *= w[j];
        }
        g[j] = (FX_T)((double)(alpha * g[j]) - r * c);
    }
}
