/*
 * Template body of fx_blockops.h (FX_T, FX_NAME, FX_EXP, FX_EXP_LE0 as in fx_rowops_impl.h;
 * FX_GATHER the gather for FX_T; FX_LABEL_T the signed integer as wide as FX_T, and
 * FX_LABELS(u) the lanes of that width in a fx_blk_labels_t).
 *
 * A block is `nr` rows of `nc` columns held transposed: element (r, j) at bt[j * FX_LANES + r].
 * Every loop runs over the rows in its inner, vectorised dimension, so one vector lane works
 * on one row and the per-row results (max, sum, log) come out of plain vector operations, with
 * no horizontal reductions and no partial vectors, whatever nc is.
 */

/* bt = the rows x[r * ld + j] of a block, transposed; m[r] = the max of row r over its
   values that are not NaN, nan[r] = whether it holds a NaN (m NULL: no max, nor nan; the
   backward ops load their inputs so). With register tiles or gathers, whole vectors of rows
   (the rest of the rows below), then the max from L1. The rows past nr are padded with
   zeros, for the passes below that compute every lane. */
static inline void FX_NAME(fx_blk_load_max)(const FX_T *x, ptrdiff_t ld, ptrdiff_t nr,
                                            ptrdiff_t nc, FX_T *bt, FX_T *m, int *nan)
{
    const int width = FX_GATHER_N(FX_T);
    ptrdiff_t r0 = 0;
    if (m != NULL) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < nr; ++r) {
            m[r] = -INFINITY;
            nan[r] = 0;
        }
    }
    const int tile = FX_TILE_N(FX_T);
    if (tile > 0 && fx_use_tiles) {
        for (; r0 + tile <= nr; r0 += tile) {
            for (ptrdiff_t j = 0; j < nc; j += tile) {
                FX_TILE_LOAD(x + r0 * ld + j, ld, (int)(nc - j < tile ? nc - j : tile),
                             bt + j * FX_LANES + r0);
            }
        }
    }
    /* The offsets r * ld are 32-bit integers in a gather. */
    else if (width > 0 && fx_use_gathers && ld <= INT32_MAX / FX_LANES
             && ld >= -(INT32_MAX / FX_LANES)) {
        int32_t offset[FX_LANES];
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            offset[r] = (int32_t)(r * ld);
        }
        for (; r0 + width <= nr; r0 += width) {
            for (ptrdiff_t j = 0; j < nc; ++j) {
                FX_GATHER(x + j, offset + r0, bt + j * FX_LANES + r0);
            }
        }
    }
    if (m == NULL) {
        for (ptrdiff_t j = 0; j < nc; ++j) {
            FX_PRAGMA(omp simd)
            for (ptrdiff_t r = r0; r < nr; ++r) {
                bt[j * FX_LANES + r] = x[r * ld + j];
            }
        }
    } else {
        for (ptrdiff_t j = 0; j < nc; ++j) {    /* the max of the rows transposed above */
            FX_PRAGMA(omp simd)
            for (ptrdiff_t r = 0; r < r0; ++r) {
                FX_T v = bt[j * FX_LANES + r];
                m[r] = v > m[r] ? v : m[r];
                nan[r] |= v != v;
            }
        }
        for (ptrdiff_t j = 0; j < nc; ++j) {
            FX_PRAGMA(omp simd)
            for (ptrdiff_t r = r0; r < nr; ++r) {
                FX_T v = x[r * ld + j];
                bt[j * FX_LANES + r] = v;
                m[r] = v > m[r] ? v : m[r];
                nan[r] |= v != v;
            }
        }
        for (ptrdiff_t r = nr; r < FX_LANES; ++r) {
            m[r] = 0;
            nan[r] = 0;
        }
    }
    for (ptrdiff_t j = 0; j < nc; ++j) {        /* padding rows: zeros */
        for (ptrdiff_t r = nr; r < FX_LANES; ++r) {
            bt[j * FX_LANES + r] = 0;
        }
    }
}

/* y[r * ld + j] = the transposed block bt, rows r < nr. In register tiles where the build has
   them; else with `flat` (y's rows contiguous: ld == nc), the
   block is one run of memory and y[k] = bt[flat[k]], flat[k] = (k % nc) * FX_LANES + k / nc:
   a gather per vector of y where the build has gathers, else a scalar loop (3x fewer
   instructions than one of nc per row even so). */
static inline void FX_NAME(fx_blk_store)(const FX_T *bt, ptrdiff_t nr, ptrdiff_t nc, FX_T *y,
                                         ptrdiff_t ld, const int32_t *flat)
{
    const int tile = FX_TILE_N(FX_T);
    if (tile > 0 && fx_use_tiles) {
        ptrdiff_t r0 = 0;
        for (; r0 + tile <= nr; r0 += tile) {
            for (ptrdiff_t j = 0; j < nc; j += tile) {
                FX_TILE_STORE(bt + j * FX_LANES + r0, (int)(nc - j < tile ? nc - j : tile),
                              y + r0 * ld + j, ld);
            }
        }
        for (ptrdiff_t r = r0; r < nr; ++r) {
            for (ptrdiff_t j = 0; j < nc; ++j) {
                y[r * ld + j] = bt[j * FX_LANES + r];
            }
        }
        return;
    }
    if (flat != NULL) {
        const int width = FX_GATHER_N(FX_T);
        ptrdiff_t n = nr * nc, k = 0;
        if (width > 0 && fx_use_gathers) {
            for (; k + width <= n; k += width) {
                FX_GATHER(bt, flat + k, y + k);
            }
        }
        FX_PRAGMA(omp simd)
        for (ptrdiff_t i = k; i < n; ++i) {
            y[i] = bt[flat[i]];
        }
        return;
    }
    for (ptrdiff_t r = 0; r < nr; ++r) {
        for (ptrdiff_t j = 0; j < nc; ++j) {
            y[r * ld + j] = bt[j * FX_LANES + r];
        }
    }
}

/* The passes below compute every lane of a block: the rows past a partial block's last hold
   zeros from fx_blk_load_max (max 0, sum nc), so constant trip counts cost nothing but the
   last block's padding, and no lane ever computes on garbage. */

/* s[r] = sum_j exp(x - m[r]) in double; with store, also et = exp(x - m[r]). store is a
   constant in each call below, so that no loop holds a branch on it: a conditional store in
   a loop left it scalar where the instruction set has no masked store (SSE2: the baseline
   build's exponentials, half of its C = 10 loss gradient; perf). */
FX_ALWAYS_INLINE void FX_NAME(fx_blk_sumexp_impl)(const FX_T *bt, ptrdiff_t nc, const FX_T *m,
                                                  double *s, FX_T *et, const int store)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        s[r] = 0.0;
    }
    ptrdiff_t j = 0;
    /* Four columns' exponentials (float), then pairs, added in the row type first, as in
       fx_sumexp: one conversion to double per four or pair. */
    for (; FX_FOURS && j + 4 <= nc; j += 4) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            FX_T e0 = FX_EXP_LE0(bt[j * FX_LANES + r] - m[r]);
            FX_T e1 = FX_EXP_LE0(bt[(j + 1) * FX_LANES + r] - m[r]);
            FX_T e2 = FX_EXP_LE0(bt[(j + 2) * FX_LANES + r] - m[r]);
            FX_T e3 = FX_EXP_LE0(bt[(j + 3) * FX_LANES + r] - m[r]);
            if (store) {
                et[j * FX_LANES + r] = e0;
                et[(j + 1) * FX_LANES + r] = e1;
                et[(j + 2) * FX_LANES + r] = e2;
                et[(j + 3) * FX_LANES + r] = e3;
            }
            s[r] += (double)((e0 + e1) + (e2 + e3));
        }
    }
    for (; j + 2 <= nc; j += 2) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            FX_T e0 = FX_EXP_LE0(bt[j * FX_LANES + r] - m[r]);
            FX_T e1 = FX_EXP_LE0(bt[(j + 1) * FX_LANES + r] - m[r]);
            if (store) {
                et[j * FX_LANES + r] = e0;
                et[(j + 1) * FX_LANES + r] = e1;
            }
            s[r] += (double)(e0 + e1);
        }
    }
    if (j < nc) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            FX_T e = FX_EXP_LE0(bt[j * FX_LANES + r] - m[r]);
            if (store) {
                et[j * FX_LANES + r] = e;
            }
            s[r] += (double)e;
        }
    }
}

static inline void FX_NAME(fx_blk_sumexp)(const FX_T *bt, ptrdiff_t nc, const FX_T *m,
                                          double *s, FX_T *et)
{
    if (et != NULL) {
        FX_NAME(fx_blk_sumexp_impl)(bt, nc, m, s, et, 1);
    } else {
        FX_NAME(fx_blk_sumexp_impl)(bt, nc, m, s, NULL, 0);
    }
}

/* out[r] = m[r] + log_s[r], a row's log-sum-exp, where its max is finite and it holds no NaN;
   NaN elsewhere: all -inf, a +inf or a NaN leave the softmax and the loss undefined, as in
   PyTorch. */
static inline void FX_NAME(fx_blk_lse)(const FX_T *m, const int *nan, const double *log_s,
                                       double *out)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        int defined = !nan[r] && m[r] != INFINITY && m[r] != -INFINITY;
        out[r] = defined ? (double)m[r] + log_s[r] : NAN;
    }
}

/* out[r] = 1 / s[r], the softmax's scale, where fx_blk_lse is defined; NaN elsewhere. */
static inline void FX_NAME(fx_blk_inv)(const FX_T *m, const int *nan, const double *s,
                                       FX_T *out)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        int defined = !nan[r] && m[r] != INFINITY && m[r] != -INFINITY;
        out[r] = defined ? (FX_T)(1.0 / s[r]) : (FX_T)NAN;
    }
}

/* s[r] = sum_j x * w[j] in double (w NULL: 1). */
static inline void FX_NAME(fx_blk_wsum)(const FX_T *bt, ptrdiff_t nc, const double *w,
                                        double *s)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        s[r] = 0.0;
    }
    for (ptrdiff_t j = 0; j < nc; ++j) {
        double wj = w == NULL ? 1.0 : w[j];
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            s[r] += (double)bt[j * FX_LANES + r] * wj;
        }
    }
}

/* et = a[r] * et - b[r] * w[j] (w NULL: 1): rescaled exponentials, and loss gradients. With
   class-index labels (labels, from fx_blk_label_terms), also - gamma[r] at the label's
   class, and 0 in the rows that have no label (ignored rows: exactly zero, whatever their
   logits held; padding rows). b NULL: every b[r] is +0 and w is NULL, so a[r] * et - b[r] is
   a[r] * et, bit for bit (x - +0 is x, -0 included), one FMA fewer per element (softmax's
   scale; the loss gradient without label smoothing). The loop is written once, in
   fx_blk_axpw_impl, with has_b and has_lab constants in each call, as fx_blk_sumexp does. */
FX_ALWAYS_INLINE void FX_NAME(fx_blk_axpw_impl)(FX_T *et, ptrdiff_t nc, const FX_T *a,
                                                const FX_T *b, const double *w,
                                                const FX_LABEL_T *lab, const FX_T *gamma,
                                                const int has_b, const int has_lab)
{
    for (ptrdiff_t j = 0; j < nc; ++j) {
        const FX_T wj = w == NULL ? (FX_T)1 : (FX_T)w[j];
        /* gamma subtracted at the label alone, as a select of v - g or v (a masked subtract
           where the ISA has masks). gamma is loaded in every lane: a load under the
           condition becomes a masked load, slow on AVX2. */
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            FX_T v = has_b ? a[r] * et[j * FX_LANES + r] - b[r] * wj
                           : a[r] * et[j * FX_LANES + r];
            if (has_lab) {
                const FX_T g = gamma[r];
                v = lab[r] == (FX_LABEL_T)j ? v - g : v;
            }
            et[j * FX_LANES + r] = v;
        }
    }
}

static inline void FX_NAME(fx_blk_axpw)(FX_T *et, ptrdiff_t nc, const FX_T *a, const FX_T *b,
                                        const double *w, const fx_blk_labels_t *labels,
                                        const FX_T *gamma)
{
    const FX_LABEL_T *lab = labels == NULL ? NULL : FX_LABELS(labels);
    if (lab == NULL && b == NULL) {
        FX_NAME(fx_blk_axpw_impl)(et, nc, a, NULL, NULL, NULL, NULL, 0, 0);
    } else if (lab == NULL) {
        FX_NAME(fx_blk_axpw_impl)(et, nc, a, b, w, NULL, NULL, 1, 0);
    } else if (b == NULL) {
        FX_NAME(fx_blk_axpw_impl)(et, nc, a, NULL, NULL, lab, gamma, 0, 1);
    } else {
        FX_NAME(fx_blk_axpw_impl)(et, nc, a, b, w, lab, gamma, 1, 1);
    }
    if (lab == NULL) {
        return;
    }
    /* Rows without a label, rare but for a block's padding: a select for each element of
       the block in the loop above cost AVX2 twice its instructions. */
    int unlabelled = 0;
    FX_PRAGMA(omp simd reduction(|:unlabelled))
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        unlabelled |= lab[r] < 0;
    }
    if (unlabelled) {
        for (ptrdiff_t j = 0; j < nc; ++j) {
            FX_PRAGMA(omp simd)
            for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
                et[j * FX_LANES + r] = lab[r] < 0 ? (FX_T)0 : et[j * FX_LANES + r];
            }
        }
    }
}

/* What the loss of a block of rows needs of each row's label y[r] (the labels were
   range-checked before any kernel ran: check_labels in _kernels.pyx):
   - lab: y[r] in lanes of the elements' width (fx_blk_labels_t), -1 for an ignored row and
     for the padding rows past nr;
   - xl[r] the logit at the label, wl[r] the label's class weight (w NULL: 1), rs[r] the row's
     gradient scale (row_scale[r], or scale where row_scale is NULL); all 0 in a row without a
     label.
   One select per class and lane instead of a scalar loop over the rows, whose indexed loads
   took a fifth of the loss gradient's time at C = 10 (perf, docs/performance.md,
   session 10). */
static inline void FX_NAME(fx_blk_label_terms)(const FX_T *bt, ptrdiff_t nc, ptrdiff_t nr,
                                               const int64_t *y, int64_t ignore_index,
                                               const double *w, const double *row_scale,
                                               double scale, fx_blk_labels_t *labels,
                                               double *xl, double *wl, double *rs)
{
    FX_LABEL_T *lab = FX_LABELS(labels);
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < nr; ++r) {
        lab[r] = y[r] == ignore_index ? -1 : (FX_LABEL_T)y[r];
    }
    for (ptrdiff_t r = nr; r < FX_LANES; ++r) {
        lab[r] = -1;
    }
    FX_T xt[FX_LANES];
    /* xt and rs as selects, not zeros first: GCC made a loop of zeros a 512-byte memset,
       `rep stos`, 2-5% of the loss gradient at C = 10 (perf, Intel Xeon). */
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        xt[r] = lab[r] == 0 ? bt[r] : (FX_T)0;         /* class 0; nc >= 1 */
        wl[r] = lab[r] >= 0 ? 1.0 : 0.0;
        rs[r] = lab[r] >= 0 ? scale : 0.0;
    }
    if (row_scale != NULL) {
        /* row_scale holds nr entries: the rows past nr are not read */
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < nr; ++r) {
            rs[r] = lab[r] < 0 ? 0.0 : row_scale[r];
        }
    }
    /* Loads and selects in the lanes' own type and width; the conversions once, after. */
    for (ptrdiff_t j = 1; j < nc; ++j) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            const FX_T v = bt[j * FX_LANES + r];
            xt[r] = lab[r] == (FX_LABEL_T)j ? v : xt[r];
        }
    }
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        xl[r] = (double)xt[r];
    }
    if (w != NULL) {
        for (ptrdiff_t j = 0; j < nc; ++j) {
            const double wj = w[j];
            FX_PRAGMA(omp simd)
            for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
                wl[r] = lab[r] == (FX_LABEL_T)j ? wj : wl[r];
            }
        }
    }
}

/* The probability-target coefficients c = w[j] (a t + b) of each row of a block (fx_coef_sums
   of fx_rowops_impl.h across the rows of a block): sum_c[r] = sum_j c, sum_cx[r] = sum_j c x,
   in double. tt is the block of targets, transposed as bt (w NULL: 1). */
static inline void FX_NAME(fx_blk_coef_sums)(const FX_T *bt, const FX_T *tt, ptrdiff_t nc,
                                             const double *w, double a, double b,
                                             double *sum_c, double *sum_cx)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        sum_c[r] = 0.0;
        sum_cx[r] = 0.0;
    }
    for (ptrdiff_t j = 0; j < nc; ++j) {
        double wj = w == NULL ? 1.0 : w[j];
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            double c = (a * (double)tt[j * FX_LANES + r] + b) * wj;
            sum_c[r] += c;
            sum_cx[r] += c * (double)bt[j * FX_LANES + r];
        }
    }
}

/* et = alpha[r] * et - rs[r] c with c = w[j] (a t + b): the probability-target gradient of a
   block, as fx_axpc does for a row. */
static inline void FX_NAME(fx_blk_axpc)(FX_T *et, const FX_T *tt, ptrdiff_t nc,
                                        const double *w, const FX_T *alpha, const double *rs,
                                        double a, double b)
{
    for (ptrdiff_t j = 0; j < nc; ++j) {
        double wj = w == NULL ? 1.0 : w[j];
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            et[j * FX_LANES + r] = (FX_T)((double)(alpha[r] * et[j * FX_LANES + r])
                                          - rs[r] * ((a * (double)tt[j * FX_LANES + r] + b)
                                                     * wj));
        }
    }
}

/* The vector-Jacobian products of the backward ops for a block, the block forms of fx_dot,
   fx_mul_sub, fx_sub_expmul and fx_expmul (fx_rowops_impl.h), with the same expression per
   element. Short rows go through blocks here for the reason the forward ops do, and one more:
   the row passes give a row shorter than a chunk masked lanes, which GCC 12 fills from a
   stale register, and a subnormal there cost a microcode assist per row (the denormal flag of
   tools/time_kernels.py, docs/performance.md, session 9). The padding rows of a block hold
   zeros, so no lane computes on garbage. */

/* s[r] = sum_j a * b in double, a and b transposed blocks. */
static inline void FX_NAME(fx_blk_dot)(const FX_T *at, const FX_T *bt, ptrdiff_t nc, double *s)
{
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        s[r] = 0.0;
    }
    for (ptrdiff_t j = 0; j < nc; ++j) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            s[r] += (double)at[j * FX_LANES + r] * (double)bt[j * FX_LANES + r];
        }
    }
}

/* gt = y * (g - d[r]), in place of the block of g: softmax's vector-Jacobian product. */
static inline void FX_NAME(fx_blk_mul_sub)(const FX_T *yt, FX_T *gt, ptrdiff_t nc,
                                           const double *d)
{
    for (ptrdiff_t j = 0; j < nc; ++j) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            gt[j * FX_LANES + r] = (FX_T)((double)yt[j * FX_LANES + r]
                                          * ((double)gt[j * FX_LANES + r] - d[r]));
        }
    }
}

/* gt = g - exp(y) * s[r], in place of the block of g: log-softmax's vector-Jacobian product.
   The exp for any argument: y is whatever the caller passed as log-softmax's output. */
static inline void FX_NAME(fx_blk_sub_expmul)(FX_T *gt, const FX_T *yt, ptrdiff_t nc,
                                              const FX_T *s)
{
    for (ptrdiff_t j = 0; j < nc; ++j) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            gt[j * FX_LANES + r] = gt[j * FX_LANES + r] - FX_EXP(yt[j * FX_LANES + r]) * s[r];
        }
    }
}

/* xt = a[r] * exp(x - shift[r]), in place: log-sum-exp's vector-Jacobian product. */
static inline void FX_NAME(fx_blk_expmul)(FX_T *xt, ptrdiff_t nc, const FX_T *shift,
                                          const FX_T *a)
{
    for (ptrdiff_t j = 0; j < nc; ++j) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            xt[j * FX_LANES + r] = a[r] * FX_EXP(xt[j * FX_LANES + r] - shift[r]);
        }
    }
}

/* yt = x - c[r] for double c, yt may be bt: as fx_sub, with c[r] split into hi + lo. */
static inline void FX_NAME(fx_blk_sub)(const FX_T *bt, ptrdiff_t nc, const double *c, FX_T *yt)
{
    FX_T hi[FX_LANES], lo[FX_LANES];
    FX_PRAGMA(omp simd)
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        hi[r] = (FX_T)c[r];
        lo[r] = (FX_T)(c[r] - (double)hi[r]);
    }
    for (ptrdiff_t j = 0; j < nc; ++j) {
        FX_PRAGMA(omp simd)
        for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
            yt[j * FX_LANES + r] = (bt[j * FX_LANES + r] - hi[r]) - lo[r];
        }
    }
}

/* The loss of each row of a block against its class index, and the coefficients that turn its
   exponentials into its gradient: xent_row_coefs of _kernels.pyx, the one-row reference, as
   one vector loop (the scalar loop, a division and three conversions per row, took about a
   quarter of the loss gradient's time at C = 10: docs/performance.md, v9). Per row: the
   label's logit xl and class weight wl, the gradient's scale rs (fx_blk_label_terms); rows
   without a label (ignored and padding rows, -1 in labels) get zero loss and coefficients.
   Returns whether some coefficient exceeds `limit`, where the caller redoes the block with
   xent_row_coefs, which scales such rows by a power of two. */
static inline int FX_NAME(fx_blk_xent_coefs)(
    const fx_blk_labels_t *labels, const double *xl, const double *wl, const double *rs,
    ptrdiff_t nc, double smoothing, double weight_total, const double *lse, const double *s,
    const double *wx, double limit, double *loss, FX_T *alpha, FX_T *beta, FX_T *gamma)
{
    const double b = smoothing / (double)nc;
    const FX_LABEL_T *lab = FX_LABELS(labels);
    int over = 0;
    FX_PRAGMA(omp simd reduction(|:over))
    for (ptrdiff_t r = 0; r < FX_LANES; ++r) {
        double a = (1.0 - smoothing) * wl[r];
        double sum_c = a + b * weight_total;
        /* With smoothing, b w x takes part even where b underflows to 0: 0 * inf is NaN. */
        double l = sum_c * lse[r] - a * xl[r] - (smoothing != 0.0 ? b * wx[r] : 0.0);
        double ad = rs[r] * sum_c / s[r], bd = rs[r] * b, gd = rs[r] * a;
        int ok = lab[r] >= 0;
        over |= ok & ((ad > limit) | (ad < -limit) | (bd > limit) | (bd < -limit)
                      | (gd > limit) | (gd < -limit));
        loss[r] = ok ? l : 0.0;
        alpha[r] = ok ? (lse[r] == lse[r] ? (FX_T)ad : (FX_T)NAN) : (FX_T)0;
        beta[r] = ok ? (FX_T)bd : (FX_T)0;
        gamma[r] = ok ? (FX_T)gd : (FX_T)0;
    }
    return over;
}
