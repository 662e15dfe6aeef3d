// Resuming a training run (train/resume.h, b3 train --checkpoint-every,
// --resume): a run killed with SIGKILL at several points and resumed from
// its newest checkpoint ends with the uninterrupted run's final checkpoint,
// byte for byte, and its metrics.csv rows (but the time columns); SIGTERM
// and SIGINT stop it with a checkpoint and exit 143 / 130; other settings are
// refused, naming them; and the pieces: names, rotation, metadata.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "distributed/launch.h"
#include "models/mobilenet_v3.h"
#include "tests/support/files.h"
#include "train/resume.h"

using namespace b3;
namespace fs = std::filesystem;

namespace {

// A small CPU run: 30 steps per epoch, dropout active, a warmed-up cosine
// learning rate (its position must resume too), validation and test (2
// epochs unless the caller gives --epochs).
const std::string kBase =
    " train --data synthetic --model mobilenet_v3_small --train-limit 480 --validation-size 64 "
    "--test-limit 64 --workers 2 --eval-batch-size 64 --lr-schedule cosine --warmup-steps 8";
const std::string kRun = kBase + " --epochs 2 --batch-size 16";

std::string b3_binary() {
  const char* build = std::getenv("B3_BUILD_DIR");
  REQUIRE_MESSAGE(build != nullptr, "B3_BUILD_DIR is not set: run this test through ctest");
  return std::string(build) + "/b3";
}

// Starts the shell command line `command` (which should exec its program,
// so that the pid is the program's); returns its pid.
pid_t start_shell(const std::string& command) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Starts `arguments` of b3 with output to `log`; returns its pid.
pid_t start_b3(const std::string& arguments, const std::string& log) {
  return start_shell("exec " + b3_binary() + arguments + " > " + log + " 2>&1");
}

// Waits for `pid`; its exit status, or 128 + the signal that ended it.
int wait_for(pid_t pid) {
  int raw = 0;
  REQUIRE(waitpid(pid, &raw, 0) == pid);
  return WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
}

int run_b3(const std::string& arguments, const std::string& log) {
  return wait_for(start_b3(arguments, log));
}

// Complete checkpoints (checkpoint-step<N>.safetensors) in `dir`, or with
// `temporaries` the temporaries of saves (checkpoint-step<N>.safetensors.tmp.<pid>.<n>).
size_t checkpoints_in(const fs::path& dir, bool temporaries = false) {
  size_t n = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    n += name.rfind("checkpoint-step", 0) == 0 &&
         (name.find(".tmp.") != std::string::npos) == temporaries;
  }
  return n;
}

// metrics.csv without the two time columns (train_seconds, images_per_second).
std::vector<std::string> rows_without_times(const fs::path& csv) {
  std::vector<std::string> rows;
  for (const std::string& line : test::lines_of(test::read_text(csv))) {
    std::vector<std::string> fields = test::split_csv(line);
    REQUIRE(fields.size() == 8);
    fields.erase(fields.begin() + 4, fields.begin() + 6);
    std::string row;
    for (const std::string& f : fields) row += f + ",";
    rows.push_back(row);
  }
  return rows;
}

// The uninterrupted run, made once per test binary (in a folder that lives
// until the binary exits).
const fs::path& reference_run() {
  static const test::Scratch scratch("b3-resume-reference");
  static const fs::path dir = [] {
    const fs::path out = scratch.path / "uninterrupted";
    REQUIRE(run_b3(kRun + " --out " + out.string(), scratch / "uninterrupted.log") == 0);
    return out;
  }();
  return dir;
}

}  // namespace

TEST_CASE("resume: killed with SIGKILL anywhere after a checkpoint, the run ends as if never") {
  test::Scratch scratch("b3-resume");
  const fs::path& reference = reference_run();
  const std::string final_bytes = test::read_text(reference / "checkpoint.safetensors");
  REQUIRE(!final_bytes.empty());
  std::mt19937 random(2026);
  // Kill points: soon after the 1st, the 3rd and the 7th checkpoint (of 12:
  // every 5 steps of 60, and the two epoch ends), each after a random delay.
  for (size_t after : {size_t{1}, size_t{3}, size_t{7}}) {
    CAPTURE(after);
    const fs::path dir = scratch.path / ("killed-" + std::to_string(after));
    const pid_t pid =
        start_b3(kRun + " --checkpoint-every 5 --out " + dir.string(), scratch / "killed.log");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    // At most --keep-checkpoints (2) stay, so count them as they come.
    size_t seen = 0;
    std::string newest;
    while (seen < after && std::chrono::steady_clock::now() < deadline) {
      const auto found = newest_checkpoint(dir);
      if (found && found->string() != newest) {
        newest = found->string();
        ++seen;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    REQUIRE(seen == after);
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 150));
    kill(pid, SIGKILL);
    const int status = wait_for(pid);
    MESSAGE("killed after checkpoint " << after << " ("
                                       << newest_checkpoint(dir)->filename().string()
                                       << " the newest): status " << status);
    // --keep-checkpoints 2: the old one goes once the new one is on disk, so
    // a kill in between leaves 3 (and a kill during a save its temporary).
    CHECK(checkpoints_in(dir) <= 3);
    CHECK(checkpoints_in(dir, /*temporaries=*/true) <= 1);
    REQUIRE(run_b3(kRun + " --checkpoint-every 5 --resume auto --out " + dir.string(),
                   scratch / "resumed.log") == 0);
    CHECK(checkpoints_in(dir) == 2);  // the resumed run's rotation left the newest 2
    CHECK(checkpoints_in(dir, /*temporaries=*/true) ==
          0);  // and removed the killed save's temporary
    CHECK(test::read_text(scratch / "resumed.log").find("resumed from") != std::string::npos);
    CHECK(test::read_text(dir / "checkpoint.safetensors") == final_bytes);  // weights, optimizer
    CHECK(rows_without_times(dir / "metrics.csv") == rows_without_times(reference / "metrics.csv"));
  }
}

TEST_CASE("resume: SIGTERM and SIGINT stop with a checkpoint, exit 143 and 130, and resume") {
  test::Scratch scratch("b3-resume");
  const fs::path& reference = reference_run();
  for (int number : {SIGTERM, SIGINT}) {
    CAPTURE(number);
    const fs::path dir = scratch.path / ("signal-" + std::to_string(number));
    const pid_t pid = start_b3(kRun + " --out " + dir.string(), scratch / "signal.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(700));  // inside the first epoch
    kill(pid, number);
    const int status = wait_for(pid);
    const std::string log = test::read_text(scratch / "signal.log");
    INFO(log);
    CHECK(status == 128 + number);
    CHECK(log.find(number == SIGTERM ? "stopped by SIGTERM" : "stopped by SIGINT") !=
          std::string::npos);
    CHECK(log.find("--resume") != std::string::npos);
    REQUIRE(checkpoints_in(dir) == 1);
    REQUIRE(run_b3(kRun + " --resume auto --out " + dir.string(), scratch / "resumed.log") == 0);
    CHECK(test::read_text(dir / "checkpoint.safetensors") ==
          test::read_text(reference / "checkpoint.safetensors"));
  }
}

TEST_CASE("resume: a 2-rank data-parallel run killed after a checkpoint resumes exactly") {
  if (!dist::built_with_mpi() || std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    std::printf("SKIPPED: needs b3 built with MPI and mpirun (scripts/setup.sh)\n");
    std::exit(77);
  }
  test::Scratch scratch("b3-resume");
  // As tests/test_data_parallel.cpp starts its ranks; setsid gives the job a
  // process group of its own, so one kill reaches mpirun and both ranks.
  const std::string mpirun =
      " --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader "
      "--mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS=1 -np 2 " +
      b3_binary();
  const auto start_job = [&](const std::string& arguments, const std::string& log) {
    return start_shell("exec setsid mpirun" + mpirun + arguments + " > " + log + " 2>&1");
  };
  const std::string run = kBase + " --epochs 1 --batch-size 8 --checkpoint-every 5";
  const fs::path whole = scratch.path / "whole";
  REQUIRE(wait_for(start_job(run + " --out " + whole.string(), scratch / "whole.log")) == 0);
  const fs::path dir = scratch.path / "killed";
  const pid_t job = start_job(run + " --out " + dir.string(), scratch / "killed.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!newest_checkpoint(dir) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(newest_checkpoint(dir).has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(-job, SIGKILL);  // mpirun and the ranks: setsid made the job its own group
  wait_for(job);
  MESSAGE("killed with " << newest_checkpoint(dir)->filename().string() << " the newest");
  REQUIRE(wait_for(start_job(run + " --resume auto --out " + dir.string(),
                             scratch / "resumed.log")) == 0);
  CHECK(test::read_text(scratch / "resumed.log").find("resumed from") != std::string::npos);
  CHECK(test::read_text(dir / "checkpoint.safetensors") ==
        test::read_text(whole / "checkpoint.safetensors"));
  CHECK(rows_without_times(dir / "metrics.csv") == rows_without_times(whole / "metrics.csv"));
}

// A size-limited tmpfs mounted for one test (needs root and mount rights:
// without them the test skips).
class SmallDisk {
 public:
  SmallDisk(const fs::path& where, const std::string& size) : where_(where) {
    fs::create_directories(where);
    const std::string command =
        "mount -t tmpfs -o size=" + size + " tmpfs '" + where.string() + "' 2>/dev/null";
    if (std::system(command.c_str()) != 0) {
      std::printf("SKIPPED: cannot mount a tmpfs (needs root and mount rights)\n");
      std::exit(77);
    }
  }
  ~SmallDisk() { std::system(("umount -l '" + where_.string() + "' 2>/dev/null").c_str()); }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

 private:
  fs::path where_;
};

TEST_CASE("resume: a full disk fails with the file named, and the previous checkpoint resumes") {
  test::Scratch scratch("b3-resume");
  const fs::path& reference = reference_run();
  // One checkpoint of MobileNetV3-Small with Adam is ~18 MB (weights and two
  // moments): the first fits in 28 MB, the second does not.
  const SmallDisk disk(scratch.path / "disk", "28m");
  const fs::path dir = scratch.path / "disk" / "run";
  const int status =
      run_b3(kRun + " --checkpoint-every 5 --out " + dir.string(), scratch / "full.log");
  const std::string log = test::read_text(scratch / "full.log");
  INFO(log);
  CHECK(status == 1);
  CHECK(log.find(checkpoint_file_name(10)) != std::string::npos);  // the file that did not fit
  CHECK(log.find("No space left on device") != std::string::npos);
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir)) left.push_back(entry.path().filename());
  CHECK(left == std::vector<std::string>{checkpoint_file_name(5)});  // no half-written file
  const fs::path elsewhere = scratch.path / "elsewhere";
  REQUIRE(run_b3(kRun + " --checkpoint-every 5 --resume " +
                     (dir / checkpoint_file_name(5)).string() + " --out " + elsewhere.string(),
                 scratch / "resumed.log") == 0);
  CHECK(test::read_text(elsewhere / "checkpoint.safetensors") ==
        test::read_text(reference / "checkpoint.safetensors"));
}

TEST_CASE("resume: other settings, a final checkpoint and a missing --out are refused") {
  test::Scratch scratch("b3-resume");
  const fs::path dir = scratch.path / "run";
  const std::string one_epoch = kBase + " --epochs 1 --batch-size 16";
  REQUIRE(run_b3(one_epoch + " --checkpoint-every 10 --out " + dir.string(),
                 scratch / "first.log") == 0);
  const std::string checkpoint = newest_checkpoint(dir)->string();
  CHECK(run_b3(kBase + " --epochs 2 --batch-size 8 --resume " + checkpoint,
               scratch / "other.log") != 0);
  const std::string other = test::read_text(scratch / "other.log");
  CHECK(other.find("batch_size: 16 in the checkpoint, 8 now") != std::string::npos);
  CHECK(other.find("epochs: 1 in the checkpoint, 2 now") != std::string::npos);
  CHECK(run_b3(one_epoch + " --lr 0.01 --resume " + checkpoint, scratch / "lr.log") != 0);
  CHECK(run_b3(one_epoch + " --lr 0.01 --allow-lr-change --resume " + checkpoint,
               scratch / "lr-allowed.log") == 0);
  CHECK(test::read_text(scratch / "lr-allowed.log").find("the learning rate changes on resume") !=
        std::string::npos);
  CHECK(run_b3(kRun + " --resume " + (dir / "checkpoint.safetensors").string(),
               scratch / "final.log") != 0);
  CHECK(test::read_text(scratch / "final.log").find("not a resume checkpoint") !=
        std::string::npos);
  CHECK(run_b3(kRun + " --checkpoint-every 5", scratch / "no-out.log") != 0);
  CHECK(test::read_text(scratch / "no-out.log").find("--checkpoint-every needs --out") !=
        std::string::npos);
}

TEST_CASE(
    "resume: checkpoint names sort by step, rotation keeps the newest, metadata round-trips") {
  CHECK(checkpoint_file_name(1234) == "checkpoint-step000001234.safetensors");
  test::Scratch scratch("b3-resume");
  for (int64_t step : {5, 40, 10, 100}) {
    std::ofstream(scratch / checkpoint_file_name(step)) << "x";
  }
  std::ofstream(scratch / "checkpoint-stepXYZ.safetensors") << "not a step";
  CHECK(newest_checkpoint(scratch.path)->filename() == checkpoint_file_name(100));
  remove_old_checkpoints(scratch.path, 2);
  CHECK(fs::exists(scratch / checkpoint_file_name(100)));
  CHECK(fs::exists(scratch / checkpoint_file_name(40)));
  CHECK_FALSE(fs::exists(scratch / checkpoint_file_name(10)));
  CHECK_FALSE(fs::exists(scratch / checkpoint_file_name(5)));
  CHECK(fs::exists(scratch / "checkpoint-stepXYZ.safetensors"));  // not ours: left alone
  // Temporaries of saves: one whose writer has exited goes, one of a live
  // process (this one) stays, names that are not a save's are left alone.
  const pid_t gone = fork();
  REQUIRE(gone >= 0);
  if (gone == 0) _exit(0);
  REQUIRE(waitpid(gone, nullptr, 0) == gone);
  const std::string stale = checkpoint_file_name(200) + ".tmp." + std::to_string(gone) + ".77";
  const std::string live = checkpoint_file_name(300) + ".tmp." + std::to_string(getpid()) + ".78";
  const std::string other = checkpoint_file_name(400) + ".tmp.notapid.1";
  for (const std::string& name : {stale, live, other}) std::ofstream(scratch / name) << "partial";
  remove_old_checkpoints(scratch.path, 2);
  CHECK_FALSE(fs::exists(scratch / stale));
  CHECK(fs::exists(scratch / live));
  CHECK(fs::exists(scratch / other));
  CHECK(fs::exists(scratch / checkpoint_file_name(100)));
  CHECK_THROWS_AS(remove_old_checkpoints(scratch.path, 0), std::invalid_argument);
  CHECK_FALSE(newest_checkpoint(scratch.path / "absent").has_value());

  auto model = mobilenet_v3_small(10, 4);
  TrainProgress progress;
  progress.epoch = 1;
  progress.step_in_epoch = 7;
  progress.global_step = 37;
  progress.loss_sum = 0.1 + 0.2;  // not exactly representable: must round-trip exactly
  progress.correct = 12;
  progress.images = 112;
  EpochReport first;
  first.steps = 30;
  first.train_loss = 1.0 / 3.0;
  first.validation = EvalResult{2.5, 0.125, 64, 0.01};
  progress.finished = {first};
  const RunSettings settings = {{"batch_size", "16"}, {"lr", "0.000500"}};
  const ResumePoint point =
      read_resume_point(resume_metadata(progress, settings, *model), "file.safetensors");
  CHECK(point.progress.global_step == 37);
  CHECK(point.progress.step_in_epoch == 7);
  CHECK(point.progress.loss_sum == progress.loss_sum);
  REQUIRE(point.progress.finished.size() == 1);
  CHECK(point.progress.finished[0].train_loss == first.train_loss);
  CHECK(point.progress.finished[0].validation->accuracy == 0.125);
  CHECK(point.settings == settings);
  CHECK(point.generators == generator_states(*model));
  CHECK(point.loss_scale.empty());  // no GradScaler in this run

  // A mixed-precision run's GradScaler state (its state_dict: an f32 scale,
  // an i64 growth tracker) comes back as load_state_dict takes it.
  const NamedTensors loss_scale{{"scale", full({}, 16384.0, TensorOptions(DType::f32))},
                                {"growth_tracker", full({}, 1999.0, TensorOptions(DType::i64))}};
  const ResumePoint scaled = read_resume_point(
      resume_metadata(progress, settings, *model, loss_scale), "file.safetensors");
  REQUIRE(scaled.loss_scale.size() == 2);
  CHECK(scaled.loss_scale[0].first == "scale");
  CHECK(scaled.loss_scale[0].second.dtype() == DType::f32);
  CHECK(scaled.loss_scale[0].second.item() == 16384.0);
  CHECK(scaled.loss_scale[1].first == "growth_tracker");
  CHECK(scaled.loss_scale[1].second.dtype() == DType::i64);
  CHECK(scaled.loss_scale[1].second.item() == 1999.0);
  CHECK_THROWS_WITH_AS(read_resume_point({}, "w.safetensors"),
                       doctest::Contains("w.safetensors: not a resume checkpoint"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(read_resume_point({{kResumeMetadataKey, "{\"format\": 1}"}}, "m.st"),
                       doctest::Contains("m.st: malformed"), std::invalid_argument);
  // JSON's parse errors quote what they read: escaped, never raw (the fuzzer's finding).
  CHECK_THROWS_WITH_AS(read_resume_point({{kResumeMetadataKey, "{\"format\": 1\x99\x1b}"}}, "m.st"),
                       doctest::Contains("last read: '1\\x99'"), std::invalid_argument);
  // Integers must be JSON integers in range: the fuzzer's "format": 1e300 was
  // cast float-to-int (undefined behaviour) before it was compared.
  const std::string good = resume_metadata(progress, settings, *model).at(kResumeMetadataKey);
  const auto with = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    return SafetensorsMetadata{{kResumeMetadataKey, text.replace(at, from.size(), to)}};
  };
  CHECK_THROWS_WITH_AS(read_resume_point(with("\"format\":1", "\"format\":1e300"), "m.st"),
                       doctest::Contains("\"format\" must be an integer, got 1e+300"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      read_resume_point(with("\"global_step\":37", "\"global_step\":37.5"), "m.st"),
      doctest::Contains("\"global_step\" must be an integer, got 37.5"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      read_resume_point(with("\"global_step\":37", "\"global_step\":18446744073709551615"), "m.st"),
      doctest::Contains("\"global_step\" must be an integer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(read_resume_point(with("\"generators\":[[", "\"generators\":[[-1,"), "m.st"),
                       doctest::Contains("not a 64-bit unsigned integer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      read_resume_point(with("\"generators\":[[", "\"generators\":[[1e30,"), "m.st"),
      doctest::Contains("not a 64-bit unsigned integer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      require_same_run(settings, {{"batch_size", "8"}, {"lr", "0.000500"}}, false, "c.st"),
      doctest::Contains("batch_size: 16 in the checkpoint, 8 now"), std::invalid_argument);
  std::string note;
  require_same_run(settings, {{"batch_size", "16"}, {"lr", "0.1"}}, true, "c.st", &note);
  CHECK(note.find("lr: 0.000500 in the checkpoint, 0.1 now") != std::string::npos);
}
