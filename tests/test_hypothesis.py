"""Property-based tests: random shapes, strides, dtypes and extreme values against the twin.

The default profile (tests/conftest.py) runs 30 examples per test with no deadline;
HYPOTHESIS_PROFILE=thorough runs 1000.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import fastxent
from fastxent import _reference as ref

from .conftest import LAYOUTS, RTOL, assert_close

dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
layouts = st.sampled_from(sorted(LAYOUTS))


@st.composite
def shapes_and_axes(draw, max_rows=6, max_classes=70):
    ndim = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, max_classes))]
    for _ in range(ndim - 1):
        shape.append(draw(st.integers(0, max_rows)))
    shape = draw(st.permutations(shape))
    axis = draw(st.integers(-ndim, ndim - 1))
    return tuple(shape), axis


def finite_values(dtype, magnitude):
    width = 32 if dtype == np.float32 else 64
    magnitude = float(np.dtype(dtype).type(magnitude))  # exactly representable bounds
    return st.floats(-magnitude, magnitude, allow_nan=False, allow_infinity=False, width=width)


def special_values(dtype):
    width = 32 if dtype == np.float32 else 64
    return st.one_of(
        st.floats(-50, 50, width=width),
        st.sampled_from([-np.inf, np.inf, np.nan, 0.0, -0.0]),
    )


@st.composite
def arrays(draw, elements_for, max_rows=6, max_classes=70):
    dtype = draw(dtypes)
    shape, axis = draw(shapes_and_axes(max_rows, max_classes))
    x = draw(hnp.arrays(dtype, shape, elements=elements_for(dtype)))
    return LAYOUTS[draw(layouts)](x), axis


@given(arrays(lambda dt: finite_values(dt, 3e4)))
def test_forward_moderate_values(case):
    """Finite logits up to 3e4 in magnitude (rows whose exponentials underflow but for the
    max): the relative tolerance of the dtype, with a scale of the largest |x| for
    log_softmax (its error is relative to the terms x and lse)."""
    x, axis = case
    rtol = RTOL[x.dtype]
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    assert_close(fastxent.logsumexp(x, axis), ref.logsumexp(x, axis), rtol)
    assert_close(fastxent.softmax(x, axis), ref.softmax(x, axis), rtol)
    assert_close(fastxent.log_softmax(x, axis), ref.log_softmax(x, axis), rtol, scale=scale)


@given(arrays(lambda dt: finite_values(dt, 1e30 if dt == np.float32 else 1e300)))
def test_forward_huge_values(case):
    """Logits near the dtype's limits: shifting by the max keeps every result finite where
    the twin's is (and equal to it within the dtype's tolerance)."""
    x, axis = case
    rtol = RTOL[x.dtype]
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    assert_close(fastxent.logsumexp(x, axis), ref.logsumexp(x, axis), rtol)
    assert_close(fastxent.softmax(x, axis), ref.softmax(x, axis), rtol)
    assert_close(fastxent.log_softmax(x, axis), ref.log_softmax(x, axis), rtol, scale=scale)


@given(arrays(special_values))
def test_forward_special_values(case):
    """Any mix of -inf, +inf, NaN and signed zeros: NaN and infinities exactly where the twin
    (PyTorch's conventions) has them, the rest close."""
    x, axis = case
    rtol = RTOL[x.dtype]
    assert_close(fastxent.logsumexp(x, axis), ref.logsumexp(x, axis), rtol)
    assert_close(fastxent.softmax(x, axis), ref.softmax(x, axis), rtol)
    assert_close(fastxent.log_softmax(x, axis), ref.log_softmax(x, axis), rtol, scale=50.0)
    lse = ref.logsumexp(x, axis)
    g = np.ones_like(lse)
    # Rows holding +inf: the twin gives NaN at the +inf and 0 elsewhere (g * exp(x - inf));
    # the contract fixes only the all -inf rows (0), so compare the rows with a finite or
    # -inf lse, and require NaN somewhere in the others.
    got = np.moveaxis(fastxent.logsumexp_backward(g, x, axis), axis, -1)
    want = np.moveaxis(ref.logsumexp_backward(g, x, axis), axis, -1)
    plain = np.isfinite(lse) | (lse == -np.inf)
    assert_close(got[plain], want[plain], rtol)
    assert np.isnan(got[~plain]).any(axis=-1).all()


@given(arrays(lambda dt: finite_values(dt, 20.0), max_classes=40), st.data())
def test_backward_ops(case, data):
    x, axis = case
    rtol = RTOL[x.dtype]
    g = data.draw(hnp.arrays(x.dtype, x.shape, elements=finite_values(x.dtype, 10.0)))
    g = LAYOUTS[data.draw(layouts)](g)
    y = ref.softmax(x, axis).astype(x.dtype)
    ly = ref.log_softmax(x, axis).astype(x.dtype)
    # Gradients are differences of terms of size |g| (softmax_backward: y * (g - sum(g y)),
    # log_softmax_backward: g - exp(y) sum(g)): absolute allowance relative to those terms.
    gscale = max(1.0, float(np.sum(np.abs(g), axis=axis).max(initial=0.0)))
    assert_close(fastxent.softmax_backward(g, y, axis), ref.softmax_backward(g, y, axis),
                 rtol, scale=gscale)
    assert_close(fastxent.log_softmax_backward(g, ly, axis),
                 ref.log_softmax_backward(g, ly, axis), rtol, scale=gscale)
    batch = tuple(s for i, s in enumerate(x.shape) if i != axis % x.ndim)
    gl = data.draw(hnp.arrays(x.dtype, batch, elements=finite_values(x.dtype, 10.0)))
    assert_close(fastxent.logsumexp_backward(gl, x, axis), ref.logsumexp_backward(gl, x, axis),
                 rtol)


@st.composite
def cross_entropy_cases(draw):
    dtype = draw(dtypes)
    ndim = draw(st.integers(1, 3))
    n_classes = draw(st.integers(1, 40))
    shape = (n_classes,) if ndim == 1 else (
        (draw(st.integers(0, 8)), n_classes) + tuple(draw(st.integers(0, 3)) for _ in
                                                     range(ndim - 2)))
    x = draw(hnp.arrays(dtype, shape, elements=finite_values(dtype, 1e3)))
    if draw(st.booleans()):  # mask some classes
        mask = draw(hnp.arrays(np.bool_, shape))
        x = np.where(mask, -np.inf, x).astype(dtype)
    x = LAYOUTS[draw(layouts)](x)
    batch = shape[:1] + shape[2:] if ndim > 1 else ()
    kind = draw(st.sampled_from(["index", "prob"]))
    ignore_index = draw(st.sampled_from([-100, 0, n_classes - 1]))
    if kind == "index":
        t = draw(hnp.arrays(np.int64, batch, elements=st.one_of(
            st.integers(0, n_classes - 1), st.just(ignore_index))))
    else:
        p = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=dtype.itemsize * 8)))
        t = LAYOUTS[draw(layouts)](p)
    weight = draw(st.one_of(st.none(), hnp.arrays(
        np.float64, (n_classes,), elements=st.one_of(st.just(0.0), st.floats(1e-3, 4.0)))))
    options = dict(
        weight=weight,
        reduction=draw(st.sampled_from(["none", "mean", "sum"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])),
    )
    if kind == "index":
        options["ignore_index"] = ignore_index
    return x, t, options


@given(cross_entropy_cases(), st.floats(-3, 3))
def test_cross_entropy(case, go_scale):
    """Loss and gradient against the twin for random options, shapes, layouts and masked
    (-inf) classes. Row losses are sum_j c_j lse - sum_j c_j x_j: differences of terms of
    size sum(c) * |x| (|x| <= 1e3), hence the absolute allowance; gradients are bounded by
    sum(c) and compared with that scale."""
    x, t, kw = case
    rtol = RTOL[x.dtype]
    batch = np.shape(ref.cross_entropy(x, t, **{**kw, "reduction": "none"}))
    go = go_scale if kw["reduction"] != "none" else np.full(batch, go_scale)
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t, grad_output=go, **kw)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, grad_output=go, **kw)
    w = kw["weight"] if kw["weight"] is not None else np.ones(x.shape[min(1, x.ndim - 1)])
    csum = max(1.0, float(np.sum(w)))
    n = max(1, int(np.prod(batch)))
    loss_scale = 1e3 * csum * (n if kw["reduction"] == "sum" else 1) * 4
    grad_scale = csum * max(1.0, abs(go_scale))
    if kw["reduction"] == "mean":
        # the mean's denominator may be tiny (small weights): scale by 1 / denominator
        denom = _mean_denominator(t, kw, w, n)
        if denom > 0:
            grad_scale /= min(1.0, denom)
            loss_scale /= min(1.0, denom)
    assert_close(loss, want_loss, rtol, scale=loss_scale)
    assert_close(grad, want_grad, rtol, scale=grad_scale)
    assert_close(fastxent.cross_entropy(x, t, **kw), want_loss, rtol, scale=loss_scale)


def _mean_denominator(t, kw, w, n):
    t = np.asarray(t)
    if t.dtype.kind != "i":
        return float(n)
    t = t.reshape(-1)
    valid = t != kw.get("ignore_index", -100)
    return float(np.sum(w[t[valid]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@given(data=st.data())
def test_softmax_jacobian(dtype, data):
    shape = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple))
    x = data.draw(hnp.arrays(dtype, shape, elements=finite_values(np.dtype(dtype), 30.0)))
    x = LAYOUTS[data.draw(layouts)](x)
    assert_close(fastxent.softmax_jacobian(x), ref.softmax_jacobian(x), RTOL[np.dtype(dtype)])
