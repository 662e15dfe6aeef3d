// conv2d: argument checks, one op and one autograd node for both devices,
// and the Conv2d module. The device branch is at the kernel call
// (run_forward, run_backward): the CPU kernels (conv2d_cpu.h) work on NHWC
// data, so on the CPU an NCHW input is converted on entry and the output (and
// the input gradient) converted back; cuDNN (conv2d_cuda.h) works in the
// input's own layout. Both are told the same Conv2dGeometry.
#include "layers/conv2d.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "autograd/node.h"
#include "layers/conv2d_cpu.h"
#include "layers/conv2d_cuda.h"
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

// Checks every argument against PyTorch's rules and returns the geometry. The
// dtypes allowed depend on the device: f32/f64 on the CPU, f32/f16 on CUDA.
Conv2dGeometry check_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias,
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

  const int64_t in_channels = input.size(1), out_channels = weight.size(0);
  const int64_t kernel = weight.size(2);
  if (weight.size(2) != weight.size(3)) {
    fail("only square kernels are supported, weight " + shape_str(weight.shape()) + " has a " +
         str(weight.size(2)) + "x" + str(weight.size(3)) + " kernel");
  }
  if (weight.numel() == 0) fail("weight " + shape_str(weight.shape()) + " is empty");
  if (out_channels % groups != 0) {
    fail("weight has " + str(out_channels) + " output channels, not divisible by groups " +
         str(groups));
  }
  if (in_channels != weight.size(1) * groups) {
    fail("input has " + str(in_channels) + " channels, weight expects " +
         str(weight.size(1) * groups) + " (weight " + shape_str(weight.shape()) + ", groups " +
         str(groups) + ", input " + shape_str(input.shape()) + ")");
  }
  if (bias.defined()) {
    if (bias.dtype() != input.dtype()) {
      fail(std::string("bias dtype ") + dtype_name(bias.dtype()) + " differs from input dtype " +
           dtype_name(input.dtype()));
    }
    if (bias.dim() != 1 || bias.size(0) != out_channels) {
      fail("bias must have shape [" + str(out_channels) + "] (one per output channel), got " +
           shape_str(bias.shape()));
    }
  }
  const int64_t padded_height = input.size(2) + 2 * padding;
  const int64_t padded_width = input.size(3) + 2 * padding;
  if (padded_height < kernel || padded_width < kernel) {
    fail("input " + shape_str(input.shape()) + " padded by " + str(padding) + " is " +
         str(padded_height) + "x" + str(padded_width) + ", smaller than the " + str(kernel) + "x" +
         str(kernel) + " kernel");
  }
  Conv2dGeometry g = conv2d_geometry(input.size(0), in_channels, input.size(2), input.size(3),
                                     out_channels, kernel, stride, padding, groups);
  g.dtype = input.dtype();
  // The layout the kernels work in: cuDNN takes the input's own, the CPU
  // kernels NHWC only.
  g.format = on_cuda ? input.suggest_memory_format() : MemoryFormat::channels_last;
  return g;
}

// The layout of the weight the kernels read: cuDNN takes it in the
// activations' layout (KRSC for NHWC), the CPU kernels as PyTorch stores it
// ([Cout, Cin/groups, k, k], KCRS).
MemoryFormat weight_format(const Conv2dGeometry& g, bool on_cuda) {
  return on_cuda ? g.format : MemoryFormat::contiguous;
}

// y = epilogue(conv2d(x, w) + b) on x's device; x, w, y in the geometry's
// layouts. An epilogue only on the CPU (conv2d with one refuses CUDA).
void run_forward(const Conv2dGeometry& g, const Tensor& x, const Tensor& w, const Tensor& b,
                 Tensor& y, const Conv2dEpilogue* epilogue = nullptr) {
  if (x.device().is_cuda()) {
    cuda::conv2d_forward(g, x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr,
                         y.data_ptr(), cuda::stream_of(x));
    return;
  }
  dispatch_float(g.dtype, "conv2d", [&](auto tag) {
    using T = decltype(tag);
    cpu::OutputEpilogue<T> e;
    if (epilogue != nullptr) {
      e = {epilogue->scale.data<T>(), epilogue->shift.data<T>(), epilogue->activation,
           pointer_or_null<T>(epilogue->residual)};
    }
    cpu::conv2d_forward<T>(g, x.data<T>(), w.data<T>(), pointer_or_null<T>(b), y.data<T>(), e);
  });
}

// The epilogue's constants as dense [Cout] blocks of the input's dtype, and
// its activation one the kernels apply.
Conv2dEpilogue checked_epilogue(const Conv2dEpilogue& e, const Conv2dGeometry& g) {
  for (const auto& [t, name] : {std::pair{&e.scale, "scale"}, std::pair{&e.shift, "shift"}}) {
    if (!t->defined()) fail(std::string("epilogue ") + name + " is undefined");
    if (!t->device().is_cpu() || t->dtype() != g.dtype || t->dim() != 1 ||
        t->size(0) != g.out_channels) {
      fail(std::string("epilogue ") + name + " must be a CPU tensor [" + str(g.out_channels) +
           "] of the input's dtype " + dtype_name(g.dtype) + ", got " + t->str());
    }
  }
  if (e.activation != Activation::none && e.activation != Activation::relu &&
      e.activation != Activation::hardswish) {
    fail(std::string("epilogue activation ") + activation_name(e.activation) +
         " is not one the kernels apply (none, relu or hardswish)");
  }
  Tensor residual;
  if (e.residual.defined()) {
    const Shape out{g.batch, g.out_channels, g.out_height, g.out_width};
    if (!e.residual.device().is_cpu() || e.residual.dtype() != g.dtype ||
        e.residual.shape() != out) {
      fail("epilogue residual must be a CPU tensor " + shape_str(out) + " of the input's dtype " +
           dtype_name(g.dtype) + ", got " + e.residual.str());
    }
    residual = e.residual.detach().contiguous(g.format);  // the kernels' layout
  }
  return Conv2dEpilogue{e.scale.detach().contiguous(), e.shift.detach().contiguous(), e.activation,
                        residual};
}

// Whichever of grad_x, grad_w, grad_b is defined, from gy on its device; x
// is read only for grad_w and w only for grad_x (the other may be undefined).
// On the CPU, x may be undefined and `x_replay` rebuild it instead (a
// depthwise convolution's input, see conv2d below), and gy may be undefined
// and `gy_rows` form it (a 1x1 convolution's, see Conv2dBackward).
void run_backward(const Conv2dGeometry& g, const Tensor& x, const Node::OutputReplay& x_replay,
                  const Tensor& w, const Tensor& gy, const Node::GradientRows& gy_rows,
                  Tensor& grad_x, Tensor& grad_w, Tensor& grad_b) {
  if (gy.defined() && gy.device().is_cuda()) {
    const cuda::Stream stream = cuda::stream_of(gy);
    if (grad_x.defined()) {
      cuda::conv2d_backward_data(g, w.data_ptr(), gy.data_ptr(), grad_x.data_ptr(), stream);
    }
    if (grad_w.defined()) {
      cuda::conv2d_backward_filter(g, x.data_ptr(), gy.data_ptr(), grad_w.data_ptr(), stream);
    }
    if (grad_b.defined()) cuda::conv2d_backward_bias(g, gy.data_ptr(), grad_b.data_ptr(), stream);
    return;
  }
  dispatch_float(g.dtype, "conv2d backward", [&](auto tag) {
    using T = decltype(tag);
    cpu::conv2d_backward<T>(g, pointer_or_null<T>(x), pointer_or_null<T>(w), pointer_or_null<T>(gy),
                            mutable_pointer_or_null<T>(grad_x), mutable_pointer_or_null<T>(grad_w),
                            mutable_pointer_or_null<T>(grad_b), x_replay, gy_rows);
  });
}

// Saves what the backward needs, in the kernels' layouts: the input (or its
// producer's replay) only when the weight needs its gradient, the weight
// only when the input does.
class Conv2dBackward final : public Node {
 public:
  Conv2dBackward(const Conv2dGeometry& geometry, MemoryFormat input_format,
                 MemoryFormat weight_format, Tensor input, OutputReplay input_replay, Tensor weight,
                 const Tensor& output)
      : Node("Conv2dBackward"),
        geometry_(geometry),
        input_format_(input_format),
        weight_format_(weight_format),
        input_(std::move(input)),
        input_replay_(std::move(input_replay)),
        weight_(std::move(weight)),
        output_data_(output.data_ptr()) {}

  std::vector<Tensor> backward(const Tensor& grad_output) override {
    runs_on_cuda("conv2d backward", {grad_output, inputs[1]});  // both on one device
    // grad_output dense in the kernels' layout and dtype (a copy only when it is not).
    Tensor gy =
        grad_output.dtype() == geometry_.dtype ? grad_output : grad_output.to(geometry_.dtype);
    return gradients(gy.contiguous(geometry_.format), {});
  }

  // A 1x1 convolution on the CPU whose input (and so output) is NHWC: the
  // rows are the output's pixels, the kernels' own layout.
  bool takes_gradient_rows(const Tensor& output) const override {
    return output.defined() && output.data_ptr() == output_data_ && output.device().is_cpu() &&
           output.dtype() == geometry_.dtype && geometry_.is_pointwise() && geometry_.groups == 1 &&
           input_format_ == MemoryFormat::channels_last &&
           output.is_contiguous(MemoryFormat::channels_last) &&
           output.shape() == Shape{geometry_.batch, geometry_.out_channels, geometry_.out_height,
                                   geometry_.out_width};
  }

  std::vector<Tensor> backward_from_rows(const GradientRows& rows) override {
    return gradients(Tensor(), rows);
  }

 private:
  // From gy (dense in the kernels' layout) or, without it, from gy_rows.
  std::vector<Tensor> gradients(const Tensor& gy, const GradientRows& gy_rows) {
    // What was saved at forward time bounds what can be computed.
    const bool want_input = inputs[0].requires_grad() && weight_.defined();
    const bool want_weight = inputs[1].requires_grad() && (input_.defined() || input_replay_);
    const bool want_bias = inputs[2].defined() && inputs[2].requires_grad();
    const TensorOptions options = TensorOptions(geometry_.dtype).with_device(inputs[1].device());
    Tensor grad_input, grad_weight, grad_bias;
    if (want_input) grad_input = empty(inputs[0].shape(), options.with_format(geometry_.format));
    if (want_weight) grad_weight = empty(inputs[1].shape(), options.with_format(weight_format_));
    if (want_bias) grad_bias = empty(inputs[2].shape(), options);
    run_backward(geometry_, input_, input_replay_, weight_, gy, gy_rows, grad_input, grad_weight,
                 grad_bias);
    if (want_input && geometry_.format != input_format_) {
      grad_input = grad_input.contiguous(input_format_);
    }
    return {grad_input, grad_weight, grad_bias};
  }

  Conv2dGeometry geometry_;
  MemoryFormat input_format_;   // the forward input's, which the input gradient takes
  MemoryFormat weight_format_;  // the kernels' weight layout, which its gradient takes
  Tensor input_;
  OutputReplay input_replay_;  // rebuilds the input when input_ is not kept
  Tensor weight_;
  const void* output_data_;  // the output's storage: what takes_gradient_rows recognizes
};

}  // namespace

std::string Conv2dGeometry::str() const {
  // (appends, not "literal" + string: GCC 12 misreports that pattern at -O3)
  std::string text(dtype_name(dtype));
  text += format == MemoryFormat::channels_last ? " NHWC x[" : " NCHW x[";
  text += std::to_string(batch);
  text += ", ";
  text += std::to_string(in_channels);
  text += ", ";
  text += std::to_string(in_height);
  text += ", ";
  text += std::to_string(in_width);
  text += "] w[";
  text += std::to_string(out_channels);
  text += ", ";
  text += std::to_string(groups > 0 ? in_channels / groups : 0);
  text += ", ";
  text += std::to_string(kernel);
  text += ", ";
  text += std::to_string(kernel);
  text += "] stride ";
  text += std::to_string(stride);
  text += " pad ";
  text += std::to_string(padding);
  text += " groups ";
  text += std::to_string(groups);
  return text;
}

Conv2dGeometry conv2d_geometry(int64_t batch, int64_t in_channels, int64_t in_height,
                               int64_t in_width, int64_t out_channels, int64_t kernel,
                               int64_t stride, int64_t padding, int64_t groups) {
  Conv2dGeometry g;
  g.batch = batch;
  g.in_channels = in_channels;
  g.in_height = in_height;
  g.in_width = in_width;
  g.out_channels = out_channels;
  g.kernel = kernel;
  g.stride = stride;
  g.padding = padding;
  g.groups = groups;
  if (stride > 0) {
    g.out_height = (in_height + 2 * padding - kernel) / stride + 1;
    g.out_width = (in_width + 2 * padding - kernel) / stride + 1;
  }
  return g;
}

Tensor conv2d(const Tensor& input_arg, const Tensor& weight_arg, const Tensor& bias_arg,
              int64_t stride, int64_t padding, int64_t groups) {
  const bool on_cuda = runs_on_cuda("conv2d", {input_arg, weight_arg, bias_arg});
  // Autocast first, as torch.autocast does: under an AutocastGuard a CUDA op
  // and its graph see f16 copies (recorded casts, so f32 leaves get f32
  // gradients); CPU tensors are never cast.
  const Tensor input = autocast_cast(input_arg);
  const Tensor weight = autocast_cast(weight_arg);
  const Tensor bias = autocast_cast(bias_arg);
  const Conv2dGeometry geometry =
      check_arguments(input, weight, bias, stride, padding, groups, on_cuda);
  const MemoryFormat input_format = input.suggest_memory_format();
  const MemoryFormat w_format = weight_format(geometry, on_cuda);
  const Tensor x = input.detach().contiguous(geometry.format);
  const Tensor w = weight.detach().contiguous(w_format);
  const Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();

  Tensor y =
      empty({geometry.batch, geometry.out_channels, geometry.out_height, geometry.out_width},
            TensorOptions(geometry.dtype).with_device(input.device()).with_format(geometry.format));
  run_forward(geometry, x, w, b, y);
  if (geometry.format != input_format) y = y.contiguous(input_format);

  if (should_record({input, weight, bias})) {
    // The weight gradient reads the input. A depthwise convolution on the CPU
    // whose input is the output of an op that can replay it (BatchNorm +
    // activation, from the input and constants it keeps for its own
    // backward) keeps the replay instead: the activation's memory is freed
    // when the forward drops it (MobileNetV3-Large at 224x224: about 9 MiB
    // per image at the step's peak), and the weight gradient rebuilds it
    // image by image in cache, the same bits (layers/conv2d_cpu.h).
    Node::OutputReplay input_replay;
    if (weight.requires_grad() && !on_cuda && geometry.is_depthwise() && input.grad_fn() &&
        x.data_ptr() == input.data_ptr()) {
      input_replay = input.grad_fn()->output_replay(input);
    }
    const bool keep_input = weight.requires_grad() && !input_replay;
    auto node = std::make_shared<Conv2dBackward>(geometry, input_format, w_format,
                                                 keep_input ? x : Tensor(), std::move(input_replay),
                                                 input.requires_grad() ? w : Tensor(), y);
    record(y, std::move(node), {graph_input(input), graph_input(weight), graph_input(bias)});
  }
  return y;
}

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t groups, const Conv2dEpilogue& epilogue) {
  if (runs_on_cuda("conv2d", {input, weight, bias})) {
    fail("an output epilogue runs on the CPU only, got " + input.str());
  }
  if (should_record({input, weight, bias, epilogue.scale, epilogue.shift, epilogue.residual})) {
    fail(
        "an output epilogue is for inference: the backward would need the values before it, "
        "which are never stored (run under NoGradGuard, or without requires_grad)");
  }
  const Conv2dGeometry geometry = check_arguments(input, weight, bias, stride, padding, groups,
                                                  /*on_cuda=*/false);
  const Conv2dEpilogue e = checked_epilogue(epilogue, geometry);
  const MemoryFormat input_format = input.suggest_memory_format();
  const Tensor x = input.contiguous(geometry.format);
  const Tensor w = weight.contiguous(weight_format(geometry, false));
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = empty({geometry.batch, geometry.out_channels, geometry.out_height, geometry.out_width},
                   TensorOptions(geometry.dtype).with_format(geometry.format));
  run_forward(geometry, x, w, b, y, &e);
  return geometry.format != input_format ? y.contiguous(input_format) : y;
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
