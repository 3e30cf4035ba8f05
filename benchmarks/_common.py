"""What the asv benchmark files share: parameters, inputs and the class factory.

Each family file names its functions; :func:`make_classes` turns every name into four
classes, so no benchmark method is written out by hand (a copied method that calls the
wrong function is the classic slip):

``<Name>``               ``time_<api>``: fastxent, over dtype x shape x n_threads
``<Name>NumPy``          ``time_<api>``: the NumPy formula (max shift, exp, sum), over dtype x shape
``<Name>Peakmem``        ``peakmem_<api>``: fastxent, dtype x one large shape
``<Name>NumPyPeakmem``   ``peakmem_<api>``: the NumPy formula, the same

Inputs are seeded (``fastxent._bench.Data``) and made in ``setup``; fastxent's ``out=`` is
allocated and pre-faulted in ``setup`` and passed wherever the function offers it, so the
timings exclude page faults. asv's peakmem is the process's peak resident memory, setup
included: for fastxent it is the inputs plus ``out`` (the saved outputs of the backward ops
are made without N x C temporaries to keep it so), so a rise means a kernel began to
allocate. The NumPy formulas are the ones ``python -m fastxent bench`` uses.
"""

import os
import sys

try:
    import fastxent
except ImportError:  # built in place (setup.py build_ext --inplace) but not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastxent

from fastxent._bench import OPS, Data

DTYPES = ["float32", "float64"]
#: a tiny input (call overhead), then the five shapes of the performance issue
SHAPES = ["1x10", "65536x10", "16384x100", "4096x1000", "1024x32000", "256x131072"]
THREADS = [1, 2]
#: peak memory only says something on a large input; one keeps the quick run short
PEAKMEM_SHAPES = ["1024x32000"]


def _shape(text):
    n, c = text.split("x")
    return int(n), int(c)


class _Benchmark:
    """Base of the generated classes: ``setup`` builds the arguments of ``op``."""

    op = None  # an Op of fastxent._bench.OPS, set by make_classes
    timeout = 300  # seconds; the NumPy float64 formulas on 256x131072 take ~1 s a call
    params = [DTYPES, SHAPES]
    param_names = ["dtype", "shape"]

    def _inputs(self, dtype, shape):
        # Data (and the logits it holds only to derive saved outputs) is dropped on return
        return self.op.arguments(Data(*_shape(shape), dtype, seed=0))


class _Fastxent(_Benchmark):
    params = [DTYPES, SHAPES, THREADS]
    param_names = ["dtype", "shape", "n_threads"]

    def setup(self, dtype, shape, n_threads=1):
        self.args, self.kwargs = self._inputs(dtype, shape)
        self.kwargs["n_threads"] = n_threads
        out = self.op.out_array(*_shape(shape), dtype)  # pre-faulted
        if out is not None:
            self.kwargs["out"] = out
        self.func = getattr(fastxent, self.op.api)


class _NumPy(_Benchmark):
    def setup(self, dtype, shape):
        self.args, self.kwargs = self._inputs(dtype, shape)
        self.func = self.op.numpy


class _FastxentPeakmem(_Fastxent):
    params = [DTYPES, PEAKMEM_SHAPES]
    param_names = ["dtype", "shape"]


class _NumPyPeakmem(_NumPy):
    params = [DTYPES, PEAKMEM_SHAPES]
    param_names = ["dtype", "shape"]


_KINDS = [("", _Fastxent, "time"), ("NumPy", _NumPy, "time"),
          ("Peakmem", _FastxentPeakmem, "peakmem"), ("NumPyPeakmem", _NumPyPeakmem, "peakmem")]


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def _benchmark_method(kind, api):
    def method(self, *params):
        self.func(*self.args, **self.kwargs)

    method.__name__ = method.__qualname__ = f"{kind}_{api}"
    return method


def make_classes(op_names, namespace):
    """Add the four benchmark classes of each op in ``op_names`` to ``namespace``.

    Parameters
    ----------
    op_names : list of str
        Keys of ``fastxent._bench.OPS``.
    namespace : dict
        The ``globals()`` of the benchmark module, where asv finds the classes.
    """
    for name in op_names:
        op = OPS[name]
        for suffix, base, kind in _KINDS:
            method = _benchmark_method(kind, op.api)
            cls = type(_camel(op.title or op.api) + suffix, (base,),
                       {"op": op, method.__name__: method, "__module__": namespace["__name__"],
                        "__doc__": f"{kind} of {base.__name__.strip('_')} {op.api}"})
            namespace[cls.__name__] = cls
