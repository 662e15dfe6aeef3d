// Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW (amsgrad off):
//   t = t + 1
//   Adam:  g = grad + weight_decay * p           (L2 penalty in the gradient)
//   AdamW: p = p * (1 - lr * weight_decay)       (decoupled decay), g = grad
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g^2
//   p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State per parameter: "step" (i64), "exp_avg" (m), "exp_avg_sq" (v).
// On a CUDA device all parameters are updated by one fused launch
// (optim/adam_cuda.h, the same arithmetic in f32; see optim/optimizer.h).
#pragma once

#include "optim/optimizer.h"

namespace b3 {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // AdamW's default is 1e-2: use AdamW::default_options()
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> parameters, const AdamOptions& options);
  const AdamOptions& options() const { return options_; }

 protected:
  Adam(std::vector<Tensor> parameters, const AdamOptions& options, bool decoupled_weight_decay,
       const char* name);
  void update(size_t index, Tensor& parameter, const Tensor& grad,
              std::vector<Tensor>& state) override;
  std::vector<std::string> state_names() const override;
  Tensor init_state(const std::string& name, const Tensor& parameter) const override;
  int device_table_lists() const override;
  std::vector<std::string> device_table_state() const override;
  void launch_device_step(const cuda::MultiTensorTable& table, DType grad_dtype, int64_t* step,
                          const cuda::LossScaleState* scaler, const cuda::Stream& stream) override;

 private:
  AdamOptions options_;
  bool decoupled_weight_decay_;
};

class AdamW : public Adam {
 public:
  static AdamOptions default_options() {
    AdamOptions options;
    options.weight_decay = 1e-2;
    return options;
  }
  AdamW(std::vector<Tensor> parameters, const AdamOptions& options = default_options())
      : Adam(std::move(parameters), options, true, "AdamW") {}
};

}  // namespace b3
