"""Long rows whose output is streamed (non-temporal stores, src/fx_streamops.h).

A softmax or loss gradient of at least ``set_stream_min_bytes`` (64 MiB by default), whose
rows are written in blocks, goes through a pipeline that writes each row's output while the
next row is read. It computes the same values as the group kernels, with other stores; so
here every case runs both ways on small arrays (the threshold lowered to 0) and the results
must agree bit for bit: odd row lengths and strides (rows that start anywhere in a cache
line), several runs of rows, in place, ignored rows, weights, smoothing, special values, the
rare rescale by powers of two, and any number of threads.
"""
import tracemalloc

import numpy as np
import pytest

import fastxent
from fastxent._dispatch import kernels

if not kernels.has_streaming_stores():
    pytest.skip("this build has no streaming stores (not x86): nothing is streamed",
                allow_module_level=True)


@pytest.fixture
def streaming():
    """Run the body with every eligible output streamed; yields a function that computes a
    callable's result both ways (streamed, then not)."""
    previous = kernels.set_stream_min_bytes(0)

    def both(fn):
        kernels.set_stream_min_bytes(0)
        streamed = fn()
        kernels.set_stream_min_bytes(1 << 62)
        plain = fn()
        kernels.set_stream_min_bytes(0)
        return streamed, plain

    yield both
    kernels.set_stream_min_bytes(previous)


def assert_same_bits(a, b):
    """The same bits (zeros' signs included), NaN in the same places (which NaN an operation
    passes on depends on its operands' order, which the compiler may swap)."""
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        u, v = np.atleast_1d(u), np.atleast_1d(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        nan = np.isnan(u)
        np.testing.assert_array_equal(nan, np.isnan(v))
        assert u[~nan].tobytes() == v[~nan].tobytes(), "bits differ"


def logits(dtype, n_rows, n, seed=0):
    """Rows written in blocks, with the special cases of the long-row kernels: a max rising
    in a late block, -inf blocks first, NaN, +inf, a row of -inf, masked classes."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_rows, n)) * 3).astype(dtype)
    x[0, -1] = 40
    x[1 % n_rows, :5000] = -np.inf
    x[1 % n_rows, n - 100] = 25
    if n_rows > 6:
        x[2, n - 3000] = np.nan
        x[3, n // 2] = np.inf
        x[4] = -np.inf
        x[5, ::3] = -np.inf
    return x


# n: odd lengths put each row's start at another offset in a cache line; 20480 ends on a
# block boundary of 2048; 45000 holds 22 blocks and a partial one
SIZES = [(2, 16411), (3, 20480), (37, 20001), (70, 45000)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n", SIZES)
def test_softmax_streamed_is_the_same(streaming, dtype, n_rows, n):
    x = logits(dtype, n_rows, n)
    with np.errstate(invalid="ignore"):
        assert_same_bits(*streaming(lambda: fastxent.softmax(x)))
        assert_same_bits(*streaming(lambda: fastxent.softmax(x, n_threads=2)))

        def in_place():
            y = x.copy()
            return fastxent.softmax(y, out=y)
        assert_same_bits(*streaming(in_place))

        def strided():     # rows 3 elements apart: each starts elsewhere in a line
            out = np.zeros((n_rows, n + 3), dtype)[:, 1:n + 1]
            return fastxent.softmax(x, out=out).copy()
        assert_same_bits(*streaming(strided))


OPTIONS = [{}, {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.1},
           {"weight": "w"}, {"weight": "w", "label_smoothing": 0.2, "reduction": "none"}]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows, n", SIZES)
@pytest.mark.parametrize("options", OPTIONS)
def test_loss_gradient_streamed_is_the_same(streaming, dtype, n_rows, n, options):
    x = logits(dtype, n_rows, n, seed=1)
    rng = np.random.default_rng(2)
    target = rng.integers(0, n, n_rows)
    target[0] = 2047                     # the last class of a block, and the first of one
    target[-1] = 2048
    target[n_rows // 2] = -100           # ignored: zeros
    kw = dict(options)
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, n)
    with np.errstate(invalid="ignore"):
        assert_same_bits(*streaming(lambda: fastxent.cross_entropy_with_grad(x, target, **kw)))
        assert_same_bits(*streaming(
            lambda: fastxent.cross_entropy_with_grad(x, target, n_threads=2, **kw)))

        def in_place():
            y = x.copy()
            return fastxent.cross_entropy_with_grad(y, target, out=y, **kw)
        assert_same_bits(*streaming(in_place))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_gradient_streamed_rescaled_by_powers_of_two(streaming, dtype):
    """A grad_output near the type's largest value takes coefficients past its range, which
    xent_row_coefs scales down by a power of two and scale_pow2 brings back once the row is
    written: here after its streaming stores."""
    n_rows, n = 5, 20001
    x = logits(dtype, n_rows, n, seed=3)[[0, 1, 1, 0, 1]]
    target = np.array([7, 2048, n - 100, n - 1, 3])
    big = np.finfo(dtype).max / 4
    go = np.full(n_rows, big, dtype)
    go[2] = 1.0
    streamed, plain = streaming(lambda: fastxent.cross_entropy_with_grad(
        x, target, reduction="none", grad_output=go))
    assert_same_bits(streamed, plain)
    grad = streamed[1]
    assert np.isfinite(grad[[0, 2, 3]]).all()
    assert abs(grad[0, target[0]]) > big / 2    # the power of two was applied


def test_scratch_is_bounded_by_the_runs_of_rows(streaming):
    """Each thread holds two rows of scratch, so the team is capped at the runs of 32 rows:
    64 threads asked for 3 rows of 2^19 doubles (4 MiB each) take one thread's 8 MiB, not
    512 MiB, and give the same bits."""
    x = logits(np.float64, 3, 1 << 19, seed=4)
    target = np.array([1, 2, 3])
    with np.errstate(invalid="ignore"):
        tracemalloc.start()        # NumPy reports its allocations to tracemalloc
        try:
            streamed, plain = streaming(
                lambda: fastxent.cross_entropy_with_grad(x, target, n_threads=64))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert_same_bits(streamed, plain)
    assert peak < 48 << 20, f"{peak / 2**20:.0f} MiB"   # two 12 MiB gradients, 8 MiB scratch


def test_threshold_round_trip():
    previous = kernels.set_stream_min_bytes(123)
    assert kernels.set_stream_min_bytes(previous) == 123
