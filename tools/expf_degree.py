"""How accurate a float32 exp of fx_exp.h's form would be with a polynomial of another degree.

The float exp in src/fx_exp.h evaluates exp(r) = 1 + r + c2 r^2 + ... + cd r^d on
|r| <= ln2/2 by Horner's rule in FMAs. This tool fits c2..cd minimax (a linear programme on the
relative error, scipy), rounding the coefficients to float one at a time from the highest
(each refit after the one above is rounded), then runs the whole exp -- reduction, polynomial,
scaling -- in a float32 emulation (each FMA: the exact product in double, plus the addend,
rounded once to float) over random arguments, and prints the largest error against exp in
double, in float32 ulps of the result. The polynomial in use (degree 6) is timed beside it.

docs/performance.md (session 7): degree 5 errs by up to 2.2 ulp, where degree 6 errs by 0.9,
and tests/test_exp_accuracy.py pins < 1.5. Usage: ``python tools/expf_degree.py [--degree 5]``.
"""
import argparse

import numpy as np
from scipy.optimize import linprog

F32 = np.float32
#: fx_expf_reduced's degree-6 coefficients, c6 first (src/fx_exp.h).
IN_USE = [0.001382041024044156, 0.008368677459657192, 0.04166826978325844,
          0.1666652113199234, 0.4999999403953552]


def fit(degree, nodes=3001):
    """c_degree, ..., c2 as floats, fitted minimax and rounded to float from the top."""
    r = np.cos(np.linspace(0, np.pi, nodes)) * np.log(2) / 2 * 1.0005
    fixed = {0: 1.0, 1: 1.0}
    free = list(range(2, degree + 1))
    while free:
        base = sum(c * r**k for k, c in fixed.items())
        a = np.stack([r**k for k in free], 1) / np.exp(r)[:, None]
        b = (np.exp(r) - base) / np.exp(r)
        ones = np.ones((len(r), 1))
        res = linprog(np.r_[np.zeros(len(free)), 1.0],
                      A_ub=np.block([[a, -ones], [-a, -ones]]), b_ub=np.r_[b, -b],
                      bounds=[(None, None)] * (len(free) + 1), method="highs")
        top = free.pop()
        fixed[top] = float(F32(res.x[len(free)]))
    return [fixed[k] for k in range(degree, 1, -1)]


def fma(a, b, c):
    """float32 fma: the product of two floats is exact in double; one rounding to float."""
    return (a.astype(np.float64) * b.astype(np.float64) + c).astype(F32)


def expf(x, coefs):
    """fx_expf's steps in float32, with the polynomial c_d, ..., c2 (then 1, 1)."""
    x = x.astype(F32)
    shifter = F32(12582912.0)
    t = fma(x, np.full_like(x, F32(1.44269504088896341)), np.float64(shifter))
    n = (t - shifter).astype(F32)
    r = fma(-n, np.full_like(x, F32(0.693359375)), x.astype(np.float64))
    r = fma(-n, np.full_like(x, F32(-2.12194440e-4)), r.astype(np.float64))
    p = np.full_like(x, F32(coefs[0]))
    for c in list(coefs[1:]) + [1.0, 1.0]:
        p = fma(p, r, np.float64(F32(c)))
    return (p.astype(np.float64) * np.exp2(n.astype(np.float64))).astype(F32)


def worst_ulp(coefs, lo, hi, points, seed=0):
    x = np.random.default_rng(seed).uniform(lo, hi, points).astype(F32)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(F32)).astype(np.float64)
    return float((np.abs(expf(x, coefs).astype(np.float64) - exact) / ulp).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--degree", type=int, default=5)
    parser.add_argument("--points", type=int, default=4_000_000)
    args = parser.parse_args(argv)
    candidate = fit(args.degree)
    print(f"degree {args.degree} coefficients (c{args.degree} first): {candidate}")
    for lo, hi in [(-87, 0), (-2, 0), (-0.5, 0.5), (-87, 88)]:
        print(f"[{lo}, {hi}]: degree {args.degree} {worst_ulp(candidate, lo, hi, args.points):.3f}"
              f" ulp, degree 6 in use {worst_ulp(IN_USE, lo, hi, args.points):.3f} ulp")


if __name__ == "__main__":
    main()
