// The fused CUDA optimizers (optim/adam_cuda.h, optim/sgd_cuda.h) and the
// device-side loss scaler (optim/grad_scaler_cuda.h), against torch.optim's
// formulas in double on the same values, over tensors of awkward sizes
// (empty, 1, 3, exactly one chunk, one chunk + 1, many chunks) updated in one
// launch.
//
// Tolerances. Each step is a handful of f32 operations per element, in the
// CPU loop's order; the bias corrections are computed in double. After three
// steps parameters are within 1e-5 * max(|p|, 1) (each step adds a few f32
// roundings of |p| ~ 1 and of the update ~ lr = 0.01). The moments are
// bounded by 1e-5 times the same recurrence run on |g| (a sum of terms of
// either sign can cancel). f16 parameter copies must equal the f32
// parameter rounded to nearest even, bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "optim/adam_cuda.h"
#include "optim/grad_scaler_cuda.h"
#include "optim/multi_tensor_cuda.h"
#include "optim/sgd_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

const std::vector<int64_t> kSizes = {1,    3, 0, cuda::kChunkElements, cuda::kChunkElements + 1,
                                     50000};

// Host and device copies of one optimizer's buffers, per tensor.
struct Tensors {
  std::vector<std::vector<float>> param, grad, m, v;  // host state (f32 values)
  std::vector<std::unique_ptr<DeviceBuffer<float>>> d_param, d_grad32, d_m, d_v;
  std::vector<std::unique_ptr<DeviceBuffer<Half>>> d_grad16, d_copy;
};

Tensors make_tensors(uint32_t seed) {
  Tensors t;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    const size_t n = static_cast<size_t>(kSizes[i]);
    t.param.push_back(test::random_normal(n, seed + 10 * static_cast<uint32_t>(i)));
    t.m.push_back(std::vector<float>(n, 0.0f));
    t.v.push_back(std::vector<float>(n, 0.0f));
    t.d_param.push_back(std::make_unique<DeviceBuffer<float>>(t.param.back()));
    t.d_m.push_back(std::make_unique<DeviceBuffer<float>>(t.m.back()));
    t.d_v.push_back(std::make_unique<DeviceBuffer<float>>(t.v.back()));
    t.d_grad32.push_back(std::make_unique<DeviceBuffer<float>>(static_cast<int64_t>(n)));
    t.d_grad16.push_back(std::make_unique<DeviceBuffer<Half>>(static_cast<int64_t>(n)));
    t.d_copy.push_back(std::make_unique<DeviceBuffer<Half>>(static_cast<int64_t>(n)));
    t.grad.emplace_back(n);
  }
  return t;
}

// New gradients for a step: `grad` holds the values the optimizer should see
// after unscaling (what the reference uses); the device gets them times
// `scale`, in f32 or rounded to f16.
void new_gradients(Tensors& t, uint32_t seed, float scale, bool half) {
  for (size_t i = 0; i < kSizes.size(); ++i) {
    std::vector<float> scaled = test::random_normal(t.grad[i].size(), seed + 7 * i, 1.0);
    for (float& g : scaled) g *= scale;
    if (half) {
      scaled = test::round_to_half(scaled);
      t.d_grad16[i]->upload(test::to_half(scaled));
    } else {
      t.d_grad32[i]->upload(scaled);
    }
    for (size_t k = 0; k < scaled.size(); ++k) t.grad[i][k] = scaled[k];  // scaled; divided below
  }
}

cuda::MultiTensorTable adam_table(Tensors& t, bool half, bool with_copies) {
  std::vector<void*> pointers;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    pointers.push_back(t.d_param[i]->data());
    pointers.push_back(half ? static_cast<void*>(t.d_grad16[i]->data()) : t.d_grad32[i]->data());
    pointers.push_back(t.d_m[i]->data());
    pointers.push_back(t.d_v[i]->data());
    pointers.push_back(with_copies ? t.d_copy[i]->data() : nullptr);
  }
  return cuda::make_multi_tensor_table(0, cuda::kAdamLists, pointers, kSizes);
}

// One Adam/AdamW step of the reference, in double on f32 state, with the
// magnitudes |m|-recurrence for the bound.
void reference_adam(Tensors& t, std::vector<std::vector<double>>& m_abs,
                    const cuda::AdamStepOptions& o, int64_t step, float scale) {
  const double tt = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(o.beta1, tt);
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, tt));
  for (size_t i = 0; i < kSizes.size(); ++i) {
    for (size_t k = 0; k < t.param[i].size(); ++k) {
      double p = t.param[i][k];
      if (o.decoupled_weight_decay) p *= 1.0 - o.lr * o.weight_decay;
      double g = double(t.grad[i][k]) / scale;
      if (!o.decoupled_weight_decay) g += o.weight_decay * p;
      const double m = o.beta1 * t.m[i][k] + (1.0 - o.beta1) * g;
      const double v = o.beta2 * t.v[i][k] + (1.0 - o.beta2) * g * g;
      m_abs[i][k] = o.beta1 * m_abs[i][k] + (1.0 - o.beta1) * std::abs(g);
      p -= o.lr / bc1 * m / (std::sqrt(v) / bc2_sqrt + o.eps);
      t.param[i][k] = static_cast<float>(p);  // the reference state stays f32 like the device's
      t.m[i][k] = static_cast<float>(m);
      t.v[i][k] = static_cast<float>(v);
    }
  }
}

void compare_adam(const Tensors& t, const std::vector<std::vector<double>>& m_abs, bool with_copies,
                  const std::string& what) {
  for (size_t i = 0; i < kSizes.size(); ++i) {
    CAPTURE(kSizes[i]);
    const std::vector<double> p = test::to_double(t.param[i]);
    const std::vector<double> m = test::to_double(t.m[i]);
    const std::vector<double> v = test::to_double(t.v[i]);
    const std::vector<float> device_p = t.d_param[i]->download();
    test::check_within(device_p, p, test::relative_bound(p, 1e-5), what + " param");
    std::vector<double> m_bound(m.size());
    for (size_t k = 0; k < m.size(); ++k) m_bound[k] = 1e-5 * m_abs[i][k] + 1e-30;
    test::check_within(t.d_m[i]->download(), m, m_bound, what + " exp_avg");
    test::check_within(t.d_v[i]->download(), v, test::relative_bound(v, 1e-5, 1e-30),
                       what + " exp_avg_sq");
    if (with_copies) {
      const std::vector<Half> copy = t.d_copy[i]->download();
      for (size_t k = 0; k < copy.size(); ++k) REQUIRE(copy[k].bits == Half(device_p[k]).bits);
    }
  }
}

}  // namespace

TEST_CASE("cuda optim: fused Adam and AdamW match torch.optim over three steps") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (bool decoupled : {false, true}) {
    for (bool half : {false, true}) {
      CAPTURE(decoupled);
      CAPTURE(half);
      cuda::AdamStepOptions o;
      o.lr = 0.01;
      o.weight_decay = decoupled ? 0.05 : 0.01;
      o.decoupled_weight_decay = decoupled;
      Tensors t = make_tensors(1000 + (decoupled ? 1 : 0) + (half ? 2 : 0));
      std::vector<std::vector<double>> m_abs;
      for (const auto& p : t.param) m_abs.emplace_back(p.size(), 0.0);
      const cuda::MultiTensorTable table = adam_table(t, half, half);
      CHECK(table.view.chunks == 1 + 1 + 0 + 1 + 2 + 4);
      DeviceBuffer<int64_t> step(std::vector<int64_t>{0});
      // f16 gradients come scaled (as after a scaled backward); f32 ones do not.
      const float scale = half ? 1024.0f : 1.0f;
      DeviceBuffer<cuda::LossScaleState> scaler(1);
      cuda::LossScaleOptions scale_options;
      scale_options.init_scale = scale;
      cuda::init_loss_scale(scaler.data(), scale_options, stream);
      for (int s = 1; s <= 3; ++s) {
        new_gradients(t, 77 + static_cast<uint32_t>(s), scale, half);
        const DType grad_dtype = half ? DType::f16 : DType::f32;
        cuda::check_gradients_finite(table, 1, grad_dtype, scaler.data(), stream);
        cuda::adam_step(table, grad_dtype, o, step.data(), half ? scaler.data() : nullptr, stream);
        reference_adam(t, m_abs, o, s, scale);
        CHECK(step.download()[0] == s);
        CHECK(scaler.download()[0].found_inf == 0);
      }
      compare_adam(
          t, m_abs, half,
          std::string(decoupled ? "AdamW" : "Adam") + (half ? " f16 grads" : " f32 grads"));
    }
  }
}

TEST_CASE("cuda optim: an inf or nan gradient skips the step and backs the scale off") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (float bad :
       {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    Tensors t = make_tensors(2000);
    const cuda::MultiTensorTable table = adam_table(t, false, true);
    DeviceBuffer<int64_t> step(std::vector<int64_t>{5});
    DeviceBuffer<cuda::LossScaleState> scaler(1);
    cuda::LossScaleOptions scale_options;
    scale_options.growth_interval = 3;
    cuda::init_loss_scale(scaler.data(), scale_options, stream);
    new_gradients(t, 3, 65536.0f, false);
    std::vector<float> poisoned = t.d_grad32[5]->download();
    poisoned[31337] = bad;  // one element in the second chunk of the largest tensor
    t.d_grad32[5]->upload(poisoned);
    std::vector<std::vector<float>> before;
    for (auto& p : t.d_param) before.push_back(p->download());
    for (auto& c : t.d_copy) c->poison();
    cuda::check_gradients_finite(table, 1, DType::f32, scaler.data(), stream);
    CHECK(scaler.download()[0].found_inf == 1);
    cuda::adam_step(table, DType::f32, cuda::AdamStepOptions{}, step.data(), scaler.data(), stream);
    cuda::update_loss_scale(scaler.data(), scale_options, stream);
    CHECK(step.download()[0] == 5);  // not advanced
    for (size_t i = 0; i < kSizes.size(); ++i) {
      const std::vector<float> after = t.d_param[i]->download();
      CHECK(std::memcmp(after.data(), before[i].data(), after.size() * sizeof(float)) == 0);
      for (float m : t.d_m[i]->download()) REQUIRE(m == 0.0f);
      for (Half c : t.d_copy[i]->download()) REQUIRE(c.bits == 0x7E00);  // copies untouched
    }
    const cuda::LossScaleState state = scaler.download()[0];
    CHECK(state.scale == 32768.0f);
    CHECK(state.growth_tracker == 0);
    // Three clean steps in a row (growth_interval 3) double the scale again.
    for (int s = 0; s < 3; ++s) {
      new_gradients(t, 50 + static_cast<uint32_t>(s), 1.0f, false);
      cuda::check_gradients_finite(table, 1, DType::f32, scaler.data(), stream);
      cuda::adam_step(table, DType::f32, cuda::AdamStepOptions{}, step.data(), scaler.data(),
                      stream);
      cuda::update_loss_scale(scaler.data(), scale_options, stream);
      const cuda::LossScaleState now = scaler.download()[0];
      CHECK(now.found_inf == 0);
      CHECK(now.growth_tracker == (s + 1) % 3);
      CHECK(now.scale == (s < 2 ? 32768.0f : 65536.0f));
    }
    CHECK(step.download()[0] == 8);
  }
}

TEST_CASE("cuda optim: fused SGD with momentum, dampening, Nesterov and weight decay") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  struct Setting {
    double momentum, dampening, weight_decay;
    bool nesterov;
  };
  for (const Setting& setting : {Setting{0.9, 0.1, 0.01, false}, Setting{0.9, 0.0, 0.0, true},
                                 Setting{0.0, 0.0, 0.001, false}}) {
    CAPTURE(setting.momentum);
    CAPTURE(setting.nesterov);
    cuda::SgdStepOptions o;
    o.lr = 0.05;
    o.momentum = setting.momentum;
    o.dampening = setting.dampening;
    o.weight_decay = setting.weight_decay;
    o.nesterov = setting.nesterov;
    Tensors t = make_tensors(3000);
    std::vector<void*> pointers;
    for (size_t i = 0; i < kSizes.size(); ++i) {
      pointers.push_back(t.d_param[i]->data());
      pointers.push_back(t.d_grad32[i]->data());
      pointers.push_back(o.momentum != 0.0 ? t.d_m[i]->data() : nullptr);  // m: momentum buffer
      pointers.push_back(t.d_copy[i]->data());
    }
    const cuda::MultiTensorTable table =
        cuda::make_multi_tensor_table(0, cuda::kSgdLists, pointers, kSizes);
    DeviceBuffer<int64_t> step(std::vector<int64_t>{0});
    std::vector<std::vector<double>> buf_abs;
    for (const auto& p : t.param) buf_abs.emplace_back(p.size(), 0.0);
    for (int s = 0; s < 3; ++s) {
      new_gradients(t, 400 + static_cast<uint32_t>(s), 1.0f, false);
      cuda::sgd_step(table, DType::f32, o, step.data(), nullptr, stream);
      for (size_t i = 0; i < kSizes.size(); ++i) {  // torch.optim.SGD in double
        for (size_t k = 0; k < t.param[i].size(); ++k) {
          double d = t.grad[i][k] + o.weight_decay * t.param[i][k];
          if (o.momentum != 0.0) {
            const double b = s == 0 ? d : o.momentum * t.m[i][k] + (1.0 - o.dampening) * d;
            buf_abs[i][k] = s == 0 ? std::abs(d)
                                   : o.momentum * buf_abs[i][k] + (1.0 - o.dampening) * std::abs(d);
            t.m[i][k] = static_cast<float>(b);
            d = o.nesterov ? d + o.momentum * b : b;
          }
          t.param[i][k] = static_cast<float>(t.param[i][k] - o.lr * d);
        }
      }
    }
    CHECK(step.download()[0] == 3);
    for (size_t i = 0; i < kSizes.size(); ++i) {
      CAPTURE(kSizes[i]);
      const std::vector<double> p = test::to_double(t.param[i]);
      const std::vector<float> device_p = t.d_param[i]->download();
      test::check_within(device_p, p, test::relative_bound(p, 1e-5), "SGD param");
      if (o.momentum != 0.0) {
        std::vector<double> bound(p.size());
        for (size_t k = 0; k < bound.size(); ++k) bound[k] = 1e-5 * buf_abs[i][k] + 1e-30;
        test::check_within(t.d_m[i]->download(), test::to_double(t.m[i]), bound,
                           "SGD momentum buffer");
      }
      const std::vector<Half> copy = t.d_copy[i]->download();
      for (size_t k = 0; k < copy.size(); ++k) REQUIRE(copy[k].bits == Half(device_p[k]).bits);
    }
  }
}

TEST_CASE("cuda optim: bad tables and options throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  cuda::MultiTensorTable three_lists;  // host-only: never reaches a kernel
  three_lists.lists = 3;
  int64_t step = 0;
  CHECK_THROWS_WITH_AS(
      cuda::adam_step(three_lists, DType::f32, cuda::AdamStepOptions{}, &step, nullptr, stream),
      doctest::Contains("Adam needs 5"), std::invalid_argument);
  cuda::MultiTensorTable adam;
  adam.lists = cuda::kAdamLists;
  adam.numels = {4};
  adam.host_pointers = {&step, nullptr, &step, &step, nullptr};  // no gradient
  CHECK_THROWS_WITH_AS(
      cuda::adam_step(adam, DType::f32, cuda::AdamStepOptions{}, &step, nullptr, stream),
      doctest::Contains("has no gradient pointer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::adam_step(adam, DType::f64, cuda::AdamStepOptions{}, &step, nullptr, stream),
      doctest::Contains("f32 or f16"), std::invalid_argument);
  cuda::AdamStepOptions bad;
  bad.beta1 = 1.0;
  CHECK_THROWS_AS(cuda::adam_step(adam, DType::f32, bad, &step, nullptr, stream),
                  std::invalid_argument);
  cuda::SgdStepOptions nesterov;
  nesterov.nesterov = true;
  CHECK_THROWS_WITH_AS(cuda::sgd_step(three_lists, DType::f32, nesterov, &step, nullptr, stream),
                       doctest::Contains("Nesterov"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::make_multi_tensor_table(0, 2, {nullptr}, {1}),
                       doctest::Contains("1 pointers for 1 tensors of 2 lists"),
                       std::invalid_argument);
}
