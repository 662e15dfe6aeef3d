// `b3 data download` without the internet: MD5 against RFC 1321's vectors and
// hashlib's (padding edges), the offline error, unpacking an archive that is
// already there, and an archive with the wrong MD5 (removed, never unpacked).
#include <doctest/doctest.h>

#include <filesystem>

#include "data/cifar10_binary.h"
#include "data/download.h"
#include "data/md5.h"
#include "data/synthetic.h"
#include "tests/test_data_util.h"

using namespace b3;
using test::TempDir;

namespace {

// A tiny cifar-10-binary.tar.gz (cifar-10-batches-bin/ with 5 + 2 images), made with tar.
std::string make_archive(const TempDir& tmp) {
  write_cifar10_binary(SyntheticDataset(5), SyntheticDataset(2), tmp / "src/cifar-10-batches-bin");
  const std::string archive = tmp / "made/cifar-10-binary.tar.gz";
  std::filesystem::create_directories(tmp / "made");
  REQUIRE(run_subprocess({"tar", "-czf", archive, "-C", tmp / "src", "cifar-10-batches-bin"}) == 0);
  return archive;
}

DownloadOptions offline_options(const std::string& dir) {
  DownloadOptions options;
  options.dir = dir;
  // Nothing listens on port 9 of this machine: the connection fails at once.
  options.url = "http://127.0.0.1:9/cifar-10-binary.tar.gz";
  options.connect_timeout_s = 2;
  options.quiet = true;
  return options;
}

}  // namespace

TEST_CASE("md5: RFC 1321 test suite and padding edges") {
  CHECK(md5_hex("") == "d41d8cd98f00b204e9800998ecf8427e");
  CHECK(md5_hex("a") == "0cc175b9c0f1b6a831c399e269772661");
  CHECK(md5_hex("abc") == "900150983cd24fb0d6963f7d28e17f72");
  CHECK(md5_hex("message digest") == "f96b697d7cb7938d525a2f31aaf161d0");
  CHECK(md5_hex("abcdefghijklmnopqrstuvwxyz") == "c3fcd3d76192e4007dfb496cca67e13b");
  CHECK(md5_hex("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") ==
        "d174ab98d277d9f5a5611c2c9f419d9f");
  CHECK(md5_hex("1234567890123456789012345678901234567890123456789012345678901234567890123456"
                "7890") == "57edf4a22be3c955ac49da2e2107b67a");
  // Lengths around the 56-byte padding boundary and the 64-byte block (Python's hashlib).
  CHECK(md5_hex(std::string(55, 'a')) == "ef1772b6dff9a122358552954ad0df65");
  CHECK(md5_hex(std::string(56, 'a')) == "3b0c8ac703f828b04c6c197006d17218");
  CHECK(md5_hex(std::string(63, 'a')) == "b06521f39153d618550606be297466d5");
  CHECK(md5_hex(std::string(64, 'a')) == "014842d480b571495a4a0363793f7367");
  CHECK(md5_hex(std::string(65, 'a')) == "c743a45e0d2e6a95cb859adae0248435");
}

TEST_CASE("md5: fed in pieces, or from a file, the digest is the same") {
  std::string bytes;
  for (int r = 0; r < 4; ++r)
    for (int b = 0; b < 256; ++b) bytes.push_back(static_cast<char>(b));
  const std::string expected = "b2ea9f7fcea831a4a63b213f41a8855b";  // hashlib
  CHECK(md5_hex(bytes) == expected);
  for (size_t piece : {1u, 7u, 63u, 64u, 65u, 1000u}) {
    CAPTURE(piece);
    Md5 md5;
    for (size_t at = 0; at < bytes.size(); at += piece) {
      md5.update(bytes.data() + at, std::min(piece, bytes.size() - at));
    }
    CHECK(md5.hex_digest() == expected);
  }
  TempDir tmp;
  test::write_bytes(tmp / "file.bin", std::vector<uint8_t>(bytes.begin(), bytes.end()));
  CHECK(md5_file(tmp / "file.bin") == expected);
  CHECK_THROWS_WITH_AS(md5_file(tmp / "missing.bin"),
                       test::contains("cannot read '" + (tmp / "missing.bin") + "'"),
                       std::runtime_error);
}

TEST_CASE("download: offline, the error names the URL and says what to do") {
  TempDir tmp;
  const DownloadOptions options = offline_options(tmp / "data");
  try {
    download_cifar10(options);
    FAIL("download_cifar10 should have failed offline");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CAPTURE(message);
    const bool no_tool = message.find("neither curl nor wget") != std::string::npos;
    CHECK((no_tool || message.find("could not download " + options.url) != std::string::npos));
    CHECK(message.find("by hand") != std::string::npos);
    CHECK(message.find("--data synthetic") != std::string::npos);
  }
  // Nothing half-downloaded is left behind.
  CHECK_FALSE(std::filesystem::exists(tmp / "data/cifar-10-binary.tar.gz"));
  CHECK_FALSE(std::filesystem::exists(tmp / "data/cifar-10-binary.tar.gz.partial"));
}

TEST_CASE("download: an archive already there is checked and unpacked, then left alone") {
  TempDir tmp;
  const std::string archive = make_archive(tmp);
  std::filesystem::create_directories(tmp / "data");
  std::filesystem::copy_file(archive, tmp / "data/cifar-10-binary.tar.gz");
  DownloadOptions options = offline_options(tmp / "data");
  options.md5 = md5_file(archive);  // the tiny archive's MD5 stands in for the official one
  const std::string dir = download_cifar10(options);
  CHECK(dir == tmp / "data/cifar-10-batches-bin");
  CHECK(Cifar10Binary::open(dir, "train")->size() == 5);
  CHECK(Cifar10Binary::open(dir, "test")->size() == 2);
  // Complete now: a second call neither downloads nor unpacks (the archive may even go).
  std::filesystem::remove(tmp / "data/cifar-10-binary.tar.gz");
  CHECK(download_cifar10(options) == dir);
}

TEST_CASE("download: an archive with the wrong MD5 is removed and never unpacked") {
  TempDir tmp;
  const std::string archive = make_archive(tmp);
  std::filesystem::create_directories(tmp / "data");
  std::filesystem::copy_file(archive, tmp / "data/cifar-10-binary.tar.gz");
  DownloadOptions options = offline_options(tmp / "data");         // official MD5: mismatch
  CHECK_THROWS_AS(download_cifar10(options), std::runtime_error);  // re-download fails offline
  CHECK_FALSE(std::filesystem::exists(tmp / "data/cifar-10-binary.tar.gz"));
  CHECK_FALSE(std::filesystem::exists(tmp / "data/cifar-10-batches-bin"));

  // Downloaded with the wrong MD5 (curl reads file:// URLs; wget does not).
  if (program_in_path("curl")) {
    options.url = "file://" + archive;
    CHECK_THROWS_WITH_AS(download_cifar10(options),
                         test::contains("MD5 mismatch for " + options.url + ": got " +
                                        md5_file(archive) + ", expected " + options.md5),
                         std::runtime_error);
    CHECK_FALSE(std::filesystem::exists(tmp / "data/cifar-10-binary.tar.gz.partial"));
    CHECK_FALSE(std::filesystem::exists(tmp / "data/cifar-10-batches-bin"));
    // With the right MD5 the same path downloads, checks and unpacks.
    options.md5 = md5_file(archive);
    CHECK(Cifar10Binary::open(download_cifar10(options), "train")->size() == 5);
  } else {
    MESSAGE("curl is not installed: the file:// download path was not exercised");
  }
}
