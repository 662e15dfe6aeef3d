// The restricted unpickler (see torch_unpickler.h): a loop over opcodes that
// builds plain values in an arena (objects refer to each other by index, so
// memo references and even cycles are safe), resolves GLOBAL against the
// allow-list, and applies only the allow-listed callables on REDUCE.
#include "tensor/torch_unpickler.h"

#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "tensor/pickle_opcodes.h"
#include "tensor/printable_text.h"

namespace b3 {

namespace {

// GLOBAL's module and name lines (Python's are far shorter).
constexpr size_t kMaxGlobalLineBytes = 256;

// The storage types b3 reads, and the ones torch writes that it cannot.
struct StorageType {
  const char* name;
  std::optional<DType> dtype;
  const char* torch_dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", DType::f32, "torch.float32"},
    {"DoubleStorage", DType::f64, "torch.float64"},
    {"HalfStorage", DType::f16, "torch.float16"},
    {"LongStorage", DType::i64, "torch.int64"},
    {"IntStorage", DType::i32, "torch.int32"},
    {"ByteStorage", DType::u8, "torch.uint8"},
    {"CharStorage", std::nullopt, "torch.int8"},
    {"ShortStorage", std::nullopt, "torch.int16"},
    {"BoolStorage", std::nullopt, "torch.bool"},
    {"BFloat16Storage", std::nullopt, "torch.bfloat16"},
    {"ComplexFloatStorage", std::nullopt, "torch.complex64"},
    {"ComplexDoubleStorage", std::nullopt, "torch.complex128"},
    {"QInt8Storage", std::nullopt, "torch.qint8"},
    {"QUInt8Storage", std::nullopt, "torch.quint8"},
    {"QInt32Storage", std::nullopt, "torch.qint32"},
    {"QUInt4x2Storage", std::nullopt, "torch.quint4x2"},
    {"QUInt2x4Storage", std::nullopt, "torch.quint2x4"},
};

enum class Kind : uint8_t {
  none,
  boolean,
  integer,
  floating,
  string,
  tuple,
  list,
  dict,
  global,
  storage,
  tensor
};
enum class Callable : uint8_t { ordered_dict, rebuild_tensor_v2, rebuild_parameter, storage_type };

// What a value is, for messages.
const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::none: return "None";
    case Kind::boolean: return "a bool";
    case Kind::integer: return "an int";
    case Kind::floating: return "a float";
    case Kind::string: return "a str";
    case Kind::tuple: return "a tuple";
    case Kind::list: return "a list";
    case Kind::dict: return "a dict";
    case Kind::global: return "a global";
    case Kind::storage: return "a storage";
    case Kind::tensor: return "a tensor";
  }
  return "a value";
}

// Where a dict holds each str or int key (for SETITEM's replace semantics).
struct DictIndex {
  std::map<std::string, size_t, std::less<>> strings;
  std::map<int64_t, size_t> integers;
};

// One value.
struct Object {
  Kind kind = Kind::none;
  bool flag = false;                   // boolean: the value; dict: an OrderedDict
  Callable callable{};                 // global
  int64_t integer = 0;                 // integer
  double floating = 0.0;               // floating
  std::string text;                    // string; global: "module.name"
  std::vector<size_t> items;           // tuple, list; dict: key, value, key, value, ...
  std::unique_ptr<DictIndex> index;    // dict
  size_t tensor = 0;                   // tensor: index into Unpickler::tensors_
  size_t storage = 0;                  // storage: index into Unpickler::storages_
  std::optional<DType> storage_dtype;  // global of Callable::storage_type
};

class Unpickler {
 public:
  explicit Unpickler(std::span<const uint8_t> bytes) : bytes_(bytes) {
    none_ = make(Kind::none);
    false_ = make(Kind::boolean);
    true_ = make(Kind::boolean);
    objects_[true_].flag = true;
  }

  TorchTensorInfos run();

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw PickleError("data.pkl: byte " + std::to_string(op_at_) + " (" + op_name_ + "): " + what);
  }
  [[noreturn]] static void fail_result(const std::string& what) {
    throw PickleError("data.pkl: " + what);
  }

  // --- Reading the byte stream ---
  void need(uint64_t n) const {
    if (n > bytes_.size() - pos_) fail("the pickle ends in the middle of this op (truncated)");
  }
  uint8_t byte() {
    need(1);
    return bytes_[pos_++];
  }
  uint64_t little(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(bytes_[pos_ + k]) << (8 * k);
    pos_ += n;
    return v;
  }
  std::string take(uint64_t n) {
    if (n > kPickleMaxStringBytes) {
      fail("a string of " + std::to_string(n) + " bytes, more than the " +
           std::to_string(kPickleMaxStringBytes) + " b3 reads");
    }
    need(n);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  std::string line() {
    const size_t start = pos_;
    while (pos_ < bytes_.size() && pos_ - start <= kMaxGlobalLineBytes && bytes_[pos_] != '\n') {
      ++pos_;
    }
    if (pos_ >= bytes_.size()) fail("the pickle ends inside a GLOBAL name (truncated)");
    if (bytes_[pos_] != '\n') {
      fail("a GLOBAL name longer than " + std::to_string(kMaxGlobalLineBytes) + " bytes");
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + start), pos_ - start);
    ++pos_;
    return s;
  }

  // --- Objects and the stack ---
  size_t make(Kind kind) {
    if (objects_.size() >= kPickleMaxObjects) {
      fail("more than " + std::to_string(kPickleMaxObjects) + " objects");
    }
    objects_.emplace_back();
    objects_.back().kind = kind;
    if (kind == Kind::dict) objects_.back().index = std::make_unique<DictIndex>();
    return objects_.size() - 1;
  }
  Object& at(size_t ref) { return objects_[ref]; }
  void push(size_t ref) {
    if (stack_.size() >= kPickleMaxStack) {
      fail("the stack grows past " + std::to_string(kPickleMaxStack) + " items");
    }
    stack_.push_back(ref);
  }
  // Items above the innermost mark (what an op may pop).
  size_t available() const { return stack_.size() - (marks_.empty() ? 0 : marks_.back()); }
  size_t pop() {
    if (available() == 0) fail("the stack is empty (or only a MARK is left)");
    const size_t ref = stack_.back();
    stack_.pop_back();
    return ref;
  }
  size_t top() {
    if (available() == 0) fail("the stack is empty (or only a MARK is left)");
    return stack_.back();
  }
  std::vector<size_t> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<size_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  size_t make_tuple(std::vector<size_t> items) {
    const size_t ref = make(Kind::tuple);
    at(ref).items = std::move(items);
    return ref;
  }
  size_t make_integer(int64_t value) {
    const size_t ref = make(Kind::integer);
    at(ref).integer = value;
    return ref;
  }

  void memo_put(uint64_t index) {
    const size_t ref = top();
    if (memo_.size() >= kPickleMaxMemo && memo_.find(index) == memo_.end()) {
      fail("more than " + std::to_string(kPickleMaxMemo) + " memo entries");
    }
    memo_[index] = ref;
  }
  void memo_get(uint64_t index) {
    const auto found = memo_.find(index);
    if (found == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    push(found->second);
  }

  void set_item(size_t dict_ref, size_t key, size_t value) {
    if (at(dict_ref).kind != Kind::dict) {
      fail("SETITEM(S) on " + std::string(kind_name(at(dict_ref).kind)) + ", not a dict");
    }
    const Object& k = at(key);
    if (k.kind == Kind::list || k.kind == Kind::dict) fail("a dict key is unhashable");
    Object& dict = at(dict_ref);
    // A key seen before keeps its place and takes the new value, as in Python.
    std::optional<size_t> existing;
    if (k.kind == Kind::string) {
      const auto found = dict.index->strings.find(k.text);
      if (found != dict.index->strings.end()) existing = found->second;
    } else if (k.kind == Kind::integer) {
      const auto found = dict.index->integers.find(k.integer);
      if (found != dict.index->integers.end()) existing = found->second;
    }
    if (existing) {
      dict.items[*existing + 1] = value;
      return;
    }
    if (k.kind == Kind::string) dict.index->strings.emplace(k.text, dict.items.size());
    if (k.kind == Kind::integer) dict.index->integers.emplace(k.integer, dict.items.size());
    dict.items.push_back(key);
    dict.items.push_back(value);
  }

  void append(size_t list_ref, size_t value) {
    if (at(list_ref).kind != Kind::list) {
      fail("APPEND(S) on " + std::string(kind_name(at(list_ref).kind)) + ", not a list");
    }
    at(list_ref).items.push_back(value);
  }

  // --- The allow-list ---
  size_t global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    const size_t ref = make(Kind::global);
    at(ref).text = full;
    if (full == "collections.OrderedDict") {
      at(ref).callable = Callable::ordered_dict;
    } else if (full == "torch._utils._rebuild_tensor_v2") {
      at(ref).callable = Callable::rebuild_tensor_v2;
    } else if (full == "torch._utils._rebuild_parameter") {
      at(ref).callable = Callable::rebuild_parameter;
    } else {
      for (const StorageType& type : kStorageTypes) {
        if (module != "torch" || name != type.name) continue;
        if (!type.dtype) {
          fail("global 'torch." + name + "': its tensors are " + type.torch_dtype +
               ", which b3 does not have (b3 reads FloatStorage, DoubleStorage, HalfStorage, " +
               "LongStorage, IntStorage and ByteStorage; convert in PyTorch first)");
        }
        at(ref).callable = Callable::storage_type;
        at(ref).storage_dtype = type.dtype;
        return ref;
      }
      fail("global " + quoted_printable(full) +
           " is not allowed: b3 reads state dicts of tensors and never runs code from a file "
           "(allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
           "torch._utils._rebuild_parameter, torch.<dtype>Storage); save "
           "model.state_dict(), not the model or other objects");
    }
    return ref;
  }

  // The persistent id ('storage', storage type, key, location, numel).
  size_t persistent_load(size_t pid) {
    const Object& id = at(pid);
    if (id.kind != Kind::tuple || id.items.size() != 5 || at(id.items[0]).kind != Kind::string ||
        at(id.items[0]).text != "storage") {
      fail("a persistent id that is not ('storage', type, key, location, numel)");
    }
    const Object& type = at(id.items[1]);
    const Object& key = at(id.items[2]);
    const Object& location = at(id.items[3]);
    const Object& numel = at(id.items[4]);
    if (type.kind != Kind::global || type.callable != Callable::storage_type) {
      fail("a persistent id whose storage type is " + std::string(kind_name(type.kind)) +
           (type.kind == Kind::global ? " " + quoted_printable(type.text) : std::string()) +
           ", not a torch storage type");
    }
    if (key.kind != Kind::string || location.kind != Kind::string || numel.kind != Kind::integer) {
      fail("a persistent id whose key, location or numel has the wrong type");
    }
    if (numel.integer < 0) fail("storage " + quoted_printable(key.text) + " has a negative size");
    TorchTensorInfo storage;
    storage.dtype = *type.storage_dtype;
    storage.storage_type = type.text.substr(std::strlen("torch."));
    storage.storage_key = key.text;
    storage.location = location.text;
    storage.storage_numel = numel.integer;
    // The same storage may back several tensors; each mention must agree.
    const auto seen = storage_by_key_.find(key.text);
    if (seen != storage_by_key_.end()) {
      const TorchTensorInfo& first = storages_[seen->second];
      if (first.storage_type != storage.storage_type ||
          first.storage_numel != storage.storage_numel) {
        fail("storage " + quoted_printable(key.text) + " is declared as " + first.storage_type +
             " of " + std::to_string(first.storage_numel) + " elements and as " +
             storage.storage_type + " of " + std::to_string(storage.storage_numel));
      }
    } else {
      storage_by_key_.emplace(key.text, storages_.size());
    }
    storages_.push_back(std::move(storage));
    const size_t ref = make(Kind::storage);
    at(ref).storage = storages_.size() - 1;
    return ref;
  }

  Shape int_tuple(size_t ref, const char* what) {
    const Object& t = at(ref);
    if (t.kind != Kind::tuple) fail(std::string(what) + " is not a tuple");
    if (t.items.size() > kPickleMaxDims) {
      fail(std::string(what) + " has " + std::to_string(t.items.size()) +
           " dimensions, more than " + std::to_string(kPickleMaxDims));
    }
    Shape out;
    for (const size_t item : t.items) {
      if (at(item).kind != Kind::integer) fail(std::string(what) + " holds a non-integer");
      out.push_back(at(item).integer);
    }
    return out;
  }

  void check_empty_hooks(size_t ref) {
    const Object& hooks = at(ref);
    if (hooks.kind != Kind::dict || !hooks.items.empty()) {
      fail("a tensor with backward hooks (b3 reads plain tensors only)");
    }
  }

  size_t make_tensor(TorchTensorInfo info) {
    tensors_.push_back(std::move(info));
    const size_t ref = make(Kind::tensor);
    at(ref).tensor = tensors_.size() - 1;
    return ref;
  }

  size_t reduce(size_t callable_ref, size_t args_ref) {
    const Object& callable = at(callable_ref);
    if (callable.kind != Kind::global) {
      fail("REDUCE applies " + std::string(kind_name(callable.kind)) + ", not a global");
    }
    const Object& args = at(args_ref);
    if (args.kind != Kind::tuple) fail("REDUCE's arguments are not a tuple");
    const std::vector<size_t>& a = args.items;
    switch (callable.callable) {
      case Callable::ordered_dict: {
        if (!a.empty()) fail("collections.OrderedDict is called with arguments");
        const size_t ref = make(Kind::dict);
        at(ref).flag = true;
        return ref;
      }
      case Callable::rebuild_tensor_v2: {
        if (a.size() != 6) {
          fail("torch._utils._rebuild_tensor_v2 takes 6 arguments here, got " +
               std::to_string(a.size()));
        }
        const Object& storage = at(a[0]);
        if (storage.kind != Kind::storage) {
          fail("a tensor whose storage is not a persistent storage id");
        }
        if (at(a[1]).kind != Kind::integer) fail("a tensor whose storage offset is not an int");
        if (at(a[4]).kind != Kind::boolean) fail("a tensor whose requires_grad is not a bool");
        TorchTensorInfo info = storages_[storage.storage];
        info.storage_offset = at(a[1]).integer;
        info.shape = int_tuple(a[2], "a tensor's size");
        info.strides = int_tuple(a[3], "a tensor's stride");
        if (info.shape.size() != info.strides.size()) {
          fail("a tensor with " + std::to_string(info.shape.size()) + " sizes and " +
               std::to_string(info.strides.size()) + " strides");
        }
        info.requires_grad = at(a[4]).flag;
        check_empty_hooks(a[5]);
        return make_tensor(std::move(info));
      }
      case Callable::rebuild_parameter: {
        if (a.size() != 3) {
          fail("torch._utils._rebuild_parameter takes 3 arguments, got " +
               std::to_string(a.size()));
        }
        if (at(a[0]).kind != Kind::tensor) fail("torch._utils._rebuild_parameter of a non-tensor");
        if (at(a[1]).kind != Kind::boolean) fail("a parameter whose requires_grad is not a bool");
        check_empty_hooks(a[2]);
        TorchTensorInfo info = tensors_[at(a[0]).tensor];
        info.requires_grad = at(a[1]).flag;
        return make_tensor(std::move(info));
      }
      case Callable::storage_type:
        fail("REDUCE calls the storage type " + quoted_printable(callable.text) +
             " (storages come only from persistent ids)");
    }
    fail("REDUCE of an unknown callable");
  }

  void step(uint8_t op);
  TorchTensorInfos state_dict(size_t result);

  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  size_t op_at_ = 0;
  std::string op_name_;
  std::deque<Object> objects_;
  std::vector<size_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, size_t> memo_;
  std::vector<TorchTensorInfo> storages_;
  std::map<std::string, size_t> storage_by_key_;
  std::vector<TorchTensorInfo> tensors_;
  size_t none_ = 0, false_ = 0, true_ = 0;
  bool stopped_ = false;
};

void Unpickler::step(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      const uint8_t version = byte();
      if (version < 2 || version > 4) {
        fail("pickle protocol " + std::to_string(version) + " (b3 reads protocols 2 to 4)");
      }
      return;
    }
    case 0x95: {  // FRAME: a length prefix only, the ops inside run as usual
      const uint64_t length = little(8);
      need(length);
      return;
    }
    case '}': push(make(Kind::dict)); return;   // EMPTY_DICT
    case ']': push(make(Kind::list)); return;   // EMPTY_LIST
    case ')': push(make(Kind::tuple)); return;  // EMPTY_TUPLE
    case '(':                                   // MARK
      if (marks_.size() >= kPickleMaxMarks) {
        fail("MARKs nested deeper than " + std::to_string(kPickleMaxMarks));
      }
      marks_.push_back(stack_.size());
      return;
    case 't': push(make_tuple(pop_mark())); return;  // TUPLE
    case 0x85:                                       // TUPLE1
    case 0x86:                                       // TUPLE2
    case 0x87: {                                     // TUPLE3
      const size_t n = op - 0x84u;
      if (available() < n) fail("too few items on the stack");
      std::vector<size_t> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
      stack_.resize(stack_.size() - n);
      push(make_tuple(std::move(items)));
      return;
    }
    case 'J':  // BININT: signed 32-bit
      push(make_integer(static_cast<int32_t>(static_cast<uint32_t>(little(4)))));
      return;
    case 'K': push(make_integer(byte())); return;                           // BININT1
    case 'M': push(make_integer(static_cast<int64_t>(little(2)))); return;  // BININT2
    case 0x8a: {  // LONG1: n bytes, little-endian two's complement
      const uint8_t n = byte();
      if (n > 8) fail("an integer of " + std::to_string(n) + " bytes (b3 reads up to 64 bits)");
      uint64_t v = little(n);
      if (n > 0 && n < 8 && (v >> (8 * n - 1)) != 0) v |= ~uint64_t{0} << (8 * n);  // sign
      push(make_integer(static_cast<int64_t>(v)));
      return;
    }
    case 'X':     // BINUNICODE
    case 0x8c:    // SHORT_BINUNICODE
    case 0x8d: {  // BINUNICODE8
      const uint64_t n = op == 0x8c ? byte() : op == 'X' ? little(4) : little(8);
      std::string text = take(n);
      if (!is_valid_utf8(text)) fail("a string that is not valid UTF-8: " + quoted_printable(text));
      const size_t ref = make(Kind::string);
      at(ref).text = std::move(text);
      push(ref);
      return;
    }
    case 'G': {  // BINFLOAT: big-endian IEEE double
      need(8);
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | bytes_[pos_ + static_cast<size_t>(k)];
      pos_ += 8;
      double value = 0.0;
      std::memcpy(&value, &bits, sizeof value);
      const size_t ref = make(Kind::floating);
      at(ref).floating = value;
      push(ref);
      return;
    }
    case 0x88: push(true_); return;             // NEWTRUE
    case 0x89: push(false_); return;            // NEWFALSE
    case 'N': push(none_); return;              // NONE
    case 'q': memo_put(byte()); return;         // BINPUT
    case 'r': memo_put(little(4)); return;      // LONG_BINPUT
    case 0x94: memo_put(memo_.size()); return;  // MEMOIZE
    case 'h': memo_get(byte()); return;         // BINGET
    case 'j': memo_get(little(4)); return;      // LONG_BINGET
    case 's': {                                 // SETITEM
      const size_t value = pop();
      const size_t key = pop();
      set_item(top(), key, value);
      return;
    }
    case 'u': {  // SETITEMS
      const std::vector<size_t> items = pop_mark();
      if (items.size() % 2 != 0) fail("an odd number of items (keys without values)");
      const size_t dict = top();
      for (size_t k = 0; k < items.size(); k += 2) set_item(dict, items[k], items[k + 1]);
      return;
    }
    case 'a': {  // APPEND
      const size_t value = pop();
      append(top(), value);
      return;
    }
    case 'e': {  // APPENDS
      const std::vector<size_t> items = pop_mark();
      const size_t list = top();
      for (const size_t item : items) append(list, item);
      return;
    }
    case 'c': {  // GLOBAL: "module\nname\n"
      const std::string module = line();
      const std::string name = line();
      push(global(module, name));
      return;
    }
    case 0x93: {  // STACK_GLOBAL
      const size_t name = pop();
      const size_t module = pop();
      if (at(name).kind != Kind::string || at(module).kind != Kind::string) {
        fail("STACK_GLOBAL of non-strings");
      }
      push(global(at(module).text, at(name).text));
      return;
    }
    case 'R': {  // REDUCE
      const size_t args = pop();
      const size_t callable = pop();
      push(reduce(callable, args));
      return;
    }
    case 'b': {  // BUILD: only a dict's attributes (torch's _metadata), ignored
      const size_t state = pop();
      const Object& target = at(top());
      if (target.kind != Kind::dict || at(state).kind != Kind::dict) {
        fail("BUILD of " + std::string(kind_name(target.kind)) + " with " +
             kind_name(at(state).kind) + " (b3 accepts only attributes set on a dict)");
      }
      return;
    }
    case 'Q': push(persistent_load(pop())); return;  // BINPERSID
    case '.': stopped_ = true; return;               // STOP
    default: {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", op);
      fail(std::string("opcode ") + hex + " (" + pickle_opcode_name(op) +
           ") is not one b3 reads: a torch.save state dict does not need it");
    }
  }
}

TorchTensorInfos Unpickler::state_dict(size_t result) {
  // A dict of tensors; or a dict holding one under "state_dict" or "model".
  const auto is_state_dict = [&](const Object& dict) {
    if (dict.kind != Kind::dict) return false;
    for (size_t k = 0; k < dict.items.size(); k += 2) {
      if (at(dict.items[k]).kind != Kind::string || at(dict.items[k + 1]).kind != Kind::tensor) {
        return false;
      }
    }
    return true;
  };
  const Object* dict = &at(result);
  if (dict->kind == Kind::dict && !is_state_dict(*dict)) {
    for (const char* key : {"state_dict", "model"}) {
      const auto found = dict->index->strings.find(key);
      if (found != dict->index->strings.end() &&
          is_state_dict(at(dict->items[found->second + 1]))) {
        dict = &at(dict->items[found->second + 1]);
        break;
      }
    }
  }
  if (dict->kind != Kind::dict) {
    fail_result(std::string("the file holds ") + kind_name(dict->kind) +
                ", not a state dict (a dict of tensors: torch.save(model.state_dict(), path))");
  }
  if (!is_state_dict(*dict)) {
    for (size_t k = 0; k < dict->items.size(); k += 2) {
      const Object& key = at(dict->items[k]);
      const Object& value = at(dict->items[k + 1]);
      if (key.kind != Kind::string) {
        fail_result(std::string("the file holds a dict with a key that is ") + kind_name(key.kind) +
                    ", not a state dict (str keys, tensor values), nor one under \"state_dict\" or "
                    "\"model\"");
      }
      if (value.kind != Kind::tensor) {
        fail_result("the file holds a dict whose " + quoted_printable(key.text) + " is " +
                    kind_name(value.kind) +
                    ", not a tensor: not a state dict, nor one under \"state_dict\" or \"model\"");
      }
    }
  }
  TorchTensorInfos out;
  out.reserve(dict->items.size() / 2);
  for (size_t k = 0; k < dict->items.size(); k += 2) {
    out.emplace_back(at(dict->items[k]).text, tensors_[at(dict->items[k + 1]).tensor]);
  }
  return out;
}

TorchTensorInfos Unpickler::run() {
  uint64_t ops = 0;
  while (!stopped_) {
    if (pos_ >= bytes_.size()) {
      op_at_ = pos_;
      op_name_ = "end";
      fail("the pickle ends without STOP (truncated)");
    }
    if (++ops > kPickleMaxOps) fail("more than " + std::to_string(kPickleMaxOps) + " ops");
    op_at_ = pos_;
    const uint8_t op = bytes_[pos_++];
    op_name_ = pickle_opcode_name(op);
    step(op);
  }
  if (pos_ != bytes_.size()) {
    fail(std::to_string(bytes_.size() - pos_) + " bytes follow STOP");
  }
  if (stack_.size() != 1 || !marks_.empty()) {
    fail("STOP with " + std::to_string(stack_.size()) + " items and " +
         std::to_string(marks_.size()) + " MARKs on the stack (one item expected)");
  }
  return state_dict(stack_.back());
}

}  // namespace

TorchTensorInfos unpickle_torch_state_dict(std::span<const uint8_t> pickle) {
  return Unpickler(pickle).run();
}

}  // namespace b3
