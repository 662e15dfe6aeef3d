// conv2d: argument checks, the dispatch by device (CUDA tensors go to
// conv2d_cuda_op.cpp, after autocast; CPU kernels in conv2d_cpu.cpp work on
// NHWC data, so an NCHW input is converted on entry and the output converted
// back), the CPU autograd node, and the Conv2d module.
#include "layers/conv2d.h"

#include <cmath>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "autograd/node.h"
#include "layers/conv2d_cpu.h"
#include "layers/conv2d_cuda_op.h"
#include "layers/graph_input.h"
#include "tensor/autocast.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

[[noreturn]] void fail(const std::string& message) {
  throw std::invalid_argument("conv2d: " + message);
}

// True when any defined tensor lives on a CUDA device: the op then runs there
// (or says clearly why it cannot, e.g. a weight left on the CPU).
bool any_on_cuda(std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (t.defined() && t.device().is_cuda()) return true;
  }
  return false;
}

// Checks every argument against PyTorch's rules and returns the geometry. The
// dtypes allowed depend on the device: f32/f64 on the CPU, f32/f16 on CUDA.
cpu::Conv2dShape check_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                 int64_t stride, int64_t padding, int64_t groups, bool on_cuda) {
  if (!input.defined()) fail("input is undefined");
  if (!weight.defined()) fail("weight is undefined");
  if (input.dim() != 4) fail("input must be 4-D [N, C, H, W], got " + shape_str(input.shape()));
  if (weight.dim() != 4) {
    fail("weight must be 4-D [Cout, Cin / groups, k, k], got " + shape_str(weight.shape()));
  }
  if (stride < 1) fail("stride must be >= 1, got " + str(stride));
  if (padding < 0) fail("padding must be >= 0, got " + str(padding));
  if (groups < 1) fail("groups must be >= 1, got " + str(groups));
  if (weight.dtype() != input.dtype()) {
    fail(std::string("weight dtype ") + dtype_name(weight.dtype()) + " differs from input dtype " +
         dtype_name(input.dtype()));
  }
  if (on_cuda) {
    if (input.dtype() != DType::f32 && input.dtype() != DType::f16) {
      fail(std::string("dtype ") + dtype_name(input.dtype()) +
           " is not supported on CUDA (use f32, or f16 e.g. through AutocastGuard)");
    }
  } else if (!is_floating(input.dtype()) || input.dtype() == DType::f16) {
    fail(std::string("dtype ") + dtype_name(input.dtype()) +
         " is not supported on the CPU (use f32 or f64)");
  }

  cpu::Conv2dShape s;
  s.batch = input.size(0);
  s.in_channels = input.size(1);
  s.in_height = input.size(2);
  s.in_width = input.size(3);
  s.out_channels = weight.size(0);
  s.kernel = weight.size(2);
  s.stride = stride;
  s.padding = padding;
  s.groups = groups;
  if (weight.size(2) != weight.size(3)) {
    fail("only square kernels are supported, weight " + shape_str(weight.shape()) + " has a " +
         str(weight.size(2)) + "x" + str(weight.size(3)) + " kernel");
  }
  if (weight.numel() == 0) fail("weight " + shape_str(weight.shape()) + " is empty");
  if (s.out_channels % groups != 0) {
    fail("weight has " + str(s.out_channels) + " output channels, not divisible by groups " +
         str(groups));
  }
  if (s.in_channels != weight.size(1) * groups) {
    fail("input has " + str(s.in_channels) + " channels, weight expects " +
         str(weight.size(1) * groups) + " (weight " + shape_str(weight.shape()) + ", groups " +
         str(groups) + ", input " + shape_str(input.shape()) + ")");
  }
  if (bias.defined()) {
    if (bias.dtype() != input.dtype()) {
      fail(std::string("bias dtype ") + dtype_name(bias.dtype()) + " differs from input dtype " +
           dtype_name(input.dtype()));
    }
    if (bias.dim() != 1 || bias.size(0) != s.out_channels) {
      fail("bias must have shape [" + str(s.out_channels) + "] (one per output channel), got " +
           shape_str(bias.shape()));
    }
  }
  const int64_t padded_height = s.in_height + 2 * padding;
  const int64_t padded_width = s.in_width + 2 * padding;
  if (padded_height < s.kernel || padded_width < s.kernel) {
    fail("input " + shape_str(input.shape()) + " padded by " + str(padding) + " is " +
         str(padded_height) + "x" + str(padded_width) + ", smaller than the " + str(s.kernel) +
         "x" + str(s.kernel) + " kernel");
  }
  s.out_height = (padded_height - s.kernel) / stride + 1;
  s.out_width = (padded_width - s.kernel) / stride + 1;
  return s;
}

// Saves what the backward needs: the input (NHWC) only when the weight needs
// its gradient, the weight only when the input does.
class Conv2dBackward final : public Node {
 public:
  Conv2dBackward(const cpu::Conv2dShape& shape, MemoryFormat input_format, Tensor input_nhwc,
                 Tensor weight)
      : Node("Conv2dBackward"),
        shape_(shape),
        input_format_(input_format),
        input_nhwc_(std::move(input_nhwc)),
        weight_(std::move(weight)) {}

  std::vector<Tensor> backward(const Tensor& grad_output) override {
    // What was saved at forward time bounds what can be computed.
    const bool want_input = inputs[0].requires_grad() && weight_.defined();
    const bool want_weight = inputs[1].requires_grad() && input_nhwc_.defined();
    const bool want_bias = inputs[2].defined() && inputs[2].requires_grad();
    const DType dtype = inputs[1].dtype();
    require_cpu("conv2d backward", {grad_output});
    const Tensor gout = grad_output.to(dtype).contiguous(MemoryFormat::channels_last);

    Tensor grad_input, grad_weight, grad_bias;
    if (want_input) {
      grad_input =
          empty(inputs[0].shape(), TensorOptions(dtype).with_format(MemoryFormat::channels_last));
    }
    if (want_weight) grad_weight = empty(inputs[1].shape(), TensorOptions(dtype));
    if (want_bias) grad_bias = empty(inputs[2].shape(), TensorOptions(dtype));

    dispatch_float(dtype, "conv2d backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::conv2d_backward_nhwc<T>(shape_, want_weight ? input_nhwc_.data<T>() : nullptr,
                                   want_input ? weight_.data<T>() : nullptr, gout.data<T>(),
                                   want_input ? grad_input.data<T>() : nullptr,
                                   want_weight ? grad_weight.data<T>() : nullptr,
                                   want_bias ? grad_bias.data<T>() : nullptr);
    });
    if (want_input && input_format_ == MemoryFormat::contiguous) {
      grad_input = grad_input.contiguous(MemoryFormat::contiguous);
    }
    return {grad_input, grad_weight, grad_bias};
  }

 private:
  cpu::Conv2dShape shape_;
  MemoryFormat input_format_;
  Tensor input_nhwc_;
  Tensor weight_;
};

}  // namespace

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t groups) {
  if (any_on_cuda({input, weight, bias})) {
    cuda::require_same_cuda_device("conv2d", {input, weight, bias});
    // Autocast first, as torch.autocast does: under an AutocastGuard the op and
    // its graph see f16 copies (recorded casts, so f32 leaves get f32 gradients).
    const Tensor x = autocast_cast(input);
    const Tensor w = autocast_cast(weight);
    const Tensor b = autocast_cast(bias);
    const cpu::Conv2dShape shape = check_arguments(x, w, b, stride, padding, groups, true);
    return cuda_op::conv2d(x, w, b, shape);
  }
  require_cpu("conv2d", {input, weight, bias});
  const cpu::Conv2dShape shape =
      check_arguments(input, weight, bias, stride, padding, groups, false);
  const MemoryFormat format = input.suggest_memory_format();
  const Tensor x = input.detach().contiguous(MemoryFormat::channels_last);
  const Tensor w = weight.detach().contiguous();
  const Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();

  Tensor y = empty({shape.batch, shape.out_channels, shape.out_height, shape.out_width},
                   TensorOptions(input.dtype()).with_format(MemoryFormat::channels_last));
  dispatch_float(input.dtype(), "conv2d", [&](auto tag) {
    using T = decltype(tag);
    cpu::conv2d_forward_nhwc<T>(shape, x.data<T>(), w.data<T>(),
                                b.defined() ? b.data<T>() : nullptr, y.data<T>());
  });
  if (format == MemoryFormat::contiguous) y = y.contiguous(MemoryFormat::contiguous);

  if (should_record({input, weight, bias})) {
    auto node = std::make_shared<Conv2dBackward>(
        shape, format, weight.requires_grad() ? x : Tensor(), input.requires_grad() ? w : Tensor());
    record(y, std::move(node), {graph_input(input), weight, bias});
  }
  return y;
}

// ---------------------------------------------------------------- module --

namespace {

const Conv2dOptions& check_options(const Conv2dOptions& o) {
  auto bad = [](const std::string& message) { throw std::invalid_argument("Conv2d: " + message); };
  if (o.in_channels < 1 || o.out_channels < 1) {
    bad("in_channels and out_channels must be >= 1, got " + str(o.in_channels) + " and " +
        str(o.out_channels));
  }
  if (o.kernel_size < 1) bad("kernel_size must be >= 1, got " + str(o.kernel_size));
  if (o.stride < 1) bad("stride must be >= 1, got " + str(o.stride));
  if (o.padding < 0) bad("padding must be >= 0, got " + str(o.padding));
  if (o.groups < 1 || o.in_channels % o.groups != 0 || o.out_channels % o.groups != 0) {
    bad("groups " + str(o.groups) + " must be >= 1 and divide in_channels " + str(o.in_channels) +
        " and out_channels " + str(o.out_channels));
  }
  return o;
}

}  // namespace

Conv2d::Conv2d(const Conv2dOptions& options, Generator& gen) : options_(check_options(options)) {
  const int64_t group_in = options_.in_channels / options_.groups;
  const int64_t fan_in = group_in * options_.kernel_size * options_.kernel_size;
  // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in)
  // = 1 / sqrt(fan_in); nn.Conv2d draws its bias from the same range.
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  Tensor w = empty({options_.out_channels, group_in, options_.kernel_size, options_.kernel_size});
  uniform_(w, -bound, bound, gen);
  weight = register_parameter("weight", w);
  if (options_.bias) {
    Tensor b = empty({options_.out_channels});
    uniform_(b, -bound, bound, gen);
    bias = register_parameter("bias", b);
  }
}

Tensor Conv2d::forward(const Tensor& input) {
  return conv2d(input, weight, bias, options_.stride, options_.padding, options_.groups);
}

std::string Conv2d::describe() const {
  std::string text = "Conv2d(" + str(options_.in_channels) + ", " + str(options_.out_channels) +
                     ", kernel " + str(options_.kernel_size) + ", stride " + str(options_.stride);
  if (options_.padding != 0) text += ", padding " + str(options_.padding);
  if (options_.groups != 1) text += ", groups " + str(options_.groups);
  if (!options_.bias) text += ", no bias";
  return text + ")";
}

}  // namespace b3
