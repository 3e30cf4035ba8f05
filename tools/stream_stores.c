/*
 * tools/stream_stores.c: the C micro benchmark behind the rejected streaming-store experiment
 * (docs/performance.md, v8, item 6). Not part of the build; AVX-512 only.
 *
 * Rows of 32000 floats, 1024 of them; per element an exp's worth of arithmetic (13 FMAs) in
 * a first pass, then a rescale, three ways:
 *   in place          first pass writes the output, the rescale rewrites it from L2 (the
 *                     kernels' way: the output's lines are read for ownership);
 *   scratch + stream  first pass writes a scratch row, the rescale streams the output;
 *   pipelined         the rescale of row r - 1 streamed block by block while row r computes.
 * Measured on the project's machine, two sessions of 5 rounds: 25.8 / 27.7 / 24.0 ms and
 * 26.6 / 29.4 / 25.3 ms (medians); single rounds scatter by 10%.
 *
 *   gcc -O3 -fopenmp-simd -mavx512f -mfma -mprefer-vector-width=512 -o /tmp/stream_stores \
 *       tools/stream_stores.c && /tmp/stream_stores
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+1e-9*t.tv_nsec;}
#define ROWS 1024L
#define ROW 32000L
#define N (ROWS*ROW)
#define BLK 2048
typedef float T;
static inline void work(const T *x, T *y, long n) {  /* ~15 fma per element: exp-like */
    #pragma omp simd
    for (long j=0;j<n;j++){ T v=x[j]*0.01f, p=0.001f; for(int k=0;k<13;k++) p=p*v+0.5f; y[j]=p; }
}
static inline void rescale(const T *s, T *y, long n, T a){
    #pragma omp simd
    for (long j=0;j<n;j++) y[j]=s[j]*a;
}
static inline void rescale_nt(const T *s, T *y, long n, T a){
    long j=0;
    for (;j<n;j+=16) _mm512_stream_ps(y+j, _mm512_mul_ps(_mm512_loadu_ps(s+j), _mm512_set1_ps(a)));
}
int main(void){
    T *x = aligned_alloc(64, N*4), *y = aligned_alloc(64, N*4), *s0 = aligned_alloc(64, ROW*4), *s1 = aligned_alloc(64, ROW*4);
    for (long i=0;i<N;i++){x[i]=i%7; y[i]=0;}
    for (int rep=0; rep<5; rep++){
        double t0=now();
        for (long r=0;r<ROWS;r++){ T *xr=x+r*ROW,*yr=y+r*ROW; work(xr,yr,ROW); rescale(yr,yr,ROW,3.0f); }
        double t1=now();
        for (long r=0;r<ROWS;r++){ T *xr=x+r*ROW,*yr=y+r*ROW; work(xr,s0,ROW); rescale_nt(s0,yr,ROW,3.0f); }
        _mm_sfence();
        double t2=now();
        /* pipelined: compute row r block b into cur, stream block b of row r-1 from prev */
        T *cur=s0,*prev=s1;
        for (long r=0;r<=ROWS;r++){
            for (long b=0;b<ROW;b+=BLK){ long len = ROW-b<BLK?ROW-b:BLK;
                if (r<ROWS) work(x+r*ROW+b, cur+b, len);
                if (r>0) rescale_nt(prev+b, y+(r-1)*ROW+b, len, 3.0f);
            }
            T *t=cur; cur=prev; prev=t;
        }
        _mm_sfence();
        double t3=now();
        printf("old %.1f ms, scratch+stream %.1f ms, pipelined %.1f ms\n",1e3*(t1-t0),1e3*(t2-t1),1e3*(t3-t2));
    }
    return 0;
}
