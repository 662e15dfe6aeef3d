// torch.save files (tensor/torch_file.h, zip_archive.h, torch_unpickler.h).
//
// First the cases that need no Python: archives and pickles built here byte
// by byte as torch.save lays them out (views, shared storages, every dtype,
// ZIP64 records, a checkpoint dict) load with the right values, and every
// kind of broken or hostile file is refused with a message that starts with
// "torch file '<source>': ", says what is wrong and carries no raw bytes:
// every cut of a file, every flipped byte, bad EOCD, compressed, encrypted,
// duplicated and overlapping entries, bad CRC, disallowed globals
// (posix.system, a name with \xff), unsupported opcodes, storages too short.
//
// Then, with Debian's python3 (torch 1.13, torchvision 0.14; exit 77 =
// skipped where torch is missing), one Python run writes real torch.save
// files: torchvision's mobilenet_v3_small and _large (num_classes=10,
// seeded weights, BatchNorm statistics moved off their defaults) with the
// same tensors as safetensors and PyTorch's f64 eval-mode logits on a fixed
// 2x3x64x64 input; a state dict of views (transposed, offset, shared,
// stride-0, channels_last); and hostile or unusual files (a pickled
// os.system call, a legacy-format file, DEFLATE entries, a short storage, a
// whole nn.Module, a checkpoint dict). Tensors must match bit for bit, and
// b3's f64 logits must match PyTorch's within 1e-12 relative error (the bar
// of test_parity_model.cpp: double rounding through ~60 layers, measured
// there <= 5e-15).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "models/mobilenet_v3.h"
#include "models/state_dict.h"
#include "tensor/printable_text.h"
#include "tensor/torch_file.h"
#include "tensor/zip_archive.h"
#include "tests/support/files.h"
#include "tests/support/fixtures.h"
#include "tests/support/python.h"
#include "tests/support/torch_file_builder.h"

using namespace b3;
using namespace b3::test;

namespace {

constexpr const char* kSource = "test.pth";

// The message decode_torch_state_dict throws for `bytes`, or a note that it did not.
std::string refusal(const Bytes& bytes) {
  try {
    decode_torch_state_dict(bytes, kSource);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(loaded without an error)";
}

// Refused with a message that names the file, says `why`, and is printable.
void check_refused(const Bytes& bytes, const std::string& why) {
  const std::string message = refusal(bytes);
  CAPTURE(message);
  CHECK(message.rfind(std::string("torch file '") + kSource + "': ", 0) == 0);
  CHECK(message.find(why) != std::string::npos);
  CHECK(printable_text(message) == message);
}

const Tensor& find(const NamedTensors& tensors, const std::string& key) {
  for (const auto& [name, t] : tensors)
    if (name == key) return t;
  FAIL("no tensor " << key);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("torch file: crc32 is zip's") {
  const std::string check = "123456789";
  CHECK(crc32(std::span(reinterpret_cast<const uint8_t*>(check.data()), check.size())) ==
        0xCBF43926u);
  CHECK(crc32({}) == 0u);
}

TEST_CASE("torch file: a hand-built torch.save file loads views, shared storage and every dtype") {
  for (const bool zip64 : {true, false}) {
    CAPTURE(zip64);
    const NamedTensors tensors = decode_torch_state_dict(sample_file(zip64), kSource);
    std::vector<std::string> keys;
    for (const auto& [name, t] : tensors) {
      keys.push_back(name);
      CHECK(t.is_contiguous());
    }
    CHECK(keys == std::vector<std::string>{"w", "w.t", "tail", "col", "bcast", "count", "longs",
                                           "none", "d", "h", "i", "b"});
    CHECK(find(tensors, "w").to_doubles() == std::vector<double>{0.5, -1, 2.25, 3, -4.5, 5});
    CHECK(find(tensors, "w.t").shape() == Shape{3, 2});
    CHECK(find(tensors, "w.t").to_doubles() == std::vector<double>{0.5, 3, -1, -4.5, 2.25, 5});
    CHECK(find(tensors, "tail").to_doubles() == std::vector<double>{5, 6, 7.5});
    CHECK(find(tensors, "col").to_doubles() == std::vector<double>{-1, 3, 5, 7.5});
    CHECK(find(tensors, "bcast").to_doubles() == std::vector<double>{2.25, 3, -4.5, 2.25, 3, -4.5});
    CHECK(find(tensors, "count").dtype() == DType::i64);
    CHECK(find(tensors, "count").shape() == Shape{});
    CHECK(find(tensors, "count").item() == static_cast<double>(int64_t{1} << 40));
    CHECK(find(tensors, "longs").data<int64_t>()[1] == -3);
    CHECK(find(tensors, "none").shape() == Shape{0, 4});
    CHECK(find(tensors, "d").to_doubles() == std::vector<double>{1e-300, -2.5});
    CHECK(find(tensors, "h").dtype() == DType::f16);
    CHECK(find(tensors, "h").to_doubles() == std::vector<double>{1.0, -2.0});
    CHECK(find(tensors, "i").to_doubles() == std::vector<double>{INT32_MIN, 12});
    CHECK(find(tensors, "b").dtype() == DType::u8);
    CHECK(find(tensors, "b").to_doubles() == std::vector<double>{0, 128, 255});
  }
  // The listing: b3 dtype names, shapes, views as the pickle describes them.
  const TorchTensorInfos infos = list_torch_state_dict(sample_file(), kSource);
  REQUIRE(infos.size() == 12);
  CHECK(infos[1].second.strides == Shape{1, 3});
  CHECK(infos[1].second.storage_key == "0");
  CHECK(infos[3].second.storage_offset == 1);
  const std::string listing = format_torch_tensor_list(infos);
  CHECK(listing.find("w f32 [2, 3]\n") == 0);
  CHECK(listing.find("count i64 []\n") != std::string::npos);
  CHECK(listing.find("h f16 [2]\n") != std::string::npos);
}

TEST_CASE("torch file: a checkpoint dict with the state dict under 'state_dict' or 'model'") {
  for (const std::string key : {"state_dict", "model"}) {
    CAPTURE(key);
    Pickle p;
    p.op(0x80).op(2).op('}').op('(').str("epoch").integer(3).str("lr").op('G');
    append(p.bytes, Bytes{0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a});  // 0.1, big-endian
    p.str(key).global("collections", "OrderedDict").put(0).op(')').op('R').op('(');
    tensor_ops(p, {"w", "0", 8, 0, {8}, {1}}, true);
    p.op('u').str("note").op('N').op('u').op('.');
    const NamedTensors tensors =
        decode_torch_state_dict(torch_zip(p.bytes, {{"0", raw(kFloats)}}), kSource);
    REQUIRE(tensors.size() == 1);
    CHECK(tensors[0].first == "w");
    CHECK(tensors[0].second.to_doubles() == std::vector<double>(kFloats.begin(), kFloats.end()));
  }
}

TEST_CASE("torch file: empty, legacy, bare-pickle and non-zip files are refused") {
  check_refused({}, "the file is empty");
  Bytes legacy{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  append(legacy, Bytes(100, 0));
  check_refused(legacy, "legacy torch.save file");
  check_refused(legacy, "torch.save(torch.load(path), new_path)");
  check_refused(state_dict_pickle(sample_tensors()), "bare pickle");
  check_refused(Bytes(21, 'P'), "too short for a zip archive");
  check_refused(Bytes(5000, 0x11), "no end of central directory record");
}

TEST_CASE("torch file: every truncation and every flipped byte is refused cleanly") {
  const Bytes good = sample_file();
  REQUIRE(refusal(good) == "(loaded without an error)");
  // Every cut: always refused (the end records are gone or point past the end).
  for (size_t cut = 0; cut < good.size(); ++cut) {
    CAPTURE(cut);
    const std::string message = refusal(Bytes(good.begin(), good.begin() + cut));
    CHECK(message.rfind("torch file 'test.pth': ", 0) == 0);
    CHECK(printable_text(message) == message);
  }
  // Every byte flipped: refused with a clean message, or (where the byte is
  // not checked: a timestamp, a version field, the "made by" version) loaded.
  size_t refused = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    Bytes bad = good;
    bad[at] ^= 0x5a;
    const std::string message = refusal(bad);
    CAPTURE(at);
    CAPTURE(message);
    if (message != "(loaded without an error)") {
      ++refused;
      CHECK(message.rfind("torch file 'test.pth': ", 0) == 0);
      CHECK(printable_text(message) == message);
    }
  }
  // The data, names, sizes and offsets are all checked: most flips are caught.
  CHECK(refused > good.size() * 3 / 4);
}

TEST_CASE("torch file: malformed zip archives are refused with what is wrong") {
  const Bytes pickle = state_dict_pickle({{"w", "0", 8, 0, {8}, {1}}});
  const Bytes storage = raw(kFloats);
  SUBCASE("sizes and offsets in ZIP64 extra fields are read") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle);
    zip.add("archive/data/0", storage);
    for (ZipBuilder::Record& r : zip.records) r.zip64_extra = true;
    const NamedTensors tensors = decode_torch_state_dict(zip.finish(), kSource);
    REQUIRE(tensors.size() == 1);
    CHECK(tensors[0].second.to_doubles() == std::vector<double>(kFloats.begin(), kFloats.end()));
  }
  SUBCASE("bad CRC") {
    Bytes bad = torch_zip(pickle, {{"0", storage}});
    const Bytes needle = raw(kFloats);
    const auto found = std::search(bad.begin(), bad.end(), needle.begin(), needle.end());
    REQUIRE(found != bad.end());
    found[3] ^= 1;
    check_refused(bad, "entry 'archive/data/0': CRC-32 mismatch");
  }
  SUBCASE("a compressed (DEFLATE) entry") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle, 8);
    check_refused(zip.finish(), "entry 'archive/data.pkl' is compressed (method 8, DEFLATE)");
  }
  SUBCASE("an encrypted entry") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle, 0, 1);
    check_refused(zip.finish(), "entry 'archive/data.pkl' is encrypted");
  }
  SUBCASE("a duplicated name") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle);
    zip.add("archive/data.pkl", pickle);
    check_refused(zip.finish(), "entry 'archive/data.pkl' appears twice");
  }
  SUBCASE("overlapping entries") {
    // Entry x's data is a whole local header and data of y, and the
    // directory lists y there too: both check out alone, but they overlap.
    ZipBuilder inner;
    inner.add("archive/y", Bytes{1, 2, 3});
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle);
    const size_t x_data = zip.bytes.size() + 30 + std::string("archive/x").size();
    zip.add("archive/x", inner.bytes);
    ZipBuilder::Record y = inner.records[0];
    y.offset = x_data;
    zip.records.push_back(y);
    check_refused(zip.finish(), "two entries overlap");
  }
  SUBCASE("the local header names another file") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle);
    zip.records[0].name = "archive/data.pkX";
    check_refused(zip.finish(), "the local header names it 'archive/data.pkl'");
  }
  SUBCASE("an entry whose data runs past the central directory") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle, 0, 8);  // data descriptor: local sizes not compared
    zip.records[0].size += 1000;
    check_refused(zip.finish(), "run past the data before the central directory");
  }
  SUBCASE("a local header offset outside the file") {
    ZipBuilder zip;
    zip.add("archive/data.pkl", pickle);
    zip.records[0].offset = 0xfffffff0u;
    check_refused(zip.finish(), "its local header (offset 4294967280) lies outside");
  }
  SUBCASE("an EOCD whose directory offset is wrong") {
    Bytes bad = torch_zip(pickle, {{"0", storage}}, false);
    bad[bad.size() - 22 + 16] ^= 0x40;  // the directory offset
    check_refused(bad, "the central directory (offset");
  }
  SUBCASE("an EOCD that claims more entries than the directory holds") {
    Bytes bad = torch_zip(pickle, {{"0", storage}}, false);
    bad[bad.size() - 22 + 10] = 0xff;
    bad[bad.size() - 22 + 8] = 0xff;
    check_refused(bad, "cannot hold 255 entries");
  }
  SUBCASE("ZIP64 and plain end records that disagree") {
    Bytes bad = torch_zip(pickle, {{"0", storage}}, true);
    bad[bad.size() - 22 + 10] ^= 1;
    bad[bad.size() - 22 + 8] ^= 1;
    check_refused(bad, "ZIP64 record disagree");
  }
  SUBCASE("a zip without data.pkl, or with entries outside a folder") {
    ZipBuilder zip;
    zip.add("notes/readme.txt", Bytes{'h', 'i'});
    check_refused(zip.finish(), "not a torch file: the zip archive has no 'notes/data.pkl'");
    ZipBuilder flat;
    flat.add("data.pkl", pickle);
    check_refused(flat.finish(), "is not inside a folder");
    check_refused(ZipBuilder().finish(), "the zip archive is empty");
  }
}

TEST_CASE("torch file: hostile pickles are refused, naming what they ask for") {
  const std::vector<StorageEntry> storages{{"0", raw(kFloats)}};
  const auto file = [&](const Pickle& p) { return torch_zip(p.bytes, storages); };
  SUBCASE("posix.system and os.system with REDUCE") {
    for (const std::string module : {"posix", "os", "builtins"}) {
      Pickle p;
      p.op(0x80).op(2).global(module, module == "builtins" ? "eval" : "system");
      p.str("touch /tmp/b3-must-not-exist").op(0x85).op('R').op('.');
      check_refused(file(p), "global '" + module + (module == "builtins" ? ".eval" : ".system") +
                                 "' is not allowed");
      check_refused(file(p), "never runs code from a file");
    }
  }
  SUBCASE("a global whose name holds raw bytes shows them escaped") {
    Pickle p;
    p.op(0x80).op(2).global("posix\xff\x1b[31m", "sys\ntem").op('.');
    // The name line stops at the first newline: module "posix\xff\x1b[31m", name "sys".
    check_refused(file(p), "global 'posix\\xff\\x1b[31m.sys' is not allowed");
    const std::string message = refusal(file(p));
    CHECK(message.find('\xff') == std::string::npos);
    CHECK(message.find('\x1b') == std::string::npos);
  }
  SUBCASE("a storage type b3 has no dtype for") {
    check_refused(
        torch_zip(state_dict_pickle({{"w", "0", 16, 0, {16}, {1}, "BFloat16Storage"}}), storages),
        "global 'torch.BFloat16Storage': its tensors are torch.bfloat16");
  }
  SUBCASE("opcodes a state dict does not need (INST, OBJ, NEWOBJ, EXT1)") {
    for (const uint8_t op : {uint8_t{'i'}, uint8_t{'o'}, uint8_t{0x81}, uint8_t{0x82}}) {
      Pickle p;
      p.op(0x80).op(2).op(op).op('.');
      check_refused(file(p), "is not one b3 reads");
    }
  }
  SUBCASE("REDUCE of an allowed global with the wrong arguments") {
    Pickle p;
    p.op(0x80).op(2).global("collections", "OrderedDict").str("x").op(0x85).op('R').op('.');
    check_refused(file(p), "collections.OrderedDict is called with arguments");
    Pickle q;
    q.op(0x80).op(2).global("torch", "FloatStorage").op(')').op('R').op('.');
    check_refused(file(q), "REDUCE calls the storage type 'torch.FloatStorage'");
  }
  SUBCASE("a broken stack, memo or stream") {
    Pickle underflow;
    underflow.op(0x80).op(2).op('s').op('.');
    check_refused(file(underflow), "the stack is empty");
    Pickle memo;
    memo.op(0x80).op(2).get(7).op('.');
    check_refused(file(memo), "memo entry 7 was never stored");
    Pickle no_stop;
    no_stop.op(0x80).op(2).op('}');
    check_refused(file(no_stop), "ends without STOP");
    Pickle long_string;
    long_string.op(0x80).op(2).op('X');
    put32(long_string.bytes, 0xfffffff0u);
    check_refused(file(long_string), "a string of 4294967280 bytes");
    Pickle protocol;
    protocol.op(0x80).op(5).op('.');
    check_refused(file(protocol), "pickle protocol 5");
    Pickle deep;
    deep.op(0x80).op(2);
    for (int k = 0; k < 300; ++k) deep.op('(');
    check_refused(file(deep), "MARKs nested deeper than 256");
    Pickle bad_utf8;
    bad_utf8.op(0x80).op(2).str("w\xc0\xaf").op('.');
    check_refused(file(bad_utf8), "not valid UTF-8: 'w\\xc0\\xaf'");
  }
  SUBCASE("top-level objects that are not state dicts") {
    Pickle list;
    list.op(0x80).op(2).op(']').op('.');
    check_refused(file(list), "the file holds a list, not a state dict");
    Pickle dict;
    dict.op(0x80).op(2).op('}').str("epoch").integer(3).op('s').op('.');
    check_refused(file(dict), "the file holds a dict whose 'epoch' is an int, not a tensor");
  }
}

TEST_CASE("torch file: tensors that do not fit their storage are refused") {
  const auto one = [](const FakeTensor& t, const Bytes& storage) {
    return torch_zip(state_dict_pickle({t}), {{"0", storage}});
  };
  const Bytes storage = raw(kFloats);  // 8 floats
  check_refused(one({"w", "0", 8, 0, {3, 3}, {3, 1}}, storage),
                "tensor 'w': sizes [3, 3], strides [3, 1] and offset 0 reach past the end of "
                "its storage '0' of 8 elements");
  check_refused(one({"w", "0", 8, 6, {3}, {1}}, storage), "offset 6 reach past the end");
  check_refused(one({"w", "0", 8, 0, {2}, {8}}, storage), "reach past the end");
  check_refused(one({"w", "0", 9, 0, {8}, {1}}, storage),
                "tensor 'w': its storage '0' should hold 9 FloatStorage elements (9 x 4 bytes) "
                "but its entry has 32 bytes");
  check_refused(one({"w", "0", 8, 0, {2, -1}, {1, 1}}, storage), "negative size or stride");
  check_refused(one({"w", "0", 8, 7, {2}, {-1}}, storage), "negative size or stride");
  check_refused(one({"w", "0", 8, -1, {1}, {1}}, storage), "negative storage offset");
  check_refused(one({"w", "0", 8, 9, {0}, {1}}, storage), "reach past the end");
  check_refused(one({"w", "0", 8, 0, {int64_t{1} << 62, 4}, {1, 1}}, storage), "overflow 64 bits");
  check_refused(one({"w", "0", 8, 0, {2}, {int64_t{1} << 62}}, storage), "reach past the end");
  check_refused(one({"w", "0", 8, 0, {3}, {int64_t{1} << 62}}, storage), "overflow 64 bits");
  check_refused(torch_zip(state_dict_pickle({{"w", "7", 8, 0, {8}, {1}}}), {{"0", storage}}),
                "tensor 'w': its storage '7' has no entry 'archive/data/7'");
  check_refused(
      torch_zip(state_dict_pickle({{"a", "0", 8, 0, {8}, {1}}, {"b", "0", 4, 0, {4}, {1}}}),
                {{"0", storage}}),
      "storage '0' is declared as FloatStorage of 8 elements and as FloatStorage of 4");
}

// ------------------------------------------------------------- with PyTorch --

namespace {

const char* const kScript = R"PY(
import collections, json, os, struct, sys, zipfile
import torch, torchvision
from torch import nn

out = sys.argv[1]
DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
          torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}

def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().cpu().contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))

def rezip(src, dst, compression=zipfile.ZIP_STORED, transform=lambda name, data: data):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, transform(info.filename, zin.read(info.filename)),
                          compress_type=compression)

for index, arch in enumerate(["mobilenet_v3_small", "mobilenet_v3_large"]):
    torch.manual_seed(100 + index)
    model = getattr(torchvision.models, arch)(num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(c))
                m.bias.copy_(0.1 * torch.randn(c))
                m.running_mean.copy_(0.1 * torch.randn(c))
                m.running_var.copy_(1 + 0.2 * torch.rand(c))
                m.num_batches_tracked.fill_(7 + index)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape))
    state = model.state_dict()
    torch.save(state, os.path.join(out, arch + ".pth"))
    save_safetensors(os.path.join(out, arch + ".reference.safetensors"), state)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(200 + index),
                   dtype=torch.float64)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(x)
    save_safetensors(os.path.join(out, arch + ".io.safetensors"), {"input": x, "logits": logits})
    if index == 0:
        torch.save(model, os.path.join(out, "whole_model.pth"))

base = torch.arange(12, dtype=torch.float32).reshape(4, 3) * 0.5 - 1
shared = torch.randn(6, 5, dtype=torch.float64)
views = collections.OrderedDict()
views["transposed"] = base.t()
views["slice"] = torch.arange(20, dtype=torch.int64)[3:11].view(2, 4)
views["shared.row"] = shared[2]
views["shared.column"] = shared[:, 1]
views["shared.all"] = shared
views["expanded"] = torch.tensor([1.5, -2.0]).view(2, 1).expand(2, 3)
views["channels_last"] = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
views["half"] = torch.randn(3, 2).half()[:, 1]
views["int32"] = torch.tensor([[-7, 2**31 - 1], [5, -2**31]], dtype=torch.int32).t()
views["uint8"] = torch.arange(256, dtype=torch.uint8)[::17]
views["scalar"] = torch.tensor(42, dtype=torch.int64)
views["empty"] = torch.zeros(0, 3)
torch.save(views, os.path.join(out, "views.pth"))
save_safetensors(os.path.join(out, "views.reference.safetensors"), views)
torch.save(views, os.path.join(out, "views_protocol4.pth"), pickle_protocol=4)
parameter = nn.Parameter(torch.randn(2, 3))
torch.save({"p": parameter}, os.path.join(out, "parameter.pth"))
save_safetensors(os.path.join(out, "parameter.reference.safetensors"), {"p": parameter})

small = {"w": torch.randn(4, 4)}
torch.save(small, os.path.join(out, "small.pth"))
torch.save({"epoch": 3, "model": small, "lr": 0.1}, os.path.join(out, "checkpoint.pth"))
torch.save(small, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
torch.save(torch.randn(3), os.path.join(out, "tensor.pth"))
rezip(os.path.join(out, "small.pth"), os.path.join(out, "python_zipfile.pth"))
rezip(os.path.join(out, "small.pth"), os.path.join(out, "deflate.pth"), zipfile.ZIP_DEFLATED)
rezip(os.path.join(out, "small.pth"), os.path.join(out, "short_storage.pth"),
      transform=lambda name, data: data[:32] if "/data/" in name else data)
with zipfile.ZipFile(os.path.join(out, "not_torch.zip"), "w") as z:
    z.writestr("notes/readme.txt", "not a torch file")

class Evil:
    def __reduce__(self):
        return (os.system, ("echo b3 ran it > '" + os.path.join(out, "pwned") + "'",))

torch.save({"w": Evil()}, os.path.join(out, "system.pth"))
)PY";

// The files the script writes, made once per test process in a scratch
// folder removed at exit. Skips (exit 77) before making anything where
// torch is missing.
struct PythonFiles {
  PythonFiles() {
    std::ofstream(dir / "make.py") << kScript;
    const std::string log = dir / "make.log";
    const int status = test::run_command(test::python_executable() + " '" + (dir / "make.py") +
                                         "' '" + dir.path.string() + "' >'" + log + "' 2>&1");
    if (status != 0) {
      throw std::runtime_error("the torch.save script failed (status " + std::to_string(status) +
                               "):\n" + test::read_text(log));
    }
  }
  std::string operator/(const std::string& name) const { return dir / name; }

  bool torch_available = (test::skip_unless_torch_available(), true);
  test::Scratch dir{"b3-test-torch-file"};
};

const PythonFiles& python_files() {
  static const PythonFiles files;
  return files;
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Same keys in the same order, dtypes, shapes and bytes.
void check_same_tensors(const NamedTensors& actual, const NamedTensors& expected) {
  REQUIRE(actual.size() == expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    CAPTURE(expected[i].first);
    CHECK(actual[i].first == expected[i].first);
    const Tensor& a = actual[i].second;
    const Tensor& e = expected[i].second;
    CHECK(a.dtype() == e.dtype());
    REQUIRE(a.shape() == e.shape());
    CHECK(a.is_contiguous());
    CHECK(std::memcmp(a.data_ptr(), e.contiguous().data_ptr(), a.nbytes()) == 0);
  }
}

void check_refused_file(const std::string& path, const std::string& why) {
  std::string message = "(loaded without an error)";
  try {
    load_torch_state_dict(path);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  MESSAGE(message);  // the refusals, for the record
  CHECK(message.rfind("torch file '" + path + "': ", 0) == 0);
  CHECK(message.find(why) != std::string::npos);
  CHECK(printable_text(message) == message);
}

}  // namespace

TEST_CASE(
    "torch file: torchvision's MobileNetV3 state dicts load exactly and give PyTorch's "
    "logits") {
  const PythonFiles& files = python_files();
  for (const std::string arch : {"mobilenet_v3_small", "mobilenet_v3_large"}) {
    CAPTURE(arch);
    const NamedTensors state = load_torch_state_dict(files / (arch + ".pth"));
    const NamedTensors reference =
        load_safetensors(files / (arch + ".reference.safetensors")).tensors;
    check_same_tensors(state, reference);
    // The BatchNorm buffers are the perturbed ones, not the defaults.
    CHECK(find(state, "features.0.1.num_batches_tracked").dtype() == DType::i64);
    CHECK(find(state, "features.0.1.num_batches_tracked").item() ==
          (arch == "mobilenet_v3_small" ? 7.0 : 8.0));
    CHECK(find(state, "features.0.1.running_var").to_doubles() != std::vector<double>(16, 1.0));

    MobileNetV3Options options;
    options.arch = parse_mobilenet_v3_arch(arch);
    options.num_classes = 10;
    MobileNetV3 model(options);
    load_state_dict(model, state);
    model.to(DType::f64);
    model.eval();
    const SafetensorsFile io = load_safetensors(files / (arch + ".io.safetensors"));
    NoGradGuard no_grad;
    const Tensor logits = model.forward(io.at("input"));
    const double error = test::relative_error(logits, io.at("logits"));
    MESSAGE(arch << ": f64 eval logits relative error " << error);
    CHECK(error < 1e-12);
  }
}

TEST_CASE("torch file: transposed, offset, shared and stride-0 views load with their values") {
  const PythonFiles& files = python_files();
  const Bytes bytes = read_bytes(files / "views.pth");
  check_same_tensors(decode_torch_state_dict(bytes, "views.pth"),
                     load_safetensors(files / "views.reference.safetensors").tensors);
  // The file really holds such views (so the test above tests them).
  const TorchTensorInfos infos = list_torch_state_dict(bytes, "views.pth");
  const auto info = [&](const std::string& key) {
    for (const auto& [name, t] : infos)
      if (name == key) return t;
    throw std::logic_error("no " + key);
  };
  CHECK(info("transposed").strides == Shape{1, 3});
  CHECK(info("slice").storage_offset == 3);
  CHECK(info("shared.row").storage_offset == 10);
  CHECK(info("shared.column").strides == Shape{5});
  CHECK(info("shared.row").storage_key == info("shared.all").storage_key);
  CHECK(info("shared.column").storage_key == info("shared.all").storage_key);
  CHECK(info("expanded").strides == Shape{1, 0});
  CHECK(info("channels_last").strides == Shape{60, 1, 15, 3});
  CHECK(info("uint8").strides == Shape{17});
  CHECK(info("scalar").shape == Shape{});
  // Protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL) reads the same.
  check_same_tensors(load_torch_state_dict(files / "views_protocol4.pth"),
                     load_safetensors(files / "views.reference.safetensors").tensors);
  // An nn.Parameter is pickled through torch._utils._rebuild_parameter.
  check_same_tensors(load_torch_state_dict(files / "parameter.pth"),
                     load_safetensors(files / "parameter.reference.safetensors").tensors);
  const TorchTensorInfos parameter =
      list_torch_state_dict(read_bytes(files / "parameter.pth"), "parameter.pth");
  REQUIRE(parameter.size() == 1);
  CHECK(parameter[0].second.requires_grad);
  // Another writer's layout (Python's zipfile: no alignment, no ZIP64, no
  // data descriptors) and the checkpoint layout load too.
  check_same_tensors(load_torch_state_dict(files / "python_zipfile.pth"),
                     load_torch_state_dict(files / "small.pth"));
  check_same_tensors(load_torch_state_dict(files / "checkpoint.pth"),
                     load_torch_state_dict(files / "small.pth"));
}

TEST_CASE("torch file: hostile and broken files written by PyTorch are refused") {
  const PythonFiles& files = python_files();
  check_refused_file(files / "system.pth", "global 'posix.system' is not allowed");
  CHECK_FALSE(std::filesystem::exists(files.dir.path / "pwned"));
  check_refused_file(files / "legacy.pth", "legacy torch.save file");
  check_refused_file(files / "deflate.pth", "is compressed (method 8, DEFLATE)");
  check_refused_file(files / "short_storage.pth", "but its entry has 32 bytes");
  check_refused_file(files / "not_torch.zip", "not a torch file: the zip archive has no");
  check_refused_file(files / "tensor.pth", "the file holds a tensor, not a state dict");
  check_refused_file(files / "whole_model.pth",
                     "global 'torchvision.models.mobilenetv3.MobileNetV3' is not allowed");
  const std::string missing =
      "torch file: cannot read '" + (files / "missing.pth") + "': No such file or directory";
  CHECK_THROWS_WITH_AS(load_torch_state_dict(files / "missing.pth"), missing.c_str(),
                       std::runtime_error);
  // A real file cut at several points, and with one storage byte changed.
  const Bytes good = read_bytes(files / "mobilenet_v3_small.pth");
  for (const size_t cut : {size_t{0}, size_t{100}, good.size() / 2, good.size() - 200,
                           good.size() - 23, good.size() - 1}) {
    CAPTURE(cut);
    const std::string message = [&] {
      try {
        decode_torch_state_dict(Bytes(good.begin(), good.begin() + cut), "cut.pth");
      } catch (const std::runtime_error& e) {
        return std::string(e.what());
      }
      return std::string("(loaded without an error)");
    }();
    CHECK(message.rfind("torch file 'cut.pth': ", 0) == 0);
    if (cut > 0) CHECK(message.find("zip: ") != std::string::npos);
  }
  // One bit flipped in the middle of the largest storage.
  const ZipArchive archive = read_zip_archive(good);
  const auto largest = std::max_element(
      archive.entries.begin(), archive.entries.end(),
      [](const ZipEntry& a, const ZipEntry& b) { return a.data.size() < b.data.size(); });
  Bytes flipped = good;
  flipped[static_cast<size_t>(largest->data.data() - good.data()) + largest->data.size() / 2] ^=
      0x01;
  const std::string message = [&] {
    try {
      decode_torch_state_dict(flipped, "flipped.pth");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded without an error)");
  }();
  MESSAGE(message);
  CHECK(message.find("CRC-32 mismatch") != std::string::npos);
}
