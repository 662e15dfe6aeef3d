// GradScaler (optim/grad_scaler.h): the host side of dynamic loss scaling;
// the arithmetic is in optim/grad_scaler_cuda.cu and the fused optimizer
// kernels, all on the device.
#include "optim/grad_scaler.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "tensor/allocator.h"
#include "tensor/cuda_stream.h"

namespace b3 {

GradScaler::GradScaler(const Device& device, const cuda::LossScaleOptions& options)
    : device_(device), options_(options) {
  if (!device.is_cuda()) {
    throw std::invalid_argument(
        "GradScaler: loss scaling is for f16 training on a CUDA device, "
        "not " +
        device.str() + " (train in f32 there, without a scaler)");
  }
  require_device_available(device, "GradScaler");
  static_assert(sizeof(cuda::LossScaleState) == 4 * sizeof(int32_t));
  state_ = empty({4}, TensorOptions(DType::i32).with_device(device));
  cuda::init_loss_scale(state_pointer(), options_, cuda::compute_stream(device_.index));
}

cuda::LossScaleState* GradScaler::state_pointer() const {
  return static_cast<cuda::LossScaleState*>(const_cast<void*>(state_.data_ptr()));
}

cuda::LossScaleState GradScaler::download() const {
  // A raw byte copy (host <-> device copies wait for the compute stream).
  cuda::LossScaleState host;
  copy_bytes_cuda(&host, Device::cpu(), state_.data_ptr(), device_, sizeof host);
  return host;
}

Tensor GradScaler::scale_seed() const {
  Tensor seed = empty({}, TensorOptions(DType::f32).with_device(device_));
  // The scale is the state's first 4 bytes; a copy on the device's stream,
  // queued behind any update() before it.
  copy_bytes_cuda(seed.data_ptr(), device_, state_.data_ptr(), device_, sizeof(float));
  return seed;
}

void GradScaler::unscale_(Optimizer& optimizer) {
  const Device where = optimizer.device();
  if (where != device_) {
    throw std::invalid_argument(std::string("GradScaler: the scaler is on ") + device_.str() +
                                ", the " + optimizer.name() + " parameters on " + where.str());
  }
  if (unscaled_this_step_) {
    throw std::logic_error(
        "GradScaler::unscale_: the gradients were already unscaled since the last update()");
  }
  const DeviceGradients gradients = optimizer.device_gradients();
  cuda::unscale_gradients(*gradients.table, gradients.list, gradients.dtype, state_pointer(),
                          cuda::compute_stream(device_.index));
  unscaled_this_step_ = true;
}

void GradScaler::step(Optimizer& optimizer) {
  if (!unscaled_this_step_) unscale_(optimizer);
  optimizer.step(state_pointer());
}

void GradScaler::update() {
  cuda::update_loss_scale(state_pointer(), options_, cuda::compute_stream(device_.index));
  unscaled_this_step_ = false;
}

double GradScaler::scale() const { return static_cast<double>(download().scale); }

bool GradScaler::last_step_skipped() const { return download().found_inf != 0; }

NamedTensors GradScaler::state_dict() const {
  const cuda::LossScaleState host = download();
  return {{"scale", full({}, static_cast<double>(host.scale), TensorOptions(DType::f32))},
          {"growth_tracker",
           full({}, static_cast<double>(host.growth_tracker), TensorOptions(DType::i64))}};
}

void GradScaler::load_state_dict(const NamedTensors& state) {
  auto value_of = [&](const std::string& key) {
    for (const auto& [name, tensor] : state) {
      if (name != key) continue;
      if (tensor.numel() != 1) {
        throw std::invalid_argument("GradScaler::load_state_dict: '" + key + "' is " +
                                    tensor.str() + ", expected one element");
      }
      return tensor.item();
    }
    throw std::invalid_argument("GradScaler::load_state_dict: no '" + key + "' entry");
  };
  if (state.size() != 2) {
    throw std::invalid_argument(
        "GradScaler::load_state_dict: expected 2 entries (scale, "
        "growth_tracker), got " +
        std::to_string(state.size()));
  }
  const double scale = value_of("scale");
  const double tracker = value_of("growth_tracker");
  if (!(scale > 0.0) || !(tracker >= 0.0) || tracker >= options_.growth_interval) {
    throw std::invalid_argument("GradScaler::load_state_dict: scale " + std::to_string(scale) +
                                " and growth_tracker " + std::to_string(tracker) +
                                " out of range (scale > 0, 0 <= growth_tracker < " +
                                std::to_string(options_.growth_interval) + ")");
  }
  cuda::LossScaleState host;
  host.scale = static_cast<float>(scale);
  host.found_inf = 0;
  host.growth_tracker = static_cast<int32_t>(tracker);
  copy_bytes_cuda(state_pointer(), device_, &host, Device::cpu(), sizeof host);
}

}  // namespace b3
