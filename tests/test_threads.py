"""Threads: results bitwise equal for any n_threads, OpenMP limits honoured, GIL released."""

import threading
import time

import numpy as np
import pytest

import fastxent

from .conftest import CE_OPS, OPS, bitwise_equal, ce_class_axis

# Large enough that the kernels run on several threads (they go serial below ~32k elements).
THREAD_CASES = [((301, 257), -1), ((257, 301), 0), ((12, 40, 97), 1)]


def _results(op, args, axis, **kw):
    r = op.fast(args, axis, **kw)
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", OPS + CE_OPS, ids=repr)
def test_bitwise_equal_for_any_n_threads(op, dtype, rng):
    for shape, axis in THREAD_CASES:
        if not op.axis_free:
            axis = ce_class_axis(len(shape))
        args = op.make(rng, shape, axis, dtype)
        want = _results(op, args, axis, n_threads=1)
        for n in (None, 2, 3, 7):
            got = _results(op, args, axis, n_threads=n)
            for g, w in zip(got, want):
                assert bitwise_equal(g, w), f"n_threads={n} {shape} axis={axis}"


def test_bitwise_equal_with_special_values(rng):
    x = rng.standard_normal((400, 300))
    x[::7, 3] = np.nan
    x[::11] = -np.inf
    x[::13, 5] = np.inf
    t = rng.integers(0, 300, size=400)
    t[::5] = -100
    for f in (fastxent.softmax, fastxent.log_softmax, fastxent.logsumexp):
        assert bitwise_equal(f(x, n_threads=1), f(x, n_threads=2))
    a = fastxent.cross_entropy_with_grad(x, t, reduction="sum", label_smoothing=0.1,
                                         n_threads=1)
    b = fastxent.cross_entropy_with_grad(x, t, reduction="sum", label_smoothing=0.1,
                                         n_threads=2)
    assert bitwise_equal(a[0], b[0]) and bitwise_equal(a[1], b[1])


def test_threadpoolctl_limits_are_honoured(rng):
    """threadpoolctl sees fastxent's OpenMP runtime, and results under a limit of 1 thread are
    the same as with 2 threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = rng.standard_normal((500, 300))
    want = fastxent.softmax(x, n_threads=2)
    info = threadpoolctl.threadpool_info()
    assert any(lib["user_api"] == "openmp" for lib in info), info
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert bitwise_equal(fastxent.softmax(x), want)
        assert fastxent._dispatch.kernels.omp_max_threads() == 1
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert fastxent._dispatch.kernels.omp_max_threads() == 2


def test_gil_is_released_during_a_long_kernel():
    """A Python thread keeps counting while softmax works on ~0.8 GB of float32 on one
    OpenMP thread. With the GIL held through the call the counter could advance only in the
    slices the interpreter hands out between bytecodes before the call (a few ms); released,
    it advances at its free-running rate for the whole call. We require a quarter of that
    rate over the call's duration."""
    x = np.zeros((2000, 100_000), dtype=np.float32)
    out = np.empty_like(x)
    fastxent.softmax(x[:10], out=out[:10], n_threads=1)  # warm up
    state = {"count": 0, "stop": False}

    def count():
        while not state["stop"]:
            state["count"] += 1

    t = threading.Thread(target=count, daemon=True)
    t.start()
    try:
        time.sleep(0.05)
        c0, t0 = state["count"], time.perf_counter()
        time.sleep(0.2)  # the main thread sleeps (GIL free): the counter's own rate
        rate = (state["count"] - c0) / (time.perf_counter() - t0)
        c0, t0 = state["count"], time.perf_counter()
        fastxent.softmax(x, out=out, n_threads=1)
        c1, t1 = state["count"], time.perf_counter()
    finally:
        state["stop"] = True
        t.join()
    duration = t1 - t0
    progress = c1 - c0
    assert duration > 0.05, f"the kernel took only {duration:.3f} s: make x larger"
    assert progress > 0.25 * rate * duration, (
        f"counter advanced {progress} during a {duration:.3f} s kernel; "
        f"free-running rate {rate:.0f}/s")
    assert out[0, 0] == np.float32(1e-5)
