// `b3 gemm`: the alignment microbenchmark for matrix multiplication
// (experiment/gemm.h: the production linear() GEMM, checked against a
// double-precision reference, then timed; the table and plot in
// experiment/gemm_report.h). This file parses the options and prints a row
// per shape.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/range_checks.h"
#include "experiment/gemm.h"
#include "experiment/gemm_report.h"
#include "experiment/report.h"

namespace b3::cli {

namespace {

struct GemmArgs {
  experiment::GemmConfig config;
  std::string out = "gemm-results";
};

void print_row(const experiment::GemmRow& row, const experiment::GemmPlan& plan) {
  std::printf("%6lld %6lld %6lld %5s %5s %5s %22s %12.2f %10.3f\n", static_cast<long long>(row.m),
              static_cast<long long>(row.n), static_cast<long long>(row.k),
              experiment::alignment_label(row.m).c_str(),
              experiment::alignment_label(row.n).c_str(),
              experiment::alignment_label(row.k).c_str(),
              report::format_mean_std(experiment::scaled_flops(row, plan), 2).c_str(),
              row.seconds_per_call * 1e6, row.worst_error_ratio);
  std::fflush(stdout);
}

void run_gemm_command(const GemmArgs& args) {
  const experiment::GemmPlan plan = experiment::plan_gemm(args.config);
  std::printf(
      "b3 gemm: C = A B^T through linear(), %s, %s; each shape checked against a "
      "double-precision reference, then timed %lld times (>= %.3g s each)\n",
      plan.device_text.c_str(), plan.dtype_text.c_str(),
      static_cast<long long>(plan.config.repeats), plan.config.min_seconds);
  std::printf("%6s %6s %6s %5s %5s %5s %22s %12s %10s\n", "M", "N", "K", "M", "N", "K",
              (plan.unit_name + " mean ± std").c_str(), "us per call", "err/bound");
  const std::vector<experiment::GemmRow> rows =
      experiment::run_gemm(plan, [&](const experiment::GemmRow& row) { print_row(row, plan); });
  std::filesystem::create_directories(args.out);
  const plot::PlotFiles files = experiment::write_gemm_report(args.out, plan, rows);
  if (!files.rendered) std::printf("plot: %s\n", files.note.c_str());
  std::printf("wrote %s/gemm.md, gemm.csv%s\n", args.out.c_str(),
              files.rendered ? ", gemm.png" : "");
}

}  // namespace

void register_gemm_command(CLI::App& app) {
  auto args = std::make_shared<GemmArgs>();
  experiment::GemmConfig& c = args->config;
  CLI::App* cmd = app.add_subcommand(
      "gemm", "GEMM FLOP/s as M, N, K sweep around multiples of 8 and 64 (checked, then timed)");
  cmd->add_option("--device", c.device, "cpu (Eigen, f32) or cuda (cuBLAS, f16)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--sizes", c.sizes, "sizes: list and/or ranges, e.g. 120-136,504-520")
      ->check(CLI::Validator([](std::string& s) { return report::size_list_problem(s); }, "LIST",
                             "size list"))
      ->capture_default_str();
  cmd->add_option("--vary", c.vary, "mnk: M = N = K = size; m, n or k: only that one")
      ->check(CLI::IsMember({"mnk", "m", "n", "k"}))
      ->capture_default_str();
  cmd->add_option("--fixed", c.fixed, "the dimensions not varied (with --vary m|n|k)")
      ->check(between(1, 65536))
      ->capture_default_str();
  cmd->add_option("--min-seconds", c.min_seconds, "minimum length of one timed repeat")
      ->check(between(1e-6, 60.0))
      ->capture_default_str();
  cmd->add_option("--repeats", c.repeats, "timed repeats per shape")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->add_option("--out", args->out, "directory for gemm.md, gemm.csv, gemm.png")
      ->capture_default_str();
  cmd->callback([args] { run_gemm_command(*args); });
}

}  // namespace b3::cli
