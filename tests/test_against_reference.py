"""Every public function against its float64 slow twin (fastxent._reference).

Registry of functions x dtypes x memory layouts x (shape, axis) cases, as bottleneck tests
its fast functions against ``bottleneck.slow``.
"""

import numpy as np
import pytest

import fastxent
from fastxent import _reference as ref

from .conftest import (
    CE_OPS, CE_SHAPES, DTYPES, FLOAT_DTYPES, LAYOUTS, OPS, RTOL, SHAPE_AXES, assert_close,
    ce_class_axis, make_ce_target, result_dtype, shape_axis_id,
)

PROMOTED_DTYPES = [d for d in DTYPES if d not in FLOAT_DTYPES]


def _check(got, want, dtype, err_msg=""):
    """``got`` has the result dtype for inputs of ``dtype`` and is close to the twin."""
    rdt = result_dtype(dtype)
    got_arr = np.asarray(got)
    assert got_arr.dtype == rdt, f"result dtype {got_arr.dtype}, expected {rdt}. {err_msg}"
    assert_close(got_arr, want, RTOL[rdt], err_msg=err_msg)


def _check_result(op, got, want, dtype):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), f"{op.name} returned {got!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _check(g, w, dtype, f"{op.name} result[{i}]")
    else:
        assert isinstance(got, np.ndarray) or np.ndim(want) == 0, type(got)
        _check(got, want, dtype, op.name)


@pytest.mark.parametrize("case", SHAPE_AXES, ids=shape_axis_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=repr)
def test_matches_reference(op, dtype, layout, case, rng):
    shape, axis = case
    args = tuple(LAYOUTS[layout](a) for a in op.make(rng, shape, axis, dtype))
    _check_result(op, op.fast(args, axis), op.slow(args, axis), dtype)


@pytest.mark.parametrize("case", SHAPE_AXES, ids=shape_axis_id)
@pytest.mark.parametrize("layout", ["C", "strided"])
@pytest.mark.parametrize("dtype", PROMOTED_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=repr)
def test_promoted_dtypes_match_reference(op, dtype, layout, case, rng):
    """float16 is computed in float32 and cast back; integers are promoted to float64."""
    shape, axis = case
    args = tuple(LAYOUTS[layout](a) for a in op.make(rng, shape, axis, dtype))
    _check_result(op, op.fast(args, axis), op.slow(args, axis), dtype)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("op", CE_OPS, ids=repr)
def test_cross_entropy_matches_reference(op, dtype, layout, shape, rng):
    axis = ce_class_axis(len(shape))
    args = tuple(LAYOUTS[layout](a) for a in op.make(rng, shape, axis, dtype))
    _check_result(op, op.fast(args, axis), op.slow(args, axis), dtype)


@pytest.mark.parametrize("dtype", PROMOTED_DTYPES, ids=str)
@pytest.mark.parametrize("op", CE_OPS, ids=repr)
def test_cross_entropy_promoted_dtypes(op, dtype, rng):
    shape = (9, 6)
    args = op.make(rng, shape, 1, dtype)
    _check_result(op, op.fast(args, 1), op.slow(args, 1), dtype)


@pytest.mark.parametrize("index_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                         np.uint16, np.uint32, np.uint64], ids=str)
def test_cross_entropy_any_integer_target_dtype(index_dtype, rng):
    x = rng.standard_normal((11, 5))
    t = rng.integers(0, 5, size=11).astype(index_dtype)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction="none")
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t.astype(np.int64), reduction="none")
    assert_close(loss, want_loss, 1e-12)
    assert_close(grad, want_grad, 1e-12)


def test_large_rows_cross_cache_blocks(rng):
    """Rows longer than the kernels' blocks (2048) with the max in a later block."""
    for dtype in FLOAT_DTYPES:
        x = rng.standard_normal((3, 10000)).astype(dtype)
        x[0, 9000] = 40.0   # max in the last block: the running sum must be rescaled
        x[1, 10] = 40.0     # max in the first block
        x[2, 5000] = -40.0
        rtol = RTOL[dtype]
        assert_close(fastxent.logsumexp(x), ref.logsumexp(x), rtol)
        assert_close(fastxent.log_softmax(x), ref.log_softmax(x), rtol)
        assert_close(fastxent.softmax(x), ref.softmax(x), rtol)
        t = np.array([9000, 3, 5000])
        for ls in (0.0, 0.3):
            loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction="none",
                                                          label_smoothing=ls)
            want_loss, want_grad = ref.cross_entropy_with_grad(x, t, reduction="none",
                                                               label_smoothing=ls)
            assert_close(loss, want_loss, rtol)
            assert_close(grad, want_grad, rtol)
            assert_close(fastxent.cross_entropy(x, t, reduction="none", label_smoothing=ls),
                         want_loss, rtol)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_softmax_jacobian_matches_reference(dtype, rng):
    for shape in [(5,), (1,), (3, 4), (2, 3, 6), (0, 4)]:
        x = rng.standard_normal(shape).astype(dtype)
        got = fastxent.softmax_jacobian(x)
        want = ref.softmax_jacobian(x)
        assert got.shape == shape + shape[-1:]
        assert got.dtype == dtype
        assert_close(got, want, RTOL[np.dtype(dtype)])
        # Symmetric, rows sum to 0 (softmax sums to 1 whatever x is).
        np.testing.assert_array_equal(got, np.swapaxes(got, -1, -2))
        # atol: sums of C terms of size <= 1/4 in the result dtype.
        np.testing.assert_allclose(got.sum(axis=-1), 0.0, atol=10 * np.finfo(dtype).eps)


def test_softmax_jacobian_layouts(rng):
    x = rng.standard_normal((4, 7))
    for name, layout in LAYOUTS.items():
        assert_close(fastxent.softmax_jacobian(layout(x)), ref.softmax_jacobian(x), 1e-12,
                     err_msg=name)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_cross_entropy_any_class_axis(axis, kind, rng):
    """``axis=`` moves the class axis away from PyTorch's (1): the same as moving it there."""
    x = rng.standard_normal((3, 4, 5))
    x_torch_layout = np.moveaxis(x, axis, 1)  # class axis where PyTorch expects it
    t_torch_layout = make_ce_target(rng, x_torch_layout.shape, kind, n_ignored=2)
    t = t_torch_layout if kind == "index" else np.moveaxis(t_torch_layout, 1, axis)
    for reduction in ("none", "mean"):
        kw = dict(reduction=reduction, label_smoothing=0.1)
        want_loss, want_grad = ref.cross_entropy_with_grad(x_torch_layout, t_torch_layout, **kw)
        loss, grad = fastxent.cross_entropy_with_grad(x, t, axis=axis, **kw)
        assert_close(loss, want_loss, 1e-12)
        assert_close(grad, np.moveaxis(want_grad, 1, axis), 1e-12)
        assert_close(fastxent.cross_entropy(x, t, axis=axis, **kw), want_loss, 1e-12)
        # the twin's own axis= agrees with moving the axis
        assert_close(ref.cross_entropy_with_grad(x, t, axis=axis, **kw)[1],
                     np.moveaxis(want_grad, 1, axis), 1e-12)
