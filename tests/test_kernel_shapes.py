"""Both kernel shapes, rows and blocks of rows, on the same inputs.

Short rows are computed in transposed blocks (one row per vector lane), longer ones row by
row; the switch is a class-count threshold (``set_block_max_classes``). Blocks are transposed
in register tiles or with gather instructions where the build has them, or with scalar loops
(``set_tiles``, ``set_gathers``). Here every function runs with each shape forced, over class
counts around the thresholds and over partial blocks, strided rows and special values,
against the float64 slow twins, and the two shapes agree with each other to rounding.
"""
import math

import numpy as np
import pytest

import fastxent
from fastxent import _dispatch
from fastxent import _reference as ref
from fastxent._dispatch import kernels

BLOCKS = (128, 128)     # every C <= 128 in blocks
ROWS = (0, 0)           # always row by row


#: The ways a block can be transposed: register tiles (AVX-512 builds), gather instructions
#: (AVX2 and AVX-512), scalar loops (every build; what the others fall back to).
TRANSPOSES = {"tiles": (True, True), "gathers": (False, True), "scalar loops": (False, False)}


def set_transposes(name):
    """Choose how blocks are transposed; returns the previous (tiles, gathers) settings."""
    tiles, gathers = TRANSPOSES[name]
    return kernels.set_tiles(tiles), kernels.set_gathers(gathers)


@pytest.fixture(params=["rows", "blocks", "blocks with gathers", "blocks with scalar loops"])
def kernel_shape(request):
    previous = kernels.set_block_max_classes(*(ROWS if request.param == "rows" else BLOCKS))
    transposes = {"blocks with gathers": "gathers",
                  "blocks with scalar loops": "scalar loops"}.get(request.param, "tiles")
    tiles, gathers = set_transposes(transposes)
    yield request.param
    kernels.set_block_max_classes(*previous)
    kernels.set_tiles(tiles)
    kernels.set_gathers(gathers)


def make_logits(n_rows, n_classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_rows, n_classes)) * 4).astype(dtype)
    x[1 % n_rows, :] = -np.inf                          # all classes masked
    x[2 % n_rows, n_classes // 2] = np.nan              # NaN stays in its row
    x[3 % n_rows, 0] = np.inf
    x[4 % n_rows, ::2] = -np.inf                        # some classes masked
    return x


TOL = {np.float32: 2e-6, np.float64: 1e-13}


def assert_matches(got, want, dtype):
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    np.testing.assert_allclose(got[finite], want[finite], rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n_classes", [(130, 1), (64, 10), (70, 17), (200, 24),
                                               (65, 64), (129, 100), (3, 128)])
def test_forward_functions(kernel_shape, dtype, n_rows, n_classes):
    x = make_logits(n_rows, n_classes, dtype)
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        assert_matches(fastxent.logsumexp(x), ref.logsumexp(xd), dtype)
        assert_matches(fastxent.softmax(x), ref.softmax(xd), dtype)
        assert_matches(fastxent.log_softmax(x), ref.log_softmax(xd), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n_classes", [(130, 1), (77, 3), (64, 10), (70, 15), (200, 24),
                                               (65, 64)])
def test_backward_functions(kernel_shape, dtype, n_rows, n_classes):
    """The three vector-Jacobian products, with rows apart in memory, and with the result
    written over an input (blocks read every input of a block before they write)."""
    rng = np.random.default_rng(3)
    x = make_logits(n_rows, n_classes, dtype)
    wide = rng.standard_normal((n_rows, n_classes + 3)).astype(dtype)
    g = wide[:, 1:n_classes + 1]                # row stride n_classes + 3
    g_row = wide[:, 0].copy()
    xd, gd = x.astype(np.float64), g.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        y, log_y = fastxent.softmax(x), fastxent.log_softmax(x)
        assert_matches(fastxent.softmax_backward(g, y),
                       ref.softmax_backward(gd, y.astype(np.float64)), dtype)
        want = ref.log_softmax_backward(gd, log_y.astype(np.float64))
        assert_matches(fastxent.log_softmax_backward(g, log_y), want, dtype)
        assert_matches(fastxent.log_softmax_backward(g, log_y, out=log_y), want, dtype)
        want = ref.logsumexp_backward(g_row.astype(np.float64), xd)
        assert_matches(fastxent.logsumexp_backward(g_row, x), want, dtype)
        lse = fastxent.logsumexp(x)
        assert_matches(fastxent.logsumexp_backward(g_row, x, lse=lse, out=x), want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [20, 100, 1000])
def test_softmax_backward_with_infinite_values(dtype, n_classes):
    """Rows of the row kernels (float rows there keep their products between the passes,
    which is right only for finite values) holding inf and NaN in either input."""
    rng = np.random.default_rng(4)
    g = rng.standard_normal((6, n_classes)).astype(dtype)
    y = rng.random((6, n_classes)).astype(dtype)
    y[0, 3] = np.inf                            # y * g - y * d would be inf - inf
    y[1, 0] = -np.inf
    g[2, 5] = np.inf
    g[3, 1] = np.nan
    y[4, 2], g[4, 2] = np.inf, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        want = ref.softmax_backward(g.astype(np.float64), y.astype(np.float64))
        assert_matches(fastxent.softmax_backward(g, y), want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n_classes", [(130, 2), (64, 10), (70, 17), (129, 100)])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2},
                                     {"weight": "w", "label_smoothing": 0.1},
                                     {"reduction": "none", "grad_output": "g"}])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_cross_entropy(kernel_shape, dtype, n_rows, n_classes, options, target_kind):
    rng = np.random.default_rng(1)
    x = make_logits(n_rows, n_classes, dtype)
    x[1 % n_rows] = np.nan                      # ignored below: must give exact zeros
    target = rng.integers(0, n_classes, n_rows)
    target[::5] = -100
    target[1 % n_rows] = -100
    if target_kind == "prob":                   # no ignored rows: non-finite ones dropped below
        target = rng.dirichlet(np.ones(n_classes), n_rows).astype(dtype)
    kw = dict(options)
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, n_classes)
    if kw.get("grad_output") == "g":
        kw["grad_output"] = rng.standard_normal(n_rows)
    if target_kind == "prob":
        clean = np.isfinite(x).all(axis=1)
    else:
        clean = np.isfinite(x).all(axis=1) | (target == -100)
    x, target = x[clean], target[clean]
    go = kw.pop("grad_output", None)
    want_loss, want_grad = ref.cross_entropy_with_grad(x.astype(np.float64), target,
                                                       grad_output=None if go is None
                                                       else go[clean], **kw)
    loss, grad = fastxent.cross_entropy_with_grad(
        x, target, grad_output=None if go is None else go[clean], **kw)
    assert_matches(loss, np.asarray(want_loss), dtype)
    assert_matches(grad, want_grad, dtype)
    if target_kind == "index":
        assert np.all(grad[target == -100] == 0)
    assert_matches(fastxent.cross_entropy(x, target, **kw), np.asarray(
        ref.cross_entropy(x.astype(np.float64), target, **kw)), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_rows_and_outputs(kernel_shape, dtype):
    """Rows that are not adjacent in memory, and an out= whose rows are not either."""
    big = make_logits(200, 30, dtype)
    x = big[::2, 3:13]
    out = np.zeros((100, 20), dtype)[:, ::2]
    with np.errstate(invalid="ignore"):
        want = ref.softmax(x.astype(np.float64))
    assert_matches(fastxent.softmax(x, out=out), want, dtype)
    assert_matches(out, want, dtype)


def test_shapes_agree_bitwise_across_threads(kernel_shape):
    x = make_logits(5000, 12, np.float32)
    y = np.random.default_rng(2).integers(0, 12, 5000)
    for n in (1, 2):
        np.testing.assert_array_equal(fastxent.softmax(x, n_threads=n), fastxent.softmax(x))
        np.testing.assert_array_equal(fastxent.cross_entropy_with_grad(x, y, n_threads=n)[1],
                                      fastxent.cross_entropy_with_grad(x, y)[1])
        np.testing.assert_array_equal(fastxent.softmax_backward(x, x, n_threads=n),
                                      fastxent.softmax_backward(x, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n_classes", [(64, 10), (77, 3), (200, 31), (5, 48),
                                                (40, 16), (24, 17), (33, 8), (16, 9)])
def test_transposes_change_no_bits(dtype, n_rows, n_classes):
    """The register tiles, the gathers and the scalar loops move the same elements, whole
    blocks, partial ones, whole and partial tiles and strided rows alike: every result is
    bitwise the same."""
    big = make_logits(2 * n_rows, n_classes + 3, dtype)
    y = np.random.default_rng(3).integers(0, n_classes, n_rows)
    results = []
    previous = kernels.set_block_max_classes(*BLOCKS)
    tiles, gathers = kernels.set_tiles(True), kernels.set_gathers(True)
    try:
        for name in TRANSPOSES:
            set_transposes(name)
            with np.errstate(invalid="ignore"):
                results.append([f(x) for x in (big[::2, 1:n_classes + 1],
                                               np.ascontiguousarray(big[:n_rows, :n_classes]))
                                for f in (fastxent.logsumexp, fastxent.softmax,
                                          fastxent.log_softmax,
                                          lambda x: fastxent.cross_entropy_with_grad(
                                              x, y, reduction="none")[1])])
    finally:
        kernels.set_block_max_classes(*previous)
        kernels.set_tiles(tiles)
        kernels.set_gathers(gathers)
    for name, other in zip(TRANSPOSES, results[1:]):
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b, err_msg=name)


def long_rows(dtype, n):
    """Rows long enough to be written in blocks (> 64 KiB and > 16384 elements, max_expstore):
    the max rising in a late block, -inf blocks before the first finite value, a NaN or +inf
    in a late block, a row of -inf, masked classes."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, n)) * 3).astype(dtype)
    x[0, -1] = 40                               # the max in the last block
    x[1, :5000] = -np.inf                       # two blocks and more of -inf first
    x[1, n - 100] = 25
    x[2, n - 3000] = np.nan
    x[3, n // 2] = np.inf
    x[4] = -np.inf
    x[5, ::3] = -np.inf
    return x


LONG = [16_400, 70_000, 600_000]  # the last longer than 256 blocks: the three-pass way


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", LONG)
def test_long_rows_written_in_blocks(dtype, n):
    x = long_rows(dtype, n)
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        assert_matches(fastxent.softmax(x), ref.softmax(xd), dtype)
        y = x.copy()
        fastxent.softmax(y, out=y)                  # in place, block by block
        assert_matches(y, ref.softmax(xd), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", LONG)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "weight": "w"},
                                     {"reduction": "sum"}])
def test_long_rows_loss_gradient_in_blocks(dtype, n, options):
    x = long_rows(dtype, n)[[0, 1, 5]]             # rows with defined losses
    target = np.array([n - 1, n - 100, 1])
    kw = dict(options)
    if kw.get("weight") == "w":
        kw["weight"] = np.random.default_rng(6).uniform(0.5, 2.0, n)
    want_loss, want_grad = ref.cross_entropy_with_grad(x.astype(np.float64), target, **kw)
    loss, grad = fastxent.cross_entropy_with_grad(x, target, **kw)
    assert_matches(loss, np.asarray(want_loss), dtype)
    assert_matches(grad, want_grad, dtype)
    # The rows with a NaN, a +inf or only -inf: NaN everywhere, as PyTorch.
    _, grad = fastxent.cross_entropy_with_grad(long_rows(dtype, n)[2:5], np.array([0, 0, 0]),
                                               reduction="none")
    assert np.isnan(grad).all()


def test_block_thresholds_are_per_row_type():
    """The defaults of docs/performance.md (session 7), or those _dispatch set for this
    processor's maker (session 11), one count or a (float32, float64) pair per kernel kind, and
    a round trip through the returned previous settings."""
    previous = kernels.set_block_max_classes(7, (9, 11))
    try:
        expected = _dispatch.BLOCK_MAX_CLASSES.get(_dispatch._baseline.cpu_vendor(),
                                                   ((56, 48), (40, 28)))
        assert previous == expected
        assert kernels.set_block_max_classes(0, 0) == ((7, 7), (9, 11))
        with pytest.raises(ValueError, match="pair"):
            kernels.set_block_max_classes((1, 2, 3), 0)
    finally:
        kernels.set_block_max_classes(*previous)
    assert kernels.set_block_max_classes(*previous) == previous


@pytest.mark.parametrize("dtype, shape", [(np.float32, "blocks"), (np.float64, "rows")])
def test_default_kernel_shape_at_40_classes(dtype, shape):
    """At C = 40 a float32 log_softmax runs in blocks and a float64 one row by row: each gives
    the bits of its forced shape (the two shapes' results differ in the last bits here)."""
    x = make_logits(256, 40, dtype)
    got = fastxent.log_softmax(x)
    previous = kernels.set_block_max_classes(*(BLOCKS if shape == "blocks" else ROWS))
    try:
        forced = fastxent.log_softmax(x)
    finally:
        kernels.set_block_max_classes(*previous)
    np.testing.assert_array_equal(got, forced)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n_classes", [(200, 10), (77, 3), (150, 300), (5, 2000)])
@pytest.mark.parametrize("with_grad", [False, True], ids=["loss", "loss+grad"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_reduced_loss_is_the_sum_of_block_sums(kernel_shape, dtype, n_rows, n_classes,
                                               with_grad, target_kind):
    """A reduced cross-entropy adds up the kernel's sums of consecutive blocks (or groups) of
    rows, never forming the per-row losses: each sum is its rows' losses added in a fixed
    order, the same with or without per-row output and for any n_threads, and the public
    'sum' is their pairwise total."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((n_rows, n_classes)) * 3).astype(dtype)
    labels = rng.integers(0, n_classes, n_rows)
    labels[::4] = -100
    if target_kind == "prob":
        labels = rng.dirichlet(np.ones(n_classes), n_rows).astype(dtype)

    def driver(per_row, n_threads):
        grad = np.empty_like(x) if with_grad else None
        if target_kind == "prob":
            return kernels.xent_prob_rows(x, labels, None, 0.0, per_row, grad, None, 1.0,
                                          n_threads)
        return kernels.xent_index_rows(x, labels, None, -100, 0.0, per_row, grad, None, 1.0,
                                       n_threads)

    def block_sums(losses, rows_per_sum):
        """The kernel's order: eight running sums (rows r = k mod 8), added as a tree."""
        sums = []
        for start in range(0, len(losses), rows_per_sum):
            acc = [0.0] * 8
            for r, loss in enumerate(losses[start:start + rows_per_sum]):
                acc[r % 8] += loss
            sums.append(((acc[0] + acc[1]) + (acc[2] + acc[3]))
                        + ((acc[4] + acc[5]) + (acc[6] + acc[7])))
        return sums

    per_row = np.full(n_rows, np.nan)
    sums = driver(per_row, 1)
    assert 1 <= len(sums) <= n_rows
    # The block size is the kernel's choice (64 rows, or a group of 1 to 16): one of the sizes
    # that make this many sums must give exactly these.
    sizes = [b for b in range(1, n_rows + 1) if -(-n_rows // b) == len(sums)]
    assert any(block_sums(per_row, b) == list(sums) for b in sizes)
    for n_threads in (1, 2):
        np.testing.assert_array_equal(driver(None, n_threads), sums)
    assert fastxent.cross_entropy(x, labels, reduction="sum") == dtype(kernels.total(sums))
    np.testing.assert_allclose(kernels.total(sums), ref.cross_entropy(
        x.astype(np.float64), labels, reduction="sum"), rtol=TOL[dtype])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 17, 1000, 100_003])
def test_total_is_a_pairwise_sum(n):
    """``kernels.total``, the sum of the block sums: within the error bound of a pairwise sum
    with runs of 8, (8 + log2 n) eps sum|a| (a left-to-right sum's is n eps sum|a|), and the
    same bits for the same input."""
    rng = np.random.default_rng(n)
    sums = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
    total = kernels.total(sums)
    bound = (8 + math.log2(max(n, 1))) * np.finfo(np.float64).eps * np.abs(sums).sum()
    assert abs(total - math.fsum(sums)) <= bound
    assert kernels.total(sums.copy()) == total
    if n:
        assert kernels.total(sums[:1]) == sums[0]


def test_total_keeps_small_terms_a_running_sum_loses():
    """1 followed by 2^20 - 1 terms of 1e-16, each under half an ulp of 1: a left-to-right sum
    returns 1.0 exactly; pairwise, the small terms add up among themselves first."""
    sums = np.full(1 << 20, 1e-16)
    sums[0] = 1.0
    want = 1.0 + ((1 << 20) - 1) * 1e-16
    assert kernels.total(sums) - 1.0 == pytest.approx(want - 1.0, rel=1e-6)


@pytest.mark.filterwarnings("error")
def test_total_of_inf_and_nan_warns_nothing():
    """Losses that sum to inf or NaN are the answer (an infinite logit, a NaN): no warning."""
    assert kernels.total(np.array([1e308, 1e308, 1.0])) == np.inf
    assert np.isnan(kernels.total(np.array([np.inf, -np.inf])))
    assert np.isnan(kernels.total(np.array([1.0, np.nan] * 9)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [3, 10, 24])
def test_probability_targets_special_values_in_both_shapes(dtype, n_classes):
    """Rows of NaN, +inf, all -inf and some -inf logits against class probabilities: the
    block kernel gives the row kernel's NaN (and only there) and its values elsewhere, for
    the losses and the gradient."""
    x = make_logits(70, n_classes, dtype)
    t = np.random.default_rng(4).dirichlet(np.ones(n_classes), 70).astype(dtype)
    t[5, :] = 0.0
    t[5, 0] = 1.0                                       # one-hot
    results = {}
    for shape, limits in (("rows", ROWS), ("blocks", BLOCKS)):
        previous = kernels.set_block_max_classes(*limits)
        try:
            with np.errstate(invalid="ignore"):
                results[shape] = fastxent.cross_entropy_with_grad(
                    x, t, reduction="none", label_smoothing=0.1)
        finally:
            kernels.set_block_max_classes(*previous)
    for got, want in zip(results["blocks"], results["rows"]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)],
                                   rtol=TOL[dtype], atol=TOL[dtype])
    assert np.isnan(results["blocks"][0][[1, 2, 3]]).all()  # all -inf, a NaN, a +inf


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e33), (np.float64, 1e304)])
def test_probability_targets_coefficients_past_the_limit(kernel_shape, dtype, big):
    """Class weights so large that a row's gradient coefficient sum(c) / s overflows the row
    type's safe range: the block kernel hands such a block to the group kernel, which scales
    by powers of two, and both match the float64 twin (the gradient stays finite)."""
    x = make_logits(70, 10, dtype)[5:]                  # rows of finite logits only
    t = np.random.default_rng(5).dirichlet(np.ones(10), len(x)).astype(dtype)
    w = np.ones(10)
    w[3] = big
    loss, grad = fastxent.cross_entropy_with_grad(x, t, weight=w, reduction="sum")
    want_loss, want_grad = ref.cross_entropy_with_grad(x.astype(np.float64), t, weight=w,
                                                       reduction="sum")
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad / big, want_grad / big, rtol=TOL[dtype] * 10,
                               atol=TOL[dtype] * 10)
    np.testing.assert_allclose(float(loss) / big, float(want_loss) / big, rtol=TOL[dtype])


def _same_bits_or_both_nan(a, b):
    """Bit for bit (so -0 differs from +0), but a NaN matches any NaN (its sign is the
    arithmetic's choice of operand)."""
    a, b = np.asarray(a), np.asarray(b)
    nan = np.isnan(a)
    return (np.array_equal(nan, np.isnan(b))
            and a[~nan].tobytes() == b[~nan].tobytes())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [3, 10, 31, 100])
@pytest.mark.parametrize("grad_output", [None, 2.5, -3.0, 0.0, -0.0, np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_unit_weights_give_the_same_bits(kernel_shape, dtype, n_classes, grad_output,
                                         reduction):
    """Without class weights or smoothing every row's beta is +0 for a scale that is a finite
    +0 or more, and the block kernel then writes alpha e, not alpha e - beta w: unit weights
    take the general expression and must give the same bits, -0 and infinities included,
    for every sign and kind of grad_output."""
    x = make_logits(150, n_classes, dtype, seed=5)
    x[6, :] = 0.0                           # equal logits
    x[7, 1] = 200.0                         # exponentials that underflow to +0: -0 gradients
    y = np.random.default_rng(6).integers(0, n_classes, 150)
    y[::7] = -100
    kw = dict(reduction=reduction, grad_output=grad_output)
    with np.errstate(all="ignore"):
        loss, grad = fastxent.cross_entropy_with_grad(x, y, **kw)
        loss_w, grad_w = fastxent.cross_entropy_with_grad(
            x, y, weight=np.ones(n_classes), **kw)
    assert _same_bits_or_both_nan(grad, grad_w)
    assert _same_bits_or_both_nan(loss, loss_w)
    if grad_output is not None and grad_output < 0:
        # alpha < 0 there, alpha e = -0, and - beta = -(-0) turns it into +0: a fast path
        # taken for a negative scale would leave -0
        assert grad[7, 0] == 0 and not np.signbit(grad[7, 0])
