"""Time the block kernels against the row kernels at the same class counts, for tuning the
block thresholds (``set_block_max_classes``; docs/performance.md, v9 and session 7).

Both kernel shapes are timed in one process, alternating round by round, on the kernel
drivers with pre-allocated outputs and one thread. Each cell is the median over rounds of
the rows' time divided by the blocks': above 1, blocks are faster.

Usage::

    python tools/block_vs_rows.py                          # float32, C = 24..80
    python tools/block_vs_rows.py --dtype float64 --classes 10,16,24,32
    python tools/block_vs_rows.py --ops softmax_backward,log_softmax_backward,logsumexp_backward

(The gradients of softmax and log-softmax take blocks only below 16 classes whatever the
threshold, ``backward_block_rows``: above that both columns are rows.)
"""
import argparse
import timeit

import numpy as np

from fastxent._dispatch import kernels

BLOCKS = (128, 128)     # every C <= 128 in blocks
ROWS = (0, 0)           # always row by row


def drivers(x, labels, g, y):
    """The kernel drivers of the five ops on ``x``, and of the three backward ops on ``g``
    and ``y`` (``x`` for log-sum-exp's), outputs allocated once."""
    out, lse, loss = np.empty_like(x), np.empty(len(x), x.dtype), np.empty(len(x))
    g_row = g[:, 0].copy()
    return {
        "logsumexp": lambda: kernels.logsumexp_rows(x, lse, 1),
        "softmax": lambda: kernels.softmax_rows(x, out, 1),
        "log_softmax": lambda: kernels.log_softmax_rows(x, out, 1),
        "cross_entropy": lambda: kernels.xent_index_rows(x, labels, None, -100, 0.0, loss,
                                                         None, None, 1.0, 1),
        "ce_grad": lambda: kernels.xent_index_rows(x, labels, None, -100, 0.0, loss, out,
                                                   None, 1.0, 1),
        "softmax_backward": lambda: kernels.softmax_backward_rows(g, y, out, 1),
        "log_softmax_backward": lambda: kernels.log_softmax_backward_rows(g, y, out, 1),
        "logsumexp_backward": lambda: kernels.logsumexp_backward_rows(g_row, x, None, out, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--classes", default="24,32,40,48,56,64,80")
    parser.add_argument("--elements", type=int, default=1_600_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", default="logsumexp,softmax,log_softmax,cross_entropy,ce_grad",
                        help="comma-separated, of these and softmax_backward, "
                             "log_softmax_backward, logsumexp_backward")
    args = parser.parse_args()
    ops = args.ops.split(",")
    rng = np.random.default_rng(0)
    for c in (int(v) for v in args.classes.split(",")):
        n = args.elements // c
        x = rng.standard_normal((n, c)).astype(args.dtype)
        g = rng.standard_normal((n, c)).astype(args.dtype)
        y = rng.random((n, c)).astype(args.dtype)
        fns = {name: fn for name, fn in drivers(x, rng.integers(0, c, n), g, y).items()
               if name in ops}
        times = {name: {"blocks": [], "rows": []} for name in fns}
        for _ in range(args.rounds):
            for shape, limits in (("blocks", BLOCKS), ("rows", ROWS)):
                previous = kernels.set_block_max_classes(*limits)
                try:
                    for name, fn in fns.items():
                        times[name][shape].append(min(timeit.repeat(fn, number=5, repeat=1)) / 5)
                finally:
                    kernels.set_block_max_classes(*previous)
        cells = "  ".join(f"{name} {np.median(t['rows']) / np.median(t['blocks']):.2f}"
                          for name, t in times.items())
        print(f"C={c} {args.dtype} rows/blocks: {cells}")


if __name__ == "__main__":
    main()
