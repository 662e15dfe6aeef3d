// Convolutions through cuDNN's convolution API (layers/conv2d_cuda.h).
//
// Each call builds its cuDNN descriptors (host-only work, microseconds),
// looks its algorithm up in the device's cache (choosing it on the first
// call of a shape), takes a workspace from the caching allocator for the
// call's stream, and queues the cuDNN call. The cuDNN handle is used under
// the context's library lock, so calls from several threads are safe.
//
// Built only with the CUDA backend (CMake leaves layers/*_cuda.cpp out of a
// CPU-only build).
#include "layers/conv2d_cuda.h"

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cudnn_check.h"

namespace b3::cuda {

namespace {

// ------------------------------------------------------------ checking --

int checked_int(int64_t value, const char* what, const Conv2dGeometry& g, const char* op) {
  if (value < 0 || value > INT_MAX) {
    throw std::invalid_argument(std::string(op) + ": " + what + " = " + std::to_string(value) +
                                " is outside cuDNN's int range, in " + g.str());
  }
  return static_cast<int>(value);
}

void check_geometry(const Conv2dGeometry& g, const char* op) {
  const auto fail = [&](const std::string& why) {
    throw std::invalid_argument(std::string(op) + ": " + why + ", in " + g.str());
  };
  if (g.dtype != DType::f32 && g.dtype != DType::f16) {
    fail(std::string("dtype ") + dtype_name(g.dtype) + " is not supported (f32 or f16)");
  }
  if (g.batch < 0) fail("negative batch");
  if (g.in_channels < 1 || g.out_channels < 1) fail("channels must be positive");
  if (g.in_height < 1 || g.in_width < 1) fail("the input plane must not be empty");
  if (g.kernel < 1 || g.stride < 1 || g.padding < 0) {
    fail("kernel and stride must be positive, padding non-negative");
  }
  if (g.groups < 1 || g.in_channels % g.groups != 0 || g.out_channels % g.groups != 0) {
    fail("groups must divide both channel counts");
  }
  if (g.in_height + 2 * g.padding < g.kernel || g.in_width + 2 * g.padding < g.kernel) {
    fail("the kernel is larger than the padded input");
  }
  if (g.out_height != (g.in_height + 2 * g.padding - g.kernel) / g.stride + 1 ||
      g.out_width != (g.in_width + 2 * g.padding - g.kernel) / g.stride + 1) {
    fail("the output size " + std::to_string(g.out_height) + "x" + std::to_string(g.out_width) +
         " does not follow from the input, kernel, stride and padding (use conv2d_geometry())");
  }
  // cuDNN's legacy API takes int sizes and strides: every tensor must have
  // fewer than 2^31 elements.
  const int64_t x_numel = g.batch * g.in_channels * g.in_height * g.in_width;
  const int64_t y_numel = g.batch * g.out_channels * g.out_height * g.out_width;
  const int64_t w_numel = g.out_channels * (g.in_channels / g.groups) * g.kernel * g.kernel;
  for (int64_t numel : {x_numel, y_numel, w_numel}) checked_int(numel, "elements", g, op);
}

// --------------------------------------------------------- descriptors --

cudnnDataType_t data_type(DType dtype) {
  return dtype == DType::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
}

cudnnTensorFormat_t tensor_format(MemoryFormat format) {
  return format == MemoryFormat::channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
}

// The math type a search starts from: Tensor Cores for f16; FMA only for f32,
// so that no TF32 rounding sneaks into the f32 path.
cudnnMathType_t initial_math(DType dtype) {
  return dtype == DType::f16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

class TensorDescriptor {
 public:
  TensorDescriptor() { B3_CUDNN_CHECK(cudnnCreateTensorDescriptor(&handle_)); }
  ~TensorDescriptor() { cudnnDestroyTensorDescriptor(handle_); }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return handle_; }

 private:
  cudnnTensorDescriptor_t handle_ = nullptr;
};

class FilterDescriptor {
 public:
  FilterDescriptor() { B3_CUDNN_CHECK(cudnnCreateFilterDescriptor(&handle_)); }
  ~FilterDescriptor() { cudnnDestroyFilterDescriptor(handle_); }
  FilterDescriptor(const FilterDescriptor&) = delete;
  FilterDescriptor& operator=(const FilterDescriptor&) = delete;
  cudnnFilterDescriptor_t get() const { return handle_; }

 private:
  cudnnFilterDescriptor_t handle_ = nullptr;
};

class ConvolutionDescriptor {
 public:
  ConvolutionDescriptor() { B3_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&handle_)); }
  ~ConvolutionDescriptor() { cudnnDestroyConvolutionDescriptor(handle_); }
  ConvolutionDescriptor(const ConvolutionDescriptor&) = delete;
  ConvolutionDescriptor& operator=(const ConvolutionDescriptor&) = delete;
  cudnnConvolutionDescriptor_t get() const { return handle_; }

 private:
  cudnnConvolutionDescriptor_t handle_ = nullptr;
};

// Every descriptor of one convolution: x and y (4-D, in the geometry's
// format), w (filter, same format), the bias ([1, Cout, 1, 1]) and the
// convolution (padding, stride, groups, f32 compute).
struct Descriptors {
  TensorDescriptor x;
  TensorDescriptor y;
  TensorDescriptor bias;
  FilterDescriptor w;
  ConvolutionDescriptor conv;

  Descriptors(const Conv2dGeometry& g, const char* op) {
    const cudnnDataType_t type = data_type(g.dtype);
    const cudnnTensorFormat_t format = tensor_format(g.format);
    const int n = checked_int(g.batch, "batch", g, op);
    const int cin = checked_int(g.in_channels, "in_channels", g, op);
    const int cout = checked_int(g.out_channels, "out_channels", g, op);
    const int k = checked_int(g.kernel, "kernel", g, op);
    const int pad = checked_int(g.padding, "padding", g, op);
    const int stride = checked_int(g.stride, "stride", g, op);
    const int groups = checked_int(g.groups, "groups", g, op);
    const int ho = checked_int(g.out_height, "out_height", g, op);
    const int wo = checked_int(g.out_width, "out_width", g, op);
    B3_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x.get(), format, type, n, cin,
                                              checked_int(g.in_height, "in_height", g, op),
                                              checked_int(g.in_width, "in_width", g, op)));
    B3_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w.get(), type, format, cout, cin / groups, k, k));
    B3_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.get(), pad, pad, stride, stride, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    B3_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.get(), groups));
    B3_CUDNN_CHECK(cudnnSetConvolutionMathType(conv.get(), initial_math(g.dtype)));
    int out_n = 0, out_c = 0, out_h = 0, out_w = 0;
    B3_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv.get(), x.get(), w.get(), &out_n,
                                                         &out_c, &out_h, &out_w));
    if (out_n != n || out_c != cout || out_h != ho || out_w != wo) {
      throw std::logic_error(
          std::string(op) + ": cuDNN computes an output of [" + std::to_string(out_n) + ", " +
          std::to_string(out_c) + ", " + std::to_string(out_h) + ", " + std::to_string(out_w) +
          "], b3 expects [" + std::to_string(n) + ", " + std::to_string(cout) + ", " +
          std::to_string(ho) + ", " + std::to_string(wo) + "], for " + g.str());
    }
    B3_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y.get(), format, type, n, cout, ho, wo));
    B3_CUDNN_CHECK(cudnnSetTensor4dDescriptor(bias.get(), CUDNN_TENSOR_NCHW, type, 1, cout, 1, 1));
  }
};

// ---------------------------------------------------- algorithm choice --

// The device buffers of one call (which ones depend on the pass).
struct ConvBuffers {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* dy = nullptr;
  void* out = nullptr;  // y, dx or dw
};

template <ConvPass P>
struct PassTraits;

template <>
struct PassTraits<ConvPass::forward> {
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  using Algo = cudnnConvolutionFwdAlgo_t;
  static constexpr int kCount = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  static cudnnStatus_t heuristic(cudnnHandle_t h, const Descriptors& d, int* returned, Perf* perf) {
    return cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                  kCount, returned, perf);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const Descriptors& d, Algo algo, size_t* bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                   algo, bytes);
  }
  static cudnnStatus_t find(cudnnHandle_t h, const Descriptors& d, const ConvBuffers& b,
                            int* returned, Perf* perf, void* workspace, size_t bytes) {
    return cudnnFindConvolutionForwardAlgorithmEx(h, d.x.get(), b.x, d.w.get(), b.w, d.conv.get(),
                                                  d.y.get(), b.out, kCount, returned, perf,
                                                  workspace, bytes);
  }
};

template <>
struct PassTraits<ConvPass::backward_data> {
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  static constexpr int kCount = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  static cudnnStatus_t heuristic(cudnnHandle_t h, const Descriptors& d, int* returned, Perf* perf) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.get(), d.y.get(), d.conv.get(),
                                                       d.x.get(), kCount, returned, perf);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const Descriptors& d, Algo algo, size_t* bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w.get(), d.y.get(), d.conv.get(),
                                                        d.x.get(), algo, bytes);
  }
  static cudnnStatus_t find(cudnnHandle_t h, const Descriptors& d, const ConvBuffers& b,
                            int* returned, Perf* perf, void* workspace, size_t bytes) {
    return cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w.get(), b.w, d.y.get(), b.dy,
                                                       d.conv.get(), d.x.get(), b.out, kCount,
                                                       returned, perf, workspace, bytes);
  }
};

template <>
struct PassTraits<ConvPass::backward_filter> {
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  static constexpr int kCount = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  static cudnnStatus_t heuristic(cudnnHandle_t h, const Descriptors& d, int* returned, Perf* perf) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.get(), d.y.get(), d.conv.get(),
                                                         d.w.get(), kCount, returned, perf);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const Descriptors& d, Algo algo, size_t* bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x.get(), d.y.get(), d.conv.get(),
                                                          d.w.get(), algo, bytes);
  }
  static cudnnStatus_t find(cudnnHandle_t h, const Descriptors& d, const ConvBuffers& b,
                            int* returned, Perf* perf, void* workspace, size_t bytes) {
    return cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x.get(), b.x, d.y.get(), b.dy,
                                                         d.conv.get(), d.w.get(), b.out, kCount,
                                                         returned, perf, workspace, bytes);
  }
};

const char* pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::forward: return "forward";
    case ConvPass::backward_data: return "backward data";
    case ConvPass::backward_filter: return "backward filter";
  }
  return "?";
}

const char* algorithm_name(ConvPass pass, int algorithm) {
  static const char* const forward[] = {
      "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
      "WINOGRAD",      "WINOGRAD_NONFUSED"};
  static const char* const backward_data[] = {"ALGO_0",     "ALGO_1",   "FFT",
                                              "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  static const char* const backward_filter[] = {
      "ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  static_assert(std::size(forward) == CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
  static_assert(std::size(backward_data) == CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
  static_assert(std::size(backward_filter) == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
  if (algorithm < 0) return "?";
  const auto index = static_cast<size_t>(algorithm);
  switch (pass) {
    case ConvPass::forward: return index < std::size(forward) ? forward[index] : "?";
    case ConvPass::backward_data:
      return index < std::size(backward_data) ? backward_data[index] : "?";
    case ConvPass::backward_filter:
      return index < std::size(backward_filter) ? backward_filter[index] : "?";
  }
  return "?";
}

const char* math_name(cudnnMathType_t math) {
  switch (math) {
    case CUDNN_DEFAULT_MATH: return "DEFAULT";
    case CUDNN_TENSOR_OP_MATH: return "TENSOR_OP";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "TENSOR_OP_ALLOW_CONVERSION";
    case CUDNN_FMA_MATH: return "FMA";
  }
  return "?";
}

std::string cache_key(const Conv2dGeometry& g, const ConvAlgorithmPolicy& policy) {
  std::string key = g.str();
  key += policy.search == ConvAlgorithmSearch::benchmark ? " (benchmark" : " (heuristic";
  if (policy.deterministic) key += ", deterministic";
  key += ", workspace <= ";
  key += std::to_string(policy.max_workspace_bytes);
  key += " B)";
  return key;
}

// Is a cuDNN suggestion acceptable? For f32, `strict` admits only FMA math
// (no TF32); the fallback round also admits DEFAULT math.
// What a retry after a failed call rules out: the algorithms that failed, and
// workspaces above `workspace_cap` (lowered when a workspace could not be
// allocated).
struct Exclusions {
  std::vector<int> algorithms;
  size_t workspace_cap = std::numeric_limits<size_t>::max();
  bool any() const {
    return !algorithms.empty() || workspace_cap != std::numeric_limits<size_t>::max();
  }
  bool excludes(int algorithm) const {
    return std::find(algorithms.begin(), algorithms.end(), algorithm) != algorithms.end();
  }
};

template <typename Perf>
bool acceptable(const Perf& perf, const Conv2dGeometry& g, const ConvAlgorithmPolicy& policy,
                size_t workspace_limit, bool strict, const Exclusions& excluded) {
  if (perf.status != CUDNN_STATUS_SUCCESS) return false;
  if (excluded.excludes(static_cast<int>(perf.algo))) return false;
  if (perf.memory > excluded.workspace_cap) return false;
  if (perf.memory > workspace_limit) return false;
  if (policy.deterministic && perf.determinism != CUDNN_DETERMINISTIC) return false;
  if (g.dtype == DType::f32) {
    if (perf.mathType == CUDNN_FMA_MATH) return true;
    return !strict && perf.mathType == CUDNN_DEFAULT_MATH;
  }
  return true;
}

// The cached algorithm for pass P of this geometry, chosen now if it is new
// or if a retry excludes something (the new choice then replaces the entry).
template <ConvPass P>
ConvAlgorithmChoice choose_algorithm(CudaContext& context, cudnnHandle_t handle,
                                     const Descriptors& d, const Conv2dGeometry& g,
                                     const ConvAlgorithmPolicy& policy, const ConvBuffers& buffers,
                                     const Stream& stream, const char* op,
                                     const Exclusions& excluded) {
  using Traits = PassTraits<P>;
  const std::string key = cache_key(g, policy);
  if (!excluded.any()) {
    if (std::optional<ConvAlgorithmChoice> cached = context.conv_algorithms().find(key, P)) {
      return *cached;
    }
  }
  std::array<typename Traits::Perf, Traits::kCount> perf{};
  int returned = 0;
  size_t workspace_limit = policy.max_workspace_bytes;
  const bool benchmark = policy.search == ConvAlgorithmSearch::benchmark;
  if (benchmark) {
    // The largest workspace any algorithm asks for, within the policy's limit.
    size_t wanted = 0;
    for (int a = 0; a < Traits::kCount; ++a) {
      size_t bytes = 0;
      if (Traits::workspace(handle, d, static_cast<typename Traits::Algo>(a), &bytes) ==
          CUDNN_STATUS_SUCCESS) {
        wanted = std::max(wanted, bytes);
      }
    }
    // Unsupported algorithms leave an error message behind; read it away so a
    // later failure does not report it (reading clears cuDNN's buffer).
    char stale_message[512];
    cudnnGetLastErrorString(stale_message, sizeof(stale_message));
    workspace_limit = std::min(wanted, policy.max_workspace_bytes);
    Allocation workspace;
    if (workspace_limit > 0) {
      try {
        workspace =
            context.allocator().allocate(workspace_limit, AllocationOptions{256, 0}, stream.handle);
      } catch (const std::runtime_error&) {
        workspace_limit = 0;  // out of memory: choose among algorithms without a workspace
      }
    }
    B3_CUDNN_CHECK(
        Traits::find(handle, d, buffers, &returned, perf.data(), workspace.data, workspace_limit));
  } else {
    B3_CUDNN_CHECK(Traits::heuristic(handle, d, &returned, perf.data()));
  }
  returned = std::clamp(returned, 0, Traits::kCount);
  const typename Traits::Perf* chosen = nullptr;
  for (bool strict : {true, false}) {
    for (int i = 0; i < returned && chosen == nullptr; ++i) {
      if (acceptable(perf[static_cast<size_t>(i)], g, policy, workspace_limit, strict, excluded)) {
        chosen = &perf[static_cast<size_t>(i)];
      }
    }
    if (chosen != nullptr) break;
  }
  if (chosen == nullptr) {
    std::string tried;
    for (int i = 0; i < returned; ++i) {
      const auto& p = perf[static_cast<size_t>(i)];
      tried += std::string(" ") + algorithm_name(P, static_cast<int>(p.algo)) + "=" +
               cudnnGetErrorString(p.status) + "/" + math_name(p.mathType) + "/" +
               std::to_string(p.memory) + "B";
    }
    throw std::runtime_error(std::string(op) + ": cuDNN offers no usable " + pass_name(P) +
                             " algorithm for " + key +
                             "; it returned:" + (tried.empty() ? std::string(" nothing") : tried));
  }
  ConvAlgorithmChoice choice;
  choice.algorithm = static_cast<int>(chosen->algo);
  choice.math_type = chosen->mathType;
  choice.time_ms = benchmark ? chosen->time : -1.0f;
  // The workspace for this algorithm under its own math type (what the call will use).
  B3_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.get(), choice.math_type));
  size_t bytes = 0;
  B3_CUDNN_CHECK(Traits::workspace(handle, d, chosen->algo, &bytes));
  choice.workspace_bytes = std::max(bytes, chosen->memory);
  if (g.dtype == DType::f32 && choice.math_type != CUDNN_FMA_MATH) {
    std::fprintf(stderr,
                 "b3: %s: no FMA-only cuDNN %s algorithm for %s; using %s math, which may use "
                 "TF32 on Ampere and newer GPUs (set NVIDIA_TF32_OVERRIDE=0 to forbid it)\n",
                 op, pass_name(P), key.c_str(), math_name(choice.math_type));
  }
  context.conv_algorithms().store(key, P, choice);
  return choice;
}

// Everything a pass needs: context, descriptors, the locked handle, and the
// workspace for the chosen algorithm.
struct PassSetup {
  CudaContext& context;
  DeviceGuard guard;
  Descriptors descriptors;
  std::unique_lock<std::mutex> lock;
  cudnnHandle_t handle;

  PassSetup(const Conv2dGeometry& g, const Stream& stream, const char* op)
      : context(cuda::context(stream.device)),
        guard(stream.device),
        descriptors(g, op),
        lock(context.lock_library_handles()),
        handle(context.cudnn(lock, stream.handle)) {}
};

// Is this failure of a cuDNN call one that another algorithm may not have?
bool another_algorithm_may_work(cudnnStatus_t status) {
  return status == CUDNN_STATUS_NOT_SUPPORTED || status == CUDNN_STATUS_EXECUTION_FAILED ||
         status == CUDNN_STATUS_ALLOC_FAILED || status == CUDNN_STATUS_INTERNAL_ERROR;
}

// Runs pass P: `call(choice, workspace)` with the cached (or newly chosen)
// algorithm and its workspace from the caching allocator. As PyTorch does,
// a failure is not the end while candidates remain: when the workspace
// cannot be allocated (the allocator has already given its cached blocks
// back and retried), the next choice must fit in less; when the call fails
// with a status another algorithm may not have (NOT_SUPPORTED,
// EXECUTION_FAILED, ALLOC_FAILED, INTERNAL_ERROR), that algorithm is
// excluded. The algorithm that works replaces the cache entry and is said on
// stderr; with none left the error names every algorithm tried.
template <ConvPass P, typename Call>
void run_pass(PassSetup& s, const Conv2dGeometry& g, const ConvAlgorithmPolicy& requested,
              const ConvBuffers& buffers, const Stream& stream, const char* op, Call&& call) {
  ConvAlgorithmPolicy policy = requested;
  if (s.context.deterministic_convolutions()) {
    // Deterministic algorithms, chosen without timing: the same choice in
    // every process on this GPU and cuDNN, so a resumed run computes as the
    // uninterrupted one did.
    policy.deterministic = true;
    policy.search = ConvAlgorithmSearch::heuristic;
  }
  Exclusions excluded;
  std::string failures;
  for (;;) {
    const ConvAlgorithmChoice choice = choose_algorithm<P>(s.context, s.handle, s.descriptors, g,
                                                           policy, buffers, stream, op, excluded);
    B3_CUDNN_CHECK(cudnnSetConvolutionMathType(s.descriptors.conv.get(), choice.math_type));
    const char* name = algorithm_name(P, choice.algorithm);
    Allocation workspace;
    if (choice.workspace_bytes > 0) {
      try {
        workspace = s.context.allocator().allocate(choice.workspace_bytes,
                                                   AllocationOptions{256, 0}, stream.handle);
      } catch (const std::runtime_error&) {
        failures += std::string(" ") + name + ": no memory for its " +
                    std::to_string(choice.workspace_bytes) + " B workspace;";
        // Both rules, so that every retry rules something out and the loop ends.
        excluded.algorithms.push_back(choice.algorithm);
        excluded.workspace_cap = std::min(excluded.workspace_cap, choice.workspace_bytes - 1);
        continue;
      }
    }
    const cudnnStatus_t status = call(choice, workspace.data);
    if (status == CUDNN_STATUS_SUCCESS) {
      if (!failures.empty()) {
        std::fprintf(stderr, "b3: %s: %s falls back to %s (%s math) for %s after:%s\n", op,
                     pass_name(P), name, math_name(choice.math_type), cache_key(g, policy).c_str(),
                     failures.c_str());
      }
      return;
    }
    if (!another_algorithm_may_work(status)) {
      throw_cudnn_error(status, (std::string(op) + " with " + name).c_str(), __FILE__, __LINE__);
    }
    char message[512];
    cudnnGetLastErrorString(message, sizeof(message));
    failures += std::string(" ") + name + ": " + cudnnGetErrorString(status) +
                (message[0] != '\0' ? std::string(" (") + message + ")" : std::string()) + ";";
    excluded.algorithms.push_back(choice.algorithm);
    // choose_algorithm throws, naming what cuDNN returned, once nothing is left.
  }
}

void check_buffer(const void* p, const char* op, const char* name) {
  if (p == nullptr) throw std::invalid_argument(std::string(op) + ": " + name + " is null");
}

// Zeroes `bytes` of device memory on the stream (a gradient of an empty batch).
void zero_on_stream(void* p, size_t bytes, const Stream& stream) {
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream.handle));
}

}  // namespace

void set_deterministic_convolutions(int device, bool on) {
  context(device).set_deterministic_convolutions(on);
}

void conv2d_forward(const Conv2dGeometry& g, const void* x, const void* w, const void* bias,
                    void* y, const Stream& stream, const ConvAlgorithmPolicy& policy) {
  const char* op = "cuda::conv2d_forward";
  check_geometry(g, op);
  if (g.batch == 0) return;
  check_buffer(x, op, "x");
  check_buffer(w, op, "w");
  check_buffer(y, op, "y");
  PassSetup s(g, stream, op);
  ConvBuffers buffers;
  buffers.x = x;
  buffers.w = w;
  buffers.out = y;
  const float one = 1.0f, zero = 0.0f;  // alpha/beta are float for float and half data
  const Descriptors& d = s.descriptors;
  run_pass<ConvPass::forward>(
      s, g, policy, buffers, stream, op, [&](const ConvAlgorithmChoice& choice, void* workspace) {
        return cudnnConvolutionForward(s.handle, &one, d.x.get(), x, d.w.get(), w, d.conv.get(),
                                       static_cast<cudnnConvolutionFwdAlgo_t>(choice.algorithm),
                                       workspace, choice.workspace_bytes, &zero, d.y.get(), y);
      });
  if (bias != nullptr) {
    B3_CUDNN_CHECK(cudnnAddTensor(s.handle, &one, d.bias.get(), bias, &one, d.y.get(), y));
  }
}

void conv2d_backward_data(const Conv2dGeometry& g, const void* w, const void* grad_y, void* grad_x,
                          const Stream& stream, const ConvAlgorithmPolicy& policy) {
  const char* op = "cuda::conv2d_backward_data";
  check_geometry(g, op);
  if (g.batch == 0) return;
  check_buffer(w, op, "w");
  check_buffer(grad_y, op, "grad_y");
  check_buffer(grad_x, op, "grad_x");
  PassSetup s(g, stream, op);
  ConvBuffers buffers;
  buffers.w = w;
  buffers.dy = grad_y;
  buffers.out = grad_x;
  const float one = 1.0f, zero = 0.0f;
  const Descriptors& d = s.descriptors;
  run_pass<ConvPass::backward_data>(
      s, g, policy, buffers, stream, op, [&](const ConvAlgorithmChoice& choice, void* workspace) {
        return cudnnConvolutionBackwardData(
            s.handle, &one, d.w.get(), w, d.y.get(), grad_y, d.conv.get(),
            static_cast<cudnnConvolutionBwdDataAlgo_t>(choice.algorithm), workspace,
            choice.workspace_bytes, &zero, d.x.get(), grad_x);
      });
}

void conv2d_backward_filter(const Conv2dGeometry& g, const void* x, const void* grad_y,
                            void* grad_w, const Stream& stream, const ConvAlgorithmPolicy& policy) {
  const char* op = "cuda::conv2d_backward_filter";
  check_geometry(g, op);
  check_buffer(grad_w, op, "grad_w");
  if (g.batch == 0) {  // no samples: the gradient is zero
    const size_t elements =
        static_cast<size_t>(g.out_channels * (g.in_channels / g.groups) * g.kernel * g.kernel);
    zero_on_stream(grad_w, elements * dtype_size(g.dtype), stream);
    return;
  }
  check_buffer(x, op, "x");
  check_buffer(grad_y, op, "grad_y");
  PassSetup s(g, stream, op);
  ConvBuffers buffers;
  buffers.x = x;
  buffers.dy = grad_y;
  buffers.out = grad_w;
  const float one = 1.0f, zero = 0.0f;
  const Descriptors& d = s.descriptors;
  run_pass<ConvPass::backward_filter>(
      s, g, policy, buffers, stream, op, [&](const ConvAlgorithmChoice& choice, void* workspace) {
        return cudnnConvolutionBackwardFilter(
            s.handle, &one, d.x.get(), x, d.y.get(), grad_y, d.conv.get(),
            static_cast<cudnnConvolutionBwdFilterAlgo_t>(choice.algorithm), workspace,
            choice.workspace_bytes, &zero, d.w.get(), grad_w);
      });
}

void conv2d_backward_bias(const Conv2dGeometry& g, const void* grad_y, void* grad_bias,
                          const Stream& stream) {
  const char* op = "cuda::conv2d_backward_bias";
  check_geometry(g, op);
  check_buffer(grad_bias, op, "grad_bias");
  if (g.batch == 0) {
    zero_on_stream(grad_bias, static_cast<size_t>(g.out_channels) * dtype_size(g.dtype), stream);
    return;
  }
  check_buffer(grad_y, op, "grad_y");
  PassSetup s(g, stream, op);
  const float one = 1.0f, zero = 0.0f;
  B3_CUDNN_CHECK(cudnnConvolutionBackwardBias(s.handle, &one, s.descriptors.y.get(), grad_y, &zero,
                                              s.descriptors.bias.get(), grad_bias));
}

std::string conv_algorithm_report(int device) {
  const auto entries = context(device).conv_algorithms().entries();
  std::string report = "cuDNN convolution algorithms on cuda:";
  report += std::to_string(device);
  report += " (";
  report += std::to_string(entries.size());
  report += " shapes)\n";
  for (const auto& [key, choices] : entries) {
    report += "  ";
    report += key;
    report += "\n";
    for (ConvPass pass : {ConvPass::forward, ConvPass::backward_data, ConvPass::backward_filter}) {
      const auto& choice = choices[static_cast<size_t>(pass)];
      if (!choice) continue;
      char line[256];
      std::snprintf(line, sizeof(line), "    %-16s %-22s %-10s workspace %12zu B  %s\n",
                    pass_name(pass), algorithm_name(pass, choice->algorithm),
                    math_name(choice->math_type), choice->workspace_bytes,
                    choice->time_ms >= 0.0f ? (std::to_string(choice->time_ms) + " ms").c_str()
                                            : "(heuristic)");
      report += line;
    }
  }
  return report;
}

}  // namespace b3::cuda
