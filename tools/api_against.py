"""Time the public loss functions of this checkout against another build's, in one process.

``tools/time_kernels.py --against`` compares kernel drivers; a change in the Python layer as
well (session 8 moved the reduced loss's sum from NumPy into the kernel) needs the public calls
compared. The other build's package is copied to a temporary directory as ``fastxent_other``
(its ``_dispatch`` pointed at its own kernel modules), imported beside ``fastxent``, and both
are timed interleaved: best of ``--rounds`` rounds of 10 calls. Usage::

    git worktree add /tmp/prev HEAD~1 && (cd /tmp/prev && python setup.py build_ext --inplace)
    python tools/api_against.py /tmp/prev [--shape 65536x10] [--dtype float32] [--threads 1]
        [--target index|prob]

Prints, per function, both times and the ratio other / current (> 1: this checkout faster).
"""
import argparse
import os
import shutil
import sys
import tempfile
import timeit

import numpy as np

import fastxent


def import_other(checkout):
    """The ``fastxent`` package of the built ``checkout``, imported as ``fastxent_other``."""
    tmp = tempfile.mkdtemp()
    target = os.path.join(tmp, "fastxent_other")
    shutil.copytree(os.path.join(checkout, "fastxent"), target)
    path = os.path.join(target, "_dispatch.py")
    with open(path) as fh:
        text = fh.read()
    with open(path, "w") as fh:
        fh.write(text.replace('"fastxent._kernels', '"fastxent_other._kernels')
                     .replace('f"fastxent._kernels', 'f"fastxent_other._kernels'))
    sys.path.insert(0, tmp)
    import fastxent_other
    return fastxent_other


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", help="a checkout whose extension modules are built")
    parser.add_argument("--shape", default="65536x10")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target", choices=["index", "prob"], default="index",
                        help="class indices, or class probabilities")
    args = parser.parse_args(argv)
    other = import_other(args.checkout)
    n, c = (int(s) for s in args.shape.split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c)).astype(args.dtype)
    labels = rng.integers(0, c, n)
    if args.target == "prob":
        labels = rng.dirichlet(np.ones(c), n).astype(args.dtype)
    out = np.empty_like(x)
    calls = {}
    for name, module in (("current", fastxent), ("other", other)):
        calls[name, "cross_entropy_with_grad"] = (
            lambda m=module: m.cross_entropy_with_grad(x, labels, n_threads=args.threads,
                                                       out=out))
        calls[name, "cross_entropy"] = (
            lambda m=module: m.cross_entropy(x, labels, n_threads=args.threads))
    for name in ("cross_entropy", "cross_entropy_with_grad"):   # the same answer first
        a, b = calls["current", name](), calls["other", name]()
        a, b = (float(v[0] if isinstance(v, tuple) else v) for v in (a, b))
        if not abs(a - b) <= 1e-6 * abs(b):
            raise SystemExit(f"{name}: {a} here, {b} in {args.checkout}")
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(args.rounds):
        for key, call in calls.items():
            best[key] = min(best[key], timeit.timeit(call, number=10) / 10 * 1e3)
    for name in ("cross_entropy", "cross_entropy_with_grad"):
        cur, oth = best["current", name], best["other", name]
        print(f"{args.shape} {args.dtype} T={args.threads} {name:<24} current {cur:8.3f} ms  "
              f"other {oth:8.3f} ms  other/current {oth / cur:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
