// Tensor: views sharing storage, strides and offsets, memory formats
// (NCHW <-> NHWC), dtype conversions, clone/copy_/fill_/add_/mul_, element
// access, storage alignment, and the errors bad input must raise.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tensor/tensor.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// 0, 1, 2, ... n-1 shifted and scaled so every value is distinct, not an
// integer, and exactly representable in f32 and f64 (multiples of 1/4).
std::vector<double> distinct_values(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = 0.25 * static_cast<double>(i) - 3.0;
  return v;
}

uintptr_t address(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

}  // namespace

// ----------------------------------------------------------------- views --

TEST_CASE("tensor: views share storage and see each other's writes") {
  const Tensor base = from_doubles(distinct_values(24), {2, 3, 4}, DType::f64);
  const std::vector<Tensor> views{
      base.reshape({6, 4}), base.view({4, 6}), base.permute({2, 0, 1}), base.transpose(0, 2),
      base.narrow(1, 1, 2), base.flatten(),    base.flatten(1, 2),      base.detach()};
  for (const Tensor& v : views) {
    CAPTURE(v.str());
    CHECK(v.storage() == base.storage());
    CHECK(!v.is_same(base));
  }
  // A write through a non-dense view lands in the base, and only inside the window.
  Tensor window = base.narrow(2, 1, 2);  // [2, 3, 2], strides {12, 4, 1}, offset 1
  window.fill_(100.0);
  const std::vector<double> after = base.to_doubles();
  const std::vector<double> before = distinct_values(24);
  for (int64_t i = 0; i < 24; ++i) {
    const int64_t k = i % 4;
    CHECK(after[static_cast<size_t>(i)] ==
          (k == 1 || k == 2 ? 100.0 : before[static_cast<size_t>(i)]));
  }
}

TEST_CASE("tensor: strides and offsets of views") {
  const Tensor t = zeros({2, 3, 4, 5}, DType::f32);
  CHECK(t.strides() == Shape{60, 20, 5, 1});
  CHECK(t.offset() == 0);

  const Tensor p = t.permute({0, 2, 3, 1});
  CHECK(p.shape() == Shape{2, 4, 5, 3});
  CHECK(p.strides() == Shape{60, 5, 1, 20});

  const Tensor tr = t.transpose(1, -1);
  CHECK(tr.shape() == Shape{2, 5, 4, 3});
  CHECK(tr.strides() == Shape{60, 1, 5, 20});

  const Tensor n = t.narrow(1, 1, 2).narrow(3, 2, 3);
  CHECK(n.shape() == Shape{2, 2, 4, 3});
  CHECK(n.strides() == Shape{60, 20, 5, 1});
  CHECK(n.offset() == 1 * 20 + 2 * 1);
  CHECK(reinterpret_cast<const char*>(n.data_ptr()) - reinterpret_cast<const char*>(t.data_ptr()) ==
        22 * 4);

  const Tensor v = t.view({6, -1});
  CHECK(v.shape() == Shape{6, 20});
  CHECK(v.strides() == Shape{20, 1});

  const Tensor f = t.flatten(1);
  CHECK(f.shape() == Shape{2, 60});
  const Tensor f12 = t.flatten(1, 2);
  CHECK(f12.shape() == Shape{2, 12, 5});
  CHECK(f12.strides() == Shape{60, 5, 1});

  // A view of a narrowed tensor keeps its offset.
  const Tensor rows = zeros({6, 4}).narrow(0, 2, 3);  // contiguous, offset 8
  CHECK(rows.is_contiguous());
  const Tensor rv = rows.view({12});
  CHECK(rv.offset() == 8);
  CHECK(rv.storage() == rows.storage());

  // Values follow the views.
  const Tensor x = from_doubles(distinct_values(24), {2, 3, 4}, DType::f64);
  const Tensor xp = x.permute({2, 0, 1});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) CHECK(xp.item_at({k, i, j}) == x.item_at({i, j, k}));
  const Tensor xn = x.narrow(2, 1, 3).narrow(0, 1, 1);
  for (int64_t j = 0; j < 3; ++j)
    for (int64_t k = 0; k < 3; ++k) CHECK(xn.item_at({0, j, k}) == x.item_at({1, j, k + 1}));
}

TEST_CASE("tensor: as_strided views any geometry of the storage, and nothing past it") {
  Tensor base = from_doubles({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {10});
  Tensor window = base.as_strided({2, 3}, {1, 2}, 3);  // column-major 2x3 from element 3
  CHECK(window.to_doubles() == std::vector<double>{3, 5, 7, 4, 6, 8});
  CHECK(window.storage() == base.storage());
  window.fill_(-1);
  CHECK(base.to_doubles() == std::vector<double>{0, 1, 2, -1, -1, -1, -1, -1, -1, 9});
  CHECK(base.as_strided({0, 5}, {5, 1}, 10).numel() == 0);  // empty: no element is reached
  CHECK_THROWS_AS(base.as_strided({2, 3}, {3, 1}, 5), std::out_of_range);  // reaches element 10
  CHECK_THROWS_AS(base.as_strided({2}, {1}, -1), std::out_of_range);
  CHECK_THROWS_AS(base.as_strided({2, 2}, {1}, 0), std::invalid_argument);
  CHECK_THROWS_AS(base.as_strided({2}, {-1}, 4), std::invalid_argument);
}

TEST_CASE("tensor: view of a non-contiguous tensor throws, reshape copies then") {
  const Tensor x = from_doubles(distinct_values(12), {3, 4}, DType::f64);
  const Tensor xt = x.transpose(0, 1);
  CHECK_FALSE(xt.is_contiguous());
  CHECK_THROWS_WITH_AS(xt.view({12}), doctest::Contains("not contiguous"), std::invalid_argument);

  const Tensor r = xt.reshape({12});
  CHECK(r.storage() != x.storage());  // a copy: the order changes
  std::vector<double> expected;
  for (int64_t j = 0; j < 4; ++j)
    for (int64_t i = 0; i < 3; ++i) expected.push_back(x.item_at({i, j}));
  CHECK(r.to_doubles() == expected);

  // A contiguous tensor reshapes without a copy.
  CHECK(x.reshape({2, 6}).storage() == x.storage());
  // channels_last is not NCHW-contiguous: view throws, reshape copies.
  const Tensor cl =
      zeros({2, 3, 4, 5}, TensorOptions(DType::f32).with_format(MemoryFormat::channels_last));
  CHECK_THROWS_AS(cl.view({2, 60}), std::invalid_argument);
  CHECK(cl.reshape({2, 60}).storage() != cl.storage());
  // A narrowed (non-dense) tensor too.
  const Tensor nar = x.narrow(1, 0, 2);
  CHECK_THROWS_AS(nar.view({6}), std::invalid_argument);
  CHECK(nar.reshape({6}).to_doubles() ==
        std::vector<double>{-3.0, -2.75, -2.0, -1.75, -1.0, -0.75});
}

TEST_CASE("tensor: view shape inference and bad shapes") {
  const Tensor x = zeros({2, 3, 4});
  CHECK(x.view({-1}).shape() == Shape{24});
  CHECK(x.view({4, -1, 2}).shape() == Shape{4, 3, 2});
  CHECK_THROWS_WITH_AS(x.view({-1, -1}), doctest::Contains("only one dimension can be -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(x.view({5, -1}), doctest::Contains("does not fit 24 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(x.view({25}), doctest::Contains("view: shape [25]"), std::invalid_argument);
  // Negative sizes other than -1 are invalid even when their product fits.
  CHECK_THROWS_AS(x.view({-2, -12}), std::invalid_argument);
  CHECK_THROWS_AS(x.reshape({-4, -6}), std::invalid_argument);
  // -1 next to a zero-size dim could be anything: PyTorch refuses it too.
  CHECK_THROWS_WITH_AS(zeros({0, 4}).view({0, -1}), doctest::Contains("ambiguous"),
                       std::invalid_argument);
  CHECK_THROWS_AS(zeros({0, 4}).view({2, 0, -1}), std::invalid_argument);
  CHECK(zeros({0, 4}).view({0, 8}).shape() == Shape{0, 8});
  CHECK_THROWS_AS(x.flatten(2, 1), std::invalid_argument);
  CHECK_THROWS_AS(x.flatten(0, 3), std::out_of_range);
  CHECK_THROWS_WITH_AS(x.permute({0, 0, 1}), doctest::Contains("repeats"), std::invalid_argument);
  CHECK_THROWS_AS(x.permute({0, 1}), std::invalid_argument);
  CHECK_THROWS_AS(x.transpose(0, 3), std::out_of_range);
  CHECK_THROWS_WITH_AS(x.narrow(1, 2, 2), doctest::Contains("outside dim 1 of size 3"),
                       std::out_of_range);
  CHECK_THROWS_AS(x.narrow(1, -1, 1), std::out_of_range);
  CHECK(x.narrow(1, 3, 0).numel() == 0);
}

// -------------------------------------------------------- memory formats --

TEST_CASE("tensor: memory formats by their command-line names") {
  CHECK(parse_memory_format("nchw") == MemoryFormat::contiguous);
  CHECK(parse_memory_format("nhwc") == MemoryFormat::channels_last);
  CHECK_THROWS_WITH_AS(parse_memory_format("NHWC"), "--format must be nchw or nhwc, got 'NHWC'",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_memory_format("", "b3 train --format"),
                       "b3 train --format must be nchw or nhwc, got ''", std::invalid_argument);
}

TEST_CASE("tensor: NCHW <-> NHWC round trips are exact for awkward shapes") {
  const Shape shapes[] = {{1, 1, 1, 1},  {1, 3, 1, 1},  {2, 1, 5, 3},  {1, 5, 7, 7},
                          {3, 13, 5, 3}, {2, 16, 1, 9}, {127, 3, 2, 1}};
  for (const Shape& shape : shapes) {
    for (DType dtype : {DType::f32, DType::f64, DType::f16, DType::u8, DType::i32, DType::i64}) {
      CAPTURE(shape_str(shape));
      const std::string dtype_label = dtype_name(dtype);
      CAPTURE(dtype_label);
      const int64_t n = shape_numel(shape);
      // Integers 0..n-1 modulo 251: exact in every dtype (u8 and f16 included).
      std::vector<double> values(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<double>(i % 251);
      const Tensor nchw = from_doubles(values, shape, dtype);
      CHECK(nchw.is_contiguous());
      const Tensor nhwc = nchw.contiguous(MemoryFormat::channels_last);
      CHECK(nhwc.is_contiguous(MemoryFormat::channels_last));
      CHECK(nhwc.to_doubles() == values);
      // Element (n, c, h, w) of the NHWC copy sits at n*HWC + h*WC + w*C + c in memory.
      const int64_t C = shape[1], H = shape[2], W = shape[3];
      const Tensor raw = nhwc.to(DType::f64);  // to() keeps the strides' format
      CHECK(raw.is_contiguous(MemoryFormat::channels_last));
      const double* p = raw.data<double>();
      bool placed = true;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t w = i % W, h = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
        placed =
            placed && p[b * H * W * C + h * W * C + w * C + c] == values[static_cast<size_t>(i)];
      }
      CHECK(placed);
      const Tensor back = nhwc.contiguous(MemoryFormat::contiguous);
      CHECK(back.strides() == nchw.strides());
      CHECK(back.to_doubles() == values);
      // And through clone with an explicit format.
      CHECK(nchw.clone(MemoryFormat::channels_last).to_doubles() == values);
      // from_doubles straight into channels_last agrees.
      CHECK(
          from_doubles(values, shape, TensorOptions(dtype).with_format(MemoryFormat::channels_last))
              .to_doubles() == values);
    }
  }
}

TEST_CASE("tensor: is_contiguous and suggest_memory_format follow PyTorch's rules") {
  const auto cl = TensorOptions(DType::f32).with_format(MemoryFormat::channels_last);
  SUBCASE("plain NCHW and NHWC") {
    const Tensor a = empty({2, 3, 4, 5});
    CHECK(a.is_contiguous());
    CHECK_FALSE(a.is_contiguous(MemoryFormat::channels_last));
    CHECK(a.suggest_memory_format() == MemoryFormat::contiguous);
    const Tensor b = empty({2, 3, 4, 5}, cl);
    CHECK(b.strides() == Shape{60, 1, 15, 3});
    CHECK_FALSE(b.is_contiguous());
    CHECK(b.is_contiguous(MemoryFormat::channels_last));
    CHECK(b.suggest_memory_format() == MemoryFormat::channels_last);
    CHECK(b.is_dense());
  }
  SUBCASE("batch 1 still tells the formats apart") {
    const Tensor b = empty({1, 3, 4, 5}, cl);
    CHECK_FALSE(b.is_contiguous());
    CHECK(b.suggest_memory_format() == MemoryFormat::channels_last);
  }
  SUBCASE("size-1 dims are ignored: 1x1 spatial or C=1 is both, and ambiguous means contiguous") {
    for (const Shape& shape : {Shape{2, 3, 1, 1}, Shape{2, 1, 4, 5}, Shape{1, 1, 1, 1}}) {
      CAPTURE(shape_str(shape));
      for (MemoryFormat format : test::both_formats()) {
        const Tensor t = empty(shape, TensorOptions(DType::f32).with_format(format));
        CHECK(t.is_contiguous());
        CHECK(t.is_contiguous(MemoryFormat::channels_last));
        CHECK(t.suggest_memory_format() == MemoryFormat::contiguous);
      }
    }
  }
  SUBCASE("W=1 but H>1 and C>1 is still distinguishable") {
    const Tensor t = empty({2, 3, 4, 1}, cl);  // strides {12, 1, 3, 3}
    CHECK_FALSE(t.is_contiguous());
    CHECK(t.suggest_memory_format() == MemoryFormat::channels_last);
  }
  SUBCASE("other ranks and other permutations are never channels_last") {
    const Tensor t3 = empty({3, 4, 5});
    CHECK_FALSE(t3.is_contiguous(MemoryFormat::channels_last));
    CHECK(t3.suggest_memory_format() == MemoryFormat::contiguous);
    CHECK_THROWS_WITH_AS(empty({3, 4, 5}, cl), doctest::Contains("channels_last needs a 4-D"),
                         std::invalid_argument);
    const Tensor swapped = empty({2, 3, 4, 5}).transpose(2, 3);  // dense, neither format
    CHECK(swapped.is_dense());
    CHECK_FALSE(swapped.is_contiguous());
    CHECK_FALSE(swapped.is_contiguous(MemoryFormat::channels_last));
    CHECK(swapped.suggest_memory_format() == MemoryFormat::contiguous);
    // A channels_last tensor viewed through permute(0, 2, 3, 1) is NCHW-contiguous NHWC data.
    CHECK(empty({2, 3, 4, 5}, cl).permute({0, 2, 3, 1}).is_contiguous());
  }
  SUBCASE("narrowed tensors are not dense") {
    const Tensor t = empty({2, 3, 4, 5});
    CHECK_FALSE(t.narrow(3, 0, 4).is_dense());
    CHECK_FALSE(t.narrow(3, 0, 4).is_contiguous());
    CHECK(t.narrow(0, 1, 1).is_contiguous());  // a slab along the outermost dim stays contiguous
    CHECK(t.narrow(0, 1, 1).is_dense());
  }
}

// ------------------------------------------------------------------ dtypes --

TEST_CASE("tensor: exact values survive every dtype pair") {
  const std::vector<double> values{0, 1, 2, 3, 7, 100, 127, 200, 255};
  const DType all[] = {DType::f32, DType::f64, DType::f16, DType::u8, DType::i32, DType::i64};
  for (DType from : all) {
    for (DType to : all) {
      const std::string from_label = dtype_name(from), to_label = dtype_name(to);
      CAPTURE(from_label);
      CAPTURE(to_label);
      const Tensor a = from_doubles(values, {3, 3}, from);
      const Tensor b = a.to(to);
      CHECK(b.dtype() == to);
      CHECK(b.to_doubles() == values);
      CHECK(b.to(from).to_doubles() == values);
      // Through a transposed (strided) source as well.
      const Tensor bt = a.transpose(0, 1).to(to);
      CHECK(bt.to_doubles() == a.transpose(0, 1).to_doubles());
    }
  }
  // to() with the same dtype is the same tensor.
  const Tensor x = zeros({2});
  CHECK(x.to(DType::f32).is_same(x));
  CHECK(dtype_size(DType::f16) == 2);
  CHECK(dtype_size(DType::u8) == 1);
  CHECK(dtype_size(DType::i64) == 8);
}

TEST_CASE("tensor: float -> integer truncates toward zero, like static_cast") {
  // Out-of-range values (a negative or >255 float into u8, |x| >= 2^31 into
  // i32, nan into any integer) are undefined behaviour in C++'s static_cast,
  // which b3 uses as PyTorch does; this test stays inside the ranges.
  const Tensor f =
      from_doubles({2.7, -2.7, 0.5, -0.5, 0.0, -0.0, 1e9, -2147483648.0}, {8}, DType::f64);
  CHECK(f.to(DType::i32).to_doubles() ==
        std::vector<double>{2, -2, 0, 0, 0, 0, 1e9, -2147483648.0});
  CHECK(f.to(DType::f32).to(DType::i64).to_doubles() ==
        std::vector<double>{2, -2, 0, 0, 0, 0, 1e9, -2147483648.0});
  const Tensor big = from_doubles({3e12, -3e12, 9007199254740992.0}, {3}, DType::f64);
  CHECK(big.to(DType::i64).to_doubles() == std::vector<double>{3e12, -3e12, 9007199254740992.0});
  const Tensor bytes = from_doubles({0.99, 2.7, 254.9, 255.0}, {4}, DType::f32);
  CHECK(bytes.to(DType::u8).to_doubles() == std::vector<double>{0, 2, 254, 255});
  // f16 -> integer goes through float: 2.5 is exact in f16, truncates to 2.
  CHECK(from_doubles({2.5, -2.5}, {2}, DType::f16).to(DType::i32).to_doubles() ==
        std::vector<double>{2, -2});
}

TEST_CASE("tensor: conversions between floating types round to nearest even") {
  // f64 -> f32
  const Tensor d = from_doubles({0.1, 1.0 + std::ldexp(1.0, -24), 1.0 + 3 * std::ldexp(1.0, -24)},
                                {3}, DType::f64);
  CHECK(d.to(DType::f32).to_doubles() ==
        std::vector<double>{static_cast<double>(0.1f), 1.0, 1.0 + std::ldexp(1.0, -22)});
  // i64 -> f64 and i64 -> f32 (ties to even)
  Tensor ints = from_doubles({0, 1}, {2}, DType::i64);
  int64_t* pi = ints.data<int64_t>();
  pi[0] = (int64_t{1} << 53) + 1;  // halfway: -> 2^53
  pi[1] = (int64_t{1} << 24) + 1;
  CHECK(ints.to(DType::f64).to_doubles() == std::vector<double>{9007199254740992.0, 16777217.0});
  CHECK(ints.to(DType::f32).to_doubles() == std::vector<double>{9007199254740992.0, 16777216.0});
  // i32 -> f16: 2049 is halfway between 2048 and 2050 -> 2048 (even);
  // 65519 -> 65504 (max half); 70000 -> inf.
  const Tensor h = from_doubles({2049, 2051, 65519, 70000, -70000}, {5}, DType::i32).to(DType::f16);
  const std::vector<double> hv = h.to_doubles();
  CHECK(hv[0] == 2048.0);
  CHECK(hv[1] == 2052.0);
  CHECK(hv[2] == 65504.0);
  CHECK(hv[3] == INFINITY);
  CHECK(hv[4] == -INFINITY);
  // inf and nan survive f64 -> f32 -> f16 -> f64.
  const std::vector<double> special = from_doubles({INFINITY, -INFINITY, NAN}, {3}, DType::f64)
                                          .to(DType::f32)
                                          .to(DType::f16)
                                          .to(DType::f64)
                                          .to_doubles();
  CHECK(special[0] == INFINITY);
  CHECK(special[1] == -INFINITY);
  CHECK(std::isnan(special[2]));
}

// ----------------------------------------------------- copies and updates --

TEST_CASE("tensor: clone and copy_ across layouts and dtypes") {
  Generator gen(11);
  for (MemoryFormat format : test::both_formats()) {
    const Tensor x = test::random_tensor({2, 5, 3, 3}, gen, DType::f32, format);
    const Tensor c = x.clone();
    CHECK(c.storage() != x.storage());
    CHECK(c.strides() == x.strides());  // clone keeps the memory format
    CHECK(c.to_doubles() == x.to_doubles());
    for (MemoryFormat target : test::both_formats()) {
      const Tensor ct = x.clone(target);
      CHECK(ct.is_contiguous(target));
      CHECK(ct.to_doubles() == x.to_doubles());
      Tensor dst = empty({2, 5, 3, 3}, TensorOptions(DType::f64).with_format(target));
      dst.copy_(x);
      CHECK(dst.to_doubles() == x.to_doubles());
    }
    // contiguous() returns the tensor itself when it already is.
    CHECK(x.contiguous(format).is_same(x));
    CHECK_FALSE(x.contiguous(format == MemoryFormat::contiguous ? MemoryFormat::channels_last
                                                                : MemoryFormat::contiguous)
                    .is_same(x));
  }
  // copy_ into a non-dense window writes only the window.
  Tensor big = zeros({4, 6}, DType::f64);
  Tensor window = big.narrow(1, 2, 3).narrow(0, 1, 2);
  window.copy_(from_doubles({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f32));
  const std::vector<double> v = big.to_doubles();
  std::vector<double> expected(24, 0.0);
  for (int64_t j = 0; j < 3; ++j) {
    expected[static_cast<size_t>(6 + 2 + j)] = static_cast<double>(1 + j);   // row 1
    expected[static_cast<size_t>(12 + 2 + j)] = static_cast<double>(4 + j);  // row 2
  }
  CHECK(v == expected);
  // copy_ from a transposed source.
  const Tensor src = from_doubles(distinct_values(6), {3, 2}, DType::f64);
  Tensor dst = empty({2, 3}, DType::f64);
  dst.copy_(src.transpose(0, 1));
  CHECK(dst.to_doubles() == src.transpose(0, 1).contiguous().to_doubles());
  CHECK_THROWS_WITH_AS(
      dst.copy_(zeros({3, 2})),
      doctest::Contains("copy_: source shape [3, 2] differs from destination shape [2, 3]"),
      std::invalid_argument);
}

TEST_CASE("tensor: copies between random strided views match element-by-element reads") {
  // Random rank 1-4 views (narrowed, permuted) copied into random destinations
  // (dense or themselves narrowed and permuted) of random dtypes; item_at,
  // which reads through the strides one element at a time, is the reference.
  // Values are integers below 2048: exact in every dtype but u8, which is left out.
  Generator gen(12);
  const DType dtypes[] = {DType::f32, DType::f64, DType::f16, DType::i32, DType::i64};
  const auto random_view = [&gen](Tensor base) {
    for (int64_t d = 0; d < base.dim(); ++d) {
      const int64_t size = base.size(d);
      const int64_t length = 1 + static_cast<int64_t>(gen.below(static_cast<uint64_t>(size)));
      const int64_t start =
          static_cast<int64_t>(gen.below(static_cast<uint64_t>(size - length + 1)));
      base = base.narrow(d, start, length);
    }
    Shape order(static_cast<size_t>(base.dim()));
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);
    return base.permute(order);
  };
  const auto all_indices = [](const Shape& shape) {
    std::vector<Shape> out;
    Shape index(shape.size(), 0);
    for (int64_t i = 0; i < shape_numel(shape); ++i) {
      out.push_back(index);
      for (size_t d = shape.size(); d-- > 0;) {
        if (++index[d] < shape[d]) break;
        index[d] = 0;
      }
    }
    return out;
  };
  int failures = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t rank = 1 + static_cast<int64_t>(gen.below(4));
    Shape big(static_cast<size_t>(rank));
    for (int64_t& s : big) s = 1 + static_cast<int64_t>(gen.below(6));
    std::vector<double> values(static_cast<size_t>(shape_numel(big)));
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(gen.below(2048));
    const DType source_dtype = dtypes[gen.below(5)];
    const Tensor src = random_view(from_doubles(values, big, source_dtype));
    // Destination: a dense tensor in either format, or a view into a larger one.
    const DType dest_dtype = dtypes[gen.below(5)];
    Tensor dst;
    const uint64_t kind = gen.below(3);
    if (kind == 0) {
      dst = empty(src.shape(), dest_dtype);
    } else if (kind == 1 && rank == 4) {
      dst = empty(src.shape(), TensorOptions(dest_dtype).with_format(MemoryFormat::channels_last));
    } else {
      // Pad each dim by 2 and narrow back: a non-dense destination.
      Shape padded = src.shape();
      for (int64_t& s : padded) s += 2;
      Tensor outer = zeros(padded, dest_dtype);
      for (int64_t d = 0; d < rank; ++d) outer = outer.narrow(d, 1, src.size(d));
      dst = outer;
    }
    dst.copy_(src);
    for (const Shape& index : all_indices(src.shape())) {
      if (dst.item_at(index) != src.item_at(index)) ++failures;
    }
    // contiguous() and clone() of the strided source agree too.
    const std::vector<double> logical = src.to_doubles();
    const std::vector<Shape> indices = all_indices(src.shape());
    for (size_t i = 0; i < indices.size(); ++i) {
      if (logical[i] != src.item_at(indices[i])) ++failures;
    }
    if (src.clone().to_doubles() != logical) ++failures;
  }
  CHECK(failures == 0);
}

TEST_CASE("tensor: large copies and updates take the parallel path correctly") {
  test::use_openmp_threads(2);
  // Above 2^16 elements the CPU loops run under OpenMP; the result must not change.
  const Shape shape{2, 64, 33, 17};  // 71,808 elements
  std::vector<double> values(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i % 1000) - 500;
  const Tensor nchw = from_doubles(values, shape, DType::f32);
  const Tensor nhwc = nchw.contiguous(MemoryFormat::channels_last);
  CHECK(nhwc.to_doubles() == values);
  CHECK(nhwc.contiguous().to_doubles() == values);
  Tensor acc = nhwc.clone();
  acc.add_(nchw, 2.0);
  std::vector<double> tripled = values;
  for (double& v : tripled) v *= 3;
  CHECK(acc.to_doubles() == tripled);
}

TEST_CASE("tensor: fill_, add_ and mul_") {
  // fill_ converts the value to the dtype.
  CHECK(full({3}, 2.75, DType::i32).to_doubles() == std::vector<double>{2, 2, 2});
  CHECK(full({2}, 0.1, DType::f32).to_doubles()[0] == static_cast<double>(0.1f));
  CHECK(ones({2, 2}, DType::u8).to_doubles() == std::vector<double>{1, 1, 1, 1});
  CHECK(zeros({0, 3}).numel() == 0);

  // add_ with alpha, across layouts and dtypes.
  for (MemoryFormat fa : test::both_formats()) {
    for (MemoryFormat fb : test::both_formats()) {
      const std::vector<double> a = distinct_values(2 * 3 * 2 * 2);
      std::vector<double> b(a.size());
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.5 * static_cast<double>(i);
      Tensor ta = from_doubles(a, {2, 3, 2, 2}, TensorOptions(DType::f64).with_format(fa));
      const Tensor tb = from_doubles(b, {2, 3, 2, 2}, TensorOptions(DType::f32).with_format(fb));
      const Shape strides_before = ta.strides();
      ta.add_(tb, -2.0);
      CHECK(ta.strides() == strides_before);
      std::vector<double> expected(a.size());
      for (size_t i = 0; i < a.size(); ++i) expected[i] = a[i] - 2.0 * b[i];
      CHECK(ta.to_doubles() == expected);
      ta.mul_(0.5);
      for (double& e : expected) e *= 0.5;
      CHECK(ta.to_doubles() == expected);
    }
  }
  // add_ of a tensor to itself doubles it.
  Tensor self = from_doubles({1, 2, 3}, {3}, DType::f32);
  self.add_(self);
  CHECK(self.to_doubles() == std::vector<double>{2, 4, 6});

  Tensor f = zeros({2, 3});
  CHECK_THROWS_WITH_AS(f.add_(zeros({3, 2})),
                       doctest::Contains("add_: shapes [2, 3] and [3, 2] differ"),
                       std::invalid_argument);
  Tensor window = zeros({4, 4}).narrow(1, 0, 2);
  CHECK_THROWS_WITH_AS(window.add_(zeros({4, 2})), doctest::Contains("must be dense"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(window.mul_(2.0), doctest::Contains("must be dense"), std::invalid_argument);
  Tensor ints = zeros({2}, DType::i32);
  CHECK_THROWS_WITH_AS(ints.mul_(2.0), doctest::Contains("mul_: dtype i32"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ints.add_(zeros({2}, DType::i32)), doctest::Contains("add_: dtype i32"),
                       std::invalid_argument);
}

TEST_CASE("tensor: from_doubles, item_at, item, to_doubles") {
  const std::vector<double> values = distinct_values(2 * 3 * 2 * 2);
  for (MemoryFormat format : test::both_formats()) {
    const Tensor t =
        from_doubles(values, {2, 3, 2, 2}, TensorOptions(DType::f64).with_format(format));
    CHECK(t.is_contiguous(format));
    CHECK(t.to_doubles() == values);
    CHECK(t.item_at({1, 2, 0, 1}) == values[1 * 12 + 2 * 4 + 0 * 2 + 1]);
    CHECK(t.item_at({0, 0, 1, 1}) == values[3]);
  }
  CHECK(from_doubles({4.5}, {}, DType::f64).item() == 4.5);
  CHECK(from_doubles({4.5}, {1, 1, 1}, DType::f32).item() == 4.5);
  CHECK(from_doubles({3.0}, {1}, DType::u8).item() == 3.0);
  CHECK(from_doubles({-3.0}, {1}, DType::i64).item() == -3.0);
  CHECK(from_doubles({0.5}, {1}, DType::f16).item() == 0.5);
  const Tensor t = from_doubles({1, 2, 3, 4}, {2, 2});
  CHECK_THROWS_WITH_AS(t.item(), doctest::Contains("item: the tensor has 4 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(t.item_at({1}), doctest::Contains("item_at: index [1]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(t.item_at({0, 2}), doctest::Contains("outside shape [2, 2]"),
                       std::out_of_range);
  CHECK_THROWS_AS(t.item_at({-1, 0}), std::out_of_range);
  CHECK(t.size(-1) == 2);
  CHECK(t.nbytes() == 16);
  CHECK(t.str() == "Tensor[2, 2] f32 cpu contiguous");
}

TEST_CASE("tensor: bad input raises clear errors") {
  CHECK_THROWS_WITH_AS(empty({2, -1}),
                       doctest::Contains("empty: negative dimension in shape [2, -1]"),
                       std::invalid_argument);
  CHECK_THROWS_AS(zeros({-3}), std::invalid_argument);
  CHECK_THROWS_WITH_AS(from_doubles({1, 2, 3}, {2, 2}),
                       doctest::Contains("from_doubles: 3 values for shape [2, 2]"),
                       std::invalid_argument);
  Tensor f = zeros({2}, DType::f32);
  CHECK_THROWS_WITH_AS(f.data<double>(), doctest::Contains("holds f32, asked for f64"),
                       std::invalid_argument);
  CHECK_THROWS_AS(f.data<int32_t>(), std::invalid_argument);
  CHECK(f.data<float>() != nullptr);
  const Tensor undefined;
  CHECK_FALSE(undefined.defined());
  CHECK(undefined.str() == "Tensor(undefined)");
  CHECK_THROWS_WITH_AS(undefined.shape(), doctest::Contains("undefined"), std::logic_error);
  CHECK_THROWS_AS(undefined.numel(), std::logic_error);
  CHECK_THROWS_AS(f.size(1), std::out_of_range);
  CHECK_THROWS_AS(f.size(-2), std::out_of_range);
}

// -------------------------------------------------------------- alignment --

TEST_CASE("storage: alignment defaults to 64 bytes and honors custom settings") {
  // Default: every fresh tensor starts on a 64-byte boundary, whatever its size or dtype.
  for (int64_t n : {0, 1, 3, 17, 1000}) {
    for (DType dtype : {DType::f32, DType::f64, DType::f16, DType::u8}) {
      const Tensor t = empty({n}, dtype);
      CHECK(address(t) % 64 == 0);
      CHECK(t.storage()->allocation_options().alignment == 64);
      CHECK(t.storage()->allocation_options().misalignment == 0);
    }
  }
  CHECK(default_allocation(Device::cpu()).alignment == 64);
  CHECK(default_allocation(Device::cuda(0)).alignment == 256);

  for (size_t alignment : {size_t{8}, size_t{128}, size_t{256}, size_t{4096}}) {
    for (int rep = 0; rep < 4; ++rep) {  // several allocations, so luck cannot pass it
      const Tensor t = zeros({37}, TensorOptions(DType::f32).with_allocation({alignment, 0}));
      CHECK(address(t) % alignment == 0);
      CHECK(t.to_doubles() == std::vector<double>(37, 0.0));
    }
  }
  // A deliberate misalignment puts the data exactly `misalignment` bytes past a boundary.
  for (size_t misalignment : {size_t{1}, size_t{2}, size_t{4}, size_t{8}, size_t{32}, size_t{63}}) {
    for (int rep = 0; rep < 4; ++rep) {
      Tensor t = empty({100}, TensorOptions(DType::u8).with_allocation({64, misalignment}));
      CHECK(address(t) % 64 == misalignment);
      t.fill_(7.0);  // the whole block is usable
      CHECK(t.to_doubles() == std::vector<double>(100, 7.0));
    }
  }
  const Tensor m = empty({5}, TensorOptions(DType::f32).with_allocation({4096, 12}));
  CHECK(address(m) % 4096 == 12);
  // Views are offset from the storage start by offset * element size.
  const Tensor v = zeros({10}, TensorOptions(DType::f64).with_allocation({256, 0})).narrow(0, 3, 2);
  CHECK(address(v) % 256 == 24);
}

TEST_CASE("storage: invalid alignment settings throw") {
  const auto with = [](size_t alignment, size_t misalignment) {
    return TensorOptions(DType::f32).with_allocation({alignment, misalignment});
  };
  CHECK_THROWS_WITH_AS(empty({4}, with(48, 0)),
                       doctest::Contains("alignment 48 must be a power of two"),
                       std::invalid_argument);
  CHECK_THROWS_AS(empty({4}, with(0, 0)), std::invalid_argument);
  CHECK_THROWS_AS(empty({4}, with(100, 0)), std::invalid_argument);
  CHECK_THROWS_WITH_AS(empty({4}, with(64, 64)),
                       doctest::Contains("misalignment 64 must be smaller than the alignment 64"),
                       std::invalid_argument);
  CHECK_THROWS_AS(empty({4}, with(64, 1000)), std::invalid_argument);
  CHECK_NOTHROW(empty({4}, with(64, 63)));
}
