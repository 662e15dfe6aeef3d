// Tensor: geometry, views, copies, in-place updates and the autograd fields
// (the factories are tensor/factories.cpp, shapes and strides tensor/shape.cpp).
#include "tensor/tensor.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/convert_cuda.h"
#include "tensor/copy_cpu.h"
#include "tensor/copy_cuda.h"
#include "tensor/cuda_stream.h"
#include "tensor/cuda_tensor.h"
#include "tensor/half.h"

namespace b3 {

static int64_t normalize_dim(int64_t d, int64_t rank, const char* op) {
  const int64_t wrapped = d < 0 ? d + rank : d;
  if (wrapped < 0 || wrapped >= rank) {
    throw std::out_of_range(std::string(op) + ": dim " + std::to_string(d) +
                            " is out of range for a tensor of " + std::to_string(rank) + " dims");
  }
  return wrapped;
}

// A view: same storage, new geometry, no autograd history.
static Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->offset = offset;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = base.dtype();
  impl->device = base.device();
  return Tensor(std::move(impl));
}

// The elements a device tensor's view reaches (from its first element to its
// last, in storage order) moved byte for byte to a host block, and viewed there
// with the same shape and strides: a host twin of any strided device view.
static Tensor host_copy_of_span(const Tensor& src) {
  int64_t span = 1;  // elements from the first one the view touches to the last
  for (int64_t d = 0; d < src.dim(); ++d) span += (src.size(d) - 1) * src.stride(d);
  Tensor block = empty({span}, TensorOptions(src.dtype()));
  copy_bytes_cuda(block.data_ptr(), Device::cpu(), src.data_ptr(), src.device(),
                  static_cast<size_t>(span) * dtype_size(src.dtype()));
  return make_view(block, src.shape(), src.strides(), 0);
}

// The elements a host (or other GPU's) view spans moved byte for byte to
// `device`, viewed there with the same shape and strides.
static Tensor device_copy_of_span(const Tensor& src, const Device& device) {
  int64_t span = 1;
  for (int64_t d = 0; d < src.dim(); ++d) span += (src.size(d) - 1) * src.stride(d);
  Tensor block = empty({span}, TensorOptions(src.dtype()).with_device(device));
  copy_bytes_cuda(block.data_ptr(), device, src.data_ptr(), src.device(),
                  static_cast<size_t>(span) * dtype_size(src.dtype()));
  return make_view(block, src.shape(), src.strides(), 0);
}

// dst = src on one CUDA device, any strides, same dtype or f32 <-> f16.
static void copy_strided_on_device(const Tensor& src, Tensor& dst) {
  cuda::StridedCopy geometry{src.shape(), src.strides(), dst.strides()};
  if (geometry.sizes.empty()) {  // a 0-d tensor: one element
    geometry = {{1}, {1}, {1}};
  }
  cuda::copy_strided(src.data_ptr(), src.dtype(), dst.data_ptr(), dst.dtype(), geometry,
                     cuda::compute_stream(dst.device().index));
}

// ------------------------------------------------------------- geometry --

void Tensor::check_defined(const char* what) const {
  if (!impl_) throw std::logic_error(std::string(what) + ": the tensor is undefined");
}

const Shape& Tensor::shape() const {
  check_defined("shape");
  return impl_->shape;
}
const Shape& Tensor::strides() const {
  check_defined("strides");
  return impl_->strides;
}
int64_t Tensor::dim() const { return static_cast<int64_t>(shape().size()); }
int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[normalize_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
int64_t Tensor::offset() const {
  check_defined("offset");
  return impl_->offset;
}
DType Tensor::dtype() const {
  check_defined("dtype");
  return impl_->dtype;
}
Device Tensor::device() const {
  check_defined("device");
  return impl_->device;
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  check_defined("storage");
  return impl_->storage;
}

bool Tensor::is_contiguous(MemoryFormat format) const {
  if (format == MemoryFormat::channels_last && dim() != 4) return false;
  const Shape expected = dense_strides(shape(), format);
  for (int64_t d = 0; d < dim(); ++d)
    if (shape()[d] != 1 && strides()[d] != expected[d]) return false;
  return true;
}

MemoryFormat Tensor::suggest_memory_format() const {
  if (dim() == 4 && is_contiguous(MemoryFormat::channels_last) &&
      !is_contiguous(MemoryFormat::contiguous))
    return MemoryFormat::channels_last;
  return MemoryFormat::contiguous;
}

bool Tensor::is_dense() const {
  std::vector<int64_t> order(static_cast<size_t>(dim()));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return strides()[a] < strides()[b]; });
  int64_t expected = 1;
  for (int64_t d : order) {
    if (shape()[d] == 1) continue;
    if (strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

void* Tensor::data_ptr() {
  check_defined("data_ptr");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * dtype_size(impl_->dtype);
}
const void* Tensor::data_ptr() const {
  check_defined("data_ptr");
  return static_cast<const char*>(impl_->storage->data()) +
         impl_->offset * dtype_size(impl_->dtype);
}

void Tensor::check_data_access(DType wanted) const {
  check_defined("data");
  if (impl_->dtype != wanted) {
    throw std::invalid_argument(std::string("data<T>: the tensor holds ") +
                                dtype_name(impl_->dtype) + ", asked for " + dtype_name(wanted));
  }
  if (!impl_->device.is_cpu()) {
    throw std::invalid_argument("data<T>: the tensor is on " + impl_->device.str() +
                                "; copy it to the CPU first with .to(Device::cpu())");
  }
}

double Tensor::item_at(const Shape& index) const {
  if (static_cast<int64_t>(index.size()) != dim()) {
    throw std::invalid_argument("item_at: index " + shape_str(index) + " for a tensor of shape " +
                                shape_str(shape()));
  }
  if (!device().is_cpu()) return to(Device::cpu()).item_at(index);
  int64_t element = 0;
  for (int64_t d = 0; d < dim(); ++d) {
    if (index[d] < 0 || index[d] >= shape()[d]) {
      throw std::out_of_range("item_at: index " + shape_str(index) + " is outside shape " +
                              shape_str(shape()));
    }
    element += index[d] * strides()[d];
  }
  return dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    return cpu::convert_value<double>(static_cast<const T*>(data_ptr())[element]);
  });
}

double Tensor::item() const {
  if (numel() != 1) {
    throw std::invalid_argument("item: the tensor has " + std::to_string(numel()) +
                                " elements, shape " + shape_str(shape()));
  }
  return item_at(Shape(static_cast<size_t>(dim()), 0));
}

std::vector<double> Tensor::to_doubles() const {
  Tensor dense = detach().to(Device::cpu()).contiguous().to(DType::f64);
  const double* p = dense.data<double>();
  return std::vector<double>(p, p + dense.numel());
}

// ---------------------------------------------------------------- views --

Tensor Tensor::view(const Shape& requested) const {
  Shape target = requested;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == -1) {
      if (infer >= 0) throw std::invalid_argument("view: only one dimension can be -1");
      infer = static_cast<int64_t>(i);
    } else if (target[i] < 0) {
      throw std::invalid_argument("view: invalid size " + std::to_string(target[i]) + " in shape " +
                                  shape_str(requested));
    } else {
      known *= target[i];
    }
  }
  if (infer >= 0) {
    if (known == 0) {
      throw std::invalid_argument("view: shape " + shape_str(requested) +
                                  " is ambiguous: -1 next to a zero-size dim can be any value");
    }
    target[infer] = numel() / known;
  }
  if (shape_numel(target) != numel()) {
    throw std::invalid_argument("view: shape " + shape_str(requested) + " does not fit " +
                                std::to_string(numel()) + " elements of shape " +
                                shape_str(shape()));
  }
  if (!is_contiguous()) {
    throw std::invalid_argument("view: the tensor of shape " + shape_str(shape()) +
                                " is not contiguous (NCHW); use reshape, or contiguous() first");
  }
  Tensor out = make_view(*this, target, dense_strides(target, MemoryFormat::contiguous), offset());
  if (should_record({*this})) {
    const Shape input_shape = shape();
    record_lambda(out, "ViewBackward", {*this}, [input_shape](const Tensor& g) {
      return std::vector<Tensor>{g.reshape(input_shape)};
    });
  }
  return out;
}

Tensor Tensor::reshape(const Shape& target) const {
  if (is_contiguous()) return view(target);
  return contiguous().view(target);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int64_t start = normalize_dim(start_dim, dim(), "flatten");
  const int64_t end = normalize_dim(end_dim, dim(), "flatten");
  if (start > end) throw std::invalid_argument("flatten: start_dim must not come after end_dim");
  Shape target(shape().begin(), shape().begin() + start);
  int64_t merged = 1;
  for (int64_t d = start; d <= end; ++d) merged *= shape()[d];
  target.push_back(merged);
  target.insert(target.end(), shape().begin() + end + 1, shape().end());
  return reshape(target);
}

Tensor Tensor::permute(const Shape& dims) const {
  if (static_cast<int64_t>(dims.size()) != dim()) {
    throw std::invalid_argument("permute: " + std::to_string(dims.size()) + " dims given for a " +
                                std::to_string(dim()) + "-D tensor");
  }
  Shape new_shape(dims.size()), new_strides(dims.size()), inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = normalize_dim(dims[i], dim(), "permute");
    if (seen[d]) throw std::invalid_argument("permute: dim " + std::to_string(d) + " repeats");
    seen[d] = true;
    new_shape[i] = shape()[d];
    new_strides[i] = strides()[d];
    inverse[d] = static_cast<int64_t>(i);
  }
  Tensor out = make_view(*this, new_shape, new_strides, offset());
  if (should_record({*this})) {
    record_lambda(out, "PermuteBackward", {*this},
                  [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
  }
  return out;
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  Shape dims(static_cast<size_t>(dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(dim0, dim(), "transpose")],
            dims[normalize_dim(dim1, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::narrow(int64_t dim_index, int64_t start, int64_t length) const {
  const int64_t d = normalize_dim(dim_index, dim(), "narrow");
  if (start < 0 || length < 0 || start + length > shape()[d]) {
    throw std::out_of_range("narrow: [" + std::to_string(start) + ", " +
                            std::to_string(start + length) + ") is outside dim " +
                            std::to_string(d) + " of size " + std::to_string(shape()[d]));
  }
  Shape new_shape = shape();
  new_shape[d] = length;
  Tensor out = make_view(*this, new_shape, strides(), offset() + start * strides()[d]);
  if (should_record({*this})) {
    const Shape input_shape = shape();
    record_lambda(out, "NarrowBackward", {*this}, [input_shape, d, start, length](const Tensor& g) {
      Tensor full_grad = zeros(input_shape, TensorOptions(g.dtype()).with_device(g.device()));
      Tensor window = full_grad.narrow(d, start, length);
      window.copy_(g);
      return std::vector<Tensor>{full_grad};
    });
  }
  return out;
}

Tensor Tensor::as_strided(const Shape& new_shape, const Shape& new_strides, int64_t start) const {
  check_defined("as_strided");
  if (new_shape.size() != new_strides.size()) {
    throw std::invalid_argument("as_strided: shape " + shape_str(new_shape) + " and strides " +
                                shape_str(new_strides) + " differ in length");
  }
  int64_t last = start;  // the furthest element the view reaches
  bool empty_view = false;
  for (size_t d = 0; d < new_shape.size(); ++d) {
    if (new_shape[d] < 0 || new_strides[d] < 0) {
      throw std::invalid_argument("as_strided: negative size or stride in " + shape_str(new_shape) +
                                  " / " + shape_str(new_strides));
    }
    if (new_shape[d] == 0) empty_view = true;
    last += (new_shape[d] == 0 ? 0 : new_shape[d] - 1) * new_strides[d];
  }
  const auto capacity = static_cast<int64_t>(storage()->nbytes() / dtype_size(dtype()));
  if (start < 0 || (!empty_view && last >= capacity)) {
    throw std::out_of_range("as_strided: a view " + shape_str(new_shape) + " with strides " +
                            shape_str(new_strides) + " at offset " + std::to_string(start) +
                            " reaches past a storage of " + std::to_string(capacity) + " elements");
  }
  return make_view(*this, new_shape, new_strides, start);
}

// --------------------------------------------------------------- copies --

Tensor Tensor::contiguous(MemoryFormat format) const {
  if (is_contiguous(format)) return *this;
  return clone(format);
}

Tensor Tensor::clone(std::optional<MemoryFormat> format) const {
  const MemoryFormat layout = format.value_or(suggest_memory_format());
  Tensor out = empty(shape(), TensorOptions(dtype()).with_device(device()).with_format(layout));
  out.copy_(*this);
  if (should_record({*this})) {
    record_lambda(out, "CloneBackward", {*this},
                  [](const Tensor& g) { return std::vector<Tensor>{g}; });
  }
  return out;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = empty(
      shape(), TensorOptions(target).with_device(device()).with_format(suggest_memory_format()));
  out.copy_(*this);
  if (should_record({*this}) && is_floating(target)) {
    const DType source = dtype();
    record_lambda(out, "ToDTypeBackward", {*this},
                  [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
  }
  return out;
}

Tensor Tensor::to(const Device& target) const {
  if (target == device()) return *this;
  Tensor out = empty(
      shape(), TensorOptions(dtype()).with_device(target).with_format(suggest_memory_format()));
  out.copy_(*this);
  if (should_record({*this})) {
    const Device source = device();
    record_lambda(out, "ToDeviceBackward", {*this},
                  [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
  }
  return out;
}

// ------------------------------------------------------------- in place --

Tensor& Tensor::copy_(const Tensor& src) {
  if (src.shape() != shape()) {
    throw std::invalid_argument("copy_: source shape " + shape_str(src.shape()) +
                                " differs from destination shape " + shape_str(shape()));
  }
  if (device().is_cpu() && src.device().is_cpu()) {
    cpu::copy_strided(*this, src);
    return *this;
  }
  if (numel() == 0) return *this;
  // A CUDA tensor is involved. Device to host: the bytes the view spans come
  // down, and the host converts.
  if (device().is_cpu()) {
    cpu::copy_strided(*this, host_copy_of_span(src));
    return *this;
  }
  if (src.dtype() == dtype() && src.strides() == strides() && src.is_dense() && is_dense()) {
    copy_bytes_cuda(data_ptr(), device(), src.data_ptr(), src.device(), nbytes());
    return *this;
  }
  if (src.device() == device()) {  // on one GPU: a device kernel converts and permutes
    copy_strided_on_device(src, *this);
    return *this;
  }
  // From the host (or another GPU): move the source's bytes up as they are,
  // then convert on the device.
  const Tensor uploaded = device_copy_of_span(src, device());
  copy_strided_on_device(uploaded, *this);
  return *this;
}

Tensor& Tensor::fill_(double value) {
  if (device().is_cuda() && is_dense() && (dtype() == DType::f32 || dtype() == DType::f16)) {
    const cuda::Stream stream = cuda::compute_stream(device().index);
    cuda::dispatch_cuda_float(dtype(), "fill_", [&](auto tag) {
      using T = decltype(tag);
      cuda::fill(static_cast<T*>(data_ptr()), numel(), static_cast<float>(value), stream);
    });
    return *this;
  }
  if (!device().is_cpu()) {
    copy_(full(shape(), value, TensorOptions(dtype())));
    return *this;
  }
  if (!is_dense()) {
    copy_(full(shape(), value, TensorOptions(dtype())));
    return *this;
  }
  dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = cpu::convert_value<T>(value);
    T* p = static_cast<T*>(data_ptr());
    std::fill(p, p + numel(), v);
  });
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  if (other.shape() != shape()) {
    throw std::invalid_argument("add_: shapes " + shape_str(shape()) + " and " +
                                shape_str(other.shape()) + " differ");
  }
  if (!is_dense()) throw std::invalid_argument("add_: the destination must be dense, got " + str());
  if (!(other.device() == device())) {
    throw std::invalid_argument("add_: tensors on different devices, " + device().str() + " and " +
                                other.device().str());
  }
  Tensor aligned = other;
  if (other.dtype() != dtype() || other.strides() != strides() || !other.is_dense()) {
    aligned = empty_strided_like(*this);
    aligned.copy_(other);
  }
  if (device().is_cuda()) {
    const cuda::Stream stream = cuda::compute_stream(device().index);
    cuda::dispatch_cuda_float(dtype(), "add_", [&](auto tag) {
      using T = decltype(tag);
      T* p = static_cast<T*>(data_ptr());
      cuda::add(p, static_cast<const T*>(aligned.data_ptr()), static_cast<float>(alpha), p, numel(),
                stream);
    });
    return *this;
  }
  dispatch_float(dtype(), "add_", [&](auto tag) {
    using T = decltype(tag);
    T* dst = static_cast<T*>(data_ptr());
    const T* src = static_cast<const T*>(aligned.data_ptr());
    const T a = static_cast<T>(alpha);
    const int64_t n = numel();
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) dst[i] += a * src[i];
  });
  return *this;
}

Tensor& Tensor::mul_(double value) {
  if (!is_dense()) throw std::invalid_argument("mul_: the tensor must be dense, got " + str());
  if (device().is_cuda()) {
    const cuda::Stream stream = cuda::compute_stream(device().index);
    cuda::dispatch_cuda_float(dtype(), "mul_", [&](auto tag) {
      using T = decltype(tag);
      T* p = static_cast<T*>(data_ptr());
      cuda::scale(p, static_cast<float>(value), p, numel(), stream);
    });
    return *this;
  }
  dispatch_float(dtype(), "mul_", [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(data_ptr());
    const T v = static_cast<T>(value);
    for (int64_t i = 0; i < numel(); ++i) p[i] *= v;
  });
  return *this;
}

void Tensor::set_data(const Tensor& src) {
  check_defined("set_data");
  impl_->storage = src.storage();
  impl_->offset = src.offset();
  impl_->shape = src.shape();
  impl_->strides = src.strides();
  impl_->dtype = src.dtype();
  impl_->device = src.device();
  if (impl_->grad.defined() && impl_->grad.dtype() != src.dtype()) impl_->grad = Tensor();
}

// -------------------------------------------------------------- autograd --

bool Tensor::requires_grad() const {
  check_defined("requires_grad");
  return impl_->requires_grad;
}

Tensor& Tensor::set_requires_grad(bool enable) {
  check_defined("set_requires_grad");
  if (impl_->grad_fn) {
    throw std::invalid_argument(
        "set_requires_grad: only leaf tensors can change requires_grad; "
        "use detach() to make a new leaf");
  }
  if (enable && !is_floating(dtype())) {
    throw std::invalid_argument(std::string("set_requires_grad: only floating tensors can require "
                                            "grad, this one is ") +
                                dtype_name(dtype()));
  }
  impl_->requires_grad = enable;
  return *this;
}

bool Tensor::is_leaf() const { return !grad_fn(); }
Tensor Tensor::grad() const {
  check_defined("grad");
  return impl_->grad;
}
void Tensor::set_grad(const Tensor& g) {
  check_defined("set_grad");
  impl_->grad = g;
}
void Tensor::zero_grad() {
  check_defined("zero_grad");
  impl_->grad = Tensor();
}
void Tensor::add_grad_ready_hook(std::function<void(const Tensor& leaf)> hook) {
  check_defined("add_grad_ready_hook");
  if (impl_->grad_fn) {
    throw std::invalid_argument("add_grad_ready_hook: " + str() +
                                " is not a leaf (it has a grad_fn); hooks are for parameters");
  }
  impl_->grad_ready_hooks.push_back(std::move(hook));
}
void Tensor::clear_grad_ready_hooks() {
  check_defined("clear_grad_ready_hooks");
  impl_->grad_ready_hooks.clear();
}
const std::shared_ptr<Node>& Tensor::grad_fn() const {
  check_defined("grad_fn");
  return impl_->grad_fn;
}
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) {
  check_defined("set_grad_fn");
  impl_->grad_fn = std::move(fn);
  impl_->requires_grad = impl_->grad_fn != nullptr || impl_->requires_grad;
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

void Tensor::backward(const Tensor& grad_output) const { run_backward(*this, grad_output); }

std::string Tensor::str() const {
  if (!impl_) return "Tensor(undefined)";
  std::ostringstream out;
  out << "Tensor" << shape_str(shape()) << " " << dtype_name(dtype()) << " " << device().str()
      << " "
      << (is_contiguous()                              ? "contiguous"
          : is_contiguous(MemoryFormat::channels_last) ? "channels_last"
                                                       : "strided");
  return out.str();
}

}  // namespace b3
