"""Memory the calls allocate, measured with tracemalloc (NumPy reports its buffers to it).

Contract: at most one copy of an input, none for a C-contiguous input along the last axis;
cross_entropy_with_grad allocates nothing of size N x C besides ``grad`` (no softmax array),
and nothing of that size with ``out=logits``.
"""

import tracemalloc

import numpy as np
import pytest

import fastxent

N, C = 500, 1000
NBYTES = N * C * 8  # one float64 N x C array: 4 MB
SMALL = NBYTES // 4  # allowance for per-row vectors and small bookkeeping (N x 8 bytes = 4 kB)


def peak_bytes(f):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = f()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return peak


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((N, C))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_c_contiguous_input_is_not_copied(name, x):
    f = getattr(fastxent, name)
    f(x)  # warm up (first-call imports and caches)
    assert peak_bytes(lambda: f(x)) < NBYTES + SMALL  # the result only
    assert peak_bytes(lambda: f(x, out=x)) < SMALL  # in place: nothing


def test_logsumexp_allocates_no_n_by_c(x):
    fastxent.logsumexp(x)
    assert peak_bytes(lambda: fastxent.logsumexp(x)) < SMALL


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_at_most_one_copy_for_other_layouts(name, x):
    f = getattr(fastxent, name)
    for arr, axis in [(np.asfortranarray(x), -1), (x, 0), (x[:, ::2], -1)]:
        n_bytes = arr.size * 8
        assert peak_bytes(lambda: f(arr, axis=axis)) < 2 * n_bytes + SMALL


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_allocates_no_n_by_c(kind, x):
    rng = np.random.default_rng(1)
    t = rng.integers(0, C, size=N) if kind == "index" else rng.dirichlet(np.ones(C), size=N)
    small = SMALL
    fastxent.cross_entropy(x, t)
    assert peak_bytes(lambda: fastxent.cross_entropy(x, t)) < small
    assert peak_bytes(lambda: fastxent.cross_entropy(x, t, reduction="none")) < small
    # Loss and gradient: the gradient is the one N x C array.
    assert peak_bytes(lambda: fastxent.cross_entropy_with_grad(x, t)) < NBYTES + small
    work = x.copy()
    assert peak_bytes(lambda: fastxent.cross_entropy_with_grad(work, t, out=work)) < small


def test_backward_allocates_only_the_result(x):
    g = np.ones_like(x)
    y = fastxent.softmax(x)
    for f in (fastxent.softmax_backward, fastxent.log_softmax_backward):
        f(g, y)
        assert peak_bytes(lambda: f(g, y)) < NBYTES + SMALL
        assert peak_bytes(lambda: f(g, y, out=g)) < SMALL
    gl = np.ones(N)
    assert peak_bytes(lambda: fastxent.logsumexp_backward(gl, x)) < NBYTES + SMALL
