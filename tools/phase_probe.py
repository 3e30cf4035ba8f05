"""How the host's slow phases hit fastxent and the peers (docs/performance.md, session 15).

On this shared VM the same kernel call takes 0.75 ms for some seconds and 1.2 ms for the next
few, and the bench's cells at 16384 x 100 float32 flip between runs. This tool alternates, in
rounds a fraction of a second apart, one-thread workloads of different kinds:

* ``fastxent``: logsumexp of 16384 x 100 float32, bound by vector instruction issue (two
  512-bit ports, docs/performance.md, session 7);
* ``sgemm``: NumPy's 256 x 256 float32 matrix product, also bound by issue (FMAs), through
  whatever BLAS NumPy has, limited to one thread by threadpoolctl when it is installed (set
  ``OPENBLAS_NUM_THREADS=1`` otherwise);
* ``max``: NumPy's ``x.max()`` over 64 MiB, bound by memory;
* ``torch``: PyTorch's logsumexp of the same 16384 x 100 float32 on one thread, the bench's
  peer for that cell, when PyTorch imports.

A round is called slow when fastxent's time in it is at least ``--slow`` times its fastest
round. The tool prints each workload's median time over the fast rounds and over the slow
ones, and their ratio: how much a slow phase costs each kind of code. Usage::

    OPENBLAS_NUM_THREADS=1 python tools/phase_probe.py [--rounds 80] [--slow 1.25]
"""
import argparse
import time

import numpy as np

import fastxent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--slow", type=float, default=1.25,
                        help="a round is slow when fastxent takes this many times its best")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between rounds")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16384, 100)).astype(np.float32)
    lse = np.empty(16384, np.float32)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    big = rng.standard_normal(64 << 18).astype(np.float32)      # 64 MiB

    workloads = {
        "fastxent": (lambda: fastxent.logsumexp(x, axis=1, n_threads=1, out=lse), 20),
        "sgemm": (lambda: a @ a, 20),
        "max": (lambda: big.max(), 2),
    }
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(1)
        xt = torch.from_numpy(x)
        workloads["torch"] = (lambda: torch.logsumexp(xt, dim=1), 20)
    times = {name: [] for name in workloads}
    for _ in range(args.rounds):
        for name, (call, number) in workloads.items():
            call()
            t0 = time.perf_counter()
            for _ in range(number):
                call()
            times[name].append((time.perf_counter() - t0) / number * 1e3)
        time.sleep(args.pause)

    ours = np.array(times["fastxent"])
    slow = ours >= args.slow * ours.min()
    print(f"{int(slow.sum())} slow rounds of {args.rounds} (fastxent >= {args.slow} x its best)")
    print(f"{'workload':10s} {'fast ms':>9s} {'slow ms':>9s} {'slow/fast':>9s}")
    for name, values in times.items():
        values = np.array(values)
        if slow.all() or not slow.any():
            print(f"{name:10s} {np.median(values):9.3f} {'-':>9s} {'-':>9s}")
            continue
        fast_ms, slow_ms = np.median(values[~slow]), np.median(values[slow])
        print(f"{name:10s} {fast_ms:9.3f} {slow_ms:9.3f} {slow_ms / fast_ms:9.2f}")


if __name__ == "__main__":
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        main()
    else:
        with threadpool_limits(1):
            main()
