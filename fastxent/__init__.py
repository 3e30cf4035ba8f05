"""fastxent: fast, exact row-wise log-sum-exp, softmax, log-softmax and cross-entropy.

Every function works on rows of a ``float32`` or ``float64`` array along an axis, in compiled
kernels that release the GIL, run over rows on OpenMP threads, and are vectorised for the
processor at hand (see `active_isa`). Gradients come as vector-Jacobian products, and the
cross-entropy loss with its gradient from one fused call.
"""
import operator

from . import _buffers, _dispatch
from ._ops import (
    cross_entropy,
    cross_entropy_with_grad,
    log_softmax,
    log_softmax_backward,
    logsumexp,
    logsumexp_backward,
    softmax,
    softmax_backward,
    softmax_jacobian,
)

__version__ = "0.1.0"

__all__ = [
    "logsumexp", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "logsumexp_backward", "softmax_jacobian", "cross_entropy", "cross_entropy_with_grad",
    "openmp_enabled", "active_isa", "available_isas", "set_buffer_cache", "__version__",
]


def openmp_enabled():
    """Whether fastxent was built with OpenMP (else every call runs on one thread).

    Returns
    -------
    bool
    """
    return _dispatch.kernels.openmp_enabled()


def active_isa():
    """The instruction set of the kernel build in use: ``'avx512'``, ``'avx2'`` or
    ``'baseline'``. The environment variable ``FASTXENT_ISA`` chooses another at import.

    Returns
    -------
    str
    """
    return _dispatch.ACTIVE


def available_isas():
    """The kernel builds installed that this processor runs, best first.

    Returns
    -------
    list of str
    """
    return list(_dispatch.AVAILABLE)


def set_buffer_cache(max_bytes):
    """Set how many bytes of large, dropped results fastxent keeps for reuse.

    A result of 32 MiB or more (a softmax, a gradient) that fastxent allocates is kept when
    the caller drops it and reused by a later call that needs the same number of bytes, which
    saves the page faults of fresh memory: in a training loop that is a third of the time of a
    1024 x 32000 loss gradient. A result the caller still refers to, directly or through any
    view, is never reused. At most two results are kept; each is a view of its buffer, so it
    does not own its data.

    Parameters
    ----------
    max_bytes : int
        The most bytes kept in all (default 2**30); 0 releases the buffers and turns the
        reuse off.

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> import fastxent
    >>> previous = fastxent.set_buffer_cache(0)   # allocate every result afresh
    >>> fastxent.set_buffer_cache(previous)
    0
    """
    if isinstance(max_bytes, bool):
        raise TypeError("max_bytes must be an integer; got a bool")
    try:
        max_bytes = operator.index(max_bytes)
    except TypeError:
        raise TypeError(f"max_bytes must be an integer; got {type(max_bytes).__name__}") from None
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0; got {max_bytes}")
    return _buffers.CACHE.resize(max_bytes)
