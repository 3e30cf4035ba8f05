"""The one input path of fastxent: from whatever the caller passes to rows the kernels trust.

The kernels take 2-D arrays of ``float32`` or ``float64`` whose rows are contiguous (any row
stride). Everything here brings arguments to that form, or raises a ``TypeError`` or
``ValueError`` that names the argument and what was expected:

* dtypes: ``float32``/``float64`` are used as they are; ``float16`` is computed in ``float32``
  and ``longdouble`` in ``float64`` (both cast back); integers and booleans are promoted to
  ``float64``; anything else (complex, object, strings) is a ``TypeError``;
* the class axis may be any axis: the array is viewed with that axis last and the other axes
  flattened into rows. That is a view whenever NumPy can make one, and at most one copy
  otherwise (a C-contiguous array along its last axis is never copied);
* ``out=`` is checked as NumPy checks it (shape, dtype, writeable) and written in place when
  its memory can be viewed as rows, else through one temporary. ``out`` may be an input
  (exactly): the kernels compute element ``j`` of a row from elements ``j`` of their inputs
  after any reduction over the row. A partial overlap cannot be honoured and raises;
* ``n_threads`` resolves to what OpenMP would use (``omp_get_max_threads()``, which follows
  ``OMP_NUM_THREADS`` and threadpoolctl), or a positive integer, and to 1 for small inputs.
"""
import math
import numbers
import operator
import os

import numpy as np

from . import _buffers
from ._dispatch import kernels

#: Below this many elements a call runs on one thread: starting a team costs more than it saves.
SERIAL_BELOW = 1 << 15


# ------------------------------------------------------------------------------------ dtypes

# The dtypes the kernels take, as instances: comparing a dtype with one is cheaper than with a
# scalar type (np.float32), which NumPy converts on every comparison. With cold caches, after
# a large kernel, such conversions added up to tens of microseconds per call
# (tools/cold_overhead.py).
FLOAT32, FLOAT64, INT64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)


def compute_dtype(dtype, name):
    """The dtype the kernels compute ``dtype`` in (``float32`` or ``float64``)."""
    if dtype == FLOAT32 or dtype == FLOAT64:
        return np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float32 if dtype.itemsize < 4 else np.float64)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(f"{name} must be an array of real numbers (floating point or integer); "
                    f"got dtype {dtype}")


def result_dtype(dtype):
    """The dtype of a result computed from an input of ``dtype``: floats keep theirs."""
    return np.dtype(dtype) if dtype.kind == "f" else FLOAT64


def as_array(x, name, min_ndim=1):
    """``x`` as an ndarray of real numbers with at least ``min_ndim`` dimensions."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like: {exc}") from None
    compute_dtype(arr.dtype, name)
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s); "
                         f"got an array of shape {arr.shape}")
    return arr


def normalize_axis(axis, ndim, name="axis"):
    """``axis`` as a non-negative index into ``ndim`` dimensions."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim, name)
    return axis % ndim


# -------------------------------------------------------------------------------------- rows

class Layout:
    """How an array of ``shape`` maps to rows along ``axis``.

    Attributes
    ----------
    shape : tuple
        The caller's shape.
    axis : int
        The class axis, non-negative.
    batch_shape : tuple
        ``shape`` without ``axis``: the shape of one value per row.
    n_rows, n_classes : int
        The rows the kernels see.
    dtype, result_dtype : numpy.dtype
        The dtype computed in, and the dtype given back.
    """

    def __init__(self, arr, axis, name):
        self.shape = arr.shape
        self.axis = normalize_axis(axis, arr.ndim)
        self.last = self.axis == arr.ndim - 1
        self.batch_shape = arr.shape[:self.axis] + arr.shape[self.axis + 1:]
        self.n_rows = math.prod(self.batch_shape)
        self.n_classes = arr.shape[self.axis]
        self.dtype = compute_dtype(arr.dtype, name)
        self.result_dtype = result_dtype(arr.dtype)

    def rows(self, arr):
        """``arr`` (of ``self.shape``) as contiguous rows of ``self.dtype``: at most one copy."""
        if (arr.ndim == 2 and self.last and arr.dtype == self.dtype and arr.flags.aligned
                and arr.strides[1] == arr.itemsize and arr.strides[0] % arr.itemsize == 0):
            return arr                  # the common case, without the general path's overhead
        moved = arr if self.last else np.moveaxis(arr, self.axis, -1)
        if moved.dtype != self.dtype:
            moved = np.array(moved, dtype=self.dtype, order="C")
        return _as_rows(moved, self.n_rows, self.n_classes, copy_ok=True)

    def unrows(self, rows):
        """The caller's view of kernel-shaped rows: ``(n_rows, C)`` back to ``self.shape``."""
        if self.last and rows.shape == self.shape:
            return rows
        shaped = rows.reshape(self.batch_shape + (self.n_classes,))
        return shaped if self.last else np.moveaxis(shaped, -1, self.axis)

    def check_same_shape(self, arr, name, other="x"):
        if arr.shape != self.shape:
            raise ValueError(f"{name} must have the shape of {other}, {self.shape}; "
                             f"got {arr.shape}")


def _as_rows(moved, n_rows, n_classes, copy_ok):
    """``moved`` (class axis last) as ``(n_rows, n_classes)`` with contiguous rows, or None
    when that needs a copy and ``copy_ok`` is false."""
    try:
        rows = moved.reshape((n_rows, n_classes), copy=False)
    except ValueError:
        if not copy_ok:
            return None
        return np.require(moved, requirements=["C", "A"]).reshape(n_rows, n_classes)
    # The kernels read each row as a contiguous vector (even of length 1), count row strides
    # in elements, and dereference element pointers (an unaligned one is undefined in C).
    if (rows.strides[1] != rows.itemsize or rows.strides[0] % rows.itemsize
            or not rows.flags.aligned):
        if not copy_ok:
            return None
        rows = np.require(rows, requirements=["C", "A"])
    return rows


def contiguous(arr, dtype):
    """``arr`` as an aligned, C-contiguous array of ``dtype``, copied only if need be."""
    if arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.aligned:
        return arr                      # the common case, without np.require's overhead
    return np.require(arr, dtype=dtype, requirements=["C", "A"])


def check_out(out, shape, dtype, name="out"):
    """``out`` if it is a writeable ndarray of ``shape`` and ``dtype``, else an error."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}; got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    return out


def check_no_partial_overlap(out_rows, inputs, name="out", in_place=()):
    """Raise if ``out_rows`` overlaps an input, other than by being exactly one of the inputs
    named in ``in_place`` (those the kernel reads element by element before writing).

    ``inputs`` maps argument names to the arrays the kernel will read (None: absent).
    """
    for input_name, rows in inputs.items():
        if rows is None or not np.may_share_memory(out_rows, rows):
            continue
        if (input_name in in_place
                and rows.__array_interface__["data"][0] == out_rows.__array_interface__["data"][0]
                and rows.strides == out_rows.strides and rows.shape == out_rows.shape):
            continue
        try:
            overlap = np.shares_memory(out_rows, rows, max_work=10**6)
        except np.exceptions.TooHardError:
            overlap = True
        if overlap:
            raise ValueError(f"{name} overlaps {input_name}; pass a separate array ({name} may "
                             f"be an input of its own shape exactly, to compute in place)")


class RowsOut:
    """Where a kernel writes rows for the caller's ``out`` (or a new array).

    ``rows`` is what the kernel writes; ``result()`` gives the caller's array back, copying
    from a temporary only when ``out`` could not be written directly.
    """

    def __init__(self, layout, out, inputs, name="out", in_place=None):
        self.layout, self.out = layout, out
        self._direct = False
        if out is None:
            self.rows = _buffers.empty((layout.n_rows, layout.n_classes), layout.dtype)
            return
        check_out(out, layout.shape, layout.result_dtype, name)
        rows = None
        if out.dtype == layout.dtype:
            moved = out if layout.last else np.moveaxis(out, layout.axis, -1)
            rows = _as_rows(moved, layout.n_rows, layout.n_classes, copy_ok=False)
        if rows is None:
            self.rows = np.empty((layout.n_rows, layout.n_classes), layout.dtype)
        else:
            check_no_partial_overlap(rows, inputs, name,
                                     tuple(inputs) if in_place is None else in_place)
            self.rows, self._direct = rows, True

    def result(self):
        if self._direct:
            return self.out
        res = self.layout.unrows(self.rows)
        if self.out is not None:
            np.copyto(self.out, res, casting="unsafe")
            return self.out
        return res.astype(self.layout.result_dtype, copy=False)


# ----------------------------------------------------------------------------------- threads

_state = {"forked": False}


def _after_fork_in_child():
    # GNU OpenMP's thread pool does not survive fork(): a child that starts a team after its
    # parent ran one hangs. The parent's team may be another library's (PyTorch shares
    # libgomp with us), which we cannot see, so every forked child runs serially. A child
    # started with "spawn" or "forkserver" is a fresh process and uses threads as usual.
    _state["forked"] = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def resolve_n_threads(n_threads, n_elements):
    """The number of threads for a call over ``n_elements``.

    Parameters
    ----------
    n_threads : int or None
        None: what OpenMP would use (``omp_get_max_threads()``); a positive integer: that many.
    n_elements : int
        The size of the work; small work runs on one thread.
    """
    if n_threads is None:
        n = kernels.omp_max_threads()
    elif type(n_threads) is int and n_threads >= 1:
        n = n_threads                   # the common case, without the ABC check below
    else:
        if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
            raise TypeError(f"n_threads must be a positive integer or None; got {n_threads!r}")
        n = int(n_threads)
        if n < 1:
            raise ValueError(f"n_threads must be a positive integer or None; got {n}")
    if n_elements < SERIAL_BELOW or _state["forked"] or not kernels.openmp_enabled():
        return 1
    return min(n, 1 << 16)


# ------------------------------------------------------------------------- cross-entropy args

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    return reduction


def check_label_smoothing(label_smoothing):
    try:
        value = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(f"label_smoothing must be a float in [0, 1]; "
                        f"got {label_smoothing!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {value}")
    return value


def check_weight(weight, n_classes):
    """Class weights as a contiguous float64 vector of length ``n_classes``, or None."""
    if weight is None:
        return None
    w = as_array(weight, "weight", min_ndim=0)
    if w.shape != (n_classes,):
        raise ValueError(f"weight must be a 1-D array with one value per class "
                         f"(length {n_classes}); got shape {w.shape}")
    return contiguous(w, FLOAT64)


def check_ignore_index(ignore_index):
    try:
        value = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer; got {ignore_index!r}") from None
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"ignore_index must fit in 64 bits; got {value}")
    return value
