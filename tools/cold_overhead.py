"""What a public call costs beyond its kernel when the caches are cold (docs/performance.md,
session 14).

After a kernel over a few megabytes (65536 x 10 floats in and out) the interpreter's and
NumPy's own data are out of L1 and L2, and the Python bookkeeping of the next call runs from
L3: 100-120 us for the loss with its gradient here, against 20-30 us with warm caches
(``tools/api_overhead.py``), a seventh of that whole call. This tool measures that cost
alone: each sample copies 8 MiB (which evicts L2, as such a kernel does), then times one call
on 16 x 10 logits, whose kernel work is negligible. Medians of ``--samples`` samples per
function, the functions interleaved; with ``--against DIR``, the public functions of the
fastxent package in DIR are timed the same way in a second process, alternately with this
one, for A/B of a change to the Python layer. Usage::

    python tools/cold_overhead.py [--samples 2000] [--against /tmp/base] [--runs 2]

The floor for comparison: a call of the loss kernel driver alone with the output allocated,
and the minimum around it (the label check, the kernel, the sum of its block sums). Last, in
situ: the public loss with gradient on 65536 x 10 float32 logits, one call per sample (the
call evicts the caches itself), against its kernel driver alone writing a pre-allocated
gradient, and against the label check followed by that kernel call.
"""
import argparse
import json
import os
import subprocess
import sys


def measure(samples):
    """``{name: median microseconds}`` of each call, after an L2-evicting copy each."""
    import time

    import numpy as np

    import fastxent
    from fastxent._dispatch import kernel, kernels

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 10)).astype(np.float32)
    t = rng.integers(0, 10, 16)
    src = np.ones(1 << 21, np.float32)      # 8 MiB: four times this machine's L2
    dst = np.empty_like(src)
    xent = kernel("xent_index_rows", x.dtype)

    def loss_kernel_alone():
        return xent(x, t, None, -100, 0.0, None, np.empty_like(x), None, 1.0 / len(x), 1)

    def loss_minimum():
        bad, total = kernels.check_labels(t, x.shape[1], -100, None)
        sums = xent(x, t, None, -100, 0.0, None, np.empty_like(x), None, 1.0 / total, 1)
        return (kernels.total(sums) if hasattr(kernels, "total") else float(sums.sum())) / total

    fns = {
        "cross_entropy_with_grad": lambda: fastxent.cross_entropy_with_grad(x, t, n_threads=1),
        "cross_entropy": lambda: fastxent.cross_entropy(x, t, n_threads=1),
        "softmax": lambda: fastxent.softmax(x, n_threads=1),
        "logsumexp": lambda: fastxent.logsumexp(x, n_threads=1),
        "loss kernel alone": loss_kernel_alone,
        "loss minimum": loss_minimum,
    }
    times = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            np.copyto(dst, src)
            t0 = time.perf_counter_ns()
            fn()
            times[name].append(time.perf_counter_ns() - t0)
    # In situ: the public loss with gradient on 65536 x 10 float32 (which evicts the caches
    # itself) against its kernel driver alone, one call per sample.
    big = rng.standard_normal((65536, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 65536)
    grad = np.empty_like(big)
    situ = {
        "65536x10 public": lambda: fastxent.cross_entropy_with_grad(big, labels, n_threads=1),
        "65536x10 kernel alone": lambda: xent(big, labels, None, -100, 0.0, None, grad, None,
                                              1.0 / len(big), 1),
        # what fusing the label check into the kernel could save at most (session 15)
        "65536x10 label check + kernel": lambda: (
            kernels.check_labels(labels, 10, -100, None),
            xent(big, labels, None, -100, 0.0, None, grad, None, 1.0 / len(big), 1)),
    }
    times.update({name: [] for name in situ})
    for _ in range(max(1, samples // 5)):
        for name, fn in situ.items():
            t0 = time.perf_counter_ns()
            fn()
            times[name].append(time.perf_counter_ns() - t0)
    return {name: float(np.median(v)) / 1e3 for name, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--against", metavar="DIR",
                        help="a directory holding another fastxent package, timed alternately")
    parser.add_argument("--runs", type=int, default=1, help="alternating runs with --against")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.samples)))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = [("current", here)] + ([("other", os.path.abspath(args.against))]
                                   if args.against else [])
    for run in range(args.runs if args.against else 1):
        results = {}
        for label, path in sides:
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                  "--samples", str(args.samples)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            results[label] = json.loads(out)
        names = list(results["current"])
        if len(sides) == 1:
            print("cold-cache call, us (median): " + ", ".join(
                f"{n} {results['current'][n]:.1f}" for n in names))
        else:
            print(f"run {run + 1}, cold-cache call, us current/other: " + ", ".join(
                f"{n} {results['current'][n]:.1f}/{results['other'][n]:.1f}" for n in names))


if __name__ == "__main__":
    main()
