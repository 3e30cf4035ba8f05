"""Bad input: a ValueError or TypeError whose message names the argument; never a crash."""

import numpy as np
import pytest

import fastxent

from .conftest import CE_OPS, OPS, make_ce_target

X = np.arange(12.0).reshape(3, 4)

# (function, positional args builder, name of the array argument under test)
SINGLE_INPUT = [
    (fastxent.logsumexp, "x"),
    (fastxent.softmax, "x"),
    (fastxent.log_softmax, "x"),
    (fastxent.softmax_jacobian, "x"),
]


BAD_DTYPES = [
    np.ones((3, 4), dtype=np.complex128),
    np.ones((3, 4), dtype=np.complex64),
    np.array([[1, "a"], [None, 2.0]], dtype=object),
    np.array([["a", "b"], ["c", "d"]]),
    np.zeros((3, 4), dtype="datetime64[s]"),
]


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda a: str(a.dtype))
@pytest.mark.parametrize("f,name", SINGLE_INPUT, ids=lambda v: getattr(v, "__name__", v))
def test_bad_dtype_single_input(f, name, bad):
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        f(bad)


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda a: str(a.dtype))
def test_bad_dtype_backward(bad):
    good = np.ones(bad.shape)
    for f, names in [(fastxent.softmax_backward, ("grad_output", "output")),
                     (fastxent.log_softmax_backward, ("grad_output", "output"))]:
        with pytest.raises(TypeError, match=rf"\b{names[0]}\b"):
            f(bad, good)
        with pytest.raises(TypeError, match=rf"\b{names[1]}\b"):
            f(good, bad)
    with pytest.raises(TypeError, match=r"\bx\b"):
        fastxent.logsumexp_backward(np.ones(bad.shape[0]), bad)
    with pytest.raises(TypeError, match=r"\bgrad_output\b"):
        fastxent.logsumexp_backward(bad[:, 0], good)


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda a: str(a.dtype))
def test_bad_dtype_cross_entropy(bad):
    t = np.array([0, 1, 0])
    for f in (fastxent.cross_entropy, fastxent.cross_entropy_with_grad):
        with pytest.raises(TypeError, match=r"\blogits\b"):
            f(bad, t)
        with pytest.raises(TypeError, match=r"\btarget\b"):
            f(np.ones(bad.shape), bad)
        with pytest.raises(TypeError, match=r"\bweight\b"):
            f(np.ones(bad.shape), t[:bad.shape[0]] % bad.shape[1], weight=bad[0])


@pytest.mark.parametrize("f,name", SINGLE_INPUT, ids=lambda v: getattr(v, "__name__", v))
def test_zero_dimensional_input(f, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        f(np.float64(1.0))
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        f(np.array(1.0))


def test_zero_dimensional_logits():
    for f in (fastxent.cross_entropy, fastxent.cross_entropy_with_grad):
        with pytest.raises(ValueError, match=r"\blogits\b"):
            f(np.array(1.0), np.array(0))


@pytest.mark.parametrize("axis", [2, -3, 10])
@pytest.mark.parametrize("op", OPS, ids=repr)
def test_axis_out_of_range(op, axis, rng):
    args = op.make(rng, (3, 4), -1, np.float64)
    with pytest.raises(ValueError, match=r"\baxis\b"):
        op.fast(args, axis)


@pytest.mark.parametrize("axis", [1.0, "1"])
def test_axis_not_an_integer(axis):
    with pytest.raises(TypeError, match=r"\baxis\b"):
        fastxent.softmax(X, axis)


def test_backward_shape_mismatch():
    g, y = np.ones((3, 4)), np.ones((3, 5))
    for f in (fastxent.softmax_backward, fastxent.log_softmax_backward):
        with pytest.raises(ValueError, match=r"\b(grad_)?output\b"):
            f(g, y)
        with pytest.raises(ValueError, match=r"\b(grad_)?output\b"):
            f(np.ones((4, 3)), np.ones((3, 4)))
        with pytest.raises(ValueError, match=r"\b(grad_)?output\b"):
            f(np.ones(12), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\bgrad_output\b"):
        fastxent.logsumexp_backward(np.ones(4), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\bgrad_output\b"):
        fastxent.logsumexp_backward(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\blse\b"):
        fastxent.logsumexp_backward(np.ones(3), np.ones((3, 4)), lse=np.ones(4))


# --------------------------------------------------------------------------- cross-entropy
CE_FUNCS = [fastxent.cross_entropy, fastxent.cross_entropy_with_grad]
ce_funcs = pytest.mark.parametrize("f", CE_FUNCS, ids=lambda f: f.__name__)


@ce_funcs
def test_target_shape_mismatch(f):
    x = np.zeros((3, 4))
    for t in [np.zeros(4, dtype=int), np.zeros((3, 1), dtype=int), np.zeros(2, dtype=int),
              np.zeros((3, 5)), np.zeros((4, 4)), np.zeros(3)]:
        with pytest.raises((ValueError, TypeError), match=r"\btarget\b"):
            f(x, t)


@ce_funcs
def test_integer_target_with_the_logits_shape(f):
    """Integer targets are class indices: one per row, not one per class."""
    with pytest.raises(ValueError, match=r"\btarget\b"):
        f(np.zeros((3, 4)), np.zeros((3, 4), dtype=np.int64))


def _at(row):
    """A regex for where a bad label is: "row 1" or "target[1]"."""
    return rf"(?:\brow\D*{row}\b|\btarget\[{row}\])"


@ce_funcs
@pytest.mark.parametrize("bad,row", [(4, 1), (-1, 1), (100, 2), (2**40, 0)])
def test_label_out_of_range_names_row_and_value(f, bad, row):
    x = np.zeros((3, 4))
    t = np.array([0, 1, 2])
    t[row] = bad
    pattern = rf"(?s)(?=.*\btarget|.*\blabel)(?=.*{bad}\b)(?=.*{_at(row)})"
    with pytest.raises(ValueError, match=pattern):
        f(x, t)


@ce_funcs
@pytest.mark.parametrize("weighted", [False, True])
def test_first_bad_label_is_named(f, weighted):
    """Several bad labels among ignored ones, in a long target: the first is reported (the
    check without weights is a branch-free pass, then a search)."""
    x = np.zeros((5000, 4))
    t = np.arange(5000) % 4
    t[::7] = -100
    t[3001], t[4000], t[4500] = -7, 4, 9
    kw = {"weight": np.ones(4)} if weighted else {}
    with pytest.raises(ValueError, match=rf"(?s)(?=.*-7\b)(?=.*{_at(3001)})"):
        f(x, t, **kw)


@ce_funcs
def test_label_out_of_range_unsigned(f):
    x = np.zeros((3, 4))
    t = np.array([0, 2**63 + 5, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=rf"(?s)(?=.*\b{2**63 + 5}\b)(?=.*{_at(1)})"):
        f(x, t)
    t = np.array([0, 7, 1], dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"(?s)(?=.*\b7\b)(?=.*{_at(1)})"):
        f(x, t)


@ce_funcs
def test_label_out_of_range_unsigned_big_endian(f):
    """2**64 - 100 in a big-endian uint64 wraps to -100 in int64, the default ignore_index:
    an error, not an ignored row."""
    x = np.zeros((3, 4))
    t = np.array([0, 2**64 - 100, 1], dtype=">u8")
    with pytest.raises(ValueError, match=rf"(?s)(?=.*\b{2**64 - 100}\b)(?=.*{_at(1)})"):
        f(x, t)


@ce_funcs
def test_label_out_of_range_even_when_ignore_index_is_set(f):
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"(?<![0-9])-100\b"):
        f(x, np.array([0, -100, 1]), ignore_index=-1)


@ce_funcs
def test_weight_wrong_length_or_ndim(f):
    x, t = np.zeros((3, 4)), np.array([0, 1, 2])
    for w in [np.ones(3), np.ones(5), np.ones((1, 4)), np.ones((4, 1)), np.float64(1.0)]:
        with pytest.raises(ValueError, match=r"\bweight\b"):
            f(x, t, weight=w)


@ce_funcs
@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", None, 1])
def test_unknown_reduction(f, reduction):
    with pytest.raises(ValueError, match=r"\breduction\b"):
        f(np.zeros((3, 4)), np.array([0, 1, 2]), reduction=reduction)


@ce_funcs
@pytest.mark.parametrize("ls", [-0.1, 1.1, -1e-12, float("nan"), float("inf")])
def test_label_smoothing_outside_unit_interval(f, ls):
    with pytest.raises(ValueError, match=r"\blabel_smoothing\b"):
        f(np.zeros((3, 4)), np.array([0, 1, 2]), label_smoothing=ls)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_grad_output_shape(reduction):
    x, t = np.zeros((3, 4)), np.array([0, 1, 2])
    bad = [np.ones(4), np.ones((3, 4))] if reduction == "none" else [np.ones(3), np.ones(2)]
    for go in bad:
        with pytest.raises(ValueError, match=r"\bgrad_output\b"):
            fastxent.cross_entropy_with_grad(x, t, reduction=reduction, grad_output=go)


def test_grad_output_bad_dtype():
    with pytest.raises(TypeError, match=r"\bgrad_output\b"):
        fastxent.cross_entropy_with_grad(np.zeros((3, 4)), np.array([0, 1, 2]),
                                         grad_output=1 + 2j)


# --------------------------------------------------------------------------------- threads
@pytest.mark.parametrize("n_threads", [0, -1, -64])
@pytest.mark.parametrize("op", OPS + CE_OPS, ids=repr)
def test_n_threads_not_positive(op, n_threads, rng):
    axis = -1 if op.axis_free else 1
    args = op.make(rng, (3, 4), axis, np.float64)
    with pytest.raises(ValueError, match=r"\bn_threads\b"):
        op.fast(args, axis, n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [1.5, "2", True])
def test_n_threads_not_an_integer(n_threads):
    with pytest.raises(TypeError, match=r"\bn_threads\b"):
        fastxent.softmax(X, n_threads=n_threads)


def test_no_crash_on_target_for_empty_classes():
    """C = 0 with index targets: every label is out of range, so a row is an error; with no
    rows, nothing to check."""
    with pytest.raises(ValueError, match=_at(0)):
        fastxent.cross_entropy(np.zeros((2, 0)), np.array([0, 0]))


def test_ignore_index_not_an_integer():
    with pytest.raises(TypeError, match=r"\bignore_index\b"):
        fastxent.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]), ignore_index=1.5)


def test_prob_target_checks(rng):
    x = np.zeros((3, 4))
    p = make_ce_target(rng, x.shape, "prob")
    with pytest.raises(ValueError, match=r"\btarget\b"):
        fastxent.cross_entropy(x, p[:, :3])
    with pytest.raises(ValueError, match=r"\btarget\b"):
        fastxent.cross_entropy(x, p.T)
