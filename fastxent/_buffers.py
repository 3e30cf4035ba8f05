"""Large result arrays, reused once the caller has dropped them.

Why: a training loop asks for a loss gradient of the same shape at every step. For a result
above glibc's largest mmap threshold (32 MiB on 64-bit systems) malloc returns the memory to
the kernel when NumPy frees it and maps it anew for the next array, and the kernel zeroes
every page on first touch. For a 1024 x 32000 float32 gradient that zeroing took 15-20 ms of a
~40 ms call, more than the kernel's whole read of the logits (docs/performance.md). PyTorch's
GPU allocator keeps freed blocks for the same reason; NumPy itself keeps small ones.

How: the cache keeps the buffers of the last ``SLOTS`` results of ``MIN_BYTES`` or more that
it handed out. A buffer is handed out again only when nothing but the cache refers to it:
every NumPy view of a result, a view of a view, a memoryview, or an array built on one by
another library (``torch.from_numpy``, DLPack, pickle's out-of-band buffers) holds a Python
reference to the buffer, so its reference count says whether any of them is alive. A result
the caller can still reach through a Python reference is therefore never reused. (A raw data
pointer kept past the array's life, through ctypes say, was a use-after-free before and
still is.) The count is compared with that of a probe taken through the same function in the
same call, so whatever the interpreter does to the count of a subscripted list item cancels
out. Where ``sys.getrefcount`` does not exist (PyPy), nothing is cached.

Under the lock only list operations run (no allocation that could start a garbage collection
whose finalizer calls fastxent again on this thread); a thread that finds the lock taken
allocates afresh rather than wait. A child process made by ``fork`` gets a new lock.

The costs: up to ``SLOTS`` dropped results stay mapped, never more than ``max_bytes`` in all
(default 1 GiB); ``set_buffer_cache(0)`` releases them and turns the cache off. A large
result is a view of its buffer, so it does not own its data (``ndarray.resize`` refuses it).
"""
import math
import os
import sys
import threading

import numpy as np

#: Results smaller than this are left to malloc, which reuses freed blocks itself.
MIN_BYTES = 32 * 2**20

#: Dropped results kept: two, so that ``loss, grad = f(x, t)`` in a loop reuses the buffer of the
#: step before last (the last step's result is still bound to ``grad`` during the call).
SLOTS = 2

#: Whether reference counts can be read (not on PyPy): without them nothing is reused.
_CAN_COUNT = hasattr(sys, "getrefcount")


def _references(buffers, i):
    """``sys.getrefcount`` of ``buffers[i]``: the probe's count and a buffer's are both taken
    here, so that they compare like for like."""
    return sys.getrefcount(buffers[i])


class BufferCache:
    """The buffers of the last few large results, for reuse once they are dropped.

    Parameters
    ----------
    max_bytes : int
        The most bytes kept in all; 0 turns the cache off.
    """

    def __init__(self, max_bytes):
        self._lock = threading.Lock()
        self._buffers = []
        self._total = 0                         # bytes in self._buffers
        self.max_bytes = int(max_bytes)
        self._probe = [np.empty(0, np.uint8)]   # referred to by the list alone

    def _after_fork_in_child(self):
        self._lock = threading.Lock()

    def empty(self, shape, dtype):
        """An uninitialised array like ``np.empty(shape, dtype)``, C-ordered; from ``MIN_BYTES``
        up, on a buffer that no live array uses."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES or nbytes > self.max_bytes or not _CAN_COUNT:
            return np.empty(shape, dtype)
        buffer = self._take(nbytes)
        if buffer is None:
            buffer = np.empty(nbytes, np.uint8)
            self._keep(buffer)
        return buffer.view(dtype).reshape(shape)

    def _take(self, nbytes):
        """A kept buffer of ``nbytes`` that nothing else refers to, or None. The caller's
        reference to it makes it busy for every other thread from then on."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            buffers = self._buffers
            free = _references(self._probe, 0)
            for i in range(len(buffers)):
                if buffers[i].nbytes == nbytes and _references(buffers, i) <= free:
                    buffer = buffers.pop(i)
                    buffers.append(buffer)          # the most recent use last
                    return buffer
            return None
        finally:
            self._lock.release()

    def _keep(self, buffer):
        """Keep ``buffer``, forgetting the oldest beyond ``SLOTS`` and ``max_bytes`` (a
        forgotten buffer is freed with its last result)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._buffers.append(buffer)
            self._total += buffer.nbytes
            self._trim()
        finally:
            self._lock.release()

    def _trim(self):
        while self._buffers and (len(self._buffers) > SLOTS or self._total > self.max_bytes):
            self._total -= self._buffers.pop(0).nbytes

    def resize(self, max_bytes):
        """Set ``max_bytes`` (forgetting buffers beyond it); return the previous value."""
        with self._lock:
            previous, self.max_bytes = self.max_bytes, int(max_bytes)
            self._trim()
            return previous

    def cached_bytes(self):
        """Bytes of the buffers kept, in use or not."""
        return self._total


CACHE = BufferCache(2**30)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: CACHE._after_fork_in_child())


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, through the cache (see the module docstring)."""
    return CACHE.empty(shape, dtype)
