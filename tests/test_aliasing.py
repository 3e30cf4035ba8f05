"""Aliasing: ``out=`` over an input, partial overlaps, and inputs that share memory.

Contract (README, "Semantics"): ``out`` may be the input itself -- ``softmax``/``log_softmax``
over ``x``, the backward functions over either input, ``cross_entropy_with_grad`` over the
logits -- and then gives bitwise what it gives into a fresh array; an ``out`` that overlaps an
input partially raises ``ValueError`` and writes nothing. Every case runs on short rows (the
64-row block kernels, one and several blocks), long rows (the row kernels), one and two
threads, and several memory layouts of the aliased array (the layouts that cannot be written
as rows go through a temporary); the bytes around a view must stay untouched.

Arrays other than the aliasable inputs (labels, probability targets, class weights, per-row
gradients, lse) must not share memory with ``out`` at all: issue 4 found that they were not
checked (labels overwritten by the gradient made the kernel index with garbage); now they are,
and these tests keep it so.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastxent

# (shape, axis): block kernels (C <= 128: one block, several blocks with a remainder), row
# kernels, a size that runs on two threads, N-D along a middle axis, 0 rows, one column.
CASES = [((3, 10), -1), ((130, 10), -1), ((5, 129), -1), ((40, 1000), -1), ((4, 6, 5), 1),
         ((0, 5), -1), ((7, 1), -1), ((9, 7), 0)]
LAYOUTS = ["C", "F", "strided", "negative", "offset"]
GUARD = 7.0  # what the buffer around a view holds


def _case_id(case):
    shape, axis = case
    return "x".join(map(str, shape)) + f"-ax{axis}"


def in_layout(a, layout):
    """(view of ``a``'s values in ``layout``, the buffer that holds it or None)."""
    if layout == "C":
        return np.array(a), None
    if layout == "F":
        return np.asfortranarray(a), None
    if layout == "strided":
        buf = np.full(tuple(2 * s + 1 for s in a.shape), GUARD, a.dtype)
        view = buf[tuple(slice(1, None, 2) for _ in a.shape)]
    elif layout == "negative":
        buf = np.full(tuple(s + 2 for s in a.shape), GUARD, a.dtype)
        view = buf[tuple(slice(-2, 0, -1) for _ in a.shape)]
    else:  # offset: a C array starting 3 elements into its buffer, 2 spare after it
        buf = np.full(a.size + 5, GUARD, a.dtype)
        view = buf[3:3 + a.size].reshape(a.shape)
    view[...] = a
    return view, buf


def guard_intact(view, buf):
    """Whether every element of ``buf`` (C-contiguous) outside ``view`` still holds GUARD."""
    if buf is None:
        return True
    offset = view.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
    idx = np.full(view.shape, offset, dtype=np.int64)
    for k in range(view.ndim):
        step = [1] * view.ndim
        step[k] = view.shape[k]
        idx = idx + (np.arange(view.shape[k]) * view.strides[k]).reshape(step)
    outside = np.ones(buf.size, bool)
    outside[(idx // view.itemsize).reshape(-1)] = False
    return bool(np.all(buf.reshape(-1)[outside] == GUARD))


def bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def make(rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = fastxent.softmax(x, axis)
    g = rng.standard_normal(shape).astype(dtype)
    return x, y, g


# Each entry: name -> (function of (arrays dict, out, axis, n_threads), which array is out).
def _lse_rows_g(x, axis):
    return np.linspace(-1, 1, max(x.size // max(x.shape[axis], 1), 0)).reshape(
        x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]).astype(x.dtype)


ALIASED = {
    "softmax/x": (lambda a, out, axis, n: fastxent.softmax(a["x"], axis, out=out,
                                                             n_threads=n), "x"),
    "log_softmax/x": (lambda a, out, axis, n: fastxent.log_softmax(a["x"], axis, out=out,
                                                                     n_threads=n), "x"),
    "softmax_backward/grad_output": (lambda a, out, axis, n: fastxent.softmax_backward(
        a["g"], a["y"], axis, out=out, n_threads=n), "g"),
    "softmax_backward/output": (lambda a, out, axis, n: fastxent.softmax_backward(
        a["g"], a["y"], axis, out=out, n_threads=n), "y"),
    "log_softmax_backward/grad_output": (lambda a, out, axis, n: fastxent.log_softmax_backward(
        a["g"], a["ly"], axis, out=out, n_threads=n), "g"),
    "log_softmax_backward/output": (lambda a, out, axis, n: fastxent.log_softmax_backward(
        a["g"], a["ly"], axis, out=out, n_threads=n), "ly"),
    "logsumexp_backward/x": (lambda a, out, axis, n: fastxent.logsumexp_backward(
        _lse_rows_g(a["x"], axis), a["x"], axis, out=out, n_threads=n), "x"),
    "logsumexp_backward+lse/x": (lambda a, out, axis, n: fastxent.logsumexp_backward(
        _lse_rows_g(a["x"], axis), a["x"], axis, lse=fastxent.logsumexp(a["x"], axis),
        out=out, n_threads=n), "x"),
}


def _arrays(rng, shape, axis, dtype):
    x, y, g = make(rng, shape, axis, dtype)
    return {"x": x, "y": y, "g": g, "ly": fastxent.log_softmax(x, axis)}


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("name", sorted(ALIASED))
def test_in_place_equals_out_of_place(name, case, dtype, layout, n_threads):
    shape, axis = case
    f, which = ALIASED[name]
    arrays = _arrays(np.random.default_rng(1), shape, axis, dtype)
    want = f(arrays, None, axis, n_threads)
    view, buf = in_layout(arrays[which], layout)
    arrays[which] = view
    got = f(arrays, view, axis, n_threads)
    assert got is view
    assert bitwise_equal(view, want), name
    assert guard_intact(view, buf), "wrote outside the view"


XENT_OPTIONS = [
    dict(),
    dict(reduction="sum", label_smoothing=0.2),
    dict(reduction="none", weight="w"),
    dict(reduction="mean", weight="w", label_smoothing=1.0, ignore_index=0),
    dict(reduction="none", grad_output="rows"),
]


def _xent_args(rng, shape, axis, dtype, kind, options):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    c = shape[axis]
    moved = np.moveaxis(np.empty(shape), axis, -1).shape
    if kind == "index":
        t = rng.integers(0, c, moved[:-1])
        t.reshape(-1)[::3] = options.get("ignore_index", -100)
    else:
        t = np.moveaxis(rng.dirichlet(np.ones(c), moved[:-1]), -1, axis).astype(dtype)
    kw = dict(options, axis=axis)
    if kw.get("weight") == "w":
        kw["weight"] = rng.random(c)
    if kw.get("grad_output") == "rows":
        kw["grad_output"] = rng.standard_normal(moved[:-1])
    return x, t, kw


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("options", XENT_OPTIONS, ids=lambda o: ",".join(sorted(o)) or "-")
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0][0]], ids=_case_id)
def test_cross_entropy_grad_over_logits(case, kind, options, layout, n_threads):
    """``out=logits``: loss and gradient bitwise as into a fresh array."""
    shape, axis = case
    x, t, kw = _xent_args(np.random.default_rng(2), shape, axis, np.float64, kind, options)
    want_loss, want_grad = fastxent.cross_entropy_with_grad(x, t, n_threads=n_threads, **kw)
    view, buf = in_layout(x, layout)
    loss, grad = fastxent.cross_entropy_with_grad(view, t, out=view, n_threads=n_threads,
                                                  **kw)
    assert grad is view
    assert bitwise_equal(loss, want_loss) and bitwise_equal(view, want_grad)
    assert guard_intact(view, buf)


# ------------------------------------------------------------------------- partial overlaps

def _overlaps(shape, dtype=np.float64):
    """(name, x, out, buf) with ``out`` sharing memory with ``x`` without being it."""
    n, c = shape
    rng = np.random.default_rng(3)
    flat = rng.standard_normal(n * c + 2 * c + 2).astype(dtype)
    yield "shifted by a row", flat[:n * c].reshape(n, c), flat[c:c + n * c].reshape(n, c), flat
    yield "shifted by an element", flat[:n * c].reshape(n, c), \
        flat[1:1 + n * c].reshape(n, c), flat
    wide = rng.standard_normal((n, c + 1)).astype(dtype)
    yield "overlapping columns", wide[:, :c], wide[:, 1:], wide
    sq = rng.standard_normal((c, c)).astype(dtype) if n == c else None
    if sq is not None:
        yield "reversed rows", sq, sq[::-1], sq
    half = rng.standard_normal((2 * n, c)).astype(dtype)
    yield "every other row", half[::2], half[n // 2:n // 2 + n], half


PARTIAL = {
    "softmax": lambda x, out: fastxent.softmax(x, out=out),
    "log_softmax": lambda x, out: fastxent.log_softmax(x, out=out),
    "softmax_backward/g": lambda x, out: fastxent.softmax_backward(x, np.ones_like(x),
                                                                   out=out),
    "softmax_backward/y": lambda x, out: fastxent.softmax_backward(np.ones_like(x), x,
                                                                   out=out),
    "log_softmax_backward/g": lambda x, out: fastxent.log_softmax_backward(
        x, np.zeros_like(x), out=out),
    "log_softmax_backward/y": lambda x, out: fastxent.log_softmax_backward(
        np.ones_like(x), x, out=out),
    "logsumexp_backward": lambda x, out: fastxent.logsumexp_backward(np.ones(x.shape[0]), x,
                                                                     out=out),
    "cross_entropy_with_grad": lambda x, out: fastxent.cross_entropy_with_grad(
        x, np.zeros(x.shape[0], np.int64), out=out),
}


@pytest.mark.parametrize("shape", [(8, 8), (100, 12), (6, 300)], ids=str)
@pytest.mark.parametrize("name", sorted(PARTIAL))
def test_partial_overlap_raises_and_writes_nothing(name, shape):
    for what, x, out, buf in _overlaps(shape):
        if out.shape != x.shape:
            continue
        before = buf.copy()
        with pytest.raises(ValueError, match="overlap"):
            PARTIAL[name](x, out)
        assert buf.tobytes() == before.tobytes(), f"{name}, {what}: data changed"


def test_transposed_out_over_x_is_right_or_refused():
    """out = x.T (the same memory, another element order): either the right answer through a
    temporary or a ValueError; never a mix."""
    x = np.random.default_rng(4).standard_normal((9, 9))
    want = fastxent.softmax(x)
    y = x.copy()
    try:
        fastxent.softmax(y, out=y.T)
    except ValueError:
        assert bitwise_equal(y, x)
    else:
        assert bitwise_equal(np.ascontiguousarray(y.T), want)


def test_inputs_that_share_memory_are_fine():
    """Two inputs may be the same array (nothing is written to them)."""
    rng = np.random.default_rng(5)
    for shape in [(3, 10), (130, 10), (5, 300)]:
        y = fastxent.softmax(rng.standard_normal(shape))
        assert bitwise_equal(fastxent.softmax_backward(y, y), fastxent.softmax_backward(
            y.copy(), y.copy()))
        assert bitwise_equal(fastxent.log_softmax_backward(y, y),
                             fastxent.log_softmax_backward(y.copy(), y.copy()))
        # logits that are also their own probability target
        a = fastxent.cross_entropy_with_grad(y, y, label_smoothing=0.1)
        b = fastxent.cross_entropy_with_grad(y.copy(), y.copy(), label_smoothing=0.1)
        assert bitwise_equal(a[0], b[0]) and bitwise_equal(a[1], b[1])


# ------------------------------------------------------------------------- findings

def _in_subprocess(code):
    """Run ``code`` in a fresh interpreter (a crash must not take pytest down)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_logsumexp_out_overlapping_x_raises():
    """logsumexp(x, out=o) where o is a view of x's last rows: rows read after o[i] was
    written see the log-sum-exp of an earlier row in place of their logits."""
    n, c = 500, 4
    buf = np.random.default_rng(6).standard_normal(n * c)
    x = buf.reshape(n, c)
    with pytest.raises(ValueError, match="overlap"):
        fastxent.logsumexp(x, out=buf[n * c - n:], n_threads=1)


@pytest.mark.parametrize("c", [5, 300])
def test_cross_entropy_out_over_prob_target(c):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, c))
    t = rng.dirichlet(np.ones(c), 4)
    want = fastxent.cross_entropy_with_grad(x, t.copy())[1]
    try:
        grad = fastxent.cross_entropy_with_grad(x, t, out=t)[1]
    except ValueError:
        return  # refusing is right too
    assert np.array_equal(grad, want)


def test_cross_entropy_out_over_weight():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal(300), rng.random(300)
    want = fastxent.cross_entropy_with_grad(x, np.array(1), weight=w.copy(),
                                            label_smoothing=0.3)[1]
    try:
        grad = fastxent.cross_entropy_with_grad(x, np.array(1), weight=w, out=w,
                                                label_smoothing=0.3)[1]
    except ValueError:
        return
    assert np.array_equal(grad, want)


def test_logsumexp_backward_out_over_grad_output():
    rng = np.random.default_rng(9)
    n, c = 50, 4
    x = rng.standard_normal((n, c))
    buf = np.zeros(n * c)
    g = buf[:n]
    g[:] = 1.0
    want = fastxent.logsumexp_backward(np.ones(n), x)
    try:
        got = fastxent.logsumexp_backward(g, x, out=buf.reshape(n, c))
    except ValueError:
        return
    assert np.array_equal(got, want)


@pytest.mark.parametrize("n,c", [(200, 10), (50, 300)])
def test_cross_entropy_labels_sharing_memory_with_out(n, c):
    """Labels in an int64 view of the gradient's buffer: validated, then overwritten by the
    gradient of the first rows, then used as indices. Must raise ValueError (or copy the
    labels); today the process dies."""
    result = _in_subprocess(f"""
        import numpy as np, fastxent
        rng = np.random.default_rng(0)
        x = rng.standard_normal(({n}, {c}))
        buf = np.zeros({n} * {c})
        labels = buf.view(np.int64)[:{n}]
        labels[:] = rng.integers(0, {c}, {n})
        want = fastxent.cross_entropy_with_grad(x, labels.copy())
        try:
            loss, grad = fastxent.cross_entropy_with_grad(x, labels, out=buf.reshape({n}, {c}),
                                                          n_threads=1)
        except ValueError:
            print("refused")
        else:
            assert loss == want[0] and np.array_equal(grad, want[1]), "wrong result"
            print("right")
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
