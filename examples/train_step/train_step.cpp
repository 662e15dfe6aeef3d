// One training step of MobileNetV3-Small, written against an installed b3:
// build the model, load weights (or save the freshly initialized ones), run
// forward, the loss, backward and an SGD step on a fixed random batch, and
// print the loss before and after the step.
//
//   train_step --save WEIGHTS   initialize (seed 0), save the weights, train
//   train_step --load WEIGHTS   load the weights (.safetensors), train
//
// The batch is drawn from a fixed seed, so the same weights give the same
// losses: loading what --save wrote reproduces its output.
#include <b3/layers/loss.h>
#include <b3/models/mobilenet_v3.h>
#include <b3/models/state_dict.h>
#include <b3/optim/sgd.h>
#include <b3/tensor/random.h>

#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  const std::string mode = argc == 3 ? argv[1] : "";
  if (mode != "--save" && mode != "--load") {
    std::fprintf(stderr, "usage: %s --save WEIGHTS | --load WEIGHTS\n", argv[0]);
    return 2;
  }
  const std::string weights = argv[2];
  try {
    auto model = b3::mobilenet_v3_small(/*num_classes=*/10, /*seed=*/0);
    if (mode == "--save") {
      b3::save_model(weights, *model);
      std::printf("saved the initial weights to %s\n", weights.c_str());
    } else {
      b3::load_model(weights, *model);
      std::printf("loaded the weights from %s\n", weights.c_str());
    }

    b3::Generator data(42);
    const b3::Tensor images = b3::randn({8, 3, 32, 32}, data);
    const b3::Tensor labels = b3::randint(10, {8}, data);

    b3::Sgd optimizer(model->parameters(), b3::SgdOptions{.lr = 0.05, .momentum = 0.9});
    model->train();
    const b3::Tensor loss = b3::cross_entropy((*model)(images), labels);
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
    const double after = b3::cross_entropy((*model)(images), labels).item();
    std::printf("loss before the step %.6f, after %.6f\n", loss.item(), after);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "train_step: %s\n", error.what());
    return 1;
  }
}
