// Finite-difference gradient checking (see gradcheck.h for the method).
#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "layers/module.h"
#include "tensor/random.h"

namespace b3 {

namespace {

// L = sum(r * y), in double.
double project(const Tensor& y, const std::vector<double>& r) {
  const std::vector<double> values = y.to_doubles();
  double total = 0.0;
  for (size_t i = 0; i < values.size(); ++i) total += values[i] * r[i];
  return total;
}

// Pointer to logical element `index` of a CPU f64 tensor, any strides.
double* element(Tensor& t, int64_t index) {
  int64_t offset = 0;
  for (int64_t d = t.dim(); d-- > 0;) {
    offset += (index % t.size(d)) * t.stride(d);
    index /= t.size(d);
  }
  return t.data<double>() + offset;
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor()>& fn, const std::vector<Tensor>& wrt,
                          const GradcheckOptions& options) {
  for (const Tensor& t : wrt) {
    if (t.dtype() != DType::f64 || !t.device().is_cpu()) {
      throw std::invalid_argument("gradcheck: every checked tensor must be f64 on the CPU, got " +
                                  t.str());
    }
    if (!t.requires_grad()) {
      throw std::invalid_argument("gradcheck: a checked tensor does not require grad: " + t.str());
    }
    if (!t.is_leaf()) {
      throw std::invalid_argument(
          "gradcheck: a checked tensor must be a leaf (only leaves "
          "receive .grad), got one made by " +
          t.grad_fn()->name());
    }
  }
  Generator gen(options.seed);

  // Analytic gradients: one backward with grad_output = r.
  for (const Tensor& t : wrt) const_cast<Tensor&>(t).zero_grad();
  Tensor y = fn();
  Tensor r_tensor = randn(y.shape(), gen, TensorOptions(DType::f64));
  const std::vector<double> r = r_tensor.to_doubles();
  y.backward(r_tensor.contiguous(y.suggest_memory_format()));

  GradcheckResult result;
  std::ostringstream report;
  int reported = 0;
  NoGradGuard no_grad;
  // L at the unperturbed point; every perturbation below is undone exactly.
  const double center = project(fn(), r);
  for (size_t which = 0; which < wrt.size(); ++which) {
    Tensor t = wrt[which];
    const Tensor analytic_grad = t.grad();
    const std::vector<double> analytic =
        analytic_grad.defined() ? analytic_grad.to_doubles()
                                : std::vector<double>(static_cast<size_t>(t.numel()), 0.0);
    std::vector<int64_t> points(static_cast<size_t>(t.numel()));
    std::iota(points.begin(), points.end(), 0);
    if (options.max_points_per_tensor > 0 && t.numel() > options.max_points_per_tensor) {
      for (size_t i = points.size() - 1; i > 0; --i) std::swap(points[i], points[gen.below(i + 1)]);
      points.resize(static_cast<size_t>(options.max_points_per_tensor));
    }
    for (int64_t j : points) {
      double* x = element(t, j);
      const double original = *x;
      *x = original + options.eps;
      const double plus = project(fn(), r);
      *x = original - options.eps;
      const double minus = project(fn(), r);
      *x = original;

      const double forward_slope = (plus - center) / options.eps;
      const double backward_slope = (center - minus) / options.eps;
      const double slope_scale = std::max({std::abs(forward_slope), std::abs(backward_slope), 1.0});
      if (std::abs(forward_slope - backward_slope) > options.kink_threshold * slope_scale) {
        ++result.skipped_kinks;
        continue;
      }
      const double numeric = (plus - minus) / (2.0 * options.eps);
      const double a = analytic[static_cast<size_t>(j)];
      const double scale = std::max({std::abs(a), std::abs(numeric), 1.0});
      const double error = std::abs(a - numeric) / scale;
      result.worst_error = std::max(result.worst_error, error);
      ++result.checked;
      if (error > options.tolerance) {
        result.ok = false;
        if (reported++ < 10) {
          report << "tensor " << which << " " << shape_str(t.shape()) << " element " << j
                 << ": analytic " << a << ", numeric " << numeric << ", error " << error << "\n";
        }
      }
    }
  }
  result.report = report.str();
  return result;
}

GradcheckResult gradcheck_module(Module& module, const Tensor& input,
                                 const GradcheckOptions& options) {
  Tensor x = input.detach();
  x.set_requires_grad(true);
  std::vector<Tensor> wrt{x};
  for (const Tensor& p : module.parameters()) wrt.push_back(p);
  return gradcheck([&] { return module.forward(x); }, wrt, options);
}

}  // namespace b3
