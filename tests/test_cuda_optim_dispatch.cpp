// SGD, Adam and AdamW stepping CUDA parameters (one fused launch per step,
// optim/optimizer.h) against the same optimizer on CPU copies; GradScaler's
// skip / back-off / growth rules; optimizer and scaler state round trips;
// train_step on a CUDA model, in f32 and with mixed precision.
//
// Tolerance for CUDA vs CPU, f32: 1e-6 in max |a - b| / max(|b|, 1). Both
// paths run the same f32 operations in the same order (the kernels were
// written from the CPU loops), so the results differ only where the device
// compiler contracts a*b + c into one fused multiply-add (one rounding
// instead of two) and where Adam's bias corrections come from the device's
// pow() instead of the host's (both in double, then rounded to f32). Each
// such difference is about one f32 unit roundoff (6e-8) of a value of order
// 1, and 5 steps of a few operations each stay well below 1e-6 (the CPU
// suite's own f32-vs-double bound for these optimizers). Where the two runs
// are the same kernels on the same data (a restored optimizer continuing),
// the results must be bitwise equal.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "layers/linear.h"
#include "layers/module.h"
#include "optim/adam.h"
#include "optim/grad_scaler.h"
#include "optim/sgd.h"
#include "tensor/random.h"
#include "tests/support/cuda.h"
#include "tests/support/reference.h"
#include "train/trainer.h"

using namespace b3;

namespace {

constexpr double kF32Tolerance = 1e-6;  // see the top of the file

const Device kCuda = Device::cuda(0);

// Parameter shapes with the layouts a model has: a conv weight in
// channels_last, a 1x1 conv weight (its NCHW and NHWC strides differ only on
// size-1 dimensions), a bias of 7 (not a multiple of 8), a single element,
// and a tensor longer than one chunk of the fused kernels (16384).
struct ParamSpec {
  Shape shape;
  MemoryFormat format;
};
const std::vector<ParamSpec> kSpecs{{{8, 5, 3, 3}, MemoryFormat::channels_last},
                                    {{16, 5, 1, 1}, MemoryFormat::channels_last},
                                    {{6, 3, 3, 3}, MemoryFormat::contiguous},
                                    {{7}, MemoryFormat::contiguous},
                                    {{1}, MemoryFormat::contiguous},
                                    {{20001}, MemoryFormat::contiguous}};

// The same parameters twice: on the CPU and on the GPU.
struct Twins {
  std::vector<Tensor> cpu, cuda;
};

Twins make_twins(uint64_t seed) {
  Generator gen(seed);
  Twins t;
  for (const ParamSpec& s : kSpecs) {
    Tensor p = test::random_tensor(s.shape, gen, DType::f32, s.format);
    Tensor q = p.to(kCuda);
    p.set_requires_grad(true);
    q.set_requires_grad(true);
    t.cpu.push_back(p);
    t.cuda.push_back(q);
  }
  return t;
}

// Gives parameter i the gradient `g` (a CPU f32 tensor): the CPU twin a copy,
// the CUDA twin the values copied into its existing gradient (as backward
// accumulates into it, address unchanged) or, with `fresh`, a new tensor
// (the optimizer must notice the new address and rebuild its table).
void give_gradient(Twins& t, size_t i, const Tensor& g, bool fresh, DType cuda_dtype = DType::f32) {
  t.cpu[i].set_grad(g.clone());
  Tensor existing = t.cuda[i].grad();
  if (!fresh && existing.defined() && existing.dtype() == cuda_dtype) {
    existing.copy_(g);
  } else {
    t.cuda[i].set_grad(g.to(kCuda).to(cuda_dtype));
  }
}

void check_twins(const Twins& t, const std::string& what, double tolerance = kF32Tolerance) {
  for (size_t i = 0; i < t.cpu.size(); ++i) {
    CAPTURE(what);
    CAPTURE(i);
    const Tensor back = t.cuda[i].to(Device::cpu());
    CHECK(back.device().is_cpu());
    CHECK(test::max_relative_error(back, t.cpu[i]) <= tolerance);
  }
}

void check_state_dicts(const Optimizer& cuda_opt, const Optimizer& cpu_opt) {
  const NamedTensors a = cuda_opt.state_dict();
  const NamedTensors b = cpu_opt.state_dict();
  REQUIRE(a.size() == b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    CAPTURE(a[k].first);
    CHECK(a[k].first == b[k].first);
    CHECK(a[k].second.device().is_cpu());  // state_dict downloads device state
    CHECK(a[k].second.dtype() == b[k].second.dtype());
    CHECK(a[k].second.shape() == b[k].second.shape());
    if (a[k].second.dtype() == DType::i64)
      CHECK(a[k].second.item() == b[k].second.item());  // step counts: exact
    else
      CHECK(test::max_relative_error(a[k].second, b[k].second) <= kF32Tolerance);
  }
}

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)>;

struct Variant {
  std::string name;
  MakeOptimizer make;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  auto sgd = [](SgdOptions o) {
    return [o](std::vector<Tensor> p) { return std::make_unique<Sgd>(std::move(p), o); };
  };
  v.push_back({"sgd plain", sgd(SgdOptions{0.1, 0.0, 0.0, 0.0, false})});
  v.push_back({"sgd momentum", sgd(SgdOptions{0.05, 0.9, 0.0, 0.0, false})});
  v.push_back({"sgd momentum dampening wd", sgd(SgdOptions{0.05, 0.9, 0.3, 1e-2, false})});
  v.push_back({"sgd nesterov wd", sgd(SgdOptions{0.1, 0.9, 0.0, 5e-2, true})});
  AdamOptions adam;
  adam.lr = 0.01;
  v.push_back({"adam", [adam](std::vector<Tensor> p) {
                 return std::make_unique<Adam>(std::move(p), adam);
               }});
  AdamOptions adam_wd = adam;
  adam_wd.weight_decay = 0.1;
  v.push_back({"adam l2", [adam_wd](std::vector<Tensor> p) {
                 return std::make_unique<Adam>(std::move(p), adam_wd);
               }});
  v.push_back({"adamw", [adam_wd](std::vector<Tensor> p) {
                 return std::make_unique<AdamW>(std::move(p), adam_wd);
               }});
  return v;
}

Tensor random_gradient(const Tensor& like, Generator& gen, double scale = 1.0) {
  return test::random_tensor(like.shape(), gen, DType::f32, like.suggest_memory_format(), scale);
}

}  // namespace

TEST_CASE("CUDA SGD, Adam and AdamW match the CPU optimizers over several steps") {
  test::skip_unless_cuda_device();
  for (const Variant& variant : variants()) {
    for (bool fresh : {false, true}) {
      CAPTURE(variant.name);
      CAPTURE(fresh);
      Twins t = make_twins(11);
      auto cpu_opt = variant.make(t.cpu);
      auto cuda_opt = variant.make(t.cuda);
      CHECK(cuda_opt->device() == kCuda);
      Generator gen(23);
      for (int step = 0; step < 5; ++step) {
        cuda_opt->zero_grad();
        cpu_opt->zero_grad();
        for (size_t i = 0; i < t.cpu.size(); ++i)
          give_gradient(t, i, random_gradient(t.cpu[i], gen), fresh);
        cpu_opt->step();
        cuda_opt->step();
      }
      check_twins(t, variant.name);
      check_state_dicts(*cuda_opt, *cpu_opt);
      // zero_grad on CUDA keeps the gradient tensors, zeroed in place.
      const Tensor before = t.cuda[0].grad();
      cuda_opt->zero_grad();
      REQUIRE(t.cuda[0].grad().defined());
      CHECK(t.cuda[0].grad().is_same(before));
      CHECK(test::max_relative_error(t.cuda[0].grad().to(Device::cpu()),
                                     zeros_like(t.cpu[0].detach())) == 0.0);
    }
  }
}

TEST_CASE("CUDA optimizers read f16 gradients") {
  test::skip_unless_cuda_device();
  for (const Variant& variant : variants()) {
    CAPTURE(variant.name);
    Twins t = make_twins(5);
    auto cpu_opt = variant.make(t.cpu);
    auto cuda_opt = variant.make(t.cuda);
    Generator gen(9);
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < t.cpu.size(); ++i) {
        // Values exactly representable in f16, so both sides read the same numbers.
        const Tensor g = random_gradient(t.cpu[i], gen).to(DType::f16).to(DType::f32);
        give_gradient(t, i, g, false, DType::f16);
      }
      cpu_opt->step();
      cuda_opt->step();
    }
    check_twins(t, variant.name);
  }
}

TEST_CASE("CUDA optimizers skip a parameter without a gradient and keep per-parameter steps") {
  test::skip_unless_cuda_device();
  for (const Variant& variant : variants()) {
    CAPTURE(variant.name);
    Twins t = make_twins(3);
    auto cpu_opt = variant.make(t.cpu);
    auto cuda_opt = variant.make(t.cuda);
    const Tensor untouched = t.cuda[3].to(Device::cpu());
    Generator gen(4);
    for (int step = 0; step < 6; ++step) {
      for (size_t i = 0; i < t.cpu.size(); ++i) {
        if (i == 3) continue;  // never a gradient
        // Parameter 1 has no gradient on steps 2 and 3 (dropped, as set_to_none
        // would): its Adam step count and SGD momentum must lag the others'.
        if (i == 1 && (step == 2 || step == 3)) {
          t.cpu[i].zero_grad();
          t.cuda[i].zero_grad();
          continue;
        }
        give_gradient(t, i, random_gradient(t.cpu[i], gen), false);
      }
      cpu_opt->step();
      cuda_opt->step();
    }
    CHECK(test::max_relative_error(t.cuda[3].to(Device::cpu()), untouched) == 0.0);
    CHECK_FALSE(t.cuda[3].grad().defined());
    check_twins(t, variant.name);
    check_state_dicts(*cuda_opt, *cpu_opt);
    for (const auto& [name, tensor] : cuda_opt->state_dict())
      CHECK(name.rfind("state.3.", 0) != 0);  // no state for the skipped parameter
  }
}

TEST_CASE("CUDA optimizer state round-trips: a restored optimizer continues identically") {
  test::skip_unless_cuda_device();
  for (const Variant& variant : variants()) {
    CAPTURE(variant.name);
    Twins first = make_twins(8);
    auto opt1 = variant.make(first.cuda);
    Generator gen(12);
    std::vector<std::vector<Tensor>> grads(4);
    for (auto& step_grads : grads)
      for (const Tensor& p : first.cpu) step_grads.push_back(random_gradient(p, gen));
    for (size_t i = 0; i < first.cuda.size(); ++i) first.cuda[i].set_grad(grads[0][i].to(kCuda));
    opt1->step();
    for (size_t i = 0; i < first.cuda.size(); ++i) first.cuda[i].grad().copy_(grads[1][i]);
    opt1->step();

    // A second CUDA optimizer over copies of the parameters, restored from the first;
    // and a CPU optimizer restored from the same (downloaded) state.
    std::vector<Tensor> second, host;
    for (const Tensor& p : first.cuda) {
      Tensor q = p.detach().clone();
      q.set_requires_grad(true);
      second.push_back(q);
      Tensor h = p.to(Device::cpu()).detach().clone();
      h.set_requires_grad(true);
      host.push_back(h);
    }
    auto opt2 = variant.make(second);
    auto opt_host = variant.make(host);
    const NamedTensors saved = opt1->state_dict();
    opt2->load_state_dict(saved);
    opt_host->load_state_dict(saved);
    for (size_t step = 2; step < grads.size(); ++step) {
      for (size_t i = 0; i < first.cuda.size(); ++i) {
        first.cuda[i].grad().copy_(grads[step][i]);
        second[i].set_grad(grads[step][i].to(kCuda));
        host[i].set_grad(grads[step][i].clone());
      }
      opt1->step();
      opt2->step();
      opt_host->step();
    }
    for (size_t i = 0; i < first.cuda.size(); ++i) {
      CAPTURE(i);
      // Same kernels, same values: bitwise equal.
      CHECK(test::max_relative_error(second[i].to(Device::cpu()),
                                     first.cuda[i].to(Device::cpu())) == 0.0);
      CHECK(test::max_relative_error(first.cuda[i].to(Device::cpu()), host[i]) <= kF32Tolerance);
    }
    check_state_dicts(*opt2, *opt_host);
  }
}

TEST_CASE("CUDA optimizers refuse parameters spread over the CPU and a GPU") {
  test::skip_unless_cuda_device();
  Tensor a = zeros({3});
  a.set_requires_grad(true);
  Tensor b = zeros({3}, TensorOptions(DType::f32).with_device(kCuda));
  b.set_requires_grad(true);
  a.set_grad(ones({3}));
  b.set_grad(ones({3}, TensorOptions(DType::f32).with_device(kCuda)));
  Sgd sgd({a, b}, SgdOptions{0.1});
  CHECK_THROWS_WITH_AS(sgd.step(), doctest::Contains("on one device"), std::invalid_argument);
  // f64 parameters stay on the CPU (gradcheck); a CUDA step wants f32 master weights.
  Tensor c = zeros({2}, TensorOptions(DType::f16).with_device(kCuda));
  c.set_requires_grad(true);
  c.set_grad(ones({2}, TensorOptions(DType::f16).with_device(kCuda)));
  Adam adam({c}, AdamOptions{});
  CHECK_THROWS_WITH_AS(adam.step(), doctest::Contains("f32 parameters"), std::invalid_argument);
}

TEST_CASE("GradScaler: an inf or nan gradient skips the step and halves the scale") {
  test::skip_unless_cuda_device();
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    CAPTURE(bad);
    Twins t = make_twins(21);
    AdamOptions o;
    o.lr = 0.01;
    Adam cuda_opt(t.cuda, o);
    Adam cpu_opt(t.cpu, o);
    GradScaler scaler(kCuda);
    CHECK(scaler.scale() == 65536.0);
    const Tensor seed = scaler.scale_seed();
    CHECK(seed.device() == kCuda);
    CHECK(seed.dtype() == DType::f32);
    CHECK(seed.dim() == 0);
    CHECK(seed.item() == 65536.0);

    // Step 1: one non-finite element in the last tensor -> nothing changes.
    Generator gen(2);
    std::vector<Tensor> before;
    for (size_t i = 0; i < t.cuda.size(); ++i) {
      before.push_back(t.cuda[i].to(Device::cpu()));
      Tensor g = random_gradient(t.cpu[i], gen, 65536.0);
      if (i + 1 == t.cuda.size()) {
        std::vector<double> values = g.to_doubles();
        values[values.size() / 2] = bad;
        g = from_doubles(values, g.shape());
      }
      t.cuda[i].set_grad(g.to(kCuda));
    }
    scaler.step(cuda_opt);
    scaler.update();
    CHECK(scaler.last_step_skipped());
    CHECK(scaler.scale() == 32768.0);
    for (size_t i = 0; i < t.cuda.size(); ++i)
      CHECK(test::max_relative_error(t.cuda[i].to(Device::cpu()), before[i]) == 0.0);
    for (const auto& entry : cuda_opt.state_dict()) {
      // Step 0, zero moments. (A pair, not a structured binding: CAPTURE's
      // lambda cannot take one in clang 14.)
      CAPTURE(entry.first);
      CHECK(test::max_relative_error(entry.second, zeros_like(entry.second)) == 0.0);
    }

    // Step 2: finite gradients scaled by 32768 (a power of two: unscaling is
    // exact) -> the same update as an unscaled CPU step.
    for (size_t i = 0; i < t.cuda.size(); ++i) {
      const Tensor g = random_gradient(t.cpu[i], gen);
      t.cpu[i].set_grad(g);
      Tensor scaled = g.clone();
      scaled.mul_(32768.0);
      t.cuda[i].grad().copy_(scaled);
    }
    scaler.step(cuda_opt);
    scaler.update();
    cpu_opt.step();
    CHECK_FALSE(scaler.last_step_skipped());
    CHECK(scaler.scale() == 32768.0);
    check_twins(t, "after a clean scaled step");
    check_state_dicts(cuda_opt, cpu_opt);
    // As PyTorch: step() unscaled .grad in place (exact: a power-of-two scale).
    for (size_t i = 0; i < t.cuda.size(); ++i)
      CHECK(test::max_relative_error(t.cuda[i].grad().to(Device::cpu()), t.cpu[i].grad()) == 0.0);
  }
}

TEST_CASE("GradScaler::unscale_ gives true gradients before step(), once per step") {
  test::skip_unless_cuda_device();
  Twins t = make_twins(41);
  SgdOptions so{0.05, 0.9, 0.0, 0.0, false};
  Sgd cuda_opt(t.cuda, so);
  Sgd cpu_opt(t.cpu, so);
  GradScaler scaler(kCuda);
  Generator gen(9);
  for (int step = 0; step < 2; ++step) {
    CAPTURE(step);
    for (size_t i = 0; i < t.cuda.size(); ++i) {
      const Tensor g = random_gradient(t.cpu[i], gen);
      t.cpu[i].set_grad(g);
      Tensor scaled = g.clone();
      scaled.mul_(65536.0);
      t.cuda[i].set_grad(scaled.to(kCuda));
    }
    scaler.unscale_(cuda_opt);
    // What clipping or a norm would read: the unscaled gradient, exactly.
    for (size_t i = 0; i < t.cuda.size(); ++i)
      CHECK(test::max_relative_error(t.cuda[i].grad().to(Device::cpu()), t.cpu[i].grad()) == 0.0);
    CHECK_THROWS_WITH_AS(scaler.unscale_(cuda_opt), doctest::Contains("already unscaled"),
                         std::logic_error);
    scaler.step(cuda_opt);  // must not divide a second time
    scaler.update();
    cpu_opt.step();
    CHECK_FALSE(scaler.last_step_skipped());
    check_twins(t, "after unscale_ and step");
  }
}

TEST_CASE("GradScaler grows the scale after growth_interval clean steps; state round-trips") {
  test::skip_unless_cuda_device();
  cuda::LossScaleOptions options;
  options.init_scale = 1024.0f;
  options.growth_interval = 3;
  Twins t = make_twins(31);
  SgdOptions so{0.01, 0.9, 0.0, 0.0, false};
  Sgd cuda_opt(t.cuda, so);
  Sgd cpu_opt(t.cpu, so);
  GradScaler scaler(kCuda, options);
  Generator gen(6);
  auto clean_step = [&](GradScaler& s) {
    const double scale = s.scale();
    for (size_t i = 0; i < t.cuda.size(); ++i) {
      const Tensor g = random_gradient(t.cpu[i], gen);
      t.cpu[i].set_grad(g);
      Tensor scaled = g.clone();
      scaled.mul_(scale);
      t.cuda[i].set_grad(scaled.to(kCuda));
    }
    s.step(cuda_opt);
    s.update();
    cpu_opt.step();
    CHECK_FALSE(s.last_step_skipped());
  };
  clean_step(scaler);
  CHECK(scaler.scale() == 1024.0);
  clean_step(scaler);
  CHECK(scaler.scale() == 1024.0);
  clean_step(scaler);
  CHECK(scaler.scale() == 2048.0);  // third clean step in a row
  clean_step(scaler);
  CHECK(scaler.scale() == 2048.0);  // the count restarted
  check_twins(t, "SGD under a growing scale");

  // Round trip: scale 2048, one clean step counted; the restored scaler
  // grows after two more clean steps, like the original would.
  const NamedTensors saved = scaler.state_dict();
  REQUIRE(saved.size() == 2);
  CHECK(saved[0].first == "scale");
  CHECK(saved[0].second.item() == 2048.0);
  CHECK(saved[1].first == "growth_tracker");
  CHECK(saved[1].second.item() == 1.0);
  GradScaler restored(kCuda, options);
  restored.load_state_dict(saved);
  CHECK(restored.scale() == 2048.0);
  clean_step(restored);
  CHECK(restored.scale() == 2048.0);
  clean_step(restored);
  CHECK(restored.scale() == 4096.0);
  check_twins(t, "SGD after the scaler was restored");
}

TEST_CASE("GradScaler refuses the CPU") {
  test::skip_unless_cuda_device();
  CHECK_THROWS_WITH_AS(GradScaler{Device::cpu()}, doctest::Contains("CUDA device"),
                       std::invalid_argument);
  Tensor p = zeros({2});
  p.set_requires_grad(true);
  p.set_grad(ones({2}));
  Sgd sgd({p}, SgdOptions{0.1});
  GradScaler scaler(kCuda);
  CHECK_THROWS_WITH_AS(scaler.step(sgd), doctest::Contains("cpu"), std::invalid_argument);
}

TEST_CASE("train_step on a CUDA model: f32 matches the CPU, mixed precision trains") {
  test::skip_unless_cuda_device();
  Generator gen(41);
  auto make_model = [](uint64_t seed) {
    Generator g(seed);
    auto model = std::make_shared<Sequential>();
    model->push_back(std::make_shared<Linear>(12, 10, g));
    return model;
  };
  auto cpu_model = make_model(1);
  auto cuda_model = make_model(1);
  cuda_model->to(kCuda);
  LabeledBatch batch;
  // Small inputs (scale 0.25) keep the f16 weight gradients of the amp steps
  // below f16's overflow even at the initial scale 65536.
  batch.images = test::random_tensor({6, 12}, gen, DType::f32, MemoryFormat::contiguous, 0.25);
  batch.labels = randint(10, {6}, gen);
  AdamOptions o;
  o.lr = 0.01;
  Adam cpu_opt(cpu_model->parameters(), o);
  Adam cuda_opt(cuda_model->parameters(), o);
  for (int step = 0; step < 3; ++step) {
    const StepResult a = train_step(*cpu_model, cpu_opt, batch);
    const StepResult b = train_step(*cuda_model, cuda_opt, batch);  // batch uploaded inside
    // The loss: a 12-long dot product and a 10-way log-sum-exp in f32 on
    // either side, in different orders: within 1e-5 relative.
    CHECK(std::abs(a.loss - b.loss) <= 1e-5 * std::max(std::abs(a.loss), 1.0));
    CHECK(b.images == 6);
  }
  const auto cpu_params = cpu_model->parameters();
  const auto cuda_params = cuda_model->parameters();
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    // Adam's update is lr * m / (sqrt(v) + eps): the rounding differences of
    // the forward and backward above (1e-5 relative in the gradients) shift
    // each update by at most about lr * 1e-5.
    CHECK(test::max_relative_error(cuda_params[i].to(Device::cpu()), cpu_params[i]) <= 1e-5);
  }

  GradScaler scaler(kCuda);
  StepOptions amp;
  amp.scaler = &scaler;
  double first_loss = 0.0, last_loss = 0.0;
  int skipped = 0;
  for (int step = 0; step < 20; ++step) {
    const StepResult r = train_step(*cuda_model, cuda_opt, batch, amp);
    CHECK(std::isfinite(r.loss));
    skipped += r.skipped ? 1 : 0;
    CHECK(r.loss_scale == 65536.0 / std::pow(2.0, skipped));  // halves once per skipped step
    if (step == 0) first_loss = r.loss;
    last_loss = r.loss;
  }
  CHECK(skipped <= 2);            // the gradients here are far from f16's range limits
  CHECK(last_loss < first_loss);  // 20 Adam steps on one batch lower its loss
}
