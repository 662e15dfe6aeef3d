// GraphedTrainStep: train_step() (train/trainer.h) replayed as one CUDA graph
// (tensor/cuda_graph.h), as PyTorch's whole-network capture
// (torch.cuda.graphs) does it, for a model on a CUDA device:
//
//   GraphedTrainStep graphed(model, optimizer, scaler);   // scaler may be null
//   for (batch : batches) result = graphed.step(batch, options);
//
//   step 1        eager: train_step() itself, which creates the gradients,
//                 the optimizer's state and device plan, and runs cuDNN's
//                 algorithm searches (none of which a capture may do);
//   step 2        the batch is copied into fixed device buffers, the step is
//                 captured on them (recorded, not run), then replayed once;
//   steps 3, ...  copy the batch into the buffers, replay.
// Every call does what one train_step() call does, so a run of graphed steps
// equals a run of eager steps (bit for bit where the kernels are
// deterministic: tests/test_cuda_graph.cpp). Batch, gradient, optimizer and
// loss-scaler state stay at the addresses they had at capture.
//
// What a graph cannot follow, refused with a clear error: a batch of another
// shape or dtype than the captured one (the last, smaller batch of an epoch
// needs an eager step: use train_step for it), a learning rate changed after
// the capture (the rate is a kernel argument; an LR schedule needs eager
// steps for now), a different scaler. The results (loss, accuracy, loss
// scale) are read only when options.read_results asks, as in train_step.
#pragma once

#include <cstdint>
#include <memory>

#include "layers/module.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "tensor/cuda_graph.h"
#include "train/trainer.h"

namespace b3 {

class GraphedTrainStep {
 public:
  // The model must be on a CUDA device; `scaler` (mixed precision) may be null.
  GraphedTrainStep(Module& model, Optimizer& optimizer, GradScaler* scaler);

  // One training step on `batch` (on the host or the device); options.scaler
  // must be the scaler given to the constructor.
  StepResult step(const LabeledBatch& batch, const StepOptions& options);

  bool captured() const { return graph_ != nullptr && graph_->captured(); }
  int64_t steps() const { return steps_; }

 private:
  void capture();

  Module& model_;
  Optimizer& optimizer_;
  GradScaler* scaler_;
  Device device_;
  MemoryFormat format_;
  int64_t steps_ = 0;
  double captured_lr_ = 0.0;
  LabeledBatch static_batch_;  // the graph's inputs (made before the capture)
  QueuedStep outputs_;         // the graph's outputs (logits, loss)
  std::unique_ptr<cuda::CudaGraph> graph_;
};

}  // namespace b3
