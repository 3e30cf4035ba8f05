"""The calling conventions: out=, keepdims, shapes of results, array-likes, inputs unchanged."""

import numpy as np
import pytest

import fastxent
from fastxent import _reference as ref

from .conftest import (
    CE_OPS, FLOAT_DTYPES, LAYOUTS, OPS, assert_close, bitwise_equal, ce_class_axis,
    make_ce_target, make_logits,
)

OUT_OPS = [op for op in OPS if op.out_input is not None]  # out= may be an input


def _expected_out_shape(op, shape, axis):
    if op.name == "logsumexp":
        return tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    if op.name == "logsumexp_keepdims":
        return tuple(1 if i == axis % len(shape) else s for i, s in enumerate(shape))
    return shape


# ------------------------------------------------------------------------------------- out=
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=repr)
def test_out_is_written_and_returned(op, dtype, axis, rng):
    shape = (6, 9)
    args = op.make(rng, shape, axis, dtype)
    want = op.fast(args, axis)
    out = np.full(_expected_out_shape(op, shape, axis), np.nan, dtype=dtype)
    got = op.fast(args, axis, out=out)
    assert got is out
    assert bitwise_equal(out, want)


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "transposed"])
@pytest.mark.parametrize("op", OPS, ids=repr)
def test_out_with_any_strides(op, layout, rng):
    """A non-contiguous ``out`` is either written correctly (as NumPy's ufuncs do) or refused
    with a ValueError that names ``out``; never written wrongly."""
    shape, axis = (5, 7), -1
    args = op.make(rng, shape, axis, np.float64)
    want = op.fast(args, axis)
    out = LAYOUTS[layout](np.zeros(_expected_out_shape(op, shape, axis)))
    try:
        got = op.fast(args, axis, out=out)
    except ValueError as exc:
        assert "out" in str(exc)
        return
    assert got is out
    assert bitwise_equal(out, want)


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_out_wrong_shape(op, rng):
    args = op.make(rng, (4, 6), -1, np.float64)
    good = _expected_out_shape(op, (4, 6), -1)
    for bad in [good + (1,), (5,) + good[1:], (good[0] + 1,) + good[1:]]:
        with pytest.raises(ValueError, match=r"\bout\b"):
            op.fast(args, -1, out=np.empty(bad))


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_out_wrong_dtype(op, rng):
    args = op.make(rng, (4, 6), -1, np.float64)
    shape = _expected_out_shape(op, (4, 6), -1)
    for dt in (np.float32, np.int64, np.complex128):
        with pytest.raises((TypeError, ValueError), match=r"\bout\b"):
            op.fast(args, -1, out=np.empty(shape, dtype=dt))
    args32 = op.make(rng, (4, 6), -1, np.float32)
    with pytest.raises((TypeError, ValueError), match=r"\bout\b"):
        op.fast(args32, -1, out=np.empty(shape, dtype=np.float64))


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_out_read_only(op, rng):
    args = op.make(rng, (4, 6), -1, np.float64)
    out = np.empty(_expected_out_shape(op, (4, 6), -1))
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"\bout\b"):
        op.fast(args, -1, out=out)


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_out_not_an_array(op, rng):
    args = op.make(rng, (4, 6), -1, np.float64)
    out = np.empty(_expected_out_shape(op, (4, 6), -1)).tolist()
    with pytest.raises(TypeError, match=r"\bout\b"):
        op.fast(args, -1, out=out)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("op", OUT_OPS, ids=repr)
def test_out_may_be_an_input(op, dtype, axis, rng):
    """``out=`` an input computes in place, with the same values as a fresh output."""
    shape = (7, 11)
    args = op.make(rng, shape, axis, dtype)
    want = op.fast(args, axis)
    positions = range(len(args)) if op.name.endswith("_backward") else [op.out_input]
    for k in positions:
        if args[k].shape != want.shape:
            continue
        work = [a.copy() for a in args]
        got = op.fast(tuple(work), axis, out=work[k])
        assert got is work[k], f"argument {k}"
        assert bitwise_equal(got, want), f"out=argument {k}"


@pytest.mark.parametrize("layout", ["F", "strided", "reversed"])
def test_in_place_with_strides(layout, rng):
    """In place on a non-contiguous array: same values (or a ValueError naming out)."""
    x = LAYOUTS[layout](make_logits(rng, (6, 9), np.float64))
    want = ref.softmax(x)
    try:
        got = fastxent.softmax(x, out=x)
    except ValueError as exc:
        assert "out" in str(exc)
        return
    assert got is x
    assert_close(x, want, 1e-12)


def test_partial_overlap_is_refused_or_correct(rng):
    """``out`` overlapping an input without being it: a ValueError naming out, or right."""
    buf = make_logits(rng, (7, 8), np.float64)
    x = buf[:-1]
    want = ref.softmax(x)
    try:
        got = fastxent.softmax(x, out=buf[1:])
    except ValueError as exc:
        assert "out" in str(exc)
        return
    assert_close(got, want, 1e-12)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_out_is_the_gradient(reduction, kind, dtype, rng):
    x = make_logits(rng, (6, 5), dtype)
    t = make_ce_target(rng, x.shape, kind, n_ignored=1, prob_dtype=dtype)
    want_loss, want_grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction,
                                                            label_smoothing=0.1)
    out = np.full_like(x, np.nan)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction,
                                                  label_smoothing=0.1, out=out)
    assert grad is out
    assert bitwise_equal(grad, want_grad)
    # out=logits: the gradient over the logits, the loss unchanged.
    work = x.copy()
    loss2, grad2 = fastxent.cross_entropy_with_grad(work, t, reduction=reduction,
                                                    label_smoothing=0.1, out=work)
    assert grad2 is work
    assert bitwise_equal(grad2, want_grad)
    np.testing.assert_array_equal(loss2, want_loss)
    np.testing.assert_array_equal(loss, want_loss)


def test_cross_entropy_out_checks(rng):
    x = make_logits(rng, (6, 5), np.float64)
    t = make_ce_target(rng, x.shape, "index")
    with pytest.raises(ValueError, match=r"\bout\b"):
        fastxent.cross_entropy_with_grad(x, t, out=np.empty((6, 4)))
    with pytest.raises((TypeError, ValueError), match=r"\bout\b"):
        fastxent.cross_entropy_with_grad(x, t, out=np.empty((6, 5), dtype=np.float32))
    ro = np.empty((6, 5))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"\bout\b"):
        fastxent.cross_entropy_with_grad(x, t, out=ro)


def test_cross_entropy_out_nd(rng):
    """N-D logits (class axis 1): out has the logits' shape and gets the gradient."""
    x = make_logits(rng, (3, 4, 5), np.float64)
    t = make_ce_target(rng, x.shape, "index")
    out = np.empty_like(x)
    _, grad = fastxent.cross_entropy_with_grad(x, t, out=out)
    assert grad is out
    assert_close(out, ref.cross_entropy_with_grad(x, t)[1], 1e-12)


# ---------------------------------------------------------------------------------- keepdims
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_logsumexp_keepdims(axis, rng):
    x = rng.standard_normal((3, 4, 5))
    got = fastxent.logsumexp(x, axis, keepdims=True)
    plain = fastxent.logsumexp(x, axis)
    assert got.shape == np.sum(x, axis=axis, keepdims=True).shape
    assert plain.shape == np.sum(x, axis=axis).shape
    np.testing.assert_array_equal(np.squeeze(got, axis), plain)
    assert_close(got, ref.logsumexp(x, axis, keepdims=True), 1e-12)
    # keepdims output broadcasts against x: x - lse is log_softmax.
    assert_close(x - got, ref.log_softmax(x, axis), 1e-12)


def test_logsumexp_keepdims_out(rng):
    x = rng.standard_normal((3, 4))
    out = np.empty((3, 1))
    assert fastxent.logsumexp(x, keepdims=True, out=out) is out
    assert_close(out, ref.logsumexp(x, keepdims=True), 1e-12)
    with pytest.raises(ValueError, match=r"\bout\b"):
        fastxent.logsumexp(x, keepdims=True, out=np.empty(3))


def test_logsumexp_of_one_row_is_a_scalar(rng):
    x = rng.standard_normal(6)
    got = fastxent.logsumexp(x)
    assert np.ndim(got) == 0
    assert float(got) == pytest.approx(float(ref.logsumexp(x)), rel=1e-14)
    assert fastxent.logsumexp(x, keepdims=True).shape == (1,)


def test_logsumexp_backward_accepts_keepdims_grad(rng):
    """grad_output shaped like logsumexp(..., keepdims=True) is accepted too, or refused
    with a ValueError naming grad_output."""
    x = rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 1))
    try:
        got = fastxent.logsumexp_backward(g, x)
    except ValueError as exc:
        assert "grad_output" in str(exc)
        return
    assert_close(got, ref.logsumexp_backward(g, x), 1e-12)


# --------------------------------------------------------------------------- result shapes
@pytest.mark.parametrize("shape", [(0, 4), (3, 0, 4), (0,), (2, 0)], ids=str)
def test_empty_inputs(shape, rng):
    """0 rows (and 0 classes where that makes sense): empty results of the right shape."""
    x = np.zeros(shape)
    assert fastxent.softmax(x).shape == shape
    assert fastxent.log_softmax(x).shape == shape
    assert fastxent.logsumexp(x).shape == shape[:-1]
    if shape[-1] == 0:
        # The sum of no exponentials is 0: logsumexp over no classes is -inf (NumPy, SciPy).
        np.testing.assert_array_equal(fastxent.logsumexp(x), ref.logsumexp(x))


def test_array_likes_are_accepted():
    got = fastxent.softmax([[1, 2, 3], [0, 0, 0]])
    assert got.dtype == np.float64
    assert_close(got, ref.softmax(np.array([[1.0, 2, 3], [0, 0, 0]])), 1e-12)
    loss = fastxent.cross_entropy([[1.0, 2.0], [0.5, 0.0]], [1, 0])
    assert float(loss) == pytest.approx(float(ref.cross_entropy(
        np.array([[1.0, 2.0], [0.5, 0.0]]), np.array([1, 0]))), rel=1e-14)


def test_memmap_input(tmp_path, rng):
    x = rng.standard_normal((5, 8))
    path = tmp_path / "x.dat"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.float64, mode="r", shape=(5, 8))
    assert_close(fastxent.softmax(mm), ref.softmax(x), 1e-12)
    assert_close(fastxent.logsumexp(mm, axis=0), ref.logsumexp(x, axis=0), 1e-12)
    del mm


def test_unaligned_input(rng):
    """A float64 array that starts one byte into its buffer (NumPy allows that)."""
    x = rng.standard_normal((4, 6))
    buf = np.zeros(x.nbytes + 1, dtype=np.uint8)
    view = buf[1:].view(np.float64).reshape(4, 6)
    view[...] = x
    assert not view.flags.aligned
    assert_close(fastxent.softmax(view), ref.softmax(x), 1e-12)
    assert_close(fastxent.logsumexp(view), ref.logsumexp(x), 1e-12)
    loss, grad = fastxent.cross_entropy_with_grad(view, np.array([0, 1, 2, 3]))
    want_loss, want_grad = ref.cross_entropy_with_grad(x, np.array([0, 1, 2, 3]))
    assert_close(loss, want_loss, 1e-12)
    assert_close(grad, want_grad, 1e-12)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_loss_dtypes(dtype, rng):
    """The loss has the logits' dtype (as PyTorch): a 0-d value for reduced losses, one value
    per row for reduction="none"."""
    x = make_logits(rng, (5, 4), dtype)
    t = make_ce_target(rng, x.shape, "index")
    for reduction, shape in [("none", (5,)), ("mean", ()), ("sum", ())]:
        loss = fastxent.cross_entropy(x, t, reduction=reduction)
        assert np.shape(loss) == shape
        assert np.asarray(loss).dtype == dtype
        loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction)
        assert np.shape(loss) == shape
        assert np.asarray(loss).dtype == dtype
        assert grad.shape == x.shape and grad.dtype == dtype


def test_cross_entropy_1d_logits(rng):
    """1-D logits are one row: class indices are a 0-d integer (a Python int works)."""
    x = rng.standard_normal(6)
    for t in (3, np.int64(3), np.array(3)):
        loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction="none")
        want_loss, want_grad = ref.cross_entropy_with_grad(x, np.array(3), reduction="none")
        assert np.shape(loss) == ()
        assert_close(loss, want_loss, 1e-12)
        assert_close(grad, want_grad, 1e-12)


# ------------------------------------------------------------------------ inputs unchanged
@pytest.mark.parametrize("op", OPS + CE_OPS, ids=repr)
def test_inputs_left_unchanged(op, rng):
    for shape, axis in [((5, 9), -1), ((5, 9), 0), ((3, 4, 5), 1)]:
        if not op.axis_free:
            axis = ce_class_axis(len(shape))
        args = op.make(rng, shape, axis, np.float64)
        copies = [a.copy() for a in args]
        op.fast(args, axis)
        for a, c in zip(args, copies):
            assert bitwise_equal(a, c)
        # float32 and float16 (converted inside) too.
        for dt in (np.float32, np.float16):
            args = op.make(rng, shape, axis, dt)
            copies = [a.copy() for a in args]
            op.fast(args, axis)
            for a, c in zip(args, copies):
                assert bitwise_equal(a, c)


def test_cross_entropy_weight_and_target_left_unchanged(rng):
    x = make_logits(rng, (6, 5), np.float32)
    t = make_ce_target(rng, x.shape, "index", n_ignored=2).astype(np.int32)
    w = np.linspace(0.1, 2.0, 5).astype(np.float32)
    t0, w0, x0 = t.copy(), w.copy(), x.copy()
    fastxent.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.2)
    fastxent.cross_entropy(x, t, weight=w, label_smoothing=0.2)
    assert bitwise_equal(t, t0) and bitwise_equal(w, w0) and bitwise_equal(x, x0)


# ------------------------------------------------------------------------------- the build
def test_openmp_enabled():
    assert fastxent.openmp_enabled() is True


def test_public_names():
    for name in ["logsumexp", "softmax", "log_softmax", "softmax_backward",
                 "log_softmax_backward", "logsumexp_backward", "softmax_jacobian",
                 "cross_entropy", "cross_entropy_with_grad"]:
        f = getattr(fastxent, name)
        assert callable(f)
        assert f.__doc__ and "Examples" in f.__doc__, f"{name} needs a numpydoc Examples section"
    assert callable(fastxent.openmp_enabled) and fastxent.openmp_enabled.__doc__
    assert isinstance(fastxent.__version__, str)
