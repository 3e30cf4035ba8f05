"""Fit the polynomial of the float64 exp in src/fx_exp.h, and print its error.

exp(r) = 1 + r + r^2 P(r) on |r| <= ln2/2 (the Cody-Waite reduced argument). P is fitted to
f(r) = (exp(r) - 1 - r) / r^2 minimising the relative error of exp, r^2 (P - f) / exp(r), by
Lawson's iteration (iteratively reweighted least squares, which converges to the minimax
polynomial) on Chebyshev nodes, in 200-bit arithmetic (mpmath). The error printed is that of the
coefficients rounded to double, on a fine grid, in units of 2^-52 (one ulp of exp relative to
its value, at most). Usage: ``python tools/fit_exp_double.py [degree ...]`` (default 8 9 10);
src/fx_exp.h uses degree 10.
"""
import sys

import mpmath as mp


def fit(degree, n_nodes=400, iterations=60):
    """Coefficients of P (constant first) as Python floats."""
    half_ln2 = mp.log(2) / 2 * mp.mpf("1.0001")            # a little margin past ln2/2

    def target(r):
        return (mp.exp(r) - 1 - r) / r**2

    nodes = [half_ln2 * mp.cos(mp.pi * (k + mp.mpf(0.5)) / n_nodes) for k in range(n_nodes)]
    weights = [mp.mpf(1)] * n_nodes
    for _ in range(iterations):
        a, b = mp.matrix(n_nodes, degree + 1), mp.matrix(n_nodes, 1)
        for i, r in enumerate(nodes):
            scale = mp.sqrt(weights[i]) * r**2 / mp.exp(r)
            for j in range(degree + 1):
                a[i, j] = scale * r**j
            b[i] = scale * target(r)
        c = mp.lu_solve(a.T * a, a.T * b)
        errors = [abs((mp.polyval(list(reversed(c)), r) - target(r)) * r**2 / mp.exp(r))
                  for r in nodes]
        total = sum(w * e for w, e in zip(weights, errors))
        weights = [w * e / total for w, e in zip(weights, errors)]
    return [float(c[j]) for j in range(degree + 1)], half_ln2


def max_error_ulp(coefficients, half_ln2, points=2001):
    """Max relative error of 1 + r + r^2 P(r) with the given double coefficients, / 2^-52."""
    worst = mp.mpf(0)
    for k in range(points):
        r = -half_ln2 + 2 * half_ln2 * k / (points - 1)
        p = mp.polyval([mp.mpf(v) for v in reversed(coefficients)], r)
        worst = max(worst, abs(1 + r + r**2 * p - mp.exp(r)) / mp.exp(r))
    return worst / mp.mpf(2) ** -52


def main(argv):
    mp.mp.prec = 200
    for degree in [int(v) for v in argv] or [8, 9, 10]:
        coefficients, half_ln2 = fit(degree)
        print(f"degree {degree}: {float(max_error_ulp(coefficients, half_ln2)):.4f} ulp")
        for v in reversed(coefficients):
            print(f"    {v!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
