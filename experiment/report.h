// Statistics and small helpers of the experiment and its measurements (b3 sweep,
// gemm, layout, profile, maxbatch, suggest):
//
//   summarize()      count, mean, sample standard deviation (n - 1), min, max
//   welch_t_test()   is the difference of two means larger than the
//                    run-to-run spread? Welch's unequal-variance t-test,
//                    two-sided p-value from Student's t distribution
//   compare()        relative difference + the test + a verdict, with the rule
//                    stated in kSignificanceRule (printed in every results.md)
//   parse_size_list  "7,8,9", "120-136", "100-200:8" -> sizes, with clear errors
//   search_largest   the largest value a predicate accepts (maxbatch's search)
//
// The statistics are plain formulas with no dependency, so that
// experiment/pytorch_b3.py computes the same numbers the same way.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace b3::report {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct SampleSummary {
  int64_t count = 0;
  double mean = kNaN;
  double std = kNaN;  // sample standard deviation (divides by n - 1); NaN for n < 2
  double min = kNaN;
  double max = kNaN;
};

SampleSummary summarize(const std::vector<double>& values);
// The median (the mean of the middle two for an even count; NaN for none).
double median(std::vector<double> values);

// The regularized incomplete beta function I_x(a, b), a, b > 0, x in [0, 1],
// by its continued fraction (modified Lentz), to about 1e-14.
double regularized_incomplete_beta(double a, double b, double x);

// P(|T| >= |t|) for Student's t with `df` > 0 degrees of freedom (df need not
// be an integer): I_{df / (df + t^2)}(df / 2, 1 / 2).
double student_t_two_sided_p(double t, double df);

struct WelchResult {
  bool defined = false;  // false when either sample has fewer than 2 values
  double t = kNaN;       // (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)
  double df = kNaN;      // Welch-Satterthwaite degrees of freedom
  double p_value = kNaN;
};

// Welch's two-sided t-test of mean_a == mean_b. Both spreads zero: p = 1 when
// the means are equal, else 0 (the difference is exact, e.g. deterministic).
WelchResult welch_t_test(const SampleSummary& a, const SampleSummary& b);

// The rule every report states: how "larger than the run-to-run spread" is decided.
inline constexpr double kSignificanceLevel = 0.05;
extern const char* const kSignificanceRule;

struct Comparison {
  double relative = kNaN;  // mean_a / mean_b - 1
  WelchResult test;
  bool significant = false;  // test.defined and p < kSignificanceLevel
  std::string verdict;       // "yes (p=0.003)", "no (p=0.41)", "n/a (needs >= 2 runs each)"
};

// Compares sample a with sample b by kSignificanceRule.
Comparison compare(const SampleSummary& a, const SampleSummary& b);

// "12.34 ± 0.56" with `precision` decimals; "12.34 ± n/a" for one value; "n/a" for none.
std::string format_mean_std(const SampleSummary& s, int precision);
// printf-style formatting into a std::string.
std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));

bool is_power_of_two(int64_t value);
// "power of two", "multiple of 8" (and not a power of two), or "other".
std::string size_category(int64_t value);

// Parses a comma-separated list of positive integers and ranges: "7,8,9",
// "120-136" (every value), "100-200:8" (every 8th). Throws
// std::invalid_argument naming `option` for an empty list, a zero or negative
// size, a malformed item, a reversed range, or a value listed twice.
std::vector<int64_t> parse_size_list(const std::string& text, const std::string& option);
// The same check for a CLI11 validator: an empty string when `text` is fine,
// else the problem (without the option name, which CLI11 adds).
std::string size_list_problem(const std::string& text);
// An empty string when `text` is an integer >= minimum, else the problem.
std::string integer_at_least_problem(const std::string& text, int64_t minimum);

// The largest value v in [1, limit] with fits(v), assuming fits is monotone
// (true up to some value, false above): doubles from `start` until a value
// does not fit (or `limit` is reached), then bisects. `probes` records every
// value tried, in order, with its answer. Returns 0 when even 1 does not fit.
struct SearchResult {
  int64_t largest = 0;
  std::vector<std::pair<int64_t, bool>> probes;
};
SearchResult search_largest(const std::function<bool(int64_t)>& fits, int64_t start, int64_t limit);

// Writes `text` to path.tmp and renames it over `path`, so a reader never sees
// a half-written file. Throws std::runtime_error naming the path.
void write_text_atomically(const std::filesystem::path& path, const std::string& text);

// A run's precision for reports: "mixed f16" or "f32" (short, for table
// cells and titles), and one sentence for a report's header.
std::string precision_name(bool amp);
std::string precision_description(bool amp);

// One line naming this CPU ("Intel(R) Xeon(R) ..., 2 threads"), from
// /proc/cpuinfo and the OpenMP thread count the kernels use.
std::string cpu_description();

}  // namespace b3::report
