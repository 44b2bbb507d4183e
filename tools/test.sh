#!/usr/bin/env bash
# Sets everything up, then runs every test: the C++ GoogleTest suite (through ctest), a short run of
# each fuzz target (so they keep building and stay clean), pytest, and the C++ tests of the core,
# the API and the services again under the address and undefined-behaviour sanitizers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
build_dir=$(ls -d build/cp*/ | head -n 1)
export TETHER_CPP_BUILD_DIR="$PWD/$build_dir"  # the C++ halves of tests/python/test_cross_language.py
echo "== C++ tests (ctest in $build_dir)"
ctest --test-dir "$build_dir" --output-on-failure -j 2 --timeout 120
echo "== fuzz smoke run, 15 s per target (bash fuzz/run.sh TARGET SECONDS for longer)"
for target in frame payload handshake template; do
  bash fuzz/run.sh "$target" 15 > "build/fuzz-$target.log" 2>&1 || { tail -n 40 "build/fuzz-$target.log"; exit 1; }
  echo "$target: $(tail -n 1 "build/fuzz-$target.log")"
done
echo "== Python tests"
(cd tests/python && python3 -m pytest -q -n 2 -p no:cacheprovider)
echo "== C++ tests again, built with AddressSanitizer and UndefinedBehaviorSanitizer (bash tools/sanitize.sh)"
bash tools/sanitize.sh
