// Elementwise CPU loops shared by the tensor ops (tensor/ops.cpp) and the
// layers' kernels: out[i] = op(inputs at i) over a dense array, vectorized in 64-byte vectors
// (GCC/Clang vector extensions, so the same `op` serves float and double, scalar and vector), split
// between OpenMP threads, and written with non-temporal ("streaming") stores when the output is
// large.
//
// Why streaming stores: an ordinary store to a line that is not in cache
// first reads the line from memory (read for ownership), so producing an
// output costs two memory transfers per byte. An output much larger than the
// caches gains nothing from being cached on its way out, and a streaming
// store writes it in one transfer. On this project's 2-core machines a 51 MB
// read-modify-write pass ran at 13-16 GB/s with ordinary stores and 19-25 GB/s
// streaming, and the next pass read it back no slower. Outputs below
// kStreamingBytes (or not 64-byte aligned) use ordinary stores: they may still
// be in cache when the next op reads them.
//
// Inputs are plain arrays (element i) or Periodic patterns: a per-channel
// constant along an NHWC tensor, element i reading pattern[i % period].
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace b3::cpu {

constexpr int64_t kStreamingBytes = int64_t{8} << 20;

// One 64-byte vector of T.
template <typename T>
struct Vec64 {
  typedef T type __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 64 / static_cast<int64_t>(sizeof(T));
  static type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  // `stream` requires p to be 64-byte aligned.
  static void store(T* p, type v, bool stream) {
#if defined(__AVX512F__)
    if (stream) {
      if constexpr (std::is_same_v<T, float>) {
        _mm512_stream_ps(p, reinterpret_cast<__m512&>(v));
      } else {
        _mm512_stream_pd(p, reinterpret_cast<__m512d&>(v));
      }
      return;
    }
#endif
    (void)stream;
    std::memcpy(p, &v, sizeof v);
  }
};

// A constant repeating along the array with `period` elements (a multiple of
// the vector lanes): element i is pattern[i % period]. `pattern` must hold
// period + 64 / sizeof(T) values, the first ones repeated at the end, so a
// vector starting anywhere in the period can be loaded whole.
template <typename T>
struct Periodic {
  const T* pattern;
};

namespace elementwise_detail {

template <typename T>
inline T scalar_at(const T* p, int64_t i, int64_t) {
  return p[i];
}
template <typename T>
inline T scalar_at(const Periodic<T>& p, int64_t, int64_t j) {
  return p.pattern[j];
}
template <typename T>
inline typename Vec64<T>::type vector_at(const T* p, int64_t i, int64_t) {
  return Vec64<T>::load(p + i);
}
template <typename T>
inline typename Vec64<T>::type vector_at(const Periodic<T>& p, int64_t, int64_t j) {
  return Vec64<T>::load(p.pattern + j);
}

}  // namespace elementwise_detail

// Whether an output of n elements at `out` is written with streaming stores.
template <typename T>
bool use_streaming(const T* out, int64_t n) {
  return n * static_cast<int64_t>(sizeof(T)) >= kStreamingBytes &&
         reinterpret_cast<uintptr_t>(out) % 64 == 0;
}

// The loop of map_elements over [first, end) on the calling thread. `first`
// must be a multiple of the vector lanes; elements past the last whole vector
// are done one by one. With `stream`, out + first must be 64-byte aligned and
// the caller must _mm_sfence() (stream_fence()) before other threads read out.
template <typename T, typename Op, typename... Inputs>
void map_range(int64_t first, int64_t end, T* out, int64_t period, bool stream, const Op& op,
               const Inputs&... inputs) {
  using namespace elementwise_detail;
  using V = Vec64<T>;
  const int64_t vector_end = first + (end - first) / V::lanes * V::lanes;
  int64_t j = period > 0 ? first % period : 0;
  for (int64_t i = first; i < vector_end; i += V::lanes) {
    V::store(out + i, op(vector_at(inputs, i, j)...), stream);
    if (period > 0) {
      j += V::lanes;
      if (j >= period) j -= period;
    }
  }
  for (int64_t i = vector_end; i < end; ++i)
    out[i] = op(scalar_at(inputs, i, period > 0 ? i % period : 0)...);
}

// Orders this thread's streaming stores before what follows (a barrier).
inline void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

// out[i] = op(input_0 at i, input_1 at i, ...) for i in [0, n). `op` is
// called with scalars (T) and with vectors (Vec64<T>::type) and must give the
// same values for both. `period` is the period of the Periodic inputs (a
// multiple of Vec64<T>::lanes), or 0 when there are none.
//
// Threads take chunks of kMapChunk elements as they finish (dynamic
// scheduling), not one equal share each: on a shared machine one core is
// often slower than the other, and with equal shares the faster thread
// waited for it at the end of every op. Each element's value does not
// depend on which thread computes it.
constexpr int64_t kMapChunk = int64_t{1} << 15;

template <typename T, typename Op, typename... Inputs>
void map_elements(int64_t n, T* out, int64_t period, const Op& op, const Inputs&... inputs) {
  const bool stream = use_streaming(out, n);
  const bool parallel = n > (int64_t{1} << 16);
  const int64_t chunks = (n + kMapChunk - 1) / kMapChunk;  // kMapChunk: a multiple of the lanes
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t first = chunk * kMapChunk;
      map_range(first, std::min(n, first + kMapChunk), out, period, stream, op, inputs...);
    }
    if (stream) stream_fence();
  }
}

// A Periodic pattern from `period` values: the values, then the first
// Vec64<T>::lanes of them again (see Periodic). `storage` must hold
// period + Vec64<T>::lanes elements.
template <typename T, typename Value>
Periodic<T> make_periodic(T* storage, int64_t period, const Value& value_of_channel,
                          int64_t channels) {
  for (int64_t j = 0; j < period + Vec64<T>::lanes; ++j)
    storage[j] = static_cast<T>(value_of_channel(j % channels));
  return Periodic<T>{storage};
}

// The period of a per-channel constant along an NHWC array: the least common
// multiple of C and the vector lanes.
template <typename T>
int64_t channel_period(int64_t channels) {
  int64_t a = channels, b = Vec64<T>::lanes;
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return channels / a * Vec64<T>::lanes;
}

}  // namespace b3::cpu
