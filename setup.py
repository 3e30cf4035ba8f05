"""Build of fastxent's compiled core.

The kernels (src/_kernels.pyx) are compiled once per instruction set, as the extension modules
``fastxent._kernels_<isa>``; ``fastxent/_dispatch.py`` imports the best one the processor
supports. This is how a wheel stays portable (no -march=native) and still runs AVX-512 code
where it can: the vector loops and the inline exp are compiled for each target, with no
per-call dispatch cost.

OpenMP is detected by compiling and running a small program (as scikit-learn does); without it
the extension is built serially, with a warning. Environment variables:

FASTXENT_REQUIRE_OPENMP=1   fail instead of building serially
FASTXENT_ISAS=avx2          build only these variants, and baseline (default: all the compiler
                            targets)
FASTXENT_SANITIZE=address,undefined
                            build with these sanitizers, -O1 -g (for the memory-safety runs)
"""
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = "src"
GENERATED = os.path.join("build", "fastxent_pyx")

# Flags per variant. baseline is whatever the compiler targets by default (SSE2 on x86-64).
X86_ISAS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma"],
    # GCC prefers 256-bit vectors on Intel cores unless told otherwise; 512-bit ones make the
    # exp-heavy loops 30-50% faster here.
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512cd", "-mavx512vl", "-mavx512bw",
               "-mavx512dq", "-mprefer-vector-width=512"],
}
# Never -ffast-math: it breaks inf/NaN and switches flush-to-zero on for the whole process.
# These two only let the compiler vectorise: no errno from libm, no trapping FP exceptions.
COMMON_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]

OPENMP_TEST = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
""")


def requested_isas():
    """The variants to build: all on x86-64 with a GCC-like compiler, else baseline only."""
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        available = ["baseline"]
    else:
        available = list(X86_ISAS)
    wanted = os.environ.get("FASTXENT_ISAS")
    if not wanted:
        return available
    isas = [isa.strip() for isa in wanted.split(",") if isa.strip()]
    unknown = set(isas) - set(available)
    if unknown:
        raise SystemExit(f"FASTXENT_ISAS: choose from {available}; got {isas}")
    # The baseline build is always built: fastxent imports it first, to ask the processor
    # which other build it can run. (Refusing a list without it once let a build stop while
    # a timing script went on with the previous one: docs/performance.md, v9.)
    return ["baseline"] + [isa for isa in isas if isa != "baseline"]


def kernel_sources(isas):
    """One copy of _kernels.pyx per variant, named after its module (Cython names the module
    init function after the file). The copies live under build/ and are never committed."""
    os.makedirs(GENERATED, exist_ok=True)
    with open(os.path.join(SRC, "_kernels.pyx")) as f:
        text = f.read()
    paths = {}
    for isa in isas:
        path = os.path.join(GENERATED, f"_kernels_{isa}.pyx")
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
        paths[isa] = path
    return paths


def compiler_accepts(compiler, flags, source, run=False):
    """Whether the compiler builds (and, with run=True, runs) source with flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "check.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            if not run:
                return True
            exe = os.path.join(tmp, "check")
            compiler.link_executable(objects, exe, extra_postargs=flags)
            return subprocess.run([exe], capture_output=True, text=True).stdout.strip() == "1"
        except Exception:
            return False


class BuildExt(build_ext):
    """Adds the OpenMP, optimisation, ISA and sanitizer flags once the compiler is known."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:       # the ISA variants compile independently
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        openmp = ["/openmp"] if msvc else ["-fopenmp"]
        if compiler_accepts(self.compiler, openmp, OPENMP_TEST, run=True):
            compile_openmp = link_openmp = openmp
        else:
            message = ("fastxent: the compiler does not support OpenMP; building a serial "
                       "extension (n_threads will have no effect)")
            if os.environ.get("FASTXENT_REQUIRE_OPENMP") == "1":
                raise SystemExit(message)
            warnings.warn(message)
            link_openmp = []
            # -fopenmp-simd honours the `omp simd` pragmas without the threading runtime.
            simd = ["-fopenmp-simd"]
            compile_openmp = simd if compiler_accepts(self.compiler, simd, "int x;") else []
        common = [] if msvc else list(COMMON_FLAGS)
        link_extra = []
        sanitize = os.environ.get("FASTXENT_SANITIZE")
        if sanitize:
            common = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}",
                      "-fno-sanitize-recover=all", "-fno-math-errno", "-fno-trapping-math"]
            link_extra = [f"-fsanitize={sanitize}"]
        for ext in self.extensions:
            isa = ext.name.rsplit("_", 1)[-1]
            isa_flags = [] if msvc else X86_ISAS.get(isa, [])
            ext.extra_compile_args = common + compile_openmp + isa_flags
            ext.extra_link_args = link_openmp + link_extra
        super().build_extensions()


def extensions():
    from Cython.Build import cythonize

    paths = kernel_sources(requested_isas())
    exts = [
        Extension(f"fastxent._kernels_{isa}", [path], include_dirs=[SRC],
                  depends=sorted(glob.glob(os.path.join(SRC, "*.h"))),
                  define_macros=[("CYTHON_CCOMPLEX", "0")])
        for isa, path in paths.items()
    ]
    return cythonize(exts, include_path=[SRC], language_level=3, build_dir=None,
                     compiler_directives={"embedsignature": True})


if __name__ == "__main__":
    if "clean" in sys.argv:
        shutil.rmtree(GENERATED, ignore_errors=True)
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
