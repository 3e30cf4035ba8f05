"""asv: logsumexp, softmax and log_softmax, with their NumPy baselines."""

from ._common import make_classes

make_classes(["logsumexp", "softmax", "log_softmax"], globals())
