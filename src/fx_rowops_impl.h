/*
 * Template body of fx_rowops.h: FX_T is the element type, FX_NAME(op) the function name for it,
 * FX_EXP the exp for it and FX_EXP_LE0 its faster variant for arguments <= 0. No include
 * guard: included once per element type.
 */

/* Every pass runs over a row in chunks of FX_CHUNK elements. In the exp passes below the
   last, partial chunk runs as a whole chunk whose lanes past the row's end are masked and
   padded with -inf (`k < left ? x[j + k] : -INFINITY`, exp 0), which GCC and Clang compile to
   masked loads and blends on AVX2 and AVX-512 (scalar code on SSE2); the padding survives
   because every lane is summed. The max pass takes the whole chunk that ends at the row's end
   instead (a max does not mind elements seen twice). The element-wise passes (FX_ROW_MAP,
   FX_ROW_SUM in fx_rowops.h) overlap their last chunk instead, for the reason given there. A row
   of 100 classes used to spend as long on its 4 leftover scalar elements, through a remainder
   loop, as on the 96 in vectors.

   Reductions keep FX_CHUNK partial results, one per position in a chunk, and combine them in a
   fixed tree at the end (fx_chunk_sum, FX_NAME(fx_chunk_max)): no horizontal reduction per
   vector, and the order of the additions is the same on every ISA and every vector width, and
   never depends on the number of threads or on where an array is allocated. (Peeling a head
   up to a 64-byte boundary was tried; it made the last bits of the results depend on the
   address of the array, and was rejected.) */

/* The max of acc[0:FX_CHUNK], in a fixed tree of halves (as fx_chunk_sum); in vector
   registers where the build has AVX2 (fx_chunk_max_vec_f, _d in fx_rowops.h). */
FX_ALWAYS_INLINE FX_T FX_NAME(fx_chunk_max)(const FX_T *acc)
{
#if defined(__AVX2__)
    return FX_NAME(fx_chunk_max_vec)(acc);
#else
    FX_T h8[8], h4[4], a, b;
    for (int k = 0; k < 8; ++k) {
        h8[k] = acc[k + 8] > acc[k] ? acc[k + 8] : acc[k];
    }
    for (int k = 0; k < 4; ++k) {
        h4[k] = h8[k + 4] > h8[k] ? h8[k + 4] : h8[k];
    }
    a = h4[2] > h4[0] ? h4[2] : h4[0];
    b = h4[3] > h4[1] ? h4[3] : h4[1];
    return b > a ? b : a;
#endif
}

/* max over the chunks of x[j:n] and acc[0:FX_CHUNK] (the running maxima of x[0:j]); the
   end of fx_max, shared by its two forms below. */
FX_ALWAYS_INLINE FX_T FX_NAME(fx_max_rest)(const FX_T *x, ptrdiff_t j, ptrdiff_t n, FX_T *acc)
{
    for (; j + FX_CHUNK <= n; j += FX_CHUNK) {
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            acc[k] = x[j + k] > acc[k] ? x[j + k] : acc[k];
        }
    }
    if (j < n && n >= FX_CHUNK) {
        /* the whole chunk that ends at n: elements seen twice change no max, and no lane
           needs a mask */
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            acc[k] = x[n - FX_CHUNK + k] > acc[k] ? x[n - FX_CHUNK + k] : acc[k];
        }
    } else if (j < n) {
        const int left = (int)n;            /* < FX_CHUNK: compared in 32-bit lanes */
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            FX_T v = k < left ? x[k] : -INFINITY;
            acc[k] = v > acc[k] ? v : acc[k];
        }
    }
    return FX_NAME(fx_chunk_max)(acc);
}

/* fx_max for float rows of 8 chunks and more: four chunks per step into four maxima. One chain of
   vector maxima waits on each max's latency (perf put a fifth of logsumexp 4096x1000 float32
   on it, Zen 5; docs/performance.md, session 11). A max is exact: the order changes no
   result. Out of line, and a function of its own rather than a step that fills fx_max's
   maxima: with their address passed out, GCC kept them in memory in every short row too
   (C = 100: 3-6% slower). */
FX_NOINLINE FX_T FX_NAME(fx_max_long)(const FX_T *x, ptrdiff_t n)
{
    FX_T acc[FX_CHUNK], acc1[FX_CHUNK], acc2[FX_CHUNK], acc3[FX_CHUNK];
    ptrdiff_t j = 0;
    for (int k = 0; k < FX_CHUNK; ++k) {
        acc[k] = acc1[k] = acc2[k] = acc3[k] = -INFINITY;
    }
    for (; j + 4 * FX_CHUNK <= n; j += 4 * FX_CHUNK) {
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            const FX_T *xj = x + j + k;
            acc[k] = xj[0] > acc[k] ? xj[0] : acc[k];
            acc1[k] = xj[FX_CHUNK] > acc1[k] ? xj[FX_CHUNK] : acc1[k];
            acc2[k] = xj[2 * FX_CHUNK] > acc2[k] ? xj[2 * FX_CHUNK] : acc2[k];
            acc3[k] = xj[3 * FX_CHUNK] > acc3[k] ? xj[3 * FX_CHUNK] : acc3[k];
        }
    }
    FX_PRAGMA(omp simd)
    for (int k = 0; k < FX_CHUNK; ++k) {
        const FX_T lo = acc1[k] > acc[k] ? acc1[k] : acc[k];
        const FX_T hi = acc3[k] > acc2[k] ? acc3[k] : acc2[k];
        acc[k] = hi > lo ? hi : lo;
    }
    return FX_NAME(fx_max_rest)(x, j, n, acc);
}

/* max(x[0:n]) over the values that are not NaN, -inf for n == 0 (a NaN never compares
   greater). NaN reaches the results through the sums of exponentials instead. */
static inline FX_T FX_NAME(fx_max)(const FX_T *x, ptrdiff_t n)
{
    /* float rows only: a chunk of doubles is two vectors, two chains already, and four
       chunks per step made the float64 softmax and loss gradient at C = 1000 4-7% slower */
    if (sizeof(FX_T) == 4 && n >= 8 * FX_CHUNK) {
        return FX_NAME(fx_max_long)(x, n);
    }
    FX_T acc[FX_CHUNK];
    for (int k = 0; k < FX_CHUNK; ++k) {
        acc[k] = -INFINITY;
    }
    return FX_NAME(fx_max_rest)(x, 0, n, acc);
}

/* Whether x[0:n] holds a NaN (rarely called: only for rows whose max is infinite). */
static inline int FX_NAME(fx_has_nan)(const FX_T *x, ptrdiff_t n)
{
    int nan = 0;
    FX_PRAGMA(omp simd reduction(|:nan))
    for (ptrdiff_t j = 0; j < n; ++j) {
        nan |= x[j] != x[j];
    }
    return nan;
}

/* sum(exp(x - shift)) in double, shift >= max(x). Padded lanes are -inf, whose exp is 0.

   The exponentials of four chunks (then of a pair, where fewer are left) are added in the
   row type, as (e0 + e1) + (e2 + e3), before they join the double partial sums. The
   conversion to double is what costs: on AMD Zen 5 a float-to-double conversion takes a slot
   of the FMA pipes, which the exp fills already, and converting each four once instead of
   each pair made the float pass 1.16x faster at C = 1024 and 1.25x at C = 128 (C micro
   benchmark, docs/performance.md, session 12; pairs instead of single chunks had made it 20%
   faster in v7). The float additions round each four by at most one ulp, relative to the
   four (half an ulp for a pair); each exponential already carries up to one ulp of its own,
   and the sums past the fours are in double. Float rows only (FX_FOURS): a double needs no
   conversion, and fours made the float64 passes 1-3% slower. */
static inline double FX_NAME(fx_sumexp)(const FX_T *x, ptrdiff_t n, FX_T shift)
{
    double acc[FX_CHUNK] = {0};
    ptrdiff_t j = 0, ahead = FX_PREFETCH_AHEAD(n, FX_T);
    for (; FX_FOURS && j + 4 * FX_CHUNK <= n; j += 4 * FX_CHUNK) {
        for (int c = 0; c < 4; ++c) {
            FX_PREFETCH_CHUNK(x + j + c * FX_CHUNK + ahead);
        }
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            acc[k] += (double)((FX_EXP_LE0(x[j + k] - shift)
                                + FX_EXP_LE0(x[j + FX_CHUNK + k] - shift))
                               + (FX_EXP_LE0(x[j + 2 * FX_CHUNK + k] - shift)
                                  + FX_EXP_LE0(x[j + 3 * FX_CHUNK + k] - shift)));
        }
    }
    for (; j + 2 * FX_CHUNK <= n; j += 2 * FX_CHUNK) {
        FX_PREFETCH_CHUNK(x + j + ahead);
        FX_PREFETCH_CHUNK(x + j + FX_CHUNK + ahead);
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            acc[k] += (double)(FX_EXP_LE0(x[j + k] - shift)
                               + FX_EXP_LE0(x[j + FX_CHUNK + k] - shift));
        }
    }
    for (; j < n; j += FX_CHUNK) {          /* at most a whole chunk and a partial one */
        /* lanes past the end compared in 32 bits: j + k < n in 64-bit lanes took two
           compares and a merge of masks per chunk */
        const int left = (int)(n - j < FX_CHUNK ? n - j : FX_CHUNK);
        if (left <= FX_CHUNK / 2) {
            /* half a chunk: half the vector width, where the exp's instructions cost half
               (C = 100 and 1000 end in 4 and 8 floats) */
            FX_PRAGMA(omp simd)
            for (int k = 0; k < FX_CHUNK / 2; ++k) {
                FX_T v = k < left ? x[j + k] : -INFINITY;
                acc[k] += (double)FX_EXP_LE0(v - shift);
            }
            continue;
        }
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            FX_T v = k < left ? x[j + k] : -INFINITY;
            acc[k] += (double)FX_EXP_LE0(v - shift);
        }
    }
    return fx_chunk_sum(acc);
}

/* out = exp(x - shift), returns sum(out) in double; shift >= max(x). out may be x. Storing the
   exponentials lets softmax and the loss gradient rescale them instead of computing exp a
   second time. */
static inline double FX_NAME(fx_expstore)(const FX_T *x, FX_T *out, ptrdiff_t n, FX_T shift)
{
    double acc[FX_CHUNK] = {0};
    ptrdiff_t j = 0, ahead = FX_PREFETCH_AHEAD(n, FX_T);
    for (; FX_FOURS && j + 4 * FX_CHUNK <= n; j += 4 * FX_CHUNK) {     /* as fx_sumexp */
        for (int c = 0; c < 4; ++c) {
            FX_PREFETCH_CHUNK(x + j + c * FX_CHUNK + ahead);
            FX_PREFETCH_CHUNK_W(out + j + c * FX_CHUNK + ahead);
        }
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            FX_T e0 = FX_EXP_LE0(x[j + k] - shift);
            FX_T e1 = FX_EXP_LE0(x[j + FX_CHUNK + k] - shift);
            FX_T e2 = FX_EXP_LE0(x[j + 2 * FX_CHUNK + k] - shift);
            FX_T e3 = FX_EXP_LE0(x[j + 3 * FX_CHUNK + k] - shift);
            out[j + k] = e0;
            out[j + FX_CHUNK + k] = e1;
            out[j + 2 * FX_CHUNK + k] = e2;
            out[j + 3 * FX_CHUNK + k] = e3;
            acc[k] += (double)((e0 + e1) + (e2 + e3));
        }
    }
    for (; j + 2 * FX_CHUNK <= n; j += 2 * FX_CHUNK) {
        FX_PREFETCH_CHUNK(x + j + ahead);
        FX_PREFETCH_CHUNK(x + j + FX_CHUNK + ahead);
        FX_PREFETCH_CHUNK_W(out + j + ahead);
        FX_PREFETCH_CHUNK_W(out + j + FX_CHUNK + ahead);
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            FX_T e0 = FX_EXP_LE0(x[j + k] - shift);
            FX_T e1 = FX_EXP_LE0(x[j + FX_CHUNK + k] - shift);
            out[j + k] = e0;
            out[j + FX_CHUNK + k] = e1;
            acc[k] += (double)(e0 + e1);
        }
    }
    for (; j < n; j += FX_CHUNK) {
        const int left = (int)(n - j < FX_CHUNK ? n - j : FX_CHUNK);     /* as fx_sumexp */
        FX_PRAGMA(omp simd)
        for (int k = 0; k < FX_CHUNK; ++k) {
            FX_T v = k < left ? x[j + k] : -INFINITY;
            FX_T e = FX_EXP_LE0(v - shift);
            if (k < left) {
                out[j + k] = e;
            }
            acc[k] += (double)e;
        }
    }
    return fx_chunk_sum(acc);
}

/* sum(exp(x - m)) for an m >= max(x) that fx_max may have returned: with m = -inf every
   element is -inf, adding 0, or NaN (which fx_max skips), adding NaN. */
static inline double FX_NAME(fx_sumexp_below)(const FX_T *x, ptrdiff_t n, FX_T m)
{
    if (m == -INFINITY) {
        return FX_NAME(fx_has_nan)(x, n) ? NAN : 0.0;
    }
    return FX_NAME(fx_sumexp)(x, n, m);
}

/* The online normaliser's step (Milakov & Gimelshein, 2018): a block whose max bm exceeds the
   running max *m raises it, rescaling the sum of exponentials so far, *s, to the new max. */
static inline void FX_NAME(fx_raise_max)(FX_T *m, double *s, FX_T bm)
{
    if (bm > *m) {
        if (*s != 0.0) {
            *s *= exp((double)*m - (double)bm);
        }
        *m = bm;
    }
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
        FX_NAME(fx_raise_max)(&m, &s, FX_NAME(fx_max)(x + b, len));
        s += FX_NAME(fx_sumexp_below)(x + b, len, m);
    }
    *max = m;
    *sum = s;
}

/* Long rows, written in blocks of FX_ONLINE_BLOCK elements: out = exp(x - shift[i]) in block i,
   shift[i] the running max of the row up to the end of block i, and returns sum(exp(x - max))
   in double with *max the row's max. The kernels that write a row longer than a fraction of L2
   use it (with fx_scale_blocks or fx_axpw_blocks after): the row is read from memory once, each
   block's max then its exponentials from L1, where max, then exponentials, then the rescale
   needed the input and the output of the row in L2 at once, and a row of 1 MB of doubles ran
   1.5x slower per element than one of 64 KB. Blocks before the first finite max store 0 (their
   elements are -inf, or NaN, which makes the sum NaN). At most FX_ONLINE_MAX_BLOCKS blocks. */
#ifndef FX_ONLINE_BLOCK
#define FX_ONLINE_BLOCK 2048
#define FX_ONLINE_MAX_BLOCKS 256
#endif
static inline double FX_NAME(fx_max_expstore)(const FX_T *x, FX_T *out, ptrdiff_t n,
                                              FX_T *shift, double *max)
{
    FX_T m = -INFINITY;
    double s = 0.0;
    for (ptrdiff_t b = 0, i = 0; b < n; b += FX_ONLINE_BLOCK, ++i) {
        ptrdiff_t len = n - b < FX_ONLINE_BLOCK ? n - b : FX_ONLINE_BLOCK;
        FX_NAME(fx_raise_max)(&m, &s, FX_NAME(fx_max)(x + b, len));
        shift[i] = m;
        if (m == -INFINITY) {
            s += FX_NAME(fx_sumexp_below)(x + b, len, m);
            memset(out + b, 0, (size_t)len * sizeof(FX_T));
        } else {
            s += FX_NAME(fx_expstore)(x + b, out + b, len, m);
        }
    }
    *max = m;
    return s;
}

/* y *= a. */
static inline void FX_NAME(fx_scale)(FX_T *y, ptrdiff_t n, FX_T a)
{
    FX_ROW_MAP(n, j, y, FX_IN(y, j) * a, 0);
}

/* y *= a * exp(shift[i] - m) in block i of fx_max_expstore's blocks: its exponentials, brought
   to the row's max m and scaled by a. */
static inline void FX_NAME(fx_scale_blocks)(FX_T *y, ptrdiff_t n, const FX_T *shift, double m,
                                            double a)
{
    for (ptrdiff_t b = 0, i = 0; b < n; b += FX_ONLINE_BLOCK, ++i) {
        ptrdiff_t len = n - b < FX_ONLINE_BLOCK ? n - b : FX_ONLINE_BLOCK;
        FX_NAME(fx_scale)(y + b, len, (FX_T)(a * exp((double)shift[i] - m)));
    }
}

/* out = x - c for a double c, out may be x. c is split into hi + lo of the row type, and
   x - hi is exact near the row's top (where x and hi are within a factor of two), so the
   result is rounded about once, as if the difference were taken in double, at two vector
   operations per element instead of two conversions and back. */
static inline void FX_NAME(fx_sub)(const FX_T *x, FX_T *out, ptrdiff_t n, double c)
{
    FX_T hi = (FX_T)c, lo = (FX_T)(c - (double)hi);
    FX_ROW_MAP(n, j, out, (FX_IN(x, j) - hi) - lo, FX_PREFETCH_AHEAD(n, FX_T));
}

/* sum(a * w) in double, w a double vector (class weights), or sum(a) when w is NULL. */
static inline double FX_NAME(fx_wsum)(const FX_T *a, const double *w, ptrdiff_t n)
{
    double s;
    if (w == NULL) {
        FX_ROW_SUM(n, j, (double)FX_IN(a, j), s);
    } else {
        FX_ROW_SUM(n, j, (double)FX_IN(a, j) * FX_IN(w, j), s);
    }
    return s;
}

/* sum(a * b) in double. */
static inline double FX_NAME(fx_dot)(const FX_T *a, const FX_T *b, ptrdiff_t n)
{
    double s;
    FX_ROW_SUM(n, j, (double)FX_IN(a, j) * (double)FX_IN(b, j), s);
    return s;
}

/* out = y * (g - d): the softmax vector-Jacobian product once d = sum(g * y) is known. */
static inline void FX_NAME(fx_mul_sub)(const FX_T *y, const FX_T *g, FX_T *out, ptrdiff_t n,
                                       double d)
{
    FX_ROW_MAP(n, j, out, (FX_T)((double)FX_IN(y, j) * ((double)FX_IN(g, j) - d)),
               FX_PREFETCH_AHEAD(n, FX_T));
}

/* fx_dot that also keeps, for the pass after it, each product a * b and each b in double:
   prod[j] and bd[j], j < max(n, FX_CHUNK) (a row shorter than a chunk writes all of its
   chunk's lanes). */
FX_ALWAYS_INLINE double FX_NAME(fx_keep_product)(FX_T a, FX_T b, double *prod, double *bd)
{
    const double bb = (double)b, p = (double)a * bb;
    *prod = p;
    *bd = bb;
    return p;
}

static inline double FX_NAME(fx_dot_keep)(const FX_T *a, const FX_T *b, ptrdiff_t n,
                                          double *prod, double *bd)
{
    double s;
    FX_ROW_SUM(n, j, FX_NAME(fx_keep_product)(FX_IN(a, j), FX_IN(b, j), prod + j, bd + j), s);
    return s;
}

/* out = y * g - y * d from the products and y kept by fx_dot_keep: fx_mul_sub without
   converting a float row to double a second time (softmax_backward's row pass at C = 100
   spent 10 of its 31 vector instructions per 16 floats there). y * g is exact in double, and
   one fused multiply-add rounds y * g - y * d once, so the result is as close as
   y * (g - d) in double, or closer. */
static inline void FX_NAME(fx_mul_sub_kept)(const double *prod, const double *yd, FX_T *out,
                                            ptrdiff_t n, double d)
{
    FX_ROW_MAP(n, j, out, (FX_T)(FX_IN(prod, j) - FX_IN(yd, j) * d),
               FX_PREFETCH_AHEAD(n, FX_T));
}

/* out = g - exp(y) * s: the log-softmax vector-Jacobian product once s = sum(g) is known. */
static inline void FX_NAME(fx_sub_expmul)(const FX_T *g, const FX_T *y, FX_T *out, ptrdiff_t n,
                                          FX_T s)
{
    FX_ROW_MAP(n, j, out, FX_IN(g, j) - FX_EXP(FX_IN(y, j)) * s,
               FX_PREFETCH_AHEAD(n, FX_T));
}

/* out = a * exp(x - shift): the log-sum-exp vector-Jacobian product. */
static inline void FX_NAME(fx_expmul)(const FX_T *x, FX_T *out, ptrdiff_t n, FX_T shift, FX_T a)
{
    FX_ROW_MAP(n, j, out, a * FX_EXP(FX_IN(x, j) - shift),
               FX_PREFETCH_AHEAD(n, FX_T));
}

/* g = alpha * g - beta * w (w NULL: - beta): turns stored exponentials into the gradient of a
   loss whose per-class coefficients are beta * w. */
static inline void FX_NAME(fx_axpw)(FX_T *g, const double *w, ptrdiff_t n, FX_T alpha,
                                    FX_T beta)
{
    if (w == NULL) {
        FX_ROW_MAP(n, j, g, alpha * FX_IN(g, j) - beta, 0);
    } else {
        FX_ROW_MAP(n, j, g, alpha * FX_IN(g, j) - beta * (FX_T)FX_IN(w, j), 0);
    }
}

/* g = alpha * exp(shift[i] - m) * g - beta * w in block i of fx_max_expstore's blocks (w NULL:
   - beta): fx_axpw for exponentials stored in blocks. */
static inline void FX_NAME(fx_axpw_blocks)(FX_T *g, const double *w, ptrdiff_t n,
                                           const FX_T *shift, double m, double alpha, FX_T beta)
{
    for (ptrdiff_t b = 0, i = 0; b < n; b += FX_ONLINE_BLOCK, ++i) {
        ptrdiff_t len = n - b < FX_ONLINE_BLOCK ? n - b : FX_ONLINE_BLOCK;
        FX_NAME(fx_axpw)(g + b, w == NULL ? NULL : w + b, len,
                         (FX_T)(alpha * exp((double)shift[i] - m)), beta);
    }
}

/* Coefficients of a probability target: c = w * (a * t + b) (w NULL: 1). Returns sum(c) and
   sum(c * x) in double, both from one pass over the row (two passes took 47% of a C = 100
   loss against probabilities, perf, session 8). */
static inline void FX_NAME(fx_coef_sums)(const FX_T *x, const FX_T *t, const double *w,
                                         ptrdiff_t n, double a, double b,
                                         double *sum_c, double *sum_cx)
{
    if (w == NULL) {
        FX_ROW_SUM2(n, j, a * (double)FX_IN(t, j) + b,
                    (a * (double)FX_IN(t, j) + b) * (double)FX_IN(x, j), *sum_c, *sum_cx);
    } else {
        FX_ROW_SUM2(n, j, (a * (double)FX_IN(t, j) + b) * FX_IN(w, j),
                    (a * (double)FX_IN(t, j) + b) * FX_IN(w, j) * (double)FX_IN(x, j),
                    *sum_c, *sum_cx);
    }
}

/* g = alpha * g - r * c with c = w * (a * t + b), the probability-target gradient. */
static inline void FX_NAME(fx_axpc)(FX_T *g, const FX_T *t, const double *w, ptrdiff_t n,
                                    FX_T alpha, double r, double a, double b)
{
    if (w == NULL) {
        FX_ROW_MAP(n, j, g, (FX_T)((double)(alpha * FX_IN(g, j))
                                   - r * (a * (double)FX_IN(t, j) + b)), 0);
    } else {
        FX_ROW_MAP(n, j, g, (FX_T)((double)(alpha * FX_IN(g, j))
                                   - r * ((a * (double)FX_IN(t, j) + b) * FX_IN(w, j))), 0);
    }
}
