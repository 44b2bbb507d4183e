#!/usr/bin/env bash
# Installs tether's C++ package from the build tree $1 into a scratch prefix, builds examples/cpp
# against it out of tree (find_package(tether CONFIG)), and runs the example client against the
# example server. Run by ctest as cpp_package_builds_examples.
set -euo pipefail
build_tree=$(cd "$1" && pwd)
source_tree=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
server_pid=""
cleanup() {
  exec 4>&- 2>/dev/null || true
  [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

cmake --install "$build_tree" --component cpp --prefix "$scratch/prefix" > /dev/null
cmake -S "$source_tree/examples/cpp" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$scratch/build" -j 2 > "$scratch/build.log" 2>&1 || { cat "$scratch/build.log"; exit 1; }

mkfifo "$scratch/stdin"
"$scratch/build/greeter_server" < "$scratch/stdin" > "$scratch/uri" &
server_pid=$!
exec 4> "$scratch/stdin"  # the server runs until this closes
for _ in $(seq 100); do [ -s "$scratch/uri" ] && break; sleep 0.1; done
uri=$(head -n 1 "$scratch/uri")
output=$("$scratch/build/greeter_client" "$uri")
echo "$output"
expected="hello ann
hello bob
hello cy (#1)
countdown: 3 2 1 0
heard hi!
error: builtins.TypeError: greeter.hello: argument 1 (str): expected a str, got int 42"
[ "$output" = "$expected" ] || { echo "unexpected output; expected:"; echo "$expected"; exit 1; }
exec 4>&-
wait "$server_pid"
server_pid=""
echo "examples/cpp built against the installed package and ran"
