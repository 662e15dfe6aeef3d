// Dropout, as torch.nn.functional.dropout / nn.Dropout (inverted dropout):
// in training each element is zeroed with probability p and the kept ones are
// scaled by 1/(1-p), so the expected value is unchanged and evaluation needs
// no rescaling:
//   y = x * m,   m_i = 1/(1-p) with probability 1-p, else 0
//   dL/dx = g * m (the same mask, saved by the autograd node)
// In evaluation mode, or with p = 0, the input itself is returned; p = 1
// gives zeros (and a zero gradient). p outside [0, 1] is an error.
//
// The mask is drawn in logical (row-major N, C, H, W) order, so a seed gives
// the same mask for either memory format; the output keeps the input's
// layout. On the CPU it takes one uniform per element from the Generator
// passed in; on CUDA it is drawn on the device by Philox4x32-10 under a key
// that is the Generator's next 64-bit value (tensor/philox.h): deterministic
// for a seed, but not the CPU's mask.
#pragma once

#include <cstdint>
#include <string>

#include "layers/module.h"
#include "tensor/random.h"

namespace b3 {

Tensor dropout(const Tensor& input, double p, bool training, Generator& gen);

// nn.Dropout(p). Owns its Generator, seeded at construction, so a model's
// masks are reproducible from its seed; active only while is_training().
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, uint64_t seed = 0);
  Tensor forward(const Tensor& x) override { return dropout(x, p_, is_training(), generator_); }
  std::string describe() const override;

  double p() const { return p_; }
  Generator& generator() { return generator_; }  // e.g. to reseed between runs

 private:
  double p_;
  Generator generator_;
};

}  // namespace b3
