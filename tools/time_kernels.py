"""Time fastxent's kernel drivers against each other, for kernel work (not a user benchmark).

The A/B measurements of docs/performance.md (v6) were made this way: the drivers of
``fastxent._kernels_*`` called directly (no validation, no allocation), interleaved in one
process, the minimum over rounds of the mean of a few calls, on one thread. Rebuild, run again,
compare the columns; absolute times drift by tens of percent on a shared VM, ratios within one
run do not.

Usage::

    python tools/time_kernels.py                    # float32, C = 100 and 1000, 1.6M elements
    python tools/time_kernels.py --classes 10,100 --dtype float64 --rounds 9
    FASTXENT_ISA=avx2 python tools/time_kernels.py  # another build

``--denormal-flag`` also reports, per kernel, whether a call raised the x86 MXCSR
denormal-operand flag (DE). It needs a C compiler: a three-line helper is built in a temporary
directory. A DE flag on normal inputs means some lanes computed on subnormal garbage, which is
how the masked-tail trap of v6 was found.
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import timeit

import numpy as np

from fastxent._dispatch import kernel

_MXCSR_C = """
#include <xmmintrin.h>
unsigned fx_get_csr(void) { return _mm_getcsr(); }
void fx_set_csr(unsigned v) { _mm_setcsr(v); }
"""


def kernel_calls(n_rows, n_classes, dtype, seed=0):
    """``{name: zero-argument call}`` of the row drivers on standard-normal logits."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n_classes)).astype(dtype)
    labels = rng.integers(0, n_classes, n_rows)
    out, loss, lse = np.empty_like(x), np.empty(n_rows), np.empty(n_rows, dtype)
    xent = kernel("xent_index_rows", dtype)
    return {
        "logsumexp": lambda: kernel("logsumexp_rows", dtype)(x, lse, 1),
        "softmax": lambda: kernel("softmax_rows", dtype)(x, out, 1),
        "log_softmax": lambda: kernel("log_softmax_rows", dtype)(x, out, 1),
        "cross_entropy": lambda: xent(x, labels, None, -100, 0.0, loss, None, None, 1.0, 1),
        "ce_grad": lambda: xent(x, labels, None, -100, 0.0, loss, out, None, 1.0, 1),
    }


def best_times(calls, rounds, number):
    """Milliseconds per call: the minimum over ``rounds`` interleaved rounds."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            t = timeit.timeit(call, number=number) / number
            best[name] = min(best[name], t * 1e3)
    return best


def load_mxcsr():
    """ctypes access to MXCSR (x86 only), or None when no compiler is at hand."""
    tmp = tempfile.mkdtemp()
    src, lib = os.path.join(tmp, "mxcsr.c"), os.path.join(tmp, "libmxcsr.so")
    with open(src, "w") as fh:
        fh.write(_MXCSR_C)
    try:
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", src, "-o", lib], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    dll = ctypes.CDLL(lib)
    dll.fx_get_csr.restype = ctypes.c_uint
    return dll


def raises_denormal_flag(call, mxcsr):
    """Whether one call sets MXCSR's denormal-operand flag (bit 1) on this thread."""
    saved = mxcsr.fx_get_csr()
    mxcsr.fx_set_csr(saved & ~0x3F)         # clear the sticky exception flags
    call()
    flags = mxcsr.fx_get_csr() & 0x3F
    mxcsr.fx_set_csr(saved)
    return bool(flags & 0x02)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="100,1000", help="class counts, comma separated")
    parser.add_argument("--elements", type=int, default=1_638_400, help="N x C per case")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=10, help="calls per sample")
    parser.add_argument("--denormal-flag", action="store_true")
    args = parser.parse_args(argv)
    mxcsr = load_mxcsr() if args.denormal_flag else None
    if args.denormal_flag and mxcsr is None:
        print("# no C compiler: --denormal-flag skipped", file=sys.stderr)
    for c in (int(v) for v in args.classes.split(",")):
        calls = kernel_calls(max(1, args.elements // c), c, np.dtype(args.dtype))
        times = best_times(calls, args.rounds, args.number)
        line = " ".join(f"{name} {ms:.3f}" for name, ms in times.items())
        print(f"C={c} {args.dtype} ms: {line}")
        if mxcsr is not None:
            flagged = [name for name, call in calls.items() if raises_denormal_flag(call, mxcsr)]
            print(f"C={c} {args.dtype} denormal flag raised by: {', '.join(flagged) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
