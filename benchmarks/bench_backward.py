"""asv: softmax_backward, log_softmax_backward and logsumexp_backward (with ``lse=``),
with their NumPy baselines."""

from ._common import make_classes

make_classes(["softmax_backward", "log_softmax_backward", "logsumexp_backward"], globals())
