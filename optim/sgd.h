// Stochastic gradient descent with momentum, as torch.optim.SGD:
//   g = grad + weight_decay * p
//   momentum > 0:  buf = g on the first step, else buf = momentum * buf + (1 - dampening) * g
//                  g = nesterov ? g + momentum * buf : buf
//   p = p - lr * g
// State per parameter (with momentum): "momentum_buffer", and "step" (to know
// the first step, where PyTorch starts the buffer from g undamped).
// On a CUDA device all parameters are updated by one fused launch
// (optim/sgd_cuda.h, the same arithmetic in f32; see optim/optimizer.h).
#pragma once

#include "optim/optimizer.h"

namespace b3 {

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class Sgd : public Optimizer {
 public:
  Sgd(std::vector<Tensor> parameters, const SgdOptions& options);
  const SgdOptions& options() const { return options_; }

 protected:
  void update(size_t index, Tensor& parameter, const Tensor& grad,
              std::vector<Tensor>& state) override;
  std::vector<std::string> state_names() const override;
  Tensor init_state(const std::string& name, const Tensor& parameter) const override;
  int device_table_lists() const override;
  std::vector<std::string> device_table_state() const override;
  void launch_device_step(const cuda::MultiTensorTable& table, DType grad_dtype, int64_t* step,
                          const cuda::LossScaleState* scaler, const cuda::Stream& stream) override;

 private:
  SgdOptions options_;
};

}  // namespace b3
