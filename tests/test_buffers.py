"""The reuse of large, dropped results (``fastxent._buffers``, ``set_buffer_cache``).

The one property that matters: a result the caller can still reach -- directly, through a
view, a memoryview or another library's array -- is never handed out again. The others: a
dropped one is (that is the point), small results never are, and the cache can be turned off.
Most tests lower the size threshold so that small arrays exercise the cache.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastxent
from fastxent import _buffers

pytestmark = pytest.mark.timeout(120)   # a lock waited for forever fails instead of hanging


@pytest.fixture
def cache(monkeypatch):
    """A fresh cache that takes results of 4 KiB and more."""
    fresh = _buffers.BufferCache(2**30)
    monkeypatch.setattr(_buffers, "CACHE", fresh)
    monkeypatch.setattr(_buffers, "MIN_BYTES", 4096)
    return fresh


def address(a):
    return a.__array_interface__["data"][0]


def logits(seed, shape=(64, 100), dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_a_dropped_result_is_reused(cache):
    x = logits(0)
    expected = fastxent.softmax(x).copy()      # the result itself dropped at once
    first = address(fastxent.softmax(x + 1))   # likewise
    y = fastxent.softmax(x)
    assert address(y) == first
    np.testing.assert_array_equal(y, expected)


def test_a_result_held_is_never_reused(cache):
    x0, x1 = logits(0), logits(1)
    y0 = fastxent.softmax(x0)
    kept = y0.copy()
    y1 = fastxent.softmax(x1)
    assert not np.shares_memory(y0, y1)
    np.testing.assert_array_equal(y0, kept)


@pytest.mark.parametrize("holder", [
    lambda y: y[::2, 1:],                   # a view
    lambda y: y.reshape(-1)[None],          # a view of a view
    lambda y: y.T,
    memoryview,                             # the buffer protocol
    lambda y: np.frombuffer(y, dtype=np.uint8),
])
def test_anything_built_on_a_result_keeps_it_from_reuse(cache, holder):
    x = logits(0)
    y = fastxent.log_softmax(x)
    kept, expected = holder(y), np.asarray(holder(y.copy())).copy()
    del y
    for seed in (1, 2, 3):                  # more calls than the cache has slots
        fastxent.log_softmax(logits(seed))
        z = fastxent.log_softmax(logits(seed))
        assert not np.shares_memory(np.asarray(kept), z)
    np.testing.assert_array_equal(np.asarray(kept), expected)


def test_a_training_loop_alternates_between_two_buffers(cache):
    # ``loss, grad = f(...)``: the last step's grad is alive during the call, the one before
    # is not
    x = logits(0)
    t = np.arange(64) % 100
    seen = []
    for step in range(6):
        loss, grad = fastxent.cross_entropy_with_grad(x + step, t)
        seen.append(address(grad))
    assert seen[2:] == seen[:2] * 2 and seen[0] != seen[1]


def test_other_libraries_holding_a_result_keep_it_from_reuse(cache):
    torch = pytest.importorskip("torch")
    x = logits(0)
    y = fastxent.softmax(x)
    t, expected = torch.from_numpy(y), y.copy()
    del y
    for seed in (1, 2, 3):
        fastxent.softmax(logits(seed))
        z = fastxent.softmax(logits(seed))
        assert address(z) != t.data_ptr()
    np.testing.assert_array_equal(t.numpy(), expected)


def test_a_call_while_the_lock_is_held_allocates_afresh(cache):
    # a finalizer (run by a collection) or a signal handler calling fastxent while this
    # thread is inside the cache must not wait for itself; with a waiting acquire this hangs.
    # (A test that starts a collection inside the lock could not be made to fail reliably:
    # nothing under the lock allocates a tracked object any more.)
    x = logits(0)
    address(fastxent.softmax(x))
    with cache._lock:
        y = fastxent.softmax(x)
        assert cache.cached_bytes() == x.nbytes        # not kept either
    np.testing.assert_array_equal(y, fastxent.softmax(x))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_the_lock_is_held_allocates():
    code = """
import os, sys, numpy as np, fastxent
from fastxent import _buffers
x = np.ones((256, 32768), np.float32)         # 32 MiB: through the cache
fastxent.softmax(x)
_buffers.CACHE._lock.acquire()                # as if another thread were inside
pid = os.fork()
if pid == 0:                                  # the child's cache has a lock of its own
    ok = fastxent.softmax(x).sum() > 0 and _buffers.CACHE._lock.acquire(blocking=False)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_large_result_is_a_view_of_its_buffer():
    # documented: it does not own its data
    x = logits(0, (256, 32768))
    y = fastxent.softmax(x)
    assert not y.flags.owndata and y.base is not None and y.flags.c_contiguous
    previous = fastxent.set_buffer_cache(0)
    try:
        assert fastxent.softmax(x).flags.owndata
    finally:
        fastxent.set_buffer_cache(previous)


def test_results_below_the_threshold_are_not_kept():
    assert _buffers.MIN_BYTES == 32 * 2**20
    cache = _buffers.BufferCache(2**30)
    cache.empty((1000, 1000), np.float64)          # 8 MB
    assert cache.cached_bytes() == 0
    a = cache.empty((2**23 + 1,), np.float32)      # just above 32 MiB
    assert a.shape == (2**23 + 1,) and a.dtype == np.float32 and a.flags.c_contiguous
    assert cache.cached_bytes() == a.nbytes


def test_real_threshold_end_to_end():
    # 256 x 32768 float32 is exactly 32 MiB: kept and reused with the default settings
    x = logits(0, (256, 32768))
    first = address(fastxent.softmax(x))
    assert address(fastxent.softmax(x)) == first


def test_at_most_two_buffers_and_max_bytes(cache):
    held = [cache.empty((1024,), np.float64) for _ in range(4)]   # all live: 4 distinct
    assert len({address(a) for a in held}) == 4
    assert cache.cached_bytes() == 2 * 8192
    cache.resize(10000)
    assert cache.cached_bytes() == 8192
    del held
    assert cache.empty((20000,), np.uint8).nbytes == 20000       # above max_bytes: not kept
    assert cache.cached_bytes() == 8192


def test_set_buffer_cache_off_and_back(cache):
    x = logits(0)
    previous = fastxent.set_buffer_cache(0)
    assert previous == 2**30 and cache.cached_bytes() == 0
    fastxent.softmax(x)
    assert cache.cached_bytes() == 0
    assert fastxent.set_buffer_cache(previous) == 0
    fastxent.softmax(x)
    assert cache.cached_bytes() == x.nbytes


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                        ("1", TypeError)])
def test_set_buffer_cache_rejects(bad, error):
    with pytest.raises(error, match="max_bytes"):
        fastxent.set_buffer_cache(bad)


def test_threads_never_share_a_live_result(cache):
    # each thread keeps its result while checking it against the one it expects
    inputs = [logits(seed, (128, 100)) for seed in range(4)]
    expected = [fastxent.softmax(x).copy() for x in inputs]
    errors = []

    def work(k):
        for _ in range(50):
            y = fastxent.softmax(inputs[k], n_threads=1)
            if not np.array_equal(y, expected[k]):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
