// Elementwise and reduction ops on whole tensors, recorded by autograd:
// add (also the residual connection), sub, mul, scale, sum, mean.
// Binary ops need equal shapes and dtypes (no broadcasting); the result takes
// the first operand's memory format.
#pragma once

#include "tensor/tensor.h"

namespace b3 {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double factor);
Tensor sum(const Tensor& a);   // all elements -> a one-element tensor of shape []
Tensor mean(const Tensor& a);  // all elements -> shape []

// Throws "<op>: ... not implemented on cuda:0 yet" unless every tensor is on
// the CPU; the CPU-only ops call it so a CUDA tensor fails with a clear error.
void require_cpu(const char* op, std::initializer_list<Tensor> tensors);

// `b` laid out with exactly `a`'s strides (a copy only when they differ); a
// must be dense for that, else the copy is dense in a's suggested format.
Tensor align_layout(const Tensor& b, const Tensor& a);

}  // namespace b3
