"""The slow twins themselves, against scipy.special, mpmath and PyTorch.

The other tests trust ``fastxent._reference``; these check that it deserves it.
"""

import mpmath
import numpy as np
import pytest
import scipy.special

from fastxent import _reference as ref

# Both sides shift by the max and sum in float64: a few ulp apart.
RTOL64 = 1e-13


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_against_scipy(axis, rng):
    x = rng.standard_normal((4, 5, 6)) * 20
    np.testing.assert_allclose(ref.logsumexp(x, axis), scipy.special.logsumexp(x, axis),
                               rtol=RTOL64)
    np.testing.assert_allclose(ref.logsumexp(x, axis, keepdims=True),
                               scipy.special.logsumexp(x, axis, keepdims=True), rtol=RTOL64)
    np.testing.assert_allclose(ref.softmax(x, axis), scipy.special.softmax(x, axis),
                               rtol=RTOL64)
    # log_softmax values near 0 carry an absolute error of ~eps * |lse|: atol for those.
    np.testing.assert_allclose(ref.log_softmax(x, axis), scipy.special.log_softmax(x, axis),
                               rtol=RTOL64, atol=1e-12)


def test_against_scipy_masked_classes():
    x = np.array([[0.0, -np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf, 3.0]])
    np.testing.assert_allclose(ref.logsumexp(x), scipy.special.logsumexp(x, axis=-1),
                               rtol=RTOL64)
    np.testing.assert_allclose(ref.softmax(x), scipy.special.softmax(x, axis=-1), rtol=RTOL64)
    np.testing.assert_array_equal(ref.softmax(x)[:, 1], 0.0)


def _mp_logsumexp(row):
    return mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in row))


ROWS = [
    [0.0, 0.0],
    [1000.0, 1000.0],
    [-1000.0, 0.0, -1e-3],
    [1e-10, 2.0, -3.5],
    [0.0, -700.0],
    [-800.0, -801.0, -802.0],
    [88.7, 88.7, -88.7, 30.0],
    [1.0],
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_against_mpmath(row):
    """50-digit values: the twin is within a few ulp (float64 results rounded once, plus the
    rounding of the shift and of log)."""
    with mpmath.workdps(50):
        lse = _mp_logsumexp(row)
        want_lse = float(lse)
        want_logp = [float(mpmath.mpf(v) - lse) for v in row]
        want_p = [float(mpmath.exp(mpmath.mpf(v) - lse)) for v in row]
    x = np.array(row)
    assert ref.logsumexp(x) == pytest.approx(want_lse, rel=4e-16, abs=1e-300)
    # x - lse loses relative accuracy when x ~ lse: error ~ eps * |x|.
    np.testing.assert_allclose(ref.log_softmax(x), want_logp, rtol=1e-15,
                               atol=4e-16 * max(1.0, np.max(np.abs(x))))
    # exp of a shifted value with error eps * |x - max| relative: at most 800 * eps here.
    np.testing.assert_allclose(ref.softmax(x), want_p, rtol=2e-13)


def test_special_rows():
    """PyTorch's conventions, written out (the torch test below checks them against torch)."""
    inf, nan = np.inf, np.nan
    x = np.array([
        [-inf, -inf, -inf],  # lse -inf, softmax NaN
        [1.0, inf, 0.0],     # lse +inf, softmax NaN
        [1.0, nan, 0.0],     # NaN everywhere in this row
        [0.0, -inf, 0.0],    # a masked class
    ])
    lse = ref.logsumexp(x)
    assert lse[0] == -inf and lse[1] == inf and np.isnan(lse[2])
    assert lse[3] == pytest.approx(np.log(2.0), rel=1e-15)
    for f in (ref.softmax, ref.log_softmax):
        y = f(x)
        assert np.isnan(y[:3]).all()
    np.testing.assert_array_equal(ref.softmax(x)[3], [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(ref.log_softmax(x)[3], [-np.log(2.0), -inf, -np.log(2.0)])
    g = ref.logsumexp_backward(np.ones(4), x)
    np.testing.assert_array_equal(g[0], 0.0)       # 0, not NaN, for an all -inf row
    assert np.isnan(g[2]).all()
    np.testing.assert_array_equal(g[3], [0.5, 0.0, 0.5])


def test_reference_against_torch_forward(rng):
    torch = pytest.importorskip("torch")
    inf, nan = np.inf, np.nan
    x = np.concatenate([rng.standard_normal((3, 4)) * 30,
                        [[-inf] * 4, [1.0, inf, 0.0, 2.0], [1.0, nan, 0.0, -inf],
                         [0.0, -inf, 1.0, -inf], [inf, -inf, nan, 0.0]]])
    xt = torch.tensor(x)
    for axis in (0, 1):
        np.testing.assert_allclose(ref.logsumexp(x, axis),
                                   torch.logsumexp(xt, axis).numpy(), rtol=RTOL64)
        np.testing.assert_allclose(ref.softmax(x, axis),
                                   torch.softmax(xt, axis).numpy(), rtol=RTOL64)
        np.testing.assert_allclose(ref.log_softmax(x, axis),
                                   torch.log_softmax(xt, axis).numpy(), rtol=RTOL64,
                                   atol=1e-12)


def test_reference_backward_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((5, 7)) * 3
    g = rng.standard_normal((5, 7))
    for f, rf, rb in [(torch.softmax, ref.softmax, ref.softmax_backward),
                      (torch.log_softmax, ref.log_softmax, ref.log_softmax_backward)]:
        xt = torch.tensor(x, requires_grad=True)
        (want,) = torch.autograd.grad(f(xt, 1), xt, torch.tensor(g))
        np.testing.assert_allclose(rb(g, rf(x)), want.numpy(), rtol=1e-12, atol=1e-15)
    xt = torch.tensor(x, requires_grad=True)
    (want,) = torch.autograd.grad(torch.logsumexp(xt, 1), xt, torch.tensor(g[:, 0]))
    np.testing.assert_allclose(ref.logsumexp_backward(g[:, 0], x), want.numpy(), rtol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, -1), torch.tensor(x[0]))
    np.testing.assert_allclose(ref.softmax_jacobian(x[0]), jac.numpy(), rtol=1e-12,
                               atol=1e-15)


def test_reference_keepdims_and_axes(rng):
    x = rng.standard_normal((2, 3, 4))
    assert ref.logsumexp(x, 1).shape == (2, 4)
    assert ref.logsumexp(x, 1, keepdims=True).shape == (2, 1, 4)
    assert ref.logsumexp(x[0, 0]).shape == ()
    assert ref.softmax_jacobian(x).shape == (2, 3, 4, 4)
    np.testing.assert_allclose(ref.softmax(x, 0).sum(axis=0), 1.0, rtol=1e-15)


def test_reference_cross_entropy_definitions(rng):
    """Hand-written formulas for one small case of each target kind."""
    x = rng.standard_normal((3, 4))
    logp = x - scipy.special.logsumexp(x, axis=1, keepdims=True)
    w = np.array([1.0, 2.0, 0.5, 1.5])
    t = np.array([2, -100, 0])
    eps = 0.2
    rows = [(1 - eps) * w[t[i]] * -logp[i, t[i]] + eps / 4 * np.sum(w * -logp[i])
            for i in (0, 2)]
    want = sum(rows) / (w[2] + w[0])
    got = ref.cross_entropy(x, t, weight=w, label_smoothing=eps)
    assert got == pytest.approx(want, rel=1e-14)
    p = rng.dirichlet(np.ones(4), size=3)
    q = p * (1 - eps) + eps / 4
    want = np.sum(-(q * w * logp)) / 3
    assert ref.cross_entropy(x, p, weight=w, label_smoothing=eps) == pytest.approx(want,
                                                                                   rel=1e-14)
    none = ref.cross_entropy(x, t, weight=w, reduction="none")
    assert none[1] == 0.0
    assert ref.cross_entropy(x, t, weight=w, reduction="sum") == pytest.approx(none.sum())
    # All ignored: mean is NaN (0 / 0), sum 0, gradient exactly 0.
    t_all = np.full(3, -100)
    assert np.isnan(ref.cross_entropy(x, t_all))
    loss, grad = ref.cross_entropy_with_grad(x, t_all, reduction="sum")
    assert loss == 0.0 and np.all(grad == 0.0)
