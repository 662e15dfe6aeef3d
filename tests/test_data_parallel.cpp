// Data-parallel training (distributed/): the sampler's sharding, gradient
// buckets, the world of one, and, through mpirun on the CPU, the invariant
// of DDP (N ranks equal one process that averages the N shards' gradients),
// bit-identical replicas, a failing rank ending the job, and mismatched
// settings refused. The mpirun cases start tests/support/dist_worker.cpp and
// skip (exit 77) when b3 was built without MPI or mpirun is missing.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/synthetic.h"
#include "distributed/data_parallel.h"
#include "distributed/launch.h"
#include "distributed/sharding.h"
#include "experiment/step_timing.h"
#include "layers/loss.h"
#include "models/mobilenet_v3.h"
#include "tests/support/python.h"

using namespace b3;

namespace {

struct Run {
  int status = -1;
  std::string output;
  double seconds = 0.0;
};

// Runs `command` through the shell with stderr joined to stdout.
Run run_capturing(const std::string& command) {
  Run run;
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  REQUIRE_MESSAGE(pipe != nullptr, "cannot start: " << command);
  std::array<char, 4096> chunk{};
  size_t n = 0;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0)
    run.output.append(chunk.data(), n);
  const int raw = pclose(pipe);
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

// The mpirun command line for `ranks` copies of the worker, or exits 77.
std::string mpirun_worker(int ranks, const std::string& arguments) {
  if (!dist::built_with_mpi()) {
    std::printf("SKIPPED: b3 was built without MPI (install openmpi-bin and libopenmpi-dev)\n");
    std::exit(test::kSkipExitCode);
  }
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    std::printf("SKIPPED: mpirun is not on PATH (install openmpi-bin)\n");
    std::exit(test::kSkipExitCode);
  }
  const char* build_dir = std::getenv("B3_BUILD_DIR");
  REQUIRE_MESSAGE(build_dir != nullptr, "B3_BUILD_DIR is not set: run this test through ctest");
  // Root in CI needs --allow-run-as-root; more ranks than cores need
  // --oversubscribe; shared memory without ptrace rights needs CMA off.
  return std::string("timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none ") +
         "--mca btl self,vader --mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS=1 " +
         "-np " + std::to_string(ranks) + " " + build_dir + "/b3_dist_worker " + arguments;
}

double field(const std::string& output, const std::string& name) {
  const std::regex pattern(name + "=([-+0-9.eE]+)");
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(output, m, pattern), "no " << name << "= in:\n" << output);
  return std::stod(m[1].str());
}

}  // namespace

TEST_CASE("data parallel: shards are disjoint, cover the epoch but for < world, same per seed") {
  const std::vector<int64_t> order = DataLoader::order_for_epoch(103, true, 7, 2);
  for (int world : {1, 2, 3, 4}) {
    CAPTURE(world);
    std::set<int64_t> seen;
    size_t total = 0;
    for (int rank = 0; rank < world; ++rank) {
      const std::vector<int64_t> shard = dist::shard_of(order, rank, world);
      CHECK(shard.size() == order.size() / static_cast<size_t>(world));  // same steps on every rank
      for (size_t k = 0; k < shard.size(); ++k)
        CHECK(shard[k] == order[k * static_cast<size_t>(world) + static_cast<size_t>(rank)]);
      seen.insert(shard.begin(), shard.end());
      total += shard.size();
      CHECK(shard == dist::shard_of(DataLoader::order_for_epoch(103, true, 7, 2), rank, world));
    }
    CHECK(seen.size() == total);  // disjoint
    CHECK(order.size() - total < static_cast<size_t>(world));
  }
  CHECK_THROWS_AS(dist::shard_of(order, 2, 2), std::invalid_argument);
  CHECK_THROWS_AS(dist::shard_of(order, 0, 0), std::invalid_argument);
}

TEST_CASE("data parallel: buckets cover every parameter once, in reverse order, within the cap") {
  auto model = mobilenet_v3_small(10, 1);
  const std::vector<Tensor> parameters = model->parameters();
  for (size_t cap : {size_t{1}, size_t{64} << 10, size_t{1} << 20, dist::kDefaultBucketBytes}) {
    for (size_t first_cap : {size_t{1}, size_t{256} << 10, dist::kDefaultFirstBucketBytes}) {
      CAPTURE(cap);
      CAPTURE(first_cap);
      const std::vector<dist::GradientBucket> buckets =
          dist::make_gradient_buckets(parameters, cap, first_cap);
      std::vector<size_t> order;
      for (size_t i = 0; i < buckets.size(); ++i) {
        const dist::GradientBucket& b = buckets[i];
        size_t bytes = 0;
        for (size_t k : b.parameters) bytes += parameters[k].nbytes();
        CHECK(bytes == b.bytes);
        CHECK(b.elements * 4 == static_cast<int64_t>(b.bytes));
        // Only a lone parameter larger than the cap exceeds it.
        CHECK((b.bytes <= (i == 0 ? first_cap : cap) || b.parameters.size() == 1));
        order.insert(order.end(), b.parameters.begin(), b.parameters.end());
      }
      std::vector<size_t> expected(parameters.size());
      std::iota(expected.rbegin(), expected.rend(), size_t{0});
      CHECK(order == expected);
    }
  }
  // DDP's defaults on 6 MiB of f32 weights: the classifier's last layers in
  // a first bucket of at most 1 MiB (a lone larger tensor alone), the rest in one.
  const std::vector<dist::GradientBucket> buckets = dist::make_gradient_buckets(parameters);
  CHECK(buckets.size() == 2);
  CHECK((buckets[0].bytes <= dist::kDefaultFirstBucketBytes || buckets[0].parameters.size() == 1));
  CHECK_THROWS_AS(dist::make_gradient_buckets(parameters, 0), std::invalid_argument);
  CHECK(dist::bucket_bytes_of_mib(25) == size_t{25} << 20);
  CHECK_THROWS_AS(dist::bucket_bytes_of_mib(0), std::invalid_argument);
  CHECK_THROWS_AS(dist::bucket_bytes_of_mib(-1), std::invalid_argument);
  Sequential empty;  // nothing to average
  dist::SingleProcessGroup group;
  CHECK_THROWS_WITH_AS(dist::DataParallel(empty, group), doctest::Contains("no parameters"),
                       std::invalid_argument);
}

TEST_CASE("data parallel: a communication thread overlaps only with a core of its own") {
  CHECK(dist::communication_has_a_core(2, 2, 1, 4));        // 2 ranks x (1 + 1) threads on 4 cores
  CHECK_FALSE(dist::communication_has_a_core(2, 2, 1, 2));  // this machine's 2 x 1 on 2 cores
  CHECK_FALSE(dist::communication_has_a_core(1, 8, 2, 2));  // 1 x (2 + 1) on 2
  CHECK(dist::communication_has_a_core(1, 8, 3, 4));        // the other ranks elsewhere
  CHECK_FALSE(dist::communication_has_a_core(0, 4, 1, 4));  // unknown: all 4 ranks here
  CHECK(dist::parse_overlap("auto") == dist::Overlap::automatic);
  CHECK(dist::parse_overlap("on") == dist::Overlap::on);
  CHECK(dist::parse_overlap("off") == dist::Overlap::off);
  CHECK_THROWS_AS(dist::parse_overlap("yes"), std::invalid_argument);
}

TEST_CASE("data parallel: parameters and gradients live in the buckets' flat buffers") {
  // A world of one: the buffers are the same as with N ranks, no MPI needed.
  auto model = mobilenet_v3_small(10, 3);
  auto reference = mobilenet_v3_small(10, 3);
  dist::SingleProcessGroup group;
  dist::DataParallelOptions options;
  options.bucket_bytes = size_t{512} << 10;  // several buckets
  dist::DataParallel parallel(*model, group, options);
  const std::vector<Tensor> parameters = model->parameters();
  const std::vector<Tensor> expected = reference->parameters();
  REQUIRE(parallel.buckets().size() >= 3);
  for (size_t b = 0; b < parallel.buckets().size(); ++b) {
    const Tensor& flat = parallel.bucket_gradients(b);
    for (size_t k : parallel.buckets()[b].parameters) {
      CAPTURE(k);
      CHECK(parameters[k].to_doubles() == expected[k].to_doubles());  // moved, not changed
      CHECK(parameters[k].strides() == expected[k].strides());
      CHECK(parameters[k].offset() % 16 == 0);  // 64-byte slices, as a tensor of its own
    }
    CHECK(flat.dim() == 1);
  }
  const LabeledBatch batch =
      experiment::uniform_batch(4, 32, 10, MemoryFormat::contiguous, Device::cpu(), 5);
  for (int step = 0; step < 2; ++step) {  // the second step starts from dropped gradients
    model->zero_grad();
    reference->zero_grad();
    parallel.before_forward();
    cross_entropy(model->forward(batch.images), batch.labels).backward();
    parallel.after_backward();
    cross_entropy(reference->forward(batch.images), batch.labels).backward();
    for (size_t b = 0; b < parallel.buckets().size(); ++b) {
      const Tensor& flat = parallel.bucket_gradients(b);
      for (size_t k : parallel.buckets()[b].parameters) {
        CAPTURE(k);
        const Tensor grad = parameters[k].grad();
        REQUIRE(grad.defined());
        CHECK(grad.storage() == flat.storage());  // a slice of the bucket, not a copy
        CHECK(grad.offset() >= flat.offset());
        CHECK(grad.offset() + grad.numel() <= flat.offset() + flat.numel());
        // Half a page from the parameter's address modulo 4 KiB (4K aliasing).
        CHECK((reinterpret_cast<uintptr_t>(grad.data_ptr()) -
               reinterpret_cast<uintptr_t>(parameters[k].data_ptr())) %
                  4096 ==
              2048);
        CHECK(reinterpret_cast<uintptr_t>(grad.data_ptr()) % 64 == 0);
        CHECK(grad.to_doubles() == expected[k].grad().to_doubles());
      }
    }
  }
}

TEST_CASE("data parallel: frozen parameters are left out of the buckets, as DDP leaves them") {
  // b3 train --freeze features: the features get no gradient, so no bucket
  // may wait for one (a bucket would otherwise name them as unreached).
  auto model = mobilenet_v3_small(10, 3);
  size_t trained = 0;
  for (auto& [name, p] : model->named_parameters()) {
    if (name.rfind("features.", 0) == 0)
      p.set_requires_grad(false);
    else
      ++trained;
  }
  REQUIRE(trained == 4);  // classifier.0 and classifier.3, weight and bias
  dist::SingleProcessGroup group;
  dist::DataParallel parallel(*model, group);
  size_t bucketed = 0;
  for (const dist::GradientBucket& bucket : parallel.buckets())
    bucketed += bucket.parameters.size();
  CHECK(bucketed == trained);
  const LabeledBatch batch =
      experiment::uniform_batch(4, 32, 10, MemoryFormat::contiguous, Device::cpu(), 5);
  parallel.before_forward();
  cross_entropy(model->forward(batch.images), batch.labels).backward();
  parallel.after_backward();
  for (const auto& entry : model->named_parameters()) {
    const auto& name = entry.first;  // no structured binding: clang 14's CAPTURE
    const auto& p = entry.second;
    CAPTURE(name);
    CHECK(p.grad().defined() == (name.rfind("features.", 0) != 0));
  }
}

TEST_CASE("data parallel: a plain start is a world of one, and its collectives change nothing") {
  if (dist::read_launch_environment().launched) return;  // started under a launcher: not plain
  const std::unique_ptr<dist::ProcessGroup> group = dist::init_process_group();
  CHECK(group->size() == 1);
  CHECK(group->rank() == 0);
  CHECK(group->backend() == "single");
  std::vector<float> values{1.5f, -2.0f};
  group->all_reduce_sum(values.data(), values.size());
  CHECK(values == std::vector<float>{1.5f, -2.0f});
  CHECK(group->all_gather("x") == std::vector<std::string>{"x"});
  CHECK_THROWS_AS(group->broadcast(values.data(), 8, 1), std::invalid_argument);
}

TEST_CASE("data parallel: N ranks equal one process averaging the N shards' gradients") {
  for (int world : {2, 3}) {
    for (const std::string optimizer : {"sgd", "adam"}) {
      CAPTURE(world);
      CAPTURE(optimizer);
      const Run run =
          run_capturing(mpirun_worker(world, "invariant --steps 3 --optimizer " + optimizer));
      INFO(run.output);
      REQUIRE(run.status == 0);
      MESSAGE("world " << world << ", " << optimizer
                       << ": max |ddp - reference| = " << field(run.output, "max_abs_diff")
                       << " (largest |parameter| " << field(run.output, "max_abs_param") << ")");
      CHECK(field(run.output, "checksums_equal") == 1.0);  // replicas bit-identical every step
      // The first step's averaged gradients (same weights, same batches):
      // every element within the bound of a different summation order
      // (dist_worker.cpp's GradientReference states it).
      CHECK(field(run.output, "grad_beyond_rounding") == 0.0);
      // The weights after the steps. World 2: a + b is one rounding whichever
      // rank adds first, so the mean is exact and the runs agree bit for bit.
      // World 3: MPI associates the sum as its algorithm goes (a ring
      // all-reduce associates each chunk differently), not as the
      // reference's (g0 + g1) + g2 (and the compiler may fuse the
      // reference's multiply-adds: GCC's build happened to agree bit for bit,
      // clang's does not). SGD's first step is linear in the gradient: one
      // rounding (2^-24 relative) per element, times lr 0.05, stays far below
      // 1e-5 on weights of size ~1 (checked on a 1-step run below). After it
      // the weights differ, so the next steps' gradients differ by more than a
      // rounding (BatchNorm over 4 images per rank divides by small
      // variances), and the difference grows: after 3 steps a few hundred of
      // 1.5 million elements differ by more than 1e-5 (292 measured, largest
      // 1.35e-4). Adam's step m / (sqrt(v) + eps) does not shrink with the
      // gradient at all, so where the ranks' gradients nearly cancel, one ulp
      // of the sum can move that element's step by up to ~lr (1e-3) in either
      // direction: a few hundred elements (514 measured) differ, each by less
      // than 2 lr per step. (SGD's 3-step bound, 1e-3, is the measured drift
      // with a margin of 7, not a derived one; its derived check is step 1.)
      const double steps = 3, adam_lr = 1e-3;
      if (world == 2) {
        CHECK(field(run.output, "max_abs_diff") == 0.0);
      } else if (optimizer == "sgd") {
        const Run one_step =
            run_capturing(mpirun_worker(world, "invariant --steps 1 --optimizer sgd"));
        INFO(one_step.output);
        REQUIRE(one_step.status == 0);
        CHECK(field(one_step.output, "max_abs_diff") < 1e-5);
        CHECK(field(run.output, "max_abs_diff") < 1e-3);
        CHECK(field(run.output, "params_beyond_1e-5") < 1e-3 * field(run.output, "of"));
      } else {
        CHECK(field(run.output, "max_abs_diff") < steps * 2 * adam_lr);
        CHECK(field(run.output, "params_beyond_1e-5") < 1e-3 * field(run.output, "of"));
      }
    }
  }
}

TEST_CASE("data parallel: small buckets all-reduce during backward, in order, same result") {
  // 256 KiB buckets cut MobileNetV3-Small's 6 MiB of gradients into ~20.
  const Run run = run_capturing(mpirun_worker(2, "invariant --steps 2 --bucket-kib 256"));
  INFO(run.output);
  REQUIRE(run.status == 0);
  const double buckets = field(run.output, "buckets");
  CHECK(buckets >= 10);
  CHECK(field(run.output, "launched") == 2 * buckets);  // each bucket once per step
  CHECK(field(run.output, "in_order") == 1.0);
  // Every bucket whose gradients backward finished started before backward
  // ended; at most the last one (the first layers) waits for its end.
  CHECK(field(run.output, "during_backward") >= 2 * (buckets - 1));
  CHECK(field(run.output, "max_abs_diff") == 0.0);
  CHECK(field(run.output, "checksums_equal") == 1.0);
}

TEST_CASE("data parallel: one failing rank ends the whole job quickly, with its message") {
  const Run run = run_capturing(mpirun_worker(3, "fail --rank 1"));
  INFO(run.output);
  MESSAGE("mpirun exit status " << run.status << " after " << run.seconds << " s");
  CHECK(run.status != 0);
  CHECK(run.status != 124);  // not the timeout: the job ended by itself
  CHECK(run.seconds < 30.0);
  CHECK(run.output.find("b3 (rank 1 of 3): error: injected failure on rank 1") !=
        std::string::npos);
}

TEST_CASE("data parallel: a non-finite gradient on one rank reaches every rank") {
  // What makes every rank's GradScaler skip the same steps: it checks the
  // averaged gradients, and inf or nan in one rank's sum is in every rank's.
  const Run run = run_capturing(mpirun_worker(3, "nonfinite --rank 2"));
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(field(run.output, "nonfinite_ranks") == 3.0);
}

TEST_CASE("data parallel: ranks started with different settings are refused, naming them") {
  const Run run = run_capturing(mpirun_worker(2, "mismatch"));
  INFO(run.output);
  CHECK(run.status != 0);
  CHECK(run.output.find("different settings") != std::string::npos);
  CHECK(run.output.find("rank 0: batch_size=4") != std::string::npos);
  CHECK(run.output.find("rank 1: batch_size=5") != std::string::npos);
}

TEST_CASE("data parallel: a launch is read from the launcher's environment") {
  // Only where this process was not itself started by a launcher.
  if (dist::read_launch_environment().launched) return;
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  const dist::LaunchInfo info = dist::read_launch_environment();
  CHECK(info.local_rank == 1);
  CHECK(info.local_size == 2);
  CHECK(info.launched);
  CHECK(info.world_size == 4);
  CHECK(info.rank == 2);
  CHECK(info.source == "OMPI_COMM_WORLD_SIZE=4");
  if (!dist::built_with_mpi()) {
    // mpirun of a build without MPI: refused, not N independent runs.
    CHECK_THROWS_WITH_AS(dist::init_process_group(), doctest::Contains("built without MPI"),
                         std::runtime_error);
  }
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  CHECK_FALSE(dist::read_launch_environment().launched);
}

TEST_CASE("data parallel: b3 train under mpirun trains on 2 ranks and only rank 0 reports") {
  const std::string build_dir = std::getenv("B3_BUILD_DIR") ? std::getenv("B3_BUILD_DIR") : ".";
  const std::string worker = mpirun_worker(2, "");  // skips without MPI; the prefix is reused
  const std::string mpirun = worker.substr(0, worker.find(build_dir + "/b3_dist_worker"));
  const std::string out = build_dir + "/test_data_parallel_train";
  const Run run = run_capturing(mpirun + build_dir +
                                "/b3 train --data synthetic --model mobilenet_v3_small --steps 4 "
                                "--batch-size 8 --train-limit 256 --test-limit 50 --workers 0 "
                                "--validation-size 40 --out " +
                                out);
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find("data parallel: 2 processes (mpi), batch 8 per process, global batch 16") !=
        std::string::npos);
  // One report (rank 0's), with every test image counted once over the two shards.
  size_t reports = 0;
  for (size_t at = 0; (at = run.output.find("train time:", at)) != std::string::npos; ++at)
    ++reports;
  CHECK(reports == 1);
  CHECK(run.output.find("50 images") != std::string::npos);
}

TEST_CASE("data parallel: b3 sweep under mpirun reports the world size and both batches") {
  const std::string build_dir = std::getenv("B3_BUILD_DIR") ? std::getenv("B3_BUILD_DIR") : ".";
  const std::string worker = mpirun_worker(2, "");  // skips without MPI; the prefix is reused
  const std::string mpirun = worker.substr(0, worker.find(build_dir + "/b3_dist_worker"));
  const std::string out = build_dir + "/test_data_parallel_sweep";
  std::filesystem::remove_all(out);
  // No --data: without data/ each rank would look, and rank 0 alone may
  // print the synthetic-data notice.
  const Run run = run_capturing(
      "cd " + build_dir + " && " + mpirun + build_dir +
      "/b3 sweep --model mobilenet_v3_small --batch-sizes 7,8 --repeats 1 --steps 2 "
      "--warmup-steps 0 --train-limit 200 --validation-size 20 --test-limit 20 --workers 0 "
      "--out " +
      out);
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find("data parallel: 2 processes (mpi)") != std::string::npos);
  CHECK(run.output.find("batch 8 per rank (global 16)") != std::string::npos);
  size_t notices = 0;  // the loud synthetic-data notice names its fix once per notice
  for (size_t at = 0; (at = run.output.find("USING SYNTHETIC DATA", at)) != std::string::npos; ++at)
    ++notices;
  CHECK(notices <= 3);  // rank 0 only: its plan and its runs (warm-up off), never rank 1's
  size_t one_rank_notices = 0;
  const Run alone = run_capturing("cd " + build_dir + " && " + build_dir +
                                  "/b3 sweep --model mobilenet_v3_small --batch-sizes 7,8 "
                                  "--repeats 1 --steps 2 --warmup-steps 0 --train-limit 200 "
                                  "--validation-size 20 --test-limit 20 --workers 0 --out " +
                                  out + "-alone");
  for (size_t at = 0; (at = alone.output.find("USING SYNTHETIC DATA", at)) != std::string::npos;
       ++at)
    ++one_rank_notices;
  CHECK(notices == one_rank_notices);  // as many as one process prints
  std::ifstream json(out + "/results.json");
  REQUIRE(json.good());
  const std::string text((std::istreambuf_iterator<char>(json)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"world_size\": 2") != std::string::npos);
  CHECK(text.find("\"global_batch_size\": 16") != std::string::npos);
  std::ifstream markdown(out + "/results.md");
  const std::string md((std::istreambuf_iterator<char>(markdown)),
                       std::istreambuf_iterator<char>());
  CHECK(md.find("data parallel: 2 processes") != std::string::npos);
}

TEST_CASE("data parallel: a sharded loader yields its rank's part of each epoch") {
  auto dataset = std::make_shared<SyntheticDataset>(23);
  for (bool drop_last : {true, false}) {
    CAPTURE(drop_last);
    std::set<int64_t> seen;
    int64_t total = 0;
    for (int rank = 0; rank < 3; ++rank) {
      LoaderOptions options;
      options.batch_size = 2;
      options.drop_last = drop_last;
      options.seed = 5;
      options.num_workers = 0;
      options.shard_rank = rank;
      options.shard_count = 3;
      DataLoader loader(dataset, options);
      loader.start_epoch(1);
      const std::vector<int64_t> expected =
          dist::shard_of(DataLoader::order_for_epoch(23, true, 5, 1), rank, 3, drop_last);
      CHECK(loader.examples_per_epoch() == static_cast<int64_t>(expected.size()));
      std::vector<int64_t> got;
      while (auto batch = loader.next())
        got.insert(got.end(), batch->indices.begin(), batch->indices.end());
      // drop_last also drops a partial last batch of the shard, as the loader always does
      const size_t kept = drop_last ? expected.size() / 2 * 2 : expected.size();
      CHECK(got ==
            std::vector<int64_t>(expected.begin(), expected.begin() + static_cast<long>(kept)));
      seen.insert(got.begin(), got.end());
      total += static_cast<int64_t>(got.size());
    }
    CHECK(static_cast<int64_t>(seen.size()) == total);  // disjoint
    if (!drop_last) CHECK(total == 23);                 // evaluation: every example exactly once
  }
  LoaderOptions bad;
  bad.shard_rank = 3;
  bad.shard_count = 3;
  CHECK_THROWS_WITH_AS(DataLoader(dataset, bad), doctest::Contains("shard 3 of 3 does not exist"),
                       std::invalid_argument);
}
