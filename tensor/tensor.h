// Tensor: a cheap, shared handle to a strided view of a Storage, plus the
// autograd fields (requires_grad, grad, grad_fn).
//
// Copying a Tensor copies the handle, not the data: both copies are the same
// tensor (like two Python names for one torch.Tensor). A *view* (reshape,
// permute, narrow) is a new tensor sharing the Storage with its own shape,
// strides and offset. Logical 4-D order is always N, C, H, W; the memory
// format is only a choice of strides:
//   contiguous    (NCHW) strides {C*H*W, H*W, W, 1}
//   channels_last (NHWC) strides {H*W*C, 1, W*C, C}
//
// Views and copies made through the methods below are recorded by autograd
// when the input requires grad (reshape, permute, narrow, contiguous, to).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tensor/allocator.h"
#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/storage.h"

namespace b3 {

class Node;
struct TensorImpl;

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& shape);

enum class MemoryFormat { contiguous, channels_last };
const char* memory_format_name(MemoryFormat format);
// The command line's names: "nchw" -> contiguous, "nhwc" -> channels_last;
// anything else throws std::invalid_argument naming `what` (e.g. "--format").
MemoryFormat parse_memory_format(const std::string& name, const std::string& what = "--format");

// Strides of a dense tensor of `shape` in `format` (channels_last needs 4-D).
Shape dense_strides(const Shape& shape, MemoryFormat format);

// What a new tensor looks like: element type, device, memory format, and the
// alignment of its storage (defaults: f32, CPU, NCHW, the device's alignment).
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  MemoryFormat format = MemoryFormat::contiguous;
  std::optional<AllocationOptions> allocation;

  TensorOptions() = default;
  TensorOptions(DType d) : dtype(d) {}  // NOLINT: implicit on purpose, zeros(s, DType::f64)
  TensorOptions with_dtype(DType d) const {
    auto o = *this;
    o.dtype = d;
    return o;
  }
  TensorOptions with_device(Device d) const {
    auto o = *this;
    o.device = d;
    return o;
  }
  TensorOptions with_format(MemoryFormat f) const {
    auto o = *this;
    o.format = f;
    return o;
  }
  TensorOptions with_allocation(AllocationOptions a) const {
    auto o = *this;
    o.allocation = a;
    return o;
  }
};

class Tensor {
 public:
  Tensor() = default;  // undefined: holds nothing
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  // Same tensor (same handle target), not equal values.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

  // --- Geometry ---
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const;
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  int64_t offset() const;  // in elements, from the start of the storage
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  bool is_contiguous(MemoryFormat format = MemoryFormat::contiguous) const;
  // channels_last when the strides are NHWC and not also NCHW, else contiguous
  // (PyTorch's suggest_memory_format).
  MemoryFormat suggest_memory_format() const;
  // True when the elements fill a dense block in *some* order of dims.
  bool is_dense() const;

  // --- Data access (CPU) ---
  void* data_ptr();
  const void* data_ptr() const;
  template <typename T>
  T* data() {
    check_data_access(dtype_of<T>::value);
    return static_cast<T*>(data_ptr());
  }
  template <typename T>
  const T* data() const {
    check_data_access(dtype_of<T>::value);
    return static_cast<const T*>(data_ptr());
  }
  // One element by N-d index, as double (any dtype); for tests and printing.
  double item_at(const Shape& index) const;
  double item() const;  // the value of a one-element tensor
  // All elements in logical (row-major) order, converted to double.
  std::vector<double> to_doubles() const;
  const std::shared_ptr<Storage>& storage() const;

  // --- Views (share storage) ---
  Tensor reshape(const Shape& shape) const;  // a view when the layout allows, else a copy
  Tensor view(const Shape& shape) const;     // a view or an error
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  // A view of this tensor's storage with any geometry, `offset` in elements
  // from the storage's start (PyTorch's as_strided). Never recorded by
  // autograd; throws std::out_of_range if the view reaches outside the storage.
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // --- Copies ---
  // Dense in `format`; returns *this when it already is.
  Tensor contiguous(MemoryFormat format = MemoryFormat::contiguous) const;
  Tensor clone(std::optional<MemoryFormat> format = std::nullopt) const;
  Tensor to(DType dtype) const;
  Tensor to(const Device& device) const;

  // --- In place, never recorded by autograd ---
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // same shape; any dtypes, layouts and devices
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // this += alpha * other
  Tensor& mul_(double value);
  // Replaces this tensor's data, shape and dtype with src's, keeping its
  // identity (handles, requires_grad); how Module::to(dtype) converts weights.
  void set_data(const Tensor& src);

  // --- Autograd ---
  bool requires_grad() const;
  Tensor& set_requires_grad(bool enable);  // only on leaves
  bool is_leaf() const;
  // The accumulated gradient (undefined until a backward reaches this leaf).
  // Gradients accumulate (+=) across backward calls until zero_grad().
  Tensor grad() const;
  void set_grad(const Tensor& grad);
  void zero_grad();  // drops the gradient (PyTorch's set_to_none)
  // See TensorImpl::grad_ready_hooks. For leaves; clear removes them all.
  void add_grad_ready_hook(std::function<void(const Tensor& leaf)> hook);
  void clear_grad_ready_hooks();
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn);
  // Shares the data, cut off from the graph: no grad_fn, requires_grad false.
  Tensor detach() const;
  // Back-propagates from this tensor; without `grad_output` it must hold one element.
  void backward(const Tensor& grad_output = Tensor()) const;

  std::string str() const;  // "Tensor[2, 3] f32 cpu contiguous"

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  void check_defined(const char* what) const;
  void check_data_access(DType wanted) const;
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;
  Shape shape;
  Shape strides;
  DType dtype = DType::f32;
  Device device;
  // Autograd
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
  // Leaves only: called by the backward engine once per backward, right after
  // the last of that backward's contributions to `grad` has been accumulated
  // (PyTorch's register_post_accumulate_grad_hook). Data parallelism starts
  // all-reducing a bucket there, while backward goes on.
  std::vector<std::function<void(const Tensor& leaf)>> grad_ready_hooks;
};

// --- Factories ---
Tensor empty(const Shape& shape, const TensorOptions& options = {});
Tensor zeros(const Shape& shape, const TensorOptions& options = {});
Tensor ones(const Shape& shape, const TensorOptions& options = {});
Tensor full(const Shape& shape, double value, const TensorOptions& options = {});
// A tensor holding `values` (row-major, logical order) laid out per options.format.
Tensor from_doubles(const std::vector<double>& values, const Shape& shape,
                    const TensorOptions& options = {});
Tensor empty_like(const Tensor& like, std::optional<MemoryFormat> format = std::nullopt);
// A new dense tensor with exactly `like`'s shape, dtype, device and strides
// (like must be dense, in any order of dims): an output an elementwise kernel
// can write in like's own memory order.
Tensor empty_strided_like(const Tensor& like);
Tensor zeros_like(const Tensor& like, std::optional<MemoryFormat> format = std::nullopt);

// A kernel's view of an optional argument, on either device: t's elements as
// a T*, or null when t is undefined. No dtype check: the op has dispatched on
// the dtype before it calls a kernel.
template <typename T>
const T* pointer_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
template <typename T>
T* mutable_pointer_or_null(Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace b3
