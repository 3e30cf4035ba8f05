/*
 * fx_streamops.h: long rows whose output is written with non-temporal stores.
 *
 * Why: a kernel that writes a row with ordinary stores first reads each line of the output
 * from memory (for ownership), so a softmax or a loss gradient too large for the caches moves
 * three arrays' worth of bytes (input, output read, output written) where a copy with
 * non-temporal stores moves two. A row's output needs the row's sum, so its values cannot be
 * streamed while the row is read; and streaming them in a pass of their own, after the row,
 * left memory idle while the row was read and busy while it was written (no faster:
 * docs/performance.md, sessions 5 and 15). So the rows of a thread go through a pipeline of
 * two: while row r is read (its max, in steps of FX_STREAM_STEP elements) the output of row
 * r - 1, whose exponentials wait in a scratch row in L2, is streamed out a step at a time
 * (tools/exp_store_floor.c's "pipelined NT" first). Against the kernels that write in place,
 * softmax and the loss gradient at 1024 x 32000 and 256 x 131072: about 1.1x on one thread,
 * from even to 1.2x on two with the host's load; but 0.4-0.98x for outputs of 4 to 62 MiB,
 * which this machine's caches keep (docs/performance.md, session 16; tools/
 * stream_threshold.py): hence stream_min_bytes in _kernels.pyx.
 *
 * The values are those of fx_axpw_blocks and fx_scale_blocks (fx_rowops_impl.h), the same
 * bits: only the stores differ. Whole 64-byte lines go out with streaming stores where the
 * build has them (SSE2 and up); the few elements before a row's first line boundary and
 * after its last go through ordinary stores.
 */
#ifndef FX_STREAMOPS_H
#define FX_STREAMOPS_H

#include <stdint.h>
#include "fx_rowops.h"

#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#define FX_HAS_STREAM 1
#else
#define FX_HAS_STREAM 0
#endif

/* Elements of the other row's output streamed per step of a row's max pass (the tool above:
   64 elements of double overlapped reads and streaming stores; 2048 did not). */
#define FX_STREAM_STEP 64
#define FX_LINE_BYTES 64

/* The output of one row in flight: values a_blk[i] * e - beta * w (w NULL: - beta; with
   has_beta 0 just a_blk[i] * e), in block i of FX_ONLINE_BLOCK elements, then - gamma at
   index label (label < 0: none); zero: all zeros (an ignored row). next: the first element
   not yet written. Element type: that of the functions that use it. */
typedef struct {
    void *out;
    const void *e;
    const void *a_blk;
    const double *w;
    double beta, gamma;
    ptrdiff_t n, next, label;
    int has_beta, zero, active;
} fx_stream_t;

/* One 64-byte line from src to dst (64-byte aligned), bypassing the caches. */
static inline void fx_stream_line(void *dst, const void *src)
{
#if defined(__AVX512F__)
    _mm512_stream_si512((__m512i *)dst, _mm512_loadu_si512(src));
#elif defined(__AVX__)
    _mm256_stream_si256((__m256i *)dst, _mm256_loadu_si256((const __m256i *)src));
    _mm256_stream_si256((__m256i *)dst + 1, _mm256_loadu_si256((const __m256i *)src + 1));
#elif FX_HAS_STREAM
    for (int k = 0; k < 4; ++k) {
        _mm_stream_si128((__m128i *)dst + k, _mm_loadu_si128((const __m128i *)src + k));
    }
#else
    memcpy(dst, src, FX_LINE_BYTES);
#endif
}

/* Orders the streaming stores before what follows (the end of a kernel, or a read of what
   they wrote): they are weakly ordered. */
static inline void fx_stream_fence(void)
{
#if FX_HAS_STREAM
    _mm_sfence();
#endif
}

#define FX_T float
#define FX_NAME(op) op##_f
#include "fx_streamops_impl.h"
#undef FX_T
#undef FX_NAME

#define FX_T double
#define FX_NAME(op) op##_d
#include "fx_streamops_impl.h"
#undef FX_T
#undef FX_NAME

#endif /* FX_STREAMOPS_H */
