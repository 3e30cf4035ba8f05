"""No leaks: every public function, with and without ``out=``, and its error paths, called
thousands of times, must not grow traced memory, resident memory, reference counts or the
number of objects the garbage collector tracks.

What is measured, per case (``CASES``):

* ``tracemalloc``: the traced bytes after ``CALLS`` calls minus before, in ``WINDOWS``
  consecutive windows (NumPy reports its data buffers to tracemalloc, so a leaked array, a
  leaked memoryview or a leaked Python object all show). A leak grows every window; the
  smallest window's growth must stay under ``TRACED_BOUND`` (4 bytes per call, while the
  smallest Python object is 16). One window may see a one-off allocation that stays: the
  interpreter resizing one of its global tables (seen: 1.9 MB, once, inside NumPy's
  ``__array_interface__``, when an earlier test had filled the table to its threshold).
* resident set size (``/proc/self/statm``) over ``BIG_CALLS`` calls on arrays of several MB:
  one leaked result, copy or per-thread scratch per call would add ``BIG_CALLS`` times its
  size, far above ``RSS_BOUND``. This also sees ``malloc`` done by the kernels, which
  tracemalloc does not.
* ``sys.getrefcount`` of every argument (arrays, the weight, the out array, the function):
  unchanged. A reference kept by a call (a Cython memoryview never released, a cached
  argument) adds one per call.
* ``len(gc.get_objects())``: unchanged within ``GC_SLACK`` (the interpreter's own caches).

The figures measured on the project machine are in docs/reliability.md;
``FASTXENT_LEAK_REPORT=1`` prints them for each case.
"""
import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

import fastxent

CALLS = 1000           # small arrays, per window: per-call bookkeeping leaks
WINDOWS = 3            # a leak grows every window; a one-off allocation (a global dict
                       # of the interpreter resized) only one
BIG_CALLS = 60         # arrays of ~4 MB: leaked buffers
TRACED_BOUND = 4 * 1024     # bytes over a window of CALLS calls: < 4.1 bytes per call
RSS_BOUND = 16 * 1024 * 1024  # bytes over BIG_CALLS calls of ~4 MB arrays
GC_SLACK = 50          # objects
PAGE = os.sysconf("SC_PAGE_SIZE")
REPORT = os.environ.get("FASTXENT_LEAK_REPORT") == "1"


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _inputs(n, c, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)).astype(dtype)
    return {
        "x": x,
        "y": fastxent.softmax(x),
        "ly": fastxent.log_softmax(x),
        "g": rng.standard_normal((n, c)).astype(dtype),
        "g_rows": rng.standard_normal(n).astype(dtype),
        "lse": fastxent.logsumexp(x),
        "t": rng.integers(0, c, n),
        "p": rng.dirichlet(np.ones(c), n).astype(dtype),
        "w": rng.random(c),
        "out": np.empty((n, c), dtype),
        "out_rows": np.empty(n, dtype),
        "x_work": x.copy(),
        "bad_t": np.full(n, c),
        "bad_out": np.empty((n, c + 1), dtype),
        "overlap": np.empty((n + 1) * c, dtype),
    }


def _raises(f, *args, **kw):
    def call():
        try:
            f(*args, **kw)
        except (ValueError, TypeError):
            return
        raise AssertionError("expected an error")
    return call


fx = fastxent


def make_cases(a, n_threads=None):
    """name -> (zero-argument call, arrays whose refcounts must not change)."""
    nt = {"n_threads": n_threads}
    x, t, p, w = a["x"], a["t"], a["p"], a["w"]
    ov = a["overlap"][: x.size].reshape(x.shape), a["overlap"][x.shape[1]:].reshape(x.shape)
    ov[0][...] = x
    return {
        "logsumexp": (lambda: fx.logsumexp(x, **nt), [x]),
        "logsumexp/out": (lambda: fx.logsumexp(x, out=a["out_rows"], **nt), [x, a["out_rows"]]),
        "logsumexp/axis0": (lambda: fx.logsumexp(x, axis=0, keepdims=True, **nt), [x]),
        "softmax": (lambda: fx.softmax(x, **nt), [x]),
        "softmax/out": (lambda: fx.softmax(x, out=a["out"], **nt), [x, a["out"]]),
        "softmax/in_place": (lambda: fx.softmax(a["x_work"], out=a["x_work"], **nt),
                             [a["x_work"]]),
        "softmax/fortran": (lambda: fx.softmax(x.T, axis=0, **nt), [x]),
        "log_softmax": (lambda: fx.log_softmax(x, **nt), [x]),
        "log_softmax/out": (lambda: fx.log_softmax(x, out=a["out"], **nt), [x, a["out"]]),
        "softmax_backward": (lambda: fx.softmax_backward(a["g"], a["y"], **nt),
                             [a["g"], a["y"]]),
        "softmax_backward/out": (lambda: fx.softmax_backward(a["g"], a["y"], out=a["out"],
                                                             **nt), [a["g"], a["y"], a["out"]]),
        "log_softmax_backward": (lambda: fx.log_softmax_backward(a["g"], a["ly"], **nt),
                                 [a["g"], a["ly"]]),
        "log_softmax_backward/out": (lambda: fx.log_softmax_backward(
            a["g"], a["ly"], out=a["out"], **nt), [a["g"], a["ly"], a["out"]]),
        "logsumexp_backward": (lambda: fx.logsumexp_backward(a["g_rows"], x, **nt),
                               [a["g_rows"], x]),
        "logsumexp_backward/lse/out": (lambda: fx.logsumexp_backward(
            a["g_rows"], x, lse=a["lse"], out=a["out"], **nt),
            [a["g_rows"], x, a["lse"], a["out"]]),
        "softmax_jacobian": (lambda: fx.softmax_jacobian(x[:4, :8]), [x]),
        "cross_entropy/index": (lambda: fx.cross_entropy(x, t, **nt), [x, t]),
        "cross_entropy/index/all-options": (lambda: fx.cross_entropy(
            x, t, weight=w, ignore_index=0, reduction="none", label_smoothing=0.1, **nt),
            [x, t, w]),
        "cross_entropy/prob": (lambda: fx.cross_entropy(x, p, weight=w, reduction="sum", **nt),
                               [x, p, w]),
        "cross_entropy_with_grad/index": (lambda: fx.cross_entropy_with_grad(
            x, t, label_smoothing=0.2, **nt), [x, t]),
        "cross_entropy_with_grad/index/out": (lambda: fx.cross_entropy_with_grad(
            x, t, weight=w, out=a["out"], **nt), [x, t, w, a["out"]]),
        "cross_entropy_with_grad/prob/out=logits": (lambda: fx.cross_entropy_with_grad(
            a["x_work"], p, out=a["x_work"], reduction="none",
            grad_output=a["g_rows"].astype(np.float64), **nt), [a["x_work"], p]),
        # error paths: each raises after some validation (and, for labels, after a pass over
        # them in compiled code)
        "error/bad_label": (_raises(fx.cross_entropy, x, a["bad_t"], **nt), [x, a["bad_t"]]),
        "error/bad_label_with_grad": (_raises(fx.cross_entropy_with_grad, x, a["bad_t"],
                                              out=a["out"], **nt), [x, a["bad_t"], a["out"]]),
        "error/out_shape": (_raises(fx.softmax, x, out=a["bad_out"], **nt), [x, a["bad_out"]]),
        "error/out_dtype": (_raises(fx.log_softmax, x, out=a["out"].astype(np.float16), **nt),
                            [x]),
        "error/partial_overlap": (_raises(fx.softmax, ov[0], out=ov[1], **nt), [a["overlap"]]),
        "error/dtype": (_raises(fx.logsumexp, x.astype(complex), **nt), [x]),
        "error/n_threads": (_raises(fx.softmax, x, n_threads=0), [x]),
        "error/weight": (_raises(fx.cross_entropy, x, t, weight=w[:-1], **nt), [x, t, w]),
        "error/reduction": (_raises(fx.cross_entropy, x, t, reduction="avg", **nt), [x, t]),
        "error/grad_output": (_raises(fx.logsumexp_backward, a["g"], x, **nt), [a["g"], x]),
    }


SMALL = _inputs(16, 24)
SMALL_CASES = make_cases(SMALL)


def _refcounts(objects):
    """sys.getrefcount of each of ``objects``, taken the same way every time."""
    return [sys.getrefcount(o) for o in objects]


def _measure(call, arrays, calls, windows=WINDOWS):
    """(traced byte growth of each window of ``calls`` calls, refcount changes, gc object
    growth) over ``windows`` windows."""
    for _ in range(200):  # warm up: first-call caches, interned strings, import side effects
        call()
    gc.collect()
    watched = list(arrays) + [call]
    refs = _refcounts(watched)
    n_objects = len(gc.get_objects())
    growth = []
    tracemalloc.start()
    try:
        for _ in range(windows):
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(calls):
                call()
            gc.collect()
            growth.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    gc.collect()
    ref_changes = [after - before for after, before in zip(_refcounts(watched), refs)]
    return growth, ref_changes, len(gc.get_objects()) - n_objects


@pytest.mark.parametrize("name", sorted(SMALL_CASES))
def test_no_leak_small(name):
    call, arrays = SMALL_CASES[name]
    growth, ref_changes, objects = _measure(call, arrays, CALLS)
    if REPORT:
        print(f"\n{name}: traced growth per window of {CALLS} calls {growth} B, "
              f"objects {objects:+d}, refcounts {ref_changes}")
    assert min(growth) < TRACED_BOUND, (
        f"{name}: traced memory grew in every window of {CALLS} calls: {growth} B")
    assert all(r == 0 for r in ref_changes), f"{name}: refcounts changed by {ref_changes}"
    assert objects < GC_SLACK, f"{name}: {objects} more objects tracked by gc"


# AddressSanitizer keeps freed memory in a quarantine (256 MB by default) before reusing it, so
# under it resident memory swings by hundreds of MB with no leak (tracemalloc still applies).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
asan_skip = pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine makes RSS meaningless")


@asan_skip
@pytest.mark.parametrize("n_threads", [1, 2])
def test_no_leak_rss_big_arrays(n_threads):
    """Arrays of 4 MB (float64 1000 x 500) on one and two threads: resident memory after
    BIG_CALLS calls of every case, minus after the first round, stays under RSS_BOUND."""
    cases = make_cases(_inputs(1000, 500, seed=1), n_threads=n_threads)
    for call, _ in cases.values():  # first round: every buffer NumPy/malloc will reuse
        call()
    gc.collect()
    start = rss_bytes()
    growth = {}
    for name, (call, _) in sorted(cases.items()):
        r0 = rss_bytes()
        for _ in range(BIG_CALLS):
            call()
        gc.collect()
        growth[name] = rss_bytes() - r0
    total = rss_bytes() - start
    if REPORT:
        print(f"\nRSS growth over {BIG_CALLS} calls x {len(cases)} cases, n_threads="
              f"{n_threads}: total {total / 2**20:+.2f} MiB, worst case "
              f"{max(growth.values()) / 2**20:+.2f} MiB ({max(growth, key=growth.get)})")
    assert total < RSS_BOUND, f"RSS grew by {total / 2**20:.1f} MiB: {growth}"


@asan_skip
def test_no_leak_in_threads():
    """Calls from short-lived Python threads (fresh OpenMP state per thread): bounded RSS and
    no thread-held references."""
    import threading

    a = _inputs(300, 200, seed=2)
    cases = make_cases(a, n_threads=2)

    def work():
        for call, _ in cases.values():
            call()

    def round_():
        threads = [threading.Thread(target=work) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    round_()
    gc.collect()
    refs = {k: sys.getrefcount(v) for k, v in a.items()}
    start = rss_bytes()
    for _ in range(15):
        round_()
    gc.collect()
    growth = rss_bytes() - start
    if REPORT:
        print(f"\nRSS growth over 15 x 4 threads x {len(cases)} calls: "
              f"{growth / 2**20:+.2f} MiB")
    assert growth < RSS_BOUND
    assert {k: sys.getrefcount(v) for k, v in a.items()} == refs
