// safetensors: round trips of every dtype and odd shapes, the exact byte
// layout of the format, files written by hand as other writers lay them out,
// every kind of corrupt file refused with a message naming the file and the
// tensor, and saves that never leave a half-written file.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tensor/safetensors.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// A file's bytes from a header text and raw data, as another writer would
// lay them out (no padding unless the text has it).
std::vector<uint8_t> file_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes(8 + header.size() + data.size());
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::copy(header.begin(), header.end(), bytes.begin() + 8);
  std::copy(data.begin(), data.end(), bytes.begin() + 8 + static_cast<long>(header.size()));
  return bytes;
}

template <typename T>
std::vector<uint8_t> raw(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A fresh empty folder under the system's temporary folder.
std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("b3-test-safetensors-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

size_t count_files(const std::filesystem::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

void check_equal(const Tensor& a, const Tensor& b) {
  CHECK(a.shape() == b.shape());
  CHECK(a.dtype() == b.dtype());
  CHECK(a.to_doubles() == b.to_doubles());
}

}  // namespace

TEST_CASE("safetensors: every dtype, scalars, empty and channels_last tensors round-trip") {
  Generator gen(3);
  NamedTensors tensors;
  tensors.emplace_back("weights.f64", test::random_tensor({2, 3}, gen, DType::f64));
  tensors.emplace_back("weights.f32", test::random_tensor({4, 1, 3, 3}, gen, DType::f32));
  tensors.emplace_back("half", test::random_tensor({5}, gen, DType::f16));
  tensors.emplace_back("count",
                       from_doubles({7}, {}, DType::i64));  // shape [], like num_batches_tracked
  tensors.emplace_back("labels", from_doubles({-1, 2, 2147483647}, {3}, DType::i32));
  tensors.emplace_back("pixels", from_doubles({0, 128, 255}, {3}, DType::u8));
  tensors.emplace_back("nothing", zeros({0, 3}, DType::f32));
  // A channels_last tensor is written in logical (NCHW row-major) order.
  tensors.emplace_back(
      "nhwc", test::random_tensor({2, 3, 2, 2}, gen, DType::f32, MemoryFormat::channels_last));
  // A non-dense view (every other column) is written as its logical values.
  const Tensor wide = test::random_tensor({3, 4}, gen, DType::f64);
  tensors.emplace_back("view", wide.narrow(1, 1, 2));
  const SafetensorsMetadata metadata{{"format", "pt"}, {"note", "é, \"quoted\""}};

  const SafetensorsFile file = decode_safetensors(encode_safetensors(tensors, metadata), "memory");
  REQUIRE(file.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CAPTURE(tensors[i].first);
    CHECK(file.tensors[i].first == tensors[i].first);  // header order is kept
    check_equal(file.tensors[i].second, tensors[i].second);
    CHECK(file.tensors[i].second.is_contiguous());
  }
  CHECK(file.metadata == metadata);
  CHECK(file.at("count").item() == 7.0);
  CHECK(file.contains("pixels"));
  CHECK_FALSE(file.contains("missing"));
  CHECK_THROWS_WITH_AS(file.at("missing"), doctest::Contains("no tensor named 'missing'"),
                       std::invalid_argument);
}

TEST_CASE("safetensors: the byte layout is the format's") {
  const NamedTensors tensors{{"b", from_doubles({1.0, -2.0}, {2}, DType::f32)},
                             {"a", from_doubles({3}, {1}, DType::i64)}};
  const std::vector<uint8_t> bytes = encode_safetensors(tensors, {{"k", "v"}});
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);  // little-endian u64
  CHECK(header_size % 8 == 0);                 // padded so the data is 8-byte aligned
  REQUIRE(bytes.size() == 8 + header_size + 8 + 8);
  const std::string text(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(header_size));
  const auto header = nlohmann::json::parse(text);  // trailing spaces are valid JSON whitespace
  CHECK(header["__metadata__"]["k"] == "v");
  CHECK(header["b"]["dtype"] == "F32");
  CHECK(header["b"]["shape"] == nlohmann::json::array({2}));
  CHECK(header["b"]["data_offsets"] == nlohmann::json::array({0, 8}));
  CHECK(header["a"]["dtype"] == "I64");
  CHECK(header["a"]["data_offsets"] == nlohmann::json::array({8, 16}));
  float values[2];
  std::memcpy(values, bytes.data() + 8 + header_size, 8);
  CHECK(values[0] == 1.0f);
  CHECK(values[1] == -2.0f);
  int64_t a = 0;
  std::memcpy(&a, bytes.data() + 8 + header_size + 8, 8);
  CHECK(a == 3);
}

TEST_CASE("safetensors: reads files laid out as other writers do") {
  // Unpadded header, tensors listed in another order than their data, the
  // metadata last, and a zero-size tensor at the end of the data.
  const std::string header = R"({"second":{"dtype":"F64","shape":[],"data_offsets":[12,20]},)"
                             R"("first":{"dtype":"I32","shape":[3],"data_offsets":[0,12]},)"
                             R"("empty":{"dtype":"U8","shape":[0,4],"data_offsets":[20,20]},)"
                             R"("__metadata__":{"format":"pt"}})";
  std::vector<uint8_t> data = raw<int32_t>({10, -20, 30});
  const std::vector<uint8_t> second = raw<double>({0.125});
  data.insert(data.end(), second.begin(), second.end());
  const SafetensorsFile file = decode_safetensors(file_bytes(header, data), "hand.safetensors");
  REQUIRE(file.tensors.size() == 3);
  CHECK(file.tensors[0].first == "second");
  CHECK(file.at("second").item() == 0.125);
  CHECK(file.at("second").shape() == Shape{});
  CHECK(file.at("first").to_doubles() == std::vector<double>{10, -20, 30});
  CHECK(file.at("empty").shape() == Shape{0, 4});
  CHECK(file.metadata.at("format") == "pt");
}

TEST_CASE("safetensors: corrupt files are refused, naming the file and the tensor") {
  const std::vector<uint8_t> eight = raw<float>({1.0f, 2.0f});
  auto decode = [](const std::string& header, const std::vector<uint8_t>& data) {
    return decode_safetensors(file_bytes(header, data), "bad.safetensors");
  };
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(decode_safetensors({1, 2, 3}, "bad.safetensors"),
                       Contains("bad.safetensors: file is 3 bytes, too short"), std::runtime_error);
  std::vector<uint8_t> huge_length(16, 0);
  huge_length[0] = 100;  // claims a 100-byte header in a 16-byte file
  CHECK_THROWS_WITH_AS(decode_safetensors(huge_length, "bad.safetensors"),
                       Contains("header length 100 does not fit"), std::runtime_error);
  CHECK_THROWS_WITH_AS(decode("{\"x\": [", eight), Contains("header is not valid JSON"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode("[1, 2]", eight), Contains("header is not a JSON object"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[2]}})", eight),
                       Contains("tensor 'w': entry needs dtype, shape and data_offsets"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}})", eight),
                       Contains("bad.safetensors: tensor 'w': dtype \"BF16\" is not supported"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
                       Contains("tensor 'w': shape must hold non-negative integers"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight),
                       Contains("tensor 'w': shape must hold non-negative integers, got 2.0"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(
      decode(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,1e300]}})", eight),
      Contains("tensor 'w': data_offsets must hold non-negative integers, got 1e+300"),
      std::runtime_error);
  CHECK_THROWS_WITH_AS(
      decode(R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", eight),
      Contains("tensor 'w': shape value 18446744073709551615 is too large"), std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", eight),
                       Contains("tensor 'w': data_offsets [0, 16] out of range"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight),
                       Contains("tensor 'w': data_offsets [8, 0] out of range"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
                       Contains("tensor 'w': holds 8 bytes, but F32 [3] needs 12"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("v":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              eight),
                       Contains("tensor 'v': data starts at byte 4, expected 8 (overlaps"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
                       Contains("tensor 'w': data starts at byte 4, expected 0 (a hole)"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
                       Contains("cover 4 of the 8 data bytes"), std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"__metadata__":{"n":3}})", {}),
                       Contains("__metadata__ value of 'n' is not a string"), std::runtime_error);

  // Raw bytes from the header never reach the message (the fuzzer found
  // nlohmann's parse errors and tensor names quoting them): escaped as \xNN,
  // and a huge quoted entry is cut.
  CHECK_THROWS_WITH_AS(decode("{\"x\": [48\x99\x1b]}", eight), Contains("last read: '48\\x99'"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(decode(R"({"w\u001b[2J":{"dtype":"F32","shape":[2]}})", eight),
                       Contains("tensor 'w\\x1b[2J': entry needs dtype"), std::runtime_error);
  const std::string long_name(5000, 'n');
  try {
    decode("{\"" + long_name + "\": 1}", eight);
    FAIL("a non-object entry was accepted");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).size() < 600);
    CHECK(std::string(e.what()).find("[...]") != std::string::npos);
  }

  // A valid file cut short anywhere is refused.
  const std::vector<uint8_t> good =
      encode_safetensors({{"w", from_doubles({1, 2, 3}, {3}, DType::f32)}});
  for (size_t cut : {size_t{4}, size_t{12}, good.size() - 1}) {
    CAPTURE(cut);
    CHECK_THROWS_AS(decode_safetensors(
                        std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(cut)),
                        "cut.safetensors"),
                    std::runtime_error);
  }
}

TEST_CASE("safetensors: bad names are refused when writing") {
  const Tensor t = zeros({1});
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(encode_safetensors({{"a", t}, {"a", t}}), Contains("'a' appears twice"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"", t}}), Contains("name is empty"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"__metadata__", t}}), Contains("reserved"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"u", Tensor()}}), Contains("'u' is undefined"),
                       std::invalid_argument);
}

TEST_CASE("safetensors: saves are atomic and leave no temporary files") {
  const auto dir = scratch_dir("atomic");
  const std::string path = (dir / "model.safetensors").string();
  const NamedTensors first{{"w", from_doubles({1, 2}, {2}, DType::f32)}};
  save_safetensors(path, first, {{"v", "1"}});
  CHECK(count_files(dir) == 1);
  check_equal(load_safetensors(path).at("w"), first[0].second);
  CHECK(load_safetensors(path).metadata.at("v") == "1");

  // Overwriting replaces the file whole.
  const NamedTensors second{{"w", from_doubles({5, 6, 7}, {3}, DType::f64)}};
  save_safetensors(path, second);
  CHECK(count_files(dir) == 1);
  check_equal(load_safetensors(path).at("w"), second[0].second);

  // A save that fails (here: a duplicate name) leaves the old file untouched.
  CHECK_THROWS_AS(save_safetensors(path, {{"x", zeros({1})}, {"x", zeros({1})}}),
                  std::invalid_argument);
  check_equal(load_safetensors(path).at("w"), second[0].second);
  CHECK(count_files(dir) == 1);

  // A folder that does not exist: a clear error, nothing created.
  const std::string nowhere = (dir / "missing" / "x.safetensors").string();
  CHECK_THROWS_WITH_AS(save_safetensors(nowhere, first),
                       doctest::Contains("cannot create temporary file"), std::runtime_error);
  CHECK_FALSE(std::filesystem::exists(nowhere));
  CHECK_THROWS_WITH_AS(
      load_safetensors(nowhere),
      ("safetensors: cannot read '" + nowhere + "': No such file or directory").c_str(),
      std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors: the names of save temporaries are recognized, others are not") {
  const std::optional<SaveTemporary> plain = parse_save_temporary("model.safetensors.tmp.1234.99");
  REQUIRE(plain.has_value());
  CHECK(plain->target == "model.safetensors");
  CHECK(plain->writer_pid == 1234);
  const std::optional<SaveTemporary> nested = parse_save_temporary("x.tmp.5.6.tmp.7.8");
  REQUIRE(nested.has_value());  // the last mark is the save's
  CHECK(nested->target == "x.tmp.5.6");
  CHECK(nested->writer_pid == 7);
  for (const char* name : {"model.safetensors", "model.tmp.12", "model.tmp.ab.1", ".tmp.1.2",
                           "model.tmp.1.", "model.tmp.1234567890.1", "model.tmp..1"}) {
    CAPTURE(name);
    CHECK_FALSE(parse_save_temporary(name).has_value());
  }
}

TEST_CASE("safetensors: a file truncated on disk is refused on load") {
  const auto dir = scratch_dir("truncated");
  const std::string path = (dir / "t.safetensors").string();
  save_safetensors(path, {{"w", zeros({16}, DType::f64)}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 8);
  CHECK_THROWS_WITH_AS(load_safetensors(path), doctest::Contains((path + ": tensor 'w'").c_str()),
                       std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors: dtype names") {
  CHECK(std::string(safetensors_dtype_name(DType::f16)) == "F16");
  CHECK(parse_safetensors_dtype("U8") == DType::u8);
  CHECK_THROWS_WITH_AS(parse_safetensors_dtype("BOOL"),
                       doctest::Contains("\"BOOL\" is not supported"), std::invalid_argument);
}
