// The parts every optimizer shares: walking the parameters, skipping those
// without gradients, lazily created state, saving/restoring that state, and
// the CUDA path's bookkeeping (the fused kernel's tables and step counters;
// see optimizer.h for the design).
#include "optim/optimizer.h"

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "tensor/ops.h"

namespace b3 {

// The CUDA step's plan: which parameters take part, grouped by (gradient
// dtype, step counter), one fused-kernel table per group, and the pointers
// the tables were built from (rebuilt when any of them changes).
struct Optimizer::DevicePlan {
  struct Group {
    DType grad_dtype = DType::f32;
    Tensor counter;  // device i64 [], shared by the group's parameters
    cuda::MultiTensorTable table;
  };
  Device device;
  std::vector<uintptr_t> signature;
  std::vector<size_t> members;  // parameters with a gradient, in order
  std::vector<Group> groups;
  std::optional<cuda::MultiTensorTable> gradients;  // every member's gradient, one list
};

namespace {

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// Both dense with the same element order in memory (strides may differ only
// on dimensions of size 1, which no element steps over), so an elementwise
// kernel over the two flat buffers pairs the right elements.
bool same_memory_order(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || !a.is_dense() || !b.is_dense()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

// `src` copied into a new tensor of src's dtype laid out exactly like `like`
// (dense; ops.h's align_layout would also convert to like's dtype, and an f16
// gradient must stay f16).
Tensor copy_in_layout_of(const Tensor& src, const Tensor& like) {
  Tensor out = empty(like.shape(), TensorOptions(src.dtype())
                                       .with_device(like.device())
                                       .with_format(like.suggest_memory_format()));
  out.impl()->strides = like.strides();  // like is dense: its strides fit a fresh block
  out.copy_(src);
  return out;
}

}  // namespace

Optimizer::Optimizer(std::vector<Tensor> parameters, double lr, const char* name)
    : name_(name),
      parameters_(std::move(parameters)),
      state_(parameters_.size()),
      device_steps_(parameters_.size()),
      lr_(0.0) {
  if (parameters_.empty()) {
    throw std::invalid_argument(std::string(name_) + ": got an empty parameter list");
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Tensor& p = parameters_[i];
    if (!p.defined() || !p.requires_grad() || !p.is_leaf()) {
      throw std::invalid_argument(std::string(name_) + ": parameter " + std::to_string(i) +
                                  " must be a leaf tensor that requires grad");
    }
  }
  set_lr(lr);
}

Optimizer::~Optimizer() = default;

void Optimizer::set_lr(double lr) {
  if (!(lr >= 0.0)) {
    throw std::invalid_argument(std::string(name_) + ": invalid learning rate " +
                                std::to_string(lr) + " (must be >= 0)");
  }
  lr_ = lr;
}

Tensor Optimizer::init_state(const std::string&, const Tensor& parameter) const {
  return zeros_like(parameter);
}

Device Optimizer::device() const {
  const Device first = parameters_.front().device();
  for (size_t i = 1; i < parameters_.size(); ++i) {
    const Device d = parameters_[i].device();
    if (d != first) {
      throw std::invalid_argument(std::string(name_) + ": parameter 0 is on " + first.str() +
                                  " but parameter " + std::to_string(i) + " is on " + d.str() +
                                  "; an optimizer steps parameters on one device: move the whole "
                                  "model with Module::to(device)");
    }
  }
  return first;
}

void Optimizer::step(const cuda::LossScaleState* scaler) {
  NoGradGuard no_grad;
  const Device where = device();
  if (where.is_cpu()) {
    if (scaler != nullptr) {
      throw std::invalid_argument(std::string(name_) +
                                  ": loss scaling runs on a CUDA device; these parameters are on "
                                  "the CPU (train in f32 there, without a GradScaler)");
    }
    step_on_cpu();
    return;
  }
  step_on_device(where, scaler);
}

void Optimizer::step_on_cpu() {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    Tensor& p = parameters_[i];
    const Tensor grad = p.grad();
    if (!grad.defined()) continue;
    require_cpu(name_, {p, grad});
    if (!p.is_dense()) {
      throw std::invalid_argument(std::string(name_) + ": parameter " + std::to_string(i) +
                                  " is not dense: " + p.str());
    }
    if (state_[i].empty()) {
      for (const std::string& state_name : state_names())
        state_[i].push_back(init_state(state_name, p));
    } else {
      // State left on a device by an earlier CUDA step comes back (its own
      // copy per parameter: CUDA step counters may be shared).
      for (Tensor& s : state_[i])
        if (!s.device().is_cpu()) s = s.to(Device::cpu());
    }
    update(i, p, align_layout(grad.to(p.dtype()), p), state_[i]);
  }
}

int Optimizer::step_state_index() const {
  if (step_index_ == kUnknownStepIndex) {  // state_names() is fixed by the options: look once
    const std::vector<std::string> names = state_names();
    step_index_ = -1;
    for (size_t k = 0; k < names.size(); ++k)
      if (names[k] == "step") step_index_ = static_cast<int>(k);
  }
  return step_index_;
}

Tensor Optimizer::step_counter(size_t index) const {
  const int k = step_state_index();
  if (k < 0) return device_steps_[index];
  if (state_[index].empty()) return Tensor();
  return state_[index][static_cast<size_t>(k)];
}

void Optimizer::set_step_counter(size_t index, const Tensor& counter) {
  const int k = step_state_index();
  if (k < 0)
    device_steps_[index] = counter;
  else
    state_[index][static_cast<size_t>(k)] = counter;
}

Optimizer::DevicePlan& Optimizer::prepare_device_step(const Device& device) {
  const std::vector<size_t> members = device_step_members(device);
  place_state_on(device, members);
  unshare_step_counters(members);
  const std::vector<size_t> table_state = device_table_state_indices();
  // 4. The pointers a table would hold; unchanged -> reuse the tables.
  std::vector<uintptr_t> signature{static_cast<uintptr_t>(device.index)};
  for (size_t i : members) {
    const Tensor& p = parameters_[i];
    const Tensor grad = p.grad();
    signature.insert(signature.end(),
                     {static_cast<uintptr_t>(i), address(p.data_ptr()), address(grad.data_ptr()),
                      static_cast<uintptr_t>(grad.dtype()), static_cast<uintptr_t>(p.numel()),
                      address(step_counter(i).data_ptr())});
    for (size_t k : table_state) signature.push_back(address(state_[i][k].data_ptr()));
  }
  if (plan_ && plan_->signature == signature) return *plan_;
  plan_ = build_device_plan(device, members, table_state, std::move(signature));
  return *plan_;
}

// 1. The parameters taking part: those with a gradient, checked.
std::vector<size_t> Optimizer::device_step_members(const Device& device) {
  // Messages are built only when something is wrong (this runs every step).
  auto fail = [&](size_t i, const std::string& what) {
    throw std::invalid_argument(std::string(name_) + " (" + device.str() + "): parameter " +
                                std::to_string(i) + " " + parameters_[i].str() + what);
  };
  std::vector<size_t> members;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    Tensor& p = parameters_[i];
    Tensor grad = p.grad();
    if (!grad.defined()) continue;
    if (p.dtype() != DType::f32) {
      fail(i,
           ": the CUDA step updates f32 parameters (the master weights; autocast makes the "
           "f16 copies)");
    }
    if (!p.is_dense()) fail(i, " is not dense");
    if (grad.device() != p.device()) fail(i, " has its gradient on " + grad.device().str());
    if (grad.dtype() != DType::f32 && grad.dtype() != DType::f16) {
      fail(i, std::string(" has a ") + dtype_name(grad.dtype()) +
                  " gradient; the CUDA step reads f32 or f16 gradients");
    }
    if (!same_memory_order(grad, p)) {
      // Once: the aligned gradient becomes the parameter's .grad, so later
      // backward passes accumulate into it and its address stays put.
      p.set_grad(copy_in_layout_of(grad, p));
    }
    members.push_back(i);
  }
  return members;
}

// 2. State on the device, created on a parameter's first step; state made
// on the CPU or loaded by load_state_dict is moved up once. Step counts
// that come from the host are grouped by value, so parameters at the
// same count share one device counter (one launch).
void Optimizer::place_state_on(const Device& device, const std::vector<size_t>& members) {
  const std::vector<std::string> names = state_names();
  const int step_index = step_state_index();
  Tensor fresh_counter;               // for parameters starting now (count 0)
  std::map<int64_t, Tensor> adopted;  // host count -> device counter
  const TensorOptions counter_options = TensorOptions(DType::i64).with_device(device);
  for (size_t i : members) {
    const Tensor& p = parameters_[i];
    std::vector<Tensor>& state = state_[i];
    if (state.empty() && !names.empty()) {
      std::vector<Tensor> created;
      for (size_t k = 0; k < names.size(); ++k)
        created.push_back(static_cast<int>(k) == step_index ? Tensor() : init_state(names[k], p));
      state = std::move(created);
    }
    for (size_t k = 0; k < state.size(); ++k) {
      if (static_cast<int>(k) == step_index) continue;
      if (state[k].device() != device) state[k] = state[k].to(device);
      if (!same_memory_order(state[k], p)) state[k] = copy_in_layout_of(state[k], p);
    }
    Tensor counter = step_counter(i);
    if (!counter.defined()) {
      if (!fresh_counter.defined()) fresh_counter = zeros({}, counter_options);
      counter = fresh_counter;
    } else if (counter.device() != device) {
      const auto count = static_cast<int64_t>(counter.item());  // a host value (or another GPU's)
      auto it = adopted.find(count);
      if (it == adopted.end()) {
        it =
            adopted
                .emplace(count,
                         full({}, static_cast<double>(count), TensorOptions(DType::i64)).to(device))
                .first;
      }
      counter = it->second;
    }
    set_step_counter(i, counter);
  }
}

// 3. A counter shared with parameters that are not stepping now must not
// advance for them: the stepping ones get their own copy.
void Optimizer::unshare_step_counters(const std::vector<size_t>& members) {
  std::unordered_map<const TensorImpl*, int> holders, stepping;
  for (size_t j = 0; j < parameters_.size(); ++j) {
    const Tensor c = step_counter(j);
    if (c.defined()) ++holders[c.impl()];
  }
  for (size_t i : members) ++stepping[step_counter(i).impl()];
  std::unordered_map<const TensorImpl*, Tensor> split;
  for (size_t i : members) {
    const Tensor c = step_counter(i);
    if (holders[c.impl()] == stepping[c.impl()]) continue;
    auto it = split.find(c.impl());
    if (it == split.end()) it = split.emplace(c.impl(), c.clone()).first;  // on the device
    set_step_counter(i, it->second);
  }
}

// The state indices of the table's lists after the parameters and gradients.
std::vector<size_t> Optimizer::device_table_state_indices() const {
  const std::vector<std::string> names = state_names();
  std::vector<size_t> table_state;  // state index of each table list from 2 on
  for (const std::string& state_name : device_table_state()) {
    size_t k = 0;
    while (k < names.size() && names[k] != state_name) ++k;
    if (k == names.size()) {
      throw std::logic_error(std::string(name_) + ": the device table names state '" + state_name +
                             "' that the optimizer does not keep");
    }
    table_state.push_back(k);
  }
  return table_state;
}

// 5. One table per (gradient dtype, step counter) group, in the order of the
// parameters (a model whose parameters all train: one).
std::unique_ptr<Optimizer::DevicePlan> Optimizer::build_device_plan(
    const Device& device, const std::vector<size_t>& members,
    const std::vector<size_t>& table_state, std::vector<uintptr_t> signature) {
  auto plan = std::make_unique<DevicePlan>();
  plan->device = device;
  plan->signature = std::move(signature);
  plan->members = members;
  const int lists = device_table_lists();
  struct Pending {
    DType grad_dtype;
    Tensor counter;
    std::vector<void*> pointers;
    std::vector<int64_t> numels;
  };
  std::vector<Pending> pending;
  for (size_t i : members) {
    Tensor& p = parameters_[i];
    Tensor grad = p.grad();
    const Tensor counter = step_counter(i);
    Pending* group = nullptr;
    for (Pending& g : pending)
      if (g.grad_dtype == grad.dtype() && g.counter.is_same(counter)) group = &g;
    if (group == nullptr) {
      pending.push_back({grad.dtype(), counter, {}, {}});
      group = &pending.back();
    }
    std::vector<void*> row(static_cast<size_t>(lists), nullptr);
    row[0] = p.data_ptr();
    row[1] = grad.data_ptr();
    for (size_t s = 0; s < table_state.size(); ++s)
      row[2 + s] = state_[i][table_state[s]].data_ptr();
    group->pointers.insert(group->pointers.end(), row.begin(), row.end());
    group->numels.push_back(p.numel());
  }
  for (Pending& g : pending) {
    plan->groups.push_back(
        {g.grad_dtype, g.counter,
         cuda::make_multi_tensor_table(device.index, lists, g.pointers, g.numels)});
  }
  return plan;
}

void Optimizer::step_on_device(const Device& device, const cuda::LossScaleState* scaler) {
  DevicePlan& plan = prepare_device_step(device);
  const cuda::Stream stream = cuda::compute_stream(device.index);
  for (DevicePlan::Group& group : plan.groups) {
    launch_device_step(group.table, group.grad_dtype,
                       static_cast<int64_t*>(group.counter.data_ptr()), scaler, stream);
  }
}

DeviceGradients Optimizer::device_gradients() {
  NoGradGuard no_grad;
  const Device where = device();
  if (!where.is_cuda()) {
    throw std::invalid_argument(std::string(name_) +
                                ": loss scaling (GradScaler) needs the parameters on a CUDA "
                                "device; they are on " +
                                where.str());
  }
  DevicePlan& plan = prepare_device_step(where);
  DType dtype = DType::f32;
  if (!plan.members.empty()) dtype = parameters_[plan.members.front()].grad().dtype();
  if (!plan.gradients) {
    std::vector<void*> pointers;
    std::vector<int64_t> numels;
    for (size_t i : plan.members) {
      const Tensor grad = parameters_[i].grad();
      if (grad.dtype() != dtype) {
        throw std::invalid_argument(std::string(name_) +
                                    ": loss scaling needs every gradient in "
                                    "one dtype; parameter " +
                                    std::to_string(i) + " has a " + dtype_name(grad.dtype()) +
                                    " gradient, others " + dtype_name(dtype));
      }
      pointers.push_back(const_cast<void*>(grad.data_ptr()));
      numels.push_back(grad.numel());
    }
    if (pointers.empty()) {
      cuda::MultiTensorTable empty_table;  // nothing to check: no device arrays needed
      empty_table.device = where.index;
      empty_table.lists = 1;
      plan.gradients = std::move(empty_table);
    } else {
      plan.gradients = cuda::make_multi_tensor_table(where.index, 1, pointers, numels);
    }
  }
  return {&*plan.gradients, 0, dtype, where};
}

void Optimizer::zero_grad() {
  for (Tensor& p : parameters_) {
    Tensor grad = p.grad();
    if (grad.defined() && grad.device().is_cuda())
      grad.zero_();  // in place: the address stays (see optimizer.h)
    else
      p.zero_grad();
  }
}

NamedTensors Optimizer::state_dict() const {
  NamedTensors out;
  const std::vector<std::string> names = state_names();
  for (size_t i = 0; i < state_.size(); ++i) {
    for (size_t k = 0; k < state_[i].size(); ++k) {
      const Tensor& s = state_[i][k];
      out.emplace_back("state." + std::to_string(i) + "." + names[k],
                       s.device().is_cpu() ? s : s.to(Device::cpu()));
    }
  }
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& state) {
  const std::vector<std::string> names = state_names();
  std::vector<std::vector<Tensor>> restored(parameters_.size());
  size_t used = 0;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    std::vector<Tensor> found;
    for (const std::string& state_name : names) {
      const std::string key = "state." + std::to_string(i) + "." + state_name;
      for (const auto& [name, tensor] : state) {
        if (name != key) continue;
        const Tensor reference = init_state(state_name, parameters_[i]);
        if (tensor.shape() != reference.shape() || tensor.dtype() != reference.dtype()) {
          throw std::invalid_argument(std::string(name_) + ": load_state_dict: " + key + " is " +
                                      tensor.str() + ", expected " + reference.str());
        }
        Tensor copy = empty_like(reference);
        copy.copy_(tensor);
        found.push_back(copy);
      }
    }
    if (!found.empty() && found.size() != names.size()) {
      throw std::invalid_argument(std::string(name_) + ": load_state_dict: parameter " +
                                  std::to_string(i) + " has only part of its state");
    }
    used += found.size();
    restored[i] = std::move(found);
  }
  if (used != state.size()) {
    throw std::invalid_argument(std::string(name_) +
                                ": load_state_dict: " + std::to_string(state.size() - used) +
                                " entries do not belong to this optimizer (wrong kind, or a "
                                "model with other parameters?)");
  }
  state_ = std::move(restored);
  // The step counts come back as host values: the next CUDA step puts them on
  // the device (grouped by value) and rebuilds its tables.
  plan_.reset();
}

}  // namespace b3
