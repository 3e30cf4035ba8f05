"""asv: cross_entropy and cross_entropy_with_grad (mean), against class indices and against
class probabilities, with their NumPy baselines."""

from ._common import make_classes

make_classes(["cross_entropy", "ce_grad", "ce_prob", "ce_grad_prob"], globals())
