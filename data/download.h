// `b3 data download`: fetch the official CIFAR-10 binary archive, check its
// MD5, unpack it. The download runs curl (or wget) as a subprocess and the
// unpacking runs tar, so b3 links no network or compression library; each
// step's failure is an error that says what to do by hand.
#pragma once

#include <string>
#include <vector>

namespace b3 {

struct DownloadOptions {
  std::string dir = "data";  // the archive and cifar-10-batches-bin/ go here
  std::string url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
  std::string md5 = "c32a1d4ab5d03f1284b67883e8d87530";
  std::string archive_name = "cifar-10-binary.tar.gz";
  int connect_timeout_s = 20;
  bool quiet = false;  // no progress messages on stderr
};

// Makes sure `options.dir`/cifar-10-batches-bin holds all six batch files and
// returns that path. Steps, each skipped when already done: download the
// archive (to "<archive>.partial", renamed when complete), verify its MD5 (a
// mismatch deletes it and is an error), extract it with tar. Throws
// std::runtime_error naming the URL, file or tool when a step fails; offline,
// the message says how to fetch the archive by hand.
std::string download_cifar10(const DownloadOptions& options = {});

// Runs argv[0] (looked up in PATH) with the arguments, waits, and returns its
// exit status (127 when it cannot be started). stdout and stderr are the
// caller's, or /dev/null when `quiet`.
int run_subprocess(const std::vector<std::string>& argv, bool quiet = false);

// True when `program` is an executable file in PATH.
bool program_in_path(const std::string& program);

}  // namespace b3
