// b3_dist_worker: the per-rank program of the data-parallel tests
// (tests/test_data_parallel.cpp starts it under mpirun). Modes:
//
//   invariant --optimizer sgd|adam --steps K [--bucket-kib B]
//     Each rank trains MobileNetV3-Small (32x32, batch 4 per rank) through
//     train_step with DataParallel on its own batch of each step. Beside it,
//     each rank also runs the single-process reference: N replicas, each on
//     one rank's batch with rank 0's buffers copied in first (BatchNorm per
//     replica), their gradients summed in rank order and divided by N, each
//     stepped. Rank 0 prints
//       RESULT world=N max_abs_diff=D max_abs_param=P checksums_equal=0|1
//     where D is the largest difference, over ranks, parameters and buffers,
//     between a rank's model and its reference replica, and checksums_equal
//     says whether every rank's parameters hash alike after every step;
//     also how many bucket all-reduces started, how many while backward still
//     ran, and whether they started in bucket order; how many elements of
//     the first step's averaged gradients differ from the reference's by
//     more than a change of summation order allows (grad_beyond_rounding),
//     and how many weights differ by more than 1e-5 after the steps.
//   fail --rank R     rank R throws after the first step; the job must end.
//   mismatch          rank 1 claims another batch size; every rank must stop.
//   nonfinite --rank R   rank R's gradients are NaN; every rank must see it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "distributed/data_parallel.h"
#include "distributed/launch.h"
#include "experiment/step_timing.h"
#include "layers/loss.h"
#include "models/mobilenet_v3.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "train/trainer.h"

using namespace b3;

namespace {

constexpr int64_t kClasses = 10;
constexpr int64_t kBatch = 4;
constexpr uint64_t kSeed = 11;

LabeledBatch batch_of(int step, int rank) {
  return experiment::uniform_batch(
      kBatch, 32, kClasses, MemoryFormat::contiguous, Device::cpu(),
      1000 * static_cast<uint64_t>(step) + static_cast<uint64_t>(rank));
}

std::unique_ptr<Optimizer> optimizer_for(const std::string& name, Module& model) {
  if (name == "sgd") {
    SgdOptions o;
    o.lr = 0.05;
    o.momentum = 0.9;
    return std::make_unique<Sgd>(model.parameters(), o);
  }
  if (name == "adam") return std::make_unique<Adam>(model.parameters(), AdamOptions{1e-3});
  throw std::invalid_argument("--optimizer must be sgd or adam, got " + name);
}

double max_abs_difference(const Module& a, const Module& b) {
  double worst = 0.0;
  auto compare = [&](const auto& xs, const auto& ys) {
    for (size_t i = 0; i < xs.size(); ++i) {
      const std::vector<double> x = xs[i].second.to_doubles(), y = ys[i].second.to_doubles();
      for (size_t k = 0; k < x.size(); ++k) worst = std::max(worst, std::fabs(x[k] - y[k]));
    }
  };
  compare(a.named_parameters(), b.named_parameters());
  compare(a.named_buffers(), b.named_buffers());
  return worst;
}

// Per gradient element: the reference's mean and how far any order of
// summation may move it. N f32 terms summed in any association differ from
// one another by at most 2 (N - 1) u sum_r |g_r| (each order's error is at
// most (N - 1) u sum_r |g_r|, u = 2^-24), and the division by N adds u |mean|
// to each, so two means of the same terms differ by at most
// 2 ((N - 1) u sum_r |g_r| / N + u |mean|).
struct GradientReference {
  std::vector<std::vector<double>> mean, bound;  // per parameter, per element
};

// One step of the single-process reference over all replicas (see the top).
GradientReference reference_step(std::vector<std::shared_ptr<MobileNetV3>>& replicas,
                                 std::vector<std::unique_ptr<Optimizer>>& optimizers, int step) {
  const size_t world = replicas.size();
  const auto rank0_buffers = replicas[0]->named_buffers();
  for (size_t r = 1; r < world; ++r) {
    const auto buffers = replicas[r]->named_buffers();
    for (size_t i = 0; i < buffers.size(); ++i) {
      Tensor b = buffers[i].second;
      b.copy_(rank0_buffers[i].second);
    }
  }
  for (size_t r = 0; r < world; ++r) {
    replicas[r]->train();
    optimizers[r]->zero_grad();
    const LabeledBatch batch = batch_of(step, static_cast<int>(r));
    cross_entropy(replicas[r]->forward(batch.images), batch.labels).backward();
  }
  constexpr double u = 1.0 / 16777216.0;  // f32's unit roundoff, 2^-24
  GradientReference reference;
  const std::vector<Tensor> first = replicas[0]->parameters();
  for (size_t k = 0; k < first.size(); ++k) {
    Tensor mean = first[k].grad().contiguous().clone();
    float* m = mean.data<float>();
    std::vector<double> magnitude(static_cast<size_t>(mean.numel()));
    for (int64_t i = 0; i < mean.numel(); ++i) magnitude[i] = std::fabs(m[i]);
    for (size_t r = 1; r < world; ++r) {
      const Tensor g = replicas[r]->parameters()[k].grad().contiguous();
      const float* gr = g.data<float>();
      for (int64_t i = 0; i < mean.numel(); ++i) {
        m[i] += gr[i];
        magnitude[i] += std::fabs(gr[i]);
      }
    }
    for (int64_t i = 0; i < mean.numel(); ++i) m[i] /= static_cast<float>(world);
    std::vector<double> bound(magnitude.size());
    const double n = static_cast<double>(world);
    for (size_t i = 0; i < bound.size(); ++i)
      bound[i] = 2.0 * ((n - 1.0) * u * magnitude[i] / n + u * std::fabs(m[i]));
    reference.mean.push_back(mean.to_doubles());
    reference.bound.push_back(std::move(bound));
    for (size_t r = 0; r < world; ++r) {
      Tensor g = replicas[r]->parameters()[k].grad();
      g.copy_(mean);
    }
  }
  for (auto& o : optimizers) o->step();
  return reference;
}

void run_invariant(dist::ProcessGroup& group, const std::string& optimizer_name, int steps,
                   size_t bucket_bytes) {
  auto model = mobilenet_v3_small(kClasses, kSeed);
  std::unique_ptr<Optimizer> optimizer = optimizer_for(optimizer_name, *model);
  dist::DataParallelOptions parallel;
  parallel.bucket_bytes = bucket_bytes;
  parallel.first_bucket_bytes = std::min(bucket_bytes, dist::kDefaultFirstBucketBytes);
  parallel.overlap = dist::Overlap::on;  // the ranks share cores here; the order is what is tested
  dist::DataParallel data_parallel(*model, group, parallel);
  std::vector<std::shared_ptr<MobileNetV3>> replicas;
  std::vector<std::unique_ptr<Optimizer>> optimizers;
  for (int r = 0; r < group.size(); ++r) {
    replicas.push_back(mobilenet_v3_small(kClasses, kSeed));
    optimizers.push_back(optimizer_for(optimizer_name, *replicas.back()));
  }
  StepOptions options;
  options.data_parallel = &data_parallel;
  bool checksums_equal = true;
  int64_t launched = 0, during_backward = 0;
  bool in_order = true;
  int64_t beyond_rounding = 0;  // first-step averaged gradient elements off by more than the bound
  for (int step = 0; step < steps; ++step) {
    train_step(*model, *optimizer, batch_of(step, group.rank()), options);
    const auto launches = data_parallel.last_launches();
    for (size_t i = 0; i < launches.size(); ++i) {
      in_order &= launches[i].bucket == i;
      during_backward += launches[i].during_backward ? 1 : 0;
    }
    launched += static_cast<int64_t>(launches.size());
    const GradientReference reference = reference_step(replicas, optimizers, step);
    if (step == 0) {  // the same weights and batches: only the summation order may differ
      const std::vector<Tensor> parameters = model->parameters();
      for (size_t k = 0; k < parameters.size(); ++k) {
        const std::vector<double> averaged = parameters[k].grad().contiguous().to_doubles();
        for (size_t i = 0; i < averaged.size(); ++i)
          beyond_rounding += std::fabs(averaged[i] - reference.mean[k][i]) > reference.bound[k][i];
      }
    }
    const std::string mine = std::to_string(dist::parameter_checksum(*model));
    for (const std::string& theirs : group.all_gather(mine)) checksums_equal &= theirs == mine;
  }
  double difference = max_abs_difference(*model, *replicas[static_cast<size_t>(group.rank())]);
  int64_t elements = 0, beyond = 0;  // parameter elements off by more than 1e-5 after the steps
  {
    const auto mine = model->parameters();
    const auto reference = replicas[static_cast<size_t>(group.rank())]->parameters();
    for (size_t k = 0; k < mine.size(); ++k) {
      const std::vector<double> x = mine[k].to_doubles(), y = reference[k].to_doubles();
      for (size_t i = 0; i < x.size(); ++i) beyond += std::fabs(x[i] - y[i]) > 1e-5;
      elements += static_cast<int64_t>(x.size());
    }
  }
  double largest = 0.0;
  for (const Tensor& p : model->parameters())
    for (double v : p.to_doubles()) largest = std::max(largest, std::fabs(v));
  double worst[1] = {0.0};
  for (const std::string& d : group.all_gather(std::to_string(difference)))
    worst[0] = std::max(worst[0], std::stod(d));
  if (group.rank() == 0) {
    std::printf(
        "RESULT world=%d optimizer=%s steps=%d max_abs_diff=%.3e max_abs_param=%.3e "
        "checksums_equal=%d buckets=%zu launched=%lld during_backward=%lld in_order=%d "
        "grad_beyond_rounding=%lld params_beyond_1e-5=%lld of=%lld\n",
        group.size(), optimizer_name.c_str(), steps, worst[0], largest, checksums_equal ? 1 : 0,
        data_parallel.buckets().size(), static_cast<long long>(launched),
        static_cast<long long>(during_backward), in_order ? 1 : 0,
        static_cast<long long>(beyond_rounding), static_cast<long long>(beyond),
        static_cast<long long>(elements));
  }
}

// A rank's replica for the failure modes: MobileNetV3-Small, SGD, DataParallel
// with its defaults.
struct Replica {
  std::shared_ptr<MobileNetV3> model;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<dist::DataParallel> data_parallel;
  StepOptions options;

  explicit Replica(dist::ProcessGroup& group)
      : model(mobilenet_v3_small(kClasses, kSeed)),
        optimizer(optimizer_for("sgd", *model)),
        data_parallel(std::make_unique<dist::DataParallel>(*model, group)) {
    options.data_parallel = data_parallel.get();
  }
  void step(const LabeledBatch& batch) { train_step(*model, *optimizer, batch, options); }
};

void run_fail(dist::ProcessGroup& group, int failing_rank) {
  Replica replica(group);
  for (int step = 0; step < 1000; ++step) {  // the others would wait for rank R forever
    if (step == 1 && group.rank() == failing_rank)
      throw std::runtime_error("injected failure on rank " + std::to_string(failing_rank));
    replica.step(batch_of(step, group.rank()));
  }
}

// Rank R's batch holds a NaN pixel, so its gradients are NaN; the mean over
// the ranks carries it to every rank, which is what makes every rank's
// GradScaler find inf/nan and skip the same step (optim/grad_scaler.h checks
// the averaged gradients). Rank 0 prints
//   RESULT nonfinite_ranks=K of=N
// where K counts the ranks whose averaged gradients hold a non-finite value.
void run_nonfinite(dist::ProcessGroup& group, int poisoned_rank) {
  Replica replica(group);
  LabeledBatch batch = batch_of(0, group.rank());
  if (group.rank() == poisoned_rank) batch.images.data<float>()[0] = std::nanf("");
  replica.step(batch);
  bool nonfinite = false;
  for (const Tensor& p : replica.model->parameters())
    for (double g : p.grad().to_doubles()) nonfinite |= !std::isfinite(g);
  int64_t count[1] = {nonfinite ? 1 : 0};
  group.all_reduce_sum(count, 1);
  if (group.rank() == 0)
    std::printf("RESULT nonfinite_ranks=%lld of=%d\n", static_cast<long long>(count[0]),
                group.size());
}

void run_mismatch(dist::ProcessGroup& group) {
  const std::string batch = group.rank() == 1 ? "5" : "4";
  dist::require_same_settings({{"model", "mobilenet_v3_small"}, {"batch_size", batch}}, group);
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<dist::ProcessGroup> group;
  try {
    group = dist::init_process_group();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "b3_dist_worker: error: %s\n", e.what());
    return 1;
  }
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    std::string optimizer = "sgd";
    int steps = 3, failing_rank = 1;
    size_t bucket_bytes = dist::kDefaultBucketBytes;
    for (int i = 2; i + 1 < argc; i += 2) {
      const std::string flag = argv[i];
      if (flag == "--optimizer")
        optimizer = argv[i + 1];
      else if (flag == "--steps")
        steps = std::stoi(argv[i + 1]);
      else if (flag == "--rank")
        failing_rank = std::stoi(argv[i + 1]);
      else if (flag == "--bucket-kib")
        bucket_bytes = std::stoul(argv[i + 1]) << 10;
      else
        throw std::invalid_argument("unknown option " + flag);
    }
    if (mode == "invariant")
      run_invariant(*group, optimizer, steps, bucket_bytes);
    else if (mode == "fail")
      run_fail(*group, failing_rank);
    else if (mode == "mismatch")
      run_mismatch(*group);
    else if (mode == "nonfinite")
      run_nonfinite(*group, failing_rank);
    else
      throw std::invalid_argument("mode must be invariant, fail, mismatch or nonfinite, got '" +
                                  mode + "'");
  } catch (const std::exception& e) {
    dist::abort_job(*group, e.what());
  }
  return 0;
}
