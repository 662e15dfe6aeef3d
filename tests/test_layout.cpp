// The layout experiment as a library (experiment/layout.h,
// experiment/layout_report.h), without the binary: the variants (one factor
// at a time, or all 24), the misaligned copy, the checks of a plan, and the
// summary table and CSV on hand-made measurements.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "experiment/layout.h"
#include "experiment/layout_report.h"
#include "tensor/random.h"

using namespace b3;
using namespace b3::experiment;

TEST_CASE("layout variants: the baseline, then one factor changed at a time; or all 24") {
  const std::vector<LayoutVariant> v = layout_variants(false);
  REQUIRE(v.size() == 6);
  CHECK(v[0].name == "baseline");
  CHECK(v[0].format == MemoryFormat::channels_last);
  CHECK(v[0].channel_divisor == 8);
  CHECK_FALSE(v[0].pad_batch);
  CHECK_FALSE(v[0].misaligned);
  for (size_t i = 1; i < v.size(); ++i) {
    CAPTURE(v[i].name);
    const int changed = (v[i].format != v[0].format) + (v[i].channel_divisor != 8) +
                        v[i].pad_batch + v[i].misaligned;
    CHECK(changed == 1);
  }
  const std::vector<LayoutVariant> full = layout_variants(true);
  REQUIRE(full.size() == 24);
  std::set<std::string> names;
  for (const LayoutVariant& f : full) names.insert(f.name);
  CHECK(names.size() == 24);
  CHECK(full[0].name == "nhwc, div 8, unpadded, aligned");
  CHECK(describe_variant(full.back()) == "nchw, div 16, padded, misaligned");
}

TEST_CASE("misaligned_copy: same values and layout, data bytes past the boundary") {
  Generator gen(1);
  const Tensor t =
      rand({2, 3, 4, 5}, gen, TensorOptions().with_format(MemoryFormat::channels_last));
  for (size_t bytes : {size_t{4}, size_t{12}}) {
    CAPTURE(bytes);
    const Tensor copy = misaligned_copy(t, bytes);
    const size_t alignment = default_allocation(t.device()).alignment;
    CHECK(reinterpret_cast<uintptr_t>(copy.data_ptr()) % alignment == bytes);
    CHECK(copy.is_contiguous(MemoryFormat::channels_last));
    CHECK(copy.to_doubles() == t.to_doubles());
  }
}

TEST_CASE("plan_layout fills the CPU's defaults and checks --misalign-bytes") {
  LayoutConfig config;
  config.batch_size = 127;
  const LayoutPlan plan = plan_layout(config);
  CHECK(plan.config.image_size == 32);
  CHECK(plan.config.steps == 5);
  CHECK_FALSE(plan.amp);
  CHECK(plan.padded_batch == 128);
  CHECK(plan.device_text.rfind("cpu (", 0) == 0);
  config.misalign_bytes = 64;
  CHECK_THROWS_WITH_AS(plan_layout(config),
                       doctest::Contains("--misalign-bytes must lie in [1, 63]"),
                       std::invalid_argument);
  config.misalign_bytes = 4;
  config.amp = true;
  CHECK_THROWS_WITH_AS(plan_layout(config), doctest::Contains("--amp (f16 mixed precision) needs"),
                       std::invalid_argument);
}

TEST_CASE("summarize_layout: against the first variant, with the table and CSV it writes") {
  LayoutConfig config;
  config.batch_size = 3;
  config.repeats = 2;
  const LayoutPlan plan = plan_layout(config);
  const std::vector<LayoutVariant> variants = layout_variants(false);
  std::vector<LayoutMeasurement> results(2);
  results[0].variant = variants[0];
  results[0].batch = 3;
  results[0].parameters = 100;
  results[0].step_seconds = {0.100, 0.102};
  results[0].real_images_per_second = {30.0, 29.4};
  results[1].variant = variants[4];  // batch padded to x8
  results[1].batch = 8;
  results[1].parameters = 100;
  results[1].step_seconds = {0.050, 0.051};
  results[1].real_images_per_second = {60.0, 58.8};
  const std::vector<LayoutRow> rows = summarize_layout(results);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].verdict == "(baseline)");
  CHECK(rows[0].relative == 1.0);
  CHECK(rows[0].layout == "nhwc");
  CHECK(rows[0].step_ms.mean == doctest::Approx(101.0));
  CHECK(rows[1].relative == doctest::Approx(59.4 / 29.7));
  CHECK(rows[1].verdict.rfind("yes (p=", 0) == 0);

  plot::PlotFiles plot;
  plot.note = "not rendered (test)";
  const std::string md = layout_markdown(plan, rows, plot);
  CHECK(md.find("| baseline | nhwc | 8 | 3 | aligned | 100 | 101.00 ± 1.41 | 29.7 ± 0.4 | "
                "1.000 | (baseline) |") != std::string::npos);
  CHECK(md.find("| batch padded to x8 | nhwc | 8 | 8 | aligned |") != std::string::npos);
  CHECK(md.find("Plot not rendered: not rendered (test)") != std::string::npos);
  CHECK(md.find("train_step()") != std::string::npos);

  std::istringstream csv(layout_csv(rows));
  std::string header, first;
  std::getline(csv, header);
  std::getline(csv, first);
  CHECK(header ==
        "variant,layout,channel_divisor,images_per_step,misaligned,parameters,step_ms_mean,"
        "step_ms_std,real_images_per_second_mean,real_images_per_second_std,repeats");
  CHECK(first.rfind("\"baseline\",nhwc,8,3,0,100,101,", 0) == 0);
  CHECK(first.substr(first.size() - 2) == ",2");

  const plot::Figure figure = layout_figure(plan, rows);
  CHECK(figure.bars);
  CHECK(figure.bar_labels == std::vector<std::string>{"baseline", "batch padded to x8"});
  REQUIRE(figure.series.at(0).y.size() == 2);
  CHECK(figure.series[0].y[1] == doctest::Approx(59.4));
  CHECK(figure.series[0].error[0] == doctest::Approx(0.3 * std::sqrt(2.0)));
}
