// Portable seeded random numbers and the tensor initializers built on them.
#include "tensor/random.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <stdexcept>
#include <string>

#include "tensor/copy_cpu.h"

namespace b3 {

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void Generator::reseed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : state_) s = splitmix64(x);
  has_spare_ = false;
}

std::vector<uint64_t> Generator::state() const {
  uint64_t spare_bits = 0;
  std::memcpy(&spare_bits, &spare_normal_, sizeof spare_bits);
  return {state_[0], state_[1], state_[2], state_[3], spare_bits, has_spare_ ? 1u : 0u};
}

void Generator::set_state(const std::vector<uint64_t>& words) {
  if (words.size() != 6 || (words[0] | words[1] | words[2] | words[3]) == 0 || words[5] > 1) {
    throw std::invalid_argument("Generator::set_state: not a generator state (" +
                                std::to_string(words.size()) +
                                " words; expected the six of Generator::state())");
  }
  for (int i = 0; i < 4; ++i) state_[i] = words[static_cast<size_t>(i)];
  std::memcpy(&spare_normal_, &words[4], sizeof spare_normal_);
  has_spare_ = words[5] == 1;
}

uint64_t Generator::next_u64() {  // xoshiro256**
  const uint64_t result = rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotl(state_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

void Generator::uniforms(double* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = uniform();
}

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_normal_;
  }
  // Box-Muller: two uniforms -> two independent standard normals.
  const double u1 = 1.0 - uniform();  // (0, 1], so log is finite
  const double u2 = uniform();
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * std::numbers::pi * u2;
  spare_normal_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

uint64_t Generator::below(uint64_t bound) {
  if (bound == 0) throw std::invalid_argument("Generator::below: bound must be positive");
  // Rejection sampling removes the modulo bias.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do {
    x = next_u64();
  } while (x >= limit);
  return x % bound;
}

// Fills `t` (any layout) with draws from `draw`, in logical order, so that
// the values do not depend on the memory format.
template <typename Draw>
static Tensor& fill_logical(Tensor& t, const char* op, Draw draw) {
  if (!t.device().is_cpu()) {
    Tensor host = empty(t.shape(), TensorOptions(t.dtype()));
    fill_logical(host, op, draw);
    t.copy_(host);
    return t;
  }
  if (!is_floating(t.dtype()) && t.dtype() != DType::i64 && t.dtype() != DType::i32) {
    throw std::invalid_argument(std::string(op) + ": unsupported dtype " + dtype_name(t.dtype()));
  }
  Tensor logical = empty(t.shape(), TensorOptions(DType::f64));
  double* p = logical.data<double>();
  for (int64_t i = 0; i < logical.numel(); ++i) p[i] = draw();
  t.copy_(logical);
  return t;
}

Tensor& uniform_(Tensor& t, double low, double high, Generator& gen) {
  return fill_logical(t, "uniform_", [&] { return low + (high - low) * gen.uniform(); });
}

Tensor& normal_(Tensor& t, double mean, double std, Generator& gen) {
  return fill_logical(t, "normal_", [&] { return mean + std * gen.normal(); });
}

Tensor& kaiming_normal_fan_out_(Tensor& t, Generator& gen) {
  if (t.dim() < 2) {
    throw std::invalid_argument("kaiming_normal_fan_out_: needs at least 2 dims, got " +
                                shape_str(t.shape()));
  }
  int64_t fan_out = t.size(0);
  for (int64_t d = 2; d < t.dim(); ++d) fan_out *= t.size(d);
  return normal_(t, 0.0, std::sqrt(2.0 / static_cast<double>(fan_out)), gen);
}

Tensor randn(const Shape& shape, Generator& gen, const TensorOptions& options) {
  Tensor t = empty(shape, options);
  return normal_(t, 0.0, 1.0, gen);
}

Tensor rand(const Shape& shape, Generator& gen, const TensorOptions& options) {
  Tensor t = empty(shape, options);
  return uniform_(t, 0.0, 1.0, gen);
}

Tensor randint(int64_t high, const Shape& shape, Generator& gen, const TensorOptions& options) {
  if (high <= 0) {
    throw std::invalid_argument("randint: high must be positive, got " + std::to_string(high));
  }
  Tensor t = empty(shape, options);
  return fill_logical(t, "randint",
                      [&] { return static_cast<double>(gen.below(static_cast<uint64_t>(high))); });
}

}  // namespace b3
