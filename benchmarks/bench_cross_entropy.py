"""asv: cross_entropy and cross_entropy_with_grad (mean, class-index targets), with their
NumPy baselines."""

from ._common import make_classes

make_classes(["cross_entropy", "ce_grad"], globals())
