"""Shared registries, data makers and comparison helpers for the fastxent tests.

The tests are a package (``tests/__init__.py``) so that test modules can import the
registries below with ``from .conftest import ...``; pytest also loads this module as the
conftest, which provides the fixtures and the hypothesis profile.

Vocabulary
----------
``Op``
    One public function: how to make its inputs for a given shape, class axis and dtype,
    how to call the fastxent version and the float64 slow twin (``fastxent._reference``).
``LAYOUTS``
    Functions that return an array equal to their argument but laid out differently in
    memory (C, Fortran, strided, negative strides, offset view, contiguous rows inside wider
    rows, transposed, read-only).
``SHAPE_AXES``
    (shape, axis) cases: 0 rows, 1 column, 1 row, a large C, 1-D, N-D with every axis.
"""

import dataclasses
import os
import warnings
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastxent
from fastxent import _reference as ref

# -------------------------------------------------------------------------------- hypothesis
# A small default run keeps `pytest tests` well under two minutes on 2 cores; set
# HYPOTHESIS_PROFILE=thorough for a longer search.
settings.register_profile(
    "default", deadline=None, max_examples=30, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# When a hypothesis test fails, its pytest plugin imports hypothesis.extra._patching (to
# suggest an @example patch), which imports libcst, which on some installs imports
# mypy_extensions.TypedDict and so emits a DeprecationWarning. Under `-W error` that turns a
# test failure into an INTERNALERROR that hides the falsifying example. Import it once here,
# with that warning silenced, so the failure is reported normally.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # libcst not installed: the plugin then skips the patch
        pass


# -------------------------------------------------------------------------------- dtypes
# Input dtype -> dtype of the result (contract: float32/float64 kept, other floats computed
# in float32 and cast back, integers promoted to float64).
DTYPES = {
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.float16): np.dtype(np.float16),
    np.dtype(np.int32): np.dtype(np.float64),
    np.dtype(np.int64): np.dtype(np.float64),
}
FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]

# Relative tolerance per result dtype. float64: the kernels and the twin both shift by the
# max and sum in double, so they differ by a few ulp (2.2e-16) times the condition of the
# operation; 1e-12 leaves room for C = 3000 summations and a 1-ulp exp. float32: results
# are rounded to float32 (6e-8) after double accumulation, and exp's argument x - max is
# rounded to float32 with a relative error of |x - max| * 6e-8, so for |x| up to ~50 the
# error stays below ~3e-6: 1e-5. float16: computed in float32, rounded to float16 (ulp
# 9.8e-4 at 1): 3e-3.
RTOL = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float16): 3e-3,
}


def result_dtype(dtype):
    return DTYPES[np.dtype(dtype)]


def assert_close(got, want, rtol, *, scale=None, err_msg=""):
    """Elementwise ``|got - want| <= rtol * (|want| + scale)`` on finite values.

    Non-finite values must match exactly: NaN where the twin has NaN, and infinities of the
    same sign. ``scale`` (default: the largest finite ``|want|``, at least 1) is an absolute
    allowance for results that come from cancellation (log_softmax near 0, gradients), whose
    error is relative to the size of the terms, not of the result.
    """
    got = np.asarray(got)
    want = np.asarray(want, dtype=np.float64)
    if got.dtype.kind == "f" and got.dtype.itemsize < 8:
        # Compare with the twin rounded to the result's dtype: a value beyond its range is
        # rightly +-inf there (e.g. -3e38 - 3e38 in float32).
        with np.errstate(over="ignore"):
            want = want.astype(got.dtype).astype(np.float64)
    got = got.astype(np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}. {err_msg}"
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_got, nan_want), (
        f"NaN positions differ: got NaN at {np.argwhere(nan_got)[:5].tolist()}, "
        f"want NaN at {np.argwhere(nan_want)[:5].tolist()}. {err_msg}")
    inf_want = np.isinf(want)
    assert np.array_equal(got[inf_want], want[inf_want]) and not np.isinf(got[~inf_want]).any(), (
        f"infinities differ. {err_msg}")
    fin = np.isfinite(want)
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(want[fin]), initial=0.0)))
    err = np.abs(got[fin] - want[fin])
    bound = rtol * np.abs(want[fin]) + rtol * scale  # (no overflow near the float64 max)
    if err.size and not np.all(err <= bound):
        i = int(np.argmax(err - bound))
        raise AssertionError(
            f"not close (rtol={rtol}, scale={scale}): worst got {got[fin][i]!r} want "
            f"{want[fin][i]!r} (err {err[i]:.3e} > {bound[i]:.3e}); "
            f"{int(np.sum(err > bound))} of {err.size} off. {err_msg}")


def bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and (
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


# -------------------------------------------------------------------------------- layouts
def _c(a):
    return np.ascontiguousarray(a)


def _f(a):
    return np.asfortranarray(a)


def _strided(a):
    """Every other element of a larger buffer along every axis (no axis is contiguous)."""
    buf = np.full(tuple(2 * s + 1 for s in a.shape), 123, dtype=a.dtype)
    view = buf[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _reversed(a):
    """Negative strides along every axis."""
    flip = tuple(slice(None, None, -1) for _ in a.shape)
    return np.ascontiguousarray(a[flip])[flip]


def _reversed_rows(a):
    """Negative strides along the first axis only (rows stay contiguous when it is not the
    last axis)."""
    return np.ascontiguousarray(a[::-1])[::-1]


def _offset(a):
    """A C-ordered view that starts 3 elements into a buffer (and leaves 2 after it)."""
    buf = np.full(a.size + 5, 77, dtype=a.dtype)
    view = buf[3:3 + a.size].reshape(a.shape)
    view[...] = a
    return view


def _padded_rows(a):
    """Contiguous rows (along the last axis) inside wider rows: ``buf[..., 1:C + 1]``."""
    buf = np.full(a.shape[:-1] + (a.shape[-1] + 3,), 55, dtype=a.dtype)
    view = buf[..., 1:a.shape[-1] + 1]
    view[...] = a
    return view


def _transposed(a):
    """A transposed view of a C array (Fortran order for 2-D, mixed strides for N-D)."""
    axes = tuple(range(a.ndim))[::-1]
    return np.ascontiguousarray(np.transpose(a, axes)).transpose(axes)


def _readonly(a):
    b = np.array(a)
    b.flags.writeable = False
    return b


def _keep_0d(layout):
    """0-d arrays (the grad_output of logsumexp_backward on a 1-D row) have no layout."""
    def apply(a):
        a = np.asarray(a)
        return np.array(a) if a.ndim == 0 else layout(a)
    apply.__name__ = layout.__name__
    return apply


LAYOUTS = {
    "C": _c,
    "F": _f,
    "strided": _strided,
    "reversed": _reversed,
    "reversed_rows": _reversed_rows,
    "offset": _offset,
    "padded_rows": _padded_rows,
    "transposed": _transposed,
    "readonly": _readonly,
}
LAYOUTS = {name: _keep_0d(f) for name, f in LAYOUTS.items()}


# -------------------------------------------------------------------------------- shapes
# (shape, axis): 0 rows, 1 column, 1 row, large C, 1-D, N-D along every axis.
SHAPE_AXES = [
    ((0, 5), -1),
    ((6, 1), -1),
    ((1, 7), -1),
    ((3, 3000), -1),
    ((17, 33), -1),
    ((17, 33), 0),
    ((7,), -1),
    ((7,), 0),
    ((2, 3, 5), 0),
    ((2, 3, 5), 1),
    ((2, 3, 5), -1),
    ((2, 0, 5), -1),
    ((3, 2, 4, 5), 2),
]


def shape_axis_id(case):
    shape, axis = case
    return "x".join(map(str, shape)) + f"-ax{axis}"


def make_logits(rng, shape, dtype, scale=3.0):
    """Random logits of ``dtype``: normal * scale for floats, integers in [-5, 5] otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return rng.integers(-5, 6, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def batch_shape(shape, axis):
    return tuple(s for i, s in enumerate(shape) if i != axis % len(shape))


# -------------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class Op:
    """One public function, its slow twin, and how to make arguments for it.

    ``make(rng, shape, axis, dtype)`` returns the tuple of array arguments (in the order the
    functions take them); ``fast(args, axis, **kw)`` and ``slow(args, axis)`` call fastxent and
    the twin. ``out_input`` is the index of the argument that may serve as ``out=`` (in
    place), or None. ``axis_free`` says the function takes any class axis.
    """
    name: str
    make: Callable
    fast: Callable
    slow: Callable
    out_input: object = 0
    axis_free: bool = True

    def __repr__(self):
        return self.name


def _make_x(rng, shape, axis, dtype):
    return (make_logits(rng, shape, dtype),)


def _make_softmax_bwd(rng, shape, axis, dtype):
    x = make_logits(rng, shape, np.float64)
    y = ref.softmax(x, axis=axis)
    g = make_logits(rng, shape, np.float64, scale=1.0)
    if np.dtype(dtype).kind in "iu":
        return g.round().astype(dtype), (y > 0.1).astype(dtype)
    return g.astype(dtype), y.astype(dtype)


def _make_log_softmax_bwd(rng, shape, axis, dtype):
    x = make_logits(rng, shape, np.float64)
    y = ref.log_softmax(x, axis=axis)
    g = make_logits(rng, shape, np.float64, scale=1.0)
    if np.dtype(dtype).kind in "iu":
        return g.round().astype(dtype), np.maximum(y.round(), -3).astype(dtype)
    return g.astype(dtype), y.astype(dtype)


def _make_lse_bwd(rng, shape, axis, dtype):
    x = make_logits(rng, shape, dtype)
    g = make_logits(rng, batch_shape(shape, axis), dtype, scale=1.0)
    return g, x


OPS = [
    Op("logsumexp", _make_x,
       lambda a, axis, **kw: fastxent.logsumexp(a[0], axis, **kw),
       lambda a, axis: ref.logsumexp(a[0], axis), out_input=None),
    Op("logsumexp_keepdims", _make_x,
       lambda a, axis, **kw: fastxent.logsumexp(a[0], axis, keepdims=True, **kw),
       lambda a, axis: ref.logsumexp(a[0], axis, keepdims=True), out_input=None),
    Op("softmax", _make_x,
       lambda a, axis, **kw: fastxent.softmax(a[0], axis, **kw),
       lambda a, axis: ref.softmax(a[0], axis)),
    Op("log_softmax", _make_x,
       lambda a, axis, **kw: fastxent.log_softmax(a[0], axis, **kw),
       lambda a, axis: ref.log_softmax(a[0], axis)),
    Op("softmax_backward", _make_softmax_bwd,
       lambda a, axis, **kw: fastxent.softmax_backward(a[0], a[1], axis, **kw),
       lambda a, axis: ref.softmax_backward(a[0], a[1], axis)),
    Op("log_softmax_backward", _make_log_softmax_bwd,
       lambda a, axis, **kw: fastxent.log_softmax_backward(a[0], a[1], axis, **kw),
       lambda a, axis: ref.log_softmax_backward(a[0], a[1], axis)),
    Op("logsumexp_backward", _make_lse_bwd,
       lambda a, axis, **kw: fastxent.logsumexp_backward(a[0], a[1], axis, **kw),
       lambda a, axis: ref.logsumexp_backward(a[0], a[1], axis), out_input=1),
]
OPS_BY_NAME = {op.name: op for op in OPS}


def ce_class_axis(ndim):
    """PyTorch's class axis: 1 for ndim >= 2, 0 for 1-D."""
    return 1 if ndim >= 2 else 0


def make_ce_target(rng, logits_shape, kind, *, ignore_index=-100, n_ignored=0,
                   index_dtype=np.int64, prob_dtype=np.float64):
    """A target for logits of ``logits_shape``: ``kind`` is "index" or "prob".

    For indices, ``n_ignored`` of the rows (the first ones in C order; all of them when -1)
    get ``ignore_index``.
    """
    ax = ce_class_axis(len(logits_shape))
    n_classes = logits_shape[ax]
    if kind == "index":
        t = rng.integers(0, n_classes, size=batch_shape(logits_shape, ax))
        flat = t.reshape(-1)
        k = flat.size if n_ignored == -1 else min(n_ignored, flat.size)
        flat[:k] = ignore_index
        return flat.reshape(t.shape).astype(index_dtype)
    p = rng.random(logits_shape) ** 2
    p /= p.sum(axis=ax, keepdims=True)
    return p.astype(prob_dtype)


# Cross-entropy variants that fit the (args, axis) registry: logits with the PyTorch class
# axis, target as argument 1.
def _make_ce(kind):
    def make(rng, shape, axis, dtype):
        x = make_logits(rng, shape, dtype)
        pdt = dtype if np.dtype(dtype).kind == "f" else np.float64
        return x, make_ce_target(rng, shape, kind, n_ignored=1, prob_dtype=pdt)
    return make


CE_SHAPES = [(0, 5), (6, 1), (1, 7), (3, 3000), (17, 33), (7,), (2, 3, 5), (3, 2, 4, 5)]

CE_OPS = []
for _kind in ("index", "prob"):
    for _red in ("none", "mean", "sum"):
        CE_OPS.append(Op(
            f"cross_entropy-{_kind}-{_red}", _make_ce(_kind),
            (lambda r: lambda a, axis, **kw: fastxent.cross_entropy(
                a[0], a[1], reduction=r, **kw))(_red),
            (lambda r: lambda a, axis: ref.cross_entropy(a[0], a[1], reduction=r))(_red),
            out_input=None, axis_free=False))
        CE_OPS.append(Op(
            f"cross_entropy_with_grad-{_kind}-{_red}", _make_ce(_kind),
            (lambda r: lambda a, axis, **kw: fastxent.cross_entropy_with_grad(
                a[0], a[1], reduction=r, label_smoothing=0.1, **kw))(_red),
            (lambda r: lambda a, axis: ref.cross_entropy_with_grad(
                a[0], a[1], reduction=r, label_smoothing=0.1))(_red),
            out_input=0, axis_free=False))
CE_OPS_BY_NAME = {op.name: op for op in CE_OPS}


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
