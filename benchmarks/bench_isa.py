"""asv: the kernels of every instruction-set build this processor runs.

The public functions use the best build only (``fastxent._dispatch.ACTIVE``), so the other
classes time nothing of the AVX2 and baseline builds, which are what a processor without
AVX-512 runs (the baseline build is also all that other architectures get). A change that
leaves a loop scalar in one build shows only in that build: session 16 found the AVX2 build's
block logs and the baseline build's exponentials scalar, a quarter to a half of their C = 10
time (docs/performance.md). These benchmarks time each build's kernel drivers directly, on
one thread, with every output allocated and touched in ``setup``: the kernels alone, without
validation, on the three kernel shapes (blocks of short rows, groups, long rows).
"""

import numpy as np

from ._common import _shape  # first: it finds fastxent when built in place

from fastxent import _dispatch
from fastxent._bench import Data

OPS = ["logsumexp", "softmax", "log_softmax", "cross_entropy", "ce_grad"]
#: one shape per kind of kernel: blocks (C <= 40 in float32), groups of rows, long rows
SHAPES = ["65536x10", "16384x100", "1024x1000"]


class KernelsByIsa:
    """``time_kernel``: one kernel driver of one build, over isa x op x dtype x shape."""

    params = [list(_dispatch.AVAILABLE), OPS, ["float32", "float64"], SHAPES]
    param_names = ["isa", "op", "dtype", "shape"]
    timeout = 120

    def setup(self, isa, op, dtype, shape):
        n, c = _shape(shape)
        data = Data(n, c, dtype, seed=0)
        x, t = data.x, data.t
        dt = np.dtype(dtype)
        module = _dispatch.configured(isa)

        def driver(name):
            return getattr(module, name).__signatures__["float" if dt.char == "f" else "double"]

        out = np.ones((n, c), dt)           # touched: no page faults in the timings
        lse = np.ones(n, dt)
        lse_rows, softmax_rows = driver("logsumexp_rows"), driver("softmax_rows")
        log_softmax_rows, xent = driver("log_softmax_rows"), driver("xent_index_rows")
        calls = {
            "logsumexp": lambda: lse_rows(x, lse, 1),
            "softmax": lambda: softmax_rows(x, out, 1),
            "log_softmax": lambda: log_softmax_rows(x, out, 1),
            # (logits, labels, weight, ignore_index, smoothing, losses, grad, row scale,
            # scale, n_threads): a mean's block sums, as the public cross_entropy asks
            "cross_entropy": lambda: xent(x, t, None, -100, 0.0, None, None, None, 1.0, 1),
            "ce_grad": lambda: xent(x, t, None, -100, 0.0, None, out, None, 1.0 / n, 1),
        }
        self.call = calls[op]

    def time_kernel(self, isa, op, dtype, shape):
        self.call()
