/*
 * fx_platform.h: what the build and the processor offer, asked at run time.
 *
 * OpenMP may be missing (setup.py then builds a serial extension); the CPU feature tests decide
 * which ISA build of the kernels fastxent imports. They are asked from the baseline build, which
 * runs on any x86-64 processor, before an AVX2 or AVX-512 build is loaded.
 */
#ifndef FX_PLATFORM_H
#define FX_PLATFORM_H

#ifdef _OPENMP
#include <omp.h>
static inline int fx_openmp_enabled(void) { return 1; }
static inline int fx_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int fx_openmp_enabled(void) { return 0; }
static inline int fx_omp_max_threads(void) { return 1; }
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
/* __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0). */
static inline int fx_cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static inline int fx_cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && fx_cpu_has_avx2();
}

#include <cpuid.h>
#include <string.h>
/* The processor's maker as CPUID leaf 0 spells it ("GenuineIntel", "AuthenticAMD"), in
   out[13]; "" where CPUID has no leaf 0. */
static inline void fx_cpu_vendor(char *out)
{
    unsigned int eax, ebx, ecx, edx;
    out[0] = '\0';
    if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
        memcpy(out, &ebx, 4);
        memcpy(out + 4, &edx, 4);
        memcpy(out + 8, &ecx, 4);
        out[12] = '\0';
    }
}
#else
static inline int fx_cpu_has_avx2(void) { return 0; }
static inline int fx_cpu_has_avx512(void) { return 0; }
static inline void fx_cpu_vendor(char *out) { out[0] = '\0'; }
#endif

#endif /* FX_PLATFORM_H */
