#!/usr/bin/env bash
# Sets everything up, then runs every test: the C++ GoogleTest suite (through ctest) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
build_dir=$(ls -d build/*/ | grep -v '^build/dev/$' | head -n 1)
echo "== C++ tests (ctest in $build_dir)"
ctest --test-dir "$build_dir" --output-on-failure -j 2 --timeout 120
echo "== Python tests"
cd tests/python && python3 -m pytest -q -n 2 -p no:cacheprovider
