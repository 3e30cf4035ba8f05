"""Streamed against in-place long rows by output size, for the threshold ``stream_min_bytes``
(src/fx_streamops.h; docs/performance.md, session 16).

Times the loss-gradient kernel driver on rows of 32000 classes, 32 to 1024 of them, with
every eligible output streamed (``set_stream_min_bytes(0)``) and with none, alternately in
one process; prints in-place / streamed (above 1: streaming faster), median and minimum of
``--rounds`` rounds. Usage::

    python tools/stream_threshold.py [--rows 32,64,128,256,512,1024] [--rounds 15]
"""
import argparse
import os
import statistics
import sys
import timeit

import numpy as np

from fastxent._dispatch import kernels

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from time_kernels import kernel_calls  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="32,64,128,256,512,1024")
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    previous = kernels.set_stream_min_bytes(0)
    try:
        for dtype in (np.float64, np.float32):
            for n in (int(v) for v in args.rows.split(",")):
                for threads in (2, 1):
                    call = kernel_calls(n, args.classes, np.dtype(dtype), threads=threads)["ce_grad"]
                    number = max(2, int(2e8 / (n * args.classes * 8)))
                    streamed, plain = [], []
                    for _ in range(args.rounds):
                        kernels.set_stream_min_bytes(0)
                        streamed.append(timeit.timeit(call, number=number) / number)
                        kernels.set_stream_min_bytes(1 << 62)
                        plain.append(timeit.timeit(call, number=number) / number)
                    mib = n * args.classes * np.dtype(dtype).itemsize / 2**20
                    print(f"{np.dtype(dtype).name} {n}x{args.classes} ({mib:.0f} MiB) "
                          f"T={threads}: in place / streamed, median "
                          f"{statistics.median(plain) / statistics.median(streamed):.2f}x, "
                          f"min {min(plain) / min(streamed):.2f}x", flush=True)
    finally:
        kernels.set_stream_min_bytes(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
