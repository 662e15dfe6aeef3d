// B3_HOST_DEVICE: marks an inline function that the host and CUDA kernels
// share (__host__ __device__ under nvcc, nothing for the host compiler), so
// one definition serves both and they cannot drift apart.
#pragma once

#if defined(__CUDACC__)
#define B3_HOST_DEVICE __host__ __device__
#else
#define B3_HOST_DEVICE
#endif
