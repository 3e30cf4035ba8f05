"""Float64 NumPy "slow twins" of every public fastxent function.

Each function here has the same name and signature as its public counterpart in
:mod:`fastxent`, minus ``out=`` and ``n_threads=``. They are written to be obviously
correct rather than fast: whole-array NumPy expressions, always computed in float64,
always returning float64. The tests compare the compiled kernels against them, and
``python -m fastxent`` uses them for its self-check.

Semantics (PyTorch's, where PyTorch has the function):

- ``logsumexp`` shifts by the row maximum, but by 0 when that maximum is +-inf, so a
  row of all ``-inf`` gives ``-inf``, a row holding ``+inf`` gives ``+inf`` and a row
  holding NaN gives NaN (as ``torch.logsumexp``).
- ``softmax`` and ``log_softmax`` shift by the row maximum with no special case, so a
  row holding ``+inf`` or of all ``-inf`` is NaN throughout (as ``torch.softmax``).
  ``log_softmax`` is ``x - logsumexp(x)``.
- ``logsumexp_backward`` is ``grad_output * exp(x - lse)``, and exactly 0 on rows whose
  ``lse`` is ``-inf`` (PyTorch gives NaN there).
- ``cross_entropy`` follows ``torch.nn.functional.cross_entropy``
  (``aten/src/ATen/native/LossNLL.cpp``): the class axis is 1 for ``ndim >= 2`` and 0
  for 1-D logits; integer targets are class indices, float targets are class
  probabilities; rows whose target is ``ignore_index`` contribute exactly 0 to the loss
  and to the gradient whatever their logits hold.

Only light validation is done here (enough to fail loudly rather than index out of
bounds); the public API is the place for argument checking.
"""

import numpy as np

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "logsumexp_backward",
    "softmax",
    "softmax_backward",
    "softmax_jacobian",
]


def _f64(a, name="x"):
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def _row_max(x, axis):
    # ``initial`` makes an empty class axis give -inf instead of raising.
    return np.max(x, axis=axis, keepdims=True, initial=-np.inf)


def logsumexp(x, axis=-1, keepdims=False):
    """``log(sum(exp(x), axis))``, shifted by the row max (by 0 if the max is +-inf)."""
    x = _f64(x)
    m = _row_max(x, axis)
    shift = np.where(np.isfinite(m), m, 0.0)
    # exp(+inf) = inf, log(0) = -inf and NaN propagation are all wanted here.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = shift + np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(x, axis=-1):
    """``exp(x - max) / sum(exp(x - max))``; NaN on rows with +inf or all -inf."""
    x = _f64(x)
    m = _row_max(x, axis)
    # inf - inf on such rows gives NaN, as PyTorch; -big - big overflows to -inf (exp: 0).
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` on rows with a finite max, NaN on the others."""
    x = _f64(x)
    m = _row_max(x, axis)
    lse = logsumexp(x, axis=axis, keepdims=True)
    lse = np.where(np.isfinite(m), lse, np.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        return x - lse


def softmax_backward(grad_output, output, axis=-1):
    """Vector-Jacobian product of softmax: ``y * (g - sum(g * y))``, ``y`` = softmax."""
    g = _f64(grad_output, "grad_output")
    y = _f64(output, "output")
    with np.errstate(invalid="ignore", over="ignore"):
        return y * (g - np.sum(g * y, axis=axis, keepdims=True))


def log_softmax_backward(grad_output, output, axis=-1):
    """Vector-Jacobian product of log_softmax: ``g - exp(y) * sum(g)``, ``y`` = log_softmax."""
    g = _f64(grad_output, "grad_output")
    y = _f64(output, "output")
    with np.errstate(invalid="ignore", over="ignore"):
        return g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)


def logsumexp_backward(grad_output, x, axis=-1):
    """Vector-Jacobian product of logsumexp: ``g * exp(x - lse)``; 0 where ``lse = -inf``.

    ``grad_output`` has the shape of ``logsumexp(x, axis)`` (or of it with
    ``keepdims=True``).
    """
    x = _f64(x)
    g = _f64(grad_output, "grad_output")
    if g.ndim == x.ndim - 1:
        g = np.expand_dims(g, axis)
    lse = logsumexp(x, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        r = g * np.exp(x - lse)
    return np.where(lse == -np.inf, 0.0, r)


def softmax_jacobian(x):
    """``diag(s) - s s^T`` with ``s = softmax(x)`` over the last axis; shape ``(..., C, C)``."""
    s = softmax(x, axis=-1)
    c = s.shape[-1]
    return s[..., :, None] * np.eye(c) - s[..., :, None] * s[..., None, :]


# --------------------------------------------------------------------------- cross-entropy

_REDUCTIONS = ("none", "mean", "sum")


def _ce(logits, target, weight, ignore_index, reduction, label_smoothing, axis, grad_output,
        want_grad):
    x = _f64(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least 1 dimension")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    ax = (1 if x.ndim >= 2 else 0) if axis is None else axis % x.ndim
    n_classes = x.shape[ax]
    xr = np.moveaxis(x, ax, -1)
    batch_shape = xr.shape[:-1]
    X = xr.reshape(-1, n_classes)
    n_rows = X.shape[0]
    w = np.ones(n_classes) if weight is None else _f64(weight, "weight")
    if w.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), got {w.shape}")
    t = np.asarray(target)
    rows = np.arange(n_rows)

    with np.errstate(all="ignore"):  # inf - inf, 0 * inf, 0 / 0 follow IEEE, as PyTorch
        logp = log_softmax(X, axis=-1)
        if t.dtype.kind in "iu":  # class indices
            if t.shape != batch_shape:
                raise ValueError(f"target must have shape {batch_shape}, got {t.shape}")
            T = t.reshape(-1).astype(np.int64)
            valid = T != ignore_index
            bad = valid & ((T < 0) | (T >= n_classes))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"target must be in [0, {n_classes}) or equal "
                                 f"ignore_index={ignore_index}; found {T[i]} at row {i}")
            tt = np.where(valid, T, 0)
            w_t = np.where(valid, w[tt], 0.0)
            nll = np.where(valid, -w[tt] * logp[rows, tt], 0.0)
            if eps > 0.0:
                smooth = np.where(valid, -np.sum(logp * w, axis=-1), 0.0)
                row_loss = (1.0 - eps) * nll + (eps / n_classes) * smooth
            else:
                row_loss = nll
            denom = np.sum(w_t)
            coef = np.zeros((n_rows, n_classes))
            coef[rows[valid], tt[valid]] = (1.0 - eps) * w_t[valid]
            if eps > 0.0:
                coef[valid] += (eps / n_classes) * w
        elif t.dtype.kind == "f":  # class probabilities
            if t.shape != x.shape:
                raise ValueError(f"target must have shape {x.shape}, got {t.shape}")
            P = np.moveaxis(t.astype(np.float64), ax, -1).reshape(-1, n_classes)
            if eps > 0.0:
                P = P * (1.0 - eps) + eps / n_classes
            coef = P * w
            row_loss = -np.sum(logp * coef, axis=-1)
            valid = np.ones(n_rows, dtype=bool)
            denom = float(n_rows)
        else:
            raise TypeError(f"target must be an integer or float array, got dtype {t.dtype}")

        if reduction == "none":
            loss = row_loss.reshape(batch_shape)
        elif reduction == "sum":
            loss = np.float64(np.sum(row_loss))
        else:
            # A zero denominator (no rows, all ignored, zero weights) gives NaN, as in
            # PyTorch, where the nll part is 0 / 0 even when the smoothing part is not.
            loss = np.float64(np.sum(row_loss) / denom) if denom != 0 else np.float64(np.nan)

        if not want_grad:
            return loss

        grad = np.sum(coef, axis=-1, keepdims=True) * softmax(X, axis=-1) - coef
        grad[~valid] = 0.0
        if grad_output is None:
            scale = 1.0
        elif reduction == "none":
            scale = np.broadcast_to(_f64(grad_output, "grad_output"), batch_shape)
            scale = scale.reshape(-1, 1)
        else:
            scale = _f64(grad_output, "grad_output")
            if scale.size != 1:
                raise ValueError("grad_output must be a scalar for a reduced loss")
            scale = float(scale.reshape(()))
        grad = grad * scale
        grad[~valid] = 0.0  # exactly 0 even when grad_output is inf or NaN
        if reduction == "mean":
            if denom == 0:
                # 0 / 0: PyTorch gives NaN on the rows that count, 0 on ignored rows.
                grad[valid] = np.nan
            else:
                grad = grad / denom
    grad = np.moveaxis(grad.reshape(xr.shape), -1, ax)
    return loss, grad


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=None):
    """Cross-entropy of ``logits`` against ``target``, as ``torch.nn.functional.cross_entropy``.

    Per row with log-probabilities ``logp = log_softmax(logits)``:

    - class indices ``t``: ``(1 - eps) * w[t] * -logp[t] + eps / C * sum_j w[j] * -logp[j]``,
      0 if ``t == ignore_index``; ``mean`` divides the sum by ``sum(w[t])`` over the rows
      that are not ignored;
    - class probabilities ``p``: ``-sum_j w[j] * q[j] * logp[j]`` with
      ``q = p * (1 - eps) + eps / C``; ``mean`` divides by the number of rows.

    ``axis=None`` is PyTorch's class axis: 1 for ``ndim >= 2``, 0 for 1-D logits.
    """
    return _ce(logits, target, weight, ignore_index, reduction, label_smoothing, axis,
               None, want_grad=False)


def cross_entropy_with_grad(logits, target, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, grad_output=None, axis=None):
    """``(loss, grad)``: :func:`cross_entropy` and its gradient with respect to ``logits``.

    Writing the row loss as ``sum_j c_j * (lse - x_j)``, the row gradient is
    ``sum_j(c_j) * softmax(x) - c``, times ``grad_output`` (a scalar for reduced losses,
    one value per row for ``reduction="none"``; default 1) and divided by the mean's
    denominator for ``reduction="mean"``. Ignored rows get exactly 0.
    """
    return _ce(logits, target, weight, ignore_index, reduction, label_smoothing, axis,
               grad_output, want_grad=True)
