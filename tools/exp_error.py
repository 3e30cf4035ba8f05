"""Worst error of the kernels' own float64 exp against mpmath, per argument range and build.

``tests/test_exp_accuracy.py`` checks 3,000 arguments per range in every run of the suite; this
takes more (default 60,000), for a change to the polynomial (``tools/fit_exp_double.py``).
Prints the largest ``|exp_kernel(x) - exp(x)| / ulp(exp(x))`` per range, skipping subnormal
results. Usage: ``python tools/exp_error.py [--points N]``.
"""
import argparse
import importlib
import sys

import mpmath
import numpy as np

import fastxent

RANGES = [(False, -745, 709), (True, -745, 0), (True, -2, 0), (False, -0.5, 0.5),
          (True, -1.1, 0)]


def worst_ulp(build, nonpositive, lo, hi, points):
    x = np.random.default_rng(7).uniform(lo, hi, points)
    out = np.empty((1, points))
    build.exp_rows(x[None, :].copy(), out, nonpositive)
    worst = 0.0
    for xi, gi in zip(x, out[0]):
        exact = mpmath.exp(mpmath.mpf(float(xi)))
        if float(exact) < np.finfo(np.float64).tiny:
            continue
        # The ratio in mpmath: as a float, the difference near the smallest normal results is
        # itself subnormal, and its rounding made a 0.5 ulp error read as 0 or 1.
        ulp = mpmath.mpf(float(np.spacing(float(exact))))
        worst = max(worst, float(abs(mpmath.mpf(float(gi)) - exact) / ulp))
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=60_000)
    args = parser.parse_args(argv)
    mpmath.mp.prec = 113
    for isa in fastxent.available_isas():
        build = importlib.import_module(f"fastxent._kernels_{isa}")
        for nonpositive, lo, hi in RANGES:
            variant = "exp_le0" if nonpositive else "exp"
            print(f"{isa:8s} {variant:7s} [{lo}, {hi}]: "
                  f"{worst_ulp(build, nonpositive, lo, hi, args.points):.4f} ulp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
