// The sampler's sharding for data-parallel training, as PyTorch's
// DistributedSampler(shuffle=True, drop_last=True): every rank computes the
// same epoch order (the loader's seeded permutation, data/loader.h), keeps
// its first floor(N / world) * world positions so every rank runs the same
// number of steps, and takes positions rank, rank + world, rank + 2 world,
// ... of them. The shards are disjoint, their union is the epoch minus at
// most world - 1 dropped examples, and a seed gives the same shards on any
// machine. Without drop_last (evaluation) nothing is dropped: rank r takes
// every position r (mod world), so each example counts exactly once and the
// shards differ in size by at most one.
#pragma once

#include <cstdint>
#include <vector>

namespace b3::dist {

// Rank `rank`'s shard of `epoch_order` in a world of `world` ranks. Throws
// std::invalid_argument for world < 1 or rank outside [0, world).
std::vector<int64_t> shard_of(const std::vector<int64_t>& epoch_order, int rank, int world,
                              bool drop_last = true);
// The size of that shard for an epoch of `examples`.
int64_t shard_size(int64_t examples, int rank, int world, bool drop_last = true);

}  // namespace b3::dist
