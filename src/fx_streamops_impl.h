/*
 * Template body of fx_streamops.h (FX_T, FX_NAME as in fx_rowops_impl.h).
 */

/* a_blk[i] = (FX_T)(alpha * exp(shift[i] - m)) for the blocks of a row of n elements written
   by fx_max_expstore: the factors that fx_scale_blocks and fx_axpw_blocks compute block by
   block. */
static inline void FX_NAME(fx_block_factors)(const FX_T *shift, ptrdiff_t n, double m,
                                             double alpha, FX_T *a_blk)
{
    for (ptrdiff_t b = 0, i = 0; b < n; b += FX_ONLINE_BLOCK, ++i) {
        a_blk[i] = (FX_T)(alpha * exp((double)shift[i] - m));
    }
}

/* Starts the output of a row (see fx_stream_t): out = a_blk[i] * e (softmax, has_beta 0), or
   a_blk[i] * e - beta * w, minus gamma at label (the loss gradient); zero: an ignored row's
   zeros. */
static inline void FX_NAME(fx_stream_start)(fx_stream_t *st, FX_T *out, const FX_T *e,
                                            ptrdiff_t n, const FX_T *a_blk, int has_beta,
                                            FX_T beta, const double *w, ptrdiff_t label,
                                            FX_T gamma, int zero)
{
    st->out = out;
    st->e = e;
    st->a_blk = a_blk;
    st->w = w;
    st->beta = beta;
    st->gamma = gamma;
    st->n = n;
    st->next = 0;
    st->label = label;
    st->has_beta = has_beta;
    st->zero = zero;
    st->active = 1;
}

/* buf[0:hi - lo] = the values of elements [lo, hi) of the row, with the expressions of
   fx_scale (e * a) and fx_axpw (a * e - beta [* w]), so the same bits. */
static inline void FX_NAME(fx_stream_values)(const fx_stream_t *st, ptrdiff_t lo, ptrdiff_t hi,
                                             FX_T *buf)
{
    const FX_T *e = (const FX_T *)st->e, *a_blk = (const FX_T *)st->a_blk;
    const FX_T beta = (FX_T)st->beta;
    if (st->zero) {
        for (ptrdiff_t k = 0; k < hi - lo; ++k) {
            buf[k] = 0;
        }
        return;
    }
    for (ptrdiff_t b = lo; b < hi;) {
        const ptrdiff_t i = b / FX_ONLINE_BLOCK;
        const ptrdiff_t end = (i + 1) * FX_ONLINE_BLOCK < hi ? (i + 1) * FX_ONLINE_BLOCK : hi;
        const ptrdiff_t len = end - b;
        const FX_T a = a_blk[i];
        const FX_T *eb = e + b;
        FX_T *o = buf + (b - lo);
        if (!st->has_beta) {
            FX_PRAGMA(omp simd)
            for (ptrdiff_t k = 0; k < len; ++k) {
                o[k] = eb[k] * a;
            }
        } else if (st->w == NULL) {
            FX_PRAGMA(omp simd)
            for (ptrdiff_t k = 0; k < len; ++k) {
                o[k] = a * eb[k] - beta;
            }
        } else {
            const double *wb = st->w + b;
            FX_PRAGMA(omp simd)
            for (ptrdiff_t k = 0; k < len; ++k) {
                o[k] = a * eb[k] - beta * (FX_T)wb[k];
            }
        }
        b = end;
    }
    if (st->label >= lo && st->label < hi) {
        buf[st->label - lo] -= (FX_T)st->gamma;
    }
}

/* out[0:len] = buf[0:len]: whole 64-byte lines of out with streaming stores, the elements
   before the first line boundary and after the last with ordinary ones. */
static inline void FX_NAME(fx_stream_write)(FX_T *out, const FX_T *buf, ptrdiff_t len)
{
    ptrdiff_t k = 0;
#if FX_HAS_STREAM
    const ptrdiff_t per_line = FX_LINE_BYTES / (ptrdiff_t)sizeof(FX_T);
    if ((uintptr_t)out % sizeof(FX_T) == 0) {
        ptrdiff_t head = (ptrdiff_t)((-(uintptr_t)out & (FX_LINE_BYTES - 1)) / sizeof(FX_T));
        head = head < len ? head : len;
        for (; k < head; ++k) {
            out[k] = buf[k];
        }
        for (; k + per_line <= len; k += per_line) {
            fx_stream_line(out + k, buf + k);
        }
    }
#endif
    for (; k < len; ++k) {
        out[k] = buf[k];
    }
}

/* Writes the next FX_STREAM_STEP elements of the row, or fewer: the step ends on a line
   boundary of out (or at the row's end), so that the steps after the first stream whole lines
   only. */
static inline void FX_NAME(fx_stream_step)(fx_stream_t *st)
{
    FX_T buf[FX_STREAM_STEP];
    FX_T *out = (FX_T *)st->out;
    const ptrdiff_t lo = st->next;
    ptrdiff_t hi = lo + FX_STREAM_STEP;
    if (hi >= st->n) {
        hi = st->n;
    } else if ((uintptr_t)out % sizeof(FX_T) == 0) {
        const uintptr_t end = (uintptr_t)(out + hi) & ~(uintptr_t)(FX_LINE_BYTES - 1);
        const ptrdiff_t aligned = (ptrdiff_t)((end - (uintptr_t)out) / sizeof(FX_T));
        hi = aligned > lo ? aligned : hi;
    }
    FX_NAME(fx_stream_values)(st, lo, hi, buf);
    FX_NAME(fx_stream_write)(out + lo, buf, hi - lo);
    st->next = hi;
}

/* Writes what is left of the row and ends it. */
static inline void FX_NAME(fx_stream_finish)(fx_stream_t *st)
{
    if (!st->active) {
        return;
    }
    while (st->next < st->n) {
        FX_NAME(fx_stream_step)(st);
    }
    st->active = 0;
}

/* fx_max_expstore of row x into e (a scratch row), with the output of another row, st,
   written a step after each FX_STREAM_STEP elements of this row's max: the max is the pass
   that reads x from memory (the exponentials then read it from L1), so reads and streaming
   stores overlap. The same results as fx_max_expstore: a max is exact in any order. */
static inline double FX_NAME(fx_max_expstore_along)(const FX_T *x, FX_T *e, ptrdiff_t n,
                                                    FX_T *shift, double *max, fx_stream_t *st)
{
    FX_T m = -INFINITY;
    double s = 0.0;
    for (ptrdiff_t b = 0, i = 0; b < n; b += FX_ONLINE_BLOCK, ++i) {
        const ptrdiff_t len = n - b < FX_ONLINE_BLOCK ? n - b : FX_ONLINE_BLOCK;
        FX_T bm = -INFINITY;
        for (ptrdiff_t k = 0; k < len; k += FX_STREAM_STEP) {
            const ptrdiff_t step = len - k < FX_STREAM_STEP ? len - k : FX_STREAM_STEP;
            const FX_T sm = FX_NAME(fx_max)(x + b + k, step);
            bm = sm > bm ? sm : bm;
            if (st->active && st->next < st->n) {
                FX_NAME(fx_stream_step)(st);
            }
        }
        FX_NAME(fx_raise_max)(&m, &s, bm);
        shift[i] = m;
        if (m == -INFINITY) {
            s += FX_NAME(fx_sumexp_below)(x + b, len, m);
            memset(e + b, 0, (size_t)len * sizeof(FX_T));
        } else {
            s += FX_NAME(fx_expstore)(x + b, e + b, len, m);
        }
    }
    *max = m;
    return s;
}
