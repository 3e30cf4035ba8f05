"""Every gradient against a 4th-order central finite difference, in float64.

Each gradient is checked twice: the slow twin's gradient against differences of the slow
twin's forward function, and fastxent's gradient against differences of fastxent's forward
function. Row-wise functions are differenced one column at a time (all rows at once, since a
row's value depends on that row only); reduced losses, which mix rows, one element at a time.

Tolerance: the 4th-order formula (-f(x+2h) + 8f(x+h) - 8f(x-h) + f(x-2h)) / 12h has a
truncation error of h^4/30 |f^(5)| ~ 1e-13 for h = 1e-3 and derivatives of order 1 (logits of
scale ~1), and a rounding error of about 18 eps |f| / 12h ~ 3e-12 |f|. rtol = 1e-8 with an
absolute floor of 1e-9 leaves three orders of magnitude of margin while still catching any
wrong term (those are O(1e-2) or larger).
"""

import numpy as np
import pytest

import fastxent
from fastxent import _reference as ref

from .conftest import make_ce_target

H = 1e-3
RTOL, ATOL = 1e-8, 1e-9


def fd_columns(f, x, h=H):
    """d f / d x[..., j] for each column j, for a row-wise f (output shape: f's, plus j last).

    ``f`` maps ``x`` (class axis last) to per-row values of shape ``x.shape[:-1]`` or to per-row
    vectors ``x.shape``; the result has one more trailing axis, the column differenced.
    """
    cols = []
    for j in range(x.shape[-1]):
        def at(d, j=j):
            xp = x.copy()
            xp[..., j] += d
            return np.asarray(f(xp), dtype=np.float64)
        cols.append((-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h))
    return np.stack(cols, axis=-1)


def fd_elements(f, x, h=H):
    """d f / d x for a scalar f, one element at a time."""
    grad = np.empty_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        def at(d):
            xp = x.copy()
            xp[idx] += d
            return float(f(xp))
        grad[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return grad


IMPLS = {"reference": ref, "fastxent": fastxent}


@pytest.fixture(params=list(IMPLS))
def impl(request):
    return IMPLS[request.param]


@pytest.mark.parametrize("shape", [(4, 5), (1, 1), (3, 1, 6), (6,)])
def test_softmax_backward_is_vjp_of_softmax(impl, shape, rng):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    got = impl.softmax_backward(g, impl.softmax(x, axis=-1), axis=-1)
    want = fd_columns(lambda z: np.sum(g * impl.softmax(z, axis=-1), axis=-1), x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(4, 5), (1, 1), (3, 1, 6), (6,)])
def test_log_softmax_backward_is_vjp_of_log_softmax(impl, shape, rng):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    got = impl.log_softmax_backward(g, impl.log_softmax(x, axis=-1), axis=-1)
    want = fd_columns(lambda z: np.sum(g * impl.log_softmax(z, axis=-1), axis=-1), x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(4, 5), (1, 1), (3, 1, 6), (6,)])
def test_logsumexp_backward_is_vjp_of_logsumexp(impl, shape, rng):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape[:-1])
    got = impl.logsumexp_backward(g, x, axis=-1)
    want = fd_columns(lambda z: g * impl.logsumexp(z, axis=-1), x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [0, 1])
def test_backward_along_axis_0(impl, axis, rng):
    """The same checks with the class axis first (the differences are taken along it)."""
    x = rng.standard_normal((5, 4))
    g = rng.standard_normal((5, 4))
    xt, gt = np.moveaxis(x, axis, -1), np.moveaxis(g, axis, -1)
    got = impl.softmax_backward(g, impl.softmax(x, axis=axis), axis=axis)
    want = fd_columns(lambda z: np.sum(gt * impl.softmax(z, axis=-1), axis=-1), xt)
    np.testing.assert_allclose(np.moveaxis(got, axis, -1), want, rtol=RTOL, atol=ATOL)
    got = impl.log_softmax_backward(g, impl.log_softmax(x, axis=axis), axis=axis)
    want = fd_columns(lambda z: np.sum(gt * impl.log_softmax(z, axis=-1), axis=-1), xt)
    np.testing.assert_allclose(np.moveaxis(got, axis, -1), want, rtol=RTOL, atol=ATOL)
    g1 = rng.standard_normal(x.shape[1 - axis])
    got = impl.logsumexp_backward(g1, x, axis=axis)
    want = fd_columns(lambda z: g1 * impl.logsumexp(z, axis=-1), xt)
    np.testing.assert_allclose(np.moveaxis(got, axis, -1), want, rtol=RTOL, atol=ATOL)


def test_logsumexp_backward_with_lse(rng):
    """``lse=`` given: the same gradient as without it."""
    x = rng.standard_normal((4, 6))
    g = rng.standard_normal(4)
    lse = fastxent.logsumexp(x)
    got = fastxent.logsumexp_backward(g, x, lse=lse)
    want = fd_columns(lambda z: g * fastxent.logsumexp(z), x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, fastxent.logsumexp_backward(g, x), rtol=1e-14)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3), (1,)])
def test_softmax_jacobian_is_derivative_of_softmax(impl, shape, rng):
    x = rng.standard_normal(shape)
    got = impl.softmax_jacobian(x)
    # J[..., i, j] = d softmax(x)_i / d x_j: column j of J is the difference along column j.
    want = fd_columns(lambda z: impl.softmax(z, axis=-1), x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


_W = np.array([0.5, 2.0, 1.0, 0.25, 3.0])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_grad_rows(impl, kind, weighted, label_smoothing, rng):
    """reduction="none" with a per-row grad_output: the row losses, differenced by column."""
    x = rng.standard_normal((6, 5))
    t = make_ce_target(rng, x.shape, kind, n_ignored=2)
    w = _W if weighted else None
    go = rng.standard_normal(6)
    kw = dict(weight=w, label_smoothing=label_smoothing)
    loss, grad = impl.cross_entropy_with_grad(x, t, reduction="none", grad_output=go, **kw)
    want = fd_columns(lambda z: go * impl.cross_entropy(z, t, reduction="none", **kw), x)
    np.testing.assert_allclose(grad, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(loss, impl.cross_entropy(x, t, reduction="none", **kw),
                               rtol=1e-13)
    if kind == "index":
        assert np.all(grad[:2] == 0.0)  # the ignored rows


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_grad_reduced(impl, kind, weighted, label_smoothing, reduction, rng):
    """Reduced losses with a scalar grad_output, differenced one element at a time."""
    x = rng.standard_normal((4, 5))
    t = make_ce_target(rng, x.shape, kind, n_ignored=1)
    kw = dict(weight=_W if weighted else None, label_smoothing=label_smoothing,
              reduction=reduction)
    _, grad = impl.cross_entropy_with_grad(x, t, grad_output=-1.75, **kw)
    want = fd_elements(lambda z: -1.75 * impl.cross_entropy(z, t, **kw), x)
    np.testing.assert_allclose(grad, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_grad_nd_and_1d(impl, kind, rng):
    """N-D logits (class axis 1) and a single 1-D row."""
    for shape in [(2, 4, 3), (5,)]:
        x = rng.standard_normal(shape)
        t = make_ce_target(rng, shape, kind)
        _, grad = impl.cross_entropy_with_grad(x, t, label_smoothing=0.2)
        want = fd_elements(lambda z: impl.cross_entropy(z, t, label_smoothing=0.2), x)
        np.testing.assert_allclose(grad, want, rtol=RTOL, atol=ATOL)
