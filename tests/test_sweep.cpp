// End-to-end tests of the benchmark commands, run as the user runs them:
// build/b3 (found through $B3_BUILD_DIR, which CTest sets) in a child process.
//
//   b3 sweep --device cpu --data synthetic --image-size 32 --batch-sizes 7,8,9
//            --repeats 2 --steps 5 --out <dir>
// must write results.md, results.csv, results.json and results.png with the
// mean and standard deviation per batch size; bad arguments must fail with a
// clear message, a non-zero exit and no results; the other commands (suggest,
// maxbatch, gemm, layout, profile) run on small sizes; beside PyTorch when
// /usr/bin/python3 has torch (else that case is skipped, exit 77).
//
// The children run with OMP_NUM_THREADS=1: nothing here checks a timing, and
// under `ctest -j` other tests share the cores, where spinning OpenMP threads
// would make a run many times slower.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tests/support/files.h"
#include "tests/support/python.h"

namespace {

using b3::test::lines_of;
using b3::test::read_text;
using b3::test::Scratch;
using b3::test::split_csv;

namespace fs = std::filesystem;

fs::path build_dir() {
  const char* build = std::getenv("B3_BUILD_DIR");
  return build != nullptr && *build != '\0' ? fs::path(build)
                                            : fs::read_symlink("/proc/self/exe").parent_path();
}

fs::path source_root() { return fs::path(__FILE__).parent_path().parent_path(); }

struct Run {
  int status = -1;
  std::string output;  // stdout and stderr
};

// Runs `<env> build/b3 <args>`, capturing its output in the scratch folder.
Run run_b3(const std::string& args, const Scratch& scratch, const std::string& env = "") {
  const fs::path b3 = build_dir() / "b3";
  if (!fs::exists(b3)) throw std::runtime_error(b3.string() + " does not exist: build target b3");
  const std::string log = scratch / "b3-output.txt";
  Run run;
  run.status = b3::test::run_command("OMP_NUM_THREADS=1 " + env + " " + b3.string() + " " + args +
                                     " >" + log + " 2>&1");
  run.output = read_text(log);
  return run;
}

bool gnuplot_on_path() { return b3::test::run_command("command -v gnuplot >/dev/null 2>&1") == 0; }

}  // namespace

TEST_CASE("b3 sweep on the CPU writes results.md, .csv, .json and a PNG with mean and std") {
  Scratch scratch("b3-sweep");
  const std::string out = scratch / "out";
  const Run run = run_b3(
      "sweep --device cpu --data synthetic --image-size 32 --batch-sizes 7,8,9 "
      "--repeats 2 --steps 5 --out " +
          out,
      scratch);
  INFO(run.output);
  // REQUIRE throughout: a failure stops here, before the skip at the end could hide it.
  REQUIRE(run.status == 0);

  // results.json: config, 6 runs in round-robin order, a summary row per batch size.
  nlohmann::json json;
  REQUIRE_NOTHROW(json = nlohmann::json::parse(read_text(fs::path(out) / "results.json")));
  REQUIRE(json["schema"] == "b3-sweep/1");
  REQUIRE(json["config"]["device"] == "cpu");
  REQUIRE(json["config"]["dtype"] == "f32");
  REQUIRE(json["config"]["layout"] == "nhwc");
  REQUIRE(json["config"]["repeats"] == 2);
  REQUIRE(json["config"]["steps"] == 5);
  const nlohmann::json& runs = json["runs"];
  REQUIRE(runs.size() == 6);
  const int64_t expected_batch[] = {7, 8, 9, 7, 8, 9};
  for (size_t i = 0; i < 6; ++i) {
    CAPTURE(i);
    REQUIRE(runs[i]["order"] == i + 1);
    REQUIRE(runs[i]["batch_size"] == expected_batch[i]);  // interleaved, not back to back
    REQUIRE(runs[i]["repeat"] == (i < 3 ? 1 : 2));
    REQUIRE(runs[i]["steps"] == 5);
    REQUIRE(runs[i]["images"] == 5 * expected_batch[i]);
    REQUIRE(runs[i]["train_seconds"].get<double>() > 0);
    REQUIRE(runs[i]["test_accuracy"].is_number());
  }
  const nlohmann::json& summary = json["summary"];
  REQUIRE(summary.size() == 3);
  double best_relative = 0;
  for (size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    const nlohmann::json& row = summary[i];
    REQUIRE(row["batch_size"] == expected_batch[i]);
    REQUIRE(row["runs"] == 2);
    for (const char* key : {"train_seconds", "images_per_second", "inference_seconds"}) {
      CAPTURE(key);
      REQUIRE(row[key]["count"] == 2);
      REQUIRE(row[key]["mean"].get<double>() > 0);
      REQUIRE(row[key]["std"].is_number());
      REQUIRE(row[key]["std"].get<double>() >= 0);
    }
    // The mean is the mean of the two runs' values.
    const double a = runs[i]["images_per_second"].get<double>();
    const double b = runs[i + 3]["images_per_second"].get<double>();
    REQUIRE(row["images_per_second"]["mean"].get<double>() == doctest::Approx((a + b) / 2));
    REQUIRE(row["images_per_second"]["std"].get<double>() ==
            doctest::Approx(std::abs(a - b) / std::sqrt(2.0)));
    best_relative = std::max(best_relative, row["relative_throughput"].get<double>());
    REQUIRE(row["vs_best"]["verdict"].is_string());
  }
  REQUIRE(best_relative == 1.0);

  // results.csv: a header with mean and std columns, one row per batch size.
  const std::vector<std::string> csv = lines_of(read_text(fs::path(out) / "results.csv"));
  REQUIRE(csv.size() == 4);
  REQUIRE(csv[0].find("images_per_second_mean,images_per_second_std") != std::string::npos);
  REQUIRE(csv[0].find("train_seconds_mean,train_seconds_std") != std::string::npos);
  for (size_t i = 1; i < 4; ++i) {
    const std::vector<std::string> fields = split_csv(csv[i]);
    REQUIRE(fields.size() == split_csv(csv[0]).size());
    REQUIRE(std::stoll(fields[0]) == expected_batch[i - 1]);
    REQUIRE(std::stod(fields[6]) >= 0);  // images_per_second_std, a number
  }
  REQUIRE(lines_of(read_text(fs::path(out) / "runs.csv")).size() == 7);

  // results.md: the table states device, dtype, layout and runs, with mean ± std per size.
  const std::string md = read_text(fs::path(out) / "results.md");
  REQUIRE(md.find("- device: cpu") != std::string::npos);
  REQUIRE(md.find("dtype: f32; layout: nhwc") != std::string::npos);
  REQUIRE(md.find("mean ± sample std over 2 runs") != std::string::npos);
  for (const char* row : {"| 7 | other | 2 |", "| 8 | power of two | 2 |", "| 9 | other | 2 |"}) {
    CAPTURE(row);
    const size_t at = md.find(row);
    REQUIRE(at != std::string::npos);
    REQUIRE(md.substr(at, md.find('\n', at) - at).find(" ± ") != std::string::npos);
  }
  REQUIRE(md.find("Welch") != std::string::npos);  // the rule is stated
  REQUIRE(fs::exists(fs::path(out) / "results.dat"));
  REQUIRE(fs::exists(fs::path(out) / "results.gp"));

  if (!gnuplot_on_path()) {
    std::cout << "SKIPPED (the PNG check only; all else passed): gnuplot is not on PATH "
                 "(Debian: apt-get install gnuplot-nox, or scripts/setup.sh)"
              << std::endl;
    std::exit(b3::test::kSkipExitCode);
  }
  const std::string png = read_text(fs::path(out) / "results.png");
  REQUIRE(png.size() > 1000);
  REQUIRE(png.substr(1, 3) == "PNG");
  REQUIRE(md.find("![images/s against batch size](results.png)") != std::string::npos);
}

TEST_CASE("b3 sweep without gnuplot keeps the data and says how to plot it") {
  Scratch scratch("b3-sweep");
  const std::string out = scratch / "out";
  // An empty PATH: b3 itself is started by its full path, gnuplot cannot be found.
  const Run run = run_b3(
      "sweep --device cpu --data synthetic --image-size 32 --batch-sizes 8,7 "
      "--repeats 2 --steps 1 --no-test --no-validation --warmup-steps 0 "
      "--shuffle --cooldown 0.05 --out " +
          out,
      scratch, "PATH=/nonexistent");
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find("gnuplot is not installed") != std::string::npos);
  CHECK(run.output.find("gnuplot-nox") != std::string::npos);
  CHECK(run.output.find("gnuplot results.gp") != std::string::npos);
  CHECK(fs::exists(fs::path(out) / "results.dat"));
  CHECK(fs::exists(fs::path(out) / "results.gp"));
  CHECK_FALSE(fs::exists(fs::path(out) / "results.png"));
  const std::string md = read_text(fs::path(out) / "results.md");
  CHECK(md.find("Not rendered: gnuplot is not installed") != std::string::npos);
  const nlohmann::json json = nlohmann::json::parse(read_text(fs::path(out) / "results.json"));
  CHECK(json["config"]["order"] == "round-robin, shuffled within each round");
  CHECK(json["config"]["test"] == false);
  CHECK(json["runs"].size() == 4);
  CHECK(json["runs"][0]["test_accuracy"].is_null());
  // Summary rows come sorted by batch size whatever the order given.
  CHECK(json["summary"][0]["batch_size"] == 7);
  CHECK(json["summary"][0]["inference_seconds"]["count"] == 0);
  // Each round holds every batch size once.
  std::vector<int64_t> first_round = {json["runs"][0]["batch_size"], json["runs"][1]["batch_size"]};
  std::sort(first_round.begin(), first_round.end());
  CHECK(first_round == std::vector<int64_t>{7, 8});
}

TEST_CASE("b3 sweep without data looks for it once and gives the synthetic-data notice once") {
  Scratch scratch("b3-sweep");
  // In an empty folder (no data/cifar-10-batches-bin) with no curl or wget on
  // the PATH, so the download fails at once: four runs, one notice.
  const std::string log = scratch / "b3-output.txt";
  const int status = b3::test::run_command(
      "cd " + scratch.path.string() + " && PATH=/nonexistent OMP_NUM_THREADS=1 " +
      (build_dir() / "b3").string() +
      " sweep --device cpu --image-size 32 --batch-sizes 8,7 --repeats 2 --steps 1 --no-test "
      "--no-validation --warmup-steps 0 --cooldown 0 --out out >" +
      log + " 2>&1");
  const std::string output = read_text(log);
  INFO(output);
  REQUIRE(status == 0);
  const auto count = [&](const std::string& text) {
    size_t n = 0;
    for (size_t at = output.find(text); at != std::string::npos; at = output.find(text, at + 1))
      ++n;
    return n;
  };
  CHECK(count("USING SYNTHETIC DATA INSTEAD") == 1);
  CHECK(count("the download failed") == 1);
  const nlohmann::json json =
      nlohmann::json::parse(read_text(scratch.path / "out" / "results.json"));
  CHECK(json["runs"].size() == 4);
}

TEST_CASE("b3 sweep rejects bad arguments with clear errors and writes nothing") {
  Scratch scratch("b3-sweep");
  const std::string out = scratch / "out";
  const std::string common = "sweep --data synthetic --steps 1 --repeats 2 --out " + out + " ";
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases = {
      {"--batch-sizes 0", "sizes must be positive, got 0"},
      {"--batch-sizes 8,0,9", "sizes must be positive, got 0"},
      {"--batch-sizes ''", "the list is empty"},
      {"--batch-sizes 8,,9", "empty item"},
      {"--batch-sizes 8,eight", "'eight' is not an integer"},
      {"--batch-sizes 8,8", "8 is listed twice"},
      {"--batch-sizes 8 --repeats 0", "--repeats: must be at least 1, got 0"},
      {"--batch-sizes 8 --device tpu", "--device: tpu not in {cpu,cuda}"},
      {"--batch-sizes 8,20000", "batch size 20000 cannot fit"},
      {"--batch-sizes 101 --train-limit 100",
       "batch size 101 cannot fit: this run has only 100 training images"},
      {"--batch-sizes 8 --epochs 2", "excludes --steps"},
      {"--batch-sizes 8 --compare " + scratch / "missing.json", "does not exist"},
      // Out-of-range numbers in plain words, not CLI11's raw double bounds.
      {"--batch-sizes 8 --lr -3", "--lr: must be positive, got -3"},
      {"--batch-sizes 8 --lr 0", "--lr: must be positive, got 0"},
      {"--batch-sizes 8 --workers -1", "--workers: must be 0 or more, got -1"},
      {"--batch-sizes 8 --image-size 5000", "--image-size: must be between 8 and 4096, got 5000"},
      {"--batch-sizes 8 --lr fast", "--lr: 'fast' is not a number"},
  };
  if (b3::cuda_device_count() == 0) {
    cases.push_back({"--batch-sizes 8 --device cuda", "cuda"});
  }
  for (const Case& c : cases) {
    CAPTURE(c.args);
    const Run run = run_b3(common + c.args, scratch);
    INFO(run.output);
    CHECK(run.status != 0);
    CHECK(run.output.find(c.message) != std::string::npos);
    CHECK(run.output.find("not in range") == std::string::npos);
    CHECK_FALSE(fs::exists(fs::path(out) / "results.md"));
    CHECK_FALSE(fs::exists(fs::path(out) / "results.json"));
  }
}

TEST_CASE("b3 suggest applies Coulom's rule with --sm and says when the SM count is unknown") {
  Scratch scratch("b3-sweep");
  // A minimal sweep result, as b3 sweep writes it.
  const std::string results = scratch / "results.json";
  std::ofstream(results) << R"({"schema": "b3-sweep/1", "tool": "b3",
    "config": {"device_name": "test", "dtype": "f32", "layout": "nhwc", "image_size": 224,
               "repeats": 2},
    "summary": [{"batch_size": 17, "images_per_second": {"mean": 90.0}},
                {"batch_size": 26, "images_per_second": {"mean": 110.0}},
                {"batch_size": 30, "images_per_second": {"mean": 100.0}}]})";
  const Run run = run_b3("suggest --sm 80 --max-batch 40 --results " + results, scratch);
  INFO(run.output);
  REQUIRE(run.status == 0);
  // int(n * 16384 * 80 / 150528): 8, 17, 26, 34 for n = 1..4.
  CHECK(run.output.find("SM count: 80 (--sm)") != std::string::npos);
  for (const char* row : {"   1        8", "   2       17", "   3       26", "   4       34"}) {
    CAPTURE(row);
    CHECK(run.output.find(row) != std::string::npos);
  }
  CHECK(run.output.find("   5       43") == std::string::npos);  // above --max-batch
  CHECK(run.output.find("measured best: batch 26 at 110.0 images/s; nearest rule value: 26") !=
        std::string::npos);

  if (b3::cuda_device_count() == 0) {
    const Run unknown = run_b3("suggest", scratch);
    INFO(unknown.output);
    CHECK(unknown.status == 0);
    // Without a driver: unknown; on a GPU machine built without CUDA, the driver answers.
    CHECK((unknown.output.find("SM count unknown") != std::string::npos ||
           unknown.output.find("SMs, compute capability") != std::string::npos));
  }
  const Run bad = run_b3("suggest --sm 0", scratch);
  CHECK(bad.status != 0);
  CHECK(bad.output.find("--sm") != std::string::npos);
}

TEST_CASE("b3 maxbatch explains that it needs a GPU") {
  Scratch scratch("b3-sweep");
  const Run run = run_b3("maxbatch --device cpu", scratch);
  INFO(run.output);
  CHECK(run.status == 1);
  CHECK(run.output.find("b3 maxbatch needs a GPU") != std::string::npos);
  if (!b3::built_with_cuda()) {
    const Run cuda = run_b3("maxbatch", scratch);
    CHECK(cuda.status == 1);
    CHECK(cuda.output.find("built without CUDA") != std::string::npos);
  }
}

TEST_CASE("b3 gemm checks each shape against a reference, then writes a table and a plot") {
  Scratch scratch("b3-sweep");
  const std::string out = scratch / "gemm";
  const Run run =
      run_b3("gemm --sizes 7-9,16 --repeats 2 --min-seconds 0.001 --out " + out, scratch);
  INFO(run.output);
  REQUIRE(run.status == 0);
  const std::vector<std::string> csv = lines_of(read_text(fs::path(out) / "gemm.csv"));
  REQUIRE(csv.size() == 5);
  for (size_t i = 1; i < csv.size(); ++i) {
    const std::vector<std::string> f = split_csv(csv[i]);
    CHECK(std::stod(f[3]) > 0);     // FLOP/s
    CHECK(std::stod(f[7]) <= 1.0);  // error / bound
  }
  CHECK(read_text(fs::path(out) / "gemm.md").find("| 16 | 16 | 16 |") != std::string::npos);
  const Run vary = run_b3(
      "gemm --sizes 9 --vary k --fixed 5 --repeats 1 --min-seconds 0.001 "
      "--out " +
          out,
      scratch);
  INFO(vary.output);
  CHECK(vary.status == 0);
  CHECK(lines_of(read_text(fs::path(out) / "gemm.csv"))[1].rfind("5,5,9,", 0) == 0);
  const Run bad = run_b3("gemm --sizes 0", scratch);
  CHECK(bad.status != 0);
  CHECK(bad.output.find("positive") != std::string::npos);
}

TEST_CASE("b3 layout times every variant and writes a table and a plot") {
  Scratch scratch("b3-sweep");
  const std::string out = scratch / "layout";
  const Run run = run_b3(
      "layout --batch-size 3 --image-size 16 --steps 1 --warmup 0 --repeats 2 "
      "--out " +
          out,
      scratch);
  INFO(run.output);
  REQUIRE(run.status == 0);
  const std::string md = read_text(fs::path(out) / "layout.md");
  for (const char* variant : {"| baseline | nhwc | 8 | 3 | aligned |", "| nchw | nchw | 8 |",
                              "| channels / 1 | nhwc | 1 |", "| channels / 16 | nhwc | 16 |",
                              "| batch padded to x8 | nhwc | 8 | 8 | aligned |",
                              "| misaligned | nhwc | 8 | 3 | misaligned |"}) {
    CAPTURE(variant);
    CHECK(md.find(variant) != std::string::npos);
  }
  CHECK(lines_of(read_text(fs::path(out) / "layout.csv")).size() == 7);
  const Run bad = run_b3("layout --misalign-bytes 64", scratch);
  CHECK(bad.status != 0);
  CHECK(bad.output.find("--misalign-bytes must lie in [1, 63]") != std::string::npos);
}

TEST_CASE("b3 profile gives per-layer forward and backward times side by side") {
  Scratch scratch("b3-sweep");
  const std::string out = scratch / "profile";
  const Run run = run_b3(
      "profile --batch-sizes 3,4 --image-size 16 --repeats 1 --warmup 0 --out " + out, scratch);
  INFO(run.output);
  REQUIRE(run.status == 0);
  const std::string md = read_text(fs::path(out) / "profile.md");
  CHECK(md.find("| fwd ms @3 | fwd ms @4 | bwd ms @3 | bwd ms @4 |") != std::string::npos);
  for (const char* layer : {"| features.0 |", "| features.16 |", "| avgpool |", "| classifier.3 |",
                            "| loss |", "n/a (CPU)"}) {
    CAPTURE(layer);
    CHECK(md.find(layer) != std::string::npos);
  }
  // 17 features + avgpool + 4 classifier + loss, at 2 batch sizes.
  CHECK(lines_of(read_text(fs::path(out) / "profile.csv")).size() == 1 + 23 * 2);
}

TEST_CASE("layout, maxbatch and profile take --amp/--no-amp and name them for --precision") {
  Scratch scratch("b3-sweep");
  for (const char* command : {"layout", "maxbatch", "profile"}) {
    CAPTURE(command);
    const Run help = run_b3(std::string(command) + " --help", scratch);
    CHECK(help.status == 0);
    CHECK(help.output.find("--amp") != std::string::npos);
    CHECK(help.output.find("--precision") == std::string::npos);
    for (const char* given :
         {" --precision f32", " --precision mixed", " --precision", " --precision=f32"}) {
      CAPTURE(given);
      const Run run = run_b3(std::string(command) + given, scratch);
      INFO(run.output);
      CHECK(run.status != 0);
      CHECK(run.output.find(std::string("b3 ") + command +
                            ": --precision was replaced by --amp (f16 mixed precision, the "
                            "default on cuda) and --no-amp (f32)") != std::string::npos);
      CHECK(run.output.find("not expected") == std::string::npos);
    }
  }
  // --amp on the CPU is an error that names --device cuda, as train and sweep have it.
  for (const char* command : {"layout --device cpu --amp", "profile --device cpu --amp"}) {
    CAPTURE(command);
    const Run run = run_b3(command, scratch);
    INFO(run.output);
    CHECK(run.status != 0);
    CHECK(run.output.find("--amp (f16 mixed precision) needs --device cuda") != std::string::npos);
  }
}

TEST_CASE("pytorch_b3.py writes the same schema and b3 sweep --compare reads it") {
  b3::test::skip_unless_torch_available();
  Scratch scratch("b3-sweep");
  const std::string torch_out = scratch / "torch";
  const std::string script = (source_root() / "experiment" / "pytorch_b3.py").string();
  const std::string log = scratch / "python-output.txt";
  const int status = b3::test::run_command(
      "OMP_NUM_THREADS=1 " + b3::test::python_executable() + " " + script +
      " --device cpu --data synthetic --image-size 32 --batch-sizes 7,8 --repeats 2 --steps 2 "
      "--warmup-steps 0 --test-limit 64 --validation-size 64 --bn-recalibrate 2 --threads 1 "
      "--out " +
      torch_out + " >" + log + " 2>&1");
  INFO(read_text(log));
  REQUIRE(status == 0);
  const std::string out = scratch / "b3";
  const Run run = run_b3(
      "sweep --device cpu --data synthetic --image-size 32 --batch-sizes 7,8 "
      "--repeats 2 --steps 2 --warmup-steps 0 --test-limit 64 "
      "--validation-size 64 --bn-recalibrate 2 --out " +
          out + " --compare " + torch_out + "/results.json",
      scratch);
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find("| batch | b3 images/s | pytorch images/s | b3 / pytorch |") !=
        std::string::npos);
  CHECK(read_text(fs::path(out) / "results.md").find("## Beside the other tool") !=
        std::string::npos);

  // Same schema: every key b3 writes, pytorch_b3.py writes too.
  const nlohmann::json ours = nlohmann::json::parse(read_text(fs::path(out) / "results.json"));
  const nlohmann::json theirs =
      nlohmann::json::parse(read_text(fs::path(torch_out) / "results.json"));
  CHECK(theirs["tool"] == "pytorch");
  for (const char* section : {"", "config", "runs", "summary"}) {
    CAPTURE(section);
    const nlohmann::json& a =
        *section ? (ours[section].is_array() ? ours[section][0] : ours[section]) : ours;
    const nlohmann::json& b =
        *section ? (theirs[section].is_array() ? theirs[section][0] : theirs[section]) : theirs;
    for (const auto& item : a.items()) {
      // Not a structured binding: CAPTURE's lambda cannot take one (clang 14).
      const std::string& key = item.key();
      CAPTURE(key);
      CHECK(b.contains(key));
    }
  }
  const std::vector<std::string> our_csv = lines_of(read_text(fs::path(out) / "results.csv"));
  const std::vector<std::string> their_csv =
      lines_of(read_text(fs::path(torch_out) / "results.csv"));
  CHECK(our_csv[0] == their_csv[0]);
  CHECK(lines_of(read_text(fs::path(out) / "runs.csv"))[0] ==
        lines_of(read_text(fs::path(torch_out) / "runs.csv"))[0]);
  CHECK(their_csv.size() == 3);
  // Both recalibrated BatchNorm and tested again (accuracies in [0, 1]).
  for (const nlohmann::json* result : {&ours, &theirs}) {
    const nlohmann::json& recalibrated = (*result)["runs"][0]["test_accuracy_recalibrated"];
    REQUIRE(recalibrated.is_number());
    CHECK(recalibrated.get<double>() >= 0.0);
    CHECK(recalibrated.get<double>() <= 1.0);
    CHECK((*result)["config"]["bn_recalibrate_batches"] == 2);
  }
}
