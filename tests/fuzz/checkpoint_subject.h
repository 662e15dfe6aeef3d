// The small model and optimizer that the resume-checkpoint fuzz target loads
// checkpoints into, and that make_seeds writes its seed checkpoint from: a
// convolution, BatchNorm (parameters and buffers, one of them i64), Dropout
// (a generator in the resume metadata) and a linear classifier, with Adam
// (moments and step counts), so every kind of entry a real checkpoint holds
// is there, at a size that loads in microseconds.
#pragma once

#include <memory>

#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/pooling.h"
#include "optim/adam.h"
#include "tensor/random.h"
#include "tensor/tensor.h"
#include "train/trainer.h"

namespace b3::fuzz {

struct CheckpointSubject {
  std::shared_ptr<Sequential> model;
  std::unique_ptr<Adam> optimizer;
};

inline CheckpointSubject make_checkpoint_subject() {
  Generator gen(1);
  CheckpointSubject subject;
  subject.model = std::make_shared<Sequential>();
  Conv2dOptions conv;
  conv.in_channels = 3;
  conv.out_channels = 4;
  conv.kernel_size = 3;
  conv.padding = 1;
  subject.model->push_back(std::make_shared<Conv2d>(conv, gen));
  subject.model->push_back(std::make_shared<BatchNorm2d>(4));
  subject.model->push_back(std::make_shared<ReLU>());
  subject.model->push_back(std::make_shared<AdaptiveAvgPool2d>());
  subject.model->push_back(std::make_shared<Flatten>());
  subject.model->push_back(std::make_shared<Dropout>(0.2, 7));
  subject.model->push_back(std::make_shared<Linear>(4, 3, gen));
  subject.optimizer = std::make_unique<Adam>(subject.model->parameters(), AdamOptions{});
  return subject;
}

// One training step of the subject on a fixed small batch (the seed maker's,
// and the target's check that an accepted checkpoint trains).
inline void train_subject_one_step(CheckpointSubject& subject) {
  Generator gen(3);
  const LabeledBatch batch{rand({2, 3, 4, 4}, gen), from_doubles({0, 2}, {2}, DType::i64)};
  train_step(*subject.model, *subject.optimizer, batch);
}

}  // namespace b3::fuzz
