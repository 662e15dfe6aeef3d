// The tensor factories of tensor.h: empty (the one place storage is
// allocated for a new tensor), full/zeros/ones, from_doubles, and the *_like
// variants.
#include "tensor/copy_cpu.h"
#include "tensor/tensor.h"

namespace b3 {

Tensor empty(const Shape& shape, const TensorOptions& options) {
  for (int64_t s : shape) {
    if (s < 0)
      throw std::invalid_argument("empty: negative dimension in shape " + shape_str(shape));
  }
  const AllocationOptions allocation =
      options.allocation.value_or(default_allocation(options.device));
  auto impl = std::make_shared<TensorImpl>();
  impl->strides = dense_strides(shape, options.format);
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(options.dtype);
  impl->storage = std::make_shared<Storage>(nbytes, options.device, allocation);
  impl->shape = shape;
  impl->dtype = options.dtype;
  impl->device = options.device;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, const TensorOptions& options) {
  // f32 and f16 are filled on the device; other dtypes are made on the host.
  if (!options.device.is_cpu() && options.dtype != DType::f32 && options.dtype != DType::f16) {
    Tensor host = full(shape, value, options.with_device(Device::cpu()));
    return host.to(options.device);
  }
  Tensor out = empty(shape, options);
  out.fill_(value);
  return out;
}

Tensor zeros(const Shape& shape, const TensorOptions& options) { return full(shape, 0.0, options); }
Tensor ones(const Shape& shape, const TensorOptions& options) { return full(shape, 1.0, options); }

Tensor from_doubles(const std::vector<double>& values, const Shape& shape,
                    const TensorOptions& options) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape)) {
    throw std::invalid_argument("from_doubles: " + std::to_string(values.size()) +
                                " values for shape " + shape_str(shape));
  }
  Tensor host = empty(shape, TensorOptions(options.dtype));
  dispatch_all(options.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = host.data<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = cpu::convert_value<T>(values[i]);
  });
  Tensor out = empty(shape, options);
  out.copy_(host);
  return out;
}

Tensor empty_like(const Tensor& like, std::optional<MemoryFormat> format) {
  return empty(like.shape(), TensorOptions(like.dtype())
                                 .with_device(like.device())
                                 .with_format(format.value_or(like.suggest_memory_format())));
}

Tensor empty_strided_like(const Tensor& like) {
  if (!like.is_dense()) {
    throw std::invalid_argument("empty_strided_like: " + like.str() + " is not dense");
  }
  Tensor out = empty_like(like);
  out.impl()->strides = like.strides();
  return out;
}

Tensor zeros_like(const Tensor& like, std::optional<MemoryFormat> format) {
  Tensor out = empty_like(like, format);
  out.zero_();
  return out;
}

}  // namespace b3
