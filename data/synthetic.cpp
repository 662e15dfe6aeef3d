// SyntheticDataset: class templates made once from the seed, examples on demand.
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

#include "tensor/random.h"

namespace b3 {

namespace {

// Per-example noise: uniform in [-kNoise, kNoise] grey levels per pixel, plus
// a brightness shift uniform in [-kShift, kShift] per example.
constexpr double kNoise = 40.0;
constexpr double kShift = 30.0;

uint64_t example_seed(uint64_t seed, int64_t index) {
  // Distinct, well-mixed streams per (seed, index); Generator splitmixes it again.
  return seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull + 1;
}

}  // namespace

SyntheticDataset::SyntheticDataset(int64_t size, ImageShape shape, int64_t num_classes,
                                   uint64_t seed, int64_t first_example)
    : size_(size),
      shape_(shape),
      num_classes_(num_classes),
      seed_(seed),
      first_example_(first_example) {
  if (first_example < 0) {
    throw std::invalid_argument("SyntheticDataset: first_example must be >= 0, got " +
                                std::to_string(first_example));
  }
  if (size < 0) {
    throw std::invalid_argument("SyntheticDataset: size must be >= 0, got " + std::to_string(size));
  }
  if (shape.height < 1 || shape.width < 1 || shape.channels < 1) {
    throw std::invalid_argument("SyntheticDataset: image shape " + shape.str() +
                                " must be positive");
  }
  if (num_classes < 1 || num_classes > 256) {
    throw std::invalid_argument("SyntheticDataset: num_classes must be 1 to 256, got " +
                                std::to_string(num_classes));
  }
  // Each class and channel: a base level plus two plane waves with random
  // direction, frequency (1 to 3 cycles across the image) and phase.
  Generator gen(seed ^ 0x5EED5EED5EED5EEDull);
  templates_.resize(static_cast<size_t>(num_classes * shape.bytes()));
  const double two_pi = 2.0 * std::numbers::pi;
  for (int64_t c = 0; c < num_classes; ++c) {
    float* image = templates_.data() + c * shape.bytes();
    for (int64_t k = 0; k < shape.channels; ++k) {
      const double base = 70.0 + 116.0 * gen.uniform();
      double fy[2], fx[2], phase[2];
      for (int w = 0; w < 2; ++w) {
        const double angle = two_pi * gen.uniform();
        const double cycles = 1.0 + 2.0 * gen.uniform();
        fy[w] = cycles * std::sin(angle);
        fx[w] = cycles * std::cos(angle);
        phase[w] = two_pi * gen.uniform();
      }
      for (int64_t y = 0; y < shape.height; ++y) {
        for (int64_t x = 0; x < shape.width; ++x) {
          const double v = static_cast<double>(y) / shape.height;
          const double u = static_cast<double>(x) / shape.width;
          double value = base;
          for (int w = 0; w < 2; ++w)
            value += 30.0 * std::sin(two_pi * (fy[w] * v + fx[w] * u) + phase[w]);
          image[(y * shape.width + x) * shape.channels + k] = static_cast<float>(value);
        }
      }
    }
  }
}

std::vector<std::string> SyntheticDataset::class_names() const {
  std::vector<std::string> names;
  for (int64_t c = 0; c < num_classes_; ++c) names.push_back("class_" + std::to_string(c));
  return names;
}

int64_t SyntheticDataset::label(int64_t index) const {
  check_index("SyntheticDataset::label", index, size_);
  return (first_example_ + index) % num_classes_;
}

int64_t SyntheticDataset::get(int64_t index, uint8_t* pixels) const {
  const int64_t y = label(index);
  Generator gen(example_seed(seed_, first_example_ + index));
  const double shift = kShift * (2.0 * gen.uniform() - 1.0);
  const float* image = templates_.data() + y * shape_.bytes();
  for (int64_t i = 0; i < shape_.bytes(); ++i) {
    const double noise = kNoise * (2.0 * gen.uniform() - 1.0);
    const double value = std::round(image[i] + shift + noise);
    pixels[i] = static_cast<uint8_t>(std::clamp(value, 0.0, 255.0));
  }
  return y;
}

}  // namespace b3
