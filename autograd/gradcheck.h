// gradcheck: compares autograd's gradients with central finite differences,
// in double precision, Caffe-style.
//
// The function's output y is reduced to a scalar L = sum(r * y) with a fixed
// random r, so every output element takes part. For each element x_j of each
// tensor in `wrt`:
//   numeric  = (L(x_j + eps) - L(x_j - eps)) / (2 eps)
//   analytic = dL/dx_j from one backward pass with grad_output r
//   pass when |analytic - numeric| <= tolerance * max(|analytic|, |numeric|, 1)
// Points near a kink (ReLU at 0, the ends of Hardswish's ramp) are skipped:
// there the one-sided slopes (L(x+eps)-L(x))/eps and (L(x)-L(x-eps))/eps
// disagree by more than kink_threshold * max(|slopes|, 1). A smooth function
// differs there only by about |L''| * eps; a kink by the jump in slope.
//
// Tolerance: with eps = 1e-6 in double, the truncation error is about
// eps^2 * |L'''| ~ 1e-12 and the rounding error about 1e-16 * |L| / eps ~
// 1e-10 * |L|; the default 1e-6 sits orders of magnitude above both, while a
// wrong or missing term in a backward shows as an O(1) relative error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

class Module;

struct GradcheckOptions {
  double eps = 1e-6;
  double tolerance = 1e-6;
  double kink_threshold = 1e-3;
  uint64_t seed = 1234;
  // Check at most this many elements per tensor (chosen at random, seeded);
  // 0 checks every element.
  int64_t max_points_per_tensor = 0;
};

struct GradcheckResult {
  bool ok = true;
  int64_t checked = 0;        // points compared
  int64_t skipped_kinks = 0;  // points skipped as near a kink
  double worst_error = 0.0;   // largest |a - n| / max(|a|, |n|, 1)
  std::string report;         // the first failures, one per line
};

// Checks d fn() / d t for every tensor t in `wrt` (f64, CPU, requiring grad).
// fn is called many times and must read the current values of `wrt`.
GradcheckResult gradcheck(const std::function<Tensor()>& fn, const std::vector<Tensor>& wrt,
                          const GradcheckOptions& options = {});

// Checks a module with respect to `input` (made to require grad) and every
// parameter; the module must already be in f64 (module.to(DType::f64)).
GradcheckResult gradcheck_module(Module& module, const Tensor& input,
                                 const GradcheckOptions& options = {});

}  // namespace b3
