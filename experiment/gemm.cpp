// The GEMM microbenchmark's reference check and timing (see gemm.h).
#include "experiment/gemm.h"

#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "autograd/grad_mode.h"
#include "layers/linear.h"

namespace b3::experiment {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Waits for the device: a copy to the host returns when the work before it is done.
void wait_for(const Tensor& t) {
  if (t.device().is_cuda()) t.narrow(0, 0, 1).to(Device::cpu());
}

// Calls per measurement so that one lasts >= min_seconds.
int64_t calibrate_calls(const Tensor& a, const Tensor& b, Tensor& c, double min_seconds) {
  int64_t calls = 1;
  while (true) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < calls; ++i) c = linear(a, b);
    wait_for(c);
    const double seconds = seconds_since(start);
    if (seconds >= min_seconds || calls >= (int64_t{1} << 24)) return calls;
    calls = seconds <= 0
                ? calls * 10
                : std::max(calls * 2, static_cast<int64_t>(calls * min_seconds / seconds * 1.2));
  }
}

}  // namespace

GemmPlan plan_gemm(const GemmConfig& config) {
  GemmPlan plan;
  plan.config = config;
  plan.sizes = report::parse_size_list(config.sizes, "--sizes");
  plan.device = config.device == "cuda" ? Device::cuda(0) : Device::cpu();
  require_device_available(plan.device, "b3 gemm --device " + config.device);
  const bool cuda = plan.device.is_cuda();
  // CPU: f32 (Eigen). CUDA: f16 inputs and output, f32 accumulation (cuBLAS).
  plan.dtype = cuda ? DType::f16 : DType::f32;
  plan.dtype_text = cuda ? "f16 (f32 accumulate)" : "f32";
  plan.device_text = cuda ? plan.device.str() : "cpu (" + report::cpu_description() + ")";
  plan.unit = cuda ? 1e12 : 1e9;
  plan.unit_name = cuda ? "TFLOP/s" : "GFLOP/s";
  return plan;
}

double check_against_reference(const Tensor& a, const Tensor& b, const Tensor& c, DType dtype) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  const std::vector<double> av = a.to(Device::cpu()).to_doubles();
  const std::vector<double> bv = b.to(Device::cpu()).to_doubles();
  const std::vector<double> cv = c.to(Device::cpu()).to_doubles();
  const double u = std::ldexp(1.0, -24);
  const double gamma = static_cast<double>(k) * u / (1.0 - static_cast<double>(k) * u);
  const double u_out = dtype == DType::f16 ? std::ldexp(1.0, -11) : u;
  double worst = 0.0;
#pragma omp parallel for reduction(max : worst)
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double product =
            av[static_cast<size_t>(i * k + p)] * bv[static_cast<size_t>(j * k + p)];
        exact += product;
        magnitude += std::fabs(product);
      }
      const double bound = gamma * magnitude + u_out * std::fabs(exact) + 1e-300;
      const double error = std::fabs(cv[static_cast<size_t>(i * n + j)] - exact);
      worst = std::max(worst, error / bound);
    }
  }
  if (!(worst <= 1.0)) {
    throw std::runtime_error(report::format(
        "gemm: the result for M=%lld N=%lld K=%lld is wrong: an element is %.3g times its "
        "error bound away from the double-precision reference",
        static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k), worst));
  }
  return worst;
}

GemmRow measure_gemm(int64_t m, int64_t n, int64_t k, const GemmPlan& plan, Generator& gen) {
  NoGradGuard no_grad;
  // Values uniform in [-1, 1), so that sums cancel as real data does.
  auto random_matrix = [&](int64_t rows, int64_t cols) {
    Tensor host = empty({rows, cols}, TensorOptions(DType::f32));
    uniform_(host, -1.0, 1.0, gen);
    return host.to(plan.dtype).to(plan.device);
  };
  const Tensor a = random_matrix(m, k);
  const Tensor b = random_matrix(n, k);
  GemmRow row;
  row.m = m;
  row.n = n;
  row.k = k;
  Tensor c = linear(a, b);  // also the warm-up call
  row.worst_error_ratio = check_against_reference(a, b, c, plan.dtype);

  const int64_t calls = calibrate_calls(a, b, c, plan.config.min_seconds);
  std::vector<double> rates, per_call;
  const double flop =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  for (int64_t r = 0; r < plan.config.repeats; ++r) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < calls; ++i) c = linear(a, b);
    wait_for(c);
    const double seconds = seconds_since(start) / static_cast<double>(calls);
    per_call.push_back(seconds);
    rates.push_back(flop / seconds);
  }
  row.flops = report::summarize(rates);
  std::sort(per_call.begin(), per_call.end());
  row.seconds_per_call = per_call[per_call.size() / 2];
  return row;
}

std::vector<GemmRow> run_gemm(const GemmPlan& plan,
                              const std::function<void(const GemmRow&)>& on_row) {
  const std::string& vary = plan.config.vary;
  const int64_t fixed = plan.config.fixed;
  Generator gen(0);
  std::vector<GemmRow> rows;
  for (int64_t s : plan.sizes) {
    const int64_t m = vary == "mnk" || vary == "m" ? s : fixed;
    const int64_t n = vary == "mnk" || vary == "n" ? s : fixed;
    const int64_t k = vary == "mnk" || vary == "k" ? s : fixed;
    GemmRow row = measure_gemm(m, n, k, plan, gen);
    row.varied = s;
    if (on_row) on_row(row);
    rows.push_back(row);
  }
  return rows;
}

report::SampleSummary scaled_flops(const GemmRow& row, const GemmPlan& plan) {
  report::SampleSummary scaled = row.flops;
  scaled.mean /= plan.unit;
  scaled.std /= plan.unit;
  return scaled;
}

std::string alignment_label(int64_t v) {
  if (v % 64 == 0) return "x64";
  if (v % 8 == 0) return "x8";
  return "-";
}

}  // namespace b3::experiment
