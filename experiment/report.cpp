// Statistics and shared helpers of the experiment (see report.h).
#include "experiment/report.h"

#include <omp.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <stdexcept>

#include "optim/grad_scaler_cuda.h"

namespace b3::report {

const char* const kSignificanceRule =
    "A difference is called larger than the run-to-run spread when Welch's two-sided t-test "
    "(unequal variances, Welch-Satterthwaite degrees of freedom) on the per-run values gives "
    "p < 0.05. With few runs the test has little power: \"no\" means \"not shown\", not "
    "\"equal\". Each comparison is tested on its own (no multiple-comparison correction).";

SampleSummary summarize(const std::vector<double>& values) {
  SampleSummary s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  double total = 0.0;
  s.min = values.front();
  s.max = values.front();
  for (double v : values) {
    total += v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  s.mean = total / static_cast<double>(values.size());
  if (values.size() >= 2) {
    // Two passes (sum of squared deviations from the mean) avoid the
    // cancellation of sum(x^2) - n mean^2 for values with a large mean.
    double squares = 0.0;
    for (double v : values) squares += (v - s.mean) * (v - s.mean);
    s.std = std::sqrt(squares / static_cast<double>(values.size() - 1));
  }
  return s;
}

double median(std::vector<double> values) {
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

namespace {

// The continued fraction of I_x(a, b) (converges fast for x < (a+1)/(a+b+2)),
// evaluated with the modified Lentz method:
//   I_x(a,b) = prefactor / a * 1 / (1 + d1 / (1 + d2 / (1 + ...)))
//   d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)),  d_{2m} = m(b-m) x / ((a+2m-1)(a+2m))
double beta_continued_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  constexpr double kEpsilon = 1e-15;
  auto guard = [](double v) { return std::fabs(v) < kTiny ? kTiny : v; };
  double c = 1.0;
  double d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
  double h = d;
  for (int m = 1; m <= 10000; ++m) {
    const double md = static_cast<double>(m);
    const double even = md * (b - md) * x / ((a + 2 * md - 1) * (a + 2 * md));
    d = 1.0 / guard(1.0 + even * d);
    c = guard(1.0 + even / c);
    h *= d * c;
    const double odd = -(a + md) * (a + b + md) * x / ((a + 2 * md) * (a + 2 * md + 1));
    d = 1.0 / guard(1.0 + odd * d);
    c = guard(1.0 + odd / c);
    const double step = d * c;
    h *= step;
    if (std::fabs(step - 1.0) < kEpsilon) return h;
  }
  throw std::runtime_error(
      "regularized_incomplete_beta: no convergence for a=" + std::to_string(a) +
      " b=" + std::to_string(b) + " x=" + std::to_string(x));
}

}  // namespace

double regularized_incomplete_beta(double a, double b, double x) {
  if (!(a > 0.0) || !(b > 0.0)) {
    throw std::invalid_argument("regularized_incomplete_beta: a and b must be positive, got a=" +
                                std::to_string(a) + " b=" + std::to_string(b));
  }
  if (!(x >= 0.0 && x <= 1.0)) {
    throw std::invalid_argument("regularized_incomplete_beta: x must lie in [0, 1], got " +
                                std::to_string(x));
  }
  if (x == 0.0) return 0.0;
  if (x == 1.0) return 1.0;
  // x^a (1-x)^b / B(a, b), in logarithms.
  const double log_prefactor =
      std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  const double prefactor = std::exp(log_prefactor);
  // Use the fraction where it converges fast, and I_x(a,b) = 1 - I_{1-x}(b,a) elsewhere.
  if (x < (a + 1.0) / (a + b + 2.0)) return prefactor * beta_continued_fraction(a, b, x) / a;
  return 1.0 - prefactor * beta_continued_fraction(b, a, 1.0 - x) / b;
}

double student_t_two_sided_p(double t, double df) {
  if (!(df > 0.0)) {
    throw std::invalid_argument("student_t_two_sided_p: df must be positive, got " +
                                std::to_string(df));
  }
  if (std::isnan(t)) return kNaN;
  if (std::isinf(t)) return 0.0;
  return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
}

WelchResult welch_t_test(const SampleSummary& a, const SampleSummary& b) {
  WelchResult r;
  if (a.count < 2 || b.count < 2) return r;
  r.defined = true;
  const double va = a.std * a.std / static_cast<double>(a.count);
  const double vb = b.std * b.std / static_cast<double>(b.count);
  const double se2 = va + vb;
  const double difference = a.mean - b.mean;
  if (se2 == 0.0) {
    // No spread at all: any difference is exact.
    r.t = difference == 0.0 ? 0.0 : std::copysign(INFINITY, difference);
    r.df = static_cast<double>(a.count + b.count - 2);
    r.p_value = difference == 0.0 ? 1.0 : 0.0;
    return r;
  }
  r.t = difference / std::sqrt(se2);
  r.df = se2 * se2 /
         (va * va / static_cast<double>(a.count - 1) + vb * vb / static_cast<double>(b.count - 1));
  r.p_value = student_t_two_sided_p(r.t, r.df);
  return r;
}

Comparison compare(const SampleSummary& a, const SampleSummary& b) {
  Comparison c;
  if (a.count > 0 && b.count > 0 && b.mean != 0.0) c.relative = a.mean / b.mean - 1.0;
  c.test = welch_t_test(a, b);
  if (!c.test.defined) {
    c.verdict = "n/a (needs >= 2 runs each)";
    return c;
  }
  c.significant = c.test.p_value < kSignificanceLevel;
  c.verdict = format("%s (p=%.3g)", c.significant ? "yes" : "no", c.test.p_value);
  return c;
}

std::string format(const char* pattern, ...) {
  va_list args;
  va_start(args, pattern);
  va_list copy;
  va_copy(copy, args);
  const int length = std::vsnprintf(nullptr, 0, pattern, copy);
  va_end(copy);
  std::string text(static_cast<size_t>(std::max(length, 0)) + 1, '\0');
  std::vsnprintf(text.data(), text.size(), pattern, args);
  va_end(args);
  text.resize(static_cast<size_t>(std::max(length, 0)));
  return text;
}

std::string format_mean_std(const SampleSummary& s, int precision) {
  if (s.count == 0) return "n/a";
  if (s.count == 1) return format("%.*f ± n/a", precision, s.mean);
  return format("%.*f ± %.*f", precision, s.mean, precision, s.std);
}

bool is_power_of_two(int64_t value) { return value > 0 && (value & (value - 1)) == 0; }

std::string size_category(int64_t value) {
  if (is_power_of_two(value)) return "power of two";
  if (value % 8 == 0) return "multiple of 8";
  return "other";
}

namespace {

// A whole-string base-10 integer, or nothing.
bool parse_integer(const std::string& text, int64_t& value) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size()) return false;
  value = parsed;
  return true;
}

std::string trim(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  const size_t last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

// Parses into `sizes`; returns the problem, or "" when the list is fine.
std::string parse_sizes(const std::string& text, std::vector<int64_t>& sizes) {
  const std::string example = " (give sizes like 127,128,129 or ranges like 120-136 or 100-200:8)";
  if (trim(text).empty()) return "the list is empty" + example;
  std::set<int64_t> seen;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = trim(text.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) return "empty item in '" + text + "'" + example;
    int64_t first = 0, last = 0, step = 1;
    const size_t dash = item.find('-', 1);  // from 1: a leading '-' is a sign
    if (dash == std::string::npos) {
      if (!parse_integer(item, first)) return "'" + item + "' is not an integer" + example;
      last = first;
    } else {
      const size_t colon = item.find(':', dash);
      const std::string low = item.substr(0, dash);
      const std::string high =
          item.substr(dash + 1, colon == std::string::npos ? std::string::npos : colon - dash - 1);
      if (!parse_integer(low, first) || !parse_integer(high, last)) {
        return "'" + item + "' is not a range like 120-136" + example;
      }
      if (colon != std::string::npos &&
          (!parse_integer(item.substr(colon + 1), step) || step <= 0)) {
        return "'" + item + "': the step after ':' must be a positive integer";
      }
      if (last < first) return "'" + item + "' is a reversed range";
    }
    if (first <= 0) {
      return "sizes must be positive, got " + std::to_string(first) + " in '" + item + "'";
    }
    for (int64_t v = first; v <= last; v += step) {
      if (!seen.insert(v).second) return std::to_string(v) + " is listed twice";
      sizes.push_back(v);
      if (sizes.size() > 100000) return "more than 100,000 sizes";
    }
    if (comma == text.size()) break;
  }
  return "";
}

}  // namespace

std::vector<int64_t> parse_size_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> sizes;
  const std::string problem = parse_sizes(text, sizes);
  if (!problem.empty()) throw std::invalid_argument(option + ": " + problem);
  return sizes;
}

std::string size_list_problem(const std::string& text) {
  std::vector<int64_t> sizes;
  return parse_sizes(text, sizes);
}

std::string integer_at_least_problem(const std::string& text, int64_t minimum) {
  int64_t value = 0;
  if (!parse_integer(trim(text), value)) return "'" + text + "' is not an integer";
  if (value < minimum) {
    return "must be at least " + std::to_string(minimum) + ", got " + std::to_string(value);
  }
  return "";
}

SearchResult search_largest(const std::function<bool(int64_t)>& fits, int64_t start,
                            int64_t limit) {
  if (limit < 1) throw std::invalid_argument("search_largest: limit must be >= 1");
  SearchResult result;
  auto probe = [&](int64_t value) {
    const bool ok = fits(value);
    result.probes.emplace_back(value, ok);
    return ok;
  };
  int64_t good = 0;         // largest value known to fit (0: none yet)
  int64_t bad = limit + 1;  // smallest value known not to fit
  int64_t value = std::clamp<int64_t>(start, 1, limit);
  // Grow: double until something does not fit.
  while (true) {
    if (probe(value)) {
      good = value;
      if (value == limit) break;
      value = std::min(limit, value * 2);
    } else {
      bad = value;
      break;
    }
  }
  // A failure at the first probe: search below it.
  while (bad - good > 1) {
    const int64_t middle = good + (bad - good) / 2;
    if (probe(middle))
      good = middle;
    else
      bad = middle;
  }
  result.largest = good;
  return result;
}

void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary);
    out << text;
    out.close();
    if (!out) throw std::runtime_error("cannot write " + temporary.string());
  }
  std::filesystem::rename(temporary, path);
}

std::string precision_name(bool amp) { return amp ? "mixed f16" : "f32"; }

std::string precision_description(bool amp) {
  if (!amp) return "f32 (weights, activations and gradients)";
  return format(
      "mixed f16 (autocast: f16 convolutions and GEMMs with f32 accumulation, f32 master "
      "weights, BatchNorm statistics and loss; dynamic loss scaling from %.0f)",
      static_cast<double>(cuda::LossScaleOptions{}.init_scale));
}

std::string cpu_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, name = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) name = trim(line.substr(colon + 1));
      break;
    }
  }
  const int threads = omp_get_max_threads();
  return format("%s, %d thread%s", name.c_str(), threads, threads == 1 ? "" : "s");
}

}  // namespace b3::report
