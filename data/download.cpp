// Downloading, verifying and unpacking the CIFAR-10 archive with curl/wget and tar.
#include "data/download.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "data/cifar10_binary.h"
#include "data/md5.h"

extern char** environ;

namespace fs = std::filesystem;

namespace b3 {

namespace {

bool batches_complete(const fs::path& dir) {
  std::error_code error;
  for (const char* split : {"train", "test"}) {
    for (const std::string& name : cifar10_batch_file_names(split)) {
      if (!fs::is_regular_file(dir / name, error)) return false;
    }
  }
  return true;
}

std::string by_hand(const DownloadOptions& options) {
  return "Download " + options.url + " by hand (MD5 " + options.md5 + ") into '" + options.dir +
         "/' and run `b3 data download --dir " + options.dir +
         "` again to check and unpack it, or use --data synthetic";
}

}  // namespace

bool program_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string dirs = path;
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start);
    const std::string dir = dirs.substr(start, end == std::string::npos ? end : end - start);
    if (!dir.empty() && ::access((fs::path(dir) / program).c_str(), X_OK) == 0) return true;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return false;
}

int run_subprocess(const std::vector<std::string>& argv, bool quiet) {
  if (argv.empty()) throw std::invalid_argument("run_subprocess: empty command");
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 127;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string download_cifar10(const DownloadOptions& options) {
  auto say = [&](const std::string& message) {
    if (!options.quiet) std::cerr << "b3 data download: " << message << "\n";
  };
  const fs::path dir = options.dir;
  const fs::path batches = dir / "cifar-10-batches-bin";
  if (batches_complete(batches)) {
    say("CIFAR-10 is already in '" + batches.string() + "'");
    return batches.string();
  }
  std::error_code error;
  fs::create_directories(dir, error);
  if (!fs::is_directory(dir, error)) {
    throw std::runtime_error("data download: cannot create directory '" + dir.string() + "'");
  }

  const fs::path archive = dir / options.archive_name;
  if (fs::exists(archive, error)) {
    const std::string md5 = md5_file(archive.string());
    if (md5 != options.md5) {
      say("'" + archive.string() + "' has MD5 " + md5 + ", expected " + options.md5 +
          ": removing it and downloading again");
      fs::remove(archive, error);
    } else {
      say("using the archive already in '" + archive.string() + "' (MD5 checked)");
    }
  }

  if (!fs::exists(archive, error)) {
    const fs::path partial = archive.string() + ".partial";
    std::vector<std::string> command;
    std::string tool;
    const std::string timeout = std::to_string(options.connect_timeout_s);
    if (program_in_path("curl")) {
      tool = "curl";
      command = {"curl",  "--fail",   "--location",     "--connect-timeout",
                 timeout, "--output", partial.string(), options.url};
    } else if (program_in_path("wget")) {
      tool = "wget";
      command = {"wget", "--timeout=" + timeout, "--tries=2", "-O", partial.string(), options.url};
    } else {
      throw std::runtime_error("data download: neither curl nor wget is installed, so " +
                               options.url + " cannot be downloaded. " + by_hand(options));
    }
    say("downloading " + options.url + " with " + tool);
    const int status = run_subprocess(command, options.quiet);
    if (status != 0) {
      fs::remove(partial, error);
      throw std::runtime_error("data download: could not download " + options.url + " (" + tool +
                               " exit status " + std::to_string(status) +
                               "; offline, or the server is unreachable). " + by_hand(options));
    }
    const std::string md5 = md5_file(partial.string());
    if (md5 != options.md5) {
      fs::remove(partial, error);
      throw std::runtime_error("data download: MD5 mismatch for " + options.url + ": got " + md5 +
                               ", expected " + options.md5 +
                               " (a truncated or wrong file; it was removed). " + by_hand(options));
    }
    fs::rename(partial, archive, error);
    if (error) {
      throw std::runtime_error("data download: cannot rename '" + partial.string() + "' to '" +
                               archive.string() + "': " + error.message());
    }
    say("MD5 " + md5 + " checked");
  }

  say("extracting '" + archive.string() + "'");
  if (!program_in_path("tar")) {
    throw std::runtime_error("data download: tar is not installed; extract '" + archive.string() +
                             "' by hand into '" + dir.string() + "'");
  }
  const int status =
      run_subprocess({"tar", "-xzf", archive.string(), "-C", dir.string()}, options.quiet);
  if (status != 0) {
    throw std::runtime_error("data download: tar failed (exit status " + std::to_string(status) +
                             ") extracting '" + archive.string() + "'");
  }
  if (!batches_complete(batches)) {
    throw std::runtime_error("data download: '" + archive.string() +
                             "' did not contain cifar-10-batches-bin/ with data_batch_1..5.bin "
                             "and test_batch.bin");
  }
  say("CIFAR-10 is in '" + batches.string() + "'");
  return batches.string();
}

}  // namespace b3
