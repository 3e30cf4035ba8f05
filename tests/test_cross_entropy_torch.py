"""cross_entropy and cross_entropy_with_grad against torch.nn.functional.cross_entropy.

Every combination of the options: target kind (class indices with none, some or all rows
ignored, or an ignore_index inside [0, C); class probabilities), weight, reduction,
label_smoothing (0, 0.1, 1.0), grad_output, and float32/float64. The gradient is PyTorch's
autograd gradient of the loss times grad_output. The slow twin is checked against PyTorch on
the same cases (float64).
"""

import numpy as np
import pytest

import fastxent
from fastxent import _reference as ref

from .conftest import assert_close, make_ce_target

torch = pytest.importorskip("torch")
F = torch.nn.functional

# float64: PyTorch and fastxent both compute exactly in double, differing by a few ulp of the
# row terms (lse and sum_j c_j x_j): 1e-12. float32: both round inputs-derived quantities to
# float32 (ulp 6e-8 relative) and PyTorch also accumulates in float32 in places: 2e-5
# relative to the size of the terms.
TOL = {np.float64: 1e-12, np.float32: 2e-5}

C = 5
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25, 3.0])


def torch_cross_entropy(x, t, *, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0, grad_output=None):
    """PyTorch's loss and d loss / d x (times grad_output), as NumPy."""
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t)
    wt = None if weight is None else torch.tensor(weight, dtype=xt.dtype)
    loss = F.cross_entropy(xt, tt, weight=wt, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if grad_output is None:
        go = torch.ones_like(loss)
    else:
        go = torch.as_tensor(np.asarray(grad_output), dtype=loss.dtype)
    (grad,) = torch.autograd.grad(loss, xt, go)
    return loss.detach().numpy(), grad.numpy()


def _target(rng, shape, mode, dtype):
    """(target, ignore_index) for a ``mode`` of the index/prob target."""
    if mode == "prob":
        return make_ce_target(rng, shape, "prob", prob_dtype=dtype), -100
    if mode == "index-none-ignored":
        return make_ce_target(rng, shape, "index"), -100
    if mode == "index-some-ignored":
        t = make_ce_target(rng, shape, "index")
        t[[1, 4]] = -100
        return t, -100
    if mode == "index-all-ignored":
        return make_ce_target(rng, shape, "index", n_ignored=-1), -100
    if mode == "index-ignore-1":  # ignore_index inside [0, C): rows of class 1 are ignored
        t = make_ce_target(rng, shape, "index")
        t[[0, 2]] = 1
        return t, 1
    raise AssertionError(mode)


TARGET_MODES = ["index-none-ignored", "index-some-ignored", "index-all-ignored",
                "index-ignore-1", "prob"]


def _grad_output(rng, reduction, n, given):
    if not given:
        return None
    return rng.standard_normal(n) if reduction == "none" else -2.5


def _compare(got, want, tol, what):
    assert np.asarray(got).shape == np.asarray(want).shape, what
    assert_close(got, want, tol, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("grad_output", [False, True], ids=["go-default", "go-given"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("mode", TARGET_MODES)
def test_every_option_combination(mode, weighted, reduction, label_smoothing, grad_output,
                                  dtype, rng):
    n = 8
    x = (rng.standard_normal((n, C)) * 3).astype(dtype)
    t, ignore_index = _target(rng, x.shape, mode, dtype)
    go = _grad_output(rng, reduction, n, grad_output)
    kw = dict(weight=WEIGHT if weighted else None, reduction=reduction,
              label_smoothing=label_smoothing)
    if mode != "prob":
        kw["ignore_index"] = ignore_index
    want_loss, want_grad = torch_cross_entropy(x, t, grad_output=go, **kw)
    tol = TOL[dtype]

    loss = fastxent.cross_entropy(x, t, **kw)
    _compare(loss, want_loss, tol, "cross_entropy loss")
    loss, grad = fastxent.cross_entropy_with_grad(x, t, grad_output=go, **kw)
    _compare(loss, want_loss, tol, "cross_entropy_with_grad loss")
    _compare(grad, want_grad, tol, "cross_entropy_with_grad grad")
    assert grad.dtype == dtype

    if dtype == np.float64:  # the slow twin agrees with PyTorch too
        ref_loss, ref_grad = ref.cross_entropy_with_grad(x, t, grad_output=go, **kw)
        _compare(ref_loss, want_loss, tol, "reference loss")
        _compare(ref_grad, want_grad, tol, "reference grad")

    if mode != "prob":  # ignored rows: exactly zero
        ignored = t == ignore_index
        assert np.all(grad[ignored] == 0.0)
        if reduction == "none":
            assert np.all(loss[ignored] == 0.0)


SHAPES = [(0, C), (1, C), (7, 1), (C,), (3, C, 4), (2, C, 3, 2)]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes(shape, kind, reduction, rng):
    """1-D logits (one row, class axis 0), N-D logits (class axis 1), C = 1, 0 rows."""
    x = rng.standard_normal(shape)
    t = make_ce_target(rng, shape, kind, n_ignored=1)
    batch = np.asarray(ref.cross_entropy(x, t, reduction="none")).shape
    go = rng.standard_normal(batch) if reduction == "none" else 0.5
    kw = dict(weight=np.linspace(0.5, 2.0, shape[min(1, len(shape) - 1)]),
              reduction=reduction, label_smoothing=0.1)
    want_loss, want_grad = torch_cross_entropy(x, t, grad_output=go, **kw)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, grad_output=go, **kw)
    _compare(loss, want_loss, 1e-12, "loss")
    _compare(grad, want_grad, 1e-12, "grad")
    _compare(fastxent.cross_entropy(x, t, **kw), want_loss, 1e-12, "cross_entropy")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_zero_weight_mean_matches_torch(label_smoothing, rng):
    """mean over rows whose targets all have weight 0: 0 / 0 = NaN loss, as PyTorch; the
    gradient is NaN on the counted rows and exactly 0 on the ignored one."""
    x = rng.standard_normal((3, 4))
    t = np.array([0, 0, -100])
    w = np.array([0.0, 1.0, 1.0, 1.0])
    want_loss, want_grad = torch_cross_entropy(x, t, weight=w, label_smoothing=label_smoothing)
    loss, grad = fastxent.cross_entropy_with_grad(x, t, weight=w,
                                                  label_smoothing=label_smoothing)
    assert np.isnan(want_loss) and np.isnan(loss)
    _compare(grad, want_grad, 1e-12, "grad")


def test_masked_classes_match_torch(rng):
    """-inf logits are masked classes; PyTorch's values for index targets (with and without
    smoothing: the smoothing term sees -inf and gives +inf, as PyTorch)."""
    x = rng.standard_normal((4, 6))
    x[:, [1, 4]] = -np.inf
    t = np.array([0, 2, 3, 5])
    for ls in (0.0, 0.1):
        for reduction in ("none", "mean"):
            want_loss, want_grad = torch_cross_entropy(x, t, reduction=reduction,
                                                       label_smoothing=ls)
            loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction,
                                                          label_smoothing=ls)
            _compare(loss, want_loss, 1e-12, f"loss ls={ls}")
            _compare(grad, want_grad, 1e-12, f"grad ls={ls}")
            if ls == 0.0:
                assert np.all(grad[:, [1, 4]] == 0.0)


def test_masked_classes_probability_target_match_torch(rng):
    """A zero probability on a -inf class: PyTorch computes 0 * -inf = NaN for the loss (its
    gradient stays finite). fastxent must say the same."""
    x = rng.standard_normal((3, 4))
    x[:, 2] = -np.inf
    p = make_ce_target(rng, x.shape, "prob")
    p[:, 2] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    want_loss, want_grad = torch_cross_entropy(x, p, reduction="none")
    loss, grad = fastxent.cross_entropy_with_grad(x, p, reduction="none")
    _compare(loss, want_loss, 1e-12, "loss")
    _compare(grad, want_grad, 1e-12, "grad")


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_float32_accuracy_no_worse_than_torch(kind, scale, rng):
    """float32 loss and gradient: error against the float64 twin no larger than PyTorch's.

    Errors are measured normwise (max abs error over the max abs value) and as an RMS of the
    same ratio. Slack: PyTorch's own error times 1.5 plus 2 float32 ulp (1.2e-7), since both
    errors are a few ulp and fluctuate from input to input.
    """
    n, c = 64, 1000
    x64 = rng.standard_normal((n, c)) * scale
    x = x64.astype(np.float32)
    t = make_ce_target(rng, x.shape, kind, n_ignored=3, prob_dtype=np.float32)
    slack = 2 * np.finfo(np.float32).eps
    for reduction in ("none", "mean"):
        want_loss, want_grad = ref.cross_entropy_with_grad(x, t, reduction=reduction,
                                                           label_smoothing=0.1)
        t_loss, t_grad = torch_cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
        loss, grad = fastxent.cross_entropy_with_grad(x, t, reduction=reduction,
                                                      label_smoothing=0.1)
        loss_only = fastxent.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
        for name, ours, theirs, want in [("loss", loss, t_loss, want_loss),
                                         ("loss (no grad)", loss_only, t_loss, want_loss),
                                         ("grad", grad, t_grad, want_grad)]:
            e_ours, e_torch = _errors(ours, want), _errors(theirs, want)
            for k in range(2):
                assert e_ours[k] <= 1.5 * e_torch[k] + slack, (
                    f"{name} {reduction}: ours {e_ours} vs torch {e_torch}")


def _errors(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    denom = max(np.max(np.abs(want)), np.finfo(np.float64).tiny)
    rel = np.abs(got - want) / denom
    return float(np.max(rel)), float(np.sqrt(np.mean(rel ** 2)))


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
def test_float32_forward_accuracy_no_worse_than_torch(scale, rng):
    """logsumexp, softmax, log_softmax and the two backward passes in float32: no worse than
    PyTorch against the float64 twin (same metric and slack as above). softmax is also
    compared elementwise (relative error of each probability above 1e-30)."""
    x64 = rng.standard_normal((64, 2000)) * scale
    x = x64.astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    slack = 2 * np.finfo(np.float32).eps
    cases = [
        ("logsumexp", fastxent.logsumexp(x), torch.logsumexp(xt, 1), ref.logsumexp(x)),
        ("softmax", fastxent.softmax(x), torch.softmax(xt, 1), ref.softmax(x)),
        ("log_softmax", fastxent.log_softmax(x), torch.log_softmax(xt, 1),
         ref.log_softmax(x)),
    ]
    y = ref.softmax(x).astype(np.float32)
    ly = ref.log_softmax(x).astype(np.float32)
    yt = torch.tensor(y, requires_grad=True)
    lyt = torch.tensor(ly, requires_grad=True)
    cases += [
        ("softmax_backward", fastxent.softmax_backward(g, y),
         torch._softmax_backward_data(torch.tensor(g), yt, 1, yt.dtype),
         ref.softmax_backward(g, y)),
        ("log_softmax_backward", fastxent.log_softmax_backward(g, ly),
         torch._log_softmax_backward_data(torch.tensor(g), lyt, 1, lyt.dtype),
         ref.log_softmax_backward(g, ly)),
    ]
    for name, ours, theirs, want in cases:
        theirs = theirs.detach().numpy()
        e_ours, e_torch = _errors(ours, want), _errors(theirs, want)
        for k in range(2):
            assert e_ours[k] <= 1.5 * e_torch[k] + slack, f"{name}: ours {e_ours} torch {e_torch}"
    ours, theirs, want = cases[1][1], cases[1][2].detach().numpy(), cases[1][3]
    big = want > 1e-30
    rel_ours = np.max(np.abs(ours[big] - want[big]) / want[big])
    rel_torch = np.max(np.abs(theirs[big] - want[big]) / want[big])
    assert rel_ours <= 1.5 * rel_torch + slack, (rel_ours, rel_torch)

