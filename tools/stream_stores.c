/*
 * tools/stream_stores.c: the C micro benchmark behind the rejected streaming-store experiments
 * (docs/performance.md, v8 item 6, and session 15). Not part of the build; AVX-512 only.
 *
 * Rows of 32000 elements, 1024 of them; per element an exp's worth of arithmetic (WORK FMAs,
 * default 13) in a first pass, then a rescale, three ways:
 *   in place          first pass writes the output, the rescale rewrites it from L2 (the
 *                     kernels' way: the output's lines are read for ownership);
 *   scratch + stream  first pass writes a scratch row, the rescale streams the output;
 *   pipelined         the rescale of row r - 1 streamed block by block while row r computes.
 * and two references without the arithmetic: memcpy row by row (rows of 128-256 KB are below
 * glibc's non-temporal threshold: ordinary stores) and y = 3 x with ordinary stores.
 * The rows are split between the threads (argument 1, default 1) in contiguous halves.
 *
 * Session 5, float, one thread, two sessions of 5 rounds (medians): in place / scratch +
 * stream / pipelined 25.8 / 27.7 / 24.0 ms and 26.6 / 29.4 / 25.3 ms.
 * Session 15, double (-DFX_DOUBLE), two threads, 5 rounds each at WORK=13 and 20:
 * streaming was no faster than in place (docs/performance.md, session 15).
 *
 *   gcc -O3 -fopenmp -mavx512f -mfma -mprefer-vector-width=512 [-DFX_DOUBLE] [-DWORK=20] \
 *       -o /tmp/stream_stores tools/stream_stores.c && /tmp/stream_stores [threads]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+1e-9*t.tv_nsec;}
#define ROWS 1024L
#define ROW 32000L
#define N (ROWS*ROW)
#define BLK 2048
#ifndef WORK
#define WORK 13
#endif
#ifdef FX_DOUBLE
typedef double T;
#define STREAM(p, v) _mm512_stream_pd(p, _mm512_mul_pd(_mm512_loadu_pd(v), _mm512_set1_pd(a)))
#define PER_VECTOR 8
#else
typedef float T;
#define STREAM(p, v) _mm512_stream_ps(p, _mm512_mul_ps(_mm512_loadu_ps(v), _mm512_set1_ps(a)))
#define PER_VECTOR 16
#endif
static inline void work(const T *x, T *y, long n) {  /* WORK fmas per element: exp-like */
    #pragma omp simd
    for (long j=0;j<n;j++){ T v=x[j]*(T)0.01, p=(T)0.001; for(int k=0;k<WORK;k++) p=p*v+(T)0.5; y[j]=p; }
}
static inline void rescale(const T *s, T *y, long n, T a){
    #pragma omp simd
    for (long j=0;j<n;j++) y[j]=s[j]*a;
}
static inline void rescale_nt(const T *s, T *y, long n, T a){
    for (long j=0;j<n;j+=PER_VECTOR) STREAM(y+j, s+j);
}
int main(int argc, char **argv){
    int nt = argc > 1 ? atoi(argv[1]) : 1;
    T *x = aligned_alloc(64, N*sizeof(T)), *y = aligned_alloc(64, N*sizeof(T));
    for (long i=0;i<N;i++){x[i]=i%7; y[i]=0;}
    for (int rep=0; rep<5; rep++){
        double t[6];
        t[0]=now();
        #pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(); long lo = ROWS*id/nt, hi = ROWS*(id+1)/nt;
            for (long r=lo;r<hi;r++){ T *xr=x+r*ROW,*yr=y+r*ROW; work(xr,yr,ROW); rescale(yr,yr,ROW,3); }
        }
        t[1]=now();
        #pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(); long lo = ROWS*id/nt, hi = ROWS*(id+1)/nt;
            T *s0 = aligned_alloc(64, ROW*sizeof(T));
            for (long r=lo;r<hi;r++){ T *xr=x+r*ROW,*yr=y+r*ROW; work(xr,s0,ROW); rescale_nt(s0,yr,ROW,3); }
            _mm_sfence();
            free(s0);
        }
        t[2]=now();
        /* pipelined: compute row r block b into cur, stream block b of row r-1 from prev */
        #pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(); long lo = ROWS*id/nt, hi = ROWS*(id+1)/nt;
            T *cur = aligned_alloc(64, ROW*sizeof(T)), *prev = aligned_alloc(64, ROW*sizeof(T));
            for (long r=lo;r<=hi;r++){
                for (long b=0;b<ROW;b+=BLK){ long len = ROW-b<BLK?ROW-b:BLK;
                    if (r<hi) work(x+r*ROW+b, cur+b, len);
                    if (r>lo) rescale_nt(prev+b, y+(r-1)*ROW+b, len, 3);
                }
                T *tmp=cur; cur=prev; prev=tmp;
            }
            _mm_sfence();
            free(cur); free(prev);
        }
        t[3]=now();
        #pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(); long lo = ROWS*id/nt, hi = ROWS*(id+1)/nt;
            for (long r=lo;r<hi;r++) memcpy(y+r*ROW, x+r*ROW, ROW*sizeof(T));
        }
        t[4]=now();
        #pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(); long lo = ROWS*id/nt, hi = ROWS*(id+1)/nt;
            for (long r=lo;r<hi;r++) rescale(x+r*ROW, y+r*ROW, ROW, 3);
        }
        t[5]=now();
        printf("in place %.1f ms, scratch+stream %.1f ms, pipelined %.1f ms | memcpy rows %.1f ms, "
               "y = 3x %.1f ms\n", 1e3*(t[1]-t[0]), 1e3*(t[2]-t[1]), 1e3*(t[3]-t[2]),
               1e3*(t[4]-t[3]), 1e3*(t[5]-t[4]));
    }
    return 0;
}
