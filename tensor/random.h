// Seeded random numbers that are the same on every machine and compiler:
// a SplitMix64-seeded xoshiro256** generator with our own uniform and normal
// transforms (std:: distributions differ between standard libraries).
// Generators are passed explicitly; there is no global generator.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64();
  double uniform();  // [0, 1) with 53 random bits
  // The next `count` uniform() draws, in order, into out[0, count): the same
  // numbers as `count` calls, without a call per number.
  void uniforms(double* out, int64_t count);
  double normal();                 // standard normal (Box-Muller)
  uint64_t below(uint64_t bound);  // uniform integer in [0, bound), unbiased

  // Everything the numbers still to come depend on, as six 64-bit words
  // (xoshiro's four, the cached normal's bits, whether it is cached), for
  // checkpoints: set_state(state()) continues the same stream exactly.
  std::vector<uint64_t> state() const;
  // Throws std::invalid_argument unless `words` came from state() (six
  // words, not the all-zero xoshiro state, a flag of 0 or 1).
  void set_state(const std::vector<uint64_t>& words);

 private:
  uint64_t state_[4];
  double spare_normal_ = 0;
  bool has_spare_ = false;
};

// In-place initializers (CPU tensors of a floating dtype); return the tensor.
Tensor& uniform_(Tensor& t, double low, double high, Generator& gen);
Tensor& normal_(Tensor& t, double mean, double std, Generator& gen);
// He/Kaiming normal with fan_out, as torch.nn.init.kaiming_normal_(mode="fan_out",
// nonlinearity="relu"): std = sqrt(2 / fan_out), fan_out = size(0) * prod(size(2:)).
Tensor& kaiming_normal_fan_out_(Tensor& t, Generator& gen);

Tensor randn(const Shape& shape, Generator& gen, const TensorOptions& options = {});
Tensor rand(const Shape& shape, Generator& gen, const TensorOptions& options = {});
// Integers uniform in [0, high) (i64 unless options say otherwise).
Tensor randint(int64_t high, const Shape& shape, Generator& gen,
               const TensorOptions& options = TensorOptions(DType::i64));

}  // namespace b3
