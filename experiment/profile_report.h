// The per-layer profile's table, CSV and plot (experiment/profile.h): per
// block the median forward and backward milliseconds at every batch size,
// the per-image time of the last batch size over the first, the CPU
// convolution kernels or the cuDNN algorithms and Tensor Core passes, the
// sums, and the uncut train_step for comparison. Files profile.md,
// profile.csv, profile.png (with profile.dat and profile.gp) and, on a GPU,
// cudnn_algorithms.txt.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "experiment/plot.h"
#include "experiment/profile.h"

namespace b3::experiment {

// One cell for all batch sizes: the common text, or "@b: text; @b': text'".
std::string merged_cell(const std::vector<int64_t>& batch_sizes,
                        const std::vector<std::string>& cells);

std::string profile_markdown(const ProfilePlan& plan, const ProfileResult& result,
                             const plot::PlotFiles& plot);
std::string profile_csv(const ProfilePlan& plan, const ProfileResult& result);
// Forward + backward ms per image, by block, one line per batch size.
plot::Figure profile_figure(const ProfilePlan& plan, const ProfileResult& result);

struct ProfileFiles {
  std::string markdown;
  plot::PlotFiles plot;
};

// Writes profile.md, profile.csv, the plot and (GPU) cudnn_algorithms.txt
// into `dir` (which must exist).
ProfileFiles write_profile_report(const std::filesystem::path& dir, const ProfilePlan& plan,
                                  const ProfileResult& result);

}  // namespace b3::experiment
