"""Choose the build of the kernels that this processor runs best.

setup.py compiles ``src/_kernels.pyx`` once per instruction set (``_kernels_baseline``,
``_kernels_avx2``, ``_kernels_avx512``). The baseline build runs on any processor of the
architecture, so it is imported first and asked what the processor supports; then the best
supported build is imported. Dispatching per module, rather than per call, leaves no cost in
the kernels themselves.

The environment variable ``FASTXENT_ISA`` (``baseline``, ``avx2`` or ``avx512``) selects a
build, for comparisons and tests; a build the processor cannot run is refused with a warning.
"""
import importlib
import importlib.util
import os
import warnings

#: Instruction sets of the kernel builds, best first.
ISAS = ("avx512", "avx2", "baseline")

_baseline = importlib.import_module("fastxent._kernels_baseline")
_supported = {
    "avx512": _baseline.cpu_has_avx512(),
    "avx2": _baseline.cpu_has_avx2(),
    "baseline": True,
}


def _is_built(isa):
    return importlib.util.find_spec(f"fastxent._kernels_{isa}") is not None


#: Builds that are installed and that this processor runs, best first.
AVAILABLE = tuple(isa for isa in ISAS if _supported[isa] and _is_built(isa))


def _choose():
    requested = os.environ.get("FASTXENT_ISA", "").strip().lower()
    if requested and requested not in AVAILABLE:
        warnings.warn(
            f"FASTXENT_ISA={requested!r} is not available here (choose from {list(AVAILABLE)}); "
            f"using {AVAILABLE[0]!r}",
            RuntimeWarning,
            stacklevel=3,
        )
        requested = ""
    return requested or AVAILABLE[0]


#: The instruction set of the build in use.
ACTIVE = _choose()


def gathers_are_fast(path="/sys/devices/system/cpu/vulnerabilities/gather_data_sampling"):
    """False where Linux reports the Gather Data Sampling mitigation in microcode (Intel
    Skylake to Ice Lake/Tiger Lake), which makes gather instructions several times slower than
    the scalar loads they replace; True elsewhere, and where nothing is reported."""
    try:
        with open(path) as fh:
            return not fh.read().startswith("Mitigation")
    except OSError:
        return True


#: The block thresholds (``set_block_max_classes(read, write)``, each a (float32, float64)
#: pair of the largest class counts computed in blocks) for the processor makers whose cores
#: want others than the build's defaults, which were measured on an Intel Xeon (Sapphire
#: Rapids class). On AMD Zen 5 (EPYC) float64 blocks win below 16 classes (1.3-1.8x at 12
#: and 14), are even at 16-20, and lose from 28 on (rows 1.2-2x faster at 28-48);
#: float32's crossovers stayed near the defaults (tools/block_vs_rows.py, docs/performance.md,
#: session 11).
BLOCK_MAX_CLASSES = {"AuthenticAMD": ((56, 15), (40, 15))}

_vendor = _baseline.cpu_vendor()


def configured(isa):
    """The kernel module of the build for ``isa`` (one of AVAILABLE), set for this processor:
    gathers where they are fast, the block thresholds of its maker. The public functions use
    ``kernels``, the module of ACTIVE; the others are for comparisons (benchmarks/bench_isa.py)."""
    module = importlib.import_module(f"fastxent._kernels_{isa}")
    module.set_gathers(gathers_are_fast())
    if _vendor in BLOCK_MAX_CLASSES:
        module.set_block_max_classes(*BLOCK_MAX_CLASSES[_vendor])
    return module


#: The kernel module in use.
kernels = configured(ACTIVE)

_specialised = {}


def kernel(name, dtype):
    """The kernel ``name`` of the build in use, specialised for ``dtype`` (float32/float64).

    The kernels are fused-type Cython functions; calling one directly costs a dispatch on the
    argument types every time (a few microseconds, as much as a small call's whole work), so
    the public functions call the specialisation for the dtype they validated.
    """
    key = (name, dtype.char)
    try:
        return _specialised[key]
    except KeyError:
        fused = getattr(kernels, name)
        fn = fused.__signatures__["float" if dtype.char == "f" else "double"]
        _specialised[key] = fn
        return fn
