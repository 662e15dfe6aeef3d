// Adam's and AdamW's update: on the CPU one loop over each parameter's
// elements, the bias corrections computed once per tensor in double; on CUDA
// the fused launch of optim/adam_cuda.h (bias corrections from the device
// step counter, also in double).
#include "optim/adam.h"

#include <cmath>
#include <stdexcept>

#include "optim/adam_cuda.h"

namespace b3 {

namespace {

// The per-tensor constants of one update, in the parameter's type.
template <typename T>
struct AdamConstants {
  T decay, l2, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
      step_size;
};

// One parameter's update: a plain function of plain pointers and values, so
// the loop vectorizes with unit-stride loads (read through a lambda's closure
// or an options reference, the constants and pointers might change with each
// store, as sgd.cpp's loop explains).
template <typename T>
void adam_loop(T* p, const T* g, T* m, T* v, int64_t n, AdamConstants<T> c) {
  const T decay = c.decay, l2 = c.l2, beta1 = c.beta1, one_minus_beta1 = c.one_minus_beta1;
  const T beta2 = c.beta2, one_minus_beta2 = c.one_minus_beta2;
  const T bias_correction2_sqrt = c.bias_correction2_sqrt, eps = c.eps, step_size = c.step_size;
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    const T gi = g[i] + l2 * p[i];
    m[i] = beta1 * m[i] + one_minus_beta1 * gi;
    v[i] = beta2 * v[i] + one_minus_beta2 * gi * gi;
    const T denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;
    p[i] -= step_size * m[i] / denom;
  }
}

}  // namespace

Adam::Adam(std::vector<Tensor> parameters, const AdamOptions& options)
    : Adam(std::move(parameters), options, false, "Adam") {}

Adam::Adam(std::vector<Tensor> parameters, const AdamOptions& options, bool decoupled,
           const char* name)
    : Optimizer(std::move(parameters), options.lr, name),
      options_(options),
      decoupled_weight_decay_(decoupled) {
  auto fail = [name](const std::string& what) {
    throw std::invalid_argument(std::string(name) + ": invalid " + what);
  };
  if (!(options.eps >= 0.0)) fail("eps " + std::to_string(options.eps));
  if (!(options.beta1 >= 0.0 && options.beta1 < 1.0))
    fail("beta1 " + std::to_string(options.beta1));
  if (!(options.beta2 >= 0.0 && options.beta2 < 1.0))
    fail("beta2 " + std::to_string(options.beta2));
  if (!(options.weight_decay >= 0.0)) fail("weight_decay " + std::to_string(options.weight_decay));
}

std::vector<std::string> Adam::state_names() const { return {"step", "exp_avg", "exp_avg_sq"}; }

Tensor Adam::init_state(const std::string& name, const Tensor& parameter) const {
  if (name == "step") return zeros({}, DType::i64);
  return Optimizer::init_state(name, parameter);
}

void Adam::update(size_t, Tensor& parameter, const Tensor& grad, std::vector<Tensor>& state) {
  const AdamOptions& o = options_;
  int64_t* step = state[0].data<int64_t>();
  ++*step;
  const double t = static_cast<double>(*step);
  const double learning_rate = lr();
  const double bias_correction1 = 1.0 - std::pow(o.beta1, t);
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, t));
  const double step_size = learning_rate / bias_correction1;
  const double decay = decoupled_weight_decay_ ? 1.0 - learning_rate * o.weight_decay : 1.0;
  const double l2 = decoupled_weight_decay_ ? 0.0 : o.weight_decay;
  dispatch_float(parameter.dtype(), name_, [&](auto tag) {
    using T = decltype(tag);
    const AdamConstants<T> c{static_cast<T>(decay),
                             static_cast<T>(l2),
                             static_cast<T>(o.beta1),
                             static_cast<T>(1.0 - o.beta1),
                             static_cast<T>(o.beta2),
                             static_cast<T>(1.0 - o.beta2),
                             static_cast<T>(bias_correction2_sqrt),
                             static_cast<T>(o.eps),
                             static_cast<T>(step_size)};
    adam_loop(static_cast<T*>(parameter.data_ptr()), static_cast<const T*>(grad.data_ptr()),
              static_cast<T*>(state[1].data_ptr()), static_cast<T*>(state[2].data_ptr()),
              parameter.numel(), c);
  });
}

int Adam::device_table_lists() const { return cuda::kAdamLists; }

std::vector<std::string> Adam::device_table_state() const { return {"exp_avg", "exp_avg_sq"}; }

void Adam::launch_device_step(const cuda::MultiTensorTable& table, DType grad_dtype, int64_t* step,
                              const cuda::LossScaleState* scaler, const cuda::Stream& stream) {
  cuda::AdamStepOptions o;
  o.lr = lr();
  o.beta1 = options_.beta1;
  o.beta2 = options_.beta2;
  o.eps = options_.eps;
  o.weight_decay = options_.weight_decay;
  o.decoupled_weight_decay = decoupled_weight_decay_;
  cuda::adam_step(table, grad_dtype, o, step, scaler, stream);
}

}  // namespace b3
