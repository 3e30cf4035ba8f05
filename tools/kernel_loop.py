"""Call one kernel driver in a loop, for a profiler to sample (docs/performance.md, session 8).

Usage::

    perf record -e cpu-clock -F 5000 -o /tmp/perf.data \\
        python tools/kernel_loop.py ce_grad --shape 65536x10 --seconds 4
    perf report -i /tmp/perf.data --stdio --sort symbol
    perf annotate -i /tmp/perf.data --stdio -s <symbol>

or, with a fixed number of calls, for valgrind to count instructions (AVX2 or baseline
builds only: valgrind does not decode AVX-512; docs/performance.md, session 16). The driver's
inclusive count over the two calls (warm-up and one), halved, is its count per call; the
program's total is not, as it includes OpenBLAS's threads spinning::

    PY=$(python -c "import sys; print(sys.executable)")   # not a pyenv shim script
    OPENBLAS_NUM_THREADS=1 FASTXENT_ISA=avx2 valgrind --tool=callgrind \
        --callgrind-out-file=/tmp/cg.out $PY tools/kernel_loop.py ce_grad --calls 1
    callgrind_annotate --inclusive=yes /tmp/cg.out | grep -m1 xent_index_rows

The drivers and their arguments are those of ``tools/time_kernels.py`` (one thread, outputs
allocated once, standard-normal logits); ``ce_prob`` is the public ``cross_entropy`` against
class probabilities (session 8's profile of those rows). The last line printed is the time
per call.
"""
import argparse
import functools
import os
import sys
import time

import numpy as np

import fastxent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from time_kernels import kernel_calls  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("op", choices=["logsumexp", "softmax", "log_softmax", "cross_entropy",
                                       "ce_grad", "ce_prob", "softmax_backward",
                                       "log_softmax_backward", "logsumexp_backward"])
    parser.add_argument("--shape", default="65536x10")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--calls", type=int, default=None,
                        help="exactly this many calls (after one warm-up) instead of --seconds")
    args = parser.parse_args(argv)
    n, c = (int(s) for s in args.shape.split("x"))
    if args.op == "ce_prob":                # the public loss against class probabilities
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c)).astype(args.dtype)
        p = rng.dirichlet(np.ones(c), n).astype(args.dtype)
        call = functools.partial(fastxent.cross_entropy, x, p, n_threads=1)
    else:
        call = kernel_calls(n, c, np.dtype(args.dtype))[args.op]
    if args.calls is not None:
        call()
    calls, t0 = 0, time.perf_counter()
    while (calls < args.calls if args.calls is not None
           else time.perf_counter() - t0 < args.seconds):
        call()
        calls += 1
    ms = (time.perf_counter() - t0) / calls * 1e3
    print(f"{args.op} {args.shape} {args.dtype}: {ms:.3f} ms per call, {calls} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
