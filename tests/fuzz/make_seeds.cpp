// Writes the fuzz targets' seed corpora with b3's own writers: tiny valid
// files of every kind each reader takes (no CIFAR-10 data), so the fuzzer
// starts from inputs that reach deep into the readers. Also writes the
// command-line dictionary (every subcommand and option name).
//
//   b3_fuzz_make_seeds <corpus root>   -> <root>/<target>/seed-*, <root>/command_line.dict
//
// tests/fuzz/corpus/ in the repository is this program's output plus the
// regression inputs the fuzzers found (named regression-*).
#include <stb/stb_image_write.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "cli/app.h"
#include "data/cifar10_binary.h"
#include "data/files.h"
#include "data/synthetic.h"
#include "models/state_dict.h"
#include "tensor/random.h"
#include "tensor/safetensors.h"
#include "tests/fuzz/checkpoint_subject.h"
#include "tests/support/torch_file_builder.h"
#include "train/resume.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

void write_bytes(const fs::path& path, const Bytes& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("make_seeds: cannot write " + path.string());
}

Bytes read_bytes(const fs::path& path) { return b3::read_file_bytes(path.string(), "make_seeds"); }

// A CIFAR-10 batch file of `count` synthetic records with `classes` classes,
// through write_cifar10_batches.
Bytes cifar10_records(int64_t count, int64_t classes, const fs::path& scratch) {
  const b3::SyntheticDataset dataset(count, {32, 32, 3}, classes, 5);
  const fs::path file = scratch / "records.bin";
  b3::write_cifar10_batches(dataset, {file.string()});
  return read_bytes(file);
}

void cifar10_seeds(const fs::path& dir, const fs::path& scratch) {
  Bytes plain{0};
  const Bytes records = cifar10_records(3, 10, scratch);
  plain.insert(plain.end(), records.begin(), records.end());
  write_bytes(dir / "seed-three-records", plain);
  const std::string meta = "cat\ndog\r\n\nfrog\n";
  Bytes with_meta{1, static_cast<uint8_t>(meta.size())};
  with_meta.insert(with_meta.end(), meta.begin(), meta.end());
  const Bytes three_classes = cifar10_records(2, 3, scratch);
  with_meta.insert(with_meta.end(), three_classes.begin(), three_classes.end());
  write_bytes(dir / "seed-meta-three-classes", with_meta);
}

void append_to(void* context, void* data, int size) {
  auto* bytes = static_cast<Bytes*>(context);
  const auto* begin = static_cast<const uint8_t*>(data);
  bytes->insert(bytes->end(), begin, begin + size);
}

void image_seeds(const fs::path& dir) {
  const int width = 6, height = 4;
  const b3::SyntheticDataset dataset(1, {height, width, 3}, 1, 9);
  Bytes rgb(static_cast<size_t>(width * height * 3));
  dataset.get(0, rgb.data());
  Bytes gray, rgba;
  for (int p = 0; p < width * height; ++p) {
    gray.push_back(rgb[3 * p]);
    rgba.insert(rgba.end(), {rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2], static_cast<uint8_t>(p)});
  }
  const auto encoded = [&](const std::function<int(Bytes*)>& write) {
    Bytes out;
    if (write(&out) == 0) throw std::runtime_error("make_seeds: stb_image_write failed");
    return out;
  };
  write_bytes(dir / "seed-rgb.png", encoded([&](Bytes* out) {
                return stbi_write_png_to_func(append_to, out, width, height, 3, rgb.data(), 0);
              }));
  write_bytes(dir / "seed-gray.png", encoded([&](Bytes* out) {
                return stbi_write_png_to_func(append_to, out, width, height, 1, gray.data(), 0);
              }));
  write_bytes(dir / "seed-rgba.png", encoded([&](Bytes* out) {
                return stbi_write_png_to_func(append_to, out, width, height, 4, rgba.data(), 0);
              }));
  write_bytes(dir / "seed-rgb.bmp", encoded([&](Bytes* out) {
                return stbi_write_bmp_to_func(append_to, out, width, height, 3, rgb.data());
              }));
  write_bytes(dir / "seed-rgba.bmp", encoded([&](Bytes* out) {
                return stbi_write_bmp_to_func(append_to, out, width, height, 4, rgba.data());
              }));
  write_bytes(dir / "seed-rgb.jpg", encoded([&](Bytes* out) {
                return stbi_write_jpg_to_func(append_to, out, width, height, 3, rgb.data(), 90);
              }));
  const auto netpbm = [&](const std::string& magic, const Bytes& pixels) {
    const std::string header =
        magic + "\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n";
    Bytes out(header.begin(), header.end());
    out.insert(out.end(), pixels.begin(), pixels.end());
    return out;
  };
  write_bytes(dir / "seed-rgb.ppm", netpbm("P6", rgb));
  write_bytes(dir / "seed-gray.pgm", netpbm("P5", gray));
}

void safetensors_seeds(const fs::path& dir) {
  b3::Generator gen(2);
  const b3::NamedTensors every_dtype{
      {"f64", b3::rand({2, 3}, gen, b3::DType::f64)},
      {"f32", b3::rand({3}, gen)},
      {"f16", b3::rand({2, 2}, gen).to(b3::DType::f16)},
      {"i64", b3::from_doubles({1, -2, 3}, {3}, b3::DType::i64)},
      {"i32", b3::from_doubles({4, 5}, {1, 2}, b3::DType::i32)},
      {"u8", b3::from_doubles({0, 255, 7, 8}, {2, 2}, b3::DType::u8)},
      {"scalar", b3::from_doubles({1.5}, {}, b3::DType::f32)},
      {"empty", b3::zeros({0, 4})},
  };
  write_bytes(dir / "seed-every-dtype", b3::encode_safetensors(every_dtype, {{"epoch", "3"}}));
  write_bytes(dir / "seed-one-tensor", b3::encode_safetensors({{"w", b3::rand({4}, gen)}}));
  write_bytes(dir / "seed-nothing", b3::encode_safetensors({}));
}

void checkpoint_seeds(const fs::path& dir, const fs::path& scratch) {
  b3::fuzz::CheckpointSubject subject = b3::fuzz::make_checkpoint_subject();
  b3::fuzz::train_subject_one_step(subject);
  b3::TrainProgress progress;
  progress.epoch = 1;
  progress.step_in_epoch = 2;
  progress.global_step = 7;
  progress.loss_sum = 4.25;
  progress.correct = 3;
  progress.images = 8;
  b3::EpochReport finished;
  finished.steps = 5;
  finished.train_loss = 1.1;
  finished.validation = b3::EvalResult{1.2, 0.5, 10, 0.1};
  progress.finished.push_back(finished);
  const b3::RunSettings settings{{"lr", "0.001"}, {"batch_size", "2"}};
  const fs::path file = scratch / "checkpoint.safetensors";
  b3::save_checkpoint(file.string(), *subject.model, *subject.optimizer,
                      b3::resume_metadata(progress, settings, *subject.model));
  write_bytes(dir / "seed-after-one-step", read_bytes(file));
}

void collect_names(CLI::App& app, const std::string& prefix, std::set<std::string>& words,
                   const fs::path& dir) {
  Bytes arguments(prefix.begin(), prefix.end());
  for (const CLI::Option* option : app.get_options()) {
    if (option->get_lnames().empty()) continue;
    const std::string name = "--" + option->get_lnames().front();
    words.insert(name);
    arguments.insert(arguments.end(), name.begin(), name.end());
    arguments.push_back(0);
    if (option->get_expected_min() > 0) {
      const std::string value = option->get_default_str().empty() ? "1" : option->get_default_str();
      arguments.insert(arguments.end(), value.begin(), value.end());
      arguments.push_back(0);
    }
  }
  if (!prefix.empty()) {
    std::string file = prefix;
    for (char& c : file) c = c == '\0' ? '-' : c;
    write_bytes(dir / ("seed-" + file + "options"), arguments);
  }
  for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) {
    words.insert(command->get_name());
    collect_names(*command, prefix + command->get_name() + std::string(1, '\0'), words, dir);
  }
}

void command_line_seeds(const fs::path& dir, const fs::path& dictionary) {
  CLI::App app;
  b3::cli::build_command_line(app);
  std::set<std::string> words;
  collect_names(app, "", words, dir);
  std::ofstream out(dictionary, std::ios::trunc);
  out << "# Every subcommand and option name of build/b3 (written by b3_fuzz_make_seeds).\n";
  for (const std::string& word : words) out << "\"" << word << "\"\n";
  if (!out) throw std::runtime_error("make_seeds: cannot write " + dictionary.string());
}

}  // namespace

// torch.save files as PyTorch 1.13 lays them out, built by the tests' own
// writer (no Python): with and without ZIP64 records; and their data.pkl
// alone for the pickle target.
void torch_file_seeds(const fs::path& file_dir, const fs::path& pickle_dir) {
  write_bytes(file_dir / "seed-zip64", b3::test::sample_file(true));
  write_bytes(file_dir / "seed-zip32", b3::test::sample_file(false));
  write_bytes(pickle_dir / "seed-state-dict",
              b3::test::state_dict_pickle(b3::test::sample_tensors()));
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: b3_fuzz_make_seeds <corpus root>\n";
    return 2;
  }
  try {
    const fs::path root = argv[1];
    const fs::path scratch = root / ".scratch";
    fs::create_directories(scratch);
    cifar10_seeds(root / "cifar10_binary", scratch);
    image_seeds(root / "image_decode");
    safetensors_seeds(root / "safetensors");
    checkpoint_seeds(root / "resume_checkpoint", scratch);
    torch_file_seeds(root / "torch_file", root / "torch_pickle");
    command_line_seeds(root / "command_line", root / "command_line.dict");
    fs::remove_all(scratch);
  } catch (const std::exception& e) {
    std::cerr << "b3_fuzz_make_seeds: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
