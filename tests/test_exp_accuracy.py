"""Accuracy and special values of the kernels' own exp, in every kernel build this CPU runs.

The kernels use a polynomial exp of their own (src/fx_exp.h) so that their loops vectorise.
Claims checked here: float32 within 2 ulp of the correctly rounded value (we measure the error
against the exact value, in units of the float32 spacing there, so < 1.5 leaves room), float64
within 1 ulp of the exact value (mpmath), and exp(-inf) = 0, exp(inf) = inf, exp(NaN) = NaN,
subnormal results and overflow exactly as the IEEE exp.
"""
import importlib

import numpy as np
import pytest

import fastxent

mpmath = pytest.importorskip("mpmath")

BUILDS = [importlib.import_module(f"fastxent._kernels_{isa}") for isa in fastxent.available_isas()]
IDS = fastxent.available_isas()


def kernel_exp(build, x, nonpositive):
    x = np.ascontiguousarray(x)[None, :]
    out = np.empty_like(x)
    build.exp_rows(x, out, nonpositive)
    return out[0]


@pytest.mark.parametrize("build", BUILDS, ids=IDS)
@pytest.mark.parametrize("nonpositive, lo, hi", [(False, -104, 89), (True, -104, 0)])
def test_float32_within_2_ulp(build, nonpositive, lo, hi):
    x = np.random.default_rng(0).uniform(lo, hi, 400_000).astype(np.float32)
    got = kernel_exp(build, x, nonpositive).astype(np.float64)
    exact = np.exp(x.astype(np.float64))            # float64 is exact to far below a float32 ulp
    normal = (exact > np.finfo(np.float32).tiny) & (exact < np.finfo(np.float32).max)
    ulp = np.spacing(exact[normal].astype(np.float32)).astype(np.float64)
    err = np.abs(got[normal] - exact[normal]) / ulp
    assert err.max() < 1.5


@pytest.mark.parametrize("build", BUILDS, ids=IDS)
@pytest.mark.parametrize("nonpositive, lo, hi", [(False, -745, 709), (True, -745, 0),
                                                 (True, -2, 0)])
def test_float64_within_1_ulp(build, nonpositive, lo, hi):
    x = np.random.default_rng(1).uniform(lo, hi, 3000)
    got = kernel_exp(build, x, nonpositive)
    mpmath.mp.prec = 113
    worst = 0.0
    for xi, gi in zip(x, got):
        exact = mpmath.exp(mpmath.mpf(float(xi)))
        if float(exact) < np.finfo(np.float64).tiny:
            continue
        # The ratio in mpmath: as a float, the difference near the smallest normal results is
        # itself subnormal, and its rounding made a 0.5 ulp error read as 0 or 1.
        ulp = mpmath.mpf(float(np.spacing(float(exact))))
        worst = max(worst, float(abs(mpmath.mpf(float(gi)) - exact) / ulp))
    assert worst < 1.0


@pytest.mark.parametrize("build", BUILDS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nonpositive", [False, True])
def test_special_values_as_ieee(build, dtype, nonpositive):
    info = np.finfo(dtype)
    x = np.array([-np.inf, np.nan, 0.0, -0.0, -1e4, np.log(info.tiny) - 3,  # subnormal
                  np.log(info.smallest_subnormal) - 1, np.log(info.smallest_subnormal) + 0.1],
                 dtype=dtype)
    if not nonpositive:
        x = np.concatenate([x, np.array([np.inf, 1e4, np.log(info.max) * 1.001,
                                         np.log(info.max) * 0.999], dtype=dtype)])
    got = kernel_exp(build, x, nonpositive)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x)
    # Subnormal results carry fewer digits: compare in units of the smallest subnormal there.
    tiny = np.abs(want) < info.tiny
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    assert np.all(np.abs(got[tiny] - want[tiny]) <= 2 * info.smallest_subnormal)
    finite = ~tiny & np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=4 * info.eps)
