// `b3 profile --batch-sizes 127,128`: where the time of a training step goes,
// layer by layer, at each batch size side by side: the explanation the seed
// experiment lacked of why (or why not) a batch size matters.
//
// A "layer" is a top-level block of MobileNetV3: features.0 .. features.16,
// avgpool (with the flatten), classifier.0 .. classifier.3, and the loss.
// Forward: the blocks run one by one, each timed. Each block after the first
// gets its input as a fresh leaf (the previous output, detached, requiring
// grad), so its backward can be run and timed on its own.
// Backward: loss.backward() first, then, from the last block to the first,
// output_i.backward(gradient that reached input_{i+1}): every block's backward
// sees the real upstream gradient, and the sum is one whole backward pass.
// (Each cut adds one gradient copy into the leaf: small next to a block, and
// the table also shows an uncut training step for comparison: train_step()
// of train/trainer.h, the step training runs, with its Adam update.)
// Times are the median over --repeats profiled steps after --warmup ones.
// On the CPU the convolution column names the CPU kernel path
// (conv2d_cpu.h); the cuDNN columns are "n/a (CPU)".
// On a GPU (--device cuda) the model moves to the device (channels_last
// weights for NHWC) and runs in mixed precision by default (f16 autocast over
// each forward piece and the loss, the backward seeded with a GradScaler's
// scale_seed(), the seed train_step() uses, so gradients have a real step's
// magnitudes; --no-amp for plain f32). Each piece is timed on the host clock between two
// synchronizations of the compute stream, so it includes the piece's kernel
// launch overhead, as eager training pays it. After the last batch size the
// cuDNN algorithm cache (cuda::conv_algorithm_report) is parsed: each block's
// convolutions are found in it by their geometry (batch, channels, spatial
// size, kernel, stride, padding, groups), giving the forward / backward-data
// / backward-filter algorithm per convolution and how many of those passes
// run with Tensor Core math; the full report is written beside the table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiment/gpu_timing.h"
#include "experiment/plot.h"
#include "experiment/report.h"
#include "layers/conv2d.h"
#include "layers/conv2d_cuda.h"
#include "layers/loss.h"
#include "layers/squeeze_excite.h"
#include "models/mobilenet_v3.h"
#include "optim/grad_scaler.h"
#include "tensor/autocast.h"
#include "tensor/random.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace b3::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct ProfileArgs {
  std::string device = "cpu";
  std::string model = "mobilenet_v3_large";
  std::string batch_sizes = "127,128";
  int64_t image_size = 0;  // 0: 224 on a GPU, 32 on the CPU
  int64_t repeats = 5;
  int64_t warmup = 1;
  std::string format = "nhwc";
  std::string out = "profile-results";
  std::optional<bool> amp;  // unset: on for cuda, off for cpu
};

// A convolution inside a block, as the GPU report needs it: its options, and
// whether it sits in a squeeze-excitation (its input is then [N, C, 1, 1]).
struct ConvSite {
  Conv2dOptions options;
  bool squeeze_excite = false;
};

// One top-level block: how to run it.
struct Block {
  std::string name;
  std::string description;
  std::function<Tensor(const Tensor&)> run;
  std::string cpu_kernels;      // the CPU convolution paths inside, in order
  std::vector<ConvSite> convs;  // the convolutions inside, in order of execution
};

struct BlockTimes {
  std::vector<double> forward, backward;  // seconds, one per repeat
  Shape output_shape;
};

struct BatchProfile {
  int64_t batch = 0;
  std::vector<BlockTimes> blocks;
  std::vector<double> whole_step;  // uncut train_step: forward, loss, backward, update
};

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return report::kNaN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The CPU kernel conv2d_cpu.cpp picks for one convolution.
std::string conv_kernel(const Conv2dOptions& o) {
  if (o.groups == o.in_channels && o.groups == o.out_channels) return "depthwise";
  if (o.kernel_size == 1 && o.stride == 1 && o.padding == 0) return "1x1 gemm";
  return "im2col gemm";
}

void collect_conv_kernels(const Module& m, std::vector<std::string>& out) {
  if (const auto* conv = dynamic_cast<const Conv2d*>(&m))
    out.push_back(conv_kernel(conv->options()));
  for (const auto& [name, child] : m.named_children()) collect_conv_kernels(*child, out);
}

std::string conv_kernels_of(const Module& m) {
  std::vector<std::string> kernels;
  collect_conv_kernels(m, kernels);
  if (kernels.empty()) return "-";
  std::string text;
  for (const std::string& k : kernels) text += (text.empty() ? "" : " + ") + k;
  return text;
}

void collect_convs(const Module& m, bool in_squeeze_excite, std::vector<ConvSite>& out) {
  if (const auto* conv = dynamic_cast<const Conv2d*>(&m))
    out.push_back({conv->options(), in_squeeze_excite});
  const bool squeeze_excite =
      in_squeeze_excite || dynamic_cast<const SqueezeExcitation*>(&m) != nullptr;
  for (const auto& [name, child] : m.named_children()) collect_convs(*child, squeeze_excite, out);
}

std::vector<Block> blocks_of(MobileNetV3& model) {
  std::vector<Block> blocks;
  for (const auto& [name, layer] : model.features->named_children()) {
    Module* m = layer.get();
    std::vector<ConvSite> convs;
    collect_convs(*m, false, convs);
    blocks.push_back({"features." + name, m->describe(),
                      [m](const Tensor& x) { return m->forward(x); }, conv_kernels_of(*m), convs});
  }
  Module* pool = model.avgpool.get();
  blocks.push_back({"avgpool",
                    pool->describe() + " + flatten",
                    [pool](const Tensor& x) { return pool->forward(x).flatten(1); },
                    "-",
                    {}});
  for (const auto& [name, layer] : model.classifier->named_children()) {
    Module* m = layer.get();
    blocks.push_back({"classifier." + name,
                      m->describe(),
                      [m](const Tensor& x) { return m->forward(x); },
                      "-",
                      {}});
  }
  return blocks;
}

// How a profiled step runs: on which device (a GPU is synchronized around
// every timed piece; experiment::synchronize does nothing on the CPU) and
// whether the forward pieces run under f16 autocast with a loss-scaled
// backward.
struct StepSetup {
  Device device;
  bool amp = false;
};

// f16 autocast while alive, when the step runs in mixed precision.
class MaybeAutocast {
 public:
  explicit MaybeAutocast(bool on) {
    if (on) guard_.emplace(DType::f16);
  }

 private:
  std::optional<AutocastGuard> guard_;
};

// The seed of the loss's backward: none (1) in f32; in mixed precision the
// scaler's current scale, as train_step() seeds it, so the f16 gradients
// have the magnitudes a loss-scaled training step gives them.
Tensor loss_seed(const Tensor& loss, const GradScaler* scaler) {
  if (scaler == nullptr) return Tensor();
  return scaler->scale_seed().to(loss.dtype());
}

// One profiled training step (no optimizer): returns nothing, appends times.
void profile_step(std::vector<Block>& blocks, const Tensor& images, const Tensor& labels,
                  std::vector<BlockTimes>& times, MobileNetV3& model, const Device& device,
                  const GradScaler* scaler) {
  const bool amp = scaler != nullptr;
  const size_t n = blocks.size();
  std::vector<Tensor> inputs(n + 1), outputs(n + 1);
  Tensor x = images;
  for (size_t i = 0; i < n; ++i) {
    inputs[i] = i == 0 ? x : x.detach().set_requires_grad(true);
    experiment::synchronize(device);
    const auto start = Clock::now();
    {
      MaybeAutocast autocast(amp);
      outputs[i] = blocks[i].run(inputs[i]);
    }
    experiment::synchronize(device);
    times[i].forward.push_back(since(start));
    times[i].output_shape = outputs[i].shape();
    x = outputs[i];
  }
  inputs[n] = x.detach().set_requires_grad(true);
  experiment::synchronize(device);
  auto start = Clock::now();
  {
    MaybeAutocast autocast(amp);
    outputs[n] = cross_entropy(inputs[n], labels);
  }
  experiment::synchronize(device);
  times[n].forward.push_back(since(start));
  times[n].output_shape = outputs[n].shape();

  const Tensor seed = loss_seed(outputs[n], scaler);
  experiment::synchronize(device);
  start = Clock::now();
  outputs[n].backward(seed);
  experiment::synchronize(device);
  times[n].backward.push_back(since(start));
  for (size_t i = n; i-- > 0;) {
    const Tensor upstream = inputs[i + 1].grad();
    experiment::synchronize(device);
    start = Clock::now();
    outputs[i].backward(upstream);
    experiment::synchronize(device);
    times[i].backward.push_back(since(start));
  }
  model.zero_grad();
}

// The same step uncut, as training runs it: one train_step() (forward, loss,
// backward and the Adam update) between two synchronizations.
double time_uncut_step(MobileNetV3& model, Optimizer& optimizer, const LabeledBatch& batch,
                       const Device& device, GradScaler* scaler) {
  StepOptions options;
  options.scaler = scaler;
  options.read_results = false;  // as a timed step: nothing read back
  experiment::synchronize(device);
  const auto start = Clock::now();
  train_step(model, optimizer, batch, options);
  experiment::synchronize(device);
  return since(start);
}

BatchProfile profile_batch(int64_t batch, const ProfileArgs& args, const StepSetup& setup) {
  const Device& device = setup.device;
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = 10;
  MobileNetV3 model(options);
  const MemoryFormat format = parse_memory_format(args.format);
  if (device.is_cuda()) prepare_model(model, device, format);
  model.train();
  // Adam with PyTorch's default lr (1e-3), for the uncut train_step.
  const std::unique_ptr<Optimizer> optimizer = make_optimizer({"adam", 1e-3}, model);
  std::optional<GradScaler> scaler;
  if (setup.amp) scaler.emplace(device);
  GradScaler* scaler_pointer = scaler ? &*scaler : nullptr;
  std::vector<Block> blocks = blocks_of(model);
  Generator gen(0);
  LabeledBatch data;
  data.images =
      rand({batch, 3, args.image_size, args.image_size}, gen, TensorOptions().with_format(format))
          .to(device);
  data.labels = randint(10, {batch}, gen).to(device);

  BatchProfile profile;
  profile.batch = batch;
  std::vector<BlockTimes> warm(blocks.size() + 1);
  for (int64_t i = 0; i < args.warmup; ++i)
    profile_step(blocks, data.images, data.labels, warm, model, device, scaler_pointer);
  profile.blocks.resize(blocks.size() + 1);
  for (int64_t r = 0; r < args.repeats; ++r) {
    profile_step(blocks, data.images, data.labels, profile.blocks, model, device, scaler_pointer);
    profile.whole_step.push_back(time_uncut_step(model, *optimizer, data, device, scaler_pointer));
  }
  return profile;
}

// --- The cuDNN algorithm columns (GPU) ---

// One pass of one convolution shape in cuda::conv_algorithm_report().
struct ConvPassChoice {
  std::string pass;       // "forward", "backward data", "backward filter"
  std::string algorithm;  // cuDNN's name without its prefix, e.g. IMPLICIT_PRECOMP_GEMM
  std::string math;       // DEFAULT, TENSOR_OP, TENSOR_OP_ALLOW_CONVERSION, FMA
};
using ConvReport = std::map<std::string, std::vector<ConvPassChoice>>;  // by cache key

// Parses the report's blocks: a key line indented by two spaces
// ("  f16 NHWC x[...] w[...] stride 1 pad 1 groups 16 (benchmark, ...)"),
// then one line per pass indented by four ("    forward  ALGO  MATH  workspace ...").
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

// What one block's convolutions chose at one batch size.
struct BlockAlgorithms {
  std::string algorithms;  // per convolution "forward/backward data/backward filter", " + "
  int tensor_core_passes = 0;
  int passes = 0;
};

// The convolutions of a block whose input is `input` ([N, C, H, W]), looked
// up in the report by the geometry text the CUDA conv builds its key from
// (cuda::ConvGeometry::str(), without the dtype and layout in front).
BlockAlgorithms block_algorithms(const Block& block, const Shape& input,
                                 const ConvReport& conv_report) {
  BlockAlgorithms result;
  if (input.size() != 4) return result;
  int64_t height = input[2], width = input[3];
  for (const ConvSite& site : block.convs) {
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

// One cell for all batch sizes: the common text, or "@b: text; @b': text'".
std::string merged_cell(const std::vector<int64_t>& batch_sizes,
                        const std::vector<std::string>& cells) {
  bool same = true;
  for (const std::string& c : cells) same = same && c == cells.front();
  if (same) return cells.empty() ? "-" : cells.front();
  std::string text;
  for (size_t p = 0; p < cells.size(); ++p)
    text += (text.empty() ? "@" : "; @") + std::to_string(batch_sizes[p]) + ": " + cells[p];
  return text;
}

void run_profile(ProfileArgs args) {
  const std::vector<int64_t> batch_sizes =
      report::parse_size_list(args.batch_sizes, "--batch-sizes");
  const Device device = args.device == "cuda" ? Device::cuda(0) : Device::cpu();
  require_device_available(device, "b3 profile --device " + args.device);
  const StepSetup setup{device, resolve_amp(args.amp, device.is_cuda(), "b3 profile")};
  const std::string dtype_text = report::precision_name(setup.amp);  // "f32" on the CPU
  if (args.image_size == 0) args.image_size = device.is_cuda() ? 224 : 32;
  const std::string device_text =
      device.is_cuda() ? device.str() : "cpu (" + report::cpu_description() + ")";
  std::printf(
      "b3 profile: %s, %s, %s, %lldx%lld synthetic images, %s; median of %lld profiled "
      "steps after %lld warm-up\n",
      args.model.c_str(), args.format.c_str(), dtype_text.c_str(),
      static_cast<long long>(args.image_size), static_cast<long long>(args.image_size),
      device_text.c_str(), static_cast<long long>(args.repeats),
      static_cast<long long>(args.warmup));

  std::vector<BatchProfile> profiles;
  for (int64_t b : batch_sizes) {
    std::printf("  profiling batch %lld...\n", static_cast<long long>(b));
    std::fflush(stdout);
    profiles.push_back(profile_batch(b, args, setup));
  }
  // The cuDNN algorithms every convolution shape of the run chose.
  std::string algorithm_report;
  ConvReport conv_report;
  if (device.is_cuda()) {
    algorithm_report = cuda::conv_algorithm_report(device.index);
    conv_report = parse_conv_report(algorithm_report);
  }
  // Names and kernels from a throwaway model (the same for every batch size).
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = 10;
  MobileNetV3 model(options);
  std::vector<Block> blocks = blocks_of(model);
  blocks.push_back({"loss", "cross_entropy", nullptr, "-", {}});

  std::ostringstream md, csv;
  md << "# b3 profile: per-layer time at batch sizes " << args.batch_sizes << "\n\n"
     << "- device: " << device_text << "; dtype: " << dtype_text << "; layout: " << args.format
     << "; model " << args.model << "; " << args.image_size << "x" << args.image_size
     << " synthetic images\n"
     << "- median over " << args.repeats << " profiled steps (after " << args.warmup
     << " warm-up) per batch size; forward and backward of each top-level block timed alone\n"
     << "- per image: the time divided by the batch size; the last column compares the last "
        "batch size with the first (below 1: cheaper per image)\n";
  if (device.is_cuda()) {
    md << "- precision: " << report::precision_description(setup.amp) << "; model on the GPU"
       << (args.format == "nhwc" ? " with channels_last weights" : "")
       << "\n- each piece timed on the host clock between two synchronizations of the compute "
          "stream (its kernel launch overhead included)\n"
       << "- cuDNN algorithm: per convolution of the block, forward / backward data / backward "
          "filter, from the algorithm cache (cudnnFind, as cudnn.benchmark); Tensor Cores: the "
          "passes whose chosen math is TENSOR_OP, of all passes\n";
  }
  md << "\n";
  md << "| layer | module | output (batch " << batch_sizes.front() << ") |";
  for (int64_t b : batch_sizes) md << " fwd ms @" << b << " |";
  for (int64_t b : batch_sizes) md << " bwd ms @" << b << " |";
  md << " per-image time " << batch_sizes.back() << " / " << batch_sizes.front()
     << " | CPU conv kernels | cuDNN algorithm | Tensor Cores |\n|---|---|---|";
  for (size_t i = 0; i < 2 * batch_sizes.size(); ++i) md << "---:|";
  md << "---:|---|---|---|\n";
  csv << "layer,batch_size,forward_ms,backward_ms,repeats\n";

  std::vector<double> forward_total(profiles.size(), 0.0), backward_total(profiles.size(), 0.0);
  plot::Figure figure;
  for (size_t p = 0; p < profiles.size(); ++p) {
    static const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
    plot::Series series;
    series.title = "batch " + std::to_string(profiles[p].batch);
    series.connect = true;
    series.color = kColors[p % 5];
    series.point_type = static_cast<int>(7 + 2 * (p % 3));
    figure.series.push_back(series);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    md << "| " << blocks[i].name << " | " << blocks[i].description << " | "
       << shape_str(profiles.front().blocks[i].output_shape) << " |";
    std::vector<double> fwd, bwd;
    for (size_t p = 0; p < profiles.size(); ++p) {
      fwd.push_back(1e3 * median(profiles[p].blocks[i].forward));
      bwd.push_back(1e3 * median(profiles[p].blocks[i].backward));
      forward_total[p] += fwd.back();
      backward_total[p] += bwd.back();
      csv << blocks[i].name << "," << profiles[p].batch << "," << fwd.back() << "," << bwd.back()
          << "," << args.repeats << "\n";
      figure.series[p].x.push_back(static_cast<double>(i));
      figure.series[p].y.push_back((fwd.back() + bwd.back()) /
                                   static_cast<double>(profiles[p].batch));
    }
    for (double v : fwd) md << report::format(" %.3f |", v);
    for (double v : bwd) md << report::format(" %.3f |", v);
    const double first = (fwd.front() + bwd.front()) / static_cast<double>(batch_sizes.front());
    const double last = (fwd.back() + bwd.back()) / static_cast<double>(batch_sizes.back());
    md << report::format(" %.3f |", last / first);
    if (!device.is_cuda()) {
      md << " " << blocks[i].cpu_kernels << " | n/a (CPU) | n/a (CPU) |\n";
      continue;
    }
    std::vector<std::string> algorithm_cells, tensor_core_cells;
    for (size_t p = 0; p < profiles.size(); ++p) {
      const Shape input = i == 0 ? Shape{profiles[p].batch, 3, args.image_size, args.image_size}
                                 : profiles[p].blocks[i - 1].output_shape;
      const BlockAlgorithms a = block_algorithms(blocks[i], input, conv_report);
      algorithm_cells.push_back(a.algorithms.empty() ? "-" : a.algorithms);
      tensor_core_cells.push_back(
          a.passes == 0 ? "-" : report::format("%d of %d passes", a.tensor_core_passes, a.passes));
    }
    md << " n/a (GPU) | " << merged_cell(batch_sizes, algorithm_cells) << " | "
       << merged_cell(batch_sizes, tensor_core_cells) << " |\n";
  }
  md << "| **sum** | | |";
  for (double v : forward_total) md << report::format(" **%.2f** |", v);
  for (double v : backward_total) md << report::format(" **%.2f** |", v);
  md << report::format(
      " %.3f | | | |\n",
      (forward_total.back() + backward_total.back()) / batch_sizes.back() /
          ((forward_total.front() + backward_total.front()) / batch_sizes.front()));
  md << "\nUncut training step, train_step() with its Adam update (median ms):";
  for (const BatchProfile& p : profiles)
    md << report::format(" batch %lld: %.2f;", static_cast<long long>(p.batch),
                         1e3 * median(p.whole_step));
  md << " (the sum of the parts above should be close; the update is not among them).\n";
  if (device.is_cuda()) md << "\n```\n" << algorithm_report << "```\n";

  const std::filesystem::path dir = args.out;
  std::filesystem::create_directories(dir);
  figure.title =
      report::format("b3 profile: forward + backward ms per image, by layer | %s, %s, %s",
                     device_text.c_str(), dtype_text.c_str(), args.format.c_str());
  figure.subtitle =
      report::format("median over %lld profiled steps per batch size; %lldx%lld synthetic images",
                     static_cast<long long>(args.repeats), static_cast<long long>(args.image_size),
                     static_cast<long long>(args.image_size));
  for (size_t i = 0; i < blocks.size(); ++i) {
    figure.x_tics.push_back(static_cast<double>(i));
    figure.x_tic_labels.push_back(blocks[i].name);
  }
  figure.x_label = "top-level block";
  figure.y_label = "ms per image (forward + backward)";
  figure.y_from_zero = true;
  const plot::PlotFiles files = plot::write_plot(dir / "profile", figure);
  md << "\n"
     << (files.rendered ? "![profile](profile.png)\n" : "Plot not rendered: " + files.note + "\n");
  report::write_text_atomically(dir / "profile.md", md.str());
  report::write_text_atomically(dir / "profile.csv", csv.str());
  if (device.is_cuda())
    report::write_text_atomically(dir / "cudnn_algorithms.txt", algorithm_report);
  std::printf("\n%s\n", md.str().c_str());
  if (!files.rendered) std::printf("plot: %s\n", files.note.c_str());
  std::printf("wrote %s/profile.md, profile.csv%s%s\n", dir.string().c_str(),
              files.rendered ? ", profile.png" : "",
              device.is_cuda() ? ", cudnn_algorithms.txt" : "");
}

}  // namespace

void register_profile_command(CLI::App& app) {
  auto args = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile", "per-layer forward and backward time at each batch size, side by side");
  cmd->add_option("--device", args->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small"}))
      ->capture_default_str();
  cmd->add_option("--batch-sizes", args->batch_sizes, "batch sizes to compare, e.g. 127,128")
      ->check(CLI::Validator([](std::string& s) { return report::size_list_problem(s); }, "LIST",
                             "batch size list"))
      ->capture_default_str();
  cmd->add_option("--image-size", args->image_size, "image height and width (224; CPU: 32)")
      ->check(CLI::Range(int64_t{8}, int64_t{4096}));
  cmd->add_option("--repeats", args->repeats, "profiled steps per batch size (median)")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "unrecorded steps first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--format", args->format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}))
      ->capture_default_str();
  const AmpOption amp(cmd);
  cmd->add_option("--out", args->out, "directory for profile.md, profile.csv, profile.png")
      ->capture_default_str();
  cmd->callback([args, amp] {
    args->amp = amp.choice();
    run_profile(*args);
  });
}

}  // namespace b3::cli
