// shard_of (distributed/sharding.h): strided positions of the (truncated) epoch order.
#include "distributed/sharding.h"

#include <stdexcept>
#include <string>

namespace b3::dist {

namespace {

void check_rank(int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("shard_of: rank " + std::to_string(rank) +
                                " is not in a world of " + std::to_string(world));
  }
}

}  // namespace

int64_t shard_size(int64_t examples, int rank, int world, bool drop_last) {
  check_rank(rank, world);
  if (drop_last) return examples / world;
  return examples > rank ? (examples - rank + world - 1) / world : 0;
}

std::vector<int64_t> shard_of(const std::vector<int64_t>& epoch_order, int rank, int world,
                              bool drop_last) {
  const int64_t n = shard_size(static_cast<int64_t>(epoch_order.size()), rank, world, drop_last);
  std::vector<int64_t> shard;
  shard.reserve(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k)
    shard.push_back(epoch_order[static_cast<size_t>(k * world + rank)]);
  return shard;
}

}  // namespace b3::dist
