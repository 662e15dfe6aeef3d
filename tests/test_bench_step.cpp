// `b3 bench-step` on the CPU as a user runs it: the figures line, and the
// soak mode (--report-every) that prints memory every N steps and its growth;
// `b3 bench-infer` (the eval forward) the same way.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>

namespace {

std::string run_b3(const std::string& arguments, int* status) {
  const char* build = std::getenv("B3_BUILD_DIR");
  REQUIRE_MESSAGE(build != nullptr, "B3_BUILD_DIR is not set: run this test through ctest");
  FILE* pipe = popen((std::string(build) + "/b3 " + arguments + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> chunk{};
  size_t n = 0;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0) output.append(chunk.data(), n);
  *status = pclose(pipe);
  return output;
}

}  // namespace

TEST_CASE("bench-step: --report-every prints memory every N steps and the growth at the end") {
  int status = -1;
  const std::string output = run_b3(
      "bench-step --model mobilenet_v3_small --image-size 32 --batch-size 8 --threads 1 "
      "--warmup 1 --steps 6 --report-every 3",
      &status);
  INFO(output);
  REQUIRE(status == 0);
  const std::regex report(
      R"(step +([0-9]+): [0-9.]+ img/s \(mean of the last 3\), RSS ([0-9.]+) MiB, tensors [0-9.]+ MiB in use, [0-9.]+ MiB held; [0-9]+ allocations)");
  int reports = 0;
  for (auto it = std::sregex_iterator(output.begin(), output.end(), report);
       it != std::sregex_iterator(); ++it) {
    ++reports;
    CHECK(std::stoi((*it)[1].str()) == 3 * reports);
    CHECK(std::stod((*it)[2].str()) > 10.0);  // a process holding a model has resident memory
  }
  CHECK(reports == 2);
  CHECK(output.find("growth from the first report to the last: RSS") != std::string::npos);
  CHECK(output.find("median") != std::string::npos);  // the usual figures still come
}

TEST_CASE("bench-infer: the eval forward's figures and RESULT line, and bad options refused") {
  int status = -1;
  const std::string output = run_b3(
      "bench-infer --model mobilenet_v3_small --image-size 32 --batch-size 4 --threads 1 "
      "--warmup 1 --steps 2",
      &status);
  INFO(output);
  REQUIRE(status == 0);
  const std::regex result(
      R"(RESULT framework=b3 mode=eval format=nhwc image=32 batch=4 img_per_s=([0-9.]+) peak_rss_mib=([0-9.]+) mib_per_image=(-?[0-9.]+))");
  std::smatch match;
  REQUIRE(std::regex_search(output, match, result));
  CHECK(std::stod(match[1].str()) > 0.0);
  CHECK(std::stod(match[2].str()) > 10.0);  // a process holding a model has resident memory
  CHECK(output.find("eval forward, 1 threads: median") != std::string::npos);

  const std::string bad = run_b3("bench-infer --steps 0", &status);
  CHECK(status != 0);
  CHECK(bad.find("--steps") != std::string::npos);
  const std::string bad_format = run_b3("bench-infer --format nchwc", &status);
  CHECK(status != 0);
  CHECK(bad_format.find("--format") != std::string::npos);
}
