"""What reusing dropped results saves: allocating calls with the buffer cache on and off.

The figure of docs/performance.md (v8, item 1) and of the README's memory note comes from this:
``cross_entropy_with_grad`` and ``softmax`` allocating their results, the default cache against
``fastxent.set_buffer_cache(0)``, the two settings interleaved round by round in one process;
each sample is ``--number`` calls after an untimed one, the figure the median of ``--repeat``
samples.

Usage::

    python tools/buffer_reuse.py                       # 1024 x 32000 float32, one thread
    python tools/buffer_reuse.py --shape 256x131072 --dtype float64 --threads 2
"""
import argparse
import functools
import statistics
import time

import fastxent
from fastxent import _bench


def timed(call, number):
    """Seconds per call of ``call()`` over ``number`` calls, after one untimed call (which
    fills the cache when it is on)."""
    call()
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) / number


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1024x32000")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=5, help="timed calls per sample")
    args = parser.parse_args()
    n, c = (int(v) for v in args.shape.split("x"))
    data = _bench.Data(n, c, args.dtype)
    x, t = data.x, data.t
    calls = {
        "cross_entropy_with_grad": functools.partial(fastxent.cross_entropy_with_grad, x, t,
                                                     n_threads=args.threads),
        "softmax": functools.partial(fastxent.softmax, x, n_threads=args.threads),
    }
    default = fastxent.set_buffer_cache(0)
    samples = {(name, on): [] for name in calls for on in (True, False)}
    try:
        for _ in range(args.repeat):             # the two settings interleaved, round by round
            for on in (True, False):
                fastxent.set_buffer_cache(default if on else 0)
                for name, call in calls.items():
                    samples[name, on].append(timed(call, args.number))
    finally:
        fastxent.set_buffer_cache(default)
    times = {key: statistics.median(v) for key, v in samples.items()}
    print(f"# {n}x{c} {args.dtype}, {args.threads} thread(s): ms per allocating call, "
          f"medians of {args.repeat} interleaved samples")
    for name in calls:
        fresh, reused = times[name, False], times[name, True]
        print(f"{name:<26} fresh {1e3 * fresh:8.2f}  reused {1e3 * reused:8.2f}  "
              f"({fresh / reused:.2f}x)")


if __name__ == "__main__":
    main()
