"""-inf (masked classes), +inf, NaN, ignored rows, shift invariance."""

import numpy as np
import pytest

import fastxent
from fastxent import _reference as ref

from .conftest import FLOAT_DTYPES, RTOL, assert_close

inf, nan = np.inf, np.nan

# Rows 0 and 6 are ordinary; each other row holds one kind of special value.
SPECIAL = np.array([
    [0.5, -1.0, 2.0, 0.0, 1.5],
    [-inf, -inf, -inf, -inf, -inf],  # all masked
    [0.0, 1.0, inf, -1.0, 0.0],      # +inf
    [0.0, nan, 1.0, 2.0, -inf],      # NaN
    [-inf, 3.0, -inf, 1.0, -inf],    # some classes masked
    [inf, -inf, 0.0, inf, 1.0],      # two +inf and a -inf
    [1.0, 2.0, 3.0, 4.0, 5.0],
])
ORDINARY = [0, 6]
NAN_ROWS = [1, 2, 3, 5]  # softmax and log_softmax are NaN there, as PyTorch


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_forward_special_rows(dtype):
    x = SPECIAL.astype(dtype)
    rtol = RTOL[np.dtype(dtype)]
    lse = fastxent.logsumexp(x)
    assert lse[1] == -inf
    assert lse[2] == inf and lse[5] == inf
    assert np.isnan(lse[3])
    assert_close(lse, ref.logsumexp(x), rtol)
    for f, rf in [(fastxent.softmax, ref.softmax), (fastxent.log_softmax, ref.log_softmax)]:
        y = f(x)
        assert np.isnan(y[NAN_ROWS]).all(), f.__name__
        assert np.isfinite(y[ORDINARY]).all(), f.__name__
        assert_close(y, rf(x), rtol, err_msg=f.__name__)
    # Masked classes: probability exactly 0, log-probability exactly -inf.
    assert np.all(fastxent.softmax(x)[4, [0, 2, 4]] == 0.0)
    assert np.all(fastxent.log_softmax(x)[4, [0, 2, 4]] == -inf)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_special_rows_along_axis_0(dtype):
    """The same values with the class axis first: the special columns stay in their column."""
    x = SPECIAL.T.astype(dtype)
    rtol = RTOL[np.dtype(dtype)]
    assert_close(fastxent.logsumexp(x, axis=0), ref.logsumexp(x, axis=0), rtol)
    assert_close(fastxent.softmax(x, axis=0), ref.softmax(x, axis=0), rtol)
    assert_close(fastxent.log_softmax(x, axis=0), ref.log_softmax(x, axis=0), rtol)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_logsumexp_backward_special_rows(dtype):
    """0 (not NaN) for a row of all -inf; NaN stays in its row."""
    x = SPECIAL.astype(dtype)
    g = np.arange(1.0, 8.0).astype(dtype)
    got = fastxent.logsumexp_backward(g, x)
    np.testing.assert_array_equal(got[1], 0.0)
    assert np.isfinite(got[[0, 1, 4, 6]]).all()
    assert np.isnan(got[3]).all()
    assert np.all(got[4, [0, 2, 4]] == 0.0)
    assert_close(got, ref.logsumexp_backward(g, x), RTOL[np.dtype(dtype)])
    lse = fastxent.logsumexp(x)
    assert_close(fastxent.logsumexp_backward(g, x, lse=lse), ref.logsumexp_backward(g, x),
                 RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_backward_nan_stays_in_its_row(dtype, rng):
    """A NaN in grad_output enters the row's sum: that row is NaN, the others are not. A NaN
    in ``output`` reaches the whole row for softmax_backward (through sum(g * y)) but only its
    own element for log_softmax_backward (g - exp(y) * sum(g))."""
    x = rng.standard_normal((4, 6)).astype(dtype)
    g = rng.standard_normal((4, 6)).astype(dtype)
    y, ly = fastxent.softmax(x), fastxent.log_softmax(x)
    g_nan = g.copy()
    g_nan[2, 3] = nan
    for f, rf, out in [(fastxent.softmax_backward, ref.softmax_backward, y),
                       (fastxent.log_softmax_backward, ref.log_softmax_backward, ly)]:
        got = f(g_nan, out)
        assert np.isnan(got[2]).all(), f.__name__
        assert np.isfinite(got[[0, 1, 3]]).all(), f.__name__
        assert_close(got, rf(g_nan, out), RTOL[np.dtype(dtype)], err_msg=f.__name__)
        out_nan = out.copy()
        out_nan[2, 3] = nan
        got = f(g, out_nan)
        assert np.isfinite(got[[0, 1, 3]]).all(), f.__name__
        assert np.isnan(got[2, 3])
        assert_close(got, rf(g, out_nan), RTOL[np.dtype(dtype)], err_msg=f.__name__)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cross_entropy_special_rows(dtype):
    """Index targets on the special rows: each row's loss and gradient as the twin (PyTorch's
    values); a NaN or +inf in one row leaves the others alone."""
    x = SPECIAL.astype(dtype)
    t = np.array([2, 0, 1, 0, 1, 2, 4])
    rtol = RTOL[np.dtype(dtype)]
    loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction="none")
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t, reduction="none")
    assert_close(loss, want_loss, rtol)
    assert_close(grad, want_grad, rtol)
    assert np.isfinite(loss[[0, 4, 6]]).all() and np.isfinite(grad[[0, 4, 6]]).all()
    assert np.all(grad[4, [0, 2, 4]] == 0.0)  # masked classes get no gradient
    assert_close(fastxent.cross_entropy(x, t, reduction="none"), want_loss, rtol)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_ignored_rows_are_exactly_zero_whatever_their_logits(dtype, reduction,
                                                             label_smoothing, rng):
    """Ignored rows holding NaN, +inf or all -inf: exactly 0 loss and gradient, and the
    other rows' results as if those rows held ordinary numbers."""
    x = (rng.standard_normal((6, 5)) * 2).astype(dtype)
    t = np.array([1, -100, 3, -100, -100, 0])
    x[1] = nan
    x[3] = [inf, 0.0, -inf, nan, 1.0]
    x[4] = -inf
    clean = x.copy()
    clean[[1, 3, 4]] = 0.0
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    kw = dict(reduction=reduction, label_smoothing=label_smoothing, weight=w,
              grad_output=np.ones(6) * 1.5 if reduction == "none" else 1.5)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, **kw)
    clean_loss, clean_grad = fastxent.cross_entropy_with_grad(clean, t, **kw)
    assert np.all(grad[[1, 3, 4]] == 0.0)
    assert not np.signbit(grad[[1, 3, 4]]).any()  # +0.0, not -0.0
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_array_equal(loss, clean_loss)
    np.testing.assert_array_equal(grad, clean_grad)
    if reduction == "none":
        assert np.all(loss[[1, 3, 4]] == 0.0)
    kw.pop("grad_output")
    np.testing.assert_array_equal(fastxent.cross_entropy(x, t, **kw),
                                  fastxent.cross_entropy(clean, t, **kw))
    go = np.full(6, 1.5) if reduction == "none" else 1.5
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t, grad_output=go, **kw)
    assert_close(loss, want_loss, RTOL[np.dtype(dtype)])
    assert_close(grad, want_grad, RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_all_ignored(reduction, rng):
    """Every row ignored: mean is NaN (0 / 0, PyTorch), sum is 0, none is zeros; the
    gradient is exactly 0 everywhere."""
    x = rng.standard_normal((4, 3))
    x[2] = nan
    t = np.full(4, -100)
    for ls in (0.0, 0.1):
        loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction,
                                                      label_smoothing=ls)
        if reduction == "mean":
            assert np.isnan(loss)
        else:
            assert np.all(np.asarray(loss) == 0.0)
        assert np.all(grad == 0.0)
        assert grad.shape == x.shape


def _grid_logits(rng, shape, dtype):
    """Logits on a grid of 2^-10 in [-16, 16): x + 100 is exact in float32 and float64, so a
    shift changes nothing but the computation."""
    return (rng.integers(-16 * 1024, 16 * 1024, size=shape) / 1024.0).astype(dtype)


@pytest.mark.parametrize("shift", [100.0, -100.0, 1000.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_shift_invariance(dtype, shift, rng):
    """softmax(x + c) == softmax(x), log_softmax(x + c) == log_softmax(x),
    logsumexp(x + c) == logsumexp(x) + c, and the loss and gradient do not move.

    The shifted inputs are exact, and the kernels shift by the row max, so exp sees the same
    arguments: softmax agrees to a few ulp (4 eps). log_softmax, logsumexp and the loss are
    differences of quantities of size |c| and carry an absolute error of a few ulp of |c|.
    """
    x = _grid_logits(rng, (5, 37), dtype)
    xs = (x + shift).astype(dtype)
    eps = np.finfo(dtype).eps
    assert_close(fastxent.softmax(xs), fastxent.softmax(x), 4 * eps, scale=0.0)
    abs_tol = float(4 * eps * abs(shift))
    np.testing.assert_allclose(fastxent.log_softmax(xs), fastxent.log_softmax(x), rtol=0,
                               atol=abs_tol)
    np.testing.assert_allclose(fastxent.logsumexp(xs), fastxent.logsumexp(x) + shift,
                               rtol=0, atol=abs_tol)
    t = rng.integers(0, 37, size=5)
    loss_s, grad_s = fastxent.cross_entropy_with_grad(xs, t, label_smoothing=0.1)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, label_smoothing=0.1)
    assert float(loss_s) == pytest.approx(float(loss), rel=0, abs=abs_tol)
    assert_close(grad_s, grad, 4 * eps, scale=0.0)


def test_extreme_magnitudes_float64():
    """Logits near the float64 limits: shifting by the max keeps everything finite."""
    x = np.array([[1e308, 1e308, -1e308], [-1e308, -1e308, -1e308 + 1e294]])
    assert_close(fastxent.logsumexp(x), ref.logsumexp(x), 1e-15)
    assert_close(fastxent.softmax(x), ref.softmax(x), 1e-14)
    assert_close(fastxent.log_softmax(x), ref.log_softmax(x), 1e-15)
    np.testing.assert_array_equal(fastxent.softmax(x), [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])


def test_extreme_magnitudes_float32():
    big = np.finfo(np.float32).max
    x = np.array([[big, big, -big], [-big, 0.0, 80.0]], dtype=np.float32)
    assert_close(fastxent.logsumexp(x), ref.logsumexp(x), 1e-6)
    assert_close(fastxent.softmax(x), ref.softmax(x), 1e-6)
    assert_close(fastxent.log_softmax(x), ref.log_softmax(x), 1e-6)
    loss, grad = fastxent.cross_entropy_with_grad(x, np.array([0, 1]), reduction="none")
    want_loss, want_grad = ref.cross_entropy_with_grad(x, np.array([0, 1]), reduction="none")
    assert_close(loss, want_loss, 1e-6)
    assert_close(grad, want_grad, 1e-6)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype, big", [(np.float32, 3e38), (np.float16, 6e4)], ids=str)
def test_loss_past_the_dtype_range_is_inf_without_warning(dtype, big, reduction):
    """lse - x[label] = 2 big exceeds the logits' dtype in two rows (computed in double, it
    does not), and so do their sum and mean (4/3 big): the loss in that dtype is inf, as
    PyTorch's float arithmetic gives it, and no overflow warning (pytest turns warnings into
    errors). The third row's loss and every gradient stay finite."""
    x = np.array([[big, -big, 0.0], [-big, big, 0.0], [0.0, 1.0, 2.0]], dtype=dtype)
    t = np.array([1, 0, 2])
    for loss in (fastxent.cross_entropy(x, t, reduction=reduction),
                 fastxent.cross_entropy_with_grad(x, t, reduction=reduction)[0]):
        assert loss.dtype == dtype
        if reduction == "none":
            assert np.isposinf(loss[:2]).all()
            assert_close(loss[2], ref.cross_entropy(x[2:].astype(np.float64), t[2:],
                                                    reduction="none")[0], 1e-3)
        else:
            assert np.isposinf(loss)
    grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction)[1]
    assert np.isfinite(grad).all()


def test_tiny_probabilities_keep_relative_accuracy():
    """softmax of a value 700 below the max is ~1e-304: computed as exp(x - max), not as a
    difference, it keeps its relative accuracy (no epsilon added anywhere)."""
    x = np.array([[0.0, -700.0, -10.0, -705.0]])
    want = ref.softmax(x)
    got = fastxent.softmax(x)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert got[0, 1] > 0.0
    lp = fastxent.log_softmax(x)
    np.testing.assert_allclose(lp, ref.log_softmax(x), rtol=1e-15)


@pytest.mark.parametrize("n_rows, n_classes", [(1, 1), (70, 3), (2, 100)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_gradient_finite_when_its_coefficients_are_not(dtype, n_rows, n_classes):
    """A mean over tiny class weights times a large grad_output makes the gradient's scale
    1e40 and more, past float32's range, while the gradient, softmax - onehot times it, stays
    finite (found by the fuzz suite: the coefficients overflowed to inf and the gradient came
    out -inf). In blocks (C = 1, 3) and in rows (C = 100); float64 takes the same path without
    needing it."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((n_rows, n_classes)) * 1e-30).astype(dtype)
    weight = np.full(n_classes, 6.4e-31)
    target = rng.integers(0, n_classes, n_rows)
    kw = dict(weight=weight, label_smoothing=0.1, grad_output=np.dtype(dtype).type(1e12))
    loss, grad = fastxent.cross_entropy_with_grad(x, target, **kw)
    want_loss, want = ref.cross_entropy_with_grad(x, target, **kw)
    assert np.isfinite(grad).all()
    # The scale is 1e12 / (6.4e-31 n_rows): float32 rounding of terms that size.
    np.testing.assert_allclose(grad, want, atol=1e-6 * 1e12 / 6.4e-31 / n_rows)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_classes", [3, 100])
def test_probability_target_gradient_finite_when_its_coefficient_is_not(n_classes):
    """The same with class probabilities: weights of 1e30 and grad_output 1e12 put the
    softmax's coefficient at 1e42 / C, past float32's range, while uniform logits and a
    uniform target make the gradient exactly 0."""
    x = np.zeros((2, n_classes), dtype=np.float32)
    target = np.full((2, n_classes), 1.0 / n_classes, dtype=np.float32)
    _, grad = fastxent.cross_entropy_with_grad(x, target, weight=np.full(n_classes, 1e30),
                                               grad_output=np.float32(1e12))
    assert np.isfinite(grad).all()
    # float32 rounding of 1/C against the coefficient's ~1e42 / C: a few ulps of it.
    np.testing.assert_allclose(grad, 0.0, atol=1e-6 * 1e42 / n_classes)


def test_smoothing_that_underflows_still_sees_masked_classes():
    """label_smoothing = 5e-324 makes smoothing / C underflow to 0, yet the smoothing term
    0 * (-log p) of a masked class is 0 * inf = NaN, as in PyTorch and the reference (found by
    the fuzz suite: the kernel skipped the term when smoothing / C was 0)."""
    x = np.array([[-np.inf, 0.5, 1.0]], dtype=np.float32)
    for smoothing, expect_nan in [(5e-324, True), (0.0, False)]:
        loss = fastxent.cross_entropy(x, np.array([1]), label_smoothing=smoothing)
        want = ref.cross_entropy(x, np.array([1]), label_smoothing=smoothing)
        assert np.isnan(loss) == expect_nan == np.isnan(want)
