"""Every kernel build this machine runs (FASTXENT_ISA), each in its own interpreter.

The build is chosen once at import, so each instruction set gets a subprocess that sets
FASTXENT_ISA, checks ``fastxent.active_isa()`` and compares a few results against the slow
twin (which is pure NumPy, the same in every build).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastxent
from fastxent import _dispatch

if not hasattr(fastxent, "available_isas"):
    pytest.skip("this build has no ISA variants (fastxent.available_isas)",
                allow_module_level=True)

CHECK = textwrap.dedent("""
    import json, warnings
    warnings.simplefilter("error")
    import numpy as np
    import fastxent
    from fastxent import _reference as ref

    def err(got, want):
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN positions differ"
        fin = np.isfinite(want)
        assert np.array_equal(got[~fin], want[~fin], equal_nan=True), "infinities differ"
        scale = max(1.0, float(np.max(np.abs(want[fin]), initial=0.0)))
        return float(np.max(np.abs(got[fin] - want[fin]) / (np.abs(want[fin]) + scale),
                            initial=0.0))

    rng = np.random.default_rng(7)
    errors = {}
    for dtype in (np.float32, np.float64):
        # Odd sizes exercise the vector loops' remainders; a long row crosses blocks.
        for shape in [(37, 1), (29, 13), (5, 257), (3, 5000)]:
            x = (rng.standard_normal(shape) * 5).astype(dtype)
            x[0, 0] = -np.inf
            if shape[1] > 2:
                x[1, 1] = 60.0
            t = rng.integers(0, shape[1], size=shape[0])
            t[2] = -100
            g = rng.standard_normal(shape).astype(dtype)
            key = f"{np.dtype(dtype).name} {shape}"
            y = fastxent.softmax(x)
            ly = fastxent.log_softmax(x)
            loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction="none",
                                                          label_smoothing=0.1)
            want_loss, want_grad = ref.cross_entropy_with_grad(x, t, reduction="none",
                                                               label_smoothing=0.1)
            errors[key] = max(
                err(fastxent.logsumexp(x), ref.logsumexp(x)),
                err(y, ref.softmax(x)),
                err(ly, ref.log_softmax(x)),
                err(fastxent.softmax_backward(g, y), ref.softmax_backward(g, y)),
                err(fastxent.log_softmax_backward(g, ly), ref.log_softmax_backward(g, ly)),
                err(fastxent.logsumexp_backward(g[:, 0], x), ref.logsumexp_backward(g[:, 0], x)),
                err(loss, want_loss),
                err(grad, want_grad),
            )
    print(json.dumps({"active": fastxent.active_isa(),
                      "available": fastxent.available_isas(),
                      "errors": errors}))
""")

# Relative tolerances as in tests/conftest.py (RTOL): float32 1e-5, float64 1e-12.
RTOL = {"float32": 1e-5, "float64": 1e-12}

# The subprocesses import the same fastxent as this process (an in-place build included).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastxent.__file__)))


def _env(**changes):
    env = dict(os.environ, **changes)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _run(isa):
    proc = subprocess.run([sys.executable, "-c", CHECK], env=_env(FASTXENT_ISA=isa),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no warning (e.g. an ISA refused)
    return json.loads(proc.stdout)


def test_available_isas_are_known_and_include_baseline():
    isas = fastxent.available_isas()
    assert isas, "no kernel build available"
    assert set(isas) <= {"baseline", "avx2", "avx512"}
    assert "baseline" in isas
    assert fastxent.active_isa() in isas
    assert len(set(isas)) == len(isas)


@pytest.mark.parametrize("isa", fastxent.available_isas())
def test_each_isa_matches_the_reference(isa):
    result = _run(isa)
    assert result["active"] == isa
    for key, err in result["errors"].items():
        dtype = key.split()[0]
        assert err <= RTOL[dtype], f"{isa} {key}: relative error {err:.3e}"


def test_default_is_the_best_available():
    env = _env()
    env.pop("FASTXENT_ISA", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import fastxent; print(fastxent.active_isa())"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == fastxent.available_isas()[0]


def test_unknown_isa_falls_back_with_a_warning():
    env = _env(FASTXENT_ISA="sse9000")
    proc = subprocess.run(
        [sys.executable, "-c", "import fastxent; print(fastxent.active_isa())"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == fastxent.available_isas()[0]
    assert "FASTXENT_ISA" in proc.stderr


@pytest.mark.parametrize("report, fast", [("Mitigation: Microcode\n", False),
                                          ("Not affected\n", True),
                                          ("Vulnerable\n", True), (None, True)])
def test_gathers_off_only_under_the_gds_microcode_mitigation(tmp_path, report, fast):
    path = tmp_path / "gather_data_sampling"
    if report is not None:
        path.write_text(report)
    assert _dispatch.gathers_are_fast(str(path)) is fast


def test_cpu_vendor_is_what_cpuinfo_says():
    vendor = _dispatch._baseline.cpu_vendor()
    assert isinstance(vendor, str)
    try:
        with open("/proc/cpuinfo") as fh:
            listed = {line.split(":", 1)[1].strip() for line in fh
                      if line.startswith("vendor_id")}
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if not listed:
        pytest.skip("/proc/cpuinfo names no vendor (not x86)")
    assert listed == {vendor}


def test_block_thresholds_follow_the_processor_maker():
    """At import, the thresholds of _dispatch.BLOCK_MAX_CLASSES for this maker, or the
    build's defaults; the same in every build, since each keeps its own."""
    code = textwrap.dedent("""
        import json, fastxent
        from fastxent import _dispatch
        k = _dispatch.kernels
        print(json.dumps([_dispatch._baseline.cpu_vendor(), k.set_block_max_classes(0, 0)]))
    """)
    for isa in fastxent.available_isas():
        proc = subprocess.run([sys.executable, "-c", code], env=_env(FASTXENT_ISA=isa),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        vendor, thresholds = json.loads(proc.stdout)
        defaults = [[56, 48], [40, 28]]
        expected = _dispatch.BLOCK_MAX_CLASSES.get(vendor, defaults)
        assert thresholds == [list(pair) for pair in expected]
