// Seeded random numbers: reproducible sequences, the ranges and moments of
// uniform, normal, below() and the tensor initializers, and values that do
// not depend on the memory format of the tensor they fill.
//
// Statistical bounds are stated as multiples of the standard error (SE) of
// the estimate; with fixed seeds the tests are deterministic, and 5 SE keeps
// a correct generator far inside the bound while a wrong scale, a bias or an
// off-by-one range fails it by a wide margin.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/random.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct Moments {
  double mean = 0, std = 0;
};

Moments moments(const std::vector<double>& v) {
  Moments m;
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  for (double x : v) m.std += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(m.std / static_cast<double>(v.size()));
  return m;
}

}  // namespace

TEST_CASE("random: the same seed gives the same sequence, different seeds differ") {
  Generator a(42), b(42), c(43);
  std::vector<uint64_t> sa, sb, sc;
  for (int i = 0; i < 1000; ++i) {
    sa.push_back(a.next_u64());
    sb.push_back(b.next_u64());
    sc.push_back(c.next_u64());
  }
  CHECK(sa == sb);
  CHECK(sa != sc);
  int equal = 0;
  for (size_t i = 0; i < sa.size(); ++i) equal += sa[i] == sc[i];
  CHECK(equal == 0);  // 64-bit words from different streams: a match is a 2^-54 event

  // reseed restarts the stream, including the spare Box-Muller normal.
  Generator g(7);
  const double first = g.normal();  // leaves a spare behind
  g.reseed(7);
  CHECK(g.normal() == first);
  Generator h(7);
  std::vector<double> from_h, from_g;
  g.reseed(7);
  for (int i = 0; i < 11; ++i) {
    from_h.push_back(h.normal());
    from_g.push_back(g.normal());
  }
  CHECK(from_h == from_g);
  // Seed 0 works (SplitMix64 seeding never leaves xoshiro in the all-zero state).
  Generator zero(0);
  CHECK(zero.next_u64() != zero.next_u64());

  // Tensors too.
  Generator t1(5), t2(5);
  CHECK(randn({3, 4}, t1).to_doubles() == randn({3, 4}, t2).to_doubles());
  CHECK(randn({3, 4}, t1).to_doubles() != randn({3, 4}, t1).to_doubles());
}

TEST_CASE("random: uniform lies in 0 <= u < 1 with mean 1/2 and variance 1/12") {
  Generator gen(1);
  const int n = 200000;
  std::vector<double> v(n);
  double lo = 1, hi = 0;
  for (double& x : v) {
    x = gen.uniform();
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK(lo < 1e-4);  // 200,000 draws cover the ends of the interval
  CHECK(hi > 1 - 1e-4);
  const Moments m = moments(v);
  // SE of the mean = sqrt(1/12 / n) = 6.5e-4; 5 SE = 3.2e-3.
  CHECK(std::abs(m.mean - 0.5) < 3.2e-3);
  // SE of the std of U(0,1) ~ 0.29 * 0.45 / sqrt(n) ~ 3e-4; 5 SE = 1.5e-3.
  CHECK(std::abs(m.std - std::sqrt(1.0 / 12.0)) < 1.5e-3);

  // uniform_ maps to [low, high).
  Tensor t = empty({10000}, DType::f64);
  uniform_(t, -2.0, 3.0, gen);
  const std::vector<double> u = t.to_doubles();
  CHECK(*std::min_element(u.begin(), u.end()) >= -2.0);
  CHECK(*std::max_element(u.begin(), u.end()) < 3.0);
  const Tensor r = rand({1000}, gen, DType::f32);
  const std::vector<double> rv = r.to_doubles();
  CHECK(*std::min_element(rv.begin(), rv.end()) >= 0.0);
  // An f32 draw may round up to 1.0f from just below 1; that happens with
  // probability ~2^-25 per draw and not for this seed.
  CHECK(*std::max_element(rv.begin(), rv.end()) < 1.0);
}

TEST_CASE(
    "random: uniforms() gives the numbers of as many uniform() calls, and the stream goes on") {
  Generator one_by_one(7), in_bulk(7);
  for (const int64_t count : {0, 1, 5, 2048, 3001}) {
    std::vector<double> expected(static_cast<size_t>(count));
    for (double& x : expected) x = one_by_one.uniform();
    std::vector<double> drawn(static_cast<size_t>(count) + 1, -1.0);
    in_bulk.uniforms(drawn.data(), count);
    CHECK(std::equal(expected.begin(), expected.end(), drawn.begin()));
    CHECK(drawn.back() == -1.0);  // nothing written past `count`
  }
  CHECK(in_bulk.next_u64() == one_by_one.next_u64());
}

TEST_CASE("random: normal has mean 0 and std 1, normal_ shifts and scales") {
  Generator gen(2);
  const int n = 200000;
  std::vector<double> v(n);
  for (double& x : v) x = gen.normal();
  const Moments m = moments(v);
  // SE of the mean = 1 / sqrt(n) = 2.2e-3, 5 SE = 0.0112;
  // SE of the std = 1 / sqrt(2n) = 1.6e-3, 5 SE = 0.008.
  CHECK(std::abs(m.mean) < 0.0112);
  CHECK(std::abs(m.std - 1.0) < 0.008);
  // Tails: P(|x| > 3) = 0.0027 -> about 540 of 200,000 (SE ~ 23).
  const auto tails = std::count_if(v.begin(), v.end(), [](double x) { return std::abs(x) > 3; });
  CHECK(tails > 540 - 5 * 23);
  CHECK(tails < 540 + 5 * 23);

  Tensor t = empty({100000}, DType::f64);
  normal_(t, 3.0, 0.5, gen);
  const Moments mt = moments(t.to_doubles());
  // SE of the mean = 0.5 / sqrt(1e5) = 1.6e-3; SE of the std = 0.5 / sqrt(2e5) = 1.1e-3.
  CHECK(std::abs(mt.mean - 3.0) < 5 * 1.6e-3);
  CHECK(std::abs(mt.std - 0.5) < 5 * 1.1e-3);
}

TEST_CASE("random: kaiming_normal_fan_out_ has std sqrt(2 / fan_out)") {
  Generator gen(3);
  // Conv weight [out 64, in 32, 3, 3]: fan_out = 64 * 3 * 3 = 576 (torch's fan_out
  // for mode="fan_out"), std = sqrt(2 / 576) = 0.0589; 18,432 values.
  for (MemoryFormat format : test::both_formats()) {
    Tensor w = empty({64, 32, 3, 3}, TensorOptions(DType::f32).with_format(format));
    kaiming_normal_fan_out_(w, gen);
    const double expected = std::sqrt(2.0 / 576.0);
    const Moments m = moments(w.to_doubles());
    // Relative SE of the std = 1 / sqrt(2 * 18432) = 0.52%; 5 SE = 2.6%.
    CHECK(std::abs(m.std / expected - 1.0) < 0.026);
    // SE of the mean = std / sqrt(18432) = 4.3e-4 at this std.
    CHECK(std::abs(m.mean) < 5 * expected / std::sqrt(18432.0));
  }
  // Linear-shaped [out 10, in 1280]: fan_out = 10, std = sqrt(0.2).
  Tensor linear = empty({10, 1280}, DType::f64);
  kaiming_normal_fan_out_(linear, gen);
  const Moments ml = moments(linear.to_doubles());
  CHECK(std::abs(ml.std / std::sqrt(0.2) - 1.0) < 5 / std::sqrt(2 * 12800.0));
  // A depthwise conv [C, 1, 3, 3] has fan_out = C * 9, whatever its in-channels.
  Tensor depthwise = empty({960, 1, 3, 3}, DType::f64);
  kaiming_normal_fan_out_(depthwise, gen);
  CHECK(std::abs(moments(depthwise.to_doubles()).std / std::sqrt(2.0 / (960 * 9)) - 1.0) <
        5 / std::sqrt(2 * 8640.0));

  Tensor vector = empty({5});
  CHECK_THROWS_WITH_AS(kaiming_normal_fan_out_(vector, gen), doctest::Contains("at least 2 dims"),
                       std::invalid_argument);
}

TEST_CASE("random: values do not depend on the memory format") {
  const Shape shape{2, 3, 4, 5};
  const auto cl = [](DType d) { return TensorOptions(d).with_format(MemoryFormat::channels_last); };
  Generator a(9), b(9);
  const Tensor x = randn(shape, a, DType::f32);
  const Tensor y = randn(shape, b, cl(DType::f32));
  CHECK(y.is_contiguous(MemoryFormat::channels_last));
  CHECK(x.to_doubles() == y.to_doubles());
  CHECK(rand(shape, a, DType::f64).to_doubles() == rand(shape, b, cl(DType::f64)).to_doubles());
  CHECK(randint(10, shape, a).to_doubles() == randint(10, shape, b, cl(DType::i64)).to_doubles());
  Tensor wa = empty(shape), wb = empty(shape, cl(DType::f32));
  kaiming_normal_fan_out_(wa, a);
  kaiming_normal_fan_out_(wb, b);
  CHECK(wa.to_doubles() == wb.to_doubles());
  // The tensor is filled in logical (N, C, H, W) order: the first value drawn
  // lands at [0, 0, 0, 0] and the second at [0, 0, 0, 1] in either format.
  Generator c(9);
  const double first = c.normal(), second = c.normal();
  CHECK(x.item_at({0, 0, 0, 0}) == static_cast<float>(first));
  CHECK(y.item_at({0, 0, 0, 1}) == static_cast<float>(second));
}

TEST_CASE("random: below() is in range and unbiased") {
  Generator gen(4);
  // 70,000 draws in [0, 7): each count is Binomial(70000, 1/7): mean 10,000,
  // SD = sqrt(70000 * 1/7 * 6/7) = 92.6; 5 SD = 463.
  std::vector<int> counts(7, 0);
  int out_of_range = 0;
  for (int i = 0; i < 70000; ++i) {
    const uint64_t x = gen.below(7);
    if (x < 7) {
      ++counts[x];
    } else {
      ++out_of_range;
    }
  }
  CHECK(out_of_range == 0);
  for (int c : counts) CHECK(std::abs(c - 10000) < 463);

  // A bound of 3 * 2^62 is where a plain `x % bound` would be visibly biased:
  // values below 2^62 would come up half the time instead of a third.
  const uint64_t bound = 3ull << 62;
  int low = 0;
  const int n = 30000;
  for (int i = 0; i < n; ++i) {
    const uint64_t x = gen.below(bound);
    out_of_range += x >= bound;
    low += x < (1ull << 62);
  }
  CHECK(out_of_range == 0);
  // SE of the fraction = sqrt(1/3 * 2/3 / 30000) = 2.7e-3; 5 SE = 0.0136.
  CHECK(std::abs(low / static_cast<double>(n) - 1.0 / 3.0) < 0.0136);

  CHECK(gen.below(1) == 0);
  CHECK(gen.below(UINT64_MAX) < UINT64_MAX);
  CHECK_THROWS_WITH_AS(gen.below(0), doctest::Contains("bound must be positive"),
                       std::invalid_argument);

  // randint fills integer tensors in [0, high).
  const Tensor r = randint(5, {1000}, gen);
  CHECK(r.dtype() == DType::i64);
  const std::vector<double> v = r.to_doubles();
  CHECK(*std::min_element(v.begin(), v.end()) == 0);
  CHECK(*std::max_element(v.begin(), v.end()) == 4);
  CHECK(randint(3, {50}, gen, DType::i32).dtype() == DType::i32);
  CHECK_THROWS_WITH_AS(randint(0, {2}, gen),
                       doctest::Contains("randint: high must be positive, got 0"),
                       std::invalid_argument);
  CHECK_THROWS_AS(randint(-5, {2}, gen), std::invalid_argument);
  // u8 tensors cannot be filled with random floats.
  Tensor bytes = empty({4}, DType::u8);
  CHECK_THROWS_WITH_AS(uniform_(bytes, 0, 1, gen),
                       doctest::Contains("uniform_: unsupported dtype u8"), std::invalid_argument);
}

TEST_CASE("random: a saved state continues the same stream, a bad one is refused") {
  Generator gen(99);
  for (int i = 0; i < 5; ++i) gen.next_u64();
  gen.normal();  // leaves a cached second normal: part of the state
  const std::vector<uint64_t> saved = gen.state();
  std::vector<double> expected;
  for (int i = 0; i < 6; ++i) expected.push_back(i % 2 == 0 ? gen.normal() : gen.uniform());
  Generator other(1);
  other.set_state(saved);
  for (int i = 0; i < 6; ++i) CHECK((i % 2 == 0 ? other.normal() : other.uniform()) == expected[i]);
  CHECK(other.state() == gen.state());
  CHECK_THROWS_AS(other.set_state({1, 2, 3}), std::invalid_argument);
  CHECK_THROWS_AS(other.set_state({0, 0, 0, 0, 0, 0}),
                  std::invalid_argument);  // xoshiro's dead state
  CHECK_THROWS_AS(other.set_state({1, 2, 3, 4, 0, 7}), std::invalid_argument);
}
