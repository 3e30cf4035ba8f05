"""Time fastxent's kernel drivers against each other, for kernel work (not a user benchmark).

The A/B measurements of docs/performance.md (v6) were made this way: the drivers of
``fastxent._kernels_*`` called directly (no validation, no allocation), interleaved in one
process, the minimum over rounds of the mean of a few calls, on one thread (``--threads``). Rebuild, run again,
compare the columns; absolute times drift by tens of percent on a shared VM, ratios within one
run do not.

Usage::

    python tools/time_kernels.py                    # float32, C = 100 and 1000, 1.6M elements
    python tools/time_kernels.py --classes 10,100 --dtype float64 --rounds 9
    FASTXENT_ISA=avx2 python tools/time_kernels.py  # another build
    python tools/time_kernels.py --against fastxent --other-isa avx2    # ISA against ISA
    python tools/time_kernels.py --ops softmax_backward,log_softmax_backward --classes 10,100

``--against DIR`` times a second build in the same process, interleaved with the current one:
the kernel modules (``_kernels_*.so``) of another checkout's build, e.g. the previous commit's,
built with ``python setup.py build_ext --build-lib DIR``. Each name then gets two columns, the
ratio is other / current. On a shared machine this is the only comparison worth quoting.

``--kernel-shape blocks`` (or ``rows``) forces one kernel shape for every class count, to
compare the two around the block thresholds (``set_block_max_classes``).

``--denormal-flag`` also reports, per kernel, whether a call raised the x86 MXCSR
denormal-operand flag (DE). It needs a C compiler: a three-line helper is built in a temporary
directory. A DE flag on normal inputs means some lanes computed on subnormal garbage, which is
how the masked-tail trap of v6 was found.
"""
import argparse
import ctypes
import importlib.util
import os
import subprocess
import sys
import tempfile
import timeit

import numpy as np

from fastxent import _dispatch
from fastxent._dispatch import kernel

_MXCSR_C = """
#include <xmmintrin.h>
unsigned fx_get_csr(void) { return _mm_getcsr(); }
void fx_set_csr(unsigned v) { _mm_setcsr(v); }
"""


def load_other_build(directory, isa=None):
    """The kernel module of the build in ``directory`` for ``isa`` (default: the ISA in use),
    searched recursively for ``_kernels_<isa>*.so``, loaded beside fastxent's own."""
    stem = f"_kernels_{isa or _dispatch.ACTIVE}"
    for root, _, files in os.walk(directory):
        for name in files:
            if name.startswith(stem + ".") and name.endswith((".so", ".pyd")):
                spec = importlib.util.spec_from_file_location(
                    f"fastxent_other.{stem}", os.path.join(root, name))
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    raise SystemExit(f"no {stem}*.so under {directory}")


def kernel_calls(n_rows, n_classes, dtype, module=None, seed=0, threads=1):
    """``{name: zero-argument call}`` of the row drivers on standard-normal logits; the
    drivers of ``module`` (a kernel module) instead of the build in use when given."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n_classes)).astype(dtype)
    labels = rng.integers(0, n_classes, n_rows)
    out, loss, lse = np.empty_like(x), np.empty(n_rows), np.empty(n_rows, dtype)

    def get(name):
        if module is None:
            return kernel(name, dtype)
        return getattr(module, name).__signatures__["float" if dtype.char == "f" else "double"]

    lse_rows, softmax_rows = get("logsumexp_rows"), get("softmax_rows")
    log_softmax_rows, xent = get("log_softmax_rows"), get("xent_index_rows")
    softmax_bw, log_softmax_bw = get("softmax_backward_rows"), get("log_softmax_backward_rows")
    g = rng.standard_normal((n_rows, n_classes)).astype(dtype)    # backward ops' inputs
    lse_bw, g_row = get("logsumexp_backward_rows"), g[:, 0].copy()
    y = rng.random((n_rows, n_classes)).astype(dtype)
    t = threads
    # Builds since session 8 sum the losses of a reduced loss per block and return the sums,
    # writing no per-row losses when given None (as cross_entropy(reduction='mean') calls
    # them); older builds return None and need the per-row array. One call tells them apart.
    rows_loss = None
    if module is not None and get("xent_index_rows")(
            x, labels, None, -100, 0.0, loss, None, None, 1.0, 1) is None:
        rows_loss = loss
    return {
        "logsumexp": lambda: lse_rows(x, lse, t),
        "softmax": lambda: softmax_rows(x, out, t),
        "log_softmax": lambda: log_softmax_rows(x, out, t),
        "cross_entropy": lambda: xent(x, labels, None, -100, 0.0, rows_loss, None, None, 1.0, t),
        "ce_grad": lambda: xent(x, labels, None, -100, 0.0, rows_loss, out, None, 1.0, t),
        "softmax_backward": lambda: softmax_bw(g, y, out, t),
        "log_softmax_backward": lambda: log_softmax_bw(g, y, out, t),
        "logsumexp_backward": lambda: lse_bw(g_row, x, None, out, t),
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
    parser.add_argument("--against", metavar="DIR", help="another build to time alongside")
    parser.add_argument("--other-isa", metavar="ISA",
                        help="with --against: that build's module for this ISA (baseline, avx2, "
                             "avx512), e.g. --against fastxent --other-isa avx2")
    parser.add_argument("--ops", default="logsumexp,softmax,log_softmax,cross_entropy,ce_grad",
                        help="drivers to time, comma separated; also softmax_backward, "
                             "log_softmax_backward")
    parser.add_argument("--threads", type=int, default=1, help="n_threads of every call")
    parser.add_argument("--kernel-shape", choices=["auto", "blocks", "rows"], default="auto",
                        help="force block kernels (every C <= 128) or row kernels")
    args = parser.parse_args(argv)
    if args.kernel_shape != "auto":
        limit = 128 if args.kernel_shape == "blocks" else 0
        _dispatch.kernels.set_block_max_classes(limit, limit)
        if args.against:
            raise SystemExit("--kernel-shape applies to the build in use only, not --against")
    mxcsr = load_mxcsr() if args.denormal_flag else None
    if args.denormal_flag and mxcsr is None:
        print("# no C compiler: --denormal-flag skipped", file=sys.stderr)
    other = load_other_build(args.against, args.other_isa) if args.against else None
    ops = args.ops.split(",")
    for c in (int(v) for v in args.classes.split(",")):
        n_rows, dtype = max(1, args.elements // c), np.dtype(args.dtype)
        calls = {k: v for k, v in kernel_calls(n_rows, c, dtype, threads=args.threads).items()
                 if k in ops}
        if other is None:
            times = best_times(calls, args.rounds, args.number)
            line = " ".join(f"{name} {ms:.3f}" for name, ms in times.items())
            print(f"C={c} {args.dtype} ms: {line}")
        else:
            both = dict(calls)
            both.update({"other " + name: call
                         for name, call in kernel_calls(n_rows, c, dtype, other,
                                                           threads=args.threads).items()
                         if name in ops})
            times = best_times(both, args.rounds, args.number)
            line = " ".join(f"{name} {times[name]:.3f}/{times['other ' + name]:.3f}"
                            f" ({times['other ' + name] / times[name]:.2f}x)" for name in calls)
            print(f"C={c} {args.dtype} ms current/other (other/current): {line}")
        if mxcsr is not None:
            flagged = [name for name, call in calls.items() if raises_denormal_flag(call, mxcsr)]
            print(f"C={c} {args.dtype} denormal flag raised by: {', '.join(flagged) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
