"""Large result arrays, reused once the caller has dropped them.

Why: a training loop asks for a loss gradient of the same shape at every step. For a result
above glibc's largest mmap threshold (32 MiB on 64-bit systems) malloc returns the memory to
the kernel when NumPy frees it and maps it anew for the next array, and the kernel zeroes
every page on first touch. For a 1024 x 32000 float32 gradient that zeroing took 15-20 ms of a
~40 ms call, more than the kernel's whole read of the logits (docs/performance.md). PyTorch's
GPU allocator keeps freed blocks for the same reason; NumPy itself keeps small ones.

How: the cache keeps the buffers of the last ``SLOTS`` large results it handed out. A buffer is
handed out again only when nothing but the cache refers to it: every NumPy view of a result,
a view of a view, a memoryview or an array built on one by another library holds a
reference to the buffer, so its reference count says whether any of them is alive. A result
the caller keeps is therefore never reused; one the caller drops costs no page faults next time.

The cost is memory: up to ``SLOTS`` dropped results stay mapped, never more than ``max_bytes``
in all (default 1 GiB). ``set_buffer_cache(0)`` releases them and turns the cache off.
"""
import sys
import threading

import numpy as np

#: Results smaller than this are left to malloc, which reuses freed blocks itself.
MIN_BYTES = 32 * 2**20

#: Dropped results kept: two, so that ``loss, grad = f(x, t)`` in a loop reuses the buffer of the
#: step before last (the last step's result is still bound to ``grad`` during the call).
SLOTS = 2


def _references(buffers, i):
    """``sys.getrefcount`` of ``buffers[i]``, always taken through this one expression, so that
    the free buffer's count (the baseline) and a buffer's count compare like for like on any
    CPython version."""
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
        self.max_bytes = int(max_bytes)
        probe = [np.empty(1, np.uint8)]
        self._free_count = _references(probe, 0)

    def empty(self, shape, dtype):
        """An uninitialised array like ``np.empty(shape, dtype)``, C-ordered; large ones on a
        buffer that no live array uses."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < MIN_BYTES or nbytes > self.max_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            buffers = self._buffers
            for i in range(len(buffers)):
                if buffers[i].nbytes == nbytes and _references(buffers, i) <= self._free_count:
                    buffers.append(buffers.pop(i))          # the most recent use last
                    return buffers[-1].view(dtype).reshape(shape)
            buffer = np.empty(nbytes, np.uint8)
            buffers.append(buffer)
            while len(buffers) > SLOTS or sum(b.nbytes for b in buffers) > self.max_bytes:
                del buffers[0]      # forgotten: freed when its last result is
            return buffer.view(dtype).reshape(shape)

    def resize(self, max_bytes):
        """Set ``max_bytes`` (forgetting buffers beyond it); return the previous value."""
        with self._lock:
            previous, self.max_bytes = self.max_bytes, int(max_bytes)
            while self._buffers and sum(b.nbytes for b in self._buffers) > self.max_bytes:
                del self._buffers[0]
            return previous

    def cached_bytes(self):
        """Bytes of the buffers kept, in use or not."""
        with self._lock:
            return sum(b.nbytes for b in self._buffers)


CACHE = BufferCache(2**30)


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, through the cache (see the module docstring)."""
    return CACHE.empty(shape, dtype)
