"""``python -m fastxent``: correctness self-check and a small speed table against NumPy.

``python -m fastxent check`` runs the self-check only; ``python -m fastxent bench --help``
describes the comparison with NumPy, SciPy, PyTorch and JAX.
"""

import sys

from fastxent._bench import main

if __name__ == "__main__":
    sys.exit(main())
