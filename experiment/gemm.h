// The GEMM alignment microbenchmark (`b3 gemm`). Tensor Cores (and vectorized
// CPU GEMMs) like dimensions that are multiples of 8 or 64; this sweeps M, N
// and K across such multiples (default 120-136 and 504-520) and measures
// FLOP/s, so a jump at 128 or 512 (or its absence) is measured rather than
// assumed.
//
// It times the production GEMM: linear() (layers/linear.h), C = A B^T with
// A [M, K] and B [N, K], which is Eigen on the CPU (f32) and cuBLAS f16 with
// f32 accumulation on a GPU. Every shape is first checked against a naive
// double-precision reference with a rigorous bound:
//   |C - C_ref| <= gamma_K * sum_k |A_ik| |B_jk| + u_out * |C_ref|,
//   gamma_K = K u / (1 - K u), u = 2^-24 (f32 accumulation),
//   u_out = 2^-24 (f32 result) or 2^-11 (f16 result),
// which holds for any summation order (Higham, Accuracy and Stability of
// Numerical Algorithms, 2nd ed., section 3.1). Products of f16 inputs are
// exact in f32, so the bound covers the f16 path too.
// Timing: a warm-up call, then calls in a loop long enough (min_seconds) for
// the clock, `repeats` times; FLOP/s = 2 M N K / time per call.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "experiment/report.h"
#include "tensor/device.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace b3::experiment {

struct GemmConfig {
  std::string device = "cpu";  // cpu | cuda
  std::string sizes = "120-136,504-520";
  std::string vary = "mnk";  // mnk: M = N = K = size; m, n or k: that one, the others `fixed`
  int64_t fixed = 512;
  double min_seconds = 0.05;
  int64_t repeats = 5;
};

// The config resolved for its device.
struct GemmPlan {
  GemmConfig config;
  std::vector<int64_t> sizes;
  Device device;
  DType dtype = DType::f32;  // f32 (CPU) or f16 (CUDA)
  std::string dtype_text;    // "f32" or "f16 (f32 accumulate)"
  std::string device_text;   // "cuda:0" or "cpu (<model name>, N threads)"
  double unit = 1e9;         // FLOP/s per reported unit
  std::string unit_name;     // "GFLOP/s" (CPU) or "TFLOP/s" (CUDA)
};

// Throws std::invalid_argument for a bad size list or an unusable device.
GemmPlan plan_gemm(const GemmConfig& config);

struct GemmRow {
  int64_t m = 0, n = 0, k = 0, varied = 0;
  report::SampleSummary flops;  // FLOP/s per repeat
  double seconds_per_call = 0.0;
  double worst_error_ratio = 0.0;  // max |C - C_ref| / bound (must be <= 1)
};

// Largest |C - C_ref| / bound over all elements of C = A B^T; throws
// std::runtime_error naming the shape when above 1.
double check_against_reference(const Tensor& a, const Tensor& b, const Tensor& c, DType dtype);

// One shape: checked, then timed.
GemmRow measure_gemm(int64_t m, int64_t n, int64_t k, const GemmPlan& plan, Generator& gen);

// Every size of the plan; `on_row` (may be empty) sees each as it ends.
std::vector<GemmRow> run_gemm(const GemmPlan& plan,
                              const std::function<void(const GemmRow&)>& on_row = {});

// The row's FLOP/s in the plan's unit.
report::SampleSummary scaled_flops(const GemmRow& row, const GemmPlan& plan);
// "x64", "x8" or "-": the alignment of one dimension.
std::string alignment_label(int64_t value);

}  // namespace b3::experiment
