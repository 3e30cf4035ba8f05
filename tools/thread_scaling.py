"""2 threads against 1, measured interleaved in one process (kernel work, not a user benchmark).

``python -m fastxent bench`` divides the median of a 1-thread process by the median of a
2-thread process run minutes later; on a shared VM that ratio carries the drift between those
minutes. Here the kernel drivers (``tools/time_kernels.py``'s calls: no validation, outputs
pre-allocated) run with ``n_threads`` 1 and 2 alternately in this process, and the ratio of the
medians (and of the minimums) is printed per op and shape.

Usage::

    python tools/thread_scaling.py                      # float32, issue 3's three larger shapes
    python tools/thread_scaling.py --dtype float64 --rounds 9
"""
import argparse
import os
import sys
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from time_kernels import kernel_calls  # noqa: E402

SHAPES = ((4096, 1000), (1024, 32000), (256, 131072))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    print(f"# {args.dtype}: ms on 1 thread / on 2 threads, medians (and minimums) of "
          f"{args.rounds} interleaved rounds")
    for n_rows, n_classes in SHAPES:
        one = kernel_calls(n_rows, n_classes, dtype, threads=1)
        two = kernel_calls(n_rows, n_classes, dtype, threads=2)
        times = {}
        for name in one:                                    # warm-up, page faults
            one[name]()
            two[name]()
        for _ in range(args.rounds):
            for name in one:
                for threads, call in ((1, one[name]), (2, two[name])):
                    number = max(1, int(0.05 / max(timeit.timeit(call, number=1), 1e-6)))
                    t = timeit.timeit(call, number=number) / number * 1e3
                    times.setdefault((name, threads), []).append(t)
        for name in one:
            t1, t2 = times[(name, 1)], times[(name, 2)]
            print(f"{n_rows}x{n_classes} {name:14s} {np.median(t1):8.3f} {np.median(t2):8.3f}  "
                  f"{np.median(t1) / np.median(t2):.2f}x (min {min(t1) / min(t2):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
