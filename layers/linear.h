// Linear (fully connected) layer, as torch.nn.functional.linear / nn.Linear:
//   y = x W^T + b        x [N, in_features], W [out_features, in_features],
//                        b [out_features] (optional), y [N, out_features]
// Backward (one GEMM each):
//   dL/dx = g W          [N, out] x [out, in]  -> [N, in]
//   dL/dW = g^T x        [out, N] x [N, in]    -> [out, in]
//   dL/db = sum_n g[n]   column sums of g      -> [out]
// The input must be 2-D: MobileNetV3 flattens its pooled features first
// (layers/flatten.h). f32 and f64 on the CPU (Eigen's GEMMs, linear_cpu.h);
// f32 and f16 on CUDA through cuBLAS (linear_cuda.h), cast to f16 under
// autocast (tensor/autocast.h).
#pragma once

#include <cstdint>
#include <string>

#include "layers/module.h"
#include "tensor/random.h"

namespace b3 {

// The shapes of one linear call, as the CPU kernels (linear_cpu.h) and the
// cuBLAS launchers (linear_cuda.h) are told them: every tensor dense
// row-major, x [batch, in], weight [out, in], bias [out], y [batch, out].
struct LinearGeometry {
  int64_t batch = 0;         // N
  int64_t in_features = 0;   // in
  int64_t out_features = 0;  // out
  DType dtype = DType::f32;  // of every tensor of the call (CPU: f32/f64, CUDA: f32/f16)
};

// x W^T + b; `bias` may be undefined (no bias).
Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor());

// nn.Linear with PyTorch's default initialization: weight and bias both
// uniform in [-1/sqrt(in_features), 1/sqrt(in_features)] (what
// kaiming_uniform_(a=sqrt(5)) reduces to), drawn from `gen`, weight first.
// Parameters "weight" [out, in] and, when bias is on, "bias" [out].
// (torchvision's MobileNetV3 re-initializes its Linear layers with
// normal(0, 0.01) weights and zero biases; the model does that, not this class.)
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator& gen);
  Linear(int64_t in_features, int64_t out_features, Generator& gen)
      : Linear(in_features, out_features, true, gen) {}

  Tensor forward(const Tensor& input) override { return linear(input, weight, bias); }
  std::string describe() const override;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], undefined without bias

 private:
  int64_t in_features_;
  int64_t out_features_;
};

}  // namespace b3
