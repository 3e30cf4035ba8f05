# cython: language_level=3
"""The vector passes over one row (src/fx_rowops.h) and over a block of short rows
(src/fx_blockops.h), one name per pass for both dtypes.

The C headers define each pass twice (suffix ``_f`` for float, ``_d`` for double); the inline
wrappers below pick one by the fused type at compile time, so the kernels in ``_kernels.pyx``
are written once for ``floating``.
"""

ctypedef fused floating:
    float
    double

cdef extern from "fx_rowops.h" nogil:
    float fx_max_f(const float *x, Py_ssize_t n)
    double fx_max_d(const double *x, Py_ssize_t n)
    int fx_has_nan_f(const float *x, Py_ssize_t n)
    int fx_has_nan_d(const double *x, Py_ssize_t n)
    double fx_expstore_f(const float *x, float *out, Py_ssize_t n, float shift)
    double fx_expstore_d(const double *x, double *out, Py_ssize_t n, double shift)
    double fx_sumexp_below_f(const float *x, Py_ssize_t n, float m)
    double fx_sumexp_below_d(const double *x, Py_ssize_t n, double m)
    void fx_max_sumexp_f(const float *x, Py_ssize_t n, double *m, double *s)
    void fx_max_sumexp_d(const double *x, Py_ssize_t n, double *m, double *s)
    enum:
        FX_CHUNK
        FX_ONLINE_BLOCK
        FX_ONLINE_MAX_BLOCKS
    double fx_max_expstore_f(const float *x, float *out, Py_ssize_t n, float *shift, double *m)
    double fx_max_expstore_d(const double *x, double *out, Py_ssize_t n, double *shift,
                             double *m)
    void fx_scale_blocks_f(float *y, Py_ssize_t n, const float *shift, double m, double a)
    void fx_scale_blocks_d(double *y, Py_ssize_t n, const double *shift, double m, double a)
    void fx_axpw_blocks_f(float *g, const double *w, Py_ssize_t n, const float *shift, double m,
                          double alpha, float beta)
    void fx_axpw_blocks_d(double *g, const double *w, Py_ssize_t n, const double *shift,
                          double m, double alpha, double beta)
    void fx_scale_f(float *y, Py_ssize_t n, float a)
    void fx_scale_d(double *y, Py_ssize_t n, double a)
    void fx_sub_f(const float *x, float *out, Py_ssize_t n, double c)
    void fx_sub_d(const double *x, double *out, Py_ssize_t n, double c)
    double fx_wsum_f(const float *a, const double *w, Py_ssize_t n)
    double fx_wsum_d(const double *a, const double *w, Py_ssize_t n)
    double fx_dot_f(const float *a, const float *b, Py_ssize_t n)
    double fx_dot_d(const double *a, const double *b, Py_ssize_t n)
    double fx_dot_keep_f(const float *a, const float *b, Py_ssize_t n, double *prod, double *bd)
    double fx_dot_keep_d(const double *a, const double *b, Py_ssize_t n, double *prod,
                         double *bd)
    void fx_mul_sub_kept_f(const double *prod, const double *yd, float *out, Py_ssize_t n,
                           double d)
    void fx_mul_sub_kept_d(const double *prod, const double *yd, double *out, Py_ssize_t n,
                           double d)
    void fx_mul_sub_f(const float *y, const float *g, float *out, Py_ssize_t n, double d)
    void fx_mul_sub_d(const double *y, const double *g, double *out, Py_ssize_t n, double d)
    void fx_sub_expmul_f(const float *g, const float *y, float *out, Py_ssize_t n, float s)
    void fx_sub_expmul_d(const double *g, const double *y, double *out, Py_ssize_t n, double s)
    void fx_expmul_f(const float *x, float *out, Py_ssize_t n, float shift, float a)
    void fx_expmul_d(const double *x, double *out, Py_ssize_t n, double shift, double a)
    void fx_axpw_f(float *g, const double *w, Py_ssize_t n, float alpha, float beta)
    void fx_axpw_d(double *g, const double *w, Py_ssize_t n, double alpha, double beta)
    void fx_coef_sums_f(const float *x, const float *t, const double *w, Py_ssize_t n,
                        double a, double b, double *sum_c, double *sum_cx)
    void fx_coef_sums_d(const double *x, const double *t, const double *w, Py_ssize_t n,
                        double a, double b, double *sum_c, double *sum_cx)
    void fx_axpc_f(float *g, const float *t, const double *w, Py_ssize_t n,
                   float alpha, double r, double a, double b)
    void fx_axpc_d(double *g, const double *t, const double *w, Py_ssize_t n,
                   double alpha, double r, double a, double b)


cdef inline floating row_max(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fx_max_f(x, n)
    else:
        return fx_max_d(x, n)


cdef inline bint has_nan(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fx_has_nan_f(x, n)
    else:
        return fx_has_nan_d(x, n)


cdef inline double expstore(const floating *x, floating *out, Py_ssize_t n,
                            floating shift) noexcept nogil:
    if floating is float:
        return fx_expstore_f(x, out, n, shift)
    else:
        return fx_expstore_d(x, out, n, shift)


cdef inline double sumexp_below(const floating *x, Py_ssize_t n, floating m) noexcept nogil:
    if floating is float:
        return fx_sumexp_below_f(x, n, m)
    else:
        return fx_sumexp_below_d(x, n, m)


cdef inline void max_sumexp(const floating *x, Py_ssize_t n, double *m,
                            double *s) noexcept nogil:
    if floating is float:
        fx_max_sumexp_f(x, n, m, s)
    else:
        fx_max_sumexp_d(x, n, m, s)


cdef inline double max_expstore(const floating *x, floating *out, Py_ssize_t n, floating *shift,
                                double *m) noexcept nogil:
    if floating is float:
        return fx_max_expstore_f(x, out, n, shift, m)
    else:
        return fx_max_expstore_d(x, out, n, shift, m)


cdef inline void scale_blocks(floating *y, Py_ssize_t n, const floating *shift, double m,
                              double a) noexcept nogil:
    if floating is float:
        fx_scale_blocks_f(y, n, shift, m, a)
    else:
        fx_scale_blocks_d(y, n, shift, m, a)


cdef inline void axpw_blocks(floating *g, const double *w, Py_ssize_t n, const floating *shift,
                             double m, double alpha, floating beta) noexcept nogil:
    if floating is float:
        fx_axpw_blocks_f(g, w, n, shift, m, alpha, beta)
    else:
        fx_axpw_blocks_d(g, w, n, shift, m, alpha, beta)


cdef extern from "fx_streamops.h" nogil:
    enum:
        FX_HAS_STREAM
    ctypedef struct fx_stream_t:
        int active
    void fx_stream_fence()
    void fx_block_factors_f(const float *shift, Py_ssize_t n, double m, double alpha,
                            float *a_blk)
    void fx_block_factors_d(const double *shift, Py_ssize_t n, double m, double alpha,
                            double *a_blk)
    void fx_stream_start_f(fx_stream_t *st, float *out, const float *e, Py_ssize_t n,
                           const float *a_blk, int has_beta, float beta, const double *w,
                           Py_ssize_t label, float gamma, int zero)
    void fx_stream_start_d(fx_stream_t *st, double *out, const double *e, Py_ssize_t n,
                           const double *a_blk, int has_beta, double beta, const double *w,
                           Py_ssize_t label, double gamma, int zero)
    void fx_stream_finish_f(fx_stream_t *st)
    void fx_stream_finish_d(fx_stream_t *st)
    double fx_max_expstore_along_f(const float *x, float *e, Py_ssize_t n, float *shift,
                                   double *m, fx_stream_t *st)
    double fx_max_expstore_along_d(const double *x, double *e, Py_ssize_t n, double *shift,
                                   double *m, fx_stream_t *st)


cdef inline void block_factors(const floating *shift, Py_ssize_t n, double m, double alpha,
                               floating *a_blk) noexcept nogil:
    if floating is float:
        fx_block_factors_f(shift, n, m, alpha, a_blk)
    else:
        fx_block_factors_d(shift, n, m, alpha, a_blk)


cdef inline void stream_start(fx_stream_t *st, floating *out, const floating *e, Py_ssize_t n,
                              const floating *a_blk, int has_beta, floating beta,
                              const double *w, Py_ssize_t label, floating gamma,
                              int zero) noexcept nogil:
    if floating is float:
        fx_stream_start_f(st, out, e, n, a_blk, has_beta, beta, w, label, gamma, zero)
    else:
        fx_stream_start_d(st, out, e, n, a_blk, has_beta, beta, w, label, gamma, zero)


cdef inline void stream_finish(fx_stream_t *st, floating *tag) noexcept nogil:
    """Writes the rest of the row in flight (``tag``: any pointer of the row type, to pick
    the specialisation)."""
    if floating is float:
        fx_stream_finish_f(st)
    else:
        fx_stream_finish_d(st)


cdef inline double max_expstore_along(const floating *x, floating *e, Py_ssize_t n,
                                      floating *shift, double *m,
                                      fx_stream_t *st) noexcept nogil:
    if floating is float:
        return fx_max_expstore_along_f(x, e, n, shift, m, st)
    else:
        return fx_max_expstore_along_d(x, e, n, shift, m, st)


cdef inline void scale(floating *y, Py_ssize_t n, floating a) noexcept nogil:
    if floating is float:
        fx_scale_f(y, n, a)
    else:
        fx_scale_d(y, n, a)


cdef inline void sub(const floating *x, floating *out, Py_ssize_t n, double c) noexcept nogil:
    if floating is float:
        fx_sub_f(x, out, n, c)
    else:
        fx_sub_d(x, out, n, c)


cdef inline double wsum(const floating *a, const double *w, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fx_wsum_f(a, w, n)
    else:
        return fx_wsum_d(a, w, n)


cdef inline double dot(const floating *a, const floating *b, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fx_dot_f(a, b, n)
    else:
        return fx_dot_d(a, b, n)


cdef inline double dot_keep(const floating *a, const floating *b, Py_ssize_t n, double *prod,
                            double *bd) noexcept nogil:
    if floating is float:
        return fx_dot_keep_f(a, b, n, prod, bd)
    else:
        return fx_dot_keep_d(a, b, n, prod, bd)


cdef inline void mul_sub_kept(const double *prod, const double *yd, floating *out, Py_ssize_t n,
                              double d) noexcept nogil:
    if floating is float:
        fx_mul_sub_kept_f(prod, yd, out, n, d)
    else:
        fx_mul_sub_kept_d(prod, yd, out, n, d)


cdef inline void mul_sub(const floating *y, const floating *g, floating *out, Py_ssize_t n,
                         double d) noexcept nogil:
    if floating is float:
        fx_mul_sub_f(y, g, out, n, d)
    else:
        fx_mul_sub_d(y, g, out, n, d)


cdef inline void sub_expmul(const floating *g, const floating *y, floating *out, Py_ssize_t n,
                            floating s) noexcept nogil:
    if floating is float:
        fx_sub_expmul_f(g, y, out, n, s)
    else:
        fx_sub_expmul_d(g, y, out, n, s)


cdef inline void expmul(const floating *x, floating *out, Py_ssize_t n, floating shift,
                        floating a) noexcept nogil:
    if floating is float:
        fx_expmul_f(x, out, n, shift, a)
    else:
        fx_expmul_d(x, out, n, shift, a)


cdef inline void axpw(floating *g, const double *w, Py_ssize_t n, floating alpha,
                      floating beta) noexcept nogil:
    if floating is float:
        fx_axpw_f(g, w, n, alpha, beta)
    else:
        fx_axpw_d(g, w, n, alpha, beta)


cdef inline void coef_sums(const floating *x, const floating *t, const double *w, Py_ssize_t n,
                           double a, double b, double *sum_c, double *sum_cx) noexcept nogil:
    if floating is float:
        fx_coef_sums_f(x, t, w, n, a, b, sum_c, sum_cx)
    else:
        fx_coef_sums_d(x, t, w, n, a, b, sum_c, sum_cx)


cdef inline void axpc(floating *g, const floating *t, const double *w, Py_ssize_t n,
                      floating alpha, double r, double a, double b) noexcept nogil:
    if floating is float:
        fx_axpc_f(g, t, w, n, alpha, r, a, b)
    else:
        fx_axpc_d(g, t, w, n, alpha, r, a, b)


from libc.stdint cimport int32_t, int64_t

cdef extern from "fx_blockops.h" nogil:
    enum:
        FX_LANES
        FX_BLOCK_CLASSES
        FX_BLOCK_ELEMS
    void fx_blk_log(const double *s, Py_ssize_t nr, double *out)
    void fx_blk_flat_index(Py_ssize_t nc, int32_t *flat)
    void fx_blk_expand_index(Py_ssize_t nc, int width, int32_t *expand)
    bint FX_HAS_TILES
    void fx_rows_sub_f(const float *x, Py_ssize_t nr, Py_ssize_t nc, const double *c, float *y,
                       const int32_t *expand)
    void fx_rows_sub_d(const double *x, Py_ssize_t nr, Py_ssize_t nc, const double *c,
                       double *y, const int32_t *expand)
    void fx_blk_load_max_f(const float *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc,
                           float *bt, float *m, int *nan)
    void fx_blk_load_max_d(const double *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc,
                           double *bt, double *m, int *nan)
    void fx_blk_store_f(const float *bt, Py_ssize_t nr, Py_ssize_t nc, float *y, Py_ssize_t ld,
                        const int32_t *flat)
    void fx_blk_store_d(const double *bt, Py_ssize_t nr, Py_ssize_t nc, double *y,
                        Py_ssize_t ld, const int32_t *flat)
    void fx_blk_sumexp_f(const float *bt, Py_ssize_t nc, const float *m, double *s, float *et)
    void fx_blk_sumexp_d(const double *bt, Py_ssize_t nc, const double *m, double *s,
                         double *et)
    void fx_blk_lse_f(const float *m, const int *nan, const double *log_s, double *out)
    void fx_blk_lse_d(const double *m, const int *nan, const double *log_s, double *out)
    void fx_blk_inv_f(const float *m, const int *nan, const double *s, float *out)
    void fx_blk_inv_d(const double *m, const int *nan, const double *s, double *out)
    void fx_blk_wsum_f(const float *bt, Py_ssize_t nc, const double *w, double *s)
    void fx_blk_wsum_d(const double *bt, Py_ssize_t nc, const double *w, double *s)
    ctypedef union fx_blk_labels_t:    # FX_LANES lanes of either width
        int32_t f[64]
        int64_t d[64]
    void fx_blk_axpw_f(float *et, Py_ssize_t nc, const float *a, const float *b,
                       const double *w, const fx_blk_labels_t *labels, const float *gamma)
    void fx_blk_axpw_d(double *et, Py_ssize_t nc, const double *a, const double *b,
                       const double *w, const fx_blk_labels_t *labels, const double *gamma)
    void fx_blk_label_terms_f(const float *bt, Py_ssize_t nc, Py_ssize_t nr, const int64_t *y,
                              int64_t ignore_index, const double *w, const double *row_scale,
                              double scale, fx_blk_labels_t *labels, double *xl, double *wl,
                              double *rs)
    void fx_blk_label_terms_d(const double *bt, Py_ssize_t nc, Py_ssize_t nr, const int64_t *y,
                              int64_t ignore_index, const double *w, const double *row_scale,
                              double scale, fx_blk_labels_t *labels, double *xl, double *wl,
                              double *rs)
    int fx_blk_xent_coefs_f(const fx_blk_labels_t *labels, const double *xl, const double *wl,
                            const double *rs, Py_ssize_t nc, double smoothing,
                            double weight_total,
                            const double *lse, const double *s, const double *wx, double limit,
                            double *loss, float *alpha, float *beta, float *gamma)
    int fx_blk_xent_coefs_d(const fx_blk_labels_t *labels, const double *xl, const double *wl,
                            const double *rs, Py_ssize_t nc, double smoothing,
                            double weight_total,
                            const double *lse, const double *s, const double *wx, double limit,
                            double *loss, double *alpha, double *beta, double *gamma)
    void fx_blk_coef_sums_f(const float *bt, const float *tt, Py_ssize_t nc, const double *w,
                            double a, double b, double *sum_c, double *sum_cx)
    void fx_blk_coef_sums_d(const double *bt, const double *tt, Py_ssize_t nc, const double *w,
                            double a, double b, double *sum_c, double *sum_cx)
    void fx_blk_axpc_f(float *et, const float *tt, Py_ssize_t nc, const double *w,
                       const float *alpha, const double *rs, double a, double b)
    void fx_blk_axpc_d(double *et, const double *tt, Py_ssize_t nc, const double *w,
                       const double *alpha, const double *rs, double a, double b)
    void fx_blk_dot_f(const float *at, const float *bt, Py_ssize_t nc, double *s)
    void fx_blk_dot_d(const double *at, const double *bt, Py_ssize_t nc, double *s)
    void fx_blk_mul_sub_f(const float *yt, float *gt, Py_ssize_t nc, const double *d)
    void fx_blk_mul_sub_d(const double *yt, double *gt, Py_ssize_t nc, const double *d)
    void fx_blk_sub_expmul_f(float *gt, const float *yt, Py_ssize_t nc, const float *s)
    void fx_blk_sub_expmul_d(double *gt, const double *yt, Py_ssize_t nc, const double *s)
    void fx_blk_expmul_f(float *xt, Py_ssize_t nc, const float *shift, const float *a)
    void fx_blk_expmul_d(double *xt, Py_ssize_t nc, const double *shift, const double *a)
    void fx_blk_sub_f(const float *bt, Py_ssize_t nc, const double *c, float *yt)
    void fx_blk_sub_d(const double *bt, Py_ssize_t nc, const double *c, double *yt)


cdef inline void blk_load_max(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc,
                              floating *bt, floating *m, int *nan) noexcept nogil:
    if floating is float:
        fx_blk_load_max_f(x, ld, nr, nc, bt, m, nan)
    else:
        fx_blk_load_max_d(x, ld, nr, nc, bt, m, nan)


cdef inline void blk_store(const floating *bt, Py_ssize_t nr, Py_ssize_t nc, floating *y,
                           Py_ssize_t ld, const int32_t *flat) noexcept nogil:
    if floating is float:
        fx_blk_store_f(bt, nr, nc, y, ld, flat)
    else:
        fx_blk_store_d(bt, nr, nc, y, ld, flat)


cdef inline void blk_sumexp(const floating *bt, Py_ssize_t nc, const floating *m, double *s,
                            floating *et) noexcept nogil:
    if floating is float:
        fx_blk_sumexp_f(bt, nc, m, s, et)
    else:
        fx_blk_sumexp_d(bt, nc, m, s, et)


cdef inline void blk_lse(const floating *m, const int *nan, const double *log_s,
                         double *out) noexcept nogil:
    if floating is float:
        fx_blk_lse_f(m, nan, log_s, out)
    else:
        fx_blk_lse_d(m, nan, log_s, out)


cdef inline void blk_inv(const floating *m, const int *nan, const double *s,
                         floating *out) noexcept nogil:
    if floating is float:
        fx_blk_inv_f(m, nan, s, out)
    else:
        fx_blk_inv_d(m, nan, s, out)


cdef inline void blk_wsum(const floating *bt, Py_ssize_t nc, const double *w,
                          double *s) noexcept nogil:
    if floating is float:
        fx_blk_wsum_f(bt, nc, w, s)
    else:
        fx_blk_wsum_d(bt, nc, w, s)


cdef inline void blk_axpw(floating *et, Py_ssize_t nc, const floating *a, const floating *b,
                          const double *w, const fx_blk_labels_t *labels,
                          const floating *gamma) noexcept nogil:
    if floating is float:
        fx_blk_axpw_f(et, nc, a, b, w, labels, gamma)
    else:
        fx_blk_axpw_d(et, nc, a, b, w, labels, gamma)


cdef inline void blk_label_terms(const floating *bt, Py_ssize_t nc, Py_ssize_t nr,
                                 const int64_t *y, int64_t ignore_index, const double *w,
                                 const double *row_scale, double scale,
                                 fx_blk_labels_t *labels, double *xl, double *wl,
                                 double *rs) noexcept nogil:
    if floating is float:
        fx_blk_label_terms_f(bt, nc, nr, y, ignore_index, w, row_scale, scale, labels, xl, wl,
                             rs)
    else:
        fx_blk_label_terms_d(bt, nc, nr, y, ignore_index, w, row_scale, scale, labels, xl, wl,
                             rs)


cdef inline void rows_sub(const floating *x, Py_ssize_t nr, Py_ssize_t nc, const double *c,
                          floating *y, const int32_t *expand) noexcept nogil:
    if floating is float:
        fx_rows_sub_f(x, nr, nc, c, y, expand)
    else:
        fx_rows_sub_d(x, nr, nc, c, y, expand)


cdef inline bint blk_xent_coefs(const fx_blk_labels_t *labels, const double *xl, const double *wl,
                                const double *rs, Py_ssize_t nc, double smoothing,
                                double weight_total, const double *lse, const double *s,
                                const double *wx, double limit, double *loss, floating *alpha,
                                floating *beta, floating *gamma) noexcept nogil:
    if floating is float:
        return fx_blk_xent_coefs_f(labels, xl, wl, rs, nc, smoothing, weight_total, lse, s, wx,
                                   limit, loss, alpha, beta, gamma)
    else:
        return fx_blk_xent_coefs_d(labels, xl, wl, rs, nc, smoothing, weight_total, lse, s, wx,
                                   limit, loss, alpha, beta, gamma)


cdef inline void blk_sub(const floating *bt, Py_ssize_t nc, const double *c,
                         floating *yt) noexcept nogil:
    if floating is float:
        fx_blk_sub_f(bt, nc, c, yt)
    else:
        fx_blk_sub_d(bt, nc, c, yt)


cdef inline void blk_coef_sums(const floating *bt, const floating *tt, Py_ssize_t nc,
                               const double *w, double a, double b, double *sum_c,
                               double *sum_cx) noexcept nogil:
    if floating is float:
        fx_blk_coef_sums_f(bt, tt, nc, w, a, b, sum_c, sum_cx)
    else:
        fx_blk_coef_sums_d(bt, tt, nc, w, a, b, sum_c, sum_cx)


cdef inline void blk_axpc(floating *et, const floating *tt, Py_ssize_t nc, const double *w,
                          const floating *alpha, const double *rs, double a,
                          double b) noexcept nogil:
    if floating is float:
        fx_blk_axpc_f(et, tt, nc, w, alpha, rs, a, b)
    else:
        fx_blk_axpc_d(et, tt, nc, w, alpha, rs, a, b)


cdef inline void blk_dot(const floating *at, const floating *bt, Py_ssize_t nc,
                         double *s) noexcept nogil:
    if floating is float:
        fx_blk_dot_f(at, bt, nc, s)
    else:
        fx_blk_dot_d(at, bt, nc, s)


cdef inline void blk_mul_sub(const floating *yt, floating *gt, Py_ssize_t nc,
                             const double *d) noexcept nogil:
    if floating is float:
        fx_blk_mul_sub_f(yt, gt, nc, d)
    else:
        fx_blk_mul_sub_d(yt, gt, nc, d)


cdef inline void blk_sub_expmul(floating *gt, const floating *yt, Py_ssize_t nc,
                                const floating *s) noexcept nogil:
    if floating is float:
        fx_blk_sub_expmul_f(gt, yt, nc, s)
    else:
        fx_blk_sub_expmul_d(gt, yt, nc, s)


cdef inline void blk_expmul(floating *xt, Py_ssize_t nc, const floating *shift,
                            const floating *a) noexcept nogil:
    if floating is float:
        fx_blk_expmul_f(xt, nc, shift, a)
    else:
        fx_blk_expmul_d(xt, nc, shift, a)
