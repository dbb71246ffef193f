// The end of a file that included ops/cpu/vectorized.h: the instruction set goes back to the
// baseline. No include guard: each such file includes it once, last.

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
