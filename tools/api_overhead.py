"""What ``cross_entropy_with_grad`` costs beyond its kernel, step by step (docs/performance.md,
session 7).

Times, interleaved in one process (best of 15 rounds of 20 calls, one thread unless
``--threads``, ``out=`` pre-allocated): the public call; its validation alone; validation and the kernel; those and
the sum of the kernel's block sums of the losses; the kernel driver alone; and the driver
also writing per-row losses (as the public call did before the sums moved into the kernel,
session 8). The differences say where the time between the kernel and the public call goes,
with warm caches (20 calls in a row); what the same bookkeeping costs right after a large
kernel, with cold caches, is ``tools/cold_overhead.py`` (session 14). Usage::

    python tools/api_overhead.py [--shape 65536x10] [--dtype float32] [--threads 1]
"""
import argparse
import timeit

import numpy as np

import fastxent
from fastxent import _ops
from fastxent import _validate as v
from fastxent._dispatch import kernel, kernels


def calls(x, labels, out, threads=1):
    """``{name: zero-argument call}``: the public call, its steps cumulatively, the kernel."""
    xent = kernel("xent_index_rows", x.dtype)
    loss = np.empty(len(x))

    def steps(last):
        layout = v.Layout(v.as_array(x, "logits"), 1, "logits")
        weight = v.check_weight(None, layout.n_classes)
        target = _ops._Target(labels, layout, -100, weight)
        rows = layout.rows(x)
        grad = v.RowsOut(layout, out, {"logits": rows, "target": target.labels},
                         in_place=("logits",))
        n = v.resolve_n_threads(threads, layout.n_rows * layout.n_classes)
        if last == "validation":
            return None
        sums = xent(rows, target.labels, weight, target.ignore_index, 0.0, None, grad.rows,
                    None, 1.0 / target.total_weight, n)
        if last == "kernel":
            return None
        total = kernels.total(sums)
        return total / target.total_weight, grad.result()

    return {
        "public call": lambda: fastxent.cross_entropy_with_grad(x, labels, n_threads=threads,
                                                                out=out),
        "validation": lambda: steps("validation"),
        "+ kernel": lambda: steps("kernel"),
        "+ loss sum": lambda: steps("all"),
        "kernel alone": lambda: xent(x, labels, None, -100, 0.0, None, out, None,
                                     1.0 / len(x), threads),
        "kernel, per-row losses": lambda: xent(x, labels, None, -100, 0.0, loss, out, None,
                                               1.0 / len(x), threads),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="65536x10")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    n, c = (int(s) for s in args.shape.split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c)).astype(args.dtype)
    labels = rng.integers(0, c, n)
    fns = calls(x, labels, np.empty_like(x), args.threads)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(args.rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], timeit.timeit(fn, number=20) / 20 * 1e6)
    for name, us in best.items():
        print(f"{name:<22} {us:9.1f} us")


if __name__ == "__main__":
    main()
