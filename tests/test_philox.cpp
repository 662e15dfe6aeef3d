// Philox4x32-10 (tensor/philox.h), the generator CUDA dropout draws its masks
// from, checked on the host (the same header runs on the device): the
// published known-answer vectors of Random123's kat_vectors, the counter
// layout of element i, and the keep rate and determinism of dropout's keep
// decision.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "tensor/philox.h"

using namespace b3;

namespace {

void check_block(const philox::Block& got, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  CHECK(got.word[0] == a);
  CHECK(got.word[1] == b);
  CHECK(got.word[2] == c);
  CHECK(got.word[3] == d);
}

}  // namespace

TEST_CASE("philox4x32-10: the published known answers") {
  check_block(philox::philox4x32_10({{0, 0, 0, 0}}, 0, 0), 0x6627e8d5, 0xe169c58d, 0xbc57ac4c,
              0x9b00dbd8);
  check_block(philox::philox4x32_10({{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff,
                                    0xffffffff),
              0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd);
  check_block(philox::philox4x32_10({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822,
                                    0x299f31d0),
              0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1);
}

TEST_CASE("philox: block_of puts the block index in the counter's low words, the key in the key") {
  const uint64_t key = 0x299f31d0a4093822ull;
  const uint64_t block = 0x85a308d3243f6a88ull;
  const philox::Block direct =
      philox::philox4x32_10({{0x243f6a88, 0x85a308d3, 0, 0}}, 0xa4093822, 0x299f31d0);
  const philox::Block via = philox::block_of(key, block);
  for (int j = 0; j < 4; ++j) CHECK(via.word[j] == direct.word[j]);
  // A different key or block gives a different block.
  CHECK(philox::block_of(key + 1, block).word[0] != via.word[0]);
  CHECK(philox::block_of(key, block + 1).word[0] != via.word[0]);
}

TEST_CASE("philox dropout: the keep rate is 1 - p within sampling error, and fixed by the key") {
  constexpr int64_t kBlocks = 1 << 18;  // 2^20 decisions
  for (const double p : std::initializer_list<double>{0.0, 0.1, 0.2, 0.5, 0.7, 0.999}) {
    CAPTURE(p);
    const uint32_t threshold = philox::drop_threshold(p);
    int64_t kept = 0;
    for (int64_t b = 0; b < kBlocks; ++b) {
      const philox::Block words = philox::block_of(1234567, static_cast<uint64_t>(b));
      for (uint32_t w : words.word) kept += philox::keeps(w, threshold) ? 1 : 0;
    }
    const double n = 4.0 * kBlocks;
    const double rate = static_cast<double>(kept) / n;
    // 5 standard deviations of a binomial proportion (a false failure about
    // once in 3.5 million runs), plus the 2^-24 resolution of the threshold.
    const double sigma = std::sqrt(p * (1.0 - p) / n);
    CHECK(std::abs(rate - (1.0 - p)) <= 5.0 * sigma + 1.0 / 16777216.0);
  }
  CHECK(philox::drop_threshold(1.0) == 16777216u);  // nothing passes (word >> 8 < 2^24)
  CHECK_FALSE(philox::keeps(0xffffffffu, philox::drop_threshold(1.0)));
  CHECK(philox::keeps(0u, philox::drop_threshold(0.0)));
  // Determinism: the same key and block give the same words every time.
  const philox::Block a = philox::block_of(99, 7), b = philox::block_of(99, 7);
  for (int j = 0; j < 4; ++j) CHECK(a.word[j] == b.word[j]);
}
