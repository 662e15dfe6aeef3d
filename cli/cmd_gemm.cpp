// `b3 gemm`: the alignment microbenchmark for matrix multiplication. Tensor
// Cores (and vectorized CPU GEMMs) like dimensions that are multiples of 8 or
// 64; this sweeps M, N and K across such multiples (default 120-136 and
// 504-520) and reports FLOP/s, so a jump at 128 or 512 (or its absence) is
// measured rather than assumed.
//
// It times the production GEMM: linear() (layers/linear.h), C = A B^T with
// A [M, K] and B [N, K], which is Eigen on the CPU (f32) and will be cuBLAS
// f16 with f32 accumulation on a GPU (dtype f16 there). Every shape is first
// checked against a naive double-precision reference with a rigorous bound:
//   |C - C_ref| <= gamma_K * sum_k |A_ik| |B_jk| + u_out * |C_ref|,
//   gamma_K = K u / (1 - K u), u = 2^-24 (f32 accumulation),
//   u_out = 2^-24 (f32 result) or 2^-11 (f16 result),
// which holds for any summation order (Higham, Accuracy and Stability of
// Numerical Algorithms, 2nd ed., section 3.1). Products of f16 inputs are
// exact in f32, so the bound covers the f16 path too.
// Timing: a warm-up call, then calls in a loop long enough (--min-seconds)
// for the clock, --repeats times; FLOP/s = 2 M N K / time per call.
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "autograd/grad_mode.h"
#include "cli/commands.h"
#include "experiment/plot.h"
#include "experiment/report.h"
#include "layers/linear.h"
#include "tensor/random.h"

namespace b3::cli {

namespace {

struct GemmArgs {
  std::string device = "cpu";
  std::string sizes = "120-136,504-520";
  std::string vary = "mnk";  // mnk: M = N = K = size; m, n or k: that one, the others --fixed
  int64_t fixed = 512;
  double min_seconds = 0.05;
  int64_t repeats = 5;
  std::string out = "gemm-results";
};

struct GemmRow {
  int64_t m = 0, n = 0, k = 0, varied = 0;
  report::SampleSummary flops;  // FLOP/s per repeat
  double seconds_per_call = 0.0;
  double worst_error_ratio = 0.0;  // max |C - C_ref| / bound (must be <= 1)
};

using Clock = std::chrono::steady_clock;

// Largest |C - C_ref| / bound over all elements; throws when above 1.
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

GemmRow measure(int64_t m, int64_t n, int64_t k, const Device& device, DType dtype,
                const GemmArgs& args, Generator& gen) {
  NoGradGuard no_grad;
  // Values uniform in [-1, 1), so that sums cancel as real data does.
  auto random_matrix = [&](int64_t rows, int64_t cols) {
    Tensor host = empty({rows, cols}, TensorOptions(DType::f32));
    uniform_(host, -1.0, 1.0, gen);
    return host.to(dtype).to(device);
  };
  const Tensor a = random_matrix(m, k);
  const Tensor b = random_matrix(n, k);
  GemmRow row;
  row.m = m;
  row.n = n;
  row.k = k;
  Tensor c = linear(a, b);  // also the warm-up call
  row.worst_error_ratio = check_against_reference(a, b, c, dtype);

  // Wait for the device: a copy to the host returns when the work before it is done.
  auto synchronize = [&](const Tensor& t) {
    if (device.is_cuda()) t.narrow(0, 0, 1).to(Device::cpu());
  };
  // Calibrate: calls per measurement so that one lasts >= min_seconds.
  int64_t calls = 1;
  while (true) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < calls; ++i) c = linear(a, b);
    synchronize(c);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (seconds >= args.min_seconds || calls >= (int64_t{1} << 24)) break;
    calls = seconds <= 0 ? calls * 10
                         : std::max(calls * 2,
                                    static_cast<int64_t>(calls * args.min_seconds / seconds * 1.2));
  }
  std::vector<double> rates, per_call;
  const double flop =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  for (int64_t r = 0; r < args.repeats; ++r) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < calls; ++i) c = linear(a, b);
    synchronize(c);
    const double seconds =
        std::chrono::duration<double>(Clock::now() - start).count() / static_cast<double>(calls);
    per_call.push_back(seconds);
    rates.push_back(flop / seconds);
  }
  row.flops = report::summarize(rates);
  std::sort(per_call.begin(), per_call.end());
  row.seconds_per_call = per_call[per_call.size() / 2];
  return row;
}

std::string alignment(int64_t v) {
  if (v % 64 == 0) return "x64";
  if (v % 8 == 0) return "x8";
  return "-";
}

void run_gemm(const GemmArgs& args) {
  const std::vector<int64_t> sizes = report::parse_size_list(args.sizes, "--sizes");
  Device device = args.device == "cuda" ? Device::cuda(0) : Device::cpu();
  require_device_available(device, "b3 gemm --device " + args.device);
  // CPU: f32 (Eigen). CUDA: f16 inputs and output, f32 accumulation (cuBLAS).
  const DType dtype = device.is_cuda() ? DType::f16 : DType::f32;
  const std::string dtype_text = device.is_cuda() ? "f16 (f32 accumulate)" : "f32";
  const std::string device_text =
      device.is_cuda() ? device.str() : "cpu (" + report::cpu_description() + ")";
  const double unit = device.is_cuda() ? 1e12 : 1e9;
  const char* unit_name = device.is_cuda() ? "TFLOP/s" : "GFLOP/s";

  std::printf(
      "b3 gemm: C = A B^T through linear(), %s, %s; each shape checked against a "
      "double-precision reference, then timed %lld times (>= %.3g s each)\n",
      device_text.c_str(), dtype_text.c_str(), static_cast<long long>(args.repeats),
      args.min_seconds);
  std::printf("%6s %6s %6s %5s %5s %5s %22s %12s %10s\n", "M", "N", "K", "M", "N", "K",
              (std::string(unit_name) + " mean ± std").c_str(), "us per call", "err/bound");
  Generator gen(0);
  std::vector<GemmRow> rows;
  for (int64_t s : sizes) {
    const int64_t m = args.vary == "mnk" || args.vary == "m" ? s : args.fixed;
    const int64_t n = args.vary == "mnk" || args.vary == "n" ? s : args.fixed;
    const int64_t k = args.vary == "mnk" || args.vary == "k" ? s : args.fixed;
    GemmRow row = measure(m, n, k, device, dtype, args, gen);
    row.varied = s;
    report::SampleSummary scaled = row.flops;
    scaled.mean /= unit;
    scaled.std /= unit;
    std::printf("%6lld %6lld %6lld %5s %5s %5s %22s %12.2f %10.3f\n", static_cast<long long>(m),
                static_cast<long long>(n), static_cast<long long>(k), alignment(m).c_str(),
                alignment(n).c_str(), alignment(k).c_str(),
                report::format_mean_std(scaled, 2).c_str(), row.seconds_per_call * 1e6,
                row.worst_error_ratio);
    std::fflush(stdout);
    rows.push_back(row);
  }

  const std::filesystem::path dir = args.out;
  std::filesystem::create_directories(dir);
  std::ostringstream csv, md;
  csv << "m,n,k,flops_mean,flops_std,repeats,seconds_per_call,error_over_bound\n";
  const std::string what = args.vary == "mnk"
                               ? "M = N = K"
                               : args.vary + " varied, the others " + std::to_string(args.fixed);
  md << "# b3 gemm: " << unit_name << " against matrix size\n\n"
     << "- device: " << device_text << "; dtype: " << dtype_text
     << "; layout: row-major A [M, K], B [N, K], C = A B^T (linear())\n"
     << "- shapes: " << what << "; " << args.repeats
     << " timed repeats per shape, each >= " << args.min_seconds
     << " s of calls; mean ± sample std\n"
     << "- every result checked first against a double-precision reference (err/bound <= 1)\n\n"
     << "| M | N | K | " << unit_name
     << " | us per call | err/bound |\n|---:|---:|---:|---:|---:|---:|\n";
  plot::Series line{"all sizes", {}, {}, {}, true, "#bbbbbb", 0};
  plot::Series x64{"multiple of 64", {}, {}, {}, false, "#d62728", 7};
  plot::Series x8{"multiple of 8", {}, {}, {}, false, "#1f77b4", 5};
  plot::Series other{"other", {}, {}, {}, false, "#555555", 9};
  for (const GemmRow& r : rows) {
    csv << r.m << "," << r.n << "," << r.k << "," << r.flops.mean << "," << r.flops.std << ","
        << r.flops.count << "," << r.seconds_per_call << "," << r.worst_error_ratio << "\n";
    report::SampleSummary scaled = r.flops;
    scaled.mean /= unit;
    scaled.std /= unit;
    md << "| " << r.m << " | " << r.n << " | " << r.k << " | " << report::format_mean_std(scaled, 2)
       << " | " << report::format("%.2f", r.seconds_per_call * 1e6) << " | "
       << report::format("%.3f", r.worst_error_ratio) << " |\n";
    const double x = static_cast<double>(r.varied);
    line.x.push_back(x);
    line.y.push_back(scaled.mean);
    plot::Series& kind = r.varied % 64 == 0 ? x64 : r.varied % 8 == 0 ? x8 : other;
    kind.x.push_back(x);
    kind.y.push_back(scaled.mean);
    kind.error.push_back(scaled.std);
  }
  plot::Figure figure;
  figure.title = report::format("b3 gemm: %s vs size (%s) | %s, %s, row-major", unit_name,
                                what.c_str(), device_text.c_str(), dtype_text.c_str());
  figure.subtitle = report::format("mean +- 1 sample std over %lld timed repeats per shape",
                                   static_cast<long long>(args.repeats));
  figure.x_label = args.vary == "mnk" ? "M = N = K" : args.vary;
  figure.y_label = unit_name;
  figure.y_from_zero = true;
  figure.series.push_back(line);
  for (plot::Series* s : {&x64, &x8, &other})
    if (!s->y.empty()) figure.series.push_back(*s);
  const int64_t smallest = *std::min_element(sizes.begin(), sizes.end());
  const int64_t largest = *std::max_element(sizes.begin(), sizes.end());
  figure.log_x = largest >= 3 * smallest;
  for (int64_t v = 64; v <= largest; v += 64)
    if (v >= smallest) figure.x_marks.push_back(static_cast<double>(v));
  const plot::PlotFiles files = plot::write_plot(dir / "gemm", figure);
  md << "\n"
     << (files.rendered ? "![gemm](gemm.png)\n" : "Plot not rendered: " + files.note + "\n");
  report::write_text_atomically(dir / "gemm.csv", csv.str());
  report::write_text_atomically(dir / "gemm.md", md.str());
  if (!files.rendered) std::printf("plot: %s\n", files.note.c_str());
  std::printf("wrote %s/gemm.md, gemm.csv%s\n", dir.string().c_str(),
              files.rendered ? ", gemm.png" : "");
}

}  // namespace

void register_gemm_command(CLI::App& app) {
  auto args = std::make_shared<GemmArgs>();
  CLI::App* cmd = app.add_subcommand(
      "gemm", "GEMM FLOP/s as M, N, K sweep around multiples of 8 and 64 (checked, then timed)");
  cmd->add_option("--device", args->device, "cpu (Eigen, f32) or cuda (cuBLAS, f16)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--sizes", args->sizes, "sizes: list and/or ranges, e.g. 120-136,504-520")
      ->check(CLI::Validator([](std::string& s) { return report::size_list_problem(s); }, "LIST",
                             "size list"))
      ->capture_default_str();
  cmd->add_option("--vary", args->vary, "mnk: M = N = K = size; m, n or k: only that one")
      ->check(CLI::IsMember({"mnk", "m", "n", "k"}))
      ->capture_default_str();
  cmd->add_option("--fixed", args->fixed, "the dimensions not varied (with --vary m|n|k)")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}))
      ->capture_default_str();
  cmd->add_option("--min-seconds", args->min_seconds, "minimum length of one timed repeat")
      ->check(CLI::Range(1e-6, 60.0))
      ->capture_default_str();
  cmd->add_option("--repeats", args->repeats, "timed repeats per shape")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->add_option("--out", args->out, "directory for gemm.md, gemm.csv, gemm.png")
      ->capture_default_str();
  cmd->callback([args] { run_gemm(*args); });
}

}  // namespace b3::cli
