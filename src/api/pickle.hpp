// Plain data in Python's pickle format, so a C++ program can pass arguments to and read results of
// a cluster's Python actors (their values are cloudpickle pickles, docs/protocol.md 13.3).
// Only plain data: None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset. Reading
// also understands a global and a call of it (how an exception pickles), so an actor's error can be
// read; any other pickle fails with a clear error and nothing is run.
#pragma once

#include <span>
#include <vector>

#include "tether/value.hpp"
#include "tether/error.hpp"

namespace tether::api {

// Protocol 5 pickle of `value`; fails for kinds pickle's plain data does not have (custom values,
// object references).
Result<std::vector<std::byte>> pickle_plain(const Value& value);

// Reads a pickle of plain data. A global `module.name` reads as Value::custom("pickle.global",
// "module.name"), and a call of one with arguments as Value::custom("pickle.call", [global, args]).
Result<Value> unpickle_plain(std::span<const std::byte> data);

}  // namespace tether::api
