"""The public functions of fastxent: each validates through ``_validate`` and calls a kernel."""
import math

import numpy as np

from . import _validate as v
from ._dispatch import kernel, kernels

__all__ = [
    "logsumexp", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "logsumexp_backward", "softmax_jacobian", "cross_entropy", "cross_entropy_with_grad",
]


def _map_rows(kernel_name, arrays, names, axis, out, n_threads):
    """Run the kernel ``kernel_name(*rows, out_rows, n_threads)`` over same-shaped arrays; the
    result has their shape. The first array sets the dtype; the others are converted to it."""
    first = v.as_array(arrays[0], names[0])
    layout = v.Layout(first, axis, names[0])
    rows = {names[0]: layout.rows(first)}
    for arr, name in zip(arrays[1:], names[1:]):
        arr = v.as_array(arr, name)
        layout.check_same_shape(arr, name, names[0])
        rows[name] = layout.rows(arr)
    target = v.RowsOut(layout, out, rows)
    kernel(kernel_name, layout.dtype)(
        *rows.values(), target.rows,
        v.resolve_n_threads(n_threads, layout.n_rows * layout.n_classes))
    return target.result()


def _reduced_shape(layout, keepdims):
    if keepdims:
        return layout.shape[:layout.axis] + (1,) + layout.shape[layout.axis + 1:]
    return layout.batch_shape


def _row_values(arr, layout, name, keepdims_ok=True):
    """A per-row argument (shape ``batch_shape``, or the keepdims shape) as a contiguous
    vector of ``layout.dtype``."""
    arr = v.as_array(arr, name, min_ndim=0)
    if arr.shape != layout.batch_shape:
        if not (keepdims_ok and arr.shape == _reduced_shape(layout, True)):
            raise ValueError(f"{name} must have shape {layout.batch_shape} (x's shape without "
                             f"axis {layout.axis}); got {arr.shape}")
    return v.contiguous(arr, layout.dtype).reshape(layout.n_rows)


def logsumexp(x, axis=-1, *, keepdims=False, out=None, n_threads=None):
    """Log of the sum of exponentials along an axis, without overflow.

    Parameters
    ----------
    x : array_like
        Input, ``float32`` or ``float64`` (``float16`` is computed in ``float32``; integers
        are promoted to ``float64``).
    axis : int, optional
        The axis to reduce (default: the last).
    keepdims : bool, optional
        Keep the reduced axis with length one.
    out : ndarray, optional
        Array of the result's shape and dtype to write into.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would (``OMP_NUM_THREADS``, threadpoolctl).

    Returns
    -------
    ndarray
        ``log(sum(exp(x), axis))``, of ``x``'s floating dtype.

    Notes
    -----
    Each row is shifted by its maximum ``m``: ``m + log(sum(exp(x - m)))``, so no term
    overflows and the largest is exactly 1. The maximum and the sum are taken in one sweep
    over memory (the sum rescaled whenever a block raises the maximum) and kept in double.
    A row of all ``-inf`` gives ``-inf``; a row holding ``+inf`` gives ``+inf``; NaN gives NaN.
    An empty row gives ``-inf``.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> fastxent.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]]))
    array([   0.69314718, 1000.69314718])
    """
    x = v.as_array(x, "x")
    layout = v.Layout(x, axis, "x")
    rows = layout.rows(x)
    result_shape = _reduced_shape(layout, keepdims)
    direct = None
    if out is not None:
        v.check_out(out, result_shape, layout.result_dtype)
        if out.dtype == layout.dtype:
            try:
                direct = out.reshape(layout.n_rows, copy=False)
            except ValueError:
                direct = None
            if direct is not None and (not direct.flags.aligned or (
                    layout.n_rows > 1 and direct.strides[0] != out.itemsize)):
                direct = None
        v.check_no_partial_overlap(out, {"x": rows})
    values = direct if direct is not None else np.empty(layout.n_rows, layout.dtype)
    kernel("logsumexp_rows", layout.dtype)(
        rows, values, v.resolve_n_threads(n_threads, layout.n_rows * layout.n_classes))
    if direct is not None:
        return out
    if out is not None:
        np.copyto(out, values.reshape(result_shape), casting="unsafe")
        return out
    return values.reshape(result_shape).astype(layout.result_dtype, copy=False)


def softmax(x, axis=-1, *, out=None, n_threads=None):
    """Softmax along an axis: ``exp(x) / sum(exp(x))``, without overflow.

    Parameters
    ----------
    x : array_like
        Input logits, ``float32`` or ``float64`` (other types as in `logsumexp`).
    axis : int, optional
        The class axis (default: the last).
    out : ndarray, optional
        Array of ``x``'s shape and dtype to write into; may be ``x`` itself.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would.

    Returns
    -------
    ndarray
        Probabilities summing to one along ``axis``.

    Notes
    -----
    Computed as ``exp(x - max) / sum(exp(x - max))``: one ``exp`` per element, stored and then
    rescaled, so the row is read from memory once and written once. As in PyTorch, a row of
    all ``-inf`` or holding ``+inf`` has no defined softmax and gives NaN.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> fastxent.softmax(np.array([1.0, 2.0, 3.0]))
    array([0.09003057, 0.24472847, 0.66524096])
    >>> fastxent.softmax(np.array([0.0, -np.inf]))  # -inf is a masked class
    array([1., 0.])
    """
    return _map_rows("softmax_rows", [x], ["x"], axis, out, n_threads)


def log_softmax(x, axis=-1, *, out=None, n_threads=None):
    """Logarithm of the softmax along an axis: ``x - logsumexp(x)``.

    Parameters
    ----------
    x : array_like
        Input logits, ``float32`` or ``float64`` (other types as in `logsumexp`).
    axis : int, optional
        The class axis (default: the last).
    out : ndarray, optional
        Array of ``x``'s shape and dtype to write into; may be ``x`` itself.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would.

    Returns
    -------
    ndarray
        Log-probabilities along ``axis``.

    Notes
    -----
    Computed directly as ``x - logsumexp(x)`` (the difference taken in double), never as
    ``log(softmax(x))``, which loses every digit of a tiny probability and gives ``-inf`` once
    it underflows. A row of all ``-inf`` or holding ``+inf`` gives NaN, as in PyTorch.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> fastxent.log_softmax(np.array([0.0, 1000.0]))
    array([-1000.,     0.])
    """
    return _map_rows("log_softmax_rows", [x], ["x"], axis, out, n_threads)


def softmax_backward(grad_output, output, axis=-1, *, out=None, n_threads=None):
    """Vector-Jacobian product of softmax: the gradient with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        Gradient of a loss with respect to the softmax output.
    output : array_like
        The softmax output ``softmax(x, axis)``, same shape.
    axis : int, optional
        The class axis (default: the last).
    out : ndarray, optional
        Array to write into; may be ``grad_output`` or ``output``.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would.

    Returns
    -------
    ndarray
        ``output * (grad_output - sum(grad_output * output, axis))``.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> s = fastxent.softmax(np.array([1.0, 2.0, 3.0]))
    >>> fastxent.softmax_backward(np.array([1.0, 0.0, 0.0]), s)  # d s[0] / d x
    array([ 0.08192507, -0.02203304, -0.05989202])
    """
    return _map_rows("softmax_backward_rows", [grad_output, output],
                     ["grad_output", "output"], axis, out, n_threads)


def log_softmax_backward(grad_output, output, axis=-1, *, out=None, n_threads=None):
    """Vector-Jacobian product of log-softmax: the gradient with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        Gradient of a loss with respect to the log-softmax output.
    output : array_like
        The log-softmax output ``log_softmax(x, axis)``, same shape.
    axis : int, optional
        The class axis (default: the last).
    out : ndarray, optional
        Array to write into; may be ``grad_output`` or ``output``.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would.

    Returns
    -------
    ndarray
        ``grad_output - exp(output) * sum(grad_output, axis)``.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> y = fastxent.log_softmax(np.array([1.0, 2.0, 3.0]))
    >>> fastxent.log_softmax_backward(np.array([1.0, 0.0, 0.0]), y)
    array([ 0.90996943, -0.24472847, -0.66524096])
    """
    return _map_rows("log_softmax_backward_rows", [grad_output, output],
                     ["grad_output", "output"], axis, out, n_threads)


def logsumexp_backward(grad_output, x, axis=-1, *, lse=None, out=None, n_threads=None):
    """Vector-Jacobian product of log-sum-exp: ``grad_output * softmax(x)``.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to ``logsumexp(x, axis)``: ``x``'s shape without ``axis`` (or
        with it kept as length one).
    x : array_like
        The input of the log-sum-exp.
    axis : int, optional
        The reduced axis (default: the last).
    lse : array_like, optional
        ``logsumexp(x, axis)`` if already computed; saves one pass over ``x``.
    out : ndarray, optional
        Array of ``x``'s shape to write into; may be ``x``.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would.

    Returns
    -------
    ndarray
        ``grad_output[..., None] * exp(x - lse[..., None])`` (with ``axis`` in place of the
        last), zero on rows whose log-sum-exp is ``-inf`` (all classes masked).

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> fastxent.logsumexp_backward(np.array(2.0), np.array([0.0, 0.0]))
    array([1., 1.])
    """
    x = v.as_array(x, "x")
    layout = v.Layout(x, axis, "x")
    rows = layout.rows(x)
    g = _row_values(grad_output, layout, "grad_output")
    lse_rows = None if lse is None else _row_values(lse, layout, "lse")
    target = v.RowsOut(layout, out, {"x": rows, "grad_output": g, "lse": lse_rows},
                       in_place=("x",))
    kernel("logsumexp_backward_rows", layout.dtype)(
        g, rows, lse_rows, target.rows,
        v.resolve_n_threads(n_threads, layout.n_rows * layout.n_classes))
    return target.result()


def softmax_jacobian(x):
    """Jacobian of softmax over the last axis: ``diag(s) - s s^T`` with ``s = softmax(x)``.

    Parameters
    ----------
    x : array_like
        One row of logits, shape ``(C,)``, or a batch, shape ``(..., C)``.

    Returns
    -------
    ndarray
        Shape ``(..., C, C)``: entry ``[..., i, j]`` is ``d s_i / d x_j``.

    Notes
    -----
    Memory grows as ``C**2`` per row: this is for teaching and checking; to back-propagate,
    use `softmax_backward`, which never forms the matrix.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> fastxent.softmax_jacobian(np.array([0.0, 0.0]))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    s = softmax(x, axis=-1)
    jac = -s[..., :, None] * s[..., None, :]
    diag = np.einsum("...ii->...i", jac)
    diag += s
    return jac


# ----------------------------------------------------------------------------- cross-entropy

class _Target:
    """The target of a cross-entropy call, validated against the logits' layout."""

    def __init__(self, target, layout, ignore_index, weight):
        t = np.asarray(target)
        self.is_index = t.dtype.kind in "iu"
        self.weight = weight
        if self.is_index:
            if t.shape != layout.batch_shape:
                raise ValueError(
                    f"target of class indices must have the shape of logits without the class "
                    f"axis {layout.axis}, {layout.batch_shape}; got {t.shape}")
            self.ignore_index = v.check_ignore_index(ignore_index)
            labels = t.reshape(layout.n_rows)
            if (labels.dtype.kind == "u" and labels.dtype.itemsize == 8 and labels.size
                    and labels.max() >= 1 << 63):
                bad = int(np.argmax(labels >= 1 << 63))
                self._raise_bad_label(t, bad, layout)
            self.labels = v.contiguous(labels, v.INT64)
            bad, self.total_weight = kernels.check_labels(
                self.labels, layout.n_classes, self.ignore_index, weight)
            if bad >= 0:
                self._raise_bad_label(t, bad, layout)
            self.rows = None
        elif t.dtype.kind == "f":
            layout.check_same_shape(t, "target of class probabilities", "logits")
            self.rows = layout.rows(t)
            self.total_weight = float(layout.n_rows)
        else:
            raise TypeError(f"target must hold integer class indices or floating-point class "
                            f"probabilities; got dtype {t.dtype}")

    def _raise_bad_label(self, t, bad, layout):
        where = np.unravel_index(bad, t.shape) if t.ndim else ()
        value = t[where] if t.ndim else t[()]
        index = ", ".join(str(int(i)) for i in where)
        raise ValueError(f"target must hold class indices in [0, {layout.n_classes}) or "
                         f"ignore_index={self.ignore_index}; found {value} at target[{index}]")


def _per_weight(value, total_weight):
    """``value`` over the mean's denominator. A zero denominator (no rows, all ignored, or all
    of weight 0) gives NaN, as PyTorch, whose two terms (NLL and smoothing) are each 0/0 or
    x/0 there and add up to NaN."""
    return value / total_weight if total_weight != 0 else math.nan


def _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, axis,
                   n_threads, with_grad, grad_output=None, out=None):
    logits = v.as_array(logits, "logits")
    if axis is None:
        axis = 1 if logits.ndim >= 2 else 0
    layout = v.Layout(logits, axis, "logits")
    reduction = v.check_reduction(reduction)
    smoothing = v.check_label_smoothing(label_smoothing)
    w = v.check_weight(weight, layout.n_classes)
    tgt = _Target(target, layout, ignore_index, w)
    rows = layout.rows(logits)

    scale, row_scale = 1.0, None
    grad = None
    if with_grad:
        if reduction == "none":
            g = 1.0 if grad_output is None else grad_output
            g = v.as_array(g, "grad_output", min_ndim=0)
            try:
                g = np.broadcast_to(g, layout.batch_shape)
            except ValueError:
                raise ValueError(f"grad_output must have the loss's shape {layout.batch_shape}"
                                 f"; got {g.shape}") from None
            row_scale = v.contiguous(g, v.FLOAT64).reshape(layout.n_rows)
        else:
            if grad_output is not None:
                g = v.as_array(grad_output, "grad_output", min_ndim=0)
                if g.size != 1:
                    raise ValueError(f"grad_output of a reduced loss must be a scalar; "
                                     f"got shape {g.shape}")
                scale = float(g.reshape(()))
            if reduction == "mean":
                scale = _per_weight(scale, tgt.total_weight)
        inputs = {"logits": rows, "target": tgt.rows if tgt.rows is not None else tgt.labels,
                  "weight": w, "grad_output": row_scale}
        grad = v.RowsOut(layout, out, inputs, in_place=("logits",))

    n = v.resolve_n_threads(n_threads, layout.n_rows * layout.n_classes)
    grad_rows = None if grad is None else grad.rows
    # A reduced loss needs no per-row losses: the kernels return sums of blocks of rows.
    loss_rows = np.empty(layout.n_rows, np.float64) if reduction == "none" else None
    if tgt.is_index:
        partial_sums = kernel("xent_index_rows", layout.dtype)(
            rows, tgt.labels, w, tgt.ignore_index, smoothing, loss_rows, grad_rows, row_scale,
            scale, n)
    else:
        partial_sums = kernel("xent_prob_rows", layout.dtype)(
            rows, tgt.rows, w, smoothing, loss_rows, grad_rows, row_scale, scale, n)

    dtype = layout.result_dtype
    if reduction == "none":
        loss = _narrowed(loss_rows.reshape(layout.batch_shape), dtype)
        if loss.ndim == 0:
            loss = dtype.type(loss)
    else:
        total = kernels.total(partial_sums)     # in a fixed order: any n_threads alike
        if reduction == "mean":
            total = _per_weight(total, tgt.total_weight)
        loss = _narrowed(total, dtype)
    return loss, (None if grad is None else grad.result())


_FLOAT16_MAX = 65504.0      # the smallest float type's largest value


def _narrowed(losses, dtype):
    """Losses computed in double (a float64 array, or one Python float) as ``dtype``.

    A loss past a narrower type's range becomes inf there, the answer (as PyTorch's
    arithmetic in that type gives it), without NumPy's overflow warning; it takes logits near
    that range (3e38 for float32). The ``np.errstate`` that silences it costs tens of
    microseconds with cold caches, so it is entered only where a cast can overflow: a narrower
    type, and for one value, one past float16's range."""
    single = isinstance(losses, float)
    if dtype.itemsize >= 8 or (single and abs(losses) <= _FLOAT16_MAX):
        return dtype.type(losses) if single else losses.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        return dtype.type(losses) if single else losses.astype(dtype)


_XENT_PARAMETERS = """
    logits : array_like
        Unnormalised scores, ``float32`` or ``float64``; shape ``(C,)``, ``(N, C)`` or
        ``(N, C, d1, ...)`` as in PyTorch (the class axis is 1, or 0 for 1-D logits, unless
        ``axis`` says otherwise).
    target : array_like
        Class indices (any integer dtype; the shape of ``logits`` without the class axis) or
        class probabilities (floating; the shape of ``logits``; one-hot is a special case).
    weight : array_like, optional
        A weight per class, length ``C``.
    ignore_index : int, optional
        Class-index targets equal to this contribute no loss and no gradient, and are left out
        of the mean. Default -100. Not used for probability targets.
    reduction : {'mean', 'sum', 'none'}, optional
        ``'mean'``: sum of losses over the sum of the weights of the targets not ignored (over
        the number of rows for probability targets); ``'sum'``; ``'none'``: one loss per row.
    label_smoothing : float, optional
        In [0, 1]: the target becomes ``(1 - label_smoothing) * target + label_smoothing / C``.
    axis : int, optional
        The class axis, for inputs laid out differently from PyTorch's.
    n_threads : int, optional
        Threads to use; None uses what OpenMP would."""


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=None, n_threads=None):
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing,
                          axis, n_threads, with_grad=False)[0]


cross_entropy.__doc__ = f"""Cross-entropy between logits and targets, as PyTorch defines it.

    Equals ``torch.nn.functional.cross_entropy`` for every combination of options, computed as
    ``logsumexp(x) - x[label]`` per row (no softmax is formed, no epsilon is added).

    Parameters
    ----------{_XENT_PARAMETERS}

    Returns
    -------
    loss : numpy scalar or ndarray
        Of ``logits``'s floating dtype: a scalar for ``'mean'`` and ``'sum'``, the shape of
        ``logits`` without the class axis for ``'none'``.

    Notes
    -----
    With per-class coefficients ``c`` (``c = (1 - eps) w[y] onehot(y) + eps/C w`` for an
    index ``y``; ``c = w ((1 - eps) t + eps/C)`` for probabilities ``t``) the loss of a row is
    ``sum(c) * logsumexp(x) - sum(c * x)``. An empty batch, or one whose targets are all
    ignored, has a NaN mean, as in PyTorch.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    >>> float(fastxent.cross_entropy(logits, np.array([0, 2])))
    0.13152...
    >>> fastxent.cross_entropy(logits, np.array([0, -100]), reduction="none")
    array([0.24131, 0.     ]...)
    """


def cross_entropy_with_grad(logits, target, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, axis=None,
                            grad_output=None, out=None, n_threads=None):
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing,
                          axis, n_threads, with_grad=True, grad_output=grad_output, out=out)


cross_entropy_with_grad.__doc__ = f"""Cross-entropy and its gradient with respect to the logits, in one pass.

    The loss is `cross_entropy`'s; the gradient is what ``loss.backward()`` leaves in
    ``logits.grad`` in PyTorch. Both come from one fused kernel that reads each row once and
    writes its gradient once: no softmax array, no temporary of the logits' size.

    Parameters
    ----------{_XENT_PARAMETERS}
    grad_output : float or array_like, optional
        Scales the gradient: a scalar for ``'mean'``/``'sum'``, one value per row (the loss's
        shape) for ``'none'``. Default 1.
    out : ndarray, optional
        Array of ``logits``'s shape and dtype for the gradient; ``out=logits`` overwrites the
        logits with their gradient (no extra memory).

    Returns
    -------
    loss : numpy scalar or ndarray
        As `cross_entropy` returns it.
    grad : ndarray
        ``d loss / d logits``: ``grad_output * (sum(c) softmax(x) - c)`` per row, divided by
        the mean's denominator for ``'mean'``; exactly zero on ignored rows.

    Examples
    --------
    >>> import numpy as np, fastxent
    >>> loss, grad = fastxent.cross_entropy_with_grad(np.array([[0.0, 0.0]]), np.array([1]))
    >>> grad
    array([[ 0.5, -0.5]])
    """
