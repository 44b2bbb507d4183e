#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs one: bash fuzz/run.sh frame|payload|handshake|template [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-frame}
seconds=${2:-60}
command -v clang++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; }
cmake -S . -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
  -DTETHER_BUILD_FUZZ=ON -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_BENCH=OFF -DTETHER_BUILD_PYTHON=OFF >/dev/null
ninja -C build/fuzz "${target}_fuzz"
mkdir -p build/fuzz/corpus-"$target"
ASAN_OPTIONS=detect_leaks=0 build/fuzz/"${target}_fuzz" -max_total_time="$seconds" -max_len=4096 \
  build/fuzz/corpus-"$target" fuzz/seeds/"$target"
