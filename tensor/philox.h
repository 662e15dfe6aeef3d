// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011), the counter-based generator behind curand's and PyTorch's
// CUDA dropout: a pure function of a 64-bit key and a 128-bit counter that
// gives four 32-bit words. Element i of a random tensor takes word i % 4 of
// the block at counter i / 4, so every GPU thread computes its own elements
// with no state to share, and the host computes the very same values (this
// header compiles for both; tests/test_philox.cpp checks the published
// known-answer vectors on the host, and tests/test_cuda_dropout.cpp that the
// device agrees).
//
// Dropout's keep decision from one word: keep iff (word >> 8) >= threshold,
// threshold = ceil(p * 2^24): an exact integer comparison (the top 24 bits
// are a uniform in [0, 1) with 2^-24 resolution), so the host and the device
// agree bit for bit and the keep rate is 1 - threshold / 2^24, within 2^-24
// of 1 - p.
#pragma once

#include <cmath>
#include <cstdint>

#include "tensor/host_device.h"

namespace b3::philox {

struct Block {
  uint32_t word[4];
};

// The high and low halves of the 64-bit product a * b.
B3_HOST_DEVICE inline void multiply_high_low(uint32_t a, uint32_t b, uint32_t& high,
                                             uint32_t& low) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  high = static_cast<uint32_t>(product >> 32);
  low = static_cast<uint32_t>(product);
}

// Ten rounds of Philox4x32 on `counter` under `key` (the key is bumped by
// the Weyl constants before rounds 2..10).
B3_HOST_DEVICE inline Block philox4x32_10(Block counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMultiplier0 = 0xD2511F53u;
  constexpr uint32_t kMultiplier1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
  constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1
  uint32_t* c = counter.word;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kWeyl0;
      key1 += kWeyl1;
    }
    uint32_t high0, low0, high1, low1;
    multiply_high_low(kMultiplier0, c[0], high0, low0);
    multiply_high_low(kMultiplier1, c[2], high1, low1);
    const Block next{{high1 ^ c[1] ^ key0, low1, high0 ^ c[3] ^ key1, low0}};
    c[0] = next.word[0];
    c[1] = next.word[1];
    c[2] = next.word[2];
    c[3] = next.word[3];
  }
  return counter;
}

// The four words for elements 4*block .. 4*block + 3 of the stream `key`.
B3_HOST_DEVICE inline Block block_of(uint64_t key, uint64_t block) {
  const Block counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}};
  return philox4x32_10(counter, static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
}

// ceil(p * 2^24) for p in [0, 1]: the keep threshold of dropout with drop
// probability p (2^24 for p = 1: nothing is kept).
inline uint32_t drop_threshold(double p) {
  return static_cast<uint32_t>(std::ceil(p * 16777216.0));
}

B3_HOST_DEVICE inline bool keeps(uint32_t word, uint32_t threshold) {
  return (word >> 8) >= threshold;
}

}  // namespace b3::philox
