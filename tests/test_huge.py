"""Huge arrays: row offsets past 2^31 elements (and past 2^31 and 2^32 bytes) must be right.

A float32 array of 65536 x 32769 = 2,147,549,184 elements (8.6 GB; the last two rows start
past element 2^31, rows from 16384 on past byte 2^31, from 32768 on past byte 2^32). Each row
holds standard normal values plus ``row * 1e-3``, so reading any other row than the right one
changes the result by far more than the tolerance. Checked:

* ``logsumexp``: all 65536 values against float64 ones computed in chunks of rows;
* ``cross_entropy(reduction="none")`` and ``"mean"`` with a label per row (some ignored);
* ``cross_entropy_with_grad(..., out=x)`` (the gradient written over the logits, the write path
  past 2^31): the loss, and the gradient of sampled rows (those around each boundary and 64
  at random), against float64 values computed from those rows beforehand.

Marked ``slow`` and skipped unless selected: ``pytest -m slow tests/test_huge.py`` (or
``FASTXENT_RUN_SLOW=1``). It needs about 9 GB of free memory and a few minutes on 2 cores;
the figures of the run on the project machine are in docs/reliability.md.
"""
import math
import os
import time

import numpy as np
import pytest

import fastxent
from fastxent import _reference as ref

pytestmark = pytest.mark.slow

N_ROWS, N_CLASSES = 65536, 32769
CHUNK = 1024  # rows per chunk for filling and for the float64 reference
U32 = 2.0 ** -24


@pytest.fixture(autouse=True)
def _only_when_selected(request):
    markexpr = request.config.option.markexpr or ""
    if "slow" not in markexpr and os.environ.get("FASTXENT_RUN_SLOW") != "1":
        pytest.skip("slow: run with -m slow (needs ~9 GB of memory)")


def _available_bytes():
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def _sample_rows(rng):
    edges = []
    for boundary in (2**29, 2**30, 2**31):  # element indices: byte 2^31, byte 2^32, element 2^31
        r = boundary // N_CLASSES
        edges += [r - 1, r, r + 1]
    edges += [0, 1, N_ROWS - 3, N_ROWS - 2, N_ROWS - 1]
    rows = set(r for r in edges if 0 <= r < N_ROWS) | set(rng.integers(0, N_ROWS, 64).tolist())
    return np.array(sorted(rows))


def test_huge_rows_past_2_31_elements():
    assert N_ROWS * N_CLASSES > 2**31
    nbytes = N_ROWS * N_CLASSES * 4
    if _available_bytes() < nbytes + (1 << 30):
        pytest.skip(f"needs {nbytes / 1e9:.1f} GB of free memory")
    times = {}
    rng = np.random.default_rng(20261122)

    t0 = time.perf_counter()
    x = np.empty((N_ROWS, N_CLASSES), np.float32)
    offsets = (np.arange(N_ROWS) * 1e-3).astype(np.float32)
    for r0 in range(0, N_ROWS, CHUNK):
        block = x[r0:r0 + CHUNK]
        rng.standard_normal(out=block, dtype=np.float32)
        block += offsets[r0:r0 + CHUNK, None]
    labels = rng.integers(0, N_CLASSES, N_ROWS)
    labels[::97] = -100
    labels[N_ROWS - 1] = N_CLASSES - 1
    labels[N_ROWS - 2] = 0
    times["fill"] = time.perf_counter() - t0

    # The float64 reference, a chunk of rows at a time.
    t0 = time.perf_counter()
    lse_ref = np.empty(N_ROWS)
    for r0 in range(0, N_ROWS, CHUNK):
        lse_ref[r0:r0 + CHUNK] = ref.logsumexp(x[r0:r0 + CHUNK].astype(np.float64), axis=1)
    valid = labels != -100
    rows = np.arange(N_ROWS)
    loss_ref = np.where(valid, lse_ref - x[rows, np.where(valid, labels, 0)].astype(np.float64),
                        0.0)
    sample = _sample_rows(rng)
    sample_x = x[sample].astype(np.float64)
    times["reference"] = time.perf_counter() - t0

    # Bounds (tests/test_fuzz.py): |d lse| <= 2 E_lse, plus one float32 ulp of the result.
    e_lse = U32 * (math.log(N_CLASSES + 1) + 16) + 2.0**-53 * (N_CLASSES + 16)

    t0 = time.perf_counter()
    lse = fastxent.logsumexp(x)
    times["logsumexp"] = time.perf_counter() - t0
    assert lse.shape == (N_ROWS,) and lse.dtype == np.float32
    err = np.abs(lse.astype(np.float64) - lse_ref)
    bound = 2 * e_lse + np.spacing(np.abs(lse))
    assert np.all(err <= bound), (
        f"logsumexp: {int(np.sum(err > bound))} rows off; worst row {int(np.argmax(err))} "
        f"err {err.max():.3e}")
    # A wrong row would be off by >= 1e-3 (the row offsets).
    assert err.max() < 1e-4

    t0 = time.perf_counter()
    loss = fastxent.cross_entropy(x, labels, reduction="none")
    times["cross_entropy(none)"] = time.perf_counter() - t0
    err = np.abs(loss.astype(np.float64) - loss_ref)
    bound = 2 * e_lse + np.spacing(np.abs(loss)) + 2 * np.spacing(np.float32(100))
    assert np.all(err <= bound), (
        f"cross_entropy: {int(np.sum(err > bound))} rows off; worst row {int(np.argmax(err))}")
    assert np.all(loss[~valid] == 0)

    t0 = time.perf_counter()
    mean = fastxent.cross_entropy(x, labels)
    times["cross_entropy(mean)"] = time.perf_counter() - t0
    mean_ref = loss_ref.sum() / valid.sum()
    assert abs(float(mean) - mean_ref) <= 4 * e_lse + 2 * np.spacing(np.float32(mean_ref))

    # The gradient over the logits: the write path past 2^31.
    t0 = time.perf_counter()
    total, grad = fastxent.cross_entropy_with_grad(x, labels, reduction="sum", out=x)
    times["cross_entropy_with_grad(sum, out=x)"] = time.perf_counter() - t0
    assert grad is x
    assert abs(float(total) - loss_ref.sum()) <= 1e-6 * loss_ref.sum()
    p = ref.softmax(sample_x, axis=1)
    want = p.copy()
    sv = valid[sample]
    want[np.arange(len(sample))[sv], labels[sample][sv]] -= 1.0
    want[~sv] = 0.0
    d = np.abs(sample_x - sample_x.max(axis=1, keepdims=True))
    gbound = 2 * (p * (U32 * (d + 12) + e_lse) + 2 * 1.2e-38) + 4 * U32 + \
        np.spacing(np.abs(want).astype(np.float32))
    gerr = np.abs(x[sample].astype(np.float64) - want)
    assert np.all(gerr <= gbound), (
        f"gradient: rows {sample[np.any(gerr > gbound, axis=1)][:10].tolist()} off")

    report = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    print(f"\nhuge: {N_ROWS} x {N_CLASSES} float32 ({nbytes / 1e9:.2f} GB, "
          f"{N_ROWS * N_CLASSES} elements); {report}; logsumexp max err "
          f"{np.max(np.abs(lse.astype(np.float64) - lse_ref)):.2e}, sampled rows "
          f"{len(sample)}, gradient max err {gerr.max():.2e}")
