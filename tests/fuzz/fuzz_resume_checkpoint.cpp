// libFuzzer target: the resume-checkpoint loader (train/resume.h's
// load_resume_checkpoint: the safetensors file, the model's and the
// optimizer's entries, the "b3.resume" metadata JSON and the Dropout
// generators) on arbitrary bytes, loading into fuzz/checkpoint_subject.h's
// model and Adam. A checkpoint it accepts must leave a model and optimizer
// that can take a step (weights may be any floats, so the loss may be NaN).
#include <cstdint>
#include <exception>

#include "tensor/random.h"
#include "tensor/tensor.h"
#include "tests/fuzz/broken_promise.h"
#include "tests/fuzz/checkpoint_subject.h"
#include "tests/fuzz/input_file.h"
#include "train/resume.h"
#include "train/trainer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const b3::test::Scratch dir("b3-fuzz");
  const std::string path = b3::fuzz::write_input(dir, "checkpoint.safetensors", data, size);
  b3::fuzz::CheckpointSubject subject = b3::fuzz::make_checkpoint_subject();
  try {
    b3::load_resume_checkpoint(path, *subject.model, *subject.optimizer);
  } catch (const std::exception& refusal) {
    b3::fuzz::check_refusal(refusal);
    return 0;
  }
  b3::fuzz::train_subject_one_step(subject);
  return 0;
}
