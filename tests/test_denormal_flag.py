"""The kernels compute on no subnormal garbage (docs/performance.md, v6: the subnormal trap).

A masked last chunk that left stale register lanes in the arithmetic raised the x86 MXCSR
denormal-operand flag on normal inputs and cost each row a microcode assist; results were right,
so only this flag shows it. Checked on the active build, for class counts that are and are not
multiples of the 16-element chunk, through ``tools/time_kernels.py``.
"""
import importlib.util
import os
import platform

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "time_kernels", os.path.join(ROOT, "tools", "time_kernels.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool_and_mxcsr():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("MXCSR is x86")
    tool = _tool()
    mxcsr = tool.load_mxcsr()
    if mxcsr is None:
        pytest.skip("needs a C compiler for the MXCSR helper")
    return tool, mxcsr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_classes", [3, 10, 15, 40, 96, 100, 1000])
def test_no_kernel_raises_the_denormal_flag(tool_and_mxcsr, dtype, n_classes):
    tool, mxcsr = tool_and_mxcsr
    calls = tool.kernel_calls(64, n_classes, np.dtype(dtype))
    flagged = [name for name, call in calls.items() if tool.raises_denormal_flag(call, mxcsr)]
    assert flagged == []


def test_the_flag_is_seen(tool_and_mxcsr):
    """The check can fail: a subnormal operand in NumPy's own arithmetic raises the flag."""
    tool, mxcsr = tool_and_mxcsr
    tiny = np.full(64, 1e-310)
    assert tool.raises_denormal_flag(lambda: np.multiply(tiny, 2.0), mxcsr)
