// GraphedTrainStep (train/graphed_step.h): the first step eager, the second
// captured and replayed, every later one replayed on fixed input buffers.
#include "train/graphed_step.h"

#include <stdexcept>
#include <string>

namespace b3 {

namespace {

void require_same(const char* what, const Tensor& captured, const Tensor& given) {
  if (captured.shape() != given.shape() || captured.dtype() != given.dtype()) {
    throw std::invalid_argument(std::string("GraphedTrainStep: the graph was captured for ") +
                                what + " " + shape_str(captured.shape()) + " " +
                                dtype_name(captured.dtype()) + ", this batch's are " +
                                shape_str(given.shape()) + " " + dtype_name(given.dtype()) +
                                " (run a batch of another size with train_step)");
  }
}

}  // namespace

GraphedTrainStep::GraphedTrainStep(Module& model, Optimizer& optimizer, GradScaler* scaler)
    : model_(model),
      optimizer_(optimizer),
      scaler_(scaler),
      device_(model_device(model)),
      format_(model_memory_format(model)) {
  if (!device_.is_cuda()) {
    throw std::invalid_argument(
        "GraphedTrainStep: a CUDA graph needs the model on a CUDA device; "
        "it is on " +
        device_.str());
  }
  if (scaler_ != nullptr && scaler_->device() != device_) {
    throw std::invalid_argument("GraphedTrainStep: the GradScaler is on " +
                                scaler_->device().str() + ", the model on " + device_.str());
  }
}

StepResult GraphedTrainStep::step(const LabeledBatch& input, const StepOptions& options) {
  if (options.scaler != scaler_) {
    throw std::invalid_argument(
        "GraphedTrainStep::step: options.scaler differs from the scaler the step was made with");
  }
  const LabeledBatch batch = batch_for_device(input, device_, format_);
  if (steps_ == 0) {  // eager: gradients, optimizer state and cuDNN's choices come to exist
    const QueuedStep queued = queue_train_step(model_, optimizer_, batch, scaler_);
    ++steps_;
    return read_step_results(model_, queued, options);
  }
  if (!captured()) {
    static_batch_.images = empty_strided_like(batch.images);
    static_batch_.labels = empty_strided_like(batch.labels);
  }
  require_same("images", static_batch_.images, batch.images);
  require_same("labels", static_batch_.labels, batch.labels);
  if (captured() && optimizer_.lr() != captured_lr_) {
    throw std::logic_error("GraphedTrainStep::step: the learning rate changed from " +
                           std::to_string(captured_lr_) + " to " + std::to_string(optimizer_.lr()) +
                           " after the step was captured; a captured step keeps the rate it "
                           "had (use eager steps with an LR schedule)");
  }
  static_batch_.images.copy_(batch.images);  // device to device: queued, no host wait
  static_batch_.labels.copy_(batch.labels);
  if (!captured()) capture();
  graph_->replay();
  ++steps_;
  return read_step_results(model_, outputs_, options);
}

void GraphedTrainStep::capture() {
  auto graph = std::make_unique<cuda::CudaGraph>(device_.index);
  graph->capture_begin();
  try {
    outputs_ = queue_train_step(model_, optimizer_, static_batch_, scaler_);
    graph->capture_end();
  } catch (...) {
    graph->abandon_capture();
    outputs_ = QueuedStep();
    throw;
  }
  captured_lr_ = optimizer_.lr();
  graph_ = std::move(graph);
}

}  // namespace b3
