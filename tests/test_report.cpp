// Tests of the experiment's statistics and helpers (experiment/report.h), the
// gnuplot writer (experiment/plot.h) and the NVML helpers that need no GPU
// (experiment/nvml.h), all linked from libb3.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "experiment/nvml.h"
#include "experiment/plot.h"
#include "experiment/report.h"
#include "tests/support/files.h"
#include "tests/support/python.h"

namespace {

using b3::test::read_text;
using b3::test::Scratch;

using namespace b3::report;

}  // namespace

TEST_CASE("summarize gives mean and the sample standard deviation") {
  const SampleSummary s = summarize({1, 2, 3, 4});
  CHECK(s.count == 4);
  CHECK(s.mean == doctest::Approx(2.5).epsilon(1e-15));
  // sum of squared deviations 5, divided by n - 1 = 3.
  CHECK(s.std == doctest::Approx(std::sqrt(5.0 / 3.0)).epsilon(1e-15));
  CHECK(s.min == 1);
  CHECK(s.max == 4);
  // A large mean: the two-pass formula keeps the spread exact (sum(x^2) - n
  // mean^2 would lose it to cancellation in double).
  const SampleSummary big = summarize({1e9 + 1, 1e9 + 2, 1e9 + 3});
  CHECK(big.std == doctest::Approx(1.0).epsilon(1e-12));
  const SampleSummary one = summarize({7.0});
  CHECK(one.count == 1);
  CHECK(one.mean == 7.0);
  CHECK(std::isnan(one.std));
  CHECK(summarize({}).count == 0);
  CHECK(format_mean_std(s, 2) == "2.50 ± 1.29");
  CHECK(format_mean_std(one, 1) == "7.0 ± n/a");
  CHECK(format_mean_std(summarize({}), 1) == "n/a");
}

TEST_CASE("median of odd and even counts, and of none") {
  CHECK(median({3, 1, 2}) == 2);
  CHECK(median({4, 1, 3, 2}) == 2.5);
  CHECK(median({7}) == 7);
  CHECK(std::isnan(median({})));
}

TEST_CASE("regularized incomplete beta matches closed forms and mpmath") {
  // Closed forms; the continued fraction is good to ~1e-14, checked at 1e-12.
  for (double x : {0.0, 0.01, 0.3, 0.5, 0.77, 0.999, 1.0}) {
    CHECK(regularized_incomplete_beta(1, 1, x) == doctest::Approx(x).epsilon(1e-12));
    CHECK(regularized_incomplete_beta(3.5, 1, x) ==
          doctest::Approx(std::pow(x, 3.5)).epsilon(1e-12));
    CHECK(regularized_incomplete_beta(1, 4, x) ==
          doctest::Approx(1 - std::pow(1 - x, 4)).epsilon(1e-12));
    // I_x(2, 3) = P(Binomial(4, x) >= 2).
    const double binomial = 6 * x * x * (1 - x) * (1 - x) + 4 * x * x * x * (1 - x) + x * x * x * x;
    CHECK(regularized_incomplete_beta(2, 3, x) == doctest::Approx(binomial).epsilon(1e-12));
    CHECK(regularized_incomplete_beta(2.5, 0.5, x) ==
          doctest::Approx(1 - regularized_incomplete_beta(0.5, 2.5, 1 - x)).epsilon(1e-12));
  }
  // mpmath.betainc(a, b, 0, x, regularized=True) at 30 digits.
  CHECK(regularized_incomplete_beta(2.5, 3.5, 0.3) ==
        doctest::Approx(0.296752989295666378).epsilon(1e-12));
  CHECK(regularized_incomplete_beta(0.5, 7.25, 0.02) ==
        doctest::Approx(0.405280994737428319).epsilon(1e-12));
  CHECK(regularized_incomplete_beta(40, 60, 0.45) ==
        doctest::Approx(0.846224797681398713).epsilon(1e-12));
  CHECK_THROWS_WITH_AS(regularized_incomplete_beta(0, 1, 0.5), doctest::Contains("positive"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(regularized_incomplete_beta(1, 1, 1.5), doctest::Contains("[0, 1]"),
                       std::invalid_argument);
}

TEST_CASE("Student t two-sided p-values") {
  for (double t : {0.0, 0.1, 1.0, 2.5, 12.7, -3.0}) {
    // df = 1 is the Cauchy distribution; df = 2 has a closed form too.
    CHECK(student_t_two_sided_p(t, 1) ==
          doctest::Approx(1 - 2 / M_PI * std::atan(std::fabs(t))).epsilon(1e-12));
    CHECK(student_t_two_sided_p(t, 2) ==
          doctest::Approx(1 - std::fabs(t) / std::sqrt(t * t + 2)).epsilon(1e-12));
  }
  // The 97.5% quantiles of t(10) and t(5) give p = 0.05 (mpmath: 0.0500000000018, 0.0499999999406).
  CHECK(student_t_two_sided_p(2.2281388519649385, 10) == doctest::Approx(0.05).epsilon(1e-9));
  CHECK(student_t_two_sided_p(2.5705818366147395, 5) == doctest::Approx(0.05).epsilon(1e-8));
  CHECK(student_t_two_sided_p(INFINITY, 3) == 0.0);
  CHECK_THROWS_AS(student_t_two_sided_p(1.0, 0.0), std::invalid_argument);
}

TEST_CASE("Welch's t-test and the significance verdict") {
  const SampleSummary a = summarize({1, 2, 3, 4, 5});
  const SampleSummary b = summarize({2, 4, 6, 8, 10});
  const WelchResult w = welch_t_test(a, b);
  REQUIRE(w.defined);
  // By hand: se^2 = 2.5/5 + 10/5 = 2.5, t = -3 / sqrt(2.5),
  // df = 2.5^2 / (0.5^2/4 + 2^2/4) = 5.88235...; p from mpmath: 0.10753119493062727.
  CHECK(w.t == doctest::Approx(-3 / std::sqrt(2.5)).epsilon(1e-14));
  CHECK(w.df == doctest::Approx(6.25 / 1.0625).epsilon(1e-14));
  CHECK(w.p_value == doctest::Approx(0.10753119493062727).epsilon(1e-10));
  const Comparison c = compare(a, b);
  CHECK_FALSE(c.significant);
  CHECK(c.relative == doctest::Approx(3.0 / 6.0 - 1.0));
  CHECK(c.verdict.rfind("no (p=0.108", 0) == 0);

  // Clearly separated samples: significant.
  const Comparison far = compare(summarize({100, 101, 99, 100}), summarize({90, 91, 89, 90}));
  CHECK(far.significant);
  CHECK(far.verdict.rfind("yes", 0) == 0);
  // The test is symmetric in p.
  CHECK(welch_t_test(b, a).p_value == doctest::Approx(w.p_value).epsilon(1e-14));

  // No spread: exact comparison.
  CHECK(welch_t_test(summarize({3, 3}), summarize({3, 3, 3})).p_value == 1.0);
  const Comparison exact = compare(summarize({3, 3}), summarize({4, 4}));
  CHECK(exact.significant);
  CHECK(exact.test.p_value == 0.0);

  // One run cannot show spread.
  const Comparison single = compare(summarize({1.0}), summarize({2.0, 2.1}));
  CHECK_FALSE(single.test.defined);
  CHECK_FALSE(single.significant);
  CHECK(single.verdict == "n/a (needs >= 2 runs each)");
  CHECK(std::string(kSignificanceRule).find("p < 0.05") != std::string::npos);
}

TEST_CASE("size lists: values, ranges, steps and clear errors") {
  CHECK(parse_size_list("7,8,9", "--batch-sizes") == std::vector<int64_t>{7, 8, 9});
  CHECK(parse_size_list(" 127 , 128 ", "--x") == std::vector<int64_t>{127, 128});
  CHECK(parse_size_list("120-123", "--x") == std::vector<int64_t>{120, 121, 122, 123});
  CHECK(parse_size_list("100-116:8,5", "--x") == std::vector<int64_t>{100, 108, 116, 5});
  CHECK_THROWS_WITH_AS(parse_size_list("", "--batch-sizes"),
                       doctest::Contains("--batch-sizes: the list is empty"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("8,0", "--batch-sizes"),
                       doctest::Contains("sizes must be positive, got 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("-3", "--x"), doctest::Contains("positive, got -3"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("7,,8", "--x"), doctest::Contains("empty item"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("7,eight", "--x"),
                       doctest::Contains("'eight' is not an integer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("9-7", "--x"), doctest::Contains("reversed range"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("1-5:0", "--x"), doctest::Contains("step"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_size_list("7,8,7", "--x"), doctest::Contains("7 is listed twice"),
                       std::invalid_argument);
  CHECK(size_list_problem("7,8") == "");
  CHECK(size_list_problem(",").find("empty item") != std::string::npos);
  CHECK(integer_at_least_problem("2", 1) == "");
  CHECK(integer_at_least_problem("0", 1) == "must be at least 1, got 0");
  CHECK(integer_at_least_problem("x", 1) == "'x' is not an integer");
}

TEST_CASE("size categories") {
  CHECK(is_power_of_two(1));
  CHECK(is_power_of_two(512));
  CHECK_FALSE(is_power_of_two(0));
  CHECK_FALSE(is_power_of_two(513));
  CHECK(size_category(128) == "power of two");
  CHECK(size_category(136) == "multiple of 8");
  CHECK(size_category(127) == "other");
}

TEST_CASE("search_largest finds the boundary with few probes") {
  for (int64_t boundary : {1, 2, 100, 515, 1023, 1024, 5000}) {
    int64_t calls = 0;
    auto fits = [&](int64_t v) {
      ++calls;
      return v <= boundary;
    };
    const SearchResult r = search_largest(fits, 256, 1 << 16);
    CHECK(r.largest == boundary);
    CHECK(r.probes.size() == static_cast<size_t>(calls));
    // Doubling then bisection: at most 2 log2(limit) + 2 probes.
    CHECK(calls <= 34);
    for (const auto& [value, ok] : r.probes) CHECK(ok == (value <= boundary));
  }
  CHECK(search_largest([](int64_t) { return false; }, 8, 100).largest == 0);
  CHECK(search_largest([](int64_t) { return true; }, 8, 100).largest == 100);
  CHECK_THROWS_AS(search_largest([](int64_t) { return true; }, 8, 0), std::invalid_argument);
}

TEST_CASE("write_text_atomically leaves the file and no temporary") {
  Scratch scratch("b3-report");
  const std::filesystem::path file = scratch.path / "a.txt";
  write_text_atomically(file, "one\n");
  write_text_atomically(file, "two\n");
  CHECK(read_text(file) == "two\n");
  CHECK_FALSE(std::filesystem::exists(scratch.path / "a.txt.tmp"));
  CHECK_THROWS_AS(write_text_atomically(scratch.path / "missing" / "b.txt", "x"),
                  std::runtime_error);
  CHECK(cpu_description().find("thread") != std::string::npos);
}

TEST_CASE("write_plot writes data and script, and says how to plot without gnuplot") {
  Scratch scratch("b3-report");
  b3::plot::Figure figure;
  figure.title = "test figure, cpu, f32, nhwc, 2 runs";
  figure.x_label = "batch size";
  figure.y_label = "images/s";
  figure.series.push_back(
      {"it's data", {7, 8, 9}, {10, 12, 11}, {1, 0.5, NAN}, true, "#ff0000", 7});
  CHECK_FALSE(b3::plot::find_gnuplot("/nonexistent/gnuplot").has_value());
  const b3::plot::PlotFiles files =
      b3::plot::write_plot(scratch.path / "fig", figure, std::nullopt);
  CHECK_FALSE(files.rendered);
  CHECK(files.note.find("gnuplot-nox") != std::string::npos);
  CHECK(files.note.find("gnuplot fig.gp") != std::string::npos);
  const std::string data = read_text(files.data);
  CHECK(data.find("8 12 0.5\n") != std::string::npos);
  CHECK(data.find("9 11 0\n") != std::string::npos);  // one run: no error bar
  const std::string script = read_text(files.script);
  CHECK(script.find("set output 'fig.png'") != std::string::npos);
  CHECK(script.find("'it''s data'") != std::string::npos);  // quote doubled for gnuplot
  CHECK_FALSE(std::filesystem::exists(files.image));

  b3::plot::Figure broken = figure;
  broken.series[0].x.pop_back();
  CHECK_THROWS_WITH_AS(b3::plot::write_plot(scratch.path / "bad", broken, std::nullopt),
                       doctest::Contains("2 x values and 3 y values"), std::invalid_argument);
  b3::plot::Figure bars;
  bars.bars = true;
  bars.series.push_back({"rate", {}, {1, 2}, {}, false, "", 7});
  bars.bar_labels = {"only one"};
  CHECK_THROWS_WITH_AS(b3::plot::write_plot(scratch.path / "bars", bars, std::nullopt),
                       doctest::Contains("1 bar labels for 2 bars"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(b3::plot::write_plot(scratch.path / "none", {}, std::nullopt),
                       doctest::Contains("no series"), std::invalid_argument);
}

TEST_CASE("tic_label_rows staggers only the numbers that would overlap") {
  using b3::plot::tic_label_rows;
  // 127, 128 and 129 sit 1.7% of the axis apart; a 3-digit number needs about 4%.
  CHECK(tic_label_rows({100, 127, 128, 129, 156}, false) == std::vector<int>{0, 0, 1, 2, 0});
  CHECK(tic_label_rows({100, 127, 128, 129, 156, 255, 256, 257, 511, 512, 513}, true) ==
        std::vector<int>{0, 0, 1, 2, 0, 0, 1, 2, 0, 1, 2});
  CHECK(tic_label_rows({7, 8, 9}, false) == std::vector<int>{0, 0, 0});
  CHECK(tic_label_rows({16, 8, 32}, true) == std::vector<int>{0, 0, 0});  // any order
  CHECK(tic_label_rows({5}, false) == std::vector<int>{0});
  Scratch scratch("b3-report");
  b3::plot::Figure figure;
  figure.series.push_back({"mean", {100, 127, 128, 129, 156}, {1, 2, 3, 4, 5}, {}, true, "", 0});
  figure.x_tics = figure.series[0].x;
  const std::string script =
      read_text(b3::plot::write_plot(scratch.path / "rows", figure, std::nullopt).script);
  CHECK(script.find("set xtics ('' 100, '' 127, '' 128, '' 129, '' 156)") != std::string::npos);
  CHECK(script.find("set label '128' at first 128, graph -0.075 center front") !=
        std::string::npos);
  CHECK(script.find("set label '129' at first 129, graph -0.12 center front") != std::string::npos);
  CHECK(script.find("set bmargin 9") != std::string::npos);
}

TEST_CASE("write_plot renders PNGs with gnuplot") {
  const auto gnuplot = b3::plot::find_gnuplot();
  if (!gnuplot) {
    std::cout << "SKIPPED: gnuplot is not on PATH (Debian: apt-get install gnuplot-nox, or "
                 "scripts/setup.sh)"
              << std::endl;
    std::exit(b3::test::kSkipExitCode);
  }
  Scratch scratch("b3-report");
  b3::plot::Figure points;
  points.title = "points";
  points.series.push_back({"mean", {7, 8, 9}, {10, 12, 11}, {}, true, "#bbbbbb", 0});
  points.series.push_back({"power of two", {8}, {12}, {0.5}, false, "#d62728", 7});
  points.x_marks = {8};
  points.x_tics = {7, 8, 9};
  points.log_x = true;
  const auto a = b3::plot::write_plot(scratch.path / "points", points, gnuplot);
  CHECK_MESSAGE(a.rendered, a.note);
  b3::plot::Figure bars;
  bars.bars = true;
  bars.title = "bars";
  bars.series.push_back({"rate", {}, {1, 2}, {0.1, 0.2}, false, "", 7});
  bars.bar_labels = {"baseline", "\"quoted\" label"};
  const auto b = b3::plot::write_plot(scratch.path / "bars", bars, gnuplot);
  CHECK_MESSAGE(b.rendered, b.note);
  // A PNG starts with its 8-byte signature.
  for (const auto& files : {a, b}) {
    std::ifstream in(files.image, std::ios::binary);
    char signature[8] = {};
    in.read(signature, 8);
    CHECK(std::string(signature + 1, 3) == "PNG");
  }
}

TEST_CASE("NVML helpers without a GPU") {
  using namespace b3::gpu;
  CHECK(throttle_reason_names(0) == "none");
  CHECK(throttle_reason_names(0x1) == "none");  // idle is not a slowdown
  CHECK(throttle_reason_names(0x40 | 0x4) == "power cap (sw), thermal (hw)");
  std::vector<GpuSample> samples(3);
  samples[0] = {0.0, 1400, 60, 250, 0};
  samples[1] = {0.2, 1200, 70, 300, 0x40};
  samples[2] = {0.4, 1300, 65, 275, 0};
  const GpuSampleStats s = summarize_samples(samples);
  CHECK(s.samples == 3);
  CHECK(s.clock_mean_mhz == doctest::Approx(1300));
  CHECK(s.clock_min_mhz == 1200);
  CHECK(s.temperature_max_c == 70);
  CHECK(s.power_mean_w == doctest::Approx(275));
  CHECK(s.throttle_reasons_seen == 0x40);
  CHECK(summarize_samples({}).samples == 0);
  // On a machine without the driver, open() says why; with one, it works.
  std::string why_not;
  const std::unique_ptr<Nvml> nvml = Nvml::open(why_not);
  if (nvml) {
    CHECK(nvml->device_count() >= 0);
  } else {
    CHECK(why_not.find("NVML") != std::string::npos);
  }
  std::string cuda_why;
  if (!query_cuda_device(0, cuda_why)) CHECK_FALSE(cuda_why.empty());
}
