"""Property-based fuzzing of every public function against the float64 slow twins.

Each test draws a call -- shape and class axis (0 rows, 0 or 1 column, 1 row, short rows in
blocks of 64, C up to 10^5 now and then), dtype (float16/32/64, big-endian floats,
longdouble, every integer width, bool), memory layout (C, Fortran, strided, negative strides,
offset views, unaligned, broadcast, read-only, np.memmap), values (normal at every scale from
1e-30 to 1e300, ties, spikes, +-3e38, +-1.8e308, subnormals, +-inf, NaN, rows of all -inf),
``n_threads``, ``out=`` and, for the cross-entropy, every option -- and checks that

* the result has the contract's dtype and shape, and ``out`` (when given) is returned and holds
  bitwise what a call without ``out`` returns;
* each value is within an error bound (below) of the float64 twin in ``fastxent._reference``,
  NaN exactly where the twin has NaN, the same infinities;
* the inputs are left unchanged, and a multi-threaded call equals the one-thread call bitwise;
* rows whose label is ``ignore_index`` have exactly zero loss and gradient;
* a call the twin refuses (a label out of range) raises ``ValueError``; and the error test
  mutates a valid call into an invalid one and expects a ``ValueError``/``TypeError`` naming
  the argument.

Error bounds
------------
The kernels see the inputs converted to their compute dtype (float32 for float16/float32,
float64 otherwise); the twin is given that same conversion (the contract defines the result
on it). ``u`` is the compute dtype's unit roundoff (2^-24 or 2^-53), ``u64 = 2^-53`` that of the
double accumulators, ``tiny`` the smallest normal number of the compute dtype. Standard
forward-error bounds, doubled for safety, of both computations (kernel and twin):

* log-sum-exp of a row of ``C``: ``lse = m + log(s)``, ``s = sum(exp(x - m)) >= 1``. Rounding
  ``x - m`` perturbs ``exp`` by ``u |x - m|``, whose average under the softmax weights is at
  most ``log C``; the exp is within 2 ulp (tests/test_exp_accuracy.py); ``s`` is summed in
  double, float exponentials four at a time in float first (2 u relative to the four). So
  ``|d lse| <= E_lse = u (log(C + 1) + 16) + u64 (C + 16)``.
* softmax ``p_j``: relative ``u (|x_j - m| + 12) + E_lse``, plus ``tiny`` absolute where an
  exponential underflows; log-softmax ``x_j - lse``: ``E_lse`` absolute.
* the backward functions and the cross-entropy: the same exp and lse terms, each sum in double
  with ``u64 (C + 8)`` times the sum of the absolute values of its terms, each product or
  difference in the compute dtype with ``u`` times its absolute value. The log-sum-exp
  gradient also carries ``u |lse|``: the kernel rounds ``lse`` to the compute dtype before
  ``exp(x - lse)`` (as PyTorch does; see ``test_lse_backward_float32_large_logits``).
* then the result is rounded to its dtype: one ulp of it, and its smallest subnormal.

Where an intermediate of a finite input leaves the range of the dtype it is computed in (a
gradient sum above 1e300 in double, or above max/8 of float32, say) the kernel and the twin
may round to different infinities or NaN; such elements ("range-limited", rare: they need
values beyond 1e38 in float32 gradients or 1e300 in float64) are checked only for shape and
dtype. Every other element is checked, NaN and infinities included.

Profiles: see tests/_hypothesis_profiles.py (``FASTXENT_HYPOTHESIS_PROFILE=slow``).
"""
import decimal
import itertools
import math
import operator
import os
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, note, strategies as st

import fastxent
from fastxent import _reference as ref

from ._hypothesis_profiles import fuzz_settings

# fastxent converts a second input to the first's dtype, and float16 results from float32, with
# NumPy casts, which warn when a value overflows to inf (a float64 1e300 given with float32
# logits, a float16 gradient beyond 65504). That warning is right; the fuzz lets it through.
# The other two filters are for a finding (test_reduced_loss_*_is_silent): cross_entropy's
# "sum"/"mean" add the row losses with a NumPy sum, which warns when finite losses overflow
# to inf or when +inf and -inf meet.
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in reduce:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in reduce:RuntimeWarning"),
]

# Calls under this many elements run on one thread (fastxent._validate.SERIAL_BELOW).
SERIAL_BELOW = 1 << 15
U64 = 2.0 ** -53
TINY64 = float(np.finfo(np.float64).tiny)
INF, NAN = np.inf, np.nan

# ------------------------------------------------------------------------------- dtypes

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
OTHER_DTYPES = [np.dtype(">f4"), np.dtype(">f8"), np.dtype(np.longdouble),
                np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32),
                np.dtype(np.int64), np.dtype(np.uint8), np.dtype(np.uint16),
                np.dtype(np.uint32), np.dtype(np.uint64), np.dtype(np.bool_)]
# float32 and float64 most of the time: they are what the kernels compute in.
DTYPES = st.one_of(st.sampled_from(FLOAT_DTYPES[:2]), st.sampled_from(FLOAT_DTYPES),
                   st.sampled_from(OTHER_DTYPES))
INDEX_DTYPES = [np.dtype(t) for t in (np.int64, np.int32, np.int16, np.int8, np.uint8,
                                      np.uint16, np.uint32, np.uint64)]


def compute_dtype(dtype):
    """The contract: float16/float32 in float32, other floats, integers and bool in float64.
    (A big-endian float32 is computed in float64, as fastxent._validate.compute_dtype does:
    more accurate than float32, and rounded once to the result.)"""
    dtype = np.dtype(dtype)
    if dtype == np.float32 or (dtype.kind == "f" and dtype.itemsize < 4):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def result_dtype(dtype):
    """Floats keep their dtype, integers and bool give float64."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def same_dtype(a, b):
    """Equal dtypes, byte order aside (a big-endian input may give a native result)."""
    return np.dtype(a).newbyteorder("=") == np.dtype(b).newbyteorder("=")


def unit(dtype):
    return 2.0 ** -24 if compute_dtype(dtype) == np.float32 else U64


def finfo_of(dtype):
    """finfo of the dtype a result is rounded to (longdouble results hold float64 values)."""
    dtype = np.dtype(dtype)
    return np.finfo(np.float64 if dtype.itemsize > 8 else dtype.newbyteorder("="))


# ------------------------------------------------------------------------------- values

SPECIALS = [0.0, -0.0, INF, -INF, NAN, 3e38, -3e38, 3.4028235e38, -3.4028235e38,
            1.7976931348623157e308, -1.7976931348623157e308, 1e-45, -1e-45, 1e-40, 5e-324,
            2.2250738585072014e-308, 1.1754944e-38, 1e4, -1e4, 88.7, -87.4, -103.9, 709.8,
            -745.2, 65504.0, -65504.0, 6e-8, 1.0, -1.0, 1e-300]
SCALES = [1e-30, 1e-3, 1.0, 5.0, 30.0, 1e3, 1e5, 1e30, 3e38, 1e300]


def cast(values, dtype):
    """float64 values to ``dtype``, overflowing to +-inf silently (floats only)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float64).astype(dtype)


@st.composite
def float_values(draw, n, dtype):
    """``n`` float64 values meant for ``dtype`` (a float): element by element from hypothesis
    for short arrays, else a seeded NumPy distribution with special values sprinkled in."""
    width = {2: 16, 4: 32}.get(np.dtype(dtype).itemsize, 64)
    if n <= 48 and draw(st.booleans()):
        elements = st.one_of(st.floats(-60, 60, width=width), st.sampled_from(SPECIALS),
                             st.floats(width=width))
        return np.array(draw(st.lists(elements, min_size=n, max_size=n)), dtype=np.float64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dist = draw(st.sampled_from(["normal", "normal", "uniform", "constant", "ties", "spiky",
                                 "shifted"]))
    scale = draw(st.sampled_from(SCALES))
    if dist == "normal":
        v = rng.standard_normal(n) * scale
    elif dist == "uniform":
        v = rng.uniform(-1.0, 1.0, n) * scale
    elif dist == "constant":
        v = np.full(n, draw(st.sampled_from(SPECIALS + [2.5, -7.0])))
    elif dist == "ties":
        v = rng.integers(-2, 3, n).astype(np.float64)
    elif dist == "spiky":
        v = -np.abs(rng.standard_normal(n)) * scale
        v[rng.random(n) < 0.05] = scale
    else:  # large offset, small spread: the shift by the max matters
        v = draw(st.sampled_from([-1e4, 1e4, -3e5, 1e7, -1e30])) + rng.standard_normal(n)
    positions = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=6 if n else 0))
    for p in positions:
        v[p] = draw(st.sampled_from(SPECIALS))
    return v


@st.composite
def int_values(draw, n, dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        lo, hi = max(info.min, -5), min(info.max, 5)
    else:
        lo, hi = info.min, info.max
    v = rng.integers(lo, hi, n, dtype=dtype, endpoint=True)
    for p in draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=3 if n else 0)):
        v[p] = draw(st.sampled_from([info.min, info.max, 0]))
    return v


@st.composite
def values_of(draw, shape, dtype, class_axis=None, neg_inf_rows=True):
    """An array of ``shape`` and ``dtype``; for floats, some rows (along ``class_axis``) may
    be all -inf."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if dtype.kind == "b":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return (rng.random(n) < 0.5).reshape(shape)
    if dtype.kind in "iu":
        return draw(int_values(n, dtype)).reshape(shape)
    x = cast(draw(float_values(n, dtype)), dtype).reshape(shape)
    if neg_inf_rows and class_axis is not None and n and draw(st.integers(0, 3)) == 0:
        rows = np.moveaxis(x, class_axis, -1).reshape(-1, shape[class_axis])
        for r in draw(st.lists(st.integers(0, rows.shape[0] - 1), min_size=1, max_size=3)):
            rows[r] = -np.inf
        x = np.moveaxis(rows.reshape(np.moveaxis(x, class_axis, -1).shape), -1, class_axis)
    return x


# ------------------------------------------------------------------------------- shapes

@st.composite
def shape_and_axis(draw, max_classes=None, min_classes=0, max_ndim=3):
    """A shape with its class axis. Sizes: mostly small; rows in 64-row blocks around the
    128-class block threshold; medium rows big enough for several threads; and now and
    then one to three rows of up to 10^5 classes."""
    kind = draw(st.sampled_from(["small"] * 5 + ["blocky"] * 2 + ["medium"] * 2 + ["wide"]))
    ndim = draw(st.integers(1, max_ndim))
    if kind == "small":
        c = draw(st.integers(min_classes, 9))
        batch = [draw(st.integers(0, 5)) for _ in range(ndim - 1)]
    elif kind == "blocky":
        c = draw(st.integers(max(min_classes, 1), 140))
        batch = [draw(st.integers(0, 150))] + [draw(st.integers(1, 2)) for _ in range(ndim - 2)]
    elif kind == "medium":
        c = draw(st.integers(100, 3000))
        batch = [draw(st.integers(1, 40))] + [1] * (ndim - 2)
    else:
        c = draw(st.integers(2000, 100_000))
        batch = [draw(st.integers(1, 3))] + [1] * (ndim - 2)
    if max_classes is not None:
        c = min(c, max_classes)
    if ndim == 1:
        batch = []
    batch = draw(st.permutations(batch)) if batch else []
    axis = draw(st.integers(0, ndim - 1))
    shape = tuple(batch[:axis]) + (c,) + tuple(batch[axis:])
    return shape, axis


def batch_shape(shape, axis):
    return shape[:axis] + shape[axis + 1:]


# ------------------------------------------------------------------------------- layouts

LAYOUTS = ["C", "C", "F", "strided", "class_strided", "negative", "negative_batch", "offset",
           "transposed", "readonly", "memmap", "memmap_rw", "unaligned", "broadcast",
           "padded_rows"]
_counter = itertools.count()


def _in_buffer(x, pad_shape, index):
    buf = np.zeros(pad_shape, dtype=x.dtype)
    view = buf[index]
    view[...] = x
    return view


def apply_layout(x, layout, axis, memmap_dir):
    """``x`` (its values; for "broadcast", those of one row repeated) in another memory layout."""
    if x.ndim == 0:
        return np.array(x)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        return _in_buffer(x, tuple(2 * s + 1 for s in x.shape),
                          tuple(slice(1, None, 2) for _ in x.shape))
    if layout == "class_strided":
        index = [slice(None)] * x.ndim
        index[axis] = slice(None, None, 2)
        shape = list(x.shape)
        shape[axis] *= 2
        return _in_buffer(x, tuple(shape), tuple(index))
    if layout == "negative":
        flip = tuple(slice(None, None, -1) for _ in x.shape)
        return np.ascontiguousarray(x[flip])[flip]
    if layout == "negative_batch":
        index = [slice(None, None, -1)] * x.ndim
        index[axis] = slice(None)
        index = tuple(index)
        return np.ascontiguousarray(x[index])[index]
    if layout == "offset":
        buf = np.zeros(x.size + 7, dtype=x.dtype)
        view = buf[3:3 + x.size].reshape(x.shape)
        view[...] = x
        return view
    if layout == "transposed":
        axes = tuple(range(x.ndim))[::-1]
        return np.ascontiguousarray(np.transpose(x, axes)).transpose(axes)
    if layout == "readonly":
        y = np.array(x)
        y.flags.writeable = False
        return y
    if layout in ("memmap", "memmap_rw") and x.size:
        path = os.path.join(memmap_dir, f"x{next(_counter)}.dat")
        order = "F" if x.ndim > 1 and x.size % 2 else "C"
        mm = np.memmap(path, dtype=x.dtype, mode="w+", shape=x.shape, order=order)
        mm[...] = x
        mm.flush()
        del mm
        mm = np.memmap(path, dtype=x.dtype, mode="r" if layout == "memmap" else "r+",
                       shape=x.shape, order=order)
        os.unlink(path)  # the mapping stays valid; nothing is left behind
        return mm
    if layout == "unaligned" and x.dtype.itemsize > 1:
        buf = np.zeros(x.nbytes + x.dtype.itemsize, dtype=np.uint8)
        view = buf[1:1 + x.nbytes].view(x.dtype).reshape(x.shape)
        view[...] = x
        return view
    if layout == "broadcast" and x.ndim > 1:
        b = (axis + 1) % x.ndim
        if x.shape[b]:
            return np.broadcast_to(x.take([0], axis=b), x.shape)
    if layout == "padded_rows":
        index = [slice(None)] * x.ndim
        index[-1] = slice(1, x.shape[-1] + 1)
        shape = list(x.shape)
        shape[-1] += 3
        return _in_buffer(x, tuple(shape), tuple(index))
    return np.ascontiguousarray(x)


@pytest.fixture(scope="module")
def memmap_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz_memmap"))


@st.composite
def laid_out(draw, x, axis, memmap_dir):
    layout = draw(st.sampled_from(LAYOUTS), label="layout")
    return apply_layout(x, layout, axis, memmap_dir)


N_THREADS = st.sampled_from([None, None, 1, 2, 3, 8])


# ------------------------------------------------------------------------------- checks

def _bits(a):
    """The bytes of ``a``'s values (longdouble: its value bits, not its padding)."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind == "f" and a.dtype.itemsize > 8 and np.finfo(a.dtype).nmant == 63:
        # x87 extended precision: 10 bytes of value in 12 or 16 (little-endian x86)
        return a.view(np.uint8).reshape(-1, a.dtype.itemsize)[:, :10].tobytes()
    return a.tobytes()


def snapshot(*arrays):
    return [None if a is None else (np.asarray(a).dtype, np.shape(a), _bits(a))
            for a in arrays]


def assert_unchanged(arrays, snaps, skip=()):
    for i, (a, s) in enumerate(zip(arrays, snaps)):
        if a is None or i in skip:
            continue
        assert (np.asarray(a).dtype, np.shape(a), _bits(a)) == s, f"input {i} was modified"


def bitwise_equal(a, b):
    """Same dtype, shape and bits (NaN payloads and the sign of zero included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and _bits(a) == _bits(b)


def assert_within(got, want, bound, res_dtype, what, limited=None):
    """``got`` (of dtype ``res_dtype``) against the float64 ``want``: the same NaNs and
    infinities, and ``|got - want| <= bound + 1 ulp + smallest subnormal`` of ``res_dtype``
    elsewhere. ``limited`` marks range-limited elements (not compared)."""
    got_arr = np.asarray(got)
    assert same_dtype(got_arr.dtype, res_dtype), f"{what}: dtype {got_arr.dtype} != {res_dtype}"
    want = np.asarray(want, dtype=np.float64)
    assert got_arr.shape == want.shape, f"{what}: shape {got_arr.shape} != {want.shape}"
    got = got_arr.astype(np.float64)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), want.shape)
    check = np.ones(want.shape, bool) if limited is None else ~np.broadcast_to(limited,
                                                                              want.shape)
    fi = finfo_of(res_dtype)
    with np.errstate(all="ignore"):
        want_r = want.astype(fi.dtype).astype(np.float64)  # rounded to the result dtype
        a = np.abs(want_r).astype(fi.dtype)
        s1, s2 = np.spacing(a), np.spacing(np.nextafter(a, fi.dtype.type(0)))
        ulp = np.where(np.isfinite(s1), np.maximum(s1, s2), s2).astype(np.float64)
        allowed = bound + np.where(np.isfinite(ulp), ulp, 0.0) + float(fi.smallest_subnormal)
        near_overflow = np.abs(want) + allowed >= float(fi.max)
        nan_ok = np.isnan(got) == np.isnan(want_r)
        inf_ok = np.where(np.isinf(want_r) | np.isinf(got),
                          (got == want_r) | near_overflow, True)
        fin = np.isfinite(want_r) & np.isfinite(got)
        err = np.where(fin, np.abs(got - want), 0.0)
        val_ok = ~fin | (err <= allowed)
    bad = check & ~(nan_ok & inf_ok & val_ok)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements off; first at {i}: got "
            f"{got[i]!r}, want {want[i]!r} (err {abs(got[i] - want[i]):.3e}, "
            f"allowed {allowed[i]:.3e})")


def rows_of(a, axis):
    """``a`` with ``axis`` last, flattened to rows (a float64 copy)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    a = np.moveaxis(a, axis, -1)
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def unrows(r, shape, axis):
    moved = list(shape[:axis]) + list(shape[axis + 1:]) + [shape[axis]]
    return np.moveaxis(r.reshape(moved), -1, axis)


def lse_error(n_classes, u):
    """Absolute error bound of one row's log-sum-exp (module docstring)."""
    return u * (math.log(n_classes + 1) + 16) + U64 * (n_classes + 16)


def row_stats(xr):
    """Per row of ``xr`` (float64 rows): the max, the twin's lse and softmax, |x - max|."""
    with np.errstate(all="ignore"):
        m = np.max(xr, axis=1, keepdims=True, initial=-np.inf) if xr.size else \
            np.full((xr.shape[0], 1), -np.inf)
        lse = ref.logsumexp(xr, axis=1, keepdims=True)
        p = ref.softmax(xr, axis=1)
        d = np.where(p > 0, np.abs(xr - m), 0.0)
    return m, lse, p, d


def check_threads_and_out(call, result, size, n_threads, out_maker=None):
    """A multi-threaded result equals the one-thread one bitwise; ``out=`` gets the same."""
    results = result if isinstance(result, tuple) else (result,)
    if n_threads != 1 and size >= SERIAL_BELOW:
        again = call(n_threads=1)
        again = again if isinstance(again, tuple) else (again,)
        for a, b in zip(results, again):
            assert bitwise_equal(a, b), f"n_threads={n_threads} differs from n_threads=1"


# ------------------------------------------------------------------------------- forward

def _forward_case(data, memmap_dir, max_classes=None, min_classes=0):
    shape, axis = data.draw(shape_and_axis(max_classes=max_classes, min_classes=min_classes),
                            label="shape, axis")
    dtype = data.draw(DTYPES, label="dtype")
    x = data.draw(values_of(shape, dtype, axis), label="values")
    x = data.draw(laid_out(x, axis, memmap_dir))
    note(f"x: shape {x.shape} dtype {x.dtype} strides {x.strides} axis {axis}")
    return x, axis


def _out_for(data, shape, dtype, memmap_dir, axis):
    """None, or a fresh array of the result's shape and dtype in a drawn layout."""
    if not data.draw(st.booleans(), label="with out"):
        return None
    layout = data.draw(st.sampled_from(["C", "F", "strided", "negative", "offset",
                                        "unaligned", "memmap_rw", "padded_rows"]))
    fill = np.full(shape, 7, dtype=dtype)
    return apply_layout(fill, layout, min(axis, max(len(shape) - 1, 0)), memmap_dir) \
        if shape else np.full(shape, 7, dtype=dtype)


def _forward(name, data, memmap_dir):
    x, axis = _forward_case(data, memmap_dir)
    n_threads = data.draw(N_THREADS, label="n_threads")
    f = getattr(fastxent, name)
    kw = {}
    if name == "logsumexp" and data.draw(st.booleans(), label="keepdims"):
        kw["keepdims"] = True
    snaps = snapshot(x)
    got = f(x, axis, n_threads=n_threads, **kw)
    assert_unchanged([x], snaps)

    ct, rt = compute_dtype(x.dtype), result_dtype(x.dtype)
    u, tiny = unit(x.dtype), float(np.finfo(ct).tiny)
    xc = cast(np.asarray(x).astype(ct), np.float64)
    xr = rows_of(xc, axis)
    c = xr.shape[1]
    e_lse = lse_error(c, u)
    m, lse, p, d = row_stats(xr)
    with np.errstate(all="ignore"):
        if name == "logsumexp":
            want = ref.logsumexp(xc, axis, **kw)
            bound = 2 * e_lse + 4 * U64 * np.abs(want) + u * np.abs(want)
        elif name == "softmax":
            want = ref.softmax(xc, axis)
            bound = unrows(2 * p * (u * (d + 12) + e_lse) + 2 * tiny, x.shape, axis)
        else:
            want = ref.log_softmax(xc, axis)
            # x - lse cancels: its error is relative to |lse| (rounded in double), not to
            # the result.
            lse_abs = unrows(np.broadcast_to(np.where(np.isfinite(lse), np.abs(lse), 0),
                                             xr.shape), x.shape, axis)
            bound = 2 * e_lse + 4 * U64 * lse_abs + (4 * U64 + u) * np.abs(want)
    assert_within(got, want, bound, rt, name)

    call = lambda **k: f(x, axis, **kw, **k)  # noqa: E731
    check_threads_and_out(call, got, x.size, n_threads)
    out = _out_for(data, np.shape(got), rt, memmap_dir, axis)
    if out is not None:
        res = f(x, axis, out=out, n_threads=n_threads, **kw)
        assert res is out
        assert bitwise_equal(np.array(out), np.array(got)), "out= differs"
        assert_unchanged([x], snaps)
    if name != "logsumexp" and np.asarray(x).dtype == rt and x.flags.writeable \
            and data.draw(st.booleans(), label="in place"):
        res = f(x, axis, out=x, n_threads=n_threads)
        assert res is x and bitwise_equal(np.array(x), np.array(got)), "in place differs"


@fuzz_settings()
@given(data=st.data())
def test_logsumexp(data, memmap_dir):
    _forward("logsumexp", data, memmap_dir)


@fuzz_settings()
@given(data=st.data())
def test_softmax(data, memmap_dir):
    _forward("softmax", data, memmap_dir)


@fuzz_settings()
@given(data=st.data())
def test_log_softmax(data, memmap_dir):
    _forward("log_softmax", data, memmap_dir)


# ------------------------------------------------------------------------------- backward

def _backward_case(data, memmap_dir, kind):
    """(grad_output, output, axis): ``output`` a softmax/log-softmax of drawn logits, or
    arbitrary values; ``grad_output`` arbitrary, of the same or another dtype."""
    shape, axis = data.draw(shape_and_axis(), label="shape, axis")
    dtype = data.draw(DTYPES, label="dtype")
    g = data.draw(values_of(shape, dtype, axis, neg_inf_rows=False), label="grad_output")
    y_dtype = data.draw(st.one_of(st.just(dtype), DTYPES), label="output dtype")
    source = data.draw(st.sampled_from(["model", "model", "arbitrary"]), label="output is")
    if source == "model" and y_dtype.kind == "f":
        x = data.draw(values_of(shape, np.float64, axis), label="logits")
        y = getattr(ref, kind)(x, axis) if x.size else x
        y = cast(y, y_dtype)
    else:
        y = data.draw(values_of(shape, y_dtype, axis), label="output")
    g = data.draw(laid_out(g, axis, memmap_dir), label="grad layout")
    y = data.draw(laid_out(y, axis, memmap_dir), label="output layout")
    note(f"g: {g.dtype} {g.shape} {g.strides}; y: {y.dtype} {y.strides}; axis {axis}")
    return g, y, axis


def _log_softmax_bwd_bound(gr, e, sg, sabs, c, u, tiny):
    """Error bound of g - exp(y) * sum(g) per element (before the result's own rounding),
    doubled for kernel and twin: the sum's error (relative to sum(|g|)), the exponential's
    and the product's (relative to exp(y) |sum(g)|), the subnormal floor, and the
    subtraction. Each relative term multiplies the product it is relative to, so that it
    cannot underflow where that product does not: u * (c + 8) * sum(|g|) times exp(y)
    underflowed to 0 for a sum(g) of a few subnormals and exp(y) near 1e304, although
    exp(y) * sum(g) was 8e-17 and the results of kernel and twin 2 ulp apart (the slow fuzz
    profile, session 15; test_regression_log_softmax_backward_bound_with_subnormal_grad)."""
    return 2 * (U64 * (c + 8) * (e * sabs) + 9 * u * (e * np.abs(sg))
                + 2 * tiny * sabs + u * np.abs(gr))


def _log_softmax_bwd_limited(e, yr, sg, sabs, c, u, tiny, big):
    """Where g - exp(y) * sum(g) is range-limited (checked for shape and dtype only):
    exp(y) * sum(g) and sum(g) are formed in the compute dtype and may leave its range; and
    an infinite exp(y) times a sum(g) within the sum's error bound of 0 (F12 in
    docs/reliability.md: +-3e38 among terms of 1e-30, summed in another order, gave 0 in the
    kernel and 4e-31 in the twin, so inf * 0 = NaN against -inf; the sign of such a sum is
    not determined by its inputs)."""
    sum_err = U64 * (c + 8) * sabs + u * np.abs(sg) + 2 * tiny
    return ~((np.where(np.isfinite(e), e, 0) * sabs < big / 8) & (sabs < big / 8)
             & ~((e >= big / 8) & np.isfinite(yr))
             # inf * (an exponential that underflows in the compute dtype only)
             & ~(~np.isfinite(sg) & (e < tiny))
             & ~(np.isinf(e) & (np.abs(sg) <= sum_err)))


def _backward(name, data, memmap_dir):
    kind = "softmax" if name == "softmax_backward" else "log_softmax"
    g, y, axis = _backward_case(data, memmap_dir, kind)
    n_threads = data.draw(N_THREADS, label="n_threads")
    f = getattr(fastxent, name)
    snaps = snapshot(g, y)
    got = f(g, y, axis, n_threads=n_threads)
    assert_unchanged([g, y], snaps)

    ct, rt = compute_dtype(g.dtype), result_dtype(g.dtype)
    u, tiny, big = unit(g.dtype), float(np.finfo(ct).tiny), float(np.finfo(ct).max)
    gc = cast(np.asarray(g).astype(ct), np.float64)
    yc = cast(np.asarray(y).astype(ct), np.float64)  # the second input takes the first's dtype
    gr, yr = rows_of(gc, axis), rows_of(yc, axis)
    c = gr.shape[1]
    with np.errstate(all="ignore"):
        if name == "softmax_backward":
            want = ref.softmax_backward(gc, yc, axis)
            dot = np.sum(gr * yr, axis=1, keepdims=True)
            fin = np.isfinite(gr) & np.isfinite(yr)
            sabs = np.sum(np.where(fin, np.abs(gr * yr), 0), axis=1, keepdims=True)
            # Relative terms times the magnitudes they are relative to, in an order that
            # cannot underflow where the product itself does not (see _log_softmax_bwd_bound).
            bound = 2 * (U64 * (c + 8) * (np.abs(yr) * sabs)
                         + U64 * (np.abs(yr) * np.abs(gr - dot)))
            limited = ~(np.sum(np.where(fin, np.abs(gr) + np.abs(yr), 0), axis=1,
                               keepdims=True) * (1 + sabs) < 1e300)
        else:
            want = ref.log_softmax_backward(gc, yc, axis)
            sg = np.sum(gr, axis=1, keepdims=True)
            fin_g = np.isfinite(gr)
            sabs = np.sum(np.where(fin_g, np.abs(gr), 0), axis=1, keepdims=True)
            e = np.exp(yr)
            bound = _log_softmax_bwd_bound(gr, e, sg, sabs, c, u, tiny)
            limited = _log_softmax_bwd_limited(e, yr, sg, sabs, c, u, tiny, big)
        bound = unrows(np.where(np.isfinite(bound), bound, 0) , g.shape, axis) \
            + u * np.abs(want) + 2 * tiny
        limited = unrows(np.broadcast_to(limited, gr.shape), g.shape, axis)
    assert_within(got, want, bound, rt, name, limited)

    call = lambda **k: f(g, y, axis, **k)  # noqa: E731
    check_threads_and_out(call, got, g.size, n_threads)
    out = _out_for(data, np.shape(got), rt, memmap_dir, axis)
    if out is not None:
        assert f(g, y, axis, out=out, n_threads=n_threads) is out
        assert bitwise_equal(np.array(out), np.array(got)), "out= differs"
        assert_unchanged([g, y], snaps)
    which = data.draw(st.sampled_from([None, 0, 1]), label="in place over")
    target = (g, y)[which] if which is not None else None
    if target is not None and target.dtype == rt and target.flags.writeable \
            and (which == 0 or np.asarray(g).dtype == np.asarray(y).dtype):
        assert f(g, y, axis, out=target, n_threads=n_threads) is target
        assert bitwise_equal(np.array(target), np.array(got)), f"in place over {which} differs"


@fuzz_settings()
@given(data=st.data())
def test_softmax_backward(data, memmap_dir):
    _backward("softmax_backward", data, memmap_dir)


@fuzz_settings()
@given(data=st.data())
def test_log_softmax_backward(data, memmap_dir):
    _backward("log_softmax_backward", data, memmap_dir)


@fuzz_settings()
@given(data=st.data())
def test_logsumexp_backward(data, memmap_dir):
    x, axis = _forward_case(data, memmap_dir)
    bshape = batch_shape(x.shape, axis)
    keep = data.draw(st.booleans(), label="keepdims grad_output")
    gshape = x.shape[:axis] + (1,) + x.shape[axis + 1:] if keep else bshape
    g_dtype = data.draw(st.one_of(st.just(np.asarray(x).dtype), DTYPES), label="g dtype")
    g = data.draw(values_of(gshape, g_dtype, neg_inf_rows=False), label="grad_output")
    g = data.draw(laid_out(g, 0, memmap_dir), label="g layout")
    lse_kind = data.draw(st.sampled_from([None, None, "exact", "arbitrary"]), label="lse")
    ct, rt = compute_dtype(x.dtype), result_dtype(x.dtype)
    xc = cast(np.asarray(x).astype(ct), np.float64)
    if lse_kind == "exact":
        lse = ref.logsumexp(xc, axis)
    elif lse_kind == "arbitrary":
        lse = data.draw(values_of(bshape, np.float64, neg_inf_rows=False), label="lse values")
    else:
        lse = None
    n_threads = data.draw(N_THREADS, label="n_threads")
    snaps = snapshot(g, x, lse)
    got = fastxent.logsumexp_backward(g, x, axis, lse=lse, n_threads=n_threads)
    assert_unchanged([g, x, lse], snaps)

    u, tiny, big = unit(x.dtype), float(np.finfo(ct).tiny), float(np.finfo(ct).max)
    gc = cast(np.asarray(g).astype(ct), np.float64)  # per-row values take x's dtype
    xr = rows_of(xc, axis)
    gr = gc.reshape(-1, 1) if gc.size else np.zeros((xr.shape[0], 1))
    c = xr.shape[1]
    with np.errstate(all="ignore"):
        if lse is None:
            want = ref.logsumexp_backward(gc, xc, axis)
            lr = ref.logsumexp(xr, axis=1, keepdims=True)
        else:
            # The kernel uses lse as given, rounded to the compute dtype.
            lr = cast(cast(np.asarray(lse), ct), np.float64).reshape(-1, 1)
            w = np.where(lr == -np.inf, 0.0, gr * np.exp(xr - lr))
            want = unrows(w, x.shape, axis)
        pe = np.exp(xr - lr)
        arg = np.where(pe > 0, np.abs(xr - lr), 0.0)
        err_lse = lse_error(c, u) if lse is None else 0.0
        rel = pe * (2 * u * (np.abs(np.where(np.isfinite(lr), lr, 0)) + arg + 10) + 2 * err_lse)
        bound = np.abs(gr) * (rel + 2 * tiny)
        limited = ~((np.where(np.isfinite(pe), pe, 0) * np.where(np.isfinite(gr), np.abs(gr),
                                                                  0) < big / 8)
                    & ~((pe >= big / 8) & np.isfinite(xr) & np.isfinite(lr))
                    # inf * (an exponential that underflows in the compute dtype only)
                    & ~(np.isinf(gr) & (pe < tiny)))
        bound = unrows(np.where(np.isfinite(bound), bound, 0), x.shape, axis) \
            + u * np.abs(want) + 2 * tiny
        limited = unrows(np.broadcast_to(limited, xr.shape), x.shape, axis)
    assert_within(got, want, bound, rt, "logsumexp_backward", limited)

    call = lambda **k: fastxent.logsumexp_backward(g, x, axis, lse=lse, **k)  # noqa: E731
    check_threads_and_out(call, got, x.size, n_threads)
    out = _out_for(data, x.shape, rt, memmap_dir, axis)
    if out is not None:
        assert fastxent.logsumexp_backward(g, x, axis, lse=lse, out=out,
                                           n_threads=n_threads) is out
        assert bitwise_equal(np.array(out), np.array(got)), "out= differs"


@fuzz_settings(0.5)
@given(data=st.data())
def test_softmax_jacobian(data, memmap_dir):
    shape, axis = data.draw(shape_and_axis(max_classes=40), label="shape, axis")
    shape = shape[:axis] + shape[axis + 1:] + (shape[axis],)  # the class axis is the last
    shape = tuple(min(s, 12) for s in shape[:-1]) + shape[-1:]
    dtype = data.draw(DTYPES, label="dtype")
    x = data.draw(values_of(shape, dtype, len(shape) - 1), label="values")
    x = data.draw(laid_out(x, len(shape) - 1, memmap_dir))
    snaps = snapshot(x)
    got = fastxent.softmax_jacobian(x)
    assert_unchanged([x], snaps)
    ct, rt = compute_dtype(x.dtype), result_dtype(x.dtype)
    u, tiny = unit(x.dtype), float(np.finfo(ct).tiny)
    xc = cast(np.asarray(x).astype(ct), np.float64)
    want = ref.softmax_jacobian(xc)
    xr = rows_of(xc, -1)
    _, _, p, d = row_stats(xr)
    # The products are formed in the result dtype from the softmax rounded to it.
    ur = max(u, 2.0 ** -(finfo_of(rt).nmant + 1))
    with np.errstate(all="ignore"):
        perr = 2 * p * (u * (d + 12) + lse_error(xr.shape[1], u)) + 2 * tiny + ur * p
        perr = perr.reshape(shape)
        ps = p.reshape(shape)
        # s_i (delta_ij - s_j): each factor's error times the other, plus the products'.
        bound = (perr[..., :, None] * (1 + ps[..., None, :]) + ps[..., :, None]
                 * perr[..., None, :] + 3 * ur * np.abs(want) + 2 * tiny)
    assert_within(got, want, bound, rt, "softmax_jacobian")


# ------------------------------------------------------------------------------- cross-entropy

@st.composite
def xent_case(draw, memmap_dir):
    """Every option of cross_entropy: a dict of the call's arguments and what to expect."""
    shape, axis = draw(shape_and_axis(min_classes=1, max_ndim=4), label="shape, axis")
    use_axis = draw(st.booleans(), label="explicit axis")
    if not use_axis:  # PyTorch's class axis: move the drawn class axis there
        torch_axis = 1 if len(shape) >= 2 else 0
        order = list(shape[:axis] + shape[axis + 1:])
        shape = tuple(order[:torch_axis] + [shape[axis]] + order[torch_axis:])
        axis = torch_axis
    c = shape[axis]
    bshape = batch_shape(shape, axis)
    dtype = draw(DTYPES, label="dtype")
    x = draw(values_of(shape, dtype, axis), label="logits")
    x = draw(laid_out(x, axis, memmap_dir), label="logits layout")
    kw = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")}
    if use_axis:
        kw["axis"] = draw(st.sampled_from([axis, axis - len(shape)]))
    kind = draw(st.sampled_from(["index", "index", "prob"]), label="target kind")
    ignore = -100
    if kind == "index":
        if draw(st.booleans()):
            ignore = draw(st.sampled_from([-100, -1, 0, c - 1, c, 2**63 - 1, -2**63, 7]),
                          label="ignore_index")
            kw["ignore_index"] = draw(st.sampled_from([ignore, np.int64(ignore)]))
        t_dtype = draw(st.sampled_from(INDEX_DTYPES), label="target dtype")
        info = np.iinfo(t_dtype)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        labels = rng.integers(0, c, size=bshape).astype(object)
        flat = labels.reshape(-1)
        edge = [0, c - 1, ignore, ignore]
        if draw(st.integers(0, 4)) == 0:  # out of range, both sides
            edge += [-1, c, -101, c + 1000, info.max, info.min]
        for p in draw(st.lists(st.integers(0, max(flat.size - 1, 0)),
                               max_size=5 if flat.size else 0)):
            flat[p] = draw(st.sampled_from(edge))
        if flat.size and draw(st.integers(0, 9)) == 0:
            flat[:] = ignore  # all ignored
        fits = [v for v in flat if info.min <= v <= info.max]
        if len(fits) < flat.size:  # a value the dtype cannot hold: use a valid label instead
            flat[:] = [v if info.min <= v <= info.max else 0 for v in flat]
        target = np.array(labels.tolist() if labels.ndim else labels.item(), dtype=t_dtype)
        target = np.asarray(target).reshape(bshape)
    else:
        t_dtype = draw(st.one_of(st.just(compute_dtype(dtype)), st.sampled_from(FLOAT_DTYPES)),
                       label="target dtype")
        how = draw(st.sampled_from(["simplex", "onehot", "arbitrary"]), label="probs")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        moved = np.moveaxis(np.empty(shape), axis, -1)
        if how == "simplex":
            pr = rng.random(moved.shape) ** 3
            pr /= np.maximum(pr.sum(-1, keepdims=True), 1e-300)
        elif how == "onehot":
            pr = np.zeros(moved.shape)
            pr.reshape(-1, c)[np.arange(pr.size // c), rng.integers(0, c, pr.size // c)] = 1
        else:
            pr = rng.standard_normal(moved.shape) * draw(st.sampled_from([1.0, 1e3]))
        target = cast(np.moveaxis(pr, -1, axis), t_dtype)
    target = draw(laid_out(target, 0, memmap_dir), label="target layout") \
        if np.ndim(target) else target
    if draw(st.booleans()):
        w = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random(c) * \
            draw(st.sampled_from([1.0, 10.0, 1e-30, 1e30]))
        for p in draw(st.lists(st.integers(0, c - 1), max_size=3)):
            w[p] = draw(st.sampled_from([0.0, 1.0, 1e3]))
        w_dtype = draw(st.sampled_from([np.float64, np.float32, np.int64]))
        if np.dtype(w_dtype).kind == "i":
            w = np.minimum(w, 1e6).round()
        w = cast(w, w_dtype)
        kw["weight"] = w.tolist() if draw(st.booleans(), label="weight as list") else w
    ls = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0, 0, 1, "random", np.float32(0.25)]))
    if ls == "random":
        ls = draw(st.floats(0.0, 1.0))
    if not (isinstance(ls, float) and ls == 0.0 and draw(st.booleans())):
        kw["label_smoothing"] = ls
    return x, target, kw, kind, axis


def _xent_expectation(x, target, kw, kind, axis, grad_output):
    """What the twin says, with the per-row error bounds (module docstring)."""
    ct = compute_dtype(x.dtype)
    u, tiny, big = unit(x.dtype), float(np.finfo(ct).tiny), float(np.finfo(ct).max)
    xc = cast(np.asarray(x).astype(ct), np.float64)
    t = np.asarray(target)
    if kind == "prob":
        t = cast(t.astype(ct), np.float64)  # the kernels read the target in x's dtype
    rkw = dict(kw)
    if "weight" in rkw:
        rkw["weight"] = np.asarray(rkw["weight"], dtype=np.float64)
    want = ref.cross_entropy_with_grad(xc, t, grad_output=grad_output, **rkw)

    # Per-row coefficients c (loss = sum_j c_j (lse - x_j)), as in fastxent._reference.
    xr = rows_of(xc, axis)
    n, c = xr.shape
    w = np.ones(c) if rkw.get("weight") is None else rkw["weight"]
    eps = float(kw.get("label_smoothing", 0.0))
    ignore = int(kw.get("ignore_index", -100))
    if kind == "index":
        labels = np.asarray(t, dtype=object).reshape(-1)
        valid = np.array([int(v) != ignore for v in labels], dtype=bool)
        lab = np.array([int(v) if ok else 0 for v, ok in zip(labels, valid)], dtype=np.int64)
        coef = np.zeros((n, c))
        coef[np.arange(n), lab] = (1 - eps) * w[lab]
        coef += eps / c * w
        coef[~valid] = 0
        coef_terms = np.abs(coef)
        denom = float(np.sum(w[lab][valid]))
    else:
        tr = rows_of(t, axis)
        coef = (tr * (1 - eps) + eps / c) * w
        # c_j = w_j ((1 - eps) t_j + eps / C) cancels when t_j < 0; kernel and twin round it
        # differently, so its error is relative to the terms, not to c_j
        coef_terms = (np.abs(tr) * (1 - eps) + eps / c) * np.abs(w)
        valid = np.ones(n, bool)
        denom = float(n)
    with np.errstate(all="ignore"):
        m, lse, p, d = row_stats(xr)
        e_lse = lse_error(c, u)
        fx = np.isfinite(xr)
        xf = np.where(fx, xr, 0.0)
        lf = np.where(np.isfinite(lse), lse, 0.0)
        ca = coef_terms
        sum_ca = ca.sum(1, keepdims=True)
        a_ = np.sum(ca * np.abs(xf), 1, keepdims=True)
        b_ = sum_ca * np.abs(lf)
        d_ = a_ + b_  # sum_j |c_j| (|x_j| + |lse|): the twin's terms c_j (x_j - lse)
        row_bound = 2 * (sum_ca * e_lse + U64 * (c + 8) * (a_ + b_ + d_))[:, 0]
        row_bound = np.where(valid & np.isfinite(row_bound), row_bound, 0.0)
        # Range-limited rows: sums of finite terms out of double's range, or terms of the
        # gradient out of the compute dtype's.
        # Also rows where some x_j - lse itself leaves double's range (|x_j| + |lse| >= 1e300):
        # PyTorch and the twin form w_j (x_j - lse) term by term, and a zero weight times that
        # overflowed difference is NaN; the kernels sum the coefficients first and get 0 (found
        # by the slow profile: logits near DBL_MAX, zero weights, label smoothing).
        big_term = np.max(np.abs(xf), axis=1, initial=0.0) + np.abs(lf)[:, 0]
        limited_loss = ~(np.maximum(np.maximum(a_, b_), d_)[:, 0] < 1e300) | \
            ~np.all(np.isfinite(coef), axis=1) | ~(big_term < 1e300)
        reduction = kw["reduction"]
        if reduction == "none":
            r = np.ones((n, 1)) if grad_output is None else \
                np.broadcast_to(np.asarray(grad_output, np.float64),
                                batch_shape(x.shape, axis)).reshape(-1, 1)
        else:
            r = np.full((n, 1), 1.0 if grad_output is None else float(np.asarray(grad_output).reshape(())))
            if reduction == "mean":
                r = r / denom if denom != 0 else np.full((n, 1), np.nan)
        rf = np.where(np.isfinite(r), np.abs(r), 0.0)
        # (the last term: the twin forms c_j * p_j before scaling by r; that product may
        # underflow in double while the kernel, which scales first, keeps it)
        grad_bound = 2 * rf * (sum_ca * (p * (u * (d + 12) + e_lse) + 2 * tiny) + 4 * u * ca
                               + 2 * TINY64)
        limited_grad = ~(rf * sum_ca < big / 8) | limited_loss[:, None] \
            | (np.isinf(r) & (sum_ca > 0))
        loss_rows = ref.cross_entropy(xc, t, **dict(rkw, reduction="none")).reshape(-1)
        if reduction == "none":
            loss_bound = row_bound.reshape(batch_shape(x.shape, axis))
            loss_limited = limited_loss.reshape(batch_shape(x.shape, axis))
        else:
            la = np.where(np.isfinite(loss_rows), np.abs(loss_rows), 0.0)
            loss_bound = np.sum(row_bound) + U64 * (n + 8) * np.sum(la)
            if reduction == "mean" and denom != 0:
                wt = np.abs(w[lab][valid]).sum() if kind == "index" else n
                loss_bound = loss_bound / abs(denom) + U64 * (n + 8) * wt / abs(denom) * \
                    abs(float(want[0]))
            loss_limited = bool(limited_loss[valid].any())
    grad_bound = unrows(np.where(np.isfinite(grad_bound), grad_bound, 0), x.shape, axis)
    limited_grad = unrows(np.broadcast_to(limited_grad, xr.shape), x.shape, axis)
    valid_full = unrows(np.broadcast_to(valid[:, None], xr.shape), x.shape, axis)
    return want, loss_bound, loss_limited, grad_bound, limited_grad, valid, valid_full, u, tiny


def _expected_error(x, target, kw, kind, axis):
    """Whether the call is invalid (a label neither in [0, C) nor ignore_index)."""
    if kind != "index":
        return False
    c = x.shape[axis]
    ignore = int(kw.get("ignore_index", -100))
    return any(not (0 <= int(v) < c or int(v) == ignore)
               for v in np.asarray(target, dtype=object).reshape(-1))


def _xent(data, memmap_dir, with_grad):
    x, target, kw, kind, axis = data.draw(xent_case(memmap_dir), label="case")
    note(f"x {x.dtype} {x.shape} {x.strides}; target {np.asarray(target).dtype} "
         f"{np.shape(target)}; {kw}")
    n_threads = data.draw(N_THREADS, label="n_threads")
    grad_output = None
    if with_grad and data.draw(st.booleans(), label="with grad_output"):
        bs = batch_shape(x.shape, axis)
        if kw["reduction"] == "none" and data.draw(st.booleans()):
            grad_output = cast(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
                               .standard_normal(bs), data.draw(st.sampled_from(
                                   [np.float64, np.float32])))
        else:
            grad_output = data.draw(st.sampled_from([0.5, 2, -1.0, 0.0, 1e10, np.float32(3),
                                                     np.array(1.5), np.array([2.0])]))
            if kw["reduction"] == "none" and np.ndim(grad_output) == 1:
                grad_output = 2.0
    f = fastxent.cross_entropy_with_grad if with_grad else fastxent.cross_entropy
    extra = {"grad_output": grad_output} if with_grad else {}
    snaps = snapshot(x, target)

    if _expected_error(x, target, kw, kind, axis):
        with pytest.raises(ValueError, match="target"):
            f(x, target, n_threads=n_threads, **kw, **extra)
        assert_unchanged([x, target], snaps)
        return
    got = f(x, target, n_threads=n_threads, **kw, **extra)
    assert_unchanged([x, target], snaps)
    (want, loss_bound, loss_limited, grad_bound, limited_grad, valid, valid_full, u,
     tiny) = _xent_expectation(x, target, kw, kind, axis, grad_output)
    rt = result_dtype(x.dtype)
    loss = got[0] if with_grad else got
    if kw["reduction"] != "none":
        assert np.ndim(loss) == 0 and isinstance(loss, np.generic), type(loss)
    assert_within(loss, want[0], loss_bound + u * np.abs(want[0]), rt, "loss",
                  loss_limited if kw["reduction"] == "none" else
                  np.asarray(loss_limited))
    if kw["reduction"] == "none":
        ignored = ~valid.reshape(np.shape(loss))
        assert np.all(np.asarray(loss)[ignored] == 0), "an ignored row has a loss"
    if with_grad:
        grad = got[1]
        assert_within(grad, want[1], grad_bound + u * np.abs(want[1]) + 2 * tiny, rt, "grad",
                      limited_grad)
        assert np.all(np.asarray(grad)[~valid_full] == 0), "an ignored row has a gradient"
    call = lambda **k: f(x, target, **kw, **extra, **k)  # noqa: E731
    check_threads_and_out(call, got, x.size, n_threads)
    if with_grad:
        out = _out_for(data, x.shape, rt, memmap_dir, axis)
        if out is not None:
            res = f(x, target, out=out, n_threads=n_threads, **kw, **extra)
            assert res[1] is out and bitwise_equal(res[0], got[0])
            assert bitwise_equal(np.array(out), np.array(got[1])), "out= differs"
        if np.asarray(x).dtype == rt and x.flags.writeable and \
                data.draw(st.booleans(), label="out=logits"):
            res = f(x, target, out=x, n_threads=n_threads, **kw, **extra)
            assert res[1] is x and bitwise_equal(res[0], got[0]), "loss with out=logits"
            assert bitwise_equal(np.array(x), np.array(got[1])), "out=logits differs"


@fuzz_settings()
@given(data=st.data())
def test_cross_entropy(data, memmap_dir):
    _xent(data, memmap_dir, with_grad=False)


@fuzz_settings()
@given(data=st.data())
def test_cross_entropy_with_grad(data, memmap_dir):
    _xent(data, memmap_dir, with_grad=True)


# ------------------------------------------------------------------------------- errors

ARRAY_FUNCTIONS = ["logsumexp", "softmax", "log_softmax", "softmax_backward",
                   "log_softmax_backward", "logsumexp_backward", "cross_entropy",
                   "cross_entropy_with_grad"]


def _valid_call(name, rng, shape):
    """A valid call of ``name``: (args, kwargs)."""
    x = rng.standard_normal(shape)
    if name in ("softmax_backward", "log_softmax_backward"):
        return [x.copy(), x], {}
    if name == "logsumexp_backward":
        return [np.ones(shape[:-1]), x], {}
    if name.startswith("cross_entropy"):
        return [x, rng.integers(0, shape[1], shape[0])], {}
    return [x], {}


BAD_VALUES = {
    "dtype": [np.ones((3, 4), complex), np.array([["a", "b"]]), np.array([[None, 1]], object),
              "text", {"a": 1}, np.array([[1, 2]], dtype="m8[s]"), [[1.0, [2.0]]]],
    "out": [np.empty((3, 5)), np.empty((3, 4), np.int64), np.empty((3, 4), np.complex128),
            [[0.0] * 4] * 3, "out", np.empty((4, 3)).T[:, :3]],
    "n_threads": [0, -1, 1.5, "2", True, -(2**70), np.float64(2.0), [2]],
    "axis": [2, -3, 1.0, "0", 10**20],
    "reduction": ["avg", None, "MEAN", 1],
    "label_smoothing": [-0.1, 1.5, np.nan, -np.inf, None, [0.1], "x"],
    "weight": [np.ones(5), np.ones((4, 1)), np.ones(3), "w", np.ones(4, complex)],
    "ignore_index": [1.5, "x", None, 2**64],
    "target": [np.zeros((3, 4), np.int64), np.zeros(4, np.int64), np.zeros(3, complex),
               np.array([0, 1, 4]), np.array([-1, 0, 0]), np.zeros(3, bool),
               np.array(["a", "b", "c"]), np.zeros((3, 5))],
    "grad_output": [np.ones(4), np.ones((3, 4, 1)), np.ones(3, complex), "g"],
    "lse": [np.ones(4), np.ones((2, 2)), "l"],
}
APPLICABLE = {
    "dtype": ARRAY_FUNCTIONS, "n_threads": ARRAY_FUNCTIONS,
    "out": ["logsumexp", "softmax", "log_softmax", "softmax_backward",
            "log_softmax_backward", "logsumexp_backward", "cross_entropy_with_grad"],
    "axis": ["logsumexp", "softmax", "log_softmax", "softmax_backward",
             "log_softmax_backward", "logsumexp_backward", "cross_entropy",
             "cross_entropy_with_grad"],
    "reduction": ["cross_entropy", "cross_entropy_with_grad"],
    "label_smoothing": ["cross_entropy", "cross_entropy_with_grad"],
    "weight": ["cross_entropy", "cross_entropy_with_grad"],
    "ignore_index": ["cross_entropy", "cross_entropy_with_grad"],
    "target": ["cross_entropy", "cross_entropy_with_grad"],
    "grad_output": ["softmax_backward", "log_softmax_backward", "logsumexp_backward",
                    "cross_entropy_with_grad"],
    "lse": ["logsumexp_backward"],
}
# Words the message must contain, per mutated argument.
NAMES = {"dtype": None, "out": "out", "n_threads": "n_threads", "axis": "axis",
         "reduction": "reduction", "label_smoothing": "label_smoothing", "weight": "weight",
         "ignore_index": "ignore_index", "target": "target", "grad_output": "grad_output",
         "lse": "lse"}


@fuzz_settings(0.5)
@given(name=st.sampled_from(ARRAY_FUNCTIONS),
       what=st.sampled_from(sorted(BAD_VALUES)), data=st.data())
def test_invalid_arguments_raise_clear_errors(name, what, data):
    """One argument of a valid call made invalid: a ValueError or TypeError (AxisError is a
    ValueError) that names the argument, and the inputs unchanged."""
    assume(name in APPLICABLE[what])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    args, kw = _valid_call(name, rng, (3, 4))
    bad = data.draw(st.sampled_from(BAD_VALUES[what]), label="bad value")
    if isinstance(bad, np.ndarray):
        bad = bad.copy()
    f = getattr(fastxent, name)
    if what == "dtype":
        pos = data.draw(st.integers(0, len(args) - 1 if not name.startswith("cross") else 0))
        args[pos] = bad
    elif what == "target":
        args[1] = bad
    elif what == "grad_output" and not name.startswith("cross"):
        args[0] = bad
    elif what == "axis" and name.startswith("cross"):
        kw["axis"] = bad
    elif what == "axis":
        kw["axis"] = bad
    else:
        kw[what] = bad
    if what == "grad_output" and name == "cross_entropy_with_grad":
        kw["reduction"] = data.draw(st.sampled_from(["none", "mean"]))
    snaps = snapshot(*[a for a in args if isinstance(a, np.ndarray)])
    with pytest.raises((ValueError, TypeError)) as info:
        f(*args, **kw)
    assert_unchanged([a for a in args if isinstance(a, np.ndarray)], snaps)
    word = NAMES[what]
    message = str(info.value)
    if word is not None:
        assert word in message or (what == "axis" and "axis" in message), message
    assert len(message) > 15, message


@fuzz_settings(0.3)
@given(data=st.data())
def test_partial_overlap_raises(data):
    """out= sharing memory with an input without being it: ValueError, inputs unchanged."""
    name = data.draw(st.sampled_from(["softmax", "log_softmax", "softmax_backward",
                                      "log_softmax_backward", "logsumexp_backward",
                                      "cross_entropy_with_grad"]))
    n = data.draw(st.integers(2, 40))
    c = data.draw(st.integers(1, 300))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    buf = rng.standard_normal((n + 1) * c + 1).astype(dtype)
    x = buf[:n * c].reshape(n, c)
    shift = data.draw(st.sampled_from(["row", "element"]))
    out = buf[c:c + n * c].reshape(n, c) if shift == "row" else buf[1:1 + n * c].reshape(n, c)
    before = buf.copy()
    args = {"softmax": lambda: fastxent.softmax(x, out=out),
            "log_softmax": lambda: fastxent.log_softmax(x, out=out),
            "softmax_backward": lambda: fastxent.softmax_backward(x, x, out=out),
            "log_softmax_backward": lambda: fastxent.log_softmax_backward(x, x, out=out),
            "logsumexp_backward": lambda: fastxent.logsumexp_backward(np.ones(n), x, out=out),
            "cross_entropy_with_grad": lambda: fastxent.cross_entropy_with_grad(
                x, rng.integers(0, c, n), out=out)}
    with pytest.raises(ValueError, match="overlap"):
        args[name]()
    assert buf.tobytes() == before.tobytes()


# ------------------------------------------------------------------------------- findings

@pytest.mark.parametrize("n_rows", [72, 10_000])
def test_regression_weighted_mean_denominator_is_accurate(n_rows):
    """Found by the fuzz suite (under ASan, 2,000 examples): the total weight of a weighted
    mean was a plain running sum, N ulp off at worst, and every gradient element inherited it
    (16 ulp at N = 72). With every label 0 and logits 0 the gradient at the label is exactly
    -(C - 1) / C / N whatever the weight; a compensated sum keeps it within a few ulp."""
    c, w0 = 34, 0.63696169
    weight = np.full(c, 0.5)
    weight[0] = w0
    x = np.zeros((n_rows, c))
    labels = np.zeros(n_rows, dtype=np.int64)
    _, grad = fastxent.cross_entropy_with_grad(x, labels, weight=weight)
    exact = -(c - 1) / c / n_rows
    assert np.max(np.abs(grad[:, 0] - exact)) <= 8 * np.spacing(abs(exact))
    loss = fastxent.cross_entropy(x, labels, weight=weight)
    assert abs(loss - math.log(c)) <= 8 * np.spacing(math.log(c))


@pytest.mark.parametrize("shape,axis", [((2, 2), 0), ((5, 5), 0), ((2, 2, 2), 1),
                                        ((3, 3, 3), 0)])
def test_regression_square_shapes_along_another_axis(shape, axis):
    """Found by test_softmax (shape (2, 2), axis 0) on commit 5eeb799 ("no moveaxis when the
    class axis is last"): Layout.unrows returned the kernel's rows untransposed whenever
    their shape happened to equal the caller's, so every square (or cubic) array along a
    non-last axis got the transpose of its result."""
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape) % 7 - 3
    for name in ("softmax", "log_softmax"):
        got = getattr(fastxent, name)(x, axis)
        want = getattr(ref, name)(x, axis)
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12), name
    g = np.cos(x)
    assert np.allclose(fastxent.softmax_backward(g, ref.softmax(x, axis), axis),
                       ref.softmax_backward(g, ref.softmax(x, axis), axis), atol=1e-12)
    gl = np.ones(batch_shape(shape, axis))
    assert np.allclose(fastxent.logsumexp_backward(gl, x, axis),
                       ref.logsumexp_backward(gl, x, axis), atol=1e-12)
    t = np.zeros(batch_shape(shape, axis), np.int64)
    assert np.allclose(fastxent.cross_entropy_with_grad(x, t, axis=axis)[1],
                       ref.cross_entropy_with_grad(x, t, axis=axis)[1], atol=1e-12)


def test_regression_log_softmax_backward_bound_with_subnormal_grad():
    """Found by the slow fuzz profile (session 15): with grad_output 5e-324 in every element
    of a row of 592 and an output of 701 in one, the gradient there is -exp(701) * 592 *
    5e-324 = -8.06e-17. fastxent's result is 1.08 ulp from the exact value and NumPy's
    formula 0.92 ulp from it on the other side, both within the exponential's accuracy; the
    test's bound for their difference had underflowed to 0.73 ulp (the result's own rounding
    alone). The kernel's result must be within the bound the fuzz test now uses."""
    g = np.full((1, 592), 5e-324)
    y = np.full((1, 592), -30000.0)
    y[0, 1] = 701.0
    got = fastxent.log_softmax_backward(g, y)
    want = ref.log_softmax_backward(g, y, 1)
    sg = np.sum(g, axis=1, keepdims=True)
    tiny = float(np.finfo(np.float64).tiny)
    bound = _log_softmax_bwd_bound(g, np.exp(y), sg, sg, 592, U64, tiny)
    assert bound[0, 1] > 1e-31                  # exp(701) * sum(g) * 9u, not underflowed
    assert abs(got[0, 1] - want[0, 1]) <= bound[0, 1] + U64 * abs(want[0, 1])
    # Against the exact value, from Python's decimal at 60 digits: within 1.5 ulp (the
    # exponential's 1 ulp and the product's rounding).
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        tiny_g = decimal.Decimal(5e-324)
        exact = tiny_g - decimal.Decimal(701).exp() * 592 * tiny_g
        err = abs(decimal.Decimal(float(got[0, 1])) - exact)
        assert err <= decimal.Decimal(1.5) * decimal.Decimal(float(np.spacing(abs(got[0, 1]))))


def test_regression_log_softmax_backward_infinite_output_times_cancelled_sum():
    """Found by the slow fuzz profile (session 15, F12): a row of grad_output holding -3e38
    and 3e38 among terms of 1e-30 sums to about 4e-31 in NumPy's order and to 0 in the
    kernel's (each within the sum's error bound, about 4e24), so an output of +inf gives
    -inf in the twin and inf * 0 = NaN in the kernel. Such elements are range-limited."""
    rng = np.random.default_rng(1)
    g = rng.uniform(-1e-30, 1e-30, (1, 54))
    g[0, 0], g[0, 51] = -3e38, 3e38
    y = np.zeros((1, 54))
    y[0, 15] = np.inf
    got = fastxent.log_softmax_backward(g, y)
    assert not np.isfinite(got[0, 15])
    sg = np.sum(g, axis=1, keepdims=True)
    sabs = np.sum(np.abs(g), axis=1, keepdims=True)
    fi = np.finfo(np.float64)
    limited = _log_softmax_bwd_limited(np.exp(y), y, sg, sabs, 54, U64, float(fi.tiny),
                                       float(fi.max))
    assert limited[0, 15] and not limited[0, 14]


def test_lse_backward_float32_large_logits():
    """Documents the accuracy of float32 logsumexp_backward for large logits (see the module
    docstring): the kernel computes exp(x - lse) with lse rounded to float32, so for |lse|
    beyond 2^24 the row sums to exp(log(s) rounding error) instead of 1 -- as PyTorch does.
    softmax, from the same logits, is exact. This test pins the current behaviour (the error
    bound the fuzz tests allow); see docs/reliability.md, findings."""
    x = np.array([[1e8, 1e8]], dtype=np.float32)
    assert fastxent.softmax(x).tolist() == [[0.5, 0.5]]
    got = fastxent.logsumexp_backward(np.ones(1, np.float32), x)
    assert np.all(np.abs(got - 0.5) <= 0.5 + 1e-6)


def test_reduced_loss_that_overflows_is_silent():
    """Two finite row losses of 1e308 sum to inf (correctly), and fastxent's NumPy sum also
    emits "RuntimeWarning: overflow encountered in reduce"."""
    x = np.array([[0.0, -1e308], [0.0, -1e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastxent.cross_entropy(x, np.array([1, 1]), reduction="sum") == np.inf


def test_reduced_loss_of_opposite_infinities_is_silent():
    """Probability targets may be any reals (as in PyTorch), so row losses of +inf and -inf
    can meet in a reduction: the result is NaN, as PyTorch's, but fastxent's NumPy sum also
    emits "RuntimeWarning: invalid value encountered in reduce" (an error under
    ``-W error``). The twin sums under ``np.errstate(all="ignore")``."""
    x = np.array([[0.0, -np.inf], [0.0, -np.inf]])
    t = np.array([[-1.0, 1.0], [1.0, -1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(fastxent.cross_entropy(x, t, reduction="sum"))
