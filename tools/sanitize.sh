#!/usr/bin/env bash
# Builds the C++ tests of the parts that read what peers send (wire, rpc, the C++ API, the object
# store, the tuple space, topics and groups services) with AddressSanitizer (leaks included) and
# UndefinedBehaviorSanitizer in build/sanitize, and runs them; any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(tether_core_tests tether_api_tests tether_store_tests tether_tuplespace_tests tether_topics_tests tether_groups_tests)
cmake -G Ninja -S . -B build/sanitize -DTETHER_SANITIZE=ON -DTETHER_BUILD_PYTHON=OFF -DTETHER_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo > build/sanitize-configure.log
cmake --build build/sanitize --target "${targets[@]}" -j 2 > build/sanitize-build.log 2>&1 || { tail -n 40 build/sanitize-build.log; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for target in "${targets[@]}"; do
  if ! "build/sanitize/$target" --gtest_brief=1 > "build/sanitize-$target.log" 2>&1; then
    tail -n 60 "build/sanitize-$target.log"
    echo "$target failed under the sanitizers (full log: build/sanitize-$target.log)"
    exit 1
  fi
  echo "$target: $(grep -E 'PASSED|tests ran' "build/sanitize-$target.log" | tail -n 1)"
done
