"""fastxent: fast, exact row-wise log-sum-exp, softmax, log-softmax and cross-entropy.

Every function works on rows of a ``float32`` or ``float64`` array along an axis, in compiled
kernels that release the GIL, run over rows on OpenMP threads, and are vectorised for the
processor at hand (see `active_isa`). Gradients come as vector-Jacobian products, and the
cross-entropy loss with its gradient from one fused call.
"""
from . import _dispatch
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
    "openmp_enabled", "active_isa", "available_isas", "__version__",
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
