// Exact integers out of JSON that b3 did not write (file headers, checkpoint
// metadata). nlohmann's get<int64_t>() converts a float such as 1e300 with a
// cast whose result is undefined and wraps a negative value into an unsigned
// type, so every reader of untrusted JSON takes its integers through here:
// a JSON integer inside the target type's range, or nothing.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <type_traits>
#include <utility>

namespace b3 {

// `value` as an Integer when it is a JSON integer (not a float, bool or
// string) that Integer holds exactly; std::nullopt otherwise.
template <typename Integer>
std::optional<Integer> exact_json_integer(const nlohmann::json& value) {
  static_assert(std::is_integral_v<Integer> && !std::is_same_v<Integer, bool>);
  if (value.is_number_unsigned()) {  // before is_number_integer, which is true for both
    const uint64_t v = value.get<uint64_t>();
    if (std::cmp_greater(v, std::numeric_limits<Integer>::max())) return std::nullopt;
    return static_cast<Integer>(v);
  }
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (std::cmp_less(v, std::numeric_limits<Integer>::min()) ||
        std::cmp_greater(v, std::numeric_limits<Integer>::max()))
      return std::nullopt;
    return static_cast<Integer>(v);
  }
  return std::nullopt;
}

}  // namespace b3
