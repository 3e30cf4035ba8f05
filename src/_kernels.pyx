# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Row kernels of fastxent: log-sum-exp, softmax, log-softmax, cross-entropy and gradients.

Design
------
* Every array arrives as rows: a 2-D memoryview whose rows are contiguous with any row
  stride (typed ``[:, :]``, since Cython's ``[:, ::1]`` demands a C-contiguous whole).
  ``fastxent/_validate.py`` brings any input to that form; nothing here checks arguments
  (bounds checks and wraparound are off): the kernels trust their callers.
* ``noexcept nogil`` functions compute a group of up to 16 rows (``group_*``, see
  ``group_rows``) or a block of 64 short rows (``block_*``); the drivers (``def`` functions at
  the end) release the GIL and run them over the rows with ``prange``. Rows are independent
  and each row is computed by one thread in a fixed order, so the result is bitwise the same
  for any number of threads. The schedule is ``guided``: on a shared machine one CPU is often
  slowed by other work, and with a static split the other thread waited for it (2 threads
  against 1 at 4096 x 1000: medians 1.26-1.35x, minimums 1.7-2.0x).
* A row's work is a few passes of the vector loops in ``fx_rowops.h`` (wrapped for the fused
  type in ``_rowops.pxd``). Passes over a row after the first read it from cache, so
  "passes" below count cache sweeps; memory is read once and written once.
* Short rows (few classes) take another route: a block of rows is transposed into scratch so
  that each vector lane holds one row (``fx_blockops.h``); see ``block_rows``.
* Every row is shifted by its maximum before ``exp``; reductions are kept in double.
* This file is compiled once per instruction set (setup.py); ``fastxent/_dispatch.py``
  imports the best build the processor runs.

Special values follow PyTorch: a row of all ``-inf`` has log-sum-exp ``-inf`` and a NaN
softmax; a row holding ``+inf`` has log-sum-exp ``+inf`` and a NaN softmax; a NaN stays in its
row. Rows whose label is ``ignore_index`` get exactly zero loss and gradient, whatever they hold.
"""
import numpy as np

from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, NAN, fabs, ilogb, isfinite, isinf, ldexp, log, signbit
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset

from _rowops cimport (
    floating, row_max, has_nan, expstore, sumexp_below, max_sumexp, scale, sub, wsum, dot, mul_sub,
    dot_keep, mul_sub_kept,
    sub_expmul, expmul, axpw, coef_sums, axpc, max_expstore, scale_blocks, axpw_blocks,
    FX_HAS_STREAM, fx_stream_t, fx_stream_fence, block_factors, stream_start, stream_finish,
    max_expstore_along,
    FX_CHUNK, FX_ONLINE_BLOCK, FX_ONLINE_MAX_BLOCKS,
    FX_LANES, FX_BLOCK_CLASSES, FX_BLOCK_ELEMS, FX_HAS_TILES, fx_blk_log, fx_blk_labels_t,
    fx_blk_flat_index,
    fx_blk_expand_index, rows_sub, blk_load_max,
    blk_store, blk_sumexp, blk_lse, blk_inv, blk_wsum, blk_axpw, blk_label_terms, blk_sub,
    blk_xent_coefs,
    blk_coef_sums, blk_axpc, blk_dot, blk_mul_sub, blk_sub_expmul, blk_expmul,
)

cdef extern from "fx_blockops.h" nogil:
    int fx_use_gathers
    int fx_use_tiles


cdef extern from "fx_platform.h" nogil:
    int fx_openmp_enabled()
    int fx_omp_max_threads()
    int fx_cpu_has_avx2()
    int fx_cpu_has_avx512()
    void fx_cpu_vendor(char *out)


def openmp_enabled():
    """Whether this build runs its loops with OpenMP threads."""
    return bool(fx_openmp_enabled())


def omp_max_threads():
    """``omp_get_max_threads()`` of the calling thread (1 without OpenMP)."""
    return fx_omp_max_threads()


def cpu_has_avx2():
    """Whether the processor and the OS support AVX2 and FMA."""
    return bool(fx_cpu_has_avx2())


def cpu_has_avx512():
    """Whether the processor and the OS support AVX-512 F, DQ, BW and VL."""
    return bool(fx_cpu_has_avx512())


def cpu_vendor():
    """The processor's maker as CPUID spells it (``'GenuineIntel'``, ``'AuthenticAMD'``);
    ``''`` off x86 or where CPUID does not say."""
    cdef char out[13]
    fx_cpu_vendor(out)
    return out.decode("ascii", "replace")


# ---------------------------------------------------------------------------------- one row

cdef inline double row_logsumexp(const floating *x, Py_ssize_t n) noexcept nogil:
    """log(sum(exp(x))): one sweep over memory (online max and sum)."""
    cdef double m, s
    max_sumexp(x, n, &m, &s)
    if m == -INFINITY:                  # empty, or all -inf: log(0); s is NaN if a NaN hid
        return s + m
    if m == INFINITY:                   # +inf, unless a NaN is there too
        return NAN if has_nan(x, n) else INFINITY
    return m + log(s)


cdef inline void row_logsumexp_backward(floating g, const floating *x, double lse,
                                        floating *out, Py_ssize_t n) noexcept nogil:
    """g * exp(x - lse) = g * softmax(x); zero for a row of all -inf (lse = -inf)."""
    if lse == -INFINITY:
        memset(out, 0, n * sizeof(floating))
    else:
        expmul(x, out, n, <floating>lse, g)


# A float row of up to KEPT_MAX classes keeps its products in double between the two passes
# of its softmax gradient (8 KB of stack each, 16 KB in all: with the two rows, about what
# L1 holds; at 2048 classes, 32 KB, it ran 0.86-0.96x as fast as without).
cdef enum:
    KEPT_MAX = 1024


cdef inline void row_softmax_backward(const floating *g, const floating *y, floating *out,
                                      Py_ssize_t n) noexcept nogil:
    """out = y * (g - sum(g * y)) for one row; ``out`` may be ``g`` or ``y``. A float row's
    first pass converts g and y to double for the sum; up to KEPT_MAX classes it keeps the
    products and y (``dot_keep``), and the second pass reads them instead of converting
    again (C = 100 float32: 31 -> 19 vector instructions per 16 elements). y * g - y * d
    equals y * (g - d) only for finite values (y = inf: inf - inf against -inf), and a finite
    sum says every product, so every value, is finite; other rows take the plain passes."""
    cdef double prod[KEPT_MAX]
    cdef double yd[KEPT_MAX]
    cdef double d
    if floating is float and n <= KEPT_MAX:
        d = dot_keep(g, y, n, prod, yd)
        if isfinite(d):
            mul_sub_kept(prod, yd, out, n, d)
            return
    d = dot(g, y, n)
    mul_sub(y, g, out, n, d)


cdef inline double xent_coefs(Py_ssize_t label, const double *weight, Py_ssize_t n,
                              double smoothing, double weight_total, double *b,
                              double *sum_c) noexcept nogil:
    """Coefficients of a class-index target: the loss of a row is sum_j c_j (lse - x_j) with
    c = a onehot(label) + b w (w = 1 without weights). Returns a; sets b and sum(c).
    ``weight_total`` is sum(w) (C without weights)."""
    cdef double a = (1.0 - smoothing) * (1.0 if weight == NULL else weight[label])
    b[0] = smoothing / n
    sum_c[0] = a + b[0] * weight_total
    return a


# The largest gradient coefficients used as they are: 2^100 and 2^1000, far from the
# overflow of float (2^128) and double (2^1024), so that a row's products and differences
# stay finite.
cdef double COEF_MAX_FLOAT = 1.2676506002282294e30
cdef double COEF_MAX_DOUBLE = 1.0715086071862673e301


cdef inline double xent_row_coefs(
    int64_t label, const double *weight, Py_ssize_t n, double smoothing, double weight_total,
    double lse, double s, double x_label, double wx, double rs,
    floating *alpha, floating *beta, floating *gamma, int *pow2,
) noexcept nogil:
    """The loss of one row from its log-sum-exp ``lse``, its sum of shifted exponentials
    ``s``, its logit at the label and ``wx`` = sum(w x) (read only with label smoothing); and
    the coefficients that turn its stored exponentials e into its gradient times ``rs``:
    (alpha e - beta w - gamma onehot(label)) 2^pow2 (``alpha`` NULL: the loss only, without
    the division). A NaN ``lse`` makes the gradient NaN.

    ``pow2`` is 0 unless a coefficient would overflow the row type while the gradient, their
    difference, need not (a huge ``rs``: a mean over tiny class weights, a huge
    ``grad_output``); the coefficients are then scaled down by 2^pow2, exactly, and
    ``scale_pow2`` scales the row back once it is computed."""
    cdef double b, sum_c, big, limit
    cdef double a = xent_coefs(label, weight, n, smoothing, weight_total, &b, &sum_c)
    cdef double ad, bd, gd
    cdef int k = 0
    if alpha != NULL:
        ad = rs * sum_c / s
        bd = rs * b
        gd = rs * a
        limit = COEF_MAX_FLOAT if floating is float else COEF_MAX_DOUBLE
        # Plain comparisons: fmax, a libm call, made the loss gradient 1.3x slower at C = 10.
        if fabs(ad) > limit or fabs(bd) > limit or fabs(gd) > limit:
            big = fabs(ad) if fabs(ad) > fabs(bd) else fabs(bd)
            big = big if big > fabs(gd) else fabs(gd)
            if isfinite(big):
                k = ilogb(big) - ilogb(limit)
                ad = ldexp(ad, -k)
                bd = ldexp(bd, -k)
                gd = ldexp(gd, -k)
        pow2[0] = k
        alpha[0] = <floating>(ad if lse == lse else NAN)
        beta[0] = <floating>bd
        gamma[0] = <floating>gd
    # With label smoothing, b w x takes part even where b = smoothing / n underflows to 0:
    # 0 * inf is NaN, as in PyTorch.
    return sum_c * lse - a * x_label - (b * wx if smoothing != 0.0 else 0.0)


cdef inline void store_losses(const double *losses, Py_ssize_t nr, Py_ssize_t n_lanes,
                              double *loss, double *loss_sum) noexcept nogil:
    """The losses of the ``nr`` rows of a block or group into ``loss`` (when not NULL), and
    their sum into ``loss_sum[0]``. The reduced losses add up these sums of blocks and
    groups, whose rows depend on the shape alone: the total is the same for any number of
    threads, and no array of per-row losses is written and read back.

    The sum is in a fixed order: eight running sums, of the rows r = k mod 8, then added as a
    tree. ``losses`` holds ``n_lanes`` values, a multiple of 8, zero beyond ``nr``, so that
    the loop is one vector of eight sums (a single running sum was a chain of 64 dependent
    additions per block that made the C = 10 loss gradient 5-8% slower)."""
    cdef double acc[8]
    cdef Py_ssize_t r, k
    memset(acc, 0, sizeof(acc))
    for r in range(0, n_lanes, 8):
        for k in range(8):
            acc[k] += losses[r + k]
    loss_sum[0] = (((acc[0] + acc[1]) + (acc[2] + acc[3]))
                   + ((acc[4] + acc[5]) + (acc[6] + acc[7])))
    if loss != NULL:
        memcpy(loss, losses, nr * sizeof(double))


cdef inline void scale_pow2(floating *g, Py_ssize_t n, int k) noexcept nogil:
    """g *= 2^k, exactly but for overflow and subnormals, in steps a float can hold."""
    cdef int step
    while k != 0:
        step = max(-100, min(k, 100))
        scale(g, n, <floating>ldexp(1.0, step))
        k -= step


# ------------------------------------------------------------------------- blocks of rows
# Below a few dozen classes a row is too short for the row passes (a chunk of 16 mostly
# padding, and the per-row max, sum and log dominate). These kernels take a block of
# ``nr`` rows, transpose it into stack scratch (``nc`` x FX_LANES) and make every pass, the
# log included, a vector operation across rows.

# The largest class counts computed in blocks, for the kernels that only read a row and for
# those that also write one (transposing the output back costs more), per row type: index 0
# float32, 1 float64. Measured with tools/block_vs_rows.py (docs/performance.md, session 7):
# float32 blocks win up to about 56 / 40 classes, float64 ones up to about 48 / 28. These are
# the defaults, measured on an Intel Xeon; fastxent._dispatch sets others per processor maker.
cdef Py_ssize_t block_max_classes_read[2]
cdef Py_ssize_t block_max_classes_write[2]
block_max_classes_read[0], block_max_classes_read[1] = 56, 48
block_max_classes_write[0], block_max_classes_write[1] = 40, 28


def _per_dtype(limit):
    """``(float32, float64)`` class counts from one count or a pair, each clipped to
    [0, FX_BLOCK_CLASSES]."""
    pair = tuple(limit) if isinstance(limit, (tuple, list)) else (limit, limit)
    if len(pair) != 2:
        raise ValueError(f"expected one class count or a (float32, float64) pair, got {limit!r}")
    return tuple(max(0, min(int(v), <Py_ssize_t>FX_BLOCK_CLASSES)) for v in pair)


def set_block_max_classes(read, write):
    """Set the largest class counts computed in blocks (each at most FX_BLOCK_CLASSES; 0:
    never), for the kernels that only read rows and for those that write them. Each is one
    count for both row types or a ``(float32, float64)`` pair. Returns the previous settings
    as two pairs, which ``set_block_max_classes(*previous)`` restores. For the tests, which
    check both kernel shapes, and for tuning."""
    previous = ((block_max_classes_read[0], block_max_classes_read[1]),
                (block_max_classes_write[0], block_max_classes_write[1]))
    block_max_classes_read[0], block_max_classes_read[1] = _per_dtype(read)
    block_max_classes_write[0], block_max_classes_write[1] = _per_dtype(write)
    return previous


def set_gathers(on):
    """Whether the block kernels transpose with the processor's gather instructions (where
    this build has them: AVX2, AVX-512); returns the previous setting. ``fastxent._dispatch``
    turns them off on processors whose gathers are slowed by the Gather Data Sampling
    microcode; the tests check that both ways give the same bits."""
    global fx_use_gathers
    previous = bool(fx_use_gathers)
    fx_use_gathers = 1 if on else 0
    return previous


def set_tiles(on):
    """Whether the block kernels transpose in register tiles (where this build has them:
    AVX-512), ahead of the gathers; returns the previous setting. For the tests, which check
    that every way of transposing gives the same bits, and for timing."""
    global fx_use_tiles
    previous = bool(fx_use_tiles)
    fx_use_tiles = 1 if on else 0
    return previous


cdef inline Py_ssize_t block_rows(Py_ssize_t nc, bint writes,
                                  Py_ssize_t itemsize) noexcept nogil:
    """Rows per block for ``nc`` classes of ``itemsize`` bytes, or 0 where rows are long
    enough for the row kernels. ``writes``: the kernel writes rows (softmax, gradients)."""
    cdef int t = 0 if itemsize == 4 else 1
    if nc < 1 or nc > (block_max_classes_write[t] if writes else block_max_classes_read[t]):
        return 0
    return FX_LANES


cdef inline Py_ssize_t backward_block_rows(Py_ssize_t nc, Py_ssize_t itemsize) noexcept nogil:
    """``block_rows`` for the backward ops of softmax and log-softmax: blocks for rows
    shorter than one chunk of the row passes (FX_CHUNK = 16), which give such a row masked
    lanes, and a subnormal in the stale register under them a microcode assist per row.
    There blocks ran 1.2-13x faster (float64 softmax_backward at C = 9-15: 0.75-1.0x); rows of
    16 (and 32) have no partial chunk and ran faster than blocks (0.4-0.8x; tools/block_vs_rows.py,
    docs/performance.md, session 9). Float32 rows of 17-21 classes, a chunk and a short tail,
    ran 1.1-1.4x faster in blocks with AVX-512, 1.3-1.7x with AVX2 and baseline (session 16;
    from 22 on AVX-512 is even or slower); float64 rows of 17-24 were mixed, so they stay rows."""
    if nc < FX_CHUNK or (itemsize == 4 and FX_CHUNK < nc <= 21):
        return block_rows(nc, True, itemsize)
    return 0


cdef object flat_index(Py_ssize_t nb, Py_ssize_t nc, Py_ssize_t ld_out):
    """The index of fx_blk_store's gathers for blocks written to contiguous rows, else None
    (also where the register tiles do the store)."""
    if nb == 0 or ld_out != nc or (FX_HAS_TILES and fx_use_tiles):
        return None
    flat = np.empty(FX_LANES * nc, dtype=np.int32)
    cdef int32_t[::1] view = flat
    fx_blk_flat_index(nc, &view[0])
    return flat


cdef object expand_index(Py_ssize_t nb, Py_ssize_t nc, Py_ssize_t ld, Py_ssize_t ld_out,
                         Py_ssize_t itemsize):
    """The index of ``rows_sub`` for blocks of contiguous rows read and written where the
    build has it, else None (log_softmax then transposes back)."""
    if nb == 0 or ld != nc or ld_out != nc or not (FX_HAS_TILES and fx_use_tiles):
        return None
    cdef int width = 64 // itemsize
    expand = np.empty(width * nc, dtype=np.int32)
    cdef int32_t[::1] view = expand
    fx_blk_expand_index(nc, width, &view[0])
    return expand


cdef void block_logsumexp(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc,
                          floating *out) noexcept nogil:
    cdef floating bt[FX_BLOCK_ELEMS]
    cdef floating m[FX_LANES]
    cdef int nan[FX_LANES]
    cdef double s[FX_LANES]
    cdef Py_ssize_t r
    blk_load_max(x, ld, nr, nc, bt, m, nan)
    blk_sumexp(bt, nc, m, s, NULL)
    fx_blk_log(s, FX_LANES, s)
    for r in range(nr):
        # Infinite max: all -inf gives -inf, a +inf gives +inf (see row_logsumexp).
        out[r] = <floating>(NAN if nan[r] else (m[r] if isinf(m[r]) else m[r] + s[r]))


# A block's worth of zeros (all bits zero): the rows' sums of w x where the loss has no
# smoothing. A memset of such an array on every block compiled to ``rep stos``, a few per
# cent of the C = 10 kernels on an Intel Xeon (perf).
cdef double ZEROS[FX_LANES]


cdef void block_softmax(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc,
                        floating *out, Py_ssize_t ld_out, const int32_t *flat) noexcept nogil:
    cdef floating bt[FX_BLOCK_ELEMS]
    cdef floating m[FX_LANES]
    cdef floating inv[FX_LANES]
    cdef int nan[FX_LANES]
    cdef double s[FX_LANES]
    blk_load_max(x, ld, nr, nc, bt, m, nan)
    blk_sumexp(bt, nc, m, s, bt)
    blk_inv(m, nan, s, inv)
    blk_axpw(bt, nc, inv, NULL, NULL, NULL, NULL)
    blk_store(bt, nr, nc, out, ld_out, flat)


cdef void block_log_softmax(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc,
                            floating *out, Py_ssize_t ld_out, const int32_t *flat,
                            const int32_t *expand) noexcept nogil:
    """With ``expand`` (``expand_index``), the last pass runs on the rows as they lie."""
    cdef floating bt[FX_BLOCK_ELEMS]
    cdef floating m[FX_LANES]
    cdef int nan[FX_LANES]
    cdef double s[FX_LANES]
    blk_load_max(x, ld, nr, nc, bt, m, nan)
    blk_sumexp(bt, nc, m, s, NULL)
    fx_blk_log(s, FX_LANES, s)
    blk_lse(m, nan, s, s)
    if expand != NULL:
        rows_sub(x, nr, nc, s, out, expand)
        return
    blk_sub(bt, nc, s, bt)
    blk_store(bt, nr, nc, out, ld_out, flat)


cdef void block_softmax_vjp(const floating *g, Py_ssize_t ld_g, const floating *y,
                            Py_ssize_t ld_y, Py_ssize_t nr, Py_ssize_t nc, floating *out,
                            Py_ssize_t ld_out, const int32_t *flat, bint log) noexcept nogil:
    """``softmax_vjp_rows`` for a block: out = y * (g - sum(g * y)), the gradient of softmax
    with output y, or (``log``) out = g - exp(y) * sum(g), that of log-softmax. Both inputs are
    read before anything is written, so ``out`` may be either of them."""
    cdef floating gt[FX_BLOCK_ELEMS]
    cdef floating yt[FX_BLOCK_ELEMS]
    cdef floating s[FX_LANES]
    cdef double d[FX_LANES]
    cdef Py_ssize_t r
    blk_load_max(g, ld_g, nr, nc, gt, NULL, NULL)
    blk_load_max(y, ld_y, nr, nc, yt, NULL, NULL)
    if log:
        blk_wsum(gt, nc, NULL, d)
        for r in range(FX_LANES):
            s[r] = <floating>d[r]       # as the rows: the sum rounded to the row type
        blk_sub_expmul(gt, yt, nc, s)
    else:
        blk_dot(gt, yt, nc, d)
        blk_mul_sub(yt, gt, nc, d)
    blk_store(gt, nr, nc, out, ld_out, flat)


cdef void block_logsumexp_backward(const floating *g, const floating *x, Py_ssize_t ld,
                                   const floating *lse, Py_ssize_t nr, Py_ssize_t nc,
                                   floating *out, Py_ssize_t ld_out,
                                   const int32_t *flat) noexcept nogil:
    """``logsumexp_backward_rows`` for a block: out = g * exp(x - lse), zero on a row whose
    log-sum-exp is -inf; ``lse`` NULL: computed here, as ``block_logsumexp`` does."""
    cdef floating bt[FX_BLOCK_ELEMS]
    cdef floating m[FX_LANES]
    cdef floating shift[FX_LANES]
    cdef floating a[FX_LANES]
    cdef int nan[FX_LANES]
    cdef double s[FX_LANES]
    cdef double row_lse
    cdef Py_ssize_t r
    if lse != NULL:
        blk_load_max(x, ld, nr, nc, bt, NULL, NULL)
    else:
        blk_load_max(x, ld, nr, nc, bt, m, nan)
        blk_sumexp(bt, nc, m, s, NULL)
        fx_blk_log(s, FX_LANES, s)
    for r in range(FX_LANES):
        if r >= nr:                     # padding rows: zeros, as their inputs
            shift[r] = 0
            a[r] = 0
            continue
        if lse != NULL:
            row_lse = lse[r]
        else:
            row_lse = NAN if nan[r] else (m[r] if isinf(m[r]) else m[r] + s[r])
        shift[r] = <floating>row_lse
        a[r] = g[r]
    blk_expmul(bt, nc, shift, a)
    blk_store(bt, nr, nc, out, ld_out, flat)
    for r in range(nr):                 # all classes masked: zero, not g * exp(nan)
        if shift[r] == -INFINITY:
            memset(&out[r * ld_out], 0, nc * sizeof(floating))


cdef void block_xent_index(
    const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t nc, const int64_t *labels,
    int64_t ignore_index, const double *weight, double smoothing, double weight_total,
    double *loss, double *loss_sum, floating *grad, Py_ssize_t ld_grad, const int32_t *flat,
    const double *row_scale, double scale,
) noexcept nogil:
    """``group_xent_index`` for a block of rows (ignored rows: zero loss and gradient)."""
    cdef floating bt[FX_BLOCK_ELEMS]
    cdef floating m[FX_LANES]
    cdef floating alpha[FX_LANES]
    cdef floating beta[FX_LANES]
    cdef floating at_label[FX_LANES]
    cdef int nan[FX_LANES]
    cdef double s[FX_LANES]
    cdef double wx[FX_LANES]
    cdef double log_s[FX_LANES]
    cdef double xl[FX_LANES]
    cdef double wl[FX_LANES]
    cdef double rs[FX_LANES]
    cdef double loss_b[FX_LANES]
    cdef fx_blk_labels_t lab
    cdef int pow2[FX_LANES]
    cdef Py_ssize_t r
    cdef bint rescale = False
    cdef const double *wx_or_0 = ZEROS
    cdef bint zero_beta = (smoothing == 0.0 and weight == NULL and row_scale == NULL
                           and isfinite(scale) and not signbit(scale))
    blk_load_max(x, ld, nr, nc, bt, m, nan)
    if smoothing != 0.0:
        blk_wsum(bt, nc, weight, wx)
        wx_or_0 = wx
    # What the coefficients need of each row's label, taken before the exponentials overwrite
    # bt. Padding rows (see fx_blockops_impl.h) and ignored ones: zero loss and gradient.
    blk_label_terms(bt, nc, nr, labels, ignore_index, weight, row_scale, scale, &lab, xl, wl, rs)
    blk_sumexp(bt, nc, m, s, bt if grad != NULL else NULL)
    fx_blk_log(s, FX_LANES, log_s)
    blk_lse(m, nan, log_s, log_s)
    if blk_xent_coefs(&lab, xl, wl, rs, nc, smoothing, weight_total, log_s, s, wx_or_0,
                      COEF_MAX_FLOAT if floating is float else COEF_MAX_DOUBLE, loss_b, alpha,
                      beta, at_label):
        # Some coefficient past the limit (rare): row by row, scaled by powers of two.
        memset(pow2, 0, sizeof(pow2))
        for r in range(nr):
            if labels[r] != ignore_index:
                loss_b[r] = xent_row_coefs(
                    labels[r], weight, nc, smoothing, weight_total, log_s[r], s[r], xl[r],
                    wx_or_0[r], rs[r], &alpha[r] if grad != NULL else NULL, &beta[r],
                    &at_label[r], &pow2[r])
                rescale |= pow2[r] != 0
    store_losses(loss_b, nr, FX_LANES, loss, loss_sum)      # zero beyond nr
    if grad == NULL:
        return
    # the gradient: rescaled exponentials, minus at_label at the label, zero in ignored rows
    # Without smoothing or weights every beta is +0 when the scale is a finite +0 or more
    # (+0 in ignored and padding rows; rs * +0 elsewhere): then alpha e - beta is alpha e.
    blk_axpw(bt, nc, alpha, NULL if zero_beta else beta, weight, &lab, at_label)
    blk_store(bt, nr, nc, grad, ld_grad, flat)
    if rescale:
        for r in range(nr):
            if pow2[r] != 0:
                scale_pow2(grad + r * ld_grad, nc, pow2[r])


# ------------------------------------------------------------------------- groups of rows
# A row of a few hundred classes is short enough that its latency, not its work, sets its
# time: max -> exponentials and their sum -> log or division -> rescale is one chain of
# dependent steps, and one scalar log (a libm call) per row cost a row of 100 classes a third
# of its time. So the row drivers take rows a group at a time: first the passes that produce
# each row's max and sum, row after row (independent chains that the processor overlaps); then
# the logs and divisions of the whole group as one vector operation (``fx_blk_log``); then the
# passes that need them, which find the group's rows still in cache.

#
# Within a group, a short row's max is computed one row ahead (``max_ahead``). The
# exponentials of a row all wait for its max: issued right after the max pass, a few hundred
# of them sit in the processor's scheduler until the max is known and block the loads of the
# rows after it. Computing row r + 1's max before row r's exponentials gives the processor
# independent work in that window, and finds each max ready when its exponentials are issued
# (C micro benchmark, C = 100: 16% faster; docs/performance.md, v7). Rows longer than
# AHEAD_BYTES keep the order max, then exponentials: there the row in between would push the
# next one out of L1.

#
# The kernels that write a row longer than IN_BLOCKS_BYTES (a row alone in its group) store its
# exponentials in blocks as they find its max (``max_expstore`` in fx_rowops_impl.h), reading
# the row from memory once; max, then exponentials, then rescale needed the row and its output
# in L2 together, and rows of 1 MB of doubles ran 1.5x slower per element than rows of 64 KB.
# (Measured with tools/time_kernels.py --against: 1.2-1.45x at 131072 classes, 1.05-1.16x for
# rows of 16400 to 32000 classes, float32 and float64, once the threshold went down to 64 KiB.)

cdef enum:
    GROUP_ROWS = 16         # rows per group at most
    GROUP_ELEMS = 16384     # elements of a group at most (64 KiB of float: L2 holds them)
    AHEAD_BYTES = 1024      # rows up to this size take their max one row ahead
    IN_BLOCKS_BYTES = 65536     # longer rows (and > GROUP_ELEMS) are written in blocks


cdef inline bint max_one_row_ahead(Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """Whether rows of ``n`` elements of ``itemsize`` bytes take their max one row ahead."""
    return n * itemsize <= AHEAD_BYTES


cdef inline bint written_in_blocks(Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """Whether a row of ``n`` elements of ``itemsize`` bytes is written in blocks (see above).
    Such a row is always alone in its group (``group_rows``)."""
    return (n * itemsize > IN_BLOCKS_BYTES
            and n > GROUP_ELEMS and n <= FX_ONLINE_BLOCK * FX_ONLINE_MAX_BLOCKS)


cdef inline Py_ssize_t group_rows(Py_ssize_t n) noexcept nogil:
    """Rows per group for rows of ``n`` classes: long rows one at a time (their passes
    dwarf the per-row steps, and a group of them would fall out of cache between passes)."""
    if n * GROUP_ROWS <= GROUP_ELEMS:
        return GROUP_ROWS
    return max(1, GROUP_ELEMS // n)


cdef inline floating max_ahead(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                               Py_ssize_t r, floating *mx) noexcept nogil:
    """The max of row ``r`` of a group whose rows are visited in order 0, 1, ..., nr - 1 (one
    call each). Rows of at most AHEAD_BYTES: the call for row r computes row r + 1's max into
    ``mx`` (read before row r is written, in case the output is the input)."""
    if not max_one_row_ahead(n, sizeof(floating)):
        return row_max(x + r * ld, n)
    if r == 0:
        mx[0] = row_max(x, n)
    if r + 1 < nr:
        mx[r + 1] = row_max(x + (r + 1) * ld, n)
    return mx[r]


cdef inline void group_max_sumexp(const floating *x, Py_ssize_t ld, Py_ssize_t nr,
                                  Py_ssize_t n, double *m, double *s) noexcept nogil:
    """``max_sumexp`` of each row of a group: short rows with their max one row ahead, long
    ones in one sweep over memory."""
    cdef floating mx[GROUP_ROWS]
    cdef Py_ssize_t r
    if not max_one_row_ahead(n, sizeof(floating)):
        for r in range(nr):
            max_sumexp(x + r * ld, n, &m[r], &s[r])
        return
    for r in range(nr):
        m[r] = max_ahead(x, ld, nr, n, r, mx)
        s[r] = sumexp_below(x + r * ld, n, <floating>m[r])


cdef inline double lse_of(double m, double log_s, const floating *x,
                          Py_ssize_t n) noexcept nogil:
    """A row's log-sum-exp from its max and the log of its shifted sum (``max_sumexp``):
    -inf for an empty or all -inf row (NaN if a NaN hid: log(NaN)), +inf for a row holding
    +inf unless it also holds a NaN."""
    if m == INFINITY:
        return NAN if has_nan(x, n) else INFINITY
    return m + log_s


cdef void group_logsumexp(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                          floating *out) noexcept nogil:
    cdef double m[GROUP_ROWS]
    cdef double s[GROUP_ROWS]
    cdef Py_ssize_t r
    group_max_sumexp(x, ld, nr, n, m, s)
    fx_blk_log(s, nr, s)
    for r in range(nr):
        out[r] = <floating>lse_of(m[r], s[r], x + r * ld, n)


cdef void group_softmax(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                        floating *out, Py_ssize_t ld_out) noexcept nogil:
    """exp(x - max) stored with its sum, then rescaled: 3 sweeps per row, exp once."""
    cdef double s[GROUP_ROWS]
    cdef floating inv[GROUP_ROWS]
    cdef floating mx[GROUP_ROWS]
    cdef floating shift[FX_ONLINE_MAX_BLOCKS]
    cdef double m
    cdef Py_ssize_t r
    if written_in_blocks(n, sizeof(floating)):
        for r in range(nr):
            s[r] = max_expstore(x + r * ld, out + r * ld_out, n, shift, &m)
            scale_blocks(out + r * ld_out, n, shift, m, 1.0 / s[r])
        return
    for r in range(nr):
        s[r] = expstore(x + r * ld, out + r * ld_out, n, max_ahead(x, ld, nr, n, r, mx))
    for r in range(nr):
        inv[r] = <floating>(1.0 / s[r])
    for r in range(nr):
        scale(out + r * ld_out, n, inv[r])


cdef void group_log_softmax(const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                            floating *out, Py_ssize_t ld_out) noexcept nogil:
    """x - logsumexp(x), with the shift by the max (an infinite max gives NaN, as PyTorch)."""
    cdef double m[GROUP_ROWS]
    cdef double s[GROUP_ROWS]
    cdef Py_ssize_t r
    group_max_sumexp(x, ld, nr, n, m, s)
    fx_blk_log(s, nr, s)
    for r in range(nr):
        sub(x + r * ld, out + r * ld_out, n, m[r] + s[r])


cdef void group_xent_index(
    const floating *x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n, const int64_t *labels,
    int64_t ignore_index, const double *weight, double smoothing, double weight_total,
    double *loss, double *loss_sum, floating *grad, Py_ssize_t ld_grad,
    const double *row_scale, double scale,
) noexcept nogil:
    """Cross-entropy of rows against class indices, and its gradient (times the row's scale)
    when ``grad``. With c = a onehot(label) + b w from ``xent_coefs``, a row's loss is
    sum(c) lse - sum(c x) and its gradient sum(c) softmax - c. Ignored rows: zero loss and
    gradient. The losses go to ``loss`` (per row) and their sum to ``loss_sum[0]``."""
    cdef double loss_g[GROUP_ROWS]
    cdef double m[GROUP_ROWS]
    cdef double s[GROUP_ROWS]
    cdef double log_s[GROUP_ROWS]
    cdef double x_label[GROUP_ROWS]
    cdef int pow2[GROUP_ROWS]
    cdef double wx[GROUP_ROWS]
    cdef floating alpha[GROUP_ROWS]
    cdef floating beta[GROUP_ROWS]
    cdef floating gamma[GROUP_ROWS]
    cdef floating mx[GROUP_ROWS]
    cdef floating shift[FX_ONLINE_MAX_BLOCKS]
    cdef Py_ssize_t r
    cdef int64_t y
    cdef const floating *xr
    cdef floating mr
    cdef bint short_rows = max_one_row_ahead(n, sizeof(floating))
    cdef bint in_blocks = grad != NULL and written_in_blocks(n, sizeof(floating))
    # Pass 1: per row, the logit at the label, sum(w x) with smoothing, the max and the sum of
    # exponentials (stored as the gradient's start). Everything read from x is read here,
    # before the gradient (which may be x) is written.
    for r in range(nr):
        xr = x + r * ld
        y = labels[r]
        # Every short row, ignored ones too, keeps the look-ahead of max_ahead in step.
        mr = max_ahead(x, ld, nr, n, r, mx) if short_rows else 0
        m[r] = 0.0
        s[r] = 1.0
        wx[r] = 0.0
        if y == ignore_index:
            continue
        x_label[r] = xr[y]
        if smoothing != 0.0:
            wx[r] = wsum(xr, weight, n)
        if in_blocks:
            s[r] = max_expstore(xr, grad + r * ld_grad, n, shift, &m[r])
        elif grad == NULL and not short_rows:
            max_sumexp(xr, n, &m[r], &s[r])         # one sweep over memory
        else:
            m[r] = mr if short_rows else row_max(xr, n)
            if grad == NULL:
                s[r] = sumexp_below(xr, n, <floating>m[r])
            else:
                s[r] = expstore(xr, grad + r * ld_grad, n, <floating>m[r])
    # The group's logs in one vector operation; the losses and the gradient's coefficients.
    fx_blk_log(s, nr, log_s)
    for r in range(nr):
        y = labels[r]
        alpha[r] = beta[r] = gamma[r] = 0
        pow2[r] = 0
        if y == ignore_index:
            loss_g[r] = 0.0
            continue
        loss_g[r] = xent_row_coefs(
            y, weight, n, smoothing, weight_total, m[r] + log_s[r], s[r], x_label[r], wx[r],
            scale if row_scale == NULL else row_scale[r],
            &alpha[r] if grad != NULL else NULL, &beta[r], &gamma[r], &pow2[r])
    memset(loss_g + nr, 0, (GROUP_ROWS - nr) * sizeof(double))
    store_losses(loss_g, nr, GROUP_ROWS, loss, loss_sum)
    if grad == NULL:
        return
    # Pass 2: the exponentials become the gradient.
    for r in range(nr):
        y = labels[r]
        if y == ignore_index:
            memset(grad + r * ld_grad, 0, n * sizeof(floating))
        else:
            if in_blocks:
                axpw_blocks(grad + r * ld_grad, weight, n, shift, m[r], alpha[r], beta[r])
            else:
                axpw(grad + r * ld_grad, weight, n, alpha[r], beta[r])
            grad[r * ld_grad + y] -= gamma[r]
            if pow2[r] != 0:
                scale_pow2(grad + r * ld_grad, n, pow2[r])


# ------------------------------------------------------------------ streamed long rows
# A softmax or loss gradient larger than the caches, whose rows are written in blocks, has its
# output streamed: written with non-temporal stores, which do not read the output's lines from
# memory first (fx_streamops.h). Each thread takes runs of STREAM_RUN consecutive rows through
# a pipeline of two: while row r is read, row r - 1's output goes out from the scratch row
# holding its exponentials. The values, and so the results, are the same bits as the group
# kernels': only the stores differ.

cdef enum:
    STREAM_RUN = 32         # rows per run: the pipeline fills and drains once per run

# Streaming only pays where the output would not stay in cache anyway: measured here
# (docs/performance.md, session 16; tools/stream_threshold.py), 0.4-0.98x for outputs of 4 to
# 62 MiB, about 1.1x from 125 MiB on (1.0-1.2x on two threads, with the host's load). An
# output that a machine's caches cannot hold has no use for its lines there.
cdef Py_ssize_t stream_min_bytes = 64 << 20


def set_stream_min_bytes(Py_ssize_t n):
    """Stream the outputs of at least ``n`` bytes whose rows are written in blocks (default
    64 MiB; 0: every such output); returns the previous value. For tests and tuning."""
    global stream_min_bytes
    previous = stream_min_bytes
    stream_min_bytes = n
    return previous


def has_streaming_stores():
    """Whether this build writes large outputs with streaming stores (every x86-64 build)."""
    return bool(FX_HAS_STREAM)


cdef inline bint streamed(Py_ssize_t n_rows, Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """Whether an output of ``n_rows`` x ``n`` is streamed (see above): not in builds without
    streaming stores (other architectures), where the pipeline would only add a copy."""
    return (FX_HAS_STREAM and written_in_blocks(n, itemsize) and n_rows >= 2
            and n_rows * n * itemsize >= stream_min_bytes)


cdef inline int stream_team(int n_threads, Py_ssize_t n_rows) noexcept nogil:
    """Threads for streamed rows: no more than there are runs of rows, since each thread
    holds scratch of two rows (``n_threads`` may be up to 65536)."""
    return <int>max(1, min(<Py_ssize_t>n_threads, (n_rows + STREAM_RUN - 1) // STREAM_RUN))


cdef object stream_scratch(int team, Py_ssize_t n, object dtype):
    """Each thread's scratch for streamed rows: two rows of exponentials and two rows' block
    factors."""
    return np.empty((team, 2 * n + 2 * FX_ONLINE_MAX_BLOCKS), dtype)


cdef inline floating *slot_exps(floating *scratch, Py_ssize_t n, Py_ssize_t r) noexcept nogil:
    """Row r's scratch row for its exponentials: rows alternate between the two, so that row
    r - 1's, still being streamed out, is not overwritten."""
    return scratch + (r & 1) * n


cdef inline floating *slot_factors(floating *scratch, Py_ssize_t n,
                                   Py_ssize_t r) noexcept nogil:
    """Row r's block factors (``block_factors``), alternating as ``slot_exps``."""
    return scratch + 2 * n + (r & 1) * FX_ONLINE_MAX_BLOCKS


cdef void streamed_softmax(const floating *x, Py_ssize_t ld, Py_ssize_t lo, Py_ssize_t hi,
                           Py_ssize_t n, floating *out, Py_ssize_t ld_out,
                           floating *scratch) noexcept nogil:
    """``group_softmax`` of rows lo to hi - 1, written in blocks, their outputs streamed."""
    cdef fx_stream_t st
    cdef floating shift[FX_ONLINE_MAX_BLOCKS]
    cdef floating *e
    cdef floating *a
    cdef double m, s
    cdef Py_ssize_t r
    st.active = 0
    for r in range(lo, hi):
        e = slot_exps(scratch, n, r)
        a = slot_factors(scratch, n, r)
        s = max_expstore_along(x + r * ld, e, n, shift, &m, &st)
        stream_finish(&st, e)
        block_factors(shift, n, m, 1.0 / s, a)
        stream_start(&st, out + r * ld_out, e, n, a, 0, 0, NULL, -1, 0, 0)
    stream_finish(&st, scratch)
    fx_stream_fence()


cdef void streamed_xent_index(
    const floating *x, Py_ssize_t ld, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n,
    const int64_t *labels, int64_t ignore_index, const double *weight, double smoothing,
    double weight_total, double *loss, double *sums, floating *grad, Py_ssize_t ld_grad,
    const double *row_scale, double scale, floating *scratch,
) noexcept nogil:
    """``group_xent_index`` with a gradient, for rows lo to hi - 1 written in blocks (one row
    per group: ``sums[r]`` is row r's loss), their gradients streamed. The steps and the
    expressions are those of ``group_xent_index``, in the same order."""
    cdef fx_stream_t st
    cdef floating shift[FX_ONLINE_MAX_BLOCKS]
    cdef double loss_g[GROUP_ROWS]
    cdef floating *e
    cdef floating *a
    cdef const floating *xr
    cdef double m, s, log_s, x_label = 0.0, wx
    cdef floating alpha, beta, gamma
    cdef int pow2, pow2_last = 0
    cdef Py_ssize_t r, r_last = lo
    cdef int64_t y
    memset(loss_g, 0, sizeof(loss_g))
    st.active = 0
    for r in range(lo, hi):
        e = slot_exps(scratch, n, r)
        a = slot_factors(scratch, n, r)
        xr = x + r * ld
        y = labels[r]
        m = 0.0
        s = 1.0
        wx = 0.0
        if y != ignore_index:
            x_label = xr[y]
            if smoothing != 0.0:
                wx = wsum(xr, weight, n)
            s = max_expstore_along(xr, e, n, shift, &m, &st)
        stream_finish(&st, e)
        if pow2_last != 0:     # rare: coefficients past the float range (xent_row_coefs)
            fx_stream_fence()
            scale_pow2(grad + r_last * ld_grad, n, pow2_last)
        fx_blk_log(&s, 1, &log_s)
        alpha = beta = gamma = 0
        pow2 = 0
        if y == ignore_index:
            loss_g[0] = 0.0
        else:
            loss_g[0] = xent_row_coefs(
                y, weight, n, smoothing, weight_total, m + log_s, s, x_label, wx,
                scale if row_scale == NULL else row_scale[r], &alpha, &beta, &gamma, &pow2)
            block_factors(shift, n, m, alpha, a)
        store_losses(loss_g, 1, GROUP_ROWS, loss + r if loss != NULL else NULL, &sums[r])
        stream_start(&st, grad + r * ld_grad, e, n, a, 1, beta, weight,
                     -1 if y == ignore_index else y, gamma, y == ignore_index)
        pow2_last = pow2
        r_last = r
    stream_finish(&st, scratch)
    fx_stream_fence()
    if pow2_last != 0:
        scale_pow2(grad + r_last * ld_grad, n, pow2_last)


cdef void group_xent_prob(
    const floating *x, Py_ssize_t ld, const floating *t, Py_ssize_t ld_t, Py_ssize_t nr,
    Py_ssize_t n, const double *weight, double smoothing, floating *grad, Py_ssize_t ld_grad,
    const double *row_scale, double scale, double *loss, double *loss_sum,
) noexcept nogil:
    """Cross-entropy of rows against class probabilities t, and its gradient (times the row's
    scale) when ``grad``: with c = w ((1 - eps) t + eps/C), a row's loss is
    sum_j c_j (lse - x_j) and its gradient sum(c) softmax - c. In the order of
    ``group_xent_index``: the coefficient sums, max and exponentials of every row, then the
    group's logs as one vector operation, then the losses and gradients. The losses go to
    ``loss`` (per row) and their sum to ``loss_sum[0]``."""
    cdef double loss_g[GROUP_ROWS]
    cdef double m[GROUP_ROWS]
    cdef double s[GROUP_ROWS]
    cdef double log_s[GROUP_ROWS]
    cdef double sum_c[GROUP_ROWS]
    cdef double sum_cx[GROUP_ROWS]
    cdef double a = 1.0 - smoothing, b = smoothing / n, r_scale, big
    cdef double limit = COEF_MAX_FLOAT if floating is float else COEF_MAX_DOUBLE
    cdef floating *g
    cdef Py_ssize_t r
    cdef int k
    for r in range(nr):
        coef_sums(x + r * ld, t + r * ld_t, weight, n, a, b, &sum_c[r], &sum_cx[r])
        if grad == NULL:
            max_sumexp(x + r * ld, n, &m[r], &s[r])
        else:
            m[r] = row_max(x + r * ld, n)
            s[r] = expstore(x + r * ld, grad + r * ld_grad, n, <floating>m[r])
    fx_blk_log(s, nr, log_s)
    for r in range(nr):
        loss_g[r] = sum_c[r] * (m[r] + log_s[r]) - sum_cx[r]
        if grad == NULL:
            continue
        # The one coefficient in the row type, kept from overflow as in xent_row_coefs.
        g = grad + r * ld_grad
        r_scale = scale if row_scale == NULL else row_scale[r]
        big = fabs(r_scale * sum_c[r] / s[r])
        k = 0
        if big > limit and isfinite(big):
            k = ilogb(big) - ilogb(limit)
        axpc(g, t + r * ld_t, weight, n, <floating>(ldexp(r_scale, -k) * sum_c[r] / s[r]),
             ldexp(r_scale, -k), a, b)
        scale_pow2(g, n, k)
    memset(loss_g + nr, 0, (GROUP_ROWS - nr) * sizeof(double))
    store_losses(loss_g, nr, GROUP_ROWS, loss, loss_sum)


# The block form of group_xent_prob, after it: a block whose gradient needs rescaling falls
# back to it.

cdef void block_xent_prob(
    const floating *x, Py_ssize_t ld, const floating *t, Py_ssize_t ld_t, Py_ssize_t nr,
    Py_ssize_t nc, const double *weight, double smoothing, floating *grad, Py_ssize_t ld_grad,
    const int32_t *flat, const double *row_scale, double scale, double *loss,
    double *loss_sum,
) noexcept nogil:
    """``group_xent_prob`` for a block of rows: the logits and the targets transposed, every
    sum, the log and the gradient a vector operation across rows. A block with a gradient
    coefficient past the row type's limit (rare) is redone by ``group_xent_prob``, which scales
    such rows by a power of two; nothing has been written by then, so ``grad`` may be ``x``."""
    cdef floating bt[FX_BLOCK_ELEMS]
    cdef floating tt[FX_BLOCK_ELEMS]
    cdef floating m[FX_LANES]
    cdef floating alpha[FX_LANES]
    cdef int nan[FX_LANES]
    cdef double s[FX_LANES]
    cdef double lse[FX_LANES]
    cdef double sum_c[FX_LANES]
    cdef double sum_cx[FX_LANES]
    cdef double rs[FX_LANES]
    cdef double loss_b[FX_LANES]
    cdef double a = 1.0 - smoothing, b = smoothing / nc, coef, group_sum
    cdef double limit = COEF_MAX_FLOAT if floating is float else COEF_MAX_DOUBLE
    cdef bint over = False
    cdef Py_ssize_t r
    blk_load_max(x, ld, nr, nc, bt, m, nan)
    blk_load_max(t, ld_t, nr, nc, tt, NULL, NULL)       # the targets: no max
    blk_coef_sums(bt, tt, nc, weight, a, b, sum_c, sum_cx)
    blk_sumexp(bt, nc, m, s, bt if grad != NULL else NULL)
    fx_blk_log(s, FX_LANES, lse)
    blk_lse(m, nan, lse, lse)
    for r in range(FX_LANES):           # padding rows: zero loss and coefficients
        loss_b[r] = sum_c[r] * lse[r] - sum_cx[r] if r < nr else 0.0
        rs[r] = (scale if row_scale == NULL else row_scale[r]) if r < nr else 0.0
        coef = rs[r] * sum_c[r] / s[r]
        alpha[r] = <floating>coef
        over |= fabs(coef) > limit and isfinite(coef)
    if grad != NULL and over:
        r = 0
        while r < nr:
            group_xent_prob(x + r * ld, ld, t + r * ld_t, ld_t, min(<Py_ssize_t>GROUP_ROWS,
                            nr - r), nc, weight, smoothing, grad + r * ld_grad, ld_grad,
                            rs + r, 0.0, loss_b + r, &group_sum)
            r += GROUP_ROWS
    elif grad != NULL:
        blk_axpc(bt, tt, nc, weight, alpha, rs, a, b)
        blk_store(bt, nr, nc, grad, ld_grad, flat)
    store_losses(loss_b, nr, FX_LANES, loss, loss_sum)


# ---------------------------------------------------------------------------------- drivers
# Each takes validated arrays of one dtype and the number of threads to use.

# Row strides below are in elements: _validate makes every row stride a multiple of the
# item size. The block drivers loop over blocks of ``nb`` rows, the others over rows.

def logsumexp_rows(const floating[:, :] x, floating[::1] out, int n_threads):
    cdef Py_ssize_t i, r0, n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t nb = block_rows(n, False, sizeof(floating))
    cdef Py_ssize_t ld = x.strides[0] // sizeof(floating)
    if nb:
        for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                        nogil=True):
            r0 = i * nb
            block_logsumexp(&x[r0, 0], ld, min(nb, n_rows - r0), n, &out[r0])
        return
    nb = group_rows(n)
    for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                    nogil=True):
        r0 = i * nb
        group_logsumexp(&x[r0, 0], ld, min(nb, n_rows - r0), n, &out[r0])


def softmax_rows(const floating[:, :] x, floating[:, :] out, int n_threads):
    cdef Py_ssize_t i, r0, n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t nb = block_rows(n, True, sizeof(floating))
    cdef Py_ssize_t ld = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_out = out.strides[0] // sizeof(floating)
    cdef int32_t[::1] flat = flat_index(nb, n, ld_out)
    cdef const int32_t *flat_ptr = NULL if flat is None else &flat[0]
    cdef floating[:, ::1] scratch
    if nb:
        for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                        nogil=True):
            r0 = i * nb
            block_softmax(&x[r0, 0], ld, min(nb, n_rows - r0), n, &out[r0, 0], ld_out,
                          flat_ptr)
        return
    if streamed(n_rows, n, sizeof(floating)):
        team = stream_team(n_threads, n_rows)
        scratch = stream_scratch(team, n, np.float32 if floating is float else np.float64)
        for i in prange((n_rows + STREAM_RUN - 1) // STREAM_RUN, schedule='guided',
                        num_threads=team, nogil=True):
            r0 = i * STREAM_RUN
            streamed_softmax(&x[0, 0], ld, r0, min(r0 + STREAM_RUN, n_rows), n, &out[0, 0],
                             ld_out, &scratch[threadid(), 0])
        return
    nb = group_rows(n)
    for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                    nogil=True):
        r0 = i * nb
        group_softmax(&x[r0, 0], ld, min(nb, n_rows - r0), n, &out[r0, 0], ld_out)


def log_softmax_rows(const floating[:, :] x, floating[:, :] out, int n_threads):
    cdef Py_ssize_t i, r0, n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t nb = block_rows(n, True, sizeof(floating))
    cdef Py_ssize_t ld = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_out = out.strides[0] // sizeof(floating)
    cdef int32_t[::1] flat = flat_index(nb, n, ld_out)
    cdef const int32_t *flat_ptr = NULL if flat is None else &flat[0]
    cdef int32_t[::1] expand = expand_index(nb, n, ld, ld_out, sizeof(floating))
    cdef const int32_t *expand_ptr = NULL if expand is None else &expand[0]
    if nb:
        for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                        nogil=True):
            r0 = i * nb
            block_log_softmax(&x[r0, 0], ld, min(nb, n_rows - r0), n, &out[r0, 0], ld_out,
                              flat_ptr, expand_ptr)
        return
    nb = group_rows(n)
    for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                    nogil=True):
        r0 = i * nb
        group_log_softmax(&x[r0, 0], ld, min(nb, n_rows - r0), n, &out[r0, 0], ld_out)


cdef void softmax_vjp_rows(const floating[:, :] grad_output, const floating[:, :] output,
                           floating[:, :] out, int n_threads, bint log):
    """The two drivers below: ``log`` False for softmax's gradient, True for log-softmax's."""
    cdef Py_ssize_t i, r0, n_rows = output.shape[0], n = output.shape[1]
    cdef Py_ssize_t nb = backward_block_rows(n, sizeof(floating))
    cdef Py_ssize_t ld_g = grad_output.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_y = output.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_out = out.strides[0] // sizeof(floating)
    cdef int32_t[::1] flat = flat_index(nb, n, ld_out)
    cdef const int32_t *flat_ptr = NULL if flat is None else &flat[0]
    if nb:
        for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                        nogil=True):
            r0 = i * nb
            block_softmax_vjp(&grad_output[r0, 0], ld_g, &output[r0, 0], ld_y,
                              min(nb, n_rows - r0), n, &out[r0, 0], ld_out, flat_ptr, log)
        return
    for i in prange(n_rows, schedule='guided', num_threads=n_threads, nogil=True):
        if log:
            sub_expmul(&grad_output[i, 0], &output[i, 0], &out[i, 0], n,
                       <floating>wsum(&grad_output[i, 0], NULL, n))
        else:
            row_softmax_backward(&grad_output[i, 0], &output[i, 0], &out[i, 0], n)


def softmax_backward_rows(const floating[:, :] grad_output, const floating[:, :] output,
                          floating[:, :] out, int n_threads):
    """out = output * (grad_output - sum(grad_output * output)); out may alias either input."""
    softmax_vjp_rows(grad_output, output, out, n_threads, False)


def log_softmax_backward_rows(const floating[:, :] grad_output,
                              const floating[:, :] output, floating[:, :] out,
                              int n_threads):
    """out = grad_output - exp(output) * sum(grad_output); out may alias either input."""
    softmax_vjp_rows(grad_output, output, out, n_threads, True)


def logsumexp_backward_rows(const floating[::1] grad_output, const floating[:, :] x,
                            const floating[::1] lse, floating[:, :] out, int n_threads):
    """out = grad_output[:, None] * exp(x - lse[:, None]); lse computed here when None."""
    cdef Py_ssize_t i, r0, n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t nb = block_rows(n, True, sizeof(floating))
    cdef Py_ssize_t ld = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_out = out.strides[0] // sizeof(floating)
    cdef int32_t[::1] flat = flat_index(nb, n, ld_out)
    cdef const int32_t *flat_ptr = NULL if flat is None else &flat[0]
    cdef bint have_lse = lse is not None
    cdef const floating *lse_ptr = &lse[0] if have_lse and n_rows else NULL
    cdef double row_lse
    if nb:
        for i in prange((n_rows + nb - 1) // nb, schedule='guided', num_threads=n_threads,
                        nogil=True):
            r0 = i * nb
            block_logsumexp_backward(&grad_output[r0], &x[r0, 0], ld,
                                     lse_ptr + r0 if lse_ptr != NULL else NULL,
                                     min(nb, n_rows - r0), n, &out[r0, 0], ld_out, flat_ptr)
        return
    for i in prange(n_rows, schedule='guided', num_threads=n_threads, nogil=True):
        if have_lse:
            row_lse = lse[i]
        else:
            row_lse = row_logsumexp(&x[i, 0], n)
        row_logsumexp_backward(grad_output[i], &x[i, 0], row_lse, &out[i, 0], n)


cdef double pairwise_sum(const double *a, Py_ssize_t n) noexcept nogil:
    """a[0] + ... + a[n - 1], added pairwise (error O(log n) ulp) in an order set by n alone."""
    cdef Py_ssize_t i
    cdef double s = 0.0
    if n <= 8:
        for i in range(n):
            s += a[i]
        return s
    return pairwise_sum(a, n // 2) + pairwise_sum(a + n // 2, n - n // 2)


def total(const double[::1] sums):
    """The sum of ``sums``, the losses of blocks or groups of rows that ``xent_index_rows``
    and ``xent_prob_rows`` return: added pairwise in an order set by their count, which
    depends on the shape only, so the total is the same for any ``n_threads``. Here rather
    than NumPy's sum so that an inf or NaN total (the answer, for such losses) raises no
    floating-point warning: the ``np.errstate`` around the sum that kept it quiet cost a call
    after a large kernel, with cold caches, more than its other bookkeeping together
    (tools/cold_overhead.py)."""
    if sums.shape[0] == 0:
        return 0.0
    return pairwise_sum(&sums[0], sums.shape[0])


def check_labels(const int64_t[::1] labels, Py_ssize_t n_classes, int64_t ignore_index,
                 const double[::1] weight):
    """First row whose label is neither in [0, n_classes) nor ignore_index (-1 if none), and
    the total weight of the rows not ignored (their count without weights).

    The total, the denominator of a weighted mean, is a compensated sum (Neumaier): a plain
    running sum of N weights errs by up to N ulp, and that error reached every element of the
    gradient (the fuzz suite found 16 ulp at N = 72). Without weights it is a count, exact,
    and the check is a loop without branches that the compiler vectorises (65536 labels:
    0.13 -> 0.02 ms), the first bad row looked for only when there is one."""
    cdef Py_ssize_t i, bad = -1, count = 0, n = labels.shape[0]
    cdef int64_t y
    cdef uint64_t out_of_range = 0
    cdef double total = 0.0, carry = 0.0, v, t
    cdef bint weighted = weight is not None
    with nogil:
        if not weighted:
            for i in range(n):
                y = labels[i]
                count += y != ignore_index
                out_of_range |= (y != ignore_index) & (<uint64_t>y >= <uint64_t>n_classes)
            if out_of_range:
                for i in range(n):
                    y = labels[i]
                    if y != ignore_index and (y < 0 or y >= n_classes):
                        bad = i
                        break
            total = count
        else:
            for i in range(n):
                y = labels[i]
                if y == ignore_index:
                    continue
                if y < 0 or y >= n_classes:
                    bad = i
                    break
                v = weight[y]
                t = total + v
                if fabs(total) >= fabs(v):
                    carry += (total - t) + v
                else:
                    carry += (v - t) + total
                total = t
    # An infinite or NaN weight (or an overflow) leaves the carry meaningless.
    return bad, (total + carry) if isfinite(total) else total


def xent_index_rows(const floating[:, :] x, const int64_t[::1] labels,
                    const double[::1] weight, int64_t ignore_index, double smoothing,
                    double[::1] loss_out, floating[:, :] grad,
                    const double[::1] row_scale, double scale, int n_threads):
    """Cross-entropy of each row against labels (checked by ``check_labels``); with ``grad``,
    the gradient times ``row_scale[i]`` (or ``scale`` when it is None).

    Returns the sums of the losses of consecutive blocks or groups of rows (float64), whose
    sum is the total loss; the per-row losses also go to ``loss_out`` unless it is None. The
    blocks and groups depend on the shape only, not on ``n_threads``."""
    cdef Py_ssize_t i, r0, n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t nb = block_rows(n, grad is not None, sizeof(floating))
    cdef bint in_blocks = nb != 0
    cdef Py_ssize_t ld = x.strides[0] // sizeof(floating), ld_grad = 0
    cdef const double *w = NULL if weight is None else &weight[0]
    cdef const double *rsc = NULL if row_scale is None else &row_scale[0]
    cdef double *per_row = NULL if loss_out is None else &loss_out[0] if n_rows else NULL
    cdef double weight_total = n
    cdef bint with_grad = grad is not None
    if weight is not None:
        weight_total = 0.0
        for i in range(n):
            weight_total += weight[i]
    cdef int32_t[::1] flat = None
    cdef const int32_t *flat_ptr = NULL
    if with_grad:
        ld_grad = grad.strides[0] // sizeof(floating)
        flat = flat_index(nb, n, ld_grad)
        flat_ptr = NULL if flat is None else &flat[0]
    if not in_blocks:
        nb = group_rows(n)
    sums_array = np.empty((n_rows + nb - 1) // nb, np.float64)
    cdef double[::1] sums = sums_array
    cdef floating[:, ::1] scratch
    cdef int team
    if with_grad and not in_blocks and streamed(n_rows, n, sizeof(floating)):
        team = stream_team(n_threads, n_rows)
        scratch = stream_scratch(team, n, np.float32 if floating is float else np.float64)
        for i in prange((n_rows + STREAM_RUN - 1) // STREAM_RUN, schedule='guided',
                        num_threads=team, nogil=True):
            r0 = i * STREAM_RUN
            streamed_xent_index(&x[0, 0], ld, r0, min(r0 + STREAM_RUN, n_rows), n, &labels[0],
                                ignore_index, w, smoothing, weight_total, per_row, &sums[0],
                                &grad[0, 0], ld_grad, rsc, scale, &scratch[threadid(), 0])
        return sums_array
    if in_blocks:
        for i in prange(sums.shape[0], schedule='guided', num_threads=n_threads, nogil=True):
            r0 = i * nb
            block_xent_index(&x[r0, 0], ld, min(nb, n_rows - r0), n, &labels[r0],
                             ignore_index, w, smoothing, weight_total,
                             per_row + r0 if per_row != NULL else NULL, &sums[i],
                             &grad[r0, 0] if with_grad else NULL, ld_grad, flat_ptr,
                             rsc + r0 if rsc != NULL else NULL, scale)
        return sums_array
    for i in prange(sums.shape[0], schedule='guided', num_threads=n_threads, nogil=True):
        r0 = i * nb
        group_xent_index(&x[r0, 0], ld, min(nb, n_rows - r0), n, &labels[r0], ignore_index,
                         w, smoothing, weight_total,
                         per_row + r0 if per_row != NULL else NULL, &sums[i],
                         &grad[r0, 0] if with_grad else NULL, ld_grad,
                         rsc + r0 if rsc != NULL else NULL, scale)
    return sums_array


def xent_prob_rows(const floating[:, :] x, const floating[:, :] target,
                   const double[::1] weight, double smoothing, double[::1] loss_out,
                   floating[:, :] grad, const double[::1] row_scale, double scale,
                   int n_threads):
    """Cross-entropy of each row against class probabilities; with ``grad``, the gradient
    times ``row_scale[i]`` (or ``scale`` when it is None). Returns the sums of the losses of
    consecutive blocks or groups of rows, as ``xent_index_rows`` (the same kernel shapes and
    thresholds); the per-row losses also go to ``loss_out`` unless it is None."""
    cdef Py_ssize_t i, r0, n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t nb = block_rows(n, grad is not None, sizeof(floating))
    cdef bint in_blocks = nb != 0
    cdef Py_ssize_t ld = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_t = target.strides[0] // sizeof(floating)
    cdef Py_ssize_t ld_grad = 0 if grad is None else grad.strides[0] // sizeof(floating)
    cdef const double *w = NULL if weight is None else &weight[0]
    cdef const double *rsc = NULL if row_scale is None else &row_scale[0]
    cdef double *per_row = NULL if loss_out is None else &loss_out[0] if n_rows else NULL
    cdef bint with_grad = grad is not None
    cdef int32_t[::1] flat = None
    cdef const int32_t *flat_ptr = NULL
    if with_grad and in_blocks:
        flat = flat_index(nb, n, ld_grad)
        flat_ptr = NULL if flat is None else &flat[0]
    if not in_blocks:
        nb = group_rows(n)
    sums_array = np.empty((n_rows + nb - 1) // nb, np.float64)
    cdef double[::1] sums = sums_array
    if in_blocks:
        for i in prange(sums.shape[0], schedule='guided', num_threads=n_threads, nogil=True):
            r0 = i * nb
            block_xent_prob(&x[r0, 0], ld, &target[r0, 0], ld_t, min(nb, n_rows - r0), n, w,
                            smoothing, &grad[r0, 0] if with_grad else NULL, ld_grad, flat_ptr,
                            rsc + r0 if rsc != NULL else NULL, scale,
                            per_row + r0 if per_row != NULL else NULL, &sums[i])
        return sums_array
    for i in prange(sums.shape[0], schedule='guided', num_threads=n_threads, nogil=True):
        r0 = i * nb
        group_xent_prob(&x[r0, 0], ld, &target[r0, 0], ld_t, min(nb, n_rows - r0), n, w,
                        smoothing, &grad[r0, 0] if with_grad else NULL, ld_grad,
                        rsc + r0 if rsc != NULL else NULL, scale,
                        per_row + r0 if per_row != NULL else NULL, &sums[i])
    return sums_array


def exp_rows(const floating[:, :] x, floating[:, :] out, bint nonpositive):
    """out = exp(x) with the kernels' own exp: the general one, or (``nonpositive``) the one
    used on shifted logits, valid for x <= 0. For the accuracy tests, not the public API."""
    cdef Py_ssize_t i, n = x.shape[1]
    with nogil:
        for i in range(x.shape[0]):
            if nonpositive:
                expstore(&x[i, 0], &out[i, 0], n, 0)
            else:
                expmul(&x[i, 0], &out[i, 0], n, 0, 1)
