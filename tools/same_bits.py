"""Check that a kernel change keeps every output bit: save the outputs of the five functions
with one build, then compare another build's with them (docs/performance.md, session 11).

Saves, per dtype and shape (class counts from 7 to 70000, a -inf logit in each), the results
of logsumexp, softmax, log_softmax and cross_entropy_with_grad (loss and gradient: per row
with label smoothing 0.1; and the mean without smoothing, every fifth row ignored, the
kernels' path without beta since session 17): 84 arrays. Bit for bit: -0 differs from +0;
a NaN matches any NaN (its sign is the arithmetic's choice of operand). Compare under the
same FASTXENT_ISA: the ISA builds differ from each other in the last bits (FMA), by design.

Usage::

    FASTXENT_ISA=avx2 PYTHONPATH=/tmp/old python tools/same_bits.py save /tmp/old.npz
    FASTXENT_ISA=avx2 python tools/same_bits.py compare /tmp/old.npz
"""
import argparse
import sys

import numpy as np

import fastxent

SHAPES = [(64, 7), (50, 16), (33, 100), (17, 1000), (9, 5000), (3, 70000)]


def outputs(seed=3):
    """``{name: array}`` of the five functions' results on seeded logits."""
    rng = np.random.default_rng(seed)
    out = {}
    for dtype in (np.float32, np.float64):
        for shape in SHAPES:
            x = (rng.standard_normal(shape) * 4).astype(dtype)
            x[0, 1] = -np.inf
            labels = rng.integers(0, shape[1], shape[0])
            key = f"{np.dtype(dtype).name} {shape[0]}x{shape[1]} "
            out[key + "logsumexp"] = fastxent.logsumexp(x, axis=1)
            out[key + "softmax"] = fastxent.softmax(x, axis=1)
            out[key + "log_softmax"] = fastxent.log_softmax(x, axis=1)
            loss, grad = fastxent.cross_entropy_with_grad(x, labels, reduction="none",
                                                          label_smoothing=0.1)
            out[key + "loss"], out[key + "grad"] = loss, grad
            ignored = labels.copy()
            ignored[::5] = -100
            loss, grad = fastxent.cross_entropy_with_grad(x, ignored)
            out[key + "mean loss"], out[key + "mean grad"] = np.asarray(loss), grad
    return out


def same_bits(a, b):
    """Whether ``a`` and ``b`` hold the same bits, but for the signs and payloads of NaNs."""
    nan = np.isnan(a)
    return (a.dtype == b.dtype and a.shape == b.shape and np.array_equal(nan, np.isnan(b))
            and a[~nan].tobytes() == b[~nan].tobytes())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["save", "compare"])
    parser.add_argument("file", help="the .npz of saved outputs")
    args = parser.parse_args(argv)
    got = outputs()
    print(f"fastxent from {fastxent.__file__}, ISA {fastxent.active_isa()}")
    if args.mode == "save":
        np.savez(args.file, **got)
        print(f"saved {len(got)} arrays to {args.file}")
        return 0
    saved = np.load(args.file)
    differ = [k for k in saved.files if not same_bits(saved[k], got[k])]
    print(f"{len(differ)} of {len(saved.files)} arrays differ" + (": " if differ else ""))
    for k in differ:
        print("  " + k)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
