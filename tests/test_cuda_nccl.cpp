// Data parallelism over NCCL on a GPU (distributed/nccl_communicator.h and
// DataParallel's device path): with one GPU a world of one still runs every
// collective through NCCL, so the code that N GPUs use is exercised here:
// buffers averaged and broadcast in place on the device, and training
// through DataParallel equal to plain training bit for bit (a mean over one
// rank is exact). Each case needs a GPU and NCCL and skips cleanly (exit 77)
// without them.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "distributed/data_parallel.h"
#include "distributed/nccl_communicator.h"
#include "experiment/step_timing.h"
#include "layers/conv2d_cuda.h"
#include "models/mobilenet_v3.h"
#include "optim/adam.h"
#include "tests/support/cuda.h"
#include "train/setup.h"
#include "train/trainer.h"

using namespace b3;

namespace {

void skip_unless_nccl_device() {
  test::skip_unless_cuda_device();
  if (!dist::built_with_nccl())
    test::exit_skipped("b3 was built without NCCL (it needs CUDA, MPI and the toolkit's NCCL)");
}

std::vector<double> on_host(const Tensor& t) { return t.to(Device::cpu()).to_doubles(); }

}  // namespace

TEST_CASE("cuda nccl: a world of one averages and broadcasts device buffers in place") {
  skip_unless_nccl_device();
  const Device cuda = Device::cuda(0);
  dist::SingleProcessGroup group;
  dist::NcclCommunicator nccl(group, 0);
  CHECK(nccl.size() == 1);
  CHECK(nccl.rank() == 0);
  const std::vector<double> values{1.5, -2.0, 3.25, 1e-30, -0.0};
  for (DType dtype : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dtype));
    Tensor flat = from_doubles(values, {5}, TensorOptions(dtype).with_device(cuda));
    const void* where = flat.data_ptr();
    nccl.all_reduce_mean(flat);
    nccl.compute_waits();
    CHECK(flat.data_ptr() == where);  // in place
    CHECK(on_host(flat) == values);   // the mean over one rank is the value itself
  }
  Tensor a = from_doubles({4, 5}, {2}, TensorOptions(DType::f32).with_device(cuda));
  Tensor b = from_doubles({7}, {1}, TensorOptions(DType::i64).with_device(cuda));
  nccl.broadcast({a, b}, 0);
  nccl.compute_waits();
  CHECK(on_host(a) == std::vector<double>{4, 5});
  CHECK(on_host(b) == std::vector<double>{7});
  CHECK_THROWS_AS(nccl.broadcast({a}, 1), std::invalid_argument);  // no rank 1
  Tensor host = from_doubles({1}, {1});
  CHECK_THROWS_AS(nccl.all_reduce_mean(host), std::invalid_argument);  // not on the device
}

TEST_CASE("cuda nccl: training through DataParallel over NCCL equals plain training") {
  skip_unless_nccl_device();
  const Device cuda = Device::cuda(0);
  cuda::set_deterministic_convolutions(0, true);
  auto plain = mobilenet_v3_small(10, 5);
  auto parallel_model = mobilenet_v3_small(10, 5);
  prepare_model(*plain, cuda, MemoryFormat::channels_last);
  prepare_model(*parallel_model, cuda, MemoryFormat::channels_last);
  Adam plain_adam(plain->parameters(), AdamOptions{1e-3});
  Adam parallel_adam(parallel_model->parameters(), AdamOptions{1e-3});
  dist::SingleProcessGroup group;
  dist::DataParallelOptions options;
  options.communicate_alone = true;          // every collective, through NCCL
  options.bucket_bytes = size_t{256} << 10;  // many buckets, most launched during backward
  dist::DataParallel parallel(*parallel_model, group, options);
  REQUIRE(parallel.transport() == "nccl");
  StepOptions plain_options, parallel_options;
  parallel_options.data_parallel = &parallel;
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    const LabeledBatch batch = experiment::uniform_batch(8, 32, 10, MemoryFormat::channels_last,
                                                         cuda, 40 + static_cast<uint64_t>(step));
    const StepResult p = train_step(*plain, plain_adam, batch, plain_options);
    const StepResult d = train_step(*parallel_model, parallel_adam, batch, parallel_options);
    CHECK(p.loss == d.loss);
    size_t during_backward = 0;
    for (const auto& launch : parallel.last_launches()) during_backward += launch.during_backward;
    CHECK(parallel.last_launches().size() == parallel.buckets().size());
    CHECK(during_backward + 1 >= parallel.buckets().size());  // all but the first layers' bucket
  }
  const auto a = plain->named_parameters();
  const auto b = parallel_model->named_parameters();
  REQUIRE(a.size() == b.size());
  int differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (on_host(a[i].second) != on_host(b[i].second) && ++differing <= 5)
      MESSAGE("differs: " << a[i].first);
  }
  CHECK(differing == 0);
}
