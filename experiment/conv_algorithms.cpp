// Parsing the CUDA conv's algorithm report and finding a block's
// convolutions in it (see conv_algorithms.h).
#include "experiment/conv_algorithms.h"

#include <sstream>

#include "experiment/report.h"

namespace b3::experiment {

ConvReport parse_conv_report(const std::string& text) {
  ConvReport report;
  std::istringstream lines(text);
  std::string line, key;
  while (std::getline(lines, line)) {
    if (line.rfind("    ", 0) == 0) {
      if (key.empty()) continue;
      const std::string body = line.substr(4);
      ConvPassChoice choice;
      for (const char* pass : {"backward filter", "backward data", "forward"}) {
        if (body.rfind(pass, 0) == 0) {
          choice.pass = pass;
          break;
        }
      }
      if (choice.pass.empty()) continue;
      std::istringstream fields(body.substr(choice.pass.size()));
      fields >> choice.algorithm >> choice.math;
      report[key].push_back(choice);
    } else if (line.rfind("  ", 0) == 0 && line.size() > 2 && line[2] != ' ') {
      key = line.substr(2);
    }
  }
  return report;
}

bool uses_tensor_cores(const ConvPassChoice& c) { return c.math.rfind("TENSOR_OP", 0) == 0; }

BlockAlgorithms block_algorithms(const std::vector<ConvSite>& convs, const Shape& input,
                                 const ConvReport& conv_report) {
  BlockAlgorithms result;
  if (input.size() != 4) return result;
  int64_t height = input[2], width = input[3];
  for (const ConvSite& site : convs) {
    const Conv2dOptions& o = site.options;
    const int64_t h = site.squeeze_excite ? 1 : height, w = site.squeeze_excite ? 1 : width;
    const std::string signature = report::format(
        " x[%lld, %lld, %lld, %lld] w[%lld, %lld, %lld, %lld] stride %lld pad %lld "
        "groups %lld (",
        static_cast<long long>(input[0]), static_cast<long long>(o.in_channels),
        static_cast<long long>(h), static_cast<long long>(w),
        static_cast<long long>(o.out_channels), static_cast<long long>(o.in_channels / o.groups),
        static_cast<long long>(o.kernel_size), static_cast<long long>(o.kernel_size),
        static_cast<long long>(o.stride), static_cast<long long>(o.padding),
        static_cast<long long>(o.groups));
    if (!site.squeeze_excite) {
      height = (height + 2 * o.padding - o.kernel_size) / o.stride + 1;
      width = (width + 2 * o.padding - o.kernel_size) / o.stride + 1;
    }
    std::string text;
    for (const auto& [key, choices] : conv_report) {
      const size_t at = key.find(signature);
      if (at == std::string::npos) continue;
      std::string passes;
      for (const char* pass : {"forward", "backward data", "backward filter"}) {
        std::string algorithm = "-";
        for (const ConvPassChoice& c : choices) {
          if (c.pass != pass) continue;
          algorithm = c.algorithm;
          ++result.passes;
          if (uses_tensor_cores(c)) ++result.tensor_core_passes;
        }
        passes += (passes.empty() ? "" : "/") + algorithm;
      }
      // Name the layout when one convolution appears under several keys.
      text += (text.empty() ? "" : ", ") + key.substr(0, at) + ": " + passes;
    }
    if (text.empty()) text = "(not in the report)";
    result.algorithms += (result.algorithms.empty() ? "" : " + ") + text;
  }
  return result;
}

}  // namespace b3::experiment
